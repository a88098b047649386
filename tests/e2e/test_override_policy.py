"""A server started with an override policy file scores by it: ScoreFinancials,
intake and StreamScores alike (the worker processes get the policy too, but
the items they score carry no events, so no policy changes their answers: the
stream's remarked item is the server's); a bad file stops it before it serves,
and stops `creditwatch registers sync` too, as does a policy other than the
servers'.

The policy server has a database of its own: its policy, new there, becomes
the current one, which the session's database must not carry into the other
tests (the session's server would leave re-scoring to it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.type import money_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.server.store import database, migrate, policies
from creditwatch.v1 import common_pb2, companies_pb2, companies_pb2_grpc, scoring_pb2
from creditwatch.v1 import scoring_pb2_grpc as scoring_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e.test_intake import _event as company_event
from tests.e2e.test_intake import _ref
from tests.e2e.test_scoring import _event, healthy
from tests.identifiers import norwegian_numbers

# Two classes down per payment remark (the built-in policy: one), none for an
# open debt collection case (the built-in policy: one).
POLICY = {
    "version": "overrides-test-1",
    "payment_remark_notches": 2,
    "collection_case_notches": 0,
}
QUIET = {"CREDITWATCH_JOBS_ENABLED": "false", "CREDITWATCH_BATCH_SHARE_INTERVAL_SECONDS": "86400"}


@pytest.fixture(scope="module")
def policy_database(fresh_database: Callable[[], str]) -> str:
    url = fresh_database()
    migrate.upgrade(database.async_url(url))
    return url


@pytest.fixture
async def policy_sessions(policy_database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = database.create_engine(database.async_url(policy_database), 2)
    yield database.session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def policy_tenant(policy_sessions: async_sessionmaker[AsyncSession]) -> TenantKey:
    return await new_tenant(policy_sessions, "policy bank")


@pytest.fixture(scope="module")
def policy_server(policy_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("policy") / "overrides.json"
    path.write_text(json.dumps(POLICY))
    env = QUIET | {"CREDITWATCH_OVERRIDE_POLICY_FILE": str(path)}
    with ServerProcess(policy_database, env=env) as process:
        assert '"payment_remark_notches": 2' in process.log_text()  # logged at start
        yield process.address


@pytest.fixture
async def policy_channel(policy_server: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(policy_server) as channel:
        yield channel


def _remark(remark_id: str = "r1") -> companies_pb2.CompanyEvent:
    return _event(
        payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id=remark_id)
    )


async def _score(
    channel: grpc.aio.Channel, tenant: TenantKey, *events: companies_pb2.CompanyEvent
) -> common_pb2.Score:
    reply = await scoring_grpc.ScoringServiceStub(channel).ScoreFinancials(
        scoring_pb2.ScoreFinancialsRequest(financial_statement=healthy(), events=list(events)),
        metadata=tenant.metadata,
    )
    return reply.score


async def test_score_financials_follows_the_file(
    policy_channel: grpc.aio.Channel,
    channel: grpc.aio.Channel,
    tenant: TenantKey,
    policy_tenant: TenantKey,
    policy_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # The server recorded the policy it started with, new on its database:
    # the current one, which the scheduled re-score brings every score to.
    current = await policies.current(policy_sessions)
    assert current is not None and current.version == "overrides-test-1"
    assert current.matches(OverridePolicy.from_json(POLICY))
    plain = await _score(policy_channel, policy_tenant)
    assert plain.risk_class <= 2  # room for two notches below
    remark = await _score(policy_channel, policy_tenant, _remark())
    assert remark.risk_class == plain.risk_class + 2
    (reason,) = [r for r in remark.reasons if r.code == "OVERRIDE_PAYMENT_REMARK"]
    assert "2 class(es) worse" in reason.description
    collection = await _score(
        policy_channel,
        policy_tenant,
        _event(
            debt_collection_opened=companies_pb2.DebtCollectionOpened(
                case_id="c1", amount=money_pb2.Money(currency_code="NOK", units=25_000)
            )
        ),
    )
    assert collection.risk_class == plain.risk_class
    assert "OVERRIDE_COLLECTION_CASE" not in [r.code for r in collection.reasons]
    # Bankruptcy is class D whatever a policy says.
    bankrupt = await _score(
        policy_channel, policy_tenant, _event(bankruptcy_opened=companies_pb2.BankruptcyOpened())
    )
    assert bankrupt.risk_class == common_pb2.RISK_CLASS_D
    # The session's server, on the built-in policy, scores the same request otherwise.
    assert (await _score(channel, tenant, _remark())).risk_class == plain.risk_class + 1


async def test_intake_and_stream_scores_follow_the_file(
    policy_channel: grpc.aio.Channel,
    policy_sessions: async_sessionmaker[AsyncSession],
    policy_tenant: TenantKey,
) -> None:
    feed = await new_tenant(policy_sessions, "policy feed", scopes=(SCOPE_COMPANIES_WRITE,))
    data = companies_pb2_grpc.CompanyDataServiceStub(policy_channel)
    number = norwegian_numbers(1, start=85_960_000)[0]
    first = await data.SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=_ref(number), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    remarked = await data.RecordEvents(
        companies_pb2.RecordEventsRequest(
            events=[
                company_event(
                    number,
                    "policy-r1",
                    3,
                    payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="r1"),
                )
            ]
        ),
        metadata=feed.metadata,
    )
    (effect,) = remarked.effects
    assert effect.score.risk_class == first.effect.score.risk_class + 2

    # A chunk large enough for the worker processes, if the machine has them:
    # plain statements (which workers score) and a remarked one (the server).
    items = [
        scoring_pb2.ScoreItem(correlation_id=str(i), financial_statement=healthy())
        for i in range(100)
    ]
    items.append(
        scoring_pb2.ScoreItem(
            correlation_id="remark", financial_statement=healthy(), events=[_remark()]
        )
    )

    async def chunks() -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
        yield scoring_pb2.StreamScoresRequest(items=items)

    results = [
        result
        async for response in scoring_grpc.ScoringServiceStub(policy_channel).StreamScores(
            chunks(), metadata=policy_tenant.metadata
        )
        for result in response.results
    ]
    classes = {r.correlation_id: r.score.risk_class for r in results}
    assert len(classes) == 101
    assert classes["remark"] == classes["0"] + 2


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (json.dumps({"payment_remark_notch": 2}), "payment_remark_notch"),
        (json.dumps({"payment_remark_notches": True}), "payment_remark_notches"),
        (json.dumps({"collection_case_notches": -1}), "must not be negative"),
        (json.dumps({"bankruptcy_forces_d": False}), "cannot be switched off"),
        ("[1, 2]", "a JSON object is expected"),
        ("{not json", "overrides.json"),
    ],
)
def test_a_bad_policy_file_stops_the_start_up(
    database_url: str, tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "overrides.json"
    path.write_text(content)
    server = ServerProcess(
        database_url,
        env=QUIET | {"CREDITWATCH_OVERRIDE_POLICY_FILE": str(path)},
        startup_timeout=30,
    )
    with pytest.raises(RuntimeError, match="exited with") as caught:
        server.start()
    assert named in str(caught.value)
    assert "override policy" in str(caught.value)


def test_a_missing_policy_file_stops_the_start_up(database_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    server = ServerProcess(
        database_url, env=QUIET | {"CREDITWATCH_OVERRIDE_POLICY_FILE": str(missing)}
    )
    with pytest.raises(RuntimeError, match="exited with") as caught:
        server.start()
    assert str(missing) in str(caught.value)


def _registers_sync(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`creditwatch registers sync --once` against a feed nobody serves (the
    tests here expect it to stop before asking)."""
    command = [sys.executable, "-m", "creditwatch.server", "registers", "sync", "--once"]
    return subprocess.run(
        [*command, "--base-url", "http://127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_register_feed_command_scores_with_the_policy_file_too(
    database_url: str, tmp_path: Path
) -> None:
    # `creditwatch registers sync` re-scores companies outside any server: it
    # reads the same file (a bad one stops it before any feed is asked).
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps({"payment_remark_notches": "two"}))
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CREDITWATCH_OVERRIDE_POLICY_FILE": str(path),
    }
    run = _registers_sync(env)
    assert run.returncode != 0
    assert f"override policy {path}: payment_remark_notches must be a JSON integer" in run.stderr


def test_the_register_feed_command_refuses_a_policy_other_than_the_servers(
    policy_database: str, policy_server: str
) -> None:
    # Its scores would be redone by the servers' re-score (and alert twice).
    env = {**os.environ, "DATABASE_URL": policy_database}
    env.pop("CREDITWATCH_OVERRIDE_POLICY_FILE", None)  # the built-in policy
    run = _registers_sync(env)
    assert run.returncode != 0
    built_in = OverridePolicy().version
    assert f"override policy ({built_in}) is not the servers' current one" in run.stderr
    assert "(overrides-test-1, since" in run.stderr
