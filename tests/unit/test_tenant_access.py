"""Tenant read/write grants: every RPC classified, keys' implied grants, and the
RPC wrappers refusing a read-only key's writes before the handler runs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from creditwatch.server.api import access
from creditwatch.server.api.alerts import AlertServicer
from creditwatch.server.api.companies import CompanyDataServicer
from creditwatch.server.api.errors import bidi_stream, server_stream_writes, unary
from creditwatch.server.api.limits import CreditLimitServicer
from creditwatch.server.api.portfolio import PortfolioServicer
from creditwatch.server.api.scoring import ScoringServicer
from creditwatch.server.api.watchlists import WatchListServicer
from creditwatch.server.domain.errors import PermissionDenied
from creditwatch.server.domain.tenants import (
    SCOPE_COMPANIES_WRITE,
    SCOPE_MODELS_ACTIVATE,
    SCOPE_TENANT_READ,
    SCOPE_TENANT_WRITE,
    Caller,
    check_scopes,
    is_read_only,
)
from creditwatch.v1 import (
    alerts_pb2,
    companies_pb2,
    limits_pb2,
    portfolio_pb2,
    scoring_pb2,
    watchlists_pb2,
)

MODULES = (alerts_pb2, companies_pb2, limits_pb2, portfolio_pb2, scoring_pb2, watchlists_pb2)
SERVICERS = {
    "AlertService": AlertServicer,
    "CompanyDataService": CompanyDataServicer,
    "CreditLimitService": CreditLimitServicer,
    "PortfolioService": PortfolioServicer,
    "ScoringService": ScoringServicer,
    "WatchListService": WatchListServicer,
}


def _proto_rpcs() -> list[tuple[str, str]]:
    """(service, method) of every RPC in proto/creditwatch/v1."""
    return [
        (service.name, method.name)
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def test_every_rpc_of_the_protos_is_classified_once_and_nothing_else_is() -> None:
    rpcs = _proto_rpcs()
    names = [method for _, method in rpcs]
    # The table is keyed by bare method names: they must not repeat across services.
    assert len(names) == len(set(names))
    assert {service for service, _ in rpcs} == set(SERVICERS)
    assert not access.READS & access.WRITES
    assert set(names) - (access.READS | access.WRITES) == set(), "unclassified RPCs"
    assert (access.READS | access.WRITES) - set(names) == set(), "classified but not in a proto"


def test_every_rpc_handler_goes_through_a_checking_wrapper() -> None:
    for service, method in _proto_rpcs():
        handler = getattr(SERVICERS[service], method)
        # functools.wraps in `errors.unary`/`unary_as_caller`/the stream wrappers.
        assert hasattr(handler, "__wrapped__"), f"{service}.{method} is not wrapped"


@pytest.mark.parametrize(
    "rpc",
    [
        "CreateWatchList",
        "UpdateWatchList",
        "DeleteWatchList",
        "AddEntries",
        "RemoveEntries",
        "DecideCreditLimit",
        "ReportOverduePayment",
        "UpdateCreditPolicy",
        "ReportPaymentExperience",
        "SubmitFinancialStatement",
        "RecordEvents",
        "UpsertCompany",
        "ActivateModel",
    ],
)
def test_changing_rpcs_need_tenant_write(rpc: str) -> None:
    assert access.grant_needed(rpc) == SCOPE_TENANT_WRITE


@pytest.mark.parametrize(
    "rpc",
    [
        "ListWatchLists",
        "ListEntries",
        "SubscribeAlerts",
        "AcknowledgeAlerts",  # a consumer's bookmark: a read-only bridge must resume
        "ListAlerts",
        "ScoreCompany",
        "ScoreFinancials",
        "StreamScores",
        "GetPortfolioSummary",
        "GetCreditPolicy",
    ],
)
def test_reading_rpcs_need_tenant_read(rpc: str) -> None:
    assert access.grant_needed(rpc) == SCOPE_TENANT_READ


def test_an_unclassified_rpc_is_a_write() -> None:
    assert access.grant_needed("PurgeEverything") == SCOPE_TENANT_WRITE


def test_keys_without_tenant_grants_keep_full_access() -> None:
    tenant = uuid.uuid4()
    for scopes in ((), (SCOPE_COMPANIES_WRITE,), (SCOPE_MODELS_ACTIVATE,), (SCOPE_TENANT_WRITE,)):
        caller = Caller(tenant, frozenset(scopes))
        assert not caller.read_only
        caller.require(SCOPE_TENANT_READ)
        caller.require(SCOPE_TENANT_WRITE)
    both = Caller(tenant, frozenset({SCOPE_TENANT_READ, SCOPE_TENANT_WRITE}))
    both.require(SCOPE_TENANT_WRITE)


def test_a_read_only_key_reads_and_is_refused_writes_naming_the_grant() -> None:
    caller = Caller(uuid.uuid4(), frozenset({SCOPE_TENANT_READ}))
    assert caller.read_only
    caller.require(SCOPE_TENANT_READ)
    with pytest.raises(PermissionDenied) as refused:
        caller.require(SCOPE_TENANT_WRITE)
    assert "'tenant:write'" in refused.value.message
    assert "read-only" in refused.value.message
    # Other grants are still asked for as before, with the same wording.
    with pytest.raises(PermissionDenied) as other:
        Caller(uuid.uuid4()).require(SCOPE_MODELS_ACTIVATE)
    assert other.value.message == (
        "this API key lacks the 'models:activate' grant; ask the creditwatch operator"
    )


def test_new_key_grants_are_checked() -> None:
    assert check_scopes([SCOPE_TENANT_READ, SCOPE_TENANT_READ]) == (SCOPE_TENANT_READ,)
    assert check_scopes([SCOPE_COMPANIES_WRITE, SCOPE_TENANT_WRITE]) == (
        SCOPE_TENANT_WRITE,
        SCOPE_COMPANIES_WRITE,
    )
    with pytest.raises(ValueError, match="unknown scopes"):
        check_scopes(["tenant:admin"])
    for write_grant in (SCOPE_COMPANIES_WRITE, SCOPE_MODELS_ACTIVATE):
        with pytest.raises(ValueError, match="read-only key"):
            check_scopes([SCOPE_TENANT_READ, write_grant])
    # Read and write together is simply full access.
    assert not is_read_only(check_scopes([SCOPE_TENANT_READ, SCOPE_TENANT_WRITE]))


class _Aborted(Exception):
    pass


class _Context:
    """Enough of a grpc.aio.ServicerContext for the wrappers."""

    def __init__(self) -> None:
        self.status: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str, **_: Any) -> None:
        self.status = (code, message)
        raise _Aborted

    def add_done_callback(self, callback: Any) -> None:
        pass


class _Fake:
    """RPC handlers named like real RPCs (and one unknown), recording what ran."""

    def __init__(self, scopes: frozenset[str]) -> None:
        self.scopes = scopes
        self.ran: list[str] = []

    async def caller(self, context: Any) -> Caller:
        return Caller(uuid.UUID(int=7), self.scopes)

    @unary
    async def DeleteWatchList(self, request: object, tenant: uuid.UUID) -> str:
        self.ran.append("DeleteWatchList")
        return "deleted"

    @unary
    async def ListWatchLists(self, request: object, tenant: uuid.UUID) -> str:
        self.ran.append("ListWatchLists")
        return "listed"

    @unary
    async def PurgeEverything(self, request: object, tenant: uuid.UUID) -> str:
        self.ran.append("PurgeEverything")
        return "purged"

    @server_stream_writes
    async def SubscribeAlerts(self, request: object, tenant: uuid.UUID, context: Any) -> None:
        self.ran.append("SubscribeAlerts")

    @server_stream_writes
    async def FloodAlerts(self, request: object, tenant: uuid.UUID, context: Any) -> None:
        self.ran.append("FloodAlerts")

    @bidi_stream
    async def StreamScores(
        self, requests: AsyncIterator[object], tenant: uuid.UUID
    ) -> AsyncIterator[str]:
        self.ran.append("StreamScores")
        yield "score"

    @bidi_stream
    async def StreamDeletes(
        self, requests: AsyncIterator[object], tenant: uuid.UUID
    ) -> AsyncIterator[str]:
        self.ran.append("StreamDeletes")
        yield "deleted"


async def _no_requests() -> AsyncIterator[object]:
    return
    yield


async def _outcome(fake: _Fake, rpc: str) -> grpc.StatusCode:
    """OK, or the status the wrapper aborted the call with."""
    context = _Context()
    handler: Any = getattr(fake, rpc)
    try:
        if rpc.startswith("Stream"):
            async for _ in handler(_no_requests(), context):
                pass
        else:
            await handler(object(), context)
    except _Aborted:
        assert context.status is not None
        if context.status[0] == grpc.StatusCode.PERMISSION_DENIED:
            assert "'tenant:write'" in context.status[1]
        return context.status[0]
    return grpc.StatusCode.OK


@pytest.mark.asyncio
async def test_the_wrappers_refuse_a_read_only_keys_writes_before_the_handler_runs() -> None:
    reads = ["ListWatchLists", "SubscribeAlerts", "StreamScores"]
    # Named like no classified RPC: refused as writes (fail closed), in each wrapper.
    writes = ["DeleteWatchList", "PurgeEverything", "FloodAlerts", "StreamDeletes"]
    read_only = _Fake(frozenset({SCOPE_TENANT_READ}))
    for rpc in reads:
        assert await _outcome(read_only, rpc) == grpc.StatusCode.OK, rpc
    for rpc in writes:
        assert await _outcome(read_only, rpc) == grpc.StatusCode.PERMISSION_DENIED, rpc
    assert read_only.ran == reads

    legacy = _Fake(frozenset())
    for rpc in reads + writes:
        assert await _outcome(legacy, rpc) == grpc.StatusCode.OK, rpc
    assert legacy.ran == reads + writes
