"""Watch lists and entries in PostgreSQL. Each public method is one transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, Table, Text, delete, literal, select, tuple_, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import NotFound
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.scores import RiskClass, StoredScore, reasons_from_json
from creditwatch.server.domain.watchlists import (
    AddEntriesResult,
    AlertRules,
    Entry,
    EntryColumns,
    EntrySpec,
    WatchList,
    WatchListSpec,
)
from creditwatch.server.store import models
from creditwatch.server.store.idempotency import claim, remember

_E = cast(Table, models.WatchListEntry.__table__)
_S = cast(Table, models.Score.__table__)
_W = cast(Table, models.WatchList.__table__)

# One statement for a whole batch: arrays in, unnest, upsert. It is asyncpg-level
# SQL because a 10,000-row upsert spent more time in SQLAlchemy's parameter
# handling than in PostgreSQL, so the bulk path uses the driver connection of
# the session's own transaction. `xmax = 0` is true only for rows this statement
# inserted; the CTE returns two counts instead of 10,000 rows.
_UPSERT_ENTRIES = """
    WITH upserted AS (
        INSERT INTO watch_list_entries AS e (
            tenant_id, watch_list_id, country, register_number,
            exposure_currency, exposure_amount, credit_limit_currency, credit_limit_amount,
            external_reference, labels, create_time, update_time)
        SELECT $1, $2, t.c, t.n, t.ec, t.ea, t.lc, t.la, t.ext, CAST(t.labels AS jsonb), $3, $3
        FROM unnest(
            $4::text[], $5::text[], $6::text[], $7::numeric[],
            $8::text[], $9::numeric[], $10::text[], $11::text[]
        ) AS t(c, n, ec, ea, lc, la, ext, labels)
        -- Company order: concurrent upserts lock rows in one order, never deadlock.
        ORDER BY t.c, t.n
        ON CONFLICT (tenant_id, watch_list_id, country, register_number) DO UPDATE SET
            exposure_currency = EXCLUDED.exposure_currency,
            exposure_amount = EXCLUDED.exposure_amount,
            credit_limit_currency = EXCLUDED.credit_limit_currency,
            credit_limit_amount = EXCLUDED.credit_limit_amount,
            external_reference = EXCLUDED.external_reference,
            labels = EXCLUDED.labels,
            update_time = EXCLUDED.update_time
        RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted) AS added, count(*) AS total FROM upserted
