"""`creditwatch admin create-api-key --read-only`, run as an operator would: the
key lists as read-only, reads over gRPC and is refused writes."""

from __future__ import annotations

import json

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import watchlists_pb2, watchlists_pb2_grpc
from tests.e2e.test_cli_admin import _cli


@pytest.mark.asyncio
async def test_a_read_only_key_from_the_cli_lists_as_such_reads_and_cannot_write(
    database_url: str, server: ServerProcess
) -> None:
    made = _cli(database_url, "admin", "create-tenant", "Dashboard Bank", "--json")
    assert made.returncode == 0, made.stderr
    tenant = json.loads(made.stdout)
    created = _cli(
        database_url,
        "admin",
        "create-api-key",
        "--tenant",
        tenant["tenant_id"],
        "--name",
        "dashboard",
        "--read-only",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["grants"] == ["tenant:read"] and key["read_only"] is True
    same = _cli(
        database_url,
        "admin",
        "create-api-key",
        "--tenant",
        tenant["tenant_id"],
        "--scope",
        "tenant:read",
    )
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("api key cw_") and "read-only" in same.stderr

    listed = _cli(database_url, "admin", "keys", "list", "--tenant", tenant["tenant_id"])
    assert listed.returncode == 0, listed.stderr
    first, dashboard, second = listed.stdout.splitlines()[1:]
    assert "read-only" not in first  # the first key keeps full access
    assert "dashboard" in dashboard and "tenant:read (read-only)" in dashboard
    assert "tenant:read (read-only)" in second
    as_json = _cli(database_url, "admin", "keys", "list", "--tenant", tenant["tenant_id"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [k["read_only"] for k in json.loads(as_json.stdout)] == [False, True, True]

    metadata = (("authorization", f"Bearer {key['api_key']}"),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
        await stub.ListWatchLists(watchlists_pb2.ListWatchListsRequest(), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateWatchList(
                watchlists_pb2.CreateWatchListRequest(
                    watch_list=watchlists_pb2.WatchList(display_name="not allowed")
                ),
                metadata=metadata,
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'tenant:write'" in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--scope", "companies:write"), "cannot use 'companies:write'"),
        (("--scope", "models:activate"), "cannot use 'models:activate'"),
        (("--scope", "tenant:write"), "contradict"),
    ],
)
def test_a_read_only_key_cannot_carry_write_grants(
    database_url: str, extra: tuple[str, ...], message: str
) -> None:
    made = _cli(database_url, "admin", "create-tenant", "Strict Bank", "--no-key", "--json")
    assert made.returncode == 0, made.stderr
    tenant_id = json.loads(made.stdout)["tenant_id"]
    refused = _cli(
        database_url, "admin", "create-api-key", "--tenant", tenant_id, "--read-only", *extra
    )
    assert refused.returncode == 1
    assert message in refused.stderr and "Traceback" not in refused.stderr
    listed = _cli(database_url, "admin", "keys", "list", "--tenant", tenant_id, "--json")
    assert json.loads(listed.stdout) == []  # nothing was created
