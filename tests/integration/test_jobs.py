"""Scheduled jobs on a real PostgreSQL: re-scoring, leadership, retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.api.alerts import catch_up
from creditwatch.server.api.scoring_converters import statement
from creditwatch.server.config import Settings
from creditwatch.server.domain.alerts import AlertFilter, RescoreReason, StoredAlert
from creditwatch.server.domain.cursors import MAX_SEQ, Position
from creditwatch.server.domain.errors import FailedPrecondition
from creditwatch.server.domain.events import CompanyEvent, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.domain.watchlists import EntryColumns, EntrySpec, WatchListSpec
from creditwatch.server.intake import IncomingEvent, Intake
from creditwatch.server.jobs.leader import Leadership
from creditwatch.server.jobs.scheduler import Jobs, purge_alerts
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import alerts, database, facts, policies, rescoring
from creditwatch.server.store.watchlists import WatchListStore
from tests.conftest import new_tenant
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


async def _watched(
    sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry, start: int, count: int
) -> tuple[uuid.UUID, list[CompanyId]]:
    tenant = (await new_tenant(sessions, "jobs")).tenant_id
    companies = [CompanyId("NO", n) for n in norwegian_numbers(count, start=start)]
    store = WatchListStore(sessions)
    watch_list = await store.create(tenant, WatchListSpec("jobs"))
    await store.add_entries(
        tenant,
        uuid.UUID(watch_list.id),
        EntryColumns.of(
            [EntrySpec(c, exposure=Money("NOK", Decimal(1_000_000))) for c in companies]
        ),
    )
    intake = Intake(sessions, registry)
    for company in companies:
        await intake.submit_statement(company, statement(healthy(), "s"), "test", tenant)
    return tenant, companies


def _settings(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


async def test_rescoring_raises_alerts_for_changed_classes_and_skips_fresh_scores(
    database_url: str, sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    tenant, companies = await _watched(sessions, registry, 86_100_000, 20)
    # Two creditors report invoices 200 days overdue for the first company
    # (one alone would not count); no intake re-scores it, so only the job
    # notices.
    second_creditor = (await new_tenant(sessions, "jobs creditor")).tenant_id
    async with sessions.begin() as session:
        for creditor in (tenant, second_creditor):
            await facts.payment_experience_put(
                session,
                creditor,
                "inv-1",
                companies[0],
                {
                    "due_date": date.today() - timedelta(days=200),
                    "days_past_due": 200,
                    "currency": "NOK",
                    "amount": Decimal(50_000),
                    "settled_date": None,
                },
            )
        # A standing limit far above any cap: the worse class must reduce it.
        await session.execute(
            text(
                """
                INSERT INTO credit_limits (tenant_id, id, country, register_number,
                    external_reference, state, currency, amount, max_payment_terms_days,
                    valid_until, latest_decision, create_time, update_time)
                VALUES (:t, gen_random_uuid(), 'NO', :n, '', 1, 'NOK', 1e15, 365,
                        now() + interval '1 year', '{}', now(), now())
                """
            ),
            {"t": tenant, "n": companies[0].register_number},
        )
    url = database.async_url(database_url)
    async with sessions() as session:
        before = await facts.latest_score(session, companies[0])
    jobs = Jobs(_settings(rescore_stale_seconds=0, rescore_chunk=7), url, sessions, registry)
    result = await jobs.rescore()
    assert result is not None
    assert result.companies >= 20 and result.scored >= 20  # other tests' watched companies too
    async with sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT type, trigger, previous_score, score FROM alerts WHERE tenant_id = :t"
                ),
                {"t": tenant},
            )
        ).all()
        latest = await facts.latest_score(session, companies[0])
        decision = (
            await session.execute(
                text("SELECT latest_decision FROM credit_limits WHERE tenant_id = :t"),
                {"t": tenant},
            )
        ).scalar_one()
    # The limit was re-decided on the re-score's score, reasons and all (the
    # job does not decode them; the decision copies their stored text).
    assert decision["origin"] != 0 and decision["score"]["reasons"]
    assert facts.score_from_json(decision["score"]) == latest
    # The alert's copies of the two scores (written from their stored reasons
    # text, not re-encoded) are the scores as stored.
    (downgrade,) = [r for r in rows if "rescoring" in r.trigger]
    assert facts.score_from_json(downgrade.previous_score) == before
    assert facts.score_from_json(downgrade.score) == latest
    rescored = [
        (r.type, r.trigger["rescoring"]["reason"]) for r in rows if "rescoring" in r.trigger
    ]
    assert rescored == [(1, 2)]  # one risk-class downgrade, reason SCHEDULED
    assert sum(1 for r in rows if r.type == 14) == 20  # the statements, at intake
    assert latest is not None
    assert any(r.code == "OVERRIDE_OVERDUE_PAYMENTS" for r in latest.reasons)

    # Fresh scores from the active model are not due again.
    fresh = Jobs(_settings(rescore_stale_seconds=3600), url, sessions, registry)
    again = await fresh.rescore()
    assert again is not None and again.scored == 0
    # A score from another model version is due however fresh it is.
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE scores SET model_version = 'retired' WHERE country = 'NO' "
                "AND register_number = :n"
            ),
            {"n": companies[1].register_number},
        )
    changed = await fresh.rescore()
    assert changed is not None and changed.scored == 1


async def test_only_one_replica_leads_a_job(
    database_url: str, sessions: async_sessionmaker[AsyncSession], registry: ModelRegistry
) -> None:
    url = database.async_url(database_url)
    other_replica = Leadership(url)
    jobs = Jobs(_settings(rescore_stale_seconds=3600), url, sessions, registry)
    async with other_replica.lead("rescore") as leading:
        assert leading
        assert await jobs.rescore() is None  # skipped: another replica leads
    assert await jobs.rescore() is not None  # lock released with its connection


async def _old_alert(session: AsyncSession, tenant: uuid.UUID, age_days: int) -> None:
    """A bare alert of `tenant` created `age_days` ago, in the session's transaction."""
    await session.execute(
        text(
            """
            INSERT INTO alerts (tenant_id, xid, id, watch_list_id, country,
                register_number, type, severity, priority, company_legal_name,
                external_reference, trigger, suggested_action, summary,
                occurred_time, create_time)
            VALUES (:t, pg_current_xact_id()::text::bigint, :id, :w, 'NO', '923609016',
                9, 2, 0, '', '', '{}'::jsonb, 2, 'old', now(), :created)
            """
        ),
        {
            "t": tenant,
            "id": uuid.uuid4(),
            "w": uuid.uuid4(),
            "created": datetime.now(UTC) - timedelta(days=age_days),
        },
    )


