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
are started on the first chunk that needs them, not with the server; until
they say they have loaded the models, chunks are scored in the server
process rather than kept waiting. Each
has a pipe of its own to the server, so a worker that dies, even in the
middle of an answer, is seen at once (its pipe ends, or it is found dead
before it is given a chunk) and takes only the chunk it had with it: that
chunk is scored in the server process, so the stream goes on with nothing
lost, and a new worker is started after a pause. (The
standard library's process pool shares one result pipe among its workers; a
worker killed while writing to it left the pool waiting for ever.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

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
RESTART_PAUSE_SECONDS = 30.0
READY = "ready"  # what a worker says once its models are loaded
# A chunk takes a worker tens of milliseconds (its first, with the models'
# loading, a second or two); one that takes this long is stuck, and its
# worker is killed.
CHUNK_TIMEOUT_SECONDS = 60.0

# One worker's state: its scorers by model version, and their wire writers.
_scorers: dict[str, tuple[Scorer, score_wire.ScoreWire]] = {}


MAX_CORRELATION_ID = 128
"""The contract's longest `correlation_id`, in characters."""


def plain_statements(items: Sequence[scoring_pb2.ScoreItem]) -> list[int]:
    """Positions of the items that are a statement without events, under a
    valid correlation id: the ones scored in columns (nearly every item of a
    portfolio upload). The rest are answered item by item."""
    return [
        i
        for i, item in enumerate(items)
        if not item.events
        and 0 < len(item.correlation_id) <= MAX_CORRELATION_ID
        and item.WhichOneof("subject") == "financial_statement"
    ]


def _serve(server: Connection, models: Sequence[tuple[str, str]], policy: OverridePolicy) -> None:
    """A worker process's life: load the models whose files are still the
    server's, then answer chunks until the server's end of the pipe closes
    (the server stopped or was killed)."""
    # Ctrl-C in a terminal signals the workers too: the server stops them
    # itself once its calls are done. (SIGTERM is left alone: multiprocessing
    # ends a server's leftover workers with it at exit, and waits for them.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    same = []
    for path, fingerprint in models:
        if _fingerprint(Path(path)) == fingerprint:
            same.append(path)
        else:  # replaced since the server loaded it: its chunks stay in the server
            log.warning("model files changed since the server loaded them", extra={"path": path})
    _load(same, policy)
    try:
        server.send(READY)
    except OSError:
        return
    while True:
        try:
            version, chunk = server.recv()
        except (EOFError, OSError):
            return
        answers: list[bytes | None] | None
        try:
            answers = score_chunk(version, chunk)
        except Exception:  # the server scores this chunk itself
            log.exception("a worker process could not score a chunk")
            answers = None
        try:
            server.send(answers)
        except OSError:
            return


def _load(manifests: Sequence[str], policy: OverridePolicy) -> None:
    """Load every model into this process's `_scorers`, with the server's
    override policy (a chunk's items carry no events, so it applies to none
    of them today; it is the server's all the same)."""
    unused = ThreadPoolExecutor(1)  # a Scorer needs a batcher; chunks never use it
    for path in manifests:
        model = OnnxModel(Path(path))
        scorer = Scorer(model, MicroBatcher(model.evaluate, unused), policy)
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


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    pipe: Connection


def _wait_until_ready(pipe: Connection) -> None:
    """Wait for a new worker to have loaded its models (in a thread).
    EOFError or OSError: it died; TimeoutError: it is stuck."""
    if not pipe.poll(CHUNK_TIMEOUT_SECONDS):
        raise TimeoutError(f"not ready in {CHUNK_TIMEOUT_SECONDS:.0f} s")
    if pipe.recv() != READY:
        raise OSError("a worker said something other than that it is ready")


def _round_trip(pipe: Connection, request: tuple[str, scoring_pb2.StreamScoresRequest]) -> Any:
    """Send a chunk to a worker and wait for its answer (in a thread: the
    chunk is pickled here, not on the event loop). EOFError or OSError: the
    worker is gone; TimeoutError: it is stuck (whether or not the stream
    that sent the chunk still waits)."""
    pipe.send(request)
    if not pipe.poll(CHUNK_TIMEOUT_SECONDS):
        raise TimeoutError(f"no answer in {CHUNK_TIMEOUT_SECONDS:.0f} s")
    return pipe.recv()


class ChunkProcesses:
    """Worker processes scoring StreamScores chunks (see the module)."""

    def __init__(self, manifests: Sequence[Path], workers: int, policy: OverridePolicy) -> None:
        """Call when the server loads its models: workers load only the files
        that are, byte for byte, the ones the server loaded then, and score
        with the server's override `policy`."""
        if workers < 1:
            raise ValueError("at least one worker process")
        self._models = [(str(path), _fingerprint(path)) for path in manifests]
        self._policy = policy
        self._size = workers
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._loading: set[_Worker] = set()  # started, models not loaded yet
        self._changed: asyncio.Condition | None = None
        # A round trip or a wait for a new worker to be ready per worker, at most.
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="stream-processes")
        self._paused_until = 0.0
        self._closed = False

    def _start_workers(self) -> None:
        if self._closed or time.monotonic() < self._paused_until:
            return
        context = multiprocessing.get_context("spawn")
        added = 0
        while len(self._workers) < self._size:
            # spawn, not fork: the server process runs gRPC's and onnxruntime's
            # threads, which a forked child would inherit half-copied.
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve,
                args=(theirs, self._models, self._policy),
                name="creditwatch-stream-worker",
            )
            process.daemon = True
            try:
                process.start()
            except OSError as error:
                ours.close()
                self._failed(f"could not start a stream scoring process: {error}")
                return
            finally:
                theirs.close()  # the worker's end lives in the worker only
            worker = _Worker(process, ours)
            self._workers.add(worker)
            self._loading.add(worker)
            ready = asyncio.get_running_loop().run_in_executor(
                self._threads, _wait_until_ready, ours
            )
            ready.add_done_callback(functools.partial(self._back, worker))
            added += 1
        if added:
            log.info("stream scoring processes started", extra={"workers": added})

    def _failed(self, message: str) -> None:
        log.error(message, extra={"pause_seconds": RESTART_PAUSE_SECONDS})
        self._paused_until = time.monotonic() + RESTART_PAUSE_SECONDS

    async def score(
        self, version: str, chunk: scoring_pb2.StreamScoresRequest
    ) -> list[bytes | None] | None:
        """`score_chunk` in a worker; None if there is none to do it (the
        caller scores the chunk itself): closed; the worker died on it; every
        worker is still loading its models (the first chunks after start);
        or none is left and starting new ones is paused (RESTART_PAUSE_SECONDS
        after a failure, so a worker that cannot start is not started again
        for every chunk). While every ready worker is busy, it waits for one."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        self._start_workers()
        async with self._changed:
            while True:
                await self._changed.wait_for(
                    lambda: bool(self._idle or not self._workers - self._loading)
                )
                if not self._idle:
                    return None
                worker = self._idle.pop()
                if worker.process.is_alive():
                    break
                # Died while idle: not worth a chunk's detour.
                self._lost(worker)
                self._start_workers()
        loop = asyncio.get_running_loop()
        trip = loop.run_in_executor(self._threads, _round_trip, worker.pipe, (version, chunk))
        # A worker is free again only when its answer is in, even if the
        # stream that sent the chunk has gone.
        trip.add_done_callback(functools.partial(self._back, worker))
        try:
            answers: list[bytes | None] | None = await asyncio.shield(trip)
        except (EOFError, OSError, TimeoutError):
            return None  # it died or is stuck; `_back` dropped it
        return answers

    def _back(self, worker: _Worker, wait: asyncio.Future[Any]) -> None:
        """A wait on a worker ended: for its models to load, or for an answer."""
        self._loading.discard(worker)
        if wait.cancelled() or wait.exception() is not None:
            self._lost(worker)
        elif self._closed:
            self._drop(worker)
        else:
            self._idle.append(worker)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _lost(self, worker: _Worker) -> None:
        """A worker died or is stuck: drop it; start no other for a pause."""
        if worker in self._workers and not self._closed:
            worker.process.kill()
            self._failed(
                "a stream scoring process died or was stuck; chunks it had are scored in "
                f"the server (exit code {worker.process.exitcode})"
            )
        self._drop(worker)

    def _drop(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        self._loading.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        worker.pipe.close()
        worker.process.kill()
        multiprocessing.active_children()  # reaps the workers that have exited

    def close(self) -> None:
        """Stop the workers for good (a chunk being scored is abandoned: its
        caller gets None and scores it itself)."""
        self._closed = True
        for worker in list(self._workers):
            if worker in self._idle:
                self._drop(worker)
            else:
                worker.process.kill()  # its round trip or wait ends, and it is dropped
        self._threads.shutdown(wait=False)
        with contextlib.suppress(RuntimeError):  # no loop, so no caller waiting for a worker
            asyncio.get_running_loop().create_task(self._notify())
