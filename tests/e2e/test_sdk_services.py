"""SDK helpers for bulk work and the other services, against a real server."""

from __future__ import annotations

import io

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client import CreditwatchClient, entries_from_csv, score_item
from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import companies_pb2, companies_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import ref
from tests.e2e.test_scoring import distressed, healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


async def test_csv_import_stream_scoring_limits_and_portfolio(
    server: ServerProcess,
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    known, unknown, other = norwegian_numbers(3, start=85_800_000)
    feed = await new_tenant(sessions, "sdk services feed", scopes=(SCOPE_COMPANIES_WRITE,))
    await companies_pb2_grpc.CompanyDataServiceStub(channel).SubmitFinancialStatement(
        companies_pb2.SubmitFinancialStatementRequest(
            company=ref(known), financial_statement=healthy()
        ),
        metadata=feed.metadata,
    )
    sheet = io.StringIO(
        "country,register_number,exposure_amount,exposure_currency,external_reference\n"
        f"no,{known},250000,nok,a-1\nNO,{unknown},,,a-2\nNO,{other},1000.50,NOK,a-3\n"
    )
    rows = list(entries_from_csv(sheet))
    assert [line for line, _ in rows] == [2, 3, 4]
    with pytest.raises(ValueError, match="line 2: exposure_amount 'lots'"):
        list(entries_from_csv(io.StringIO("country,register_number,exposure_amount\nNO,1,lots\n")))

    async with CreditwatchClient(server.address, tenant.api_key) as client:
        watch_list = await client.watch_lists.create("SDK book")
        added = await client.watch_lists.add_entries(watch_list.name, [e for _, e in rows])
        assert added.added_count == 3

        results = [
            r
            async for r in client.scoring.score_many(
                [
                    score_item("k", company=("NO", known)),
                    score_item("u", company=("NO", unknown)),
                    score_item("s", financial_statement=distressed()),
                ],
                chunk_size=2,
            )
        ]
        assert [r.correlation_id for r in results] == ["k", "u", "s"]
        assert results[0].WhichOneof("result") == "score"
        assert results[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
        assert results[2].score.probability_of_default > results[0].score.probability_of_default

        decision = await client.limits.decide("NO", known, ("NOK", 10_000), 30)
        assert decision.credit_limit.startswith("creditLimits/")
        assert [x.name async for x in client.limits.list()] == [decision.credit_limit]
        summary = await client.portfolio.summary(watch_list.name, "NOK")
        assert (summary.entry_count, summary.scored_entry_count) == (3, 1)
        assert summary.total_exposure.units == 251_000