async def test_retention_deletes_old_alerts_and_records_the_purged_position(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = (await new_tenant(sessions, "retention")).tenant_id
    async with sessions.begin() as session:
        for age in (200, 100, 1):
            await _old_alert(session, tenant, age)
    assert await purge_alerts(sessions, retention_days=90, batch=1) == 2
    async with sessions() as session:
        left = await session.scalar(
            text("SELECT count(*) FROM alerts WHERE tenant_id = :t"), {"t": tenant}
        )
        purged = await alerts.purged_position(session)
        newest_gone = await session.scalar(
            text("SELECT max(seq) FROM alerts WHERE tenant_id = :t"), {"t": tenant}
        )
    assert left == 1
    assert purged.seq == newest_gone - 1  # the 100-day-old alert, written just before


async def test_retention_deletes_old_alerts_of_a_tenant_deleted_since(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An alert written while its tenant was being deleted outlives it (no
    foreign key, migration 0011); retention takes it when it is old enough."""
    gone = uuid.uuid4()  # no such tenant (any more)
    async with sessions.begin() as session:
        await _old_alert(session, gone, 200)
        await _old_alert(session, gone, 1)
    assert await purge_alerts(sessions, retention_days=90, batch=100) >= 1
    async with sessions() as session:
        ages = (
            await session.scalars(
                text(
                    "SELECT now() - create_time > interval '90 days' "
                    "FROM alerts WHERE tenant_id = :t"
                ),
                {"t": gone},
            )
        ).all()
    assert ages == [False]  # the new one stays


async def _remark(intake: Intake, company: CompanyId, tenant: uuid.UUID, remark: str) -> None:
    await intake.record_events(
        [
            IncomingEvent(
                company,
                f"policy-{remark}",
                CompanyEvent(EventType.PAYMENT_REMARK_REGISTERED, datetime.now(UTC), remark),
                {"remark_id": remark},
                "test",
                0,
                "payment_remark_registered",
            )
        ],
        tenant,
    )


async def _policy_rescores(sessions: async_sessionmaker[AsyncSession], tenant: uuid.UUID) -> int:
    """The tenant's alerts raised by a re-score for an override policy change."""
    async with sessions() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM alerts WHERE tenant_id = :t "
                "AND (trigger::jsonb) -> 'rescoring' ->> 'reason' = :reason"
            ),
            {"t": tenant, "reason": str(int(RescoreReason.POLICY_CHANGED))},
        )
    return int(count or 0)


