"""Micro-batching: concurrent predictions share one onnxruntime call.

Natural batching rather than a timer: when the model is idle a request runs
at once (no added latency at low load); while a batch runs, new requests queue
and go together in the next one. The wait is therefore bounded by one model
run, and under load each run carries many rows, which is where onnxruntime's
per-call overhead is amortised.

At low load there is not even a wait of one loop iteration: while the last
batch served a lone caller, a request that finds the model idle runs at once,
inside its own call. A second such request in the same loop iteration means
callers are arriving together, and from then on they are batched again until
a batch serves a lone caller.

Large batches run in a worker thread so the event loop keeps serving other
calls. Small ones (up to `inline_rows`, default 32: one score is one row,
~20 µs, and 32 rows take ~200 µs) run on the loop itself, because handing work
to a thread and back costs about as much (~200 µs measured) as the model run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
Runner = Callable[[Matrix], npt.NDArray[np.float32]]


class MicroBatcher:
    """Coalesces `predict` calls into batched runs of `runner` (rows in, one
    output value or output row per input row out)."""

    def __init__(
        self, runner: Runner, executor: Executor, max_rows: int = 4096, inline_rows: int = 32
    ) -> None:
        self._runner = runner
        self._executor = executor
        self._max_rows = max_rows
        self._inline_rows = inline_rows
        self._pending: deque[tuple[Matrix, asyncio.Future[npt.NDArray[np.float32]]]] = deque()
        self._pending_rows = 0
        self._running = False
        self._alone = True  # the last batch served one caller: low load
        self._ran_at_once = False  # a caller ran at once in this loop iteration
        self.batches = 0
        self.rows = 0

    async def predict(self, rows: Matrix) -> npt.NDArray[np.float32]:
        """Model outputs for `rows` (shape (n, features)); runs with whatever else is queued."""
        loop = asyncio.get_running_loop()
        if self._alone and not self._running and len(rows) <= self._inline_rows:
            if not self._ran_at_once:
                self._ran_at_once = True
                loop.call_soon(self._next_iteration)
                try:
                    outputs = self._runner(rows)
                except Exception:
                    log.exception("model run failed")
                    raise
                self.batches += 1
                self.rows += len(rows)
                return outputs
            self._alone = False  # two callers in one iteration: batch them
        future: asyncio.Future[npt.NDArray[np.float32]] = loop.create_future()
        self._pending.append((rows, future))
        self._pending_rows += len(rows)
        if not self._running:
            self._running = True
            # call_soon, not a direct call: requests arriving in this same loop
            # iteration join the batch.
            loop.call_soon(self._launch)
        return await future

    def _next_iteration(self) -> None:
        self._ran_at_once = False

    def _take(self) -> list[tuple[Matrix, asyncio.Future[npt.NDArray[np.float32]]]]:
        taken: list[tuple[Matrix, asyncio.Future[npt.NDArray[np.float32]]]] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0][0]) <= self._max_rows):
            item = self._pending.popleft()
            count += len(item[0])
            taken.append(item)
        self._pending_rows -= count
        return taken

    def _launch(self) -> None:
        batch = [item for item in self._take() if not item[1].cancelled()]
        if not batch:
            self._running = bool(self._pending)
            if self._running:
                asyncio.get_running_loop().call_soon(self._launch)
            return
        matrix = batch[0][0] if len(batch) == 1 else np.concatenate([rows for rows, _ in batch])
        loop = asyncio.get_running_loop()
        if len(matrix) <= self._inline_rows:
            done: asyncio.Future[npt.NDArray[np.float32]] = loop.create_future()
            try:
                done.set_result(self._runner(matrix))
            except Exception as error:
                done.set_exception(error)
            self._finish(batch, done)
            return
        task = loop.run_in_executor(self._executor, self._runner, matrix)
        task.add_done_callback(lambda done: self._finish(batch, done))

    def _finish(
        self,
        batch: list[tuple[Matrix, asyncio.Future[npt.NDArray[np.float32]]]],
        done: asyncio.Future[npt.NDArray[np.float32]],
    ) -> None:
        self.batches += 1
        self._alone = len(batch) == 1
        error = done.exception()
        if error is None:
            outputs = done.result()
            start = 0
            for rows, future in batch:
                end = start + len(rows)
                if not future.done():
                    future.set_result(outputs[start:end])
                start = end
            self.rows += start
        else:
            log.error("model run failed", exc_info=error)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        if self._pending:
            self._launch()
        else:
            self._running = False
