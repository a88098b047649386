"""Batch work's parts run together and stop together (jobs.chunks.together)."""

from __future__ import annotations

import asyncio

import pytest

from creditwatch.server.jobs.chunks import together

pytestmark = pytest.mark.asyncio


async def test_when_one_part_fails_the_others_are_stopped_before_the_error_goes_up() -> None:
    claimed: list[int] = []
    stopped: list[str] = []

    async def worker(name: str) -> None:
        try:
            while True:  # claims chunk after chunk
                claimed.append(1)
                await asyncio.sleep(0.01)
        finally:
            stopped.append(name)

    async def failing() -> None:
        await asyncio.sleep(0.05)
        raise ConnectionResetError("the database connection was lost")

    with pytest.raises(ConnectionResetError):
        await together(worker("a"), worker("b"), failing())
    assert sorted(stopped) == ["a", "b"]  # stopped, and waited for
    count = len(claimed)
    await asyncio.sleep(0.05)
    assert len(claimed) == count  # nothing goes on claiming after the failure


async def test_parts_that_all_end_end_it() -> None:
    done: list[int] = []

    async def part(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        done.append(i)

    await together(*(part(i) for i in range(3)))
    assert sorted(done) == [0, 1, 2]
