"""The alert outbox in PostgreSQL: write alerts with the fact, read them in order.

Ordering without gaps. Sequence values are taken before commit, so rows
become visible out of sequence order: a reader that remembers "the highest
seq I saw" skips a row whose transaction commits late. Here every row also
records its transaction id (`pg_current_xact_id()`), positions are ordered
by (xid, seq), and readers take only rows of *settled* transactions: xid
below the xmin of the reader's snapshot. No transaction that is still running
(or will ever start) has an xid below that xmin, so the set of rows below it
is final: reading it in (xid, seq) order and moving the position past it can
never skip a row. The price: an open write transaction anywhere in the
cluster holds delivery back until it ends, so keep write transactions short.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

import asyncpg
import orjson
from sqlalchemy import (
    ColumnElement,
    RowMapping,
    Table,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.alerts import (
    DEFAULT_CLASS_ACTIONS,
    AlertFilter,
    AlertType,
    Change,
    ClaimDue,
    LimitChange,
    PlannedAlert,
    Severity,
    StoredAlert,
    SuggestedAction,
    Watcher,
    plan,
    plan_claim,
    plan_limit,
    trigger_json,
)
from creditwatch.server.domain.cursors import ORIGIN, Position
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.limits import CreditPolicy
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.domain.watchlists import AlertRules
from creditwatch.server.store import models
from creditwatch.server.store.database import driver, dumps
from creditwatch.server.store.facts import score_from_json, score_text

CHANNEL = "creditwatch_alerts"

_A = cast(Table, models.Alert.__table__)
_AC = cast(Table, models.AlertConsumer.__table__)
_R = cast(Table, models.AlertRetention.__table__)
_XMIN = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
# Listings keep alerts of unsettled transactions (a committed alert is not
# hidden from case work, nor NOT_FOUND for GetAlert, for as long as some other
# transaction in the cluster stays open) but mark them: their cursors are not
# yet safe resume points (`StoredAlert.settled`). A subquery: xmin once per
# statement, not per row.
_SETTLED = (_A.c.xid < literal_column(f"(SELECT {_XMIN})")).label("settled")

_WATCHERS = """
SELECT e.country, e.register_number, e.tenant_id, e.watch_list_id, e.exposure_currency,
       e.exposure_amount, e.external_reference, w.pd_threshold, w.alert_rules::text, c.name,
       e.create_time
