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
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE, SCOPE_MODELS_ACTIVATE
from creditwatch.server.store import database, migrate
from creditwatch.server.store.tenants import TenantStore
from creditwatch.v1 import (
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

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
            # Without the grant, nothing about the request is told, not even
            # that its name is malformed.
            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await stub.ActivateModel(
                    scoring_pb2.ActivateModelRequest(name="not a model"),
                    metadata=(("authorization", f"Bearer {plain}"),),
                )
            assert malformed.value.code() == grpc.StatusCode.PERMISSION_DENIED
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


async def _feed_key(url: str) -> str:
    engine = database.create_engine(database.async_url(url), 1)
    try:
        store = TenantStore(database.session_factory(engine))
        tenant = await store.create_tenant("register feed")
        return (await store.create_api_key(tenant.id, scopes=(SCOPE_COMPANIES_WRITE,))).token
    finally:
        await engine.dispose()


async def _score_company(address: str, key: str, number: str) -> scoring_pb2.ScoreCompanyResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        reply: scoring_pb2.ScoreCompanyResponse = await scoring_pb2_grpc.ScoringServiceStub(
            channel
        ).ScoreCompany(
            scoring_pb2.ScoreCompanyRequest(
                company=common_pb2.CompanyRef(country="NO", register_number=number)
            ),
            metadata=(("authorization", f"Bearer {key}"),),
        )
    return reply


def test_a_score_from_another_model_is_replaced_when_read_on_a_replica_in_step(
    fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    """An unwatched company (no re-score job reaches it) gets the activated
    model's score when it is read; a replica without that model serves what
    is stored rather than replace it with its own model's."""
    url = fresh_database()
    migrate.upgrade(database.async_url(url))
    version = _second_model(tmp_path)
    plain, admin = asyncio.run(_keys(url))
    feed = asyncio.run(_feed_key(url))
    number = norwegian_numbers(1, start=99_950_000)[0]
    env = {"CREDITWATCH_MODEL_DIR": str(tmp_path), "CREDITWATCH_MODEL_REFRESH_SECONDS": "0.2"}

    async def scenario() -> None:
        with ServerProcess(url, env=env) as a, ServerProcess(url) as lacking:
            async with grpc.aio.insecure_channel(a.address) as channel:
                await companies_pb2_grpc.CompanyDataServiceStub(channel).SubmitFinancialStatement(
                    companies_pb2.SubmitFinancialStatementRequest(
                        company=common_pb2.CompanyRef(country="NO", register_number=number),
                        financial_statement=healthy(),
                    ),
                    metadata=(("authorization", f"Bearer {feed}"),),
                )
                original = (await _score_company(a.address, plain, number)).score.model_version
                assert original != version
                await scoring_pb2_grpc.ScoringServiceStub(channel).ActivateModel(
                    scoring_pb2.ActivateModelRequest(name=f"models/{version}"),
                    metadata=(("authorization", f"Bearer {admin}"),),
                )
            replaced = await _score_company(a.address, plain, number)
            assert (replaced.score.model_version, replaced.computed) == (version, True)
            again = await _score_company(a.address, plain, number)
            assert (again.score.model_version, again.computed) == (version, False)
            # The replica without the model keeps serving the stored score.
            deadline = time.monotonic() + 10
            while True:
                served = await _score_company(lacking.address, plain, number)
                assert served.score.model_version in (original, version)
                if served.score.model_version == version:
                    break
                assert time.monotonic() < deadline, "the stored score never reached replica B"
                await asyncio.sleep(0.2)
            assert not served.computed
            await asyncio.sleep(1.0)  # past B's model refresh: it knows it lacks the model
            served = await _score_company(lacking.address, plain, number)
            assert (served.score.model_version, served.computed) == (version, False)

    asyncio.run(scenario())
