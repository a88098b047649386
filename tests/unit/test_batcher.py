"""Micro-batching: concurrent requests share runs; results go back to the right caller."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pytest

from creditwatch.server.scoring.batcher import MicroBatcher

pytestmark = pytest.mark.asyncio


class Recorder:
    """A runner that returns row sums and records each batch size."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with self.lock:
            self.sizes.append(len(rows))
        if self.delay:
            threading.Event().wait(self.delay)
        return rows.sum(axis=1).astype(np.float32)


async def test_a_lone_request_runs_alone_and_at_once() -> None:
    runner = Recorder()
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(runner, pool)
        out = await batcher.predict(np.array([[1, 2, 3]], dtype=np.float32))
    assert out.tolist() == [6.0]
    assert runner.sizes == [1]


async def test_concurrent_requests_are_coalesced_and_answered_correctly() -> None:
    runner = Recorder(delay=0.005)
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(runner, pool)
        rows = [np.full((1 + i % 3, 4), i, dtype=np.float32) for i in range(200)]
        outs = await asyncio.gather(*(batcher.predict(r) for r in rows))
    for i, (r, out) in enumerate(zip(rows, outs, strict=True)):
        assert out.tolist() == [4.0 * i] * len(r)
    assert sum(runner.sizes) == sum(len(r) for r in rows)
    assert len(runner.sizes) < 20, runner.sizes


async def test_max_rows_bounds_a_batch() -> None:
    runner = Recorder(delay=0.002)
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(runner, pool, max_rows=10)
        await asyncio.gather(*(batcher.predict(np.ones((3, 2), np.float32)) for _ in range(20)))
    assert max(runner.sizes) <= 10


async def test_a_failing_run_fails_its_callers_and_the_next_batch_still_runs() -> None:
    calls = 0

    def flaky(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return rows[:, 0]

    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(flaky, pool)
        with pytest.raises(RuntimeError):
            await batcher.predict(np.ones((1, 2), np.float32))
        assert (await batcher.predict(np.full((1, 2), 7, np.float32))).tolist() == [7.0]


async def test_small_batches_run_on_the_loop_and_large_ones_in_the_worker() -> None:
    threads: list[str] = []

    def runner(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        threads.append(threading.current_thread().name)
        return rows[:, 0]

    with ThreadPoolExecutor(1, thread_name_prefix="onnx") as pool:
        batcher = MicroBatcher(runner, pool, inline_rows=32)
        await batcher.predict(np.ones((17, 4), np.float32))
        await batcher.predict(np.ones((33, 4), np.float32))
    assert threads[0] == threading.current_thread().name
    assert threads[1].startswith("onnx")


async def test_at_low_load_a_request_runs_within_its_own_call() -> None:
    """No loop iteration passes: a callback scheduled before the call has not
    run when the result is back."""
    runner = Recorder()
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(runner, pool)
        for i in range(3):
            ran: list[bool] = []
            asyncio.get_running_loop().call_soon(ran.append, True)
            out = await batcher.predict(np.full((1, 2), i, np.float32))
            assert out.tolist() == [2.0 * i] and ran == []
            await asyncio.sleep(0)


async def test_callers_arriving_together_are_batched_again_then_alone_runs_at_once() -> None:
    runner = Recorder(delay=0.002)
    with ThreadPoolExecutor(1) as pool:
        batcher = MicroBatcher(runner, pool)
        await batcher.predict(np.ones((1, 2), np.float32))  # at once
        outs = await asyncio.gather(
            *(batcher.predict(np.full((1, 2), i, np.float32)) for i in range(50))
        )
        assert [o.tolist() for o in outs] == [[2.0 * i] for i in range(50)]
        # The first of the burst ran at once; the second saw it and the rest
        # were batched.
        assert runner.sizes[:2] == [1, 1] and len(runner.sizes) < 10, runner.sizes
        await batcher.predict(np.ones((1, 2), np.float32))  # a batch of one: low load again
        await asyncio.sleep(0)
        ran: list[bool] = []
        asyncio.get_running_loop().call_soon(ran.append, True)
        await batcher.predict(np.ones((1, 2), np.float32))
        assert ran == []
