"""ActivateModel: a grant-protected switch that every replica follows."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_MODELS_ACTIVATE
from creditwatch.server.store import database, migrate
from creditwatch.server.store.tenants import TenantStore
from creditwatch.v1 import scoring_pb2, scoring_pb2_grpc
from tests.e2e.test_scoring import healthy

ROOT = Path(__file__).resolve().parent.parent.parent


def _second_model(folder: Path) -> str:
    """The shipped model under another version: a stand-in for a newly trained one."""
    manifest = json.loads((ROOT / "models" / "default-pd-v1.json").read_text())
    manifest["version"] = "pd-test-2"
    manifest["created"] = "2020-01-01"  # older: the shipped model stays the default
    (folder / "second.json").write_text(json.dumps(manifest))
    shutil.copy(ROOT / "models" / "default-pd-v1.onnx", folder / "second.onnx")
    return "pd-test-2"


async def _keys(url: str) -> tuple[str, str]:
    engine = database.create_engine(database.async_url(url), 1)
    try:
        store = TenantStore(database.session_factory(engine))
        tenant = await store.create_tenant("ops")
        plain = await store.create_api_key(tenant.id)
        admin = await store.create_api_key(tenant.id, scopes=(SCOPE_MODELS_ACTIVATE,))
        return plain.token, admin.token
    finally:
        await engine.dispose()


async def _version(address: str, key: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await scoring_pb2_grpc.ScoringServiceStub(channel).ScoreFinancials(
            scoring_pb2.ScoreFinancialsRequest(financial_statement=healthy()),
            metadata=(("authorization", f"Bearer {key}"),),
        )
    return reply.score.model_version


def test_activation_needs_the_grant_and_reaches_every_replica(
    fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    # Its own database: the activation must not leak into other tests' servers.
    url = fresh_database()
    migrate.upgrade(database.async_url(url))
    version = _second_model(tmp_path)
    plain, admin = asyncio.run(_keys(url))
    env = {"CREDITWATCH_MODEL_DIR": str(tmp_path), "CREDITWATCH_MODEL_REFRESH_SECONDS": "0.2"}
    asyncio.run(_activate_on_two_replicas(url, env, version, plain, admin))
    # A replica started later comes up on the activated version.
    with ServerProcess(url, env=env) as c:
        assert asyncio.run(_version(c.address, plain)) == version


async def _activate_on_two_replicas(
    url: str, env: dict[str, str], version: str, plain: str, admin: str
) -> None:
    with ServerProcess(url, env=env) as a, ServerProcess(url, env=env) as b:
        original = await _version(b.address, plain)
        assert original != version
        async with grpc.aio.insecure_channel(a.address) as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            request = scoring_pb2.ActivateModelRequest(name=f"models/{version}")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ActivateModel(request, metadata=(("authorization", f"Bearer {plain}"),))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            reply = await stub.ActivateModel(
                request, metadata=(("authorization", f"Bearer {admin}"),)
            )
            assert (reply.model.version, reply.model.active) == (version, True)
            assert reply.previous_version == original
            # Activating the active model again is a no-op: same activation.
            again = await stub.ActivateModel(
                request, metadata=(("authorization", f"Bearer {admin}"),)
            )
            assert again.previous_version == version
            assert again.model.activate_time == reply.model.activate_time
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ActivateModel(
                    scoring_pb2.ActivateModelRequest(name="models/missing"),
                    metadata=(("authorization", f"Bearer {admin}"),),
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert await _version(a.address, plain) == version
        deadline = time.monotonic() + 10
        while await _version(b.address, plain) != version:
            assert time.monotonic() < deadline, "replica B never followed the activation"
            await asyncio.sleep(0.1)
