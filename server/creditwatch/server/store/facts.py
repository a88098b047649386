"""Company facts in PostgreSQL: master rows, statements, events and scores.

These functions take the caller's session so an intake can write facts, read
them back and store the resulting score in ONE transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, cast

import orjson
from sqlalchemy import Table, func, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from creditwatch.server.domain.events import CompanyEvent, EventType
from creditwatch.server.domain.financials import LINE_ITEMS, FinancialStatement
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import (
    RiskClass,
    StoredScore,
    reasons_as_json,
    reasons_from_json,
)
from creditwatch.server.store import models, score_cache
from creditwatch.server.store.database import dumps

_S = cast(Table, models.Score.__table__)
_F = cast(Table, models.FinancialStatement.__table__)
_EV = cast(Table, models.CompanyEvent.__table__)
_C = cast(Table, models.Company.__table__)
_P = cast(Table, models.PaymentExperience.__table__)
INSERT_SCORE = insert(_S)

# Company master data may arrive after the first fact (a statement from a
# bureau feed, a bulk re-score); a bare row keeps foreign keys satisfied.
_ENSURE_COMPANY = text(
    """
    INSERT INTO companies (country, register_number, name, industry_code, legal_form, status)
    VALUES (:country, :number, '', '', '', 0)
    ON CONFLICT (country, register_number) DO NOTHING
    RETURNING true
    """
)


async def lock_company(session: AsyncSession, company: CompanyId) -> bool:
    """Create the company row if needed and lock it for this transaction, so
    concurrent intakes about one company apply (and compare scores) in turn.
    Returns whether this call created it."""
    created = await session.scalar(
        _ENSURE_COMPANY, {"country": company.country, "number": company.register_number}
    )
    await session.execute(
        select(_C.c.country)
        .where(_C.c.country == company.country, _C.c.register_number == company.register_number)
        .with_for_update()
    )
    return bool(created)


async def lock_if_known(session: AsyncSession, company: CompanyId) -> bool:
    """Lock the company's row for this transaction, as intakes lock it, if
    creditwatch knows the company (a read must not create it); whether it does."""
    found = await session.scalar(
        select(_C.c.country)
        .where(_C.c.country == company.country, _C.c.register_number == company.register_number)
        .with_for_update()
    )
    return found is not None


@dataclass(frozen=True)
class MasterData:
    """A company's register master data as stored."""

    name: str
    industry_code: str
    legal_form: str
    status: int
    create_time: datetime
    update_time: datetime
    address: dict[str, Any]
    registration_date: date | None


async def master_data(session: AsyncSession, company: CompanyId) -> MasterData | None:
    """The company's master row, or None if creditwatch has never seen it."""
    row = (
        await session.execute(
            select(_C).where(
                _C.c.country == company.country, _C.c.register_number == company.register_number
            )
        )
    ).first()
    if row is None:
        return None
    return MasterData(
        row.name,
        row.industry_code,
        row.legal_form,
        row.status,
        row.create_time,
        row.update_time,
        row.address,
        row.registration_date,
    )


async def company_known(session: AsyncSession, company: CompanyId) -> bool:
    """Whether creditwatch has any row for the company."""
    found = await session.scalar(
        select(_C.c.country).where(
            _C.c.country == company.country, _C.c.register_number == company.register_number
        )
    )
    return found is not None


async def put_statement(
    session: AsyncSession,
    company: CompanyId,
    statement: FinancialStatement,
    source: str,
    submitted_by: uuid.UUID | None,
) -> bool:
    """Store a statement; returns True if it replaced one for the same period end."""
    items = {name: getattr(statement, name) for name in LINE_ITEMS}
    reported = {k: v for k, v in items.items() if v is not None}
    values = {
        "country": company.country,
        "register_number": company.register_number,
        "period_end": statement.period_end,
        "period_start": statement.period_start,
        "currency": statement.currency,
        "items": reported,
        "source": source,
        "submitted_by": submitted_by,
    }
    insert_statement = pg_insert(_F).values(**values)
    updated = ("period_start", "currency", "items", "source", "submitted_by")
    query = insert_statement.on_conflict_do_update(
        index_elements=["country", "register_number", "period_end"],
        set_={k: insert_statement.excluded[k] for k in updated} | {"submit_time": text("now()")},
    ).returning(text("(xmax <> 0) AS replaced"))
    return bool(await session.scalar(query))


