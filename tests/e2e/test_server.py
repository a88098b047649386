"""The server as an operator sees it: health, reflection,
graceful shutdown, and the embedded PostgreSQL of a newcomer's first run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import (
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.conftest import TenantKey

SIX_SERVICES = {
    "creditwatch.v1.WatchListService",
    "creditwatch.v1.ScoringService",
    "creditwatch.v1.CompanyDataService",
    "creditwatch.v1.AlertService",
    "creditwatch.v1.CreditLimitService",
    "creditwatch.v1.PortfolioService",
}


def _list_services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        reply = next(iter(replies))
        return {s.name for s in reply.list_services_response.service}


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            .status
        )


def test_health_serving_and_reflection_lists_all_six_services(server: ServerProcess) -> None:
    assert _health(server.address) == health_pb2.HealthCheckResponse.SERVING
    assert (
        _health(server.address, "creditwatch.v1.WatchListService")
        == health_pb2.HealthCheckResponse.SERVING
    )
    services = _list_services(server.address)
    assert services >= SIX_SERVICES | {"grpc.health.v1.Health"}


def test_reflection_serves_file_descriptors_without_protos(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="creditwatch.v1.WatchListService"
                    )
                ]
            )
        )
        reply = next(iter(replies))
    assert reply.file_descriptor_response.file_descriptor_proto


@pytest.mark.asyncio
async def test_sigterm_lets_an_in_flight_call_finish_and_exits_cleanly(
    database_url: str, tenant: TenantKey
) -> None:
    from google.type import money_pb2

    from creditwatch.v1 import common_pb2
    from tests.identifiers import norwegian_numbers

    entries = [
        watchlists_pb2.WatchListEntry(
            company=common_pb2.CompanyRef(country="NO", register_number=n),
            exposure=money_pb2.Money(currency_code="NOK", units=1),
        )
        for n in norwegian_numbers(10_000, start=93_000_000)
    ]
    with ServerProcess(database_url) as process:
        async with grpc.aio.insecure_channel(process.address) as chan:
            stub = watchlists_pb2_grpc.WatchListServiceStub(chan)
            created = await stub.CreateWatchList(
                watchlists_pb2.CreateWatchListRequest(
                    watch_list=watchlists_pb2.WatchList(display_name="shutdown")
                ),
                metadata=tenant.metadata,
            )
            big = stub.AddEntries(
                watchlists_pb2.AddEntriesRequest(parent=created.watch_list.name, entries=entries),
                metadata=tenant.metadata,
            )
            await asyncio.sleep(0.1)  # the request is on the server and being written
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
            response = await big
        assert response.added_count == 10_000
        assert process.process.wait(timeout=30) == 0
        log = process.log_text()
        assert "shutting down" in log and "stopped" in log
    with ServerProcess(database_url) as again:
        async with grpc.aio.insecure_channel(again.address) as chan:
            stub = watchlists_pb2_grpc.WatchListServiceStub(chan)
            got = await stub.GetWatchList(
                watchlists_pb2.GetWatchListRequest(name=created.watch_list.name),
                metadata=tenant.metadata,
            )
    assert got.watch_list.entry_count == 10_000


def test_without_database_url_an_embedded_postgres_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = tmp_path / "data"
    with ServerProcess(
        None, env={"CREDITWATCH_DATA_DIR": str(data_dir)}, startup_timeout=120
    ) as process:
        assert _health(process.address) == health_pb2.HealthCheckResponse.SERVING
        log = process.log_text()
        assert "embedded PostgreSQL running" in log
        assert str(data_dir) in log
        assert (data_dir / "pgdata" / "PG_VERSION").exists()


def test_sigterm_while_starting_stops_the_embedded_postgres_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    data_dir = tmp_path / "data"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "CREDITWATCH_DATA_DIR": str(data_dir), "CREDITWATCH_PORT": "0"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "creditwatch.server", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    # PostgreSQL runs; the server is still migrating and loading its model.
    while "embedded PostgreSQL running" not in log_path.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    lock = data_dir / "pgdata" / "postmaster.pid"
    stopped = time.monotonic() + 15
    try:
        while lock.exists():  # a PostgreSQL left running keeps its lock file
            assert time.monotonic() < stopped, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
    finally:
        if lock.exists():  # stop what the failure left running
            os.kill(int(lock.read_text().split()[0]), signal.SIGQUIT)


def test_a_server_process_leaves_no_folder_behind(database_url: str) -> None:
    with ServerProcess(database_url) as process:
        folder = process.log_path.parent
        assert (folder / "port").exists()
    assert not folder.exists()
