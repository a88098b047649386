"""`creditwatch demo` loads data through the API and alerts flow within a minute."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import alerts_pb2, alerts_pb2_grpc, watchlists_pb2, watchlists_pb2_grpc

pytestmark = pytest.mark.asyncio


async def test_demo_data_and_changes_raise_alerts(
    server: ServerProcess, database_url: str, channel: grpc.aio.Channel
) -> None:
    run = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "creditwatch.server",
            "demo",
            "--address",
            server.address,
            "--companies",
            "120",
            "--changes",
            "6",
            "--interval",
            "0.1",
            "--json",
        ],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["alerts_raised"] > 0
    bank = (("authorization", f"Bearer {out['bank_key']}"),)
    lists = watchlists_pb2_grpc.WatchListServiceStub(channel)
    found = await lists.ListWatchLists(watchlists_pb2.ListWatchListsRequest(), metadata=bank)
    assert [w.display_name for w in found.watch_lists] == ["Corporate customers"]
    assert found.watch_lists[0].entry_count == 72  # 60 % of 120
    history = await alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
        alerts_pb2.ListAlertsRequest(page_size=1000), metadata=bank
    )
    assert len(history.alerts) > 0
    assert all(a.company_legal_name for a in history.alerts)
