"""The `creditwatch` client commands, driven as a user would, output checked."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import companies_pb2, companies_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import record, ref, remark
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

COMMAND = [sys.executable, "-m", "creditwatch.server"]


def _env(server: ServerProcess, key: TenantKey) -> dict[str, str]:
    return {
        **os.environ,
        "CREDITWATCH_ADDRESS": server.address,
        "CREDITWATCH_API_KEY": key.api_key,
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=120)


async def test_a_user_session_from_the_command_line(
    channel: grpc.aio.Channel,
    server: ServerProcess,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    tmp_path: Path,
) -> None:
    env = _env(server, tenant)
    numbers = norwegian_numbers(3, start=85_400_000)
    feed = await new_tenant(sessions, "cli feed", scopes=(SCOPE_COMPANIES_WRITE,))
    await companies_pb2_grpc.CompanyDataServiceStub(channel).SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(numbers[0]), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )

    created = cli(env, "watchlist", "create", "CLI book", "--pd-threshold", "0.05", "--json")
    assert created.returncode == 0, created.stderr
    name = json.loads(created.stdout)["name"]

    book = tmp_path / "book.csv"
    book.write_text(
        "country,register_number,exposure_amount,exposure_currency,external_reference\n"
        + "".join(f"NO,{n},{(i + 1) * 100000},NOK,cust-{i}\n" for i, n in enumerate(numbers))
    )
    imported = cli(env, "watchlist", "import", name, str(book))
    assert imported.returncode == 0, imported.stderr
    assert "3 added, 0 updated; 3 entries" in imported.stdout
    assert "importing" in imported.stderr  # the progress bar

    broken = tmp_path / "broken.csv"
    wrong = numbers[1][:-1] + str((int(numbers[1][-1]) + 1) % 10)
    broken.write_text(
        f"country,register_number,exposure_amount,exposure_currency\nNO,{numbers[0]},1,NOK\n"
        f"NO,{wrong},1,NOK\n"
    )
    refused = cli(env, "watchlist", "import", name, str(broken))
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT" in refused.stderr and "line 3" in refused.stderr
    assert "Traceback" not in refused.stderr

    listed = cli(env, "watchlist", "list")
    assert name in listed.stdout and "CLI book" in listed.stdout
    shown = cli(env, "watchlist", "show", name.split("/")[1])
    assert "entries       3" in shown.stdout

    scored = cli(env, "score", f"NO-{numbers[0]}")
    assert scored.returncode == 0, scored.stderr
    assert f"NO-{numbers[0]}  class " in scored.stdout and "FEATURE_" in scored.stdout

    decided = cli(
        env, "limit", "decide", f"NO-{numbers[0]}", "--amount", "100000", "--currency", "NOK",
        "--days", "30", "--json",
    )  # fmt: skip
    assert decided.returncode == 0, decided.stderr
    assert json.loads(decided.stdout)["outcome"].startswith("CREDIT_LIMIT_OUTCOME_")

    summary = cli(env, "portfolio", "summary", name, "--currency", "NOK")
    assert summary.returncode == 0, summary.stderr
    assert "3 entries (1 scored, 0 in other currencies), exposure 600,000.00 NOK" in summary.stdout
    assert "unscored" in summary.stdout and "█" in summary.stdout
    assert "top contributors" in summary.stdout

    exported = cli(env, "watchlist", "export", name)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(r["register_number"] for r in rows) == sorted(numbers)
    assert {r["register_number"]: r["risk_class"] for r in rows}[numbers[0]] in "ABCD"
    assert "3 entries exported" in exported.stderr

    # alerts tail: a live stream, one JSON alert per line.
    tail = await asyncio.create_subprocess_exec(
        *COMMAND,
        "alerts",
        "tail",
        "--json",
        "--count",
        "1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(3)  # subscribed
    await record(channel, feed, remark(numbers[2], "cli-r1"))
    out, err = await asyncio.wait_for(tail.communicate(), 60)
    assert tail.returncode == 0, err.decode()
    alert = json.loads(out.decode().strip().splitlines()[0])
    assert alert["type"] == "ALERT_TYPE_PAYMENT_REMARK_REGISTERED"
    assert alert["company"]["registerNumber"] == numbers[2]


async def test_clear_errors_for_unreachable_servers_and_missing_keys(
    server: ServerProcess, tenant: TenantKey
) -> None:
    env = _env(server, tenant)
    unreachable = cli({**env, "CREDITWATCH_ADDRESS": "127.0.0.1:1"}, "watchlist", "list")
    assert unreachable.returncode == 1
    assert "cannot reach the creditwatch server at 127.0.0.1:1" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    no_key = {k: v for k, v in env.items() if k != "CREDITWATCH_API_KEY"}
    missing = cli(no_key, "watchlist", "list")
    assert missing.returncode == 2 and "API key" in missing.stderr
    bad_company = cli(env, "score", "923609016")
    assert bad_company.returncode == 2 and "COUNTRY-NUMBER" in bad_company.stderr
    wrong_digit = cli(env, "score", "NO-923609017")
    assert wrong_digit.returncode == 1 and "check digit" in wrong_digit.stderr
