"""Cached ScoreCompany look-ups follow score changes made on another replica."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import (
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)
from tests.conftest import TenantKey, new_tenant
from tests.e2e.test_scoring import distressed, healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


async def _class_on(address: str, key: TenantKey, ref: common_pb2.CompanyRef) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await scoring_pb2_grpc.ScoringServiceStub(channel).ScoreCompany(
            scoring_pb2.ScoreCompanyRequest(company=ref), metadata=key.metadata
        )
    return reply.score.risk_class


async def test_replica_b_sees_a_rescore_written_through_replica_a(
    database_url: str,
    server: ServerProcess,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    feed = await new_tenant(sessions, "feed", scopes=(SCOPE_COMPANIES_WRITE,))
    ref = common_pb2.CompanyRef(
        country="NO", register_number=norwegian_numbers(1, start=97_400_000)[0]
    )
    with ServerProcess(database_url) as other:
        async with grpc.aio.insecure_channel(server.address) as channel:
            data = companies_pb2_grpc.CompanyDataServiceStub(channel)
            await data.SubmitFinancialStatement(
                companies_pb2.SubmitFinancialStatementRequest(
                    company=ref, financial_statement=healthy()
                ),
                metadata=feed.metadata,
            )
            first = await _class_on(other.address, tenant, ref)
            assert first < 4
            assert await _class_on(other.address, tenant, ref) == first  # now cached on B
            await data.SubmitFinancialStatement(
                companies_pb2.SubmitFinancialStatementRequest(
                    company=ref, financial_statement=distressed()
                ),
                metadata=feed.metadata,
            )
        deadline = time.monotonic() + 5
        while await _class_on(other.address, tenant, ref) != 4:
            assert time.monotonic() < deadline, "replica B kept serving the stale cached score"
            await asyncio.sleep(0.05)
        assert await _class_on(server.address, tenant, ref) == 4