FROM watch_list_entries e
JOIN watch_lists w ON w.tenant_id = e.tenant_id AND w.id = e.watch_list_id
LEFT JOIN companies c ON c.country = e.country AND c.register_number = e.register_number
WHERE (e.country, e.register_number) IN (
    -- comma-separated keys, not text arrays: see store.rescoring._UNNEST
    SELECT * FROM unnest(string_to_array($1, ',')::char(2)[], string_to_array($2, ',')::varchar[])
)
"""

# Each tenant's current credit policy, for the actions its alerts suggest.
_POLICIES = """
SELECT DISTINCT ON (tenant_id) tenant_id, policy::text FROM credit_policies
WHERE tenant_id = ANY($1::uuid[])
ORDER BY tenant_id, version DESC
"""

_COLUMNS = (
    "tenant_id, xid, seq, id, watch_list_id, country, register_number, type, severity, "
    "priority, company_legal_name, external_reference, exposure_currency, exposure_amount, "
    "previous_score, score, trigger, suggested_action, summary, occurred_time, create_time"
)
_COPY_COLUMNS = (  # id and xid: the columns' defaults (gen_random_uuid, the xid)
    "tenant_id",
    "watch_list_id",
    "country",
    "register_number",
    "type",
    "severity",
    "priority",
    "company_legal_name",
    "external_reference",
    "exposure_currency",
    "exposure_amount",
    "previous_score",
    "score",
    "trigger",
    "suggested_action",
    "summary",
    "occurred_time",
)


def _rules(value: Mapping[str, Any] | str) -> AlertRules:
    parsed: Mapping[str, Any] = orjson.loads(value) if isinstance(value, str) else value
    return AlertRules(
        alert_types=tuple(parsed.get("alert_types", ())),
        minimum_severity=int(parsed.get("minimum_severity", 0)),
        minimum_class_change=int(parsed.get("minimum_class_change", 0)),
    )


async def watchers(
    session: AsyncSession, companies: Sequence[CompanyId], class_actions: bool = True
) -> tuple[dict[CompanyId, list[Watcher]], dict[CompanyId, str]]:
    """Every watch list entry (of every tenant) holding each company, with its
    tenant's credit policy's class actions (unless `class_actions` is false:
    then the default policy's, for changes that move no class), and the
    companies' legal names; two queries for any number of companies."""
    found: dict[CompanyId, list[Watcher]] = {}
    names: dict[CompanyId, str] = {}
    connection = await driver(session)
    rows = await connection.fetch(
        _WATCHERS,
        ",".join([c.country for c in companies]),
        ",".join([c.register_number for c in companies]),
    )
    actions: dict[Any, Mapping[RiskClass, SuggestedAction]] = {}
    if rows and class_actions:
        tenants = list({row["tenant_id"] for row in rows})
        for tenant, policy in await connection.fetch(_POLICIES, tenants):
            actions[tenant] = CreditPolicy.from_json(orjson.loads(policy), 0, None).class_actions()
    rules: dict[Any, AlertRules] = {}
    for row in rows:
        company = CompanyId(row["country"], row["register_number"])
        names[company] = row["name"] or ""
        key = row["watch_list_id"]
        if key not in rules:
            rules[key] = _rules(row["alert_rules"])
        found.setdefault(company, []).append(
            Watcher(
                tenant_id=row["tenant_id"],
                watch_list_id=key,
                rules=rules[key],
                pd_threshold=row["pd_threshold"],
                exposure_currency=row["exposure_currency"],
                exposure_amount=row["exposure_amount"],
                external_reference=row["external_reference"],
                since=row["create_time"],
                class_actions=actions.get(row["tenant_id"], DEFAULT_CLASS_ACTIONS),
            )
        )
    return found, names


class _NoScores(NamedTuple):
    """What a claim's alerts compare: no scores (a Change's score fields)."""

    previous: None = None
    score: None = None
    previous_reasons_text: None = None
    score_reasons_text: None = None


_NO_SCORES = _NoScores()


def _score_text(score: StoredScore | None, reasons_text: str | None = None) -> str | None:
    return score_text(score, reasons_text) if score is not None else None


async def write(
    session: AsyncSession,
    changes: Sequence[tuple[CompanyId, Change]],
    limits: Sequence[LimitChange] = (),
    claims: Sequence[ClaimDue] = (),
) -> dict[CompanyId, int]:
    """Write the alerts the changes (and the credit-limit changes they caused, and
    claims that became due) raise, in the caller's transaction; returns the number
    written per company. Subscribers are woken at commit (NOTIFY)."""
    written = await write_per_tenant(session, changes, limits, claims)
    return {company: tenants.total() for company, tenants in written.items()}


async def write_per_tenant(
    session: AsyncSession,
    changes: Sequence[tuple[CompanyId, Change]],
    limits: Sequence[LimitChange] = (),
    claims: Sequence[ClaimDue] = (),
) -> dict[CompanyId, Counter[uuid.UUID]]:
    """`write`, counted per company and tenant (a caller that may not learn
    who else watches a company tells only its own count)."""
    if not changes and not limits and not claims:
        return {}
    companies = [c for c, _ in changes] + [x.company for x in limits] + [x.company for x in claims]
    # Only a risk-class alert reads its tenant's policy: no query without one.
    moved = any(change.moves_class for _, change in changes)
    held, names = await watchers(session, list(dict.fromkeys(companies)), moved)
    # (company, change's scores, occurred, trigger JSON, alerts)
    batches: list[
        tuple[CompanyId, Change | _NoScores, datetime, dict[str, Any], list[PlannedAlert]]
    ] = []
    for company, change in changes:
        planned = plan(change, held.get(company, ()))
        batches.append(
            (
                company,
                change,
                change.occurred_at,
                trigger_json(change.fact, company) if planned else {},
                planned,
            )
        )
    for limit in limits:
        batches.append(
            (
                limit.company,
                limit.change,
                limit.change.occurred_at,
                {"credit_limit": limit.credit_limit},
                plan_limit(limit, held.get(limit.company, ())),
            )
        )
    for claim in claims:
        batches.append(
            (
                claim.company,
                _NO_SCORES,
                claim.occurred_at,
                {"overdue_payment": claim.overdue_payment},
                plan_claim(claim.tenant_id, claim.summary, held.get(claim.company, ())),
            )
        )
    records: list[tuple[Any, ...]] = []
    counts: dict[CompanyId, Counter[uuid.UUID]] = {}
    for company, scores, occurred, trigger_value, planned in batches:
        tenants = counts.setdefault(company, Counter())
        if not planned:
            continue
        tenants.update(alert.watcher.tenant_id for alert in planned)
        # Serialised once per change, shared by its alerts.
        previous = _score_text(scores.previous, scores.previous_reasons_text)
        current = _score_text(scores.score, scores.score_reasons_text)
        trigger = dumps(trigger_value)
        name = names.get(company, "")
        for alert in planned:
            watcher = alert.watcher
            records.append(
                (
                    watcher.tenant_id,
                    watcher.watch_list_id,
                    company.country,
                    company.register_number,
                    int(alert.type),
                    int(alert.severity),
                    alert.priority,
                    name,
                    watcher.external_reference,
                    watcher.exposure_currency,
                    watcher.exposure_amount,
                    previous,
                    current,
                    trigger,
                    int(alert.suggested_action),
                    alert.summary,
                    occurred,
                )
            )
    if records:
        # xid (the position's first half) is the column's default, this
        # transaction's id; a trigger NOTIFYs CHANNEL (migration 0010).
        connection = await driver(session)
        await connection.copy_records_to_table("alerts", columns=_COPY_COLUMNS, records=records)
    return counts


def alert_from_row(row: Mapping[str, Any] | RowMapping) -> StoredAlert:
    """A stored alert from a row of `_COLUMNS` (SQLAlchemy mapping or asyncpg record)."""
    previous, score, trigger = row["previous_score"], row["score"], row["trigger"]
    if isinstance(trigger, str):  # raw asyncpg without a JSON codec
        previous = orjson.loads(previous) if previous else None
        score = orjson.loads(score) if score else None
        trigger = orjson.loads(trigger)
    return StoredAlert(
        tenant_id=row["tenant_id"],
        position=Position(row["xid"], row["seq"]),
        id=row["id"],
        watch_list_id=row["watch_list_id"],
        company=CompanyId(row["country"], row["register_number"]),
        type=AlertType(row["type"]),
        severity=Severity(row["severity"]),
        priority=row["priority"],
        company_legal_name=row["company_legal_name"],
        external_reference=row["external_reference"],
        exposure_currency=row["exposure_currency"],
        exposure_amount=row["exposure_amount"],
        previous_score=score_from_json(previous) if previous else None,
        score=score_from_json(score) if score else None,
        trigger=trigger,
        suggested_action=SuggestedAction(row["suggested_action"]),
        summary=row["summary"],
        occurred_time=row["occurred_time"],
        create_time=row["create_time"],
        settled=row.get("settled", True),  # the outbox's tail reads only settled rows
    )


_TAIL = f"""
WITH horizon AS (SELECT {_XMIN} AS xmin)
SELECT horizon.xmin AS settled_xmin, a.*
FROM horizon
LEFT JOIN LATERAL (
    SELECT {_COLUMNS} FROM alerts
    WHERE (xid, seq) > ($1, $2) AND xid < horizon.xmin
    ORDER BY xid, seq
    LIMIT $3
) a ON true
"""


@dataclass(frozen=True)
class TailPage:
    """Settled alerts after a position, and how far the read got."""

    alerts: list[StoredAlert]
    position: Position
    """Every alert at or before this position has been read."""
    read: int
    """Rows read, `alerts` and those passed over (see `tail`)."""


async def tail(
    connection: asyncpg.Connection,
    after: Position,
    limit: int,
    tenants: Container[uuid.UUID] | None = None,
) -> TailPage:
    """The next settled alerts of all tenants after `after` (the replica hub's
    read). With `tenants`, alerts of other tenants are read past but not
    decoded: no stream of this replica wants them, and a re-score of a large
    book writes tens of thousands at once."""
    rows = await connection.fetch(_TAIL, after.xid, after.seq, limit)
    read = [row for row in rows if row["xid"] is not None]
    alerts = [alert_from_row(row) for row in read if tenants is None or row["tenant_id"] in tenants]
    last = [Position(row["xid"], row["seq"]) for row in read[-1:]]
    if len(read) >= limit:
        return TailPage(alerts, last[0], len(read))
    settled = Position.settled_below(rows[0]["settled_xmin"])
    return TailPage(alerts, max(after, settled, *last), len(read))


# ORDER BY ... LIMIT 1, not EXISTS: the hub runs this prepared, and under
# PostgreSQL's generic plan EXISTS over `(xid, seq) > ($1, $2)` became a
# sequential scan of the whole outbox (every row is before the position, so it
# reads them all: ~60 ms at 140,000 alerts, repeated every few ms while writers
# are busy). The ordered form is always the position index's first entry.
PENDING = "SELECT 1 FROM alerts WHERE (xid, seq) > ($1, $2) ORDER BY xid, seq LIMIT 1"


async def pending(connection: asyncpg.Connection, after: Position) -> bool:
    """Whether rows exist after `after` that are not yet settled (or not yet read)."""
    return await connection.fetchval(PENDING, after.xid, after.seq) is not None


async def any_created_before(session: AsyncSession, when: datetime) -> bool:
    """Whether any alert was created before `when` (one that an earlier
    release may have given a cursor)."""
    found = await session.scalar(select(_A.c.seq).where(_A.c.create_time < when).limit(1))
    return found is not None


async def settled_position(session: AsyncSession) -> Position:
    """The position up to which every alert has settled right now."""
    xmin = await session.scalar(text(f"SELECT {_XMIN}"))
    return Position.settled_below(int(xmin))


def _conditions(tenant: uuid.UUID, wanted: AlertFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [_A.c.tenant_id == tenant]
    if wanted.watch_lists:
        where.append(_A.c.watch_list_id.in_(sorted(wanted.watch_lists)))
    if wanted.types:
        where.append(_A.c.type.in_(sorted(wanted.types)))
    if wanted.minimum_severity:
        where.append(_A.c.severity >= wanted.minimum_severity)
    if wanted.companies:
        where.append(tuple_(_A.c.country, _A.c.register_number).in_(sorted(wanted.companies)))
    return where


async def read_range(
    session: AsyncSession,
    tenant: uuid.UUID,
    wanted: AlertFilter,
    after: Position,
    upto: Position,
    limit: int,
) -> list[StoredAlert]:
    """The tenant's matching alerts in (after, upto], in position order. `upto`
    must be a settled position (from the hub), so the range is final."""
    query = (
        select(_A)
        .where(
            *_conditions(tenant, wanted),
            tuple_(_A.c.xid, _A.c.seq) > tuple_(after.xid, after.seq),
            tuple_(_A.c.xid, _A.c.seq) <= tuple_(upto.xid, upto.seq),
        )
        .order_by(_A.c.xid, _A.c.seq)
        .limit(limit)
    )
    return [alert_from_row(row._mapping) for row in await session.execute(query)]


async def list_page(
    session: AsyncSession,
    tenant: uuid.UUID,
    wanted: AlertFilter,
    *,
    min_create_time: datetime | None,
    max_create_time: datetime | None,
    by_priority: bool,
    after: tuple[Any, ...] | None,
    limit: int,
) -> list[StoredAlert]:
    """One page of the tenant's alerts, newest first or by priority (keyset);
    alerts of unsettled transactions included, marked (see `_SETTLED`)."""
    where = _conditions(tenant, wanted)
    if min_create_time is not None:
        where.append(_A.c.create_time >= min_create_time)
    if max_create_time is not None:
        where.append(_A.c.create_time < max_create_time)
    if by_priority:
        key = [_A.c.priority, _A.c.severity, _A.c.create_time, _A.c.xid, _A.c.seq]
    else:
        key = [_A.c.create_time, _A.c.xid, _A.c.seq]
    if after is not None:
        where.append(tuple_(*key) < tuple_(*after))
    query = select(_A, _SETTLED).where(*where).order_by(*(c.desc() for c in key)).limit(limit)
    return [alert_from_row(row._mapping) for row in await session.execute(query)]


async def get(session: AsyncSession, tenant: uuid.UUID, alert_id: uuid.UUID) -> StoredAlert | None:
    """One alert of the tenant."""
    query = select(_A, _SETTLED).where(_A.c.tenant_id == tenant, _A.c.id == alert_id)
    row = (await session.execute(query)).first()
    return alert_from_row(row._mapping) if row else None


async def purged_position(session: AsyncSession) -> Position:
    """The newest position retention has deleted; older cursors are expired."""
    row = (await session.execute(select(_R.c.purged_xid, _R.c.purged_seq))).first()
    return Position(row.purged_xid, row.purged_seq) if row else ORIGIN


# The tenants come from the alerts themselves, not from `tenants`: an alert
# written while its tenant was being deleted outlives it (migration 0011), and
# retention must take it too. Each next tenant id is one index probe (a
# loose scan of the (tenant, create time) index), not a read of every alert.
_PURGE = text(
    """
    WITH RECURSIVE present(id) AS (
        (SELECT tenant_id FROM alerts ORDER BY tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT a.tenant_id FROM alerts a WHERE a.tenant_id > p.id
                ORDER BY a.tenant_id LIMIT 1)
        FROM present p WHERE p.id IS NOT NULL
    ),
    doomed AS (
        SELECT d.tenant_id, d.xid, d.seq
        FROM present t
        CROSS JOIN LATERAL (
            SELECT a.tenant_id, a.xid, a.seq FROM alerts a
            WHERE a.tenant_id = t.id AND a.create_time < :older_than
            ORDER BY a.create_time
            LIMIT :batch
        ) d
        WHERE t.id IS NOT NULL
        LIMIT :batch
    )
    DELETE FROM alerts a USING doomed
    WHERE a.tenant_id = doomed.tenant_id AND a.xid = doomed.xid AND a.seq = doomed.seq
    RETURNING a.xid, a.seq
    """
)


async def purge(session: AsyncSession, older_than: datetime, batch: int = 10_000) -> int:
    """Delete up to `batch` alerts created before `older_than` and record the
    newest deleted position; returns how many. The alerts are found tenant by
    tenant on the (tenant, create time) index, so a run reads the old alerts
    only, not every alert retained (the whole table, each batch, when they
    were taken in position order). Alerts of one age may go in any position
    order: the recorded position expires every cursor before it, whose
    alerts are past retention anyway."""
    deleted = (await session.execute(_PURGE, {"older_than": older_than, "batch": batch})).all()
    if not deleted:
        return 0
    newest = max(Position(r.xid, r.seq) for r in deleted)
    await session.execute(
        text(
            """
            UPDATE alert_retention SET purged_xid = :xid, purged_seq = :seq, update_time = now()
            WHERE (purged_xid, purged_seq) < (:xid, :seq)
            """
        ),
        {"xid": newest.xid, "seq": newest.seq},
    )
    return len(deleted)


async def consumer_position(session: AsyncSession, tenant: uuid.UUID, name: str) -> Position | None:
    """A durable consumer's acknowledged position, or None if it does not exist."""
    row = (
        await session.execute(
            select(_AC.c.xid, _AC.c.seq).where(_AC.c.tenant_id == tenant, _AC.c.name == name)
        )
    ).first()
    return Position(row.xid, row.seq) if row else None


async def acknowledge(
    session: AsyncSession, tenant: uuid.UUID, name: str, position: Position
) -> Position:
    """Move a consumer forward to `position` (never back); creates it if new.
    Returns the stored position."""
    statement = pg_insert(_AC).values(
        tenant_id=tenant, name=name, xid=position.xid, seq=position.seq
    )
    newer = tuple_(_AC.c.xid, _AC.c.seq) < tuple_(statement.excluded.xid, statement.excluded.seq)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "name"],
        set_={
            "xid": statement.excluded.xid,
            "seq": statement.excluded.seq,
            "update_time": text("now()"),
        },
        where=newer,
    )
    await session.execute(statement)
    stored = await consumer_position(session, tenant, name)
    assert stored is not None
    return stored


async def create_consumer(
    session: AsyncSession, tenant: uuid.UUID, name: str, position: Position
) -> Position:
    """Create a consumer at `position` unless it exists; returns its position."""
    await session.execute(
        pg_insert(_AC)
        .values(tenant_id=tenant, name=name, xid=position.xid, seq=position.seq)
        .on_conflict_do_nothing()
    )
    stored = await consumer_position(session, tenant, name)
    assert stored is not None
    return stored
