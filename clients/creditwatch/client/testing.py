"""Start a real creditwatch server for tests — ours and integrators'.

    with ServerProcess(database_url="postgresql://postgres@127.0.0.1/test") as server:
        channel = grpc.insecure_channel(server.address)

The server runs as a child process (`python -m creditwatch.server serve`) on a
free port chosen by the OS, so tests can run in parallel.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType


class ServerProcess:
    """A creditwatch server in a child process, bound to a free loopback port."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        log_path: Path | None = None,
    ) -> None:
        self._database_url = database_url
        self._extra_env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="creditwatch-test-"))
        self.log_path = log_path or self._dir / "server.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """`127.0.0.1:<port>` once started."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start the server and wait until it serves."""
        port_file = self._dir / "port"
        port_file.unlink(missing_ok=True)
        env = {**os.environ, **self._extra_env}
        env.update(
            CREDITWATCH_HOST="127.0.0.1",
            CREDITWATCH_PORT=env.get("CREDITWATCH_PORT", "0") if self.port == 0 else str(self.port),
            CREDITWATCH_PORT_FILE=str(port_file),
            CREDITWATCH_DATA_DIR=env.get("CREDITWATCH_DATA_DIR", str(self._dir / "data")),
        )
        if self._database_url is not None:
            env["DATABASE_URL"] = self._database_url
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        self.process = subprocess.Popen(
            [sys.executable, "-m", "creditwatch.server", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + self._startup_timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"creditwatch exited with {self.process.returncode}:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"creditwatch did not start:\n{self.log_text()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def log_text(self) -> str:
        """Everything the server logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"creditwatch did not stop within {timeout:g} s of SIGTERM; its log ends:\n"
                + self.log_text()[-4000:]
            ) from None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            # Its folder (port file, log, and without a database URL the
            # embedded PostgreSQL's data, tens of MB) goes with it; kept when
            # the block failed, for its log.
            shutil.rmtree(self._dir, ignore_errors=True)