async def _class_of(sessions: async_sessionmaker[AsyncSession], company: CompanyId) -> StoredScore:
    async with sessions() as session:
        score = await facts.latest_score(session, company)
    assert score is not None
    return score


async def test_a_rolling_deploy_of_a_new_override_policy(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    """Old replicas (the built-in policy) and new ones (two classes down per
    payment remark) side by side: the scores the old ones make even after the
    change are redone by the new ones' re-score, exactly once, and neither an
    old replica's run nor its restart takes the policy back."""
    url, sessions = own_database
    built_in, stricter = OverridePolicy(), OverridePolicy("strict-1", payment_remark_notches=2)
    assert (await policies.record(sessions, built_in)).matches(built_in)
    tenant, (before, during, new) = await _watched(sessions, registry, 86_970_000, 3)
    old_intake = Intake(sessions, registry)
    await _remark(old_intake, before, tenant, "r1")
    settings = _settings(rescore_stale_seconds=3600)
    with ThreadPoolExecutor(1) as executor:
        new_registry = ModelRegistry.load(executor, stricter)
        old_jobs = Jobs(settings, url, sessions, registry)
        new_jobs = Jobs(settings, url, sessions, new_registry)
        # Nothing is due before the change.
        quiet = await old_jobs.rescore()
        assert quiet is not None and quiet.companies == 0

        # A new replica starts: its policy, never seen before, is current.
        current = await policies.record(sessions, stricter)
        assert current.matches(stricter) and current.version == "strict-1"
        await _remark(Intake(sessions, new_registry), new, tenant, "r3")
        # An old replica still takes intake, with its own policy ...
        await _remark(old_intake, during, tenant, "r2")
        old_score = await _class_of(sessions, during)
        assert old_score.risk_class == old_score.model_risk_class + 1
        # ... runs no re-score (its policy is not current: it would redo the
        # new replica's scores) ...
        skipped = await old_jobs.rescore()
        assert skipped is not None and skipped.companies == 0
        new_score = await _class_of(sessions, new)
        assert new_score.risk_class == min(4, new_score.model_risk_class + 2)
        # ... and restarting does not make its policy current again.
        assert (await policies.record(sessions, built_in)).matches(stricter)

        done = await new_jobs.rescore()
        assert done is not None and done.scored == 2
        again = await new_jobs.rescore()
        assert again is not None and again.companies == 0
    moved = 0  # companies that were not yet class D: one downgrade alert each
    for company in (before, during):
        after = await _class_of(sessions, company)
        assert after.risk_class == min(4, after.model_risk_class + 2)
        assert any("2 class(es) worse" in r.description for r in after.reasons)
        moved += after.model_risk_class + 1 < 4
    assert moved and await _policy_rescores(sessions, tenant) == moved


async def test_a_rolled_back_policy_takes_over_after_the_rollout_window(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    """A policy is recorded once: after a rollback to the built-in one, the
    policy rolled back from stays current, and no replica runs it. The jobs
    wait for the rollout window, then the built-in policy takes over and the
    scores made with the other are redone."""
    url, sessions = own_database
    built_in, stricter = OverridePolicy(), OverridePolicy("strict-3", payment_remark_notches=2)
    await policies.record(sessions, built_in)
    tenant, (company,) = await _watched(sessions, registry, 86_977_000, 1)
    with ThreadPoolExecutor(1) as executor:
        await policies.record(sessions, stricter)  # the deploy rolled back
        await _remark(
            Intake(sessions, ModelRegistry.load(executor, stricter)), company, tenant, "r1"
        )
        intake = Intake(sessions, registry)
        waiting = Jobs(
            _settings(rescore_stale_seconds=3600), url, sessions, registry, intake=intake
        )
        skipped = await waiting.rescore()
        assert skipped is not None and skipped.companies == 0
        assert await waiting.registers() is None  # the register feeds wait too (no pass)
        current = await policies.current(sessions)
        assert current is not None and current.matches(stricter)
        settings = _settings(rescore_stale_seconds=3600, policy_rollout_seconds=0)
        done = await Jobs(settings, url, sessions, registry).rescore()
        assert await waiting.registers() == []  # a pass (no feed is enabled here)
    assert done is not None and done.scored == 1
    current = await policies.current(sessions)
    assert current is not None and current.matches(built_in)
    score = await _class_of(sessions, company)
    assert score.risk_class == min(4, score.model_risk_class + 1)


async def test_the_first_policy_file_redoes_the_built_in_scores(
    own_database: tuple[str, async_sessionmaker[AsyncSession]], registry: ModelRegistry
) -> None:
    """A database upgraded from a release that recorded no policy: its scores
    were made with the built-in one, and a first deploy with a policy file
    redoes them."""
    url, sessions = own_database
    tenant, (company, _) = await _watched(sessions, registry, 86_975_000, 2)
    await _remark(Intake(sessions, registry), company, tenant, "r1")
    async with sessions() as session:
        tags = await session.scalar(text("SELECT array_agg(DISTINCT override_policy) FROM scores"))
    assert tags == [OverridePolicy().tag]
    stricter = OverridePolicy("strict-2", payment_remark_notches=2)
    assert (await policies.record(sessions, stricter)).matches(stricter)  # the first row
    with ThreadPoolExecutor(1) as executor:
        jobs = Jobs(
            _settings(rescore_stale_seconds=3600),
            url,
            sessions,
            ModelRegistry.load(executor, stricter),
        )
        done = await jobs.rescore()
    assert done is not None and done.scored == 2
    after = await _class_of(sessions, company)
    assert after.risk_class == min(4, after.model_risk_class + 2)


async def test_a_replica_claims_only_chunks_of_its_own_policy(
    own_database: tuple[str, async_sessionmaker[AsyncSession]],
) -> None:
    _, sessions = own_database
    companies = rescoring.Keys(["NO"], [norwegian_numbers(1, start=86_976_000)[0]])
    maker = rescoring.Maker("v1", "new-policy", datetime.now(UTC))
    async with sessions.begin() as session:
        await rescoring.add_chunks(session, uuid.uuid4(), maker, [companies])
    async with sessions.begin() as session:
        assert await rescoring.claim(session, "v1", "old-policy") is None
        assert await rescoring.claim(session, "v2", "new-policy") is None
        chunk = await rescoring.claim(session, "v1", "new-policy")
    assert chunk is not None and chunk.maker == maker and chunk.companies == companies


async def test_a_purge_while_a_backlog_is_read_ends_the_catch_up_as_expired(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = (await new_tenant(sessions, "catch-up")).tenant_id
    async with sessions.begin() as session:
        for _ in range(5):
            await _old_alert(session, tenant, 200)
    async with sessions() as session:
        start = await alerts.purged_position(session)
    end = Position(2**62, MAX_SEQ)

    def backlog(subject: str) -> AsyncIterator[StoredAlert]:
        return catch_up(sessions, tenant, AlertFilter(), start, end, subject, batch=2)

    assert len([a async for a in backlog("consumer")]) == 5  # the control: all of it
    # A client reads the first alert; retention then deletes the rest.
    reading = backlog("consumer")
    first = await anext(reading)
    assert await purge_alerts(sessions, retention_days=90) >= 5
    with pytest.raises(FailedPrecondition) as expired:
        async for alert in reading:
            assert alert.position > first.position
    (violation,) = expired.value.violations
    assert (violation.type, violation.subject) == ("CURSOR_EXPIRED", "consumer")
    # A stream that asked for the oldest retained alert follows retention.
    async with sessions() as session:
        before = await alerts.purged_position(session)
    following = catch_up(
        sessions, tenant, AlertFilter(), before, end, "position", batch=2, follow_retention=True
    )
    assert [a async for a in following] == []  # nothing retained is left, and no error
    # Started at the purged position now, a catch-up has nothing left and ends.
    async with sessions() as session:
        now_purged = await alerts.purged_position(session)
    assert [
        a async for a in catch_up(sessions, tenant, AlertFilter(), now_purged, end, "position")
    ] == []


async def test_the_purge_finds_old_alerts_on_the_tenant_and_time_index(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Not by walking every alert in position order (a full read per batch)."""
    async with sessions.begin() as session:
        # A plan as for a large table, where a sequential scan would not pay.
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = await session.scalar(
            text("EXPLAIN (FORMAT JSON) " + str(alerts._PURGE.text)),
            {"older_than": datetime.now(UTC) - timedelta(days=90), "batch": 10_000},
        )
        await session.rollback()
    found: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Index Name") == "ix_alerts_tenant_create_time":
            found.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    # (The delete's own lookup of the rows found may use the index too.)
    assert any(
        "create_time <" in scan.get("Index Cond", "") and "tenant_id =" in scan["Index Cond"]
        for scan in found
    ), found
