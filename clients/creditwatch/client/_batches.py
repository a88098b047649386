"""Splitting bulk calls into server-sized chunks, and mapping errors back to the caller's indexes.

The server takes at most 10,000 items per `AddEntries`/`RemoveEntries` call and
names a bad item by its index in *that* call (`entries[17]...`). The SDK sends
an iterable of any size in chunks, so it shifts those indexes back to the
position in what the caller passed: `entries[10017]` is the caller's 10,018th
entry, whichever chunk it travelled in.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

from creditwatch.client._errors import CreditwatchError

MAX_BATCH = 10_000
"""The most items the server accepts in one AddEntries or RemoveEntries call."""

T = TypeVar("T")
R = TypeVar("R")

# Derived request ids of later chunks live in their own UUID namespace so they
# never collide with ids a caller picks.
_CHUNK_NAMESPACE = uuid.UUID("6f1d2a0c-5b7e-4c8e-9a51-3f0b7d2e9c14")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items, read lazily from `items`."""
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"chunk size must be 1..{MAX_BATCH:,}, not {size}")
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def chunk_request_id(request_id: str, index: int) -> str:
    """The idempotency key of chunk `index` of a call made with `request_id`.

    The first chunk carries the caller's key unchanged; later chunks carry a
    UUID derived from it, so repeating the whole call with the same key repeats
    every chunk's key too.
    """
    if not request_id or index == 0:
        return request_id
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{request_id}#{index}"))


def shift_indexes(error: CreditwatchError, field: str, offset: int) -> CreditwatchError:
    """`error` with every `field[i]` in its field violations read as `field[i + offset]`.

    Descriptions that mention another item of the chunk (e.g. "duplicate of
    entries[3]") are shifted the same way. `error.status` stays as the server
    sent it.
    """
    if offset == 0 or not error.field_violations:
        return error
    pattern = re.compile(rf"(?<![\w.]){re.escape(field)}\[(\d+)\]")

    def shift(text: str) -> str:
        return pattern.sub(lambda m: f"{field}[{int(m[1]) + offset}]", text)

    shifted = type(error)(
        error.code,
        error.message,
        field_violations={shift(f): shift(d) for f, d in error.field_violations.items()},
        resource_name=error.resource_name,
        precondition_types=error.precondition_types,
        preconditions=error.preconditions,
        quota_violations=error.quota_violations,
        status=error.status,
    )
    shifted.__cause__ = error.__cause__
    for note in getattr(error, "__notes__", ()):
        shifted.add_note(note)
    return shifted


async def send_in_chunks(
    items: Iterable[T],
    chunk_size: int,
    field: str,
    send: Callable[[int, list[T]], Awaitable[R]],
) -> AsyncIterator[R]:
    """`send(chunk_index, chunk)` for each chunk of `items`, yielding each response.

    A failed chunk raises its error with `field[i]` indexes shifted to the
    position in `items`, and, past the first chunk, a note saying which items
    earlier calls applied.
    """
    offset = 0
    for index, chunk in enumerate(chunks(items, chunk_size)):
        try:
            response = await send(index, chunk)
        except CreditwatchError as error:
            shifted = shift_indexes(error, field, offset)
            if offset:
                shifted.add_note(
                    f"{field}[0:{offset}] were applied by earlier calls "
                    f"before the call with {field}[{offset}:{offset + len(chunk)}] failed"
                )
            raise shifted from error.__cause__
        yield response
        offset += len(chunk)
