"""A second server on a port in use fails to start, rather than share the port
with the first (gRPC's default SO_REUSEPORT would let the kernel spread
clients over both, each with its own database and keys)."""

from __future__ import annotations

import pytest

from creditwatch.client.testing import ServerProcess


def test_a_second_server_on_a_port_in_use_refuses_to_start(
    server: ServerProcess, database_url: str
) -> None:
    second = ServerProcess(
        database_url,
        env={"CREDITWATCH_PORT": str(server.port), "CREDITWATCH_JOBS_ENABLED": "false"},
    )
    with pytest.raises(RuntimeError) as refused:
        second.start()
    second.kill()
    assert f"could not bind 127.0.0.1:{server.port}" in str(refused.value)
