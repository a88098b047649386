"""Crafted page tokens over the wire: INVALID_ARGUMENT on `page_token`, never
INTERNAL, and nothing in the server's log (a token of 200,000 nested `[` used
to raise RecursionError: INTERNAL and a traceback)."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    limits_pb2,
    limits_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e.alerting import record, remark, watch
from tests.e2e.rpc_errors import field_violations
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


TOKENS = {
    "200,000 nested [": _b64("[" * 200_000),
    "nested key in a token's body": _b64('{"v": 1, "k": ' + "[" * 5_000 + ', "f": "x"}'),
    "100 KB of base64": "A" * 100_000,
    "nested as deep as the cap allows": _b64("[" * 700 + "]" * 60),
}

Listing = Callable[[grpc.aio.Channel, str, TenantKey], Awaitable[Any]]
LISTINGS: dict[str, Listing] = {
    "ListAlerts": lambda channel, token, tenant: alerts_pb2_grpc.AlertServiceStub(
        channel
    ).ListAlerts(alerts_pb2.ListAlertsRequest(page_token=token), metadata=tenant.metadata),
    "ListWatchLists": lambda channel, token, tenant: watchlists_pb2_grpc.WatchListServiceStub(
        channel
    ).ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(page_token=token), metadata=tenant.metadata
    ),
    "ListCreditLimits": lambda channel, token, tenant: limits_pb2_grpc.CreditLimitServiceStub(
        channel
    ).ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(page_token=token), metadata=tenant.metadata
    ),
    "ListModels": lambda channel, token, tenant: scoring_pb2_grpc.ScoringServiceStub(
        channel
    ).ListModels(scoring_pb2.ListModelsRequest(page_token=token), metadata=tenant.metadata),
}


@pytest.mark.parametrize("listing", LISTINGS)
@pytest.mark.parametrize("token", TOKENS)
async def test_a_crafted_page_token_is_invalid_argument_on_page_token(
    channel: grpc.aio.Channel, server: ServerProcess, tenant: TenantKey, listing: str, token: str
) -> None:
    logged = len(server.log_text())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await LISTINGS[listing](channel, TOKENS[token], tenant)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(caught.value)
    assert "Traceback" not in server.log_text()[logged:]


async def test_a_genuine_alerts_token_with_its_time_pushed_out_of_range_is_refused(
    channel: grpc.aio.Channel, server: ServerProcess, tenant: TenantKey, feed: TenantKey
) -> None:
    """A client that decodes a real ListAlerts token and writes a create time
    at the edge of the range (year 1, UTC+14: before year 1 in UTC) into it:
    INVALID_ARGUMENT, not the INTERNAL of the driver's failed conversion."""
    numbers = norwegian_numbers(2, start=89_500_000)
    await watch(channel, tenant, numbers)
    await record(channel, feed, *(remark(n, f"tok-{n}") for n in numbers))
    stub = alerts_pb2_grpc.AlertServiceStub(channel)
    first = await stub.ListAlerts(
        alerts_pb2.ListAlertsRequest(page_size=1), metadata=tenant.metadata
    )
    assert first.next_page_token
    padded = first.next_page_token + "=" * (-len(first.next_page_token) % 4)
    body = json.loads(base64.urlsafe_b64decode(padded))
    body["k"][0] = "0001-01-01T00:00:00+14:00"
    logged = len(server.log_text())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListAlerts(
            alerts_pb2.ListAlertsRequest(page_size=1, page_token=_b64(json.dumps(body))),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(caught.value)
    assert "Traceback" not in server.log_text()[logged:]