async def statement_stored(
    session: AsyncSession, company: CompanyId, statement: FinancialStatement
) -> bool:
    """Whether this very statement (period, currency and every item) is the
    one stored for its period end."""
    reported = {name: v for name in LINE_ITEMS if (v := getattr(statement, name)) is not None}
    found = await session.scalar(
        select(_F.c.period_end).where(
            _F.c.country == company.country,
            _F.c.register_number == company.register_number,
            _F.c.period_end == statement.period_end,
            _F.c.period_start == statement.period_start,
            _F.c.currency == statement.currency,
            _F.c["items"] == reported,
        )
    )
    return found is not None


async def event_times(
    session: AsyncSession, companies: Sequence[CompanyId], types: Collection[EventType]
) -> dict[tuple[CompanyId, EventType], list[tuple[datetime, datetime]]]:
    """Each company's stored events of `types`, as (when it happened, or was
    recorded if undated; when it was recorded, and so alerted), by kind."""
    if not companies:
        return {}
    rows = await session.execute(
        select(
            _EV.c.country,
            _EV.c.register_number,
            _EV.c.type,
            func.coalesce(_EV.c.occurred_at, _EV.c.record_time),
            _EV.c.record_time,
        ).where(
            tuple_(_EV.c.country, _EV.c.register_number).in_(
                [(c.country, c.register_number) for c in companies]
            ),
            _EV.c.type.in_([int(t) for t in types]),
        )
    )
    found: dict[tuple[CompanyId, EventType], list[tuple[datetime, datetime]]] = {}
    for country, number, kind, at, recorded in rows:
        found.setdefault((CompanyId(country, number), EventType(kind)), []).append((at, recorded))
    return found


async def add_event(
    session: AsyncSession,
    company: CompanyId,
    event_id: str,
    event: CompanyEvent,
    detail: dict[str, Any],
    source: str,
    recorded_by: uuid.UUID | None,
) -> bool | None:
    """Store an event. True if new; False if this event id was recorded before
    with the same content (a harmless repeat); None if it was recorded with
    different content (the caller must refuse the call)."""
    query = (
        pg_insert(_EV)
        .values(
            country=company.country,
            register_number=company.register_number,
            event_id=event_id,
            type=int(event.type),
            occurred_at=event.occurred_at,
            reference=event.reference,
            detail=detail,
            source=source,
            recorded_by=recorded_by or models.NO_SENDER,
        )
        .on_conflict_do_nothing()
        .returning(_EV.c.event_id)
    )
    if await session.scalar(query) is not None:
        return True
    earlier = (
        await session.execute(
            select(_EV.c.type, _EV.c.occurred_at, _EV.c.reference, _EV.c.detail).where(
                _EV.c.country == company.country,
                _EV.c.register_number == company.register_number,
                _EV.c.recorded_by == (recorded_by or models.NO_SENDER),
                _EV.c.event_id == event_id,
            )
        )
    ).one()
    same = (earlier.type, earlier.occurred_at, earlier.reference, earlier.detail) == (
        int(event.type),
        event.occurred_at,
        event.reference,
        detail,
    )
    return False if same else None


