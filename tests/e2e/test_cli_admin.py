"""Operator commands, run as a user would: `creditwatch admin ...` then gRPC with the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import watchlists_pb2, watchlists_pb2_grpc


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditwatch.server", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.asyncio
async def test_created_tenant_and_keys_authenticate_and_stay_apart(
    database_url: str, server: ServerProcess
) -> None:
    created = _cli(database_url, "admin", "create-tenant", "Fjord Bank", "--json")
    assert created.returncode == 0, created.stderr
    tenant = json.loads(created.stdout)
    assert tenant["display_name"] == "Fjord Bank"
    second = _cli(
        database_url, "admin", "create-api-key", "--tenant", tenant["tenant_id"], "--json"
    )
    assert second.returncode == 0, second.stderr
    second_key = json.loads(second.stdout)["api_key"]
    assert second_key != tenant["api_key"]

    other = json.loads(_cli(database_url, "admin", "create-tenant", "Other", "--json").stdout)

    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
        made = await stub.CreateWatchList(
            watchlists_pb2.CreateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(display_name="via cli key")
            ),
            metadata=(("authorization", f"Bearer {tenant['api_key']}"),),
        )
        # The tenant's second key sees the same watch list; another tenant does not.
        seen = await stub.GetWatchList(
            watchlists_pb2.GetWatchListRequest(name=made.watch_list.name),
            metadata=(("authorization", f"Bearer {second_key}"),),
        )
        assert seen.watch_list.display_name == "via cli key"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetWatchList(
                watchlists_pb2.GetWatchListRequest(name=made.watch_list.name),
                metadata=(("authorization", f"Bearer {other['api_key']}"),),
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_create_api_key_for_unknown_tenant_is_a_clear_error(database_url: str) -> None:
    result = _cli(
        database_url, "admin", "create-api-key", "--tenant", "00000000-0000-0000-0000-000000000000"
    )
    assert result.returncode == 1
    assert "no tenant 00000000-0000-0000-0000-000000000000" in result.stderr
    assert "Traceback" not in result.stderr

    result = _cli(database_url, "admin", "create-api-key", "--tenant", "not-a-uuid")
    assert result.returncode == 1
    assert "is not a UUID" in result.stderr


def test_db_upgrade_is_idempotent(database_url: str) -> None:
    result = _cli(database_url, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "database at head" in result.stdout


def test_admin_commands_migrate_only_as_a_server_would(fresh_database: object) -> None:
    from creditwatch.server.store import database, migrate

    url: str = fresh_database()  # type: ignore[operator]
    migrate.upgrade(database.async_url(url), "0021")

    def revision() -> str | None:
        import asyncio

        return asyncio.run(migrate.current_revision(database.async_url(url)))

    # Migrations kept for a maintenance window: an admin command of the new
    # release neither runs them nor runs against the old schema.
    held = subprocess.run(
        [sys.executable, "-m", "creditwatch.server", "admin", "create-tenant", "Held"],
        env={**os.environ, "DATABASE_URL": url, "CREDITWATCH_MIGRATE_ON_START": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert held.returncode == 1
    assert "creditwatch db upgrade" in held.stderr and "0021" in held.stderr
    assert "Traceback" not in held.stderr
    assert revision() == "0021"
    # By default it migrates, as a server does at start-up.
    created = _cli(url, "admin", "create-tenant", "Migrated", "--json")
    assert created.returncode == 0, created.stderr
    assert revision() != "0021"
