"""Prometheus metrics, scraped over HTTP from a real server as Prometheus would."""

from __future__ import annotations

import asyncio
import re
import socket

import grpc
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import watchlists_pb2, watchlists_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e import alerting
from tests.e2e.alerting import record, remark, subscribe, watch
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _value(text: str, name: str, **labels: str) -> float:
    """A sample's value from the exposition format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        rf"^{re.escape(name)}" + (rf"\{{{re.escape(wanted)}\}}" if labels else "") + r" (\S+)$"
    )
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_rpc_latency_alerts_and_intake_are_scraped(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    port = _free_port()
    feed = await new_tenant(sessions, "metrics feed", scopes=(SCOPE_COMPANIES_WRITE,))
    numbers = norwegian_numbers(2, start=85_300_000)
    with ServerProcess(database_url, env={"CREDITWATCH_METRICS_PORT": str(port)}) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            await watch(channel, tenant, numbers)
            stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.CreateWatchList(
                    watchlists_pb2.CreateWatchListRequest(watch_list=watchlists_pb2.WatchList()),
                    metadata=tenant.metadata,
                )
            call = subscribe(channel, tenant)
            await alerting.first_heartbeat(call)
            await record(channel, feed, *(remark(n, f"m-{n}") for n in numbers))
            await alerting.alerts(call, 2)
            async with httpx.AsyncClient() as http:
                scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            call.cancel()
            await asyncio.sleep(0.2)
    count = "creditwatch_rpc_seconds_count"
    assert _value(scraped, count, method="CreateWatchList", code="OK") == 1
    assert _value(scraped, count, method="CreateWatchList", code="INVALID_ARGUMENT") == 1
    assert _value(scraped, count, method="AddEntries", code="OK") == 1
    assert _value(scraped, count, method="RecordEvents", code="OK") == 1
    assert _value(scraped, "creditwatch_alert_subscribers") == 1
    assert _value(scraped, "creditwatch_alerts_dispatched_total") >= 2
    assert _value(scraped, "creditwatch_alert_lag_seconds_count") >= 2
    assert _value(scraped, "creditwatch_intake_total", kind="event") == 2
    assert "creditwatch_rpc_seconds_bucket" in scraped
    assert "process_resident_memory_bytes" in scraped
