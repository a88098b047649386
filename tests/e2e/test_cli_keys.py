"""`creditwatch admin keys list|revoke`, run as an operator would, then gRPC with the keys."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import watchlists_pb2, watchlists_pb2_grpc
from tests.e2e.test_cli_admin import _cli


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    out: dict[str, str] = json.loads(result.stdout)
    return out


def _key_id(api_key: str) -> str:
    return api_key.split("_")[2]  # cw_<tenant id>_<key id>_<secret>


def _secret(api_key: str) -> str:
    return api_key.split("_", 3)[3]


async def _code(address: str, api_key: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await watchlists_pb2_grpc.WatchListServiceStub(channel).ListWatchLists(
                watchlists_pb2.ListWatchListsRequest(),
                metadata=(("authorization", f"Bearer {api_key}"),),
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_keys_list_shows_every_key_and_never_a_secret(database_url: str) -> None:
    tenant = _json(_cli(database_url, "admin", "create-tenant", "Listing Bank", "--json"))
    feed = _json(
        _cli(
            database_url,
            "admin",
            "create-api-key",
            "--tenant",
            tenant["tenant_id"],
            "--name",
            "bureau feed",
            "--scope",
            "companies:write",
            "--json",
        )
    )

    listed = _cli(database_url, "admin", "keys", "list", "--tenant", tenant["tenant_id"])
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "KEY",
        "ID",
        "NAME",
        "GRANTS",
        "CREATED",
        "(UTC)",
        "REVOKED",
        "(UTC)",
    ]
    first, second = lines[1:]
    assert first.startswith(_key_id(tenant["api_key"])) and "first key" in first
    assert first.rstrip().endswith("-")  # not revoked
    assert second.startswith(_key_id(feed["api_key"]))
    assert "bureau feed" in second and "companies:write" in second

    as_json = _cli(database_url, "admin", "keys", "list", "--tenant", tenant["tenant_id"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    keys = json.loads(as_json.stdout)
    assert [k["key_id"] for k in keys] == [_key_id(tenant["api_key"]), _key_id(feed["api_key"])]
    assert keys[1]["name"] == "bureau feed" and keys[1]["grants"] == ["companies:write"]
    assert keys[1]["prefix"] == feed["api_key"][: -len(_secret(feed["api_key"]))]
    assert all(k["revoke_time"] is None and k["create_time"] for k in keys)

    for output in (listed.stdout + listed.stderr, as_json.stdout + as_json.stderr):
        assert _secret(tenant["api_key"]) not in output
        assert _secret(feed["api_key"]) not in output


@pytest.mark.asyncio
async def test_keys_revoke_refuses_the_key_at_once_and_is_idempotent(
    database_url: str, server: ServerProcess
) -> None:
    tenant = _json(_cli(database_url, "admin", "create-tenant", "Revoking Bank", "--json"))
    other = _json(
        _cli(database_url, "admin", "create-api-key", "--tenant", tenant["tenant_id"], "--json")
    )
    key_id = _key_id(tenant["api_key"])
    assert await _code(server.address, tenant["api_key"]) == grpc.StatusCode.OK  # cached now

    revoked = await asyncio.to_thread(_cli, database_url, "admin", "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(
        f"revoked api key {key_id} of tenant {tenant['tenant_id']} at "
    )

    deadline = time.monotonic() + 5  # by NOTIFY; the cache alone kept it for 30 s
    while await _code(server.address, tenant["api_key"]) != grpc.StatusCode.UNAUTHENTICATED:
        assert time.monotonic() < deadline, "the server still accepts the revoked key"
        await asyncio.sleep(0.05)
    assert await _code(server.address, other["api_key"]) == grpc.StatusCode.OK

    again = await asyncio.to_thread(_cli, database_url, "admin", "keys", "revoke", key_id, "--json")
    assert again.returncode == 0, again.stderr
    outcome = json.loads(again.stdout)
    assert outcome["already_revoked"] is True and outcome["revoke_time"]
    # Named by the key's prefix, as the list's JSON shows it: still the same revocation.
    prefix = tenant["api_key"][: -len(_secret(tenant["api_key"]))]
    third = await asyncio.to_thread(_cli, database_url, "admin", "keys", "revoke", prefix)
    assert third.returncode == 0, third.stderr
    assert "was already revoked at" in third.stdout

    keys = json.loads(
        _cli(
            database_url, "admin", "keys", "list", "--tenant", tenant["tenant_id"], "--json"
        ).stdout
    )
    by_id = {k["key_id"]: k for k in keys}
    assert by_id[key_id]["revoke_time"] == outcome["revoke_time"]
    assert by_id[_key_id(other["api_key"])]["revoke_time"] is None


def test_unknown_keys_and_tenants_are_clear_errors(database_url: str) -> None:
    unknown = _cli(database_url, "admin", "keys", "revoke", "000000000000")
    assert unknown.returncode == 1
    assert "no API key 000000000000" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    malformed = _cli(database_url, "admin", "keys", "revoke", "not-a-key")
    assert malformed.returncode == 1
    assert "is not a key id" in malformed.stderr

    nobody = "00000000-0000-0000-0000-000000000000"
    listed = _cli(database_url, "admin", "keys", "list", "--tenant", nobody)
    assert listed.returncode == 1
    assert f"no tenant {nobody}" in listed.stderr
    assert "Traceback" not in listed.stderr
