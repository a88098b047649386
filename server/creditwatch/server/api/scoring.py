"""ScoringService: scores from statements on the spot, stored scores by company,
and the model registry."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2

from creditwatch.server import metrics
from creditwatch.server.api import converters as cv
from creditwatch.server.api import score_wire
from creditwatch.server.api import scoring_converters as sc
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.errors import bidi_stream, status_for, unary, unary_as_caller
from creditwatch.server.api.handlers import add_service
from creditwatch.server.api.stream_processes import (
    MAX_CORRELATION_ID,
    SUPPORTED_CURRENCIES,
    ChunkProcesses,
    plain_statements,
)
from creditwatch.server.domain.currency import UnsupportedCurrency
from creditwatch.server.domain.errors import (
    DomainError,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from creditwatch.server.domain.events import RiskState
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.paging import encode_token, fingerprint, page_request
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.domain.tenants import SCOPE_MODELS_ACTIVATE, Caller
from creditwatch.server.intake import Intake
from creditwatch.server.scoring.engine import Scorer, ScoreRequest
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import database
from creditwatch.server.store.activations import ActivationStore
from creditwatch.v1 import common_pb2, scoring_pb2, scoring_pb2_grpc

log = logging.getLogger(__name__)

MAX_STREAM_CHUNK = 1_000
# Events a prospect's score takes into account (the contract's 0..100).
MAX_EVENTS = 100
# Chunks with more items than this are read and answered in a worker thread
# (or process), so that a 1,000-item chunk does not hold the event loop for
# milliseconds.
INLINE_ITEMS = 64
# Chunks of one stream held at once: being read, scored or answered.
CHUNKS_IN_FLIGHT = 3


@dataclass(frozen=True)
class _CompanyScore:
    """A company item's stored score, with the company it belongs to."""

    score: StoredScore
    company: CompanyId


# What one stream item comes to: a score (a company item's with its company),
# a request still to score, or why it has no score.
Outcome = StoredScore | _CompanyScore | ScoreRequest | DomainError


def _response(
    items: Sequence[scoring_pb2.ScoreItem],
    outcomes: Sequence[Outcome | bytes | None],
    answered: Sequence[bytes | None],
) -> bytes:
    """A chunk's serialised answer: an item's serialised ScoreItemResult from
    `answered` (a worker process's), else its outcome; an outcome in bytes is
    a serialised Score."""
    results: list[bytes] = []
    times: dict[datetime, Timestamp] = {}  # the chunk's scores share their times
    for item, outcome, done in zip(items, outcomes, answered, strict=True):
        if done is not None:
            results.append(done)
            continue
        if isinstance(outcome, bytes):
            results.append(score_wire.result(item.correlation_id, outcome))
            continue
        result = scoring_pb2.ScoreItemResult(correlation_id=item.correlation_id)
        if isinstance(outcome, StoredScore):
            cv.fill_score(result.score, outcome, None, times)
        elif isinstance(outcome, _CompanyScore):
            cv.fill_score(result.score, outcome.score, outcome.company, times)
        elif isinstance(outcome, DomainError):
            result.error.CopyFrom(_error_status(outcome))
        else:  # a statement always scores
            raise AssertionError(f"item {item.correlation_id!r} left unscored")
        results.append(result.SerializeToString())
    return score_wire.response(results)


def _model_version(name: str, field: str) -> str:
    prefix = "models/"
    if not name.startswith(prefix) or len(name) == len(prefix):
        raise InvalidArgument.single(field, "must be a resource name 'models/{version}'")
    return name[len(prefix) :]


def _company(ref: common_pb2.CompanyRef, field: str) -> CompanyId:
    problems: list[FieldViolation] = []
    found = cv.company(ref, field, problems)
    if found is None:
        raise InvalidArgument(problems)
    return found


def _item_fault(error: Exception, what: str) -> DomainError:
    """A stream item's unexpected failure as its own status, the stream going
    on: UNAVAILABLE for a lost database connection (retry the item), else
    INTERNAL with an id that finds the traceback in the log."""
    if database.connection_lost(error):
        log.warning("stream item failed: database unreachable", extra={"item": what})
        return Unavailable("the database connection was lost; retry this item")
    error_id = uuid.uuid4().hex[:12]
    log.error("stream item failed", exc_info=error, extra={"item": what, "error_id": error_id})
    return Internal(f"internal error; quote reference {error_id}")


def _error_status(error: DomainError) -> status_pb2.Status:
    _, _, details = status_for(error)
    return status_pb2.Status.FromString(details)