async def latest_statement(session: AsyncSession, company: CompanyId) -> FinancialStatement | None:
    """The statement with the latest period end."""
    row = (
        await session.execute(
            select(_F)
            .where(_F.c.country == company.country, _F.c.register_number == company.register_number)
            .order_by(_F.c.period_end.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    known = {f.name for f in fields(FinancialStatement)}
    items = {k: float(v) for k, v in row.items.items() if k in known}
    return FinancialStatement(
        period_start=row.period_start, period_end=row.period_end, currency=row.currency, **items
    )


def _score_fields(score: StoredScore) -> dict[str, Any]:
    """`score_json` without the reasons."""
    return {
        "probability_of_default": score.probability_of_default,
        "risk_class": int(score.risk_class),
        "model_risk_class": int(score.model_risk_class),
        "model_version": score.model_version,
        "data_as_of": score.data_as_of.isoformat() if score.data_as_of else None,
        "score_time": score.score_time.isoformat(),
    }


def score_json(score: StoredScore, reasons_text: str | None = None) -> dict[str, Any]:
    """A score as JSON (alerts and limit decisions keep the scores they used);
    with `reasons_text` (see `score_text`), its reasons are that stored text's."""
    reasons = reasons_as_json(score.reasons) if reasons_text is None else orjson.loads(reasons_text)
    return _score_fields(score) | {"reasons": reasons}


def score_text(score: StoredScore, reasons_text: str | None = None) -> str:
    """`score_json` as JSON text. `reasons_text`, the score's reasons as stored
    JSON text (`reasons_from_json` reads either form) when the caller has it,
    is used as is: a re-score's alerts spare decoding and encoding them again
    (and its scores' `reasons` are not even decoded, see `Change`)."""
    if reasons_text is None:
        return dumps(score_json(score))
    # `_score_fields` as orjson writes it in C: its enums as their values and
    # its times as isoformat() writes them (an alert per company of a
    # re-score serialises two scores; the isoformat() calls were half of it).
    fields_text = orjson.dumps(
        {
            "probability_of_default": score.probability_of_default,
            "risk_class": score.risk_class,
            "model_risk_class": score.model_risk_class,
            "model_version": score.model_version,
            "data_as_of": score.data_as_of,
            "score_time": score.score_time,
        }
    )
    return f'{fields_text[:-1].decode()},"reasons":{reasons_text}}}'


def score_from_json(value: dict[str, Any]) -> StoredScore:
    """The inverse of `score_json`."""
    as_of = value.get("data_as_of")
    return StoredScore(
        probability_of_default=value["probability_of_default"],
        risk_class=RiskClass(value["risk_class"]),
        model_risk_class=RiskClass(value["model_risk_class"]),
        reasons=reasons_from_json(value["reasons"], value["model_version"]),
        model_version=value["model_version"],
        data_as_of=datetime.fromisoformat(as_of) if as_of else None,
        score_time=datetime.fromisoformat(value["score_time"]),
    )


async def add_score(
    session: AsyncSession, company: CompanyId, score: StoredScore, policy: str
) -> None:
    """Append a score made with the override policy tagged `policy`
    (OverridePolicy.tag); it becomes the company's current one. Replicas
    caching scores hear about it when this transaction commits (NOTIFY)."""
    await session.execute(
        _ENSURE_COMPANY, {"country": company.country, "number": company.register_number}
    )
    await session.execute(
        insert(_S).values(
            country=company.country,
            register_number=company.register_number,
            probability_of_default=score.probability_of_default,
            risk_class=int(score.risk_class),
            model_risk_class=int(score.model_risk_class),
            reasons=reasons_as_json(score.reasons),
            model_version=score.model_version,
            override_policy=policy,
            data_as_of=score.data_as_of,
            score_time=score.score_time,
        )
    )
    await session.execute(
        text("SELECT pg_notify('creditwatch_scores', :key)"), {"key": company.key}
    )


# Arrays, not an IN list: a RecordEvents call can end the scores of a
# thousand companies, and SQLAlchemy renders an IN list parameter by parameter.
_END_SCORES = text(
    """
    DELETE FROM scores
    WHERE (country, register_number) IN
          (SELECT * FROM unnest(CAST(:countries AS char(2)[]), CAST(:numbers AS varchar[])))
    """
)


async def end_scores(session: AsyncSession, companies: Sequence[CompanyId]) -> None:
    """End the score of locked companies that had one and can no longer be
    scored (an override that forced class D was lifted, and there is no
    statement): they are unscored from now on, as if never scored.

    Their score rows are deleted, not superseded: every reader takes a
    company's newest row as its current score (ScoreCompany, watch-list
    entries, portfolio views and snapshots, the scheduled re-score), and a
    marker row would have to be understood by each of them. What is lost is
    history no call serves; the alerts and limit decisions that used those
    scores keep their own copies. Replicas caching scores hear about it when
    this transaction commits (NOTIFY), as for a new score."""
    if not companies:
        return
    keys = [c.key for c in companies]
    await session.execute(
        _END_SCORES,
        {
            "countries": [c.country for c in companies],
            "numbers": [c.register_number for c in companies],
        },
    )
    await session.execute(
        text("SELECT pg_notify(:channel, k) FROM unnest(CAST(:keys AS text[])) AS k"),
        {"channel": score_cache.CHANNEL, "keys": score_cache.notices(keys)},
    )


async def latest_score(session: AsyncSession, company: CompanyId) -> StoredScore | None:
    """The company's current score, or None if it was never scored."""
    row = (
        await session.execute(
            select(_S)
            .where(_S.c.country == company.country, _S.c.register_number == company.register_number)
            .order_by(_S.c.id.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else score_from_row(row)


RISK_CLASSES = {int(c): c for c in RiskClass}
"""Risk classes by stored number (a look-up is cheaper than the enum's call)."""


def score_from_row(row: Any) -> StoredScore:
    """A stored score from a `scores` row."""
    return StoredScore(
        probability_of_default=row.probability_of_default,
        risk_class=RISK_CLASSES[row.risk_class],
        model_risk_class=RISK_CLASSES[row.model_risk_class],
        reasons=reasons_from_json(row.reasons, row.model_version),
        model_version=row.model_version,
        data_as_of=row.data_as_of,
        score_time=row.score_time,
    )


# Master-data columns by Company field name.
MASTER_COLUMNS = {
    "legal_name": "name",
    "industry_code": "industry_code",
    "legal_form": "legal_form",
    "status": "status",
    "registered_address": "address",
    "registration_date": "registration_date",
}
_UNSET: dict[str, Any] = {
    "name": "",
    "industry_code": "",
    "legal_form": "",
    "status": 0,
    "address": {},
    "registration_date": None,
}


async def update_master(
    session: AsyncSession,
    company: CompanyId,
    values: dict[str, Any],
    status_at: datetime | None = None,
) -> tuple[bool, list[str], list[str]]:
    """Write master-data fields (Company field names) of a locked company; a
    new status took effect `status_at` (None: now). Returns (created, fields
    that changed from an earlier known value, fields written with a new value)."""
    row = (
        await session.execute(
            select(_C).where(
                _C.c.country == company.country, _C.c.register_number == company.register_number
            )
        )
    ).one()
    created = all(getattr(row, column) == unset for column, unset in _UNSET.items())
    updates: dict[str, Any] = {}
    changed: list[str] = []
    written: list[str] = []
    for name, value in values.items():
        column = MASTER_COLUMNS[name]
        before = getattr(row, column)
        if before == value:
            continue
        updates[column] = value
        written.append(name)
        if before != _UNSET[column]:
            changed.append(name)
    if "status" in written:
        updates["status_time"] = status_at if status_at is not None else func.now()
    if updates:
        await session.execute(
            _C.update()
            .where(_C.c.country == company.country, _C.c.register_number == company.register_number)
            .values(**updates, update_time=text("now()"))
        )
    return created, changed, written


async def status_told_only_by(
    session: AsyncSession, company: CompanyId, kind: EventType, source: str
) -> bool:
    """Whether the company's status was set by an event of `kind` from
    `source` (its time is that event's) and no other source ever told an
    event of that kind: then `source` saying the status no longer holds is
    the word of the only one who said it did."""
    told = (
        await session.execute(
            text(
                """
                SELECT bool_and(e.source = :source) AS only,
                       bool_or(e.source = :source AND e.occurred_at = c.status_time) AS set_it
                FROM company_events e
                JOIN companies c
                  ON c.country = e.country AND c.register_number = e.register_number
                WHERE e.country = :country AND e.register_number = :number AND e.type = :kind
                """
            ),
            {
                "source": source,
                "country": company.country,
                "number": company.register_number,
                "kind": int(kind),
            },
        )
    ).one()
    return bool(told.only) and bool(told.set_it)


async def statuses(
    session: AsyncSession, companies: Sequence[CompanyId]
) -> dict[CompanyId, tuple[int, datetime | None]]:
    """Each company's register status and when it took effect (None: unknown)."""
    if not companies:
        return {}
    rows = await session.execute(
        select(_C.c.country, _C.c.register_number, _C.c.status, _C.c.status_time).where(
            tuple_(_C.c.country, _C.c.register_number).in_(
                [(c.country, c.register_number) for c in companies]
            )
        )
    )
    return {CompanyId(c, n): (status, at) for c, n, status, at in rows}


_INVOICE_LOCKS = 0x1A7015  # the advisory-lock space of reported invoices


async def invoice_company(
    session: AsyncSession, tenant: uuid.UUID, invoice_id: str
) -> CompanyId | None:
    """The company a tenant's invoice is reported on, None if it is new; the
    invoice stays locked until the transaction ends, even while it is new: two
    first reports of one invoice on different companies would otherwise both
    read None, and the one that moved the invoice would not re-score the
    company it took it from. (Advisory keys of two int4 are a space of their
    own: no clash with the jobs' one-bigint leadership keys.)"""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"),
        {"space": _INVOICE_LOCKS, "key": f"{tenant}:{invoice_id}"},
    )
    row = (
        await session.execute(
            select(_P.c.country, _P.c.register_number)
            .where(_P.c.tenant_id == tenant, _P.c.invoice_id == invoice_id)
            .with_for_update()
        )
    ).first()
    return None if row is None else CompanyId(row.country, row.register_number)


async def payment_experience_put(
    session: AsyncSession,
    tenant: uuid.UUID,
    invoice_id: str,
    company: CompanyId,
    values: dict[str, Any],
) -> bool:
    """Store a tenant's overdue invoice (upsert by invoice id); True if new.
    An invoice id already reported for another company is moved to this one."""
    statement = pg_insert(_P).values(
        tenant_id=tenant,
        invoice_id=invoice_id,
        country=company.country,
        register_number=company.register_number,
        **values,
    )
    updated = ("country", "register_number", *values)
    upsert = statement.on_conflict_do_update(
        index_elements=["tenant_id", "invoice_id"],
        set_={k: statement.excluded[k] for k in updated} | {"report_time": text("now()")},
    ).returning(text("(xmax = 0) AS created"))
    return bool(await session.scalar(upsert))
