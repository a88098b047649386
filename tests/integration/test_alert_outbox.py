"""The outbox's ordering guarantee under concurrent writers, on a real PostgreSQL.

The classic pitfall: positions from a sequence are taken before commit, so a
row can become visible after a higher-numbered one; a reader that moved past
the higher number never sees it. These tests make that happen on purpose.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.alerts import AlertFilter
from creditwatch.server.domain.cursors import ORIGIN, Position
from creditwatch.server.store import alerts, database
from tests.conftest import new_tenant

pytestmark = pytest.mark.asyncio

# No xid: the column's default is the writing transaction's id (0010), which
# the ordering tests below rely on.
_INSERT = """
INSERT INTO alerts (tenant_id, id, watch_list_id, country, register_number, type,
    severity, priority, company_legal_name, external_reference, trigger, suggested_action,
    summary, occurred_time)
VALUES ($1, $2, $3, 'NO', '923609016', 9, 2, 0, '', '', $4::jsonb, 2, 'test', now())
RETURNING seq
"""


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**database.connect_kwargs(database.async_url(url)))


async def _insert(connection: asyncpg.Connection, tenant: uuid.UUID) -> tuple[uuid.UUID, int]:
    alert_id = uuid.uuid4()
    trigger = json.dumps({"rescoring": {"reason": 2, "model_version": "t"}})
    seq = await connection.fetchval(_INSERT, tenant, alert_id, uuid.uuid4(), trigger)
    return alert_id, int(seq)


async def _read_all(
    reader: asyncpg.Connection, after: Position
) -> tuple[list[uuid.UUID], Position]:
    seen: list[uuid.UUID] = []
    while True:
        page = await alerts.tail(reader, after, 100)
        seen += [a.id for a in page.alerts]
        after = page.position
        if page.read < 100:
            return seen, after


async def test_a_late_commit_is_not_skipped(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = (await new_tenant(sessions, "outbox")).tenant_id
    early, late, reader = [await _connect(database_url) for _ in range(3)]
    try:
        _, start = await _read_all(reader, ORIGIN)
        slow = early.transaction()
        await slow.start()
        slow_id, slow_seq = await _insert(early, tenant)  # takes the lower sequence number
        fast_id, fast_seq = await _insert(late, tenant)  # autocommit: visible at once
        assert slow_seq < fast_seq

        # A naive reader ordered by seq would now see `fast` and move past slow_seq.
        visible = await reader.fetchval("SELECT count(*) FROM alerts WHERE id = $1", fast_id)
        assert visible == 1
        seen, position = await _read_all(reader, start)
        assert seen == []  # held back: an older transaction is still open

        await slow.commit()
        seen, _ = await _read_all(reader, position)
        assert seen == [slow_id, fast_id]
    finally:
        for connection in (early, late, reader):
            await connection.close()


async def test_listings_mark_an_alert_an_open_older_transaction_may_still_precede(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """ListAlerts and GetAlert read every committed row, not only settled ones:
    a row they return is marked unsettled (no cursor is given for it) while
    an older transaction is still open."""
    tenant = (await new_tenant(sessions, "outbox listing")).tenant_id
    early, late = [await _connect(database_url) for _ in range(2)]

    async def listed() -> list[tuple[uuid.UUID, bool]]:
        async with sessions() as session:
            page = await alerts.list_page(
                session,
                tenant,
                AlertFilter(),
                min_create_time=None,
                max_create_time=None,
                by_priority=False,
                after=None,
                limit=10,
            )
            one = await alerts.get(session, tenant, fast_id)
        assert one is not None and one.settled == page[0].settled
        return [(a.id, a.settled) for a in page]

    try:
        slow = early.transaction()
        await slow.start()
        slow_id, _ = await _insert(early, tenant)  # the older transaction id
        fast_id, _ = await _insert(late, tenant)  # autocommit: visible at once
        assert await listed() == [(fast_id, False)]
        await slow.commit()
        for _ in range(150):  # another open transaction on the cluster delays settling
            found = await listed()
            if all(settled for _, settled in found):
                break
            await asyncio.sleep(0.1)
        assert sorted(found) == sorted([(fast_id, True), (slow_id, True)])
    finally:
        for connection in (early, late):
            await connection.close()


async def test_concurrent_writers_are_read_once_each_in_a_stable_order(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = (await new_tenant(sessions, "outbox concurrency")).tenant_id
    writers = [await _connect(database_url) for _ in range(8)]
    reader = await _connect(database_url)
    _, start = await _read_all(reader, ORIGIN)
    written: list[uuid.UUID] = []
    rng = random.Random(7)

    async def write(connection: asyncpg.Connection) -> None:
        for _ in range(25):
            async with connection.transaction():
                alert_id, _ = await _insert(connection, tenant)
                await asyncio.sleep(rng.random() * 0.02)  # commit at a random later time
            written.append(alert_id)

    seen: list[uuid.UUID] = []
    positions: list[Position] = []
    done = asyncio.Event()

    async def tail() -> None:
        position = start
        while True:
            finished = done.is_set()
            page = await alerts.tail(reader, position, 10)
            seen.extend(a.id for a in page.alerts if a.tenant_id == tenant)
            positions.extend(a.position for a in page.alerts)
            position = page.position
            # Done once nothing is left, settled or not: another open transaction
            # on the cluster can hold settling back after the writers finish.
            if finished and len(page.alerts) < 10 and not await alerts.pending(reader, position):
                return
            await asyncio.sleep(0.001)

    reading = asyncio.create_task(tail())
    await asyncio.gather(*(write(c) for c in writers))
    done.set()
    await reading
    try:
        assert len(written) == 200
        assert sorted(seen) == sorted(written)  # every alert, exactly once
        assert positions == sorted(positions)  # in position order
        assert len(set(positions)) == len(positions)
    finally:
        for connection in (*writers, reader):
            await connection.close()


async def test_inserted_alerts_carry_their_transaction_s_id_and_notify_at_commit(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant = (await new_tenant(sessions, "outbox notify")).tenant_id
    writer, listener = [await _connect(database_url) for _ in range(2)]
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(alerts.CHANNEL, lambda *args: heard.put_nowait(args[2]))
    try:
        async with writer.transaction():
            xid = int(await writer.fetchval("SELECT pg_current_xact_id()::text::bigint"))
            for _ in range(3):
                await _insert(writer, tenant)
        await asyncio.wait_for(heard.get(), 5)  # nobody sent one but the trigger
        stored = await writer.fetch("SELECT xid FROM alerts WHERE tenant_id = $1", tenant)
        assert [r["xid"] for r in stored] == [xid] * 3
        # Once per statement (a COPY of 1,000 alerts is one), not per row.
        row_level = await writer.fetchval(
            "SELECT tgtype & 1 FROM pg_trigger WHERE tgname = 'alerts_notify'"
        )
        assert row_level == 0
    finally:
        for connection in (writer, listener):
            await connection.close()


async def test_deleting_a_tenant_deletes_its_alerts_and_no_others(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Alerts carry no foreign key to tenants (0011); a trigger does the cascade."""
    gone = (await new_tenant(sessions, "outbox deleted")).tenant_id
    kept = (await new_tenant(sessions, "outbox kept")).tenant_id
    connection = await _connect(database_url)
    try:
        for tenant in (gone, kept, gone):
            await _insert(connection, tenant)
        await connection.execute("DELETE FROM tenants WHERE id = $1", gone)
        counts = {
            r["tenant_id"]: r["n"]
            for r in await connection.fetch(
                "SELECT tenant_id, count(*) AS n FROM alerts WHERE tenant_id = ANY($1::uuid[])"
                " GROUP BY tenant_id",
                [gone, kept],
            )
        }
        assert counts == {kept: 1}
    finally:
        await connection.close()


