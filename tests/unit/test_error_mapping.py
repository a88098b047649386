"""The one place errors become statuses: over a real loopback gRPC server."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from creditwatch.server.api.errors import unary
from creditwatch.server.domain.errors import InvalidArgument, NotFound
from creditwatch.server.domain.tenants import Caller
from creditwatch.v1 import watchlists_pb2, watchlists_pb2_grpc

pytestmark = pytest.mark.asyncio


class Failing(watchlists_pb2_grpc.WatchListServiceServicer):
    """Every caller is one tenant; each RPC fails in its own way."""

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        return Caller(uuid.UUID(int=1))

    @unary
    async def GetWatchList(
        self, request: watchlists_pb2.GetWatchListRequest, tenant: uuid.UUID
    ) -> watchlists_pb2.GetWatchListResponse:
        raise RuntimeError("password=hunter2 in a stack trace")

    @unary
    async def DeleteWatchList(
        self, request: watchlists_pb2.DeleteWatchListRequest, tenant: uuid.UUID
    ) -> watchlists_pb2.DeleteWatchListResponse:
        raise NotFound(request.name)

    @unary
    async def ListWatchLists(
        self, request: watchlists_pb2.ListWatchListsRequest, tenant: uuid.UUID
    ) -> watchlists_pb2.ListWatchListsResponse:
        raise InvalidArgument.single("page_size", "too big")


async def test_domain_errors_map_to_codes_and_unexpected_ones_hide_their_text() -> None:
    server = grpc.aio.server()
    watchlists_pb2_grpc.add_WatchListServiceServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetWatchList(watchlists_pb2.GetWatchListRequest(name="x"))
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            details = caught.value.details() or ""
            assert "quote reference" in details
            assert "hunter2" not in details and "RuntimeError" not in details

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.DeleteWatchList(
                    watchlists_pb2.DeleteWatchListRequest(name="watchLists/1")
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListWatchLists(watchlists_pb2.ListWatchListsRequest())
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
            assert status is not None and status.details
    finally:
        await server.stop(None)
