"""The days a standing credit limit was in force (domain/limits cover_*)."""

from __future__ import annotations

from datetime import date

from creditwatch.server.domain.limits import cover_granted, cover_withdrawn, covers

JAN_10, FEB_1, MAR_1, APR_1, MAY_1 = (
    date(2026, 1, 10),
    date(2026, 2, 1),
    date(2026, 3, 1),
    date(2026, 4, 1),
    date(2026, 5, 1),
)
END = date(2026, 12, 31)


def test_a_gap_between_a_withdrawal_and_a_new_grant_is_not_covered() -> None:
    cover = cover_granted((), JAN_10, END)
    cover = cover_withdrawn(cover, MAR_1)
    cover = cover_granted(cover, MAY_1, date(2027, 4, 30))
    assert cover == ((JAN_10, date(2026, 2, 28)), (MAY_1, date(2027, 4, 30)))
    assert [covers(cover, d) for d in (date(2026, 1, 9), JAN_10, FEB_1, MAR_1, APR_1, MAY_1)] == [
        False,
        True,
        True,
        False,  # the day of the withdrawal
        False,  # the gap
        True,
    ]


def test_a_grant_while_in_force_extends_the_period() -> None:
    cover = cover_granted(cover_granted((), JAN_10, date(2026, 6, 30)), APR_1, END)
    assert cover == ((JAN_10, END),)


def test_a_lapse_is_a_gap_too() -> None:
    cover = cover_granted(cover_granted((), JAN_10, FEB_1), MAY_1, END)
    assert cover == ((JAN_10, FEB_1), (MAY_1, END))
    assert not covers(cover, MAR_1)


def test_a_grant_the_day_after_the_last_covered_day_continues_the_period() -> None:
    cover = cover_granted(cover_granted((), JAN_10, FEB_1), date(2026, 2, 2), END)
    assert cover == ((JAN_10, END),)


def test_a_withdrawal_on_the_first_day_leaves_nothing_of_that_period() -> None:
    assert cover_withdrawn(cover_granted((), MAR_1, END), MAR_1) == ()
    assert cover_withdrawn((), MAR_1) == ()
