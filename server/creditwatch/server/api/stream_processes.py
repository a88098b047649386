"""StreamScores chunks scored in processes of their own, beside the server's.

A portfolio upload is CPU work from end to end: reading 1,000 statements,
their features, the model, reasons and the answer's bytes. In the server
process all but the model run hold Python's GIL, so a stream used about one
and a third cores however many the machine has. Here a chunk is handed, as
the bytes it came in, to one of a pool of worker processes that does all of
it and hands back each scored item's serialised ScoreItemResult; the server
process is left with gRPC itself and with the items a worker leaves alone
(companies, whose stored score is in PostgreSQL; statements with events;
anything invalid, whose precise error the server's own path words).

Workers load the same model files as the server (every version, so a chunk
is scored by the version the server chose for it) and nothing else: no
database, no gRPC. They are started on the first chunk that needs them, not
with the server. A worker that dies takes only its chunk with it: the pool
is replaced and that chunk is scored in the server process, so the stream
goes on with nothing lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from creditwatch.server.api import score_wire
from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.domain.currency import DEFAULT_PLN_RATES
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.scoring.batcher import MicroBatcher
from creditwatch.server.scoring.engine import Scorer
from creditwatch.server.scoring.model import OnnxModel
from creditwatch.v1 import scoring_pb2

log = logging.getLogger(__name__)

SUPPORTED_CURRENCIES = frozenset(DEFAULT_PLN_RATES)
PARENT_CHECK_SECONDS = 1.0

# One worker's state: its scorers by model version, and their wire writers.
_scorers: dict[str, tuple[Scorer, score_wire.ScoreWire]] = {}


def plain_statements(items: Sequence[scoring_pb2.ScoreItem]) -> list[int]:
    """Positions of the items that are a statement without events: the ones
    scored in columns (nearly every item of a portfolio upload)."""
    return [
        i
        for i, item in enumerate(items)
        if not item.events and item.WhichOneof("subject") == "financial_statement"
    ]


def _start(server: int, manifests: Sequence[str]) -> None:
    """A worker's start (ProcessPoolExecutor's initializer): leave with the
    server process, then load every model."""
    threading.Thread(target=_exit_without, args=(server,), daemon=True).start()
    _load(manifests)


def _exit_without(server: int) -> None:
    # A worker waits for chunks on a queue it holds both ends of, so a server
    # killed with SIGKILL would leave it waiting for ever: it watches instead.
    while os.getppid() == server:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _load(manifests: Sequence[str]) -> None:
    """Load every model into this process's `_scorers`."""
    unused = ThreadPoolExecutor(1)  # a Scorer needs a batcher; chunks never use it
    for path in manifests:
        model = OnnxModel(Path(path))
        scorer = Scorer(model, MicroBatcher(model.evaluate, unused), OverridePolicy())
        _scorers[scorer.version] = scorer, score_wire.ScoreWire(scorer.texts)


def score_chunk(version: str, chunk: bytes) -> list[bytes | None]:
    """A serialised StreamScoresRequest's answers, item by item: a serialised
    ScoreItemResult for each valid statement without events, None for every
    item the server must answer itself (and for all of them if this worker
    has no model `version`)."""
    items = scoring_pb2.StreamScoresRequest.FromString(chunk).items
    answers: list[bytes | None] = [None] * len(items)
    loaded = _scorers.get(version)
    if loaded is None:
        return answers
    scorer, wire = loaded
    plain = plain_statements(items)
    columns, chosen, _ = sc.statement_columns(
        [items[i].financial_statement for i in plain], SUPPORTED_CURRENCIES
    )
    if chosen:
        block = scorer.score_columns_block_now(columns)
        for at, score in zip(chosen, wire.scores(block), strict=True):
            i = plain[at]
            answers[i] = score_wire.result(items[i].correlation_id, score)
    return answers


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2
    CPU quota (a container limited to 2 CPUs on a 64-core host sees 64)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to respect
    return cores


class ChunkProcesses:
    """A pool of worker processes scoring StreamScores chunks (see the module)."""

    def __init__(self, manifests: Sequence[Path], workers: int) -> None:
        if workers < 1:
            raise ValueError("at least one worker process")
        self._manifests = [str(path) for path in manifests]
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server process runs gRPC's and onnxruntime's
            # threads, which a forked child would inherit half-copied.
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(os.getpid(), self._manifests),
            )
            log.info("stream scoring processes started", extra={"workers": self._workers})
        return self._pool

    async def score(self, version: str, chunk: bytes) -> list[bytes | None] | None:
        """`score_chunk` in a worker; None if the worker died (the caller
        scores the chunk itself; the next chunk gets a new pool)."""
        pool = self._started()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                pool, score_chunk, version, chunk
            )
        except BrokenProcessPool:
            log.error("a stream scoring process died; its chunk is scored in the server")
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            return None

    def close(self) -> None:
        """Stop the workers (a chunk being scored is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