"""


def _now() -> datetime:
    return datetime.now(UTC)


def _watch_list(row: models.WatchList) -> WatchList:
    rules = AlertRules(
        alert_types=tuple(row.alert_rules.get("alert_types", ())),
        minimum_severity=int(row.alert_rules.get("minimum_severity", 0)),
        minimum_class_change=int(row.alert_rules.get("minimum_class_change", 0)),
    )
    spec = WatchListSpec(
        display_name=row.display_name,
        description=row.description,
        pd_threshold=row.pd_threshold,
        alert_rules=rules,
        labels=dict(row.labels),
    )
    return WatchList(str(row.id), spec, row.entry_count, row.create_time, row.update_time)


def _money(currency: str | None, amount: Any) -> Money | None:
    return None if currency is None or amount is None else Money(currency, amount)


def _score(row: Row[Any]) -> StoredScore | None:
    if row.s_pd is None:
        return None
    return StoredScore(
        probability_of_default=row.s_pd,
        risk_class=RiskClass(row.s_risk_class),
        model_risk_class=RiskClass(row.s_model_risk_class),
        reasons=reasons_from_json(row.s_reasons, row.s_model_version),
        model_version=row.s_model_version,
        data_as_of=row.s_data_as_of,
        score_time=row.s_score_time,
    )


def _entry(row: Row[Any], labels_cache: dict[str, dict[str, str]]) -> Entry:
    # Labels come as text and each distinct set is parsed once per page: pages
    # hold up to 10,000 entries that mostly share a handful of label sets.
    labels = labels_cache.get(row.labels_text)
    if labels is None:
        labels = labels_cache[row.labels_text] = json.loads(row.labels_text)
    spec = EntrySpec(
        company=CompanyId(row.country.rstrip(), row.register_number),
        exposure=_money(row.exposure_currency, row.exposure_amount),
        credit_limit=_money(row.credit_limit_currency, row.credit_limit_amount),
        external_reference=row.external_reference,
        labels=dict(labels),
    )
    return Entry(str(row.watch_list_id), spec, _score(row), row.create_time, row.update_time)


def _rules_json(rules: AlertRules) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(rules).items()}


class WatchListStore:
    """Tenant-scoped persistence of watch lists and entries.

    Every query filters by `tenant_id`, so another tenant's ids behave exactly
    like ids that do not exist (NotFound).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self, tenant_id: uuid.UUID, spec: WatchListSpec, request_id: str = ""
    ) -> WatchList:
        """Create a watch list; a repeated `request_id` returns the first one,
        or is InvalidArgument if `spec` differs from the first call's."""
        async with self._sessions.begin() as session:
            if request_id:
                earlier = await claim(
                    session, tenant_id, "CreateWatchList", request_id, spec.fingerprint()
                )
                if earlier is not None:
                    return await self._get(session, tenant_id, uuid.UUID(earlier["id"]))
            now = _now()
            row = models.WatchList(
                tenant_id=tenant_id,
                id=uuid.uuid4(),
                display_name=spec.display_name.strip(),
                description=spec.description,
                pd_threshold=spec.pd_threshold,
                alert_rules=_rules_json(spec.alert_rules),
                labels=spec.labels,
                entry_count=0,
                create_time=now,
                update_time=now,
            )
            session.add(row)
            if request_id:
                await remember(
                    session, tenant_id, "CreateWatchList", request_id, {"id": str(row.id)}
                )
            return _watch_list(row)

    async def get(self, tenant_id: uuid.UUID, watch_list_id: uuid.UUID) -> WatchList:
        """One watch list, or NotFound."""
        async with self._sessions() as session:
            return await self._get(session, tenant_id, watch_list_id)

    async def _get(
        self, session: AsyncSession, tenant_id: uuid.UUID, watch_list_id: uuid.UUID
    ) -> WatchList:
        row = await session.get(models.WatchList, (tenant_id, watch_list_id))
        if row is None:
            raise NotFound(f"watchLists/{watch_list_id}")
        return _watch_list(row)

    async def list_page(
        self, tenant_id: uuid.UUID, limit: int, after: tuple[Any, ...] | None
    ) -> list[WatchList]:
        """Watch lists ordered by (create_time, id), after the key `after` (a
        (create_time, id) pair)."""
        query = select(models.WatchList).where(models.WatchList.tenant_id == tenant_id)
        if after is not None:
            query = query.where(tuple_(models.WatchList.create_time, models.WatchList.id) > after)
        query = query.order_by(models.WatchList.create_time, models.WatchList.id).limit(limit)
        async with self._sessions() as session:
            return [_watch_list(r) for r in await session.scalars(query)]

    async def update(
        self,
        tenant_id: uuid.UUID,
        watch_list_id: uuid.UUID,
        spec: WatchListSpec,
        fields: Sequence[str],
    ) -> WatchList:
        """Change the named fields of a watch list."""
        async with self._sessions.begin() as session:
            row = await session.get(
                models.WatchList, (tenant_id, watch_list_id), with_for_update=True
            )
            if row is None:
                raise NotFound(f"watchLists/{watch_list_id}")
            for name in fields:
                if name == "alert_rules":
                    row.alert_rules = _rules_json(spec.alert_rules)
                elif name == "display_name":
                    row.display_name = spec.display_name.strip()
                else:
                    setattr(row, name, getattr(spec, name))
            row.update_time = _now()
            return _watch_list(row)

    async def delete(self, tenant_id: uuid.UUID, watch_list_id: uuid.UUID) -> int:
        """Delete a watch list and its entries; returns the number of entries removed."""
        async with self._sessions.begin() as session:
            await self._lock(session, tenant_id, watch_list_id)
            await session.execute(
                delete(_E).where(_E.c.tenant_id == tenant_id, _E.c.watch_list_id == watch_list_id)
            )
            count = await session.scalar(
                delete(models.WatchList)
                .where(
                    models.WatchList.tenant_id == tenant_id, models.WatchList.id == watch_list_id
                )
                .returning(models.WatchList.entry_count)
            )
            if count is None:
                raise NotFound(f"watchLists/{watch_list_id}")
            return int(count)

    async def _lock(
        self, session: AsyncSession, tenant_id: uuid.UUID, watch_list_id: uuid.UUID
    ) -> None:
        # Serialises entry changes per watch list so entry_count stays exact.
        found = await session.scalar(
            select(literal(1))
            .select_from(_W)
            .where(_W.c.tenant_id == tenant_id, _W.c.id == watch_list_id)
            .with_for_update()
        )
        if found is None:
            raise NotFound(f"watchLists/{watch_list_id}")

    async def add_entries(
        self,
        tenant_id: uuid.UUID,
        watch_list_id: uuid.UUID,
        entries: EntryColumns,
        request_id: str = "",
    ) -> AddEntriesResult:
        """Upsert entries by company in one transaction (companies must be distinct).

        A repeated `request_id` returns the first call's result without writing,
        or is InvalidArgument if the watch list or entries differ from the first
        call's."""
        arrays = (
            entries.countries,
            entries.register_numbers,
            entries.exposure_currencies,
            entries.exposure_amounts,
            entries.limit_currencies,
            entries.limit_amounts,
            entries.external_references,
            entries.labels_json,
        )
        asks = entries.fingerprint(str(watch_list_id)) if request_id else ""
        async with self._sessions.begin() as session:
            if request_id:
                earlier = await claim(session, tenant_id, "AddEntries", request_id, asks)
                if earlier is not None:
                    return AddEntriesResult(**earlier)
            await self._lock(session, tenant_id, watch_list_id)
            driver = (await (await session.connection()).get_raw_connection()).driver_connection
            assert driver is not None
            counts = await driver.fetchrow(
                _UPSERT_ENTRIES, tenant_id, watch_list_id, _now(), *arrays
            )
            added, upserted = int(counts["added"]), int(counts["total"])
            total = await session.scalar(
                update(_W)
                .where(_W.c.tenant_id == tenant_id, _W.c.id == watch_list_id)
                .values(entry_count=_W.c.entry_count + added)
                .returning(_W.c.entry_count)
            )
            result = AddEntriesResult(added, upserted - added, int(total or 0))
            if request_id:
                await remember(session, tenant_id, "AddEntries", request_id, asdict(result))
            return result

    async def remove_entries(
        self, tenant_id: uuid.UUID, watch_list_id: uuid.UUID, companies: Sequence[CompanyId]
    ) -> int:
        """Remove entries by company; returns how many were on the list."""
        keys = sorted(set(companies))
        async with self._sessions.begin() as session:
            await self._lock(session, tenant_id, watch_list_id)
            removed = len(
                (
                    await session.execute(
                        delete(_E)
                        .where(
                            _E.c.tenant_id == tenant_id,
                            _E.c.watch_list_id == watch_list_id,
                            tuple_(_E.c.country, _E.c.register_number).in_(
                                [(k.country, k.register_number) for k in keys]
                            ),
                        )
                        .returning(_E.c.country)
                    )
                ).all()
            )
            await session.execute(
                update(_W)
                .where(_W.c.tenant_id == tenant_id, _W.c.id == watch_list_id)
                .values(entry_count=_W.c.entry_count - removed)
            )
            return removed

    def _entries_query(self, tenant_id: uuid.UUID, watch_list_id: uuid.UUID) -> Any:
        latest = (
            select(
                _S.c.probability_of_default.label("s_pd"),
                _S.c.risk_class.label("s_risk_class"),
                _S.c.model_risk_class.label("s_model_risk_class"),
                _S.c.reasons.label("s_reasons"),
                _S.c.model_version.label("s_model_version"),
                _S.c.data_as_of.label("s_data_as_of"),
                _S.c.score_time.label("s_score_time"),
            )
            .where(_S.c.country == _E.c.country, _S.c.register_number == _E.c.register_number)
            .order_by(_S.c.id.desc())
            .limit(1)
            .lateral("latest")
        )
        columns = [c for c in _E.c if c.name != "labels"]
        return (
            select(*columns, sql_cast(_E.c.labels, Text).label("labels_text"), latest)
            .select_from(_E.outerjoin(latest, literal(True)))
            .where(_E.c.tenant_id == tenant_id, _E.c.watch_list_id == watch_list_id)
        ), latest

    async def get_entry(
        self, tenant_id: uuid.UUID, watch_list_id: uuid.UUID, company: CompanyId
    ) -> Entry:
        """One entry with its company's latest score, or NotFound."""
        query, _ = self._entries_query(tenant_id, watch_list_id)
        query = query.where(
            _E.c.country == company.country, _E.c.register_number == company.register_number
        )
        async with self._sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise NotFound(f"watchLists/{watch_list_id}/entries/{company.key}")
        return _entry(row, {})

    async def list_entries(
        self,
        tenant_id: uuid.UUID,
        watch_list_id: uuid.UUID,
        limit: int,
        after: tuple[Any, ...] | None,
        risk_classes: Sequence[RiskClass] = (),
        label: tuple[str, str | None] | None = None,
    ) -> list[Entry]:
        """Entries in company order after the key `after`, filtered as asked.

        NotFound when the watch list does not exist for this tenant (an empty
        page would hide a wrong id)."""
        query, latest = self._entries_query(tenant_id, watch_list_id)
        if after is not None:
            query = query.where(tuple_(_E.c.country, _E.c.register_number) > tuple(after))
        if risk_classes:
            query = query.where(latest.c.s_risk_class.in_([int(c) for c in risk_classes]))
        if label is not None:
            key, value = label
            if value is None:
                query = query.where(_E.c.labels.has_key(key))
            else:
                query = query.where(_E.c.labels.contains({key: value}))
        query = query.order_by(_E.c.country, _E.c.register_number).limit(limit)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
            if not rows:
                await self._get(session, tenant_id, watch_list_id)
        labels_cache: dict[str, dict[str, str]] = {}
        return [_entry(r, labels_cache) for r in rows]
