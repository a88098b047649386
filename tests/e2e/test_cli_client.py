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


async def test_an_import_keeps_what_its_file_does_not_carry_and_an_export_carries_it_all(
    server: ServerProcess, tenant: TenantKey, tmp_path: Path
) -> None:
    """AddEntries replaces an entry whole: a file of exposures alone must not
    clear the credit limits and labels set up earlier; an export carries them,
    so that an export, edited and imported again, changes only what was edited."""
    env = _env(server, tenant)
    numbers = norwegian_numbers(3, start=89_800_000)
    created = cli(env, "watchlist", "create", "CLI carry", "--json")
    name = json.loads(created.stdout)["name"]
    full = tmp_path / "full.csv"
    full.write_text(
        "country,register_number,exposure_amount,exposure_currency,external_reference,"
        "credit_limit_amount,credit_limit_currency,labels\n"
        f'NO,{numbers[0]},100000,NOK,c-0,50000.50,NOK,"{{""segment"": ""sme""}}"\n'
        f"NO,{numbers[1]},200000,NOK,c-1,,,\n"
        ",,,,,,,\n"  # a spreadsheet's empty row
    )
    imported = cli(env, "watchlist", "import", name, str(full))
    assert imported.returncode == 0, imported.stderr
    assert "2 added, 0 updated" in imported.stdout

    # Exposures only, one number written with spaces: the limit and labels stay.
    exposures = tmp_path / "exposures.csv"
    spaced = f"{numbers[0][:3]} {numbers[0][3:6]} {numbers[0][6:]}"
    exposures.write_text(
        "country,register_number,exposure_amount,exposure_currency\n"
        f"NO,{spaced},150000,NOK\nNO,{numbers[2]},1,NOK\n"
    )
    updated = cli(env, "watchlist", "import", name, str(exposures))
    assert updated.returncode == 0, updated.stderr
    assert "1 added, 1 updated" in updated.stdout
    assert "kept the credit limits and labels of 1 entries" in updated.stderr

    out = tmp_path / "out.csv"
    out.write_text("an older export\n")
    exported = cli(env, "watchlist", "export", name, "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    rows = {r["register_number"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert rows[numbers[0]]["exposure_amount"] == "150000"
    assert rows[numbers[0]]["credit_limit_amount"] == "50000.5"
    assert rows[numbers[0]]["credit_limit_currency"] == "NOK"
    assert json.loads(rows[numbers[0]]["labels"]) == {"segment": "sme"}
    assert rows[numbers[1]]["credit_limit_amount"] == "" and rows[numbers[1]]["labels"] == ""
    assert [n for n in os.listdir(tmp_path) if n.endswith(".part")] == []

    # The export imported again as it is changes nothing it carries.
    again = cli(env, "watchlist", "import", name, str(out))
    assert again.returncode == 0, again.stderr
    assert "0 added, 3 updated" in again.stdout and "kept" not in again.stderr
    assert out.read_text() == (exported := cli(env, "watchlist", "export", name)).stdout, (
        exported.stderr
    )

    # An unquoted decimal comma is refused, not read as two cells.
    comma = tmp_path / "comma.csv"
    comma.write_text(
        f"country,register_number,exposure_amount,exposure_currency\nNO,{numbers[0]},1250,75,NOK\n"
    )
    refused = cli(env, "watchlist", "import", name, str(comma))
    assert refused.returncode == 2
    assert "line 2: more cells than columns" in refused.stderr

    # A company twice in one chunk: the description names the other line.
    twice = tmp_path / "twice.csv"
    twice.write_text(
        f"country,register_number\nNO,{numbers[0]}\nNO,{numbers[1]}\nNO,{numbers[0]}\n"
    )
    doubled = cli(env, "watchlist", "import", name, str(twice))
    assert doubled.returncode == 1
    assert "line 4" in doubled.stderr and "line 2" in doubled.stderr, doubled.stderr
