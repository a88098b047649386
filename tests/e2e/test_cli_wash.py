"""`creditwatch wash`: a portfolio file scored over StreamScores from the command
line, every row answered in order as the API answers it alone."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import grpc
import pytest
from google.type import date_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client import STATEMENT_COLUMNS
from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import companies_pb2, companies_pb2_grpc, scoring_pb2, scoring_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import ref
from tests.e2e.test_cli_client import _env, cli
from tests.e2e.test_scoring import distressed, healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

PROSPECTS = 150  # more than one worker-process chunk's threshold (64 items)


def _day(day: date_pb2.Date) -> str:
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def _row(item_id: str, statement: companies_pb2.FinancialStatement) -> dict[str, str]:
    row = {
        "id": item_id,
        "period_start": _day(statement.period_start),
        "period_end": _day(statement.period_end),
        "currency": statement.currency_code,
    }
    for field, value in statement.ListFields():
        if isinstance(value, float):
            row[field.name] = repr(value)
    return row


async def test_a_portfolio_file_is_washed_row_by_row(
    channel: grpc.aio.Channel,
    server: ServerProcess,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    tmp_path: Path,
) -> None:
    known, unknown = norwegian_numbers(2, start=85_900_000)
    feed = await new_tenant(sessions, "wash feed", scopes=(SCOPE_COMPANIES_WRITE,))
    await companies_pb2_grpc.CompanyDataServiceStub(channel).SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(known), financial_statement=distressed()
        ),
        metadata=feed.metadata,
    )
    no_assets = healthy()
    no_assets.ClearField("total_assets")
    rows = [
        {"id": "known", "country": "NO", "register_number": known},
        {"id": "unknown", "country": "NO", "register_number": unknown},
        _row("missing-assets", no_assets),
        *(_row(f"p{i}", healthy(net_profit=1_000_000 + i)) for i in range(PROSPECTS)),
    ]
    portfolio = tmp_path / "portfolio.csv"
    with portfolio.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=STATEMENT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    washed = cli(_env(server, tenant), "wash", str(portfolio))
    assert washed.returncode == 0, washed.stderr
    assert "scoring" in washed.stderr  # the progress bar
    assert f"{PROSPECTS + 1:,} scored, 2 refused" in washed.stderr
    out = list(csv.DictReader(io.StringIO(washed.stdout)))
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    by_id = {r["id"]: r for r in out}

    stub = scoring_pb2_grpc.ScoringServiceStub(channel)
    stored = await stub.ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(company=ref(known)), metadata=tenant.metadata
    )
    assert by_id["known"]["status"] == "OK"
    assert by_id["known"]["probability_of_default"] == f"{stored.score.probability_of_default:.6f}"
    assert by_id["unknown"]["status"] == "NOT_FOUND"
    assert by_id["missing-assets"]["status"] == "INVALID_ARGUMENT"
    assert "financial_statement.total_assets" in by_id["missing-assets"]["error"]
    for i in (0, PROSPECTS - 1):
        alone = await stub.ScoreFinancials(
            scoring_pb2.ScoreFinancialsRequest(
                financial_statement=healthy(net_profit=1_000_000 + i)
            ),
            metadata=tenant.metadata,
        )
        got = by_id[f"p{i}"]
        assert got["status"] == "OK" and got["error"] == ""
        assert got["probability_of_default"] == f"{alone.score.probability_of_default:.6f}"
        assert got["risk_class"] == "ABCD"[alone.score.risk_class - 1]
        assert got["reasons"].split() == [r.code for r in alone.score.reasons]
        assert got["model_version"] == alone.score.model_version


async def test_a_malformed_file_is_refused_before_anything_is_sent(
    server: ServerProcess, tenant: TenantKey, tmp_path: Path
) -> None:
    env = _env(server, tenant)
    bad_number = tmp_path / "bad.csv"
    bad_number.write_text(
        "id,period_start,period_end,currency,total_assets\n"
        "a,2025-01-01,2025-12-31,NOK,1000\n"
        "b,2025-01-01,2025-12-31,NOK,lots\n"
    )
    refused = cli(env, "wash", str(bad_number))
    assert refused.returncode == 2
    assert "line 3: total_assets 'lots' is not a number" in refused.stderr
    assert refused.stdout == ""
    unknown_column = tmp_path / "unknown.csv"
    unknown_column.write_text("id,country,register_number,turnover\nx,NO,923609016,5\n")
    refused = cli(env, "wash", str(unknown_column))
    assert refused.returncode == 2 and "unknown columns: turnover" in refused.stderr
    bad_date = tmp_path / "date.csv"
    bad_date.write_text("period_start,period_end,currency,total_assets\n2025-13-01,,NOK,1\n")
    refused = cli(env, "wash", str(bad_date))
    assert refused.returncode == 2 and "line 2: period_start '2025-13-01'" in refused.stderr