# The risk state of a prospect scored without events.
_NO_EVENTS = RiskState()

# Serialised ScoreCompany answers kept per replica (about 1 KB each).
ANSWERS_KEPT = 10_000


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    """gRPC face of the scoring engine and model registry."""

    def __init__(
        self,
        auth: Authenticator,
        registry: ModelRegistry,
        intake: Intake,
        activations: ActivationStore,
        processes: ChunkProcesses | None = None,
    ) -> None:
        """`processes`, if given, scores large StreamScores chunks."""
        self._auth = auth
        self._registry = registry
        self._intake = intake
        self._activations = activations
        self._processes = processes
        self._answers: dict[CompanyId, tuple[StoredScore, bytes]] = {}
        self._wires: dict[str, score_wire.ScoreWire] = {}

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The calling tenant and its key's grants."""
        return await self._auth.caller(context)

    def _scorer(self, model_version: str) -> Scorer:
        if not model_version:
            return self._registry.active
        try:
            return self._registry.get(model_version)
        except NotFound:
            raise InvalidArgument.single(
                "model_version", f"no loaded model has version {model_version!r}"
            ) from None

    async def _stored(self, company: CompanyId) -> StoredScore:
        score, _ = await self._intake.score_company(company)
        return score

    @unary
    async def ScoreCompany(  # type: ignore[override]  # may answer in bytes
        self, request: scoring_pb2.ScoreCompanyRequest, tenant: uuid.UUID
    ) -> scoring_pb2.ScoreCompanyResponse | bytes:
        company = _company(request.company, "company")
        score, computed = await self._intake.score_company(company)
        if computed:
            return scoring_pb2.ScoreCompanyResponse(
                score=cv.score_message(score, company), computed=True
            )
        # A company's score is asked for far more often than it changes: the
        # answer is serialised once per stored score (the score cache hands
        # out the same object until the score changes) and sent as bytes.
        answered = self._answers.get(company)
        if answered is not None and answered[0] is score:
            return answered[1]
        answer = scoring_pb2.ScoreCompanyResponse(
            score=cv.score_message(score, company)
        ).SerializeToString()
        self._answers[company] = (score, answer)
        if len(self._answers) > ANSWERS_KEPT:
            del self._answers[next(iter(self._answers))]  # the oldest entry
        return answer

    @unary
    async def ScoreFinancials(
        self, request: scoring_pb2.ScoreFinancialsRequest, tenant: uuid.UUID
    ) -> scoring_pb2.ScoreFinancialsResponse:
        if not request.HasField("financial_statement"):
            raise InvalidArgument.single("financial_statement", "required")
        if len(request.events) > MAX_EVENTS:
            raise InvalidArgument.single("events", f"at most {MAX_EVENTS} events")
        # Every part checked before any problem is raised: one error lists them all.
        problems: list[FieldViolation] = []
        scorer = statement = state = company = None
        try:
            scorer = self._scorer(request.model_version)
        except InvalidArgument as error:
            problems += error.violations
        try:
            statement = sc.statement(request.financial_statement, "financial_statement")
        except InvalidArgument as error:
            problems += error.violations
        try:
            state = (
                RiskState.of(sc.events(list(request.events), "events"))
                if request.events
                else _NO_EVENTS
            )
        except InvalidArgument as error:
            problems += error.violations
        if request.HasField("company"):
            company = cv.company(request.company, "company", problems)
        if problems or scorer is None or statement is None or state is None:
            raise InvalidArgument(problems)
        try:
            score = await scorer.score(ScoreRequest(statement, state))
        except UnsupportedCurrency as error:
            raise InvalidArgument.single("financial_statement.currency_code", str(error)) from None
        assert score is not None
        return scoring_pb2.ScoreFinancialsResponse(score=cv.score_message(score, company))

    @bidi_stream
    async def StreamScores(  # type: ignore[override]  # answers in bytes
        self, requests: AsyncIterator[scoring_pb2.StreamScoresRequest], tenant: uuid.UUID
    ) -> AsyncIterator[bytes]:  # serialised StreamScoresResponses
        # Chunks overlap: while one is in the model, the next is being read
        # and the one before answered. Answers still go out in chunk order, and
        # at most CHUNKS_IN_FLIGHT chunks are held at once: the reader takes a
        # permit before it starts a chunk (gRPC's flow control then holds the
        # client back), and a chunk gives its permit back once answered.
        room = asyncio.Semaphore(CHUNKS_IN_FLIGHT)
        started: asyncio.Queue[asyncio.Task[bytes] | None]
        started = asyncio.Queue()
        # The tasks still running, to cancel when the stream ends: a task
        # leaves as it finishes (a finished chunk's task holds its answer, a
        # megabyte for 1,000 items, which a list kept to the stream's end).
        tasks: set[asyncio.Task[Any]] = set()

        def finished(task: asyncio.Task[Any]) -> None:
            tasks.discard(task)
            if not task.cancelled():
                # Seen, so not "never retrieved" in the log should the stream
                # end before its answer is awaited (awaiting still raises it).
                task.exception()

        def track(task: asyncio.Task[Any]) -> None:
            tasks.add(task)
            task.add_done_callback(finished)

        async def read() -> None:
            try:
                async for chunk in requests:
                    count = len(chunk.items)
                    if count == 0 or count > MAX_STREAM_CHUNK:
                        raise InvalidArgument.single(
                            "items", f"{count} given; 1 to {MAX_STREAM_CHUNK:,} items per message"
                        )
                    await room.acquire()
                    # Started and queued with no await between: every chunk
                    # task is either answered or cancelled below.
                    task = asyncio.create_task(self._score_chunk(chunk, self._registry.active))
                    track(task)
                    started.put_nowait(task)
            finally:
                started.put_nowait(None)  # the end, after every chunk started

        reader = asyncio.create_task(read())
        track(reader)
        try:
            while (task := await started.get()) is not None:
                try:
                    yield await task
                finally:
                    room.release()
            await reader  # a refused chunk ends the stream after the answers before it
        finally:
            for task in list(tasks):
                task.cancel()

    async def _score_chunk(self, chunk: scoring_pb2.StreamScoresRequest, scorer: Scorer) -> bytes:
        """One chunk's serialised answer. Valid statements without events,
        nearly every item of a portfolio upload, are read and scored in
        columns and their scores written straight in wire format, by a worker
        process if there are any; the rest (companies, events, anything
        invalid) item by item."""
        items = chunk.items
        large = len(items) > INLINE_ITEMS
        if large and self._processes is not None:
            answered = await self._processes.score(scorer.version, chunk)
            metrics.STREAM_CHUNKS.labels("server" if answered is None else "worker").inc()
            if answered is not None:
                return await self._answer_rest(items, answered, scorer)
        plain = plain_statements(items)
        messages = [items[i].financial_statement for i in plain]
        if large:
            columns, chosen, _ = await asyncio.to_thread(
                sc.statement_columns, messages, SUPPORTED_CURRENCIES
            )
        else:
            columns, chosen, _ = sc.statement_columns(messages, SUPPORTED_CURRENCIES)
        outcomes: list[Outcome | bytes | None] = [None] * len(items)
        blocks = await scorer.score_columns_block(columns) if chosen else []
        for at in chosen:
            outcomes[plain[at]] = b""  # a score in `blocks`, written below
        await self._score_items(items, outcomes, scorer)
        wire = self._wire(scorer)
        answered = [None] * len(items)

        def answer() -> bytes:
            scores = (score for block in blocks for score in wire.scores(block))
            for at, score in zip(chosen, scores, strict=True):
                outcomes[plain[at]] = score
            return _response(items, outcomes, answered)

        return await asyncio.to_thread(answer) if large else answer()

    async def _answer_rest(
        self,
        items: Sequence[scoring_pb2.ScoreItem],
        answered: Sequence[bytes | None],
        scorer: Scorer,
    ) -> bytes:
        """A chunk's answer once a worker process has answered what it could."""
        finished = [done for done in answered if done is not None]
        if len(finished) == len(answered):
            return score_wire.response(finished)
        outcomes: list[Outcome | bytes | None] = [
            None if done is None else b"" for done in answered
        ]
        await self._score_items(items, outcomes, scorer)
        return await asyncio.to_thread(_response, items, outcomes, answered)

    async def _score_items(
        self,
        items: Sequence[scoring_pb2.ScoreItem],
        outcomes: list[Outcome | bytes | None],
        scorer: Scorer,
    ) -> None:
        """Fill in the outcomes still None, item by item (statements scored together)."""
        pending: dict[int, ScoreRequest] = {}
        for i, item in enumerate(items):
            if outcomes[i] is None:
                outcomes[i] = outcome = await self._score_item(item, scorer)
                if isinstance(outcome, ScoreRequest):
                    pending[i] = outcome
        if pending:
            try:
                computed: Sequence[Outcome | None] = await scorer.score_many(list(pending.values()))
            except Exception as error:  # the model run failed: those items' fault
                fault = _item_fault(error, f"{len(pending)} statements")
                computed = [fault] * len(pending)
            for i, later in zip(pending, computed, strict=True):
                outcomes[i] = later

    def _wire(self, scorer: Scorer) -> score_wire.ScoreWire:
        wire = self._wires.get(scorer.version)
        if wire is None:
            wire = self._wires[scorer.version] = score_wire.ScoreWire(scorer.texts)
        return wire

    async def _score_item(self, item: scoring_pb2.ScoreItem, scorer: Scorer) -> Outcome:
        """A stored score (company items), a request to run (statement items), or an error."""
        try:
            if not 0 < len(item.correlation_id) <= MAX_CORRELATION_ID:
                return InvalidArgument.single(
                    "correlation_id", f"1 to {MAX_CORRELATION_ID} characters"
                )
            subject = item.WhichOneof("subject")
            if subject == "company" and item.events:
                return InvalidArgument.single("events", "must be empty with a company")
            if len(item.events) > MAX_EVENTS:
                return InvalidArgument.single("events", f"at most {MAX_EVENTS} events")
            if subject == "company":
                company = _company(item.company, "company")
                return _CompanyScore(await self._stored(company), company)
            if subject == "financial_statement":
                statement = sc.statement(item.financial_statement, "financial_statement")
                scorer.conversion_rate(statement)  # surfaces an unsupported currency per item
                return ScoreRequest(statement, RiskState.of(sc.events(list(item.events), "events")))
            return InvalidArgument.single(
                "subject", "a company or a financial_statement is required"
            )
        except UnsupportedCurrency as error:
            return InvalidArgument.single("financial_statement.currency_code", str(error))
        except DomainError as error:
            return error
        except Exception as error:  # one item's fault, not the stream's
            return _item_fault(error, item.correlation_id)

    def _model(self, scorer: Scorer) -> scoring_pb2.Model:
        active = scorer is self._registry.active
        return sc.model_message(
            scorer.model.info, active, self._registry.activated_at if active else None
        )

    @unary
    async def GetModel(
        self, request: scoring_pb2.GetModelRequest, tenant: uuid.UUID
    ) -> scoring_pb2.GetModelResponse:
        version = _model_version(request.name, "name")
        return scoring_pb2.GetModelResponse(model=self._model(self._registry.get(version)))

    @unary
    async def ListModels(
        self, request: scoring_pb2.ListModelsRequest, tenant: uuid.UUID
    ) -> scoring_pb2.ListModelsResponse:
        filters = fingerprint("models")
        page = page_request(
            request.page_size, request.page_token, filters, default_size=100, max_size=100
        )
        scorers = self._registry.all()
        after = page.key(int)
        start = max(0, after[0]) if after else 0
        chosen = scorers[start : start + page.size]
        more = start + page.size < len(scorers)
        return scoring_pb2.ListModelsResponse(
            models=[self._model(s) for s in chosen],
            next_page_token=encode_token((start + page.size,), filters) if more else "",
        )

    @unary_as_caller
    async def ActivateModel(
        self, request: scoring_pb2.ActivateModelRequest, caller: Caller
    ) -> scoring_pb2.ActivateModelResponse:
        caller.require(SCOPE_MODELS_ACTIVATE)  # before anything about the request
        version = _model_version(request.name, "name")
        scorer = self._registry.get(version)
        previous = self._registry.active.version
        current = await self._activations.current()
        if current is not None and current[0] == version:
            # The activated model already: a no-op, as the contract says; no
            # new activation time, nothing re-scored. (With no activation
            # recorded, one is, even for this replica's own default: other
            # replicas may run another default, or be pinned to one.)
            self._registry.activate(version, current[1])
            return scoring_pb2.ActivateModelResponse(
                model=self._model(scorer), previous_version=version
            )
        when = await self._activations.record(version, caller.tenant_id)
        self._registry.activate(version, when)
        return scoring_pb2.ActivateModelResponse(
            model=self._model(scorer), previous_version=previous
        )


def add_to_server(servicer: ScoringServicer, server: grpc.aio.Server) -> None:
    """Register the service like the generated `add_ScoringServiceServicer_to_server`,
    except that ScoreCompany and StreamScores may answer with pre-serialised
    responses."""
    add_service(
        server,
        scoring_pb2,
        "ScoringService",
        servicer,
        frozenset({"ScoreCompany", "StreamScores"}),
    )
