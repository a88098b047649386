"""Watch-list bulk load and paging over gRPC, against bare PostgreSQL baselines.

Measures, in one run on one fresh database:
  * AddEntries: 100,000 entries as 10 calls of 10,000, through a real server
    process over loopback gRPC (validation, upsert, entry counts, one transaction per call);
  * baseline: the same 100,000 rows written with a bare `COPY` (asyncpg
    copy_records_to_table, 10 transactions of 10,000) into watch_list_entries itself,
    under another watch list (same indexes and foreign key);
  * ListEntries paging through all 100,000 (pages of 10,000) vs. a bare asyncpg keyset
    SELECT of the same pages.

Goal (issue #3): AddEntries >= 50,000 entries/s and >= 30 % of the COPY rate.
Run: make bench   (or .venv/bin/python bench/bench_watchlists.py)
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc
from google.type import money_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    connect_kwargs,
    create_tenant_key,
    fresh_database,
    print_table,
    server_url,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import common_pb2, watchlists_pb2, watchlists_pb2_grpc
from tests.identifiers import norwegian_numbers

TOTAL = 100_000
PER_CALL = 10_000
PAGE = 10_000


def _requests(parent: str, numbers: list[str]) -> list[watchlists_pb2.AddEntriesRequest]:
    out = []
    for start in range(0, len(numbers), PER_CALL):
        chunk = numbers[start : start + PER_CALL]
        out.append(
            watchlists_pb2.AddEntriesRequest(
                parent=parent,
                entries=[
                    watchlists_pb2.WatchListEntry(
                        company=common_pb2.CompanyRef(country="NO", register_number=n),
                        exposure=money_pb2.Money(currency_code="NOK", units=1000 + i),
                        external_reference=f"cust-{start + i}",
                        labels={"segment": "sme"},
                    )
                    for i, n in enumerate(chunk)
                ],
            )
        )
    return out


async def _grpc_side(address: str, key: str, numbers: list[str]) -> dict[str, float]:
    metadata = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
        created = await stub.CreateWatchList(
            watchlists_pb2.CreateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(display_name="bench")
            ),
            metadata=metadata,
        )
        parent = created.watch_list.name
        requests = _requests(parent, numbers)
        started = time.perf_counter()
        for request in requests:
            await stub.AddEntries(request, metadata=metadata)
        add_seconds = time.perf_counter() - started

        started = time.perf_counter()
        token, seen = "", 0
        while True:
            page = await stub.ListEntries(
                watchlists_pb2.ListEntriesRequest(parent=parent, page_size=PAGE, page_token=token),
                metadata=metadata,
            )
            seen += len(page.entries)
            token = page.next_page_token
            if not token:
                break
        list_seconds = time.perf_counter() - started
        assert seen == len(numbers), seen
    return {"add": add_seconds, "list": list_seconds}


async def _baselines(db_url: str, numbers: list[str]) -> dict[str, float]:
    conn = await asyncpg.connect(**connect_kwargs(db_url))
    try:
        # The baseline writes into the real table (same indexes, same foreign
        # key), under a watch list of its own, so both paths pay the same
        # PostgreSQL costs and differ only in what creditwatch adds.
        tenant = await conn.fetchval("SELECT id FROM tenants LIMIT 1")
        wl, now = uuid.uuid4(), datetime.now(UTC)
        await conn.execute(
            "INSERT INTO watch_lists (tenant_id, id, display_name, description, pd_threshold, "
            "alert_rules, labels, entry_count, create_time, update_time) "
            "VALUES ($1, $2, 'copy baseline', '', 0, '{}', '{}', 0, now(), now())",
            tenant,
            wl,
        )
        records = [
            (
                tenant,
                wl,
                "NO",
                n,
                "NOK",
                Decimal(1000 + i),
                None,
                None,
                f"cust-{i}",
                '{"segment": "sme"}',
                now,
                now,
            )
            for i, n in enumerate(numbers)
        ]
        columns = [
            "tenant_id",
            "watch_list_id",
            "country",
            "register_number",
            "exposure_currency",
            "exposure_amount",
            "credit_limit_currency",
            "credit_limit_amount",
            "external_reference",
            "labels",
            "create_time",
            "update_time",
        ]
        # COPY uses the binary protocol: jsonb's binary form is a version byte, then text.
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda v: b"\x01" + v.encode(),
            decoder=lambda b: b[1:].decode(),
            schema="pg_catalog",
            format="binary",
        )
        started = time.perf_counter()
        for start in range(0, len(records), PER_CALL):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "watch_list_entries", records=records[start : start + PER_CALL], columns=columns
                )
        copy_seconds = time.perf_counter() - started

        started = time.perf_counter()
        last, seen = ("", ""), 0
        while True:
            rows = await conn.fetch(
                "SELECT * FROM watch_list_entries WHERE tenant_id = $1 AND watch_list_id = $2 "
                "AND (country, register_number) > ($3, $4) "
                "ORDER BY country, register_number LIMIT $5",
                tenant,
                wl,
                last[0],
                last[1],
                PAGE,
            )
            if not rows:
                break
            seen += len(rows)
            last = (rows[-1]["country"], rows[-1]["register_number"])
        select_seconds = time.perf_counter() - started
        assert seen == len(numbers)
    finally:
        await conn.close()
    return {"copy": copy_seconds, "select": select_seconds}


def main() -> None:
    url, _embedded = server_url()
    numbers = norwegian_numbers(TOTAL)
    with fresh_database(url) as db_url:
        key = asyncio.run(create_tenant_key(db_url))
        with ServerProcess(db_url, env={"CREDITWATCH_LOG_LEVEL": "WARNING"}) as server:
            measured = asyncio.run(_grpc_side(server.address, key, numbers))
        base = asyncio.run(_baselines(db_url, numbers))

    add_rate = TOTAL / measured["add"]
    copy_rate = TOTAL / base["copy"]
    list_rate = TOTAL / measured["list"]
    select_rate = TOTAL / base["select"]
    print_table(
        f"Watch-list bulk load and paging, {TOTAL:,} entries "
        f"({TOTAL // PER_CALL} calls of {PER_CALL:,}; pages of {PAGE:,})",
        ("operation", "seconds", "entries/s", "vs baseline"),
        [
            (
                "AddEntries over gRPC",
                f"{measured['add']:.2f}",
                f"{add_rate:,.0f}",
                f"{add_rate / copy_rate:.0%} of COPY",
            ),
            ("baseline: bare COPY", f"{base['copy']:.2f}", f"{copy_rate:,.0f}", "100%"),
            (
                "ListEntries over gRPC",
                f"{measured['list']:.2f}",
                f"{list_rate:,.0f}",
                f"{list_rate / select_rate:.0%} of SELECT",
            ),
            (
                "baseline: bare keyset SELECT",
                f"{base['select']:.2f}",
                f"{select_rate:,.0f}",
                "100%",
            ),
        ],
    )
    goal_rate = add_rate >= 50_000
    goal_ratio = add_rate / copy_rate >= 0.30
    print(
        f"\ngoal >= 50,000 entries/s: {'met' if goal_rate else 'NOT met'}; "
        f">= 30 % of COPY: {'met' if goal_ratio else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
