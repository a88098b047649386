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
is scored by the version the server chose for it; a file replaced since the
server loaded it is not loaded) and nothing else: no database, no gRPC. They
are started on the first chunk that needs them, not with the server. A worker
that dies takes only its chunk with it: that chunk is scored in the server
process, so the stream goes on with nothing lost, and a later chunk starts a
new pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
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
RESTART_PAUSE_SECONDS = 30.0

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


def _start(server: int, models: Sequence[tuple[str, str]]) -> None:
    """A worker's start (ProcessPoolExecutor's initializer): leave with the
    server process, not with a signal meant for it; then load every model
    whose files are still the server's."""
    # Ctrl-C in a terminal, or a service manager stopping the whole group,
    # signals the workers too: the server stops them itself once its calls
    # are done, and they follow it if it is killed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(server,), daemon=True).start()
    same = []
    for path, fingerprint in models:
        if _fingerprint(Path(path)) == fingerprint:
            same.append(path)
        else:  # replaced since the server loaded it: its chunks stay in the server
            log.warning("model files changed since the server loaded them", extra={"path": path})
    _load(same)


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


def score_chunk(version: str, chunk: scoring_pb2.StreamScoresRequest) -> list[bytes | None]:
    """A chunk's answers, item by item: a serialised ScoreItemResult for each
    valid statement without events, None for every item the server must
    answer itself (and for all of them if this worker has no model `version`)."""
    items = chunk.items
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


def usable_cores(
    cgroups: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int:
    """The cores this process may use: its CPU affinity, capped by the CPU
    quota of its cgroup and every cgroup above it (v2 `cpu.max`, v1
    `cpu.cfs_quota_us`): a container limited to 2 CPUs on a 64-core host
    sees 64 cores in its affinity."""
    cores = len(os.sched_getaffinity(0))
    for quota in _cpu_quotas(cgroups, membership):
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def _cpu_quotas(cgroups: Path, membership: Path) -> list[float]:
    """CPUs allowed by each cgroup quota that applies to this process
    (`membership` lists its cgroups, as /proc/self/cgroup does)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return []
    quotas = []
    for line in lines:
        _, controllers, own = line.split(":", 2)
        if controllers == "":  # v2: cpu.max in the own group and its parents
            group, name = cgroups / own.lstrip("/"), "cpu.max"
        elif "cpu" in controllers.split(","):  # v1
            group, name = cgroups / controllers / own.lstrip("/"), "cpu.cfs_quota_us"
        else:
            continue
        while True:
            try:
                if name == "cpu.max":
                    limit, period = (group / name).read_text().split()
                else:
                    limit = (group / name).read_text().strip()
                    period = (group / "cpu.cfs_period_us").read_text().strip()
                if limit not in ("max", "-1"):
                    quotas.append(int(limit) / int(period))
            except (OSError, ValueError):
                pass  # no such file at this level, or no quota
            if group == cgroups or cgroups not in group.parents:
                break
            group = group.parent
    return quotas


def default_workers() -> int:
    """Worker processes by default: one per usable core, none on one core
    (handing chunks to another process there costs and gains nothing)."""
    cores = usable_cores()
    return cores if cores > 1 else 0


def _fingerprint(manifest: Path) -> str:
    """sha256 of a model's manifest and ONNX file, as they are now."""
    digest = hashlib.sha256(manifest.read_bytes())
    digest.update(manifest.with_suffix(".onnx").read_bytes())
    return digest.hexdigest()


class ChunkProcesses:
    """A pool of worker processes scoring StreamScores chunks (see the module)."""

    def __init__(self, manifests: Sequence[Path], workers: int) -> None:
        """Call when the server loads its models: workers load only the files
        that are, byte for byte, the ones the server loaded then."""
        if workers < 1:
            raise ValueError("at least one worker process")
        self._models = [(str(path), _fingerprint(path)) for path in manifests]
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._paused_until = 0.0
        self._closed = False

    def _started(self) -> ProcessPoolExecutor | None:
        if self._closed or time.monotonic() < self._paused_until:
            return None
        if self._pool is None:
            # spawn, not fork: the server process runs gRPC's and onnxruntime's
            # threads, which a forked child would inherit half-copied.
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(os.getpid(), self._models),
            )
            log.info("stream scoring processes started", extra={"workers": self._workers})
        return self._pool

    async def score(
        self, version: str, chunk: scoring_pb2.StreamScoresRequest
    ) -> list[bytes | None] | None:
        """`score_chunk` in a worker; None if there is none to do it (the
        caller scores the chunk itself): closed, a worker died or could not
        start (then the pool pauses for RESTART_PAUSE_SECONDS before the next
        chunk starts a new one, so a worker that cannot start is not started
        again for every chunk)."""
        pool = self._started()
        if pool is None:
            return None
        try:
            # The chunk is pickled (serialised) by the pool's feeder thread,
            # not on the event loop.
            work = pool.submit(score_chunk, version, chunk)
            # A pool future is never cancelled, even when the stream is: on
            # Python 3.11 a pool that breaks while it holds a cancelled future
            # leaves every other pending future unresolved (CPython #105829).
            work.add_done_callback(_retrieve)
            return await asyncio.shield(asyncio.wrap_future(work))
        except (BrokenProcessPool, OSError, RuntimeError) as error:
            if self._pool is pool and not self._closed:
                log.error(
                    "stream scoring processes failed; chunks are scored in the server",
                    extra={"error": repr(error), "pause_seconds": RESTART_PAUSE_SECONDS},
                )
                self._pool = None
                self._paused_until = time.monotonic() + RESTART_PAUSE_SECONDS
                pool.shutdown(wait=False)
            return None

    def close(self) -> None:
        """Stop the workers for good (a chunk being scored is abandoned)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _retrieve(work: Future[list[bytes | None]]) -> None:
    # Marks a failure as seen when the stream that wanted it has gone.
    if not work.cancelled():
        work.exception()
