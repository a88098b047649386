"""Valid register numbers for tests, computed with each register's check-digit rule."""

from __future__ import annotations

_NO_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)


def norwegian_numbers(count: int, start: int = 91_000_000) -> list[str]:
    """`count` distinct valid Norwegian organisation numbers, in increasing order."""
    out: list[str] = []
    base = start
    while len(out) < count:
        digits = f"{base:08d}"
        remainder = sum(int(d) * w for d, w in zip(digits, _NO_WEIGHTS, strict=True)) % 11
        check = (11 - remainder) % 11
        if check != 10:
            out.append(digits + str(check))
        base += 1
    return out
