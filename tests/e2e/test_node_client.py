"""The contracts serve non-Python systems: the Node.js example against a real server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import bankruptcy, record
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "node"


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the example's npm packages installed."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("Node.js is not installed; the example runs wherever it is")
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").exists():
        npm = shutil.which("npm")
        assert npm is not None, "node without npm: install the example's packages by hand"
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent"], cwd=EXAMPLE, check=True
        )
    return binary


async def test_node_example_creates_a_watch_list_and_tails_its_alerts(
    node: str,
    server: ServerProcess,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    feed = await new_tenant(sessions, "node feed", scopes=(SCOPE_COMPANIES_WRITE,))
    number = norwegian_numbers(1, start=85_500_000)[0]
    process = await asyncio.create_subprocess_exec(
        node,
        str(EXAMPLE / "example.js"),
        server.address,
        tenant.api_key,
        "NO",
        number,
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = await asyncio.wait_for(process.stdout.readline(), 30)
    assert ready.decode().startswith("READY "), ready
    await record(channel, feed, bankruptcy(number, "node-b1"))
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    await asyncio.wait_for(process.wait(), 30)
    alert = json.loads(line)
    assert process.returncode == 0
    assert alert["type"] == "ALERT_TYPE_BANKRUPTCY_OPENED"
    assert alert["company"]["registerNumber"] == number
    assert alert["externalReference"] == "node-1"
    assert alert["exposure"]["units"] == "750000"
