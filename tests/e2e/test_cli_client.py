"""The `creditwatch` client commands, driven as a user would, output checked."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import common_pb2, companies_pb2, companies_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import record, ref, remark, watch
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
    assert "were imported before this" not in refused.stderr  # one chunk: nothing stayed
    # In chunks of one: line 2 was imported before line 3 was refused, and
    # the command says so.
    chunked = cli(env, "watchlist", "import", name, str(broken), "--chunk", "1")
    assert chunked.returncode == 1
    assert "line 3" in chunked.stderr
    assert "CSV lines 2 to 2 (1 entry) were imported before this" in chunked.stderr
    assert cli(env, "watchlist", "import", name, str(book)).returncode == 0  # as it was
    empty = tmp_path / "empty.csv"
    empty.write_text("country,register_number,exposure_amount,exposure_currency\n")
    nothing = cli(env, "watchlist", "import", name, str(empty))
    assert nothing.returncode == 0, nothing.stderr
    assert "0 added, 0 updated; 3 entries" in nothing.stdout

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
    broken_key = cli({**env, "CREDITWATCH_API_KEY": "cw_abc\ndef"}, "watchlist", "list")
    assert broken_key.returncode == 2 and "API key" in broken_key.stderr
    assert "Traceback" not in broken_key.stderr
    # Not this machine, no TLS: the key would cross the network readable.
    cleartext = cli({**env, "CREDITWATCH_ADDRESS": "0.0.0.0:1"}, "watchlist", "list")
    assert "in cleartext" in cleartext.stderr
    assert "in cleartext" not in unreachable.stderr  # loopback


async def test_alerts_tail_says_it_is_retrying_when_the_server_is_unreachable(
    server: ServerProcess, tenant: TenantKey
) -> None:
    env = {**_env(server, tenant), "CREDITWATCH_ADDRESS": "127.0.0.1:1"}
    tail = await asyncio.create_subprocess_exec(
        *COMMAND, "alerts", "tail", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.sleep(6)
    finally:
        tail.kill()
        _, raw = await asyncio.wait_for(tail.communicate(), 10)
    stderr = raw.decode()
    assert "alert stream broken; resuming" in stderr, stderr


async def test_a_finnish_business_id_keeps_its_hyphen_after_any_separator(
    channel: grpc.aio.Channel,
    server: ServerProcess,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    feed = await new_tenant(sessions, "cli fi feed", scopes=(SCOPE_COMPANIES_WRITE,))
    finnish = companies_pb2.SubmitFinancialStatementRequest(
        company=common_pb2.CompanyRef(country="FI", register_number="8545001-8"),
        financial_statement=healthy(),
    )
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    await stub.SubmitFinancialStatement(finnish, metadata=feed.metadata)
    for written in ("FI:8545001-8", "fi 8545001-8", "FI-8545001-8"):
        scored = cli(_env(server, tenant), "score", written)
        assert scored.returncode == 0, (written, scored.stderr)
        assert scored.stdout.startswith("FI-8545001-8  class "), (written, scored.stdout)


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--amount", "abc", "'abc' is not a number"),
        ("--amount", "NaN", "'NaN' is not a finite number"),
        ("--amount", "0.0000000001", "'0.0000000001' has more than 9 decimals"),
        ("--exposure", "1e40", "'1e40' is too large"),
    ],
)
async def test_a_bad_amount_is_a_usage_error_naming_the_option(
    server: ServerProcess, tenant: TenantKey, option: str, value: str, problem: str
) -> None:
    amounts = {"--amount": "1000", "--exposure": "0", option: value}
    decided = cli(
        _env(server, tenant), "limit", "decide", "NO-923609016", "--currency", "NOK",
        "--days", "30", *(part for pair in amounts.items() for part in pair),
    )  # fmt: skip
    assert decided.returncode == 2, decided.stderr
    assert f"Invalid value for '{option}': {problem}" in decided.stderr
    assert "Traceback" not in decided.stderr


async def test_a_short_csv_row_is_refused_naming_its_line(
    server: ServerProcess, tenant: TenantKey, tmp_path: Path
) -> None:
    short = tmp_path / "short.csv"
    short.write_text("country,register_number,exposure_amount,exposure_currency\n"
                     "NO,923609016,100,NOK\nNO\n")  # fmt: skip
    imported = cli(_env(server, tenant), "watchlist", "import", "watchLists/x", str(short))
    assert imported.returncode == 2, imported.stderr
    assert "line 3: too few cells (no register_number)" in imported.stderr
    assert "Traceback" not in imported.stderr


async def _tail(
    env: dict[str, str], errors: Path, *args: str, pipe_to: str = ""
) -> asyncio.subprocess.Process:
    """`alerts tail --json` with `args`, its stdout through the shell command
    `pipe_to` and its stderr into `errors`."""
    command = shlex.join([*COMMAND, "alerts", "tail", "--json", *args])
    return await asyncio.create_subprocess_shell(
        f"{command} 2>{shlex.quote(str(errors))} {pipe_to}",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )


async def _printed(tail: asyncio.subprocess.Process) -> list[str]:
    """The register numbers of the alerts a tail printed (it must end by itself)."""
    out, _ = await asyncio.wait_for(tail.communicate(), 60)
    return [json.loads(line)["company"]["registerNumber"] for line in out.decode().splitlines()]


async def test_alerts_tail_with_a_consumer_acknowledges_only_what_it_printed(
    channel: grpc.aio.Channel,
    server: ServerProcess,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    tmp_path: Path,
) -> None:
    env = _env(server, tenant)
    errors = tmp_path / "tail.err"
    feed = await new_tenant(sessions, "cli tail feed", scopes=(SCOPE_COMPANIES_WRITE,))
    numbers = norwegian_numbers(4, start=85_450_000)
    await watch(channel, tenant, numbers)
    await record(channel, feed, remark(numbers[0], "tail-0"))

    # --from oldest is honoured with a consumer: it starts from the retained
    # alerts, and the printed one is acknowledged (creating the consumer).
    oldest = await _tail(env, errors, "--consumer", "desk", "--from", "oldest", "--count", "1")
    assert await _printed(oldest) == [numbers[0]], errors.read_text()

    await record(channel, feed, remark(numbers[1], "tail-1"))
    resumed = await _tail(env, errors, "--consumer", "desk", "--count", "1")
    assert await _printed(resumed) == [numbers[1]], errors.read_text()

    # The reader goes away after one line: the alert printed into the closed
    # pipe was never seen, so it stays for the consumer's next run.
    cut = await _tail(env, errors, "--consumer", "desk", pipe_to="| head -n 1")
    await asyncio.sleep(3)  # subscribed
    await record(channel, feed, remark(numbers[2], "tail-2"))
    assert cut.stdout is not None
    line = await asyncio.wait_for(cut.stdout.readline(), 30)
    assert json.loads(line)["company"]["registerNumber"] == numbers[2]
    await asyncio.sleep(1)  # head has exited
    await record(channel, feed, remark(numbers[3], "tail-3"))
    await asyncio.wait_for(cut.wait(), 60)  # the shell waits for the tail too
    assert errors.read_text() == ""  # no traceback, no "Exception ignored"

    after = await _tail(env, errors, "--consumer", "desk", "--count", "1")
    assert await _printed(after) == [numbers[3]], errors.read_text()


async def test_alerts_tail_from_a_cursor_the_server_refuses_suggests_no_resume(
    server: ServerProcess, tenant: TenantKey, tmp_path: Path
) -> None:
    errors = tmp_path / "tail.err"
    refused = await _tail(_env(server, tenant), errors, "--from", "not-a-cursor")
    assert await _printed(refused) == []
    assert refused.returncode == 1
    said = errors.read_text()
    assert "INVALID_ARGUMENT" in said and "after_cursor" in said
    assert "resume after what was printed" not in said  # it would be refused again