class _Rollback(Exception):
    pass


async def test_the_hubs_polls_use_the_position_index_however_big_the_outbox(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The hub runs its polls as prepared statements, which PostgreSQL plans
    generically after a few runs: a plan that scans the whole outbox on every
    poll (the old EXISTS form did) must not be possible."""
    tenant = (await new_tenant(sessions, "outbox plans")).tenant_id
    connection = await _connect(database_url)
    try:
        with pytest.raises(_Rollback):
            async with connection.transaction():
                await connection.execute(
                    """
                    INSERT INTO alerts (tenant_id, id, watch_list_id, country, register_number,
                        type, severity, priority, company_legal_name, external_reference,
                        trigger, suggested_action, summary, occurred_time)
                    SELECT $1, gen_random_uuid(), gen_random_uuid(), 'NO', '923609016', 9, 2, 0,
                        '', '', '{}', 2, 'filler', now()
                    FROM generate_series(1, 50000)
                    """,
                    tenant,
                )
                await connection.execute("ANALYZE alerts")
                await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                for name, sql, args in (
                    ("pending", alerts.PENDING, "(1, 1)"),
                    ("tail", alerts._TAIL, "(1, 1, 1000)"),
                ):
                    await connection.execute(f"PREPARE {name} AS {sql}")
                    plan = "\n".join(
                        r[0] for r in await connection.fetch(f"EXPLAIN EXECUTE {name}{args}")
                    )
                    assert "ix_alerts_position" in plan and "Seq Scan" not in plan, plan
                raise _Rollback
    finally:
        await connection.close()


async def test_bulk_statements_run_inside_the_session_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Raw asyncpg statements (COPY, arrays) must share the session's transaction:
    SQLAlchemy begins lazily, and an early raw statement would autocommit."""
    name = f"rolled back {uuid.uuid4()}"

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with sessions.begin() as session:
            connection = await database.driver(session)  # the first statement of the session
            raw_xid = await connection.fetchval("SELECT pg_current_xact_id()::text")
            orm_xid = await session.scalar(text("SELECT pg_current_xact_id()::text"))
            assert raw_xid == orm_xid
            await connection.execute(
                "INSERT INTO tenants (id, display_name) VALUES ($1, $2)", uuid.uuid4(), name
            )
            raise Abort
    async with sessions() as session:
        found = await session.scalar(
            text("SELECT count(*) FROM tenants WHERE display_name = :n"), {"n": name}
        )
    assert found == 0


async def test_the_hubs_read_passes_over_tenants_without_streams_undecoded(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    wanted = (await new_tenant(sessions, "outbox wanted")).tenant_id
    other = (await new_tenant(sessions, "outbox other")).tenant_id
    writer, reader = [await _connect(database_url) for _ in range(2)]
    try:
        _, start = await _read_all(reader, ORIGIN)
        ids = [await _insert(writer, tenant) for tenant in (other, wanted, other, other, wanted)]
        await writer.execute("SELECT pg_current_xact_id()")  # settles the rows above
        page = await alerts.tail(reader, start, 3, {wanted})
        assert page.read == 3 and [a.id for a in page.alerts] == [ids[1][0]]
        rest = await alerts.tail(reader, page.position, 100, {wanted})
        assert rest.read == 2 and [a.id for a in rest.alerts] == [ids[4][0]]
        everything = await alerts.tail(reader, start, 100)
        assert [a.id for a in everything.alerts] == [alert_id for alert_id, _ in ids]
        assert everything.position == rest.position
    finally:
        for connection in (writer, reader):
            await connection.close()
