"""Packaging: every package folder is shipped, generated code matches proto/."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _declared_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared() -> None:
    found = set()
    for base, prefix in (
        (ROOT / "server" / "creditwatch" / "server", "creditwatch.server"),
        (ROOT / "clients" / "creditwatch" / "client", "creditwatch.client"),
        (ROOT / "clients" / "creditwatch" / "v1", "creditwatch.v1"),
        (ROOT / "migrations", "creditwatch.migrations"),
        (ROOT / "models", "creditwatch.models"),
    ):
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base)
            found.add(".".join([prefix, *relative.parts]))
    assert found == _declared_packages()


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "creditwatch" / "v1"
    committed = ROOT / "clients" / "creditwatch" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"run `make proto`: stale {mismatch + errors}"


@pytest.mark.timeout(300)
def test_wheel_ships_generated_code_migrations_and_model(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("creditwatch-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "creditwatch/v1/watchlists_pb2.py" in names
    assert "creditwatch/v1/watchlists_pb2.pyi" in names
    assert "creditwatch/server/app.py" in names
    assert "creditwatch/migrations/env.py" in names
    assert "creditwatch/migrations/script.py.mako" in names
    assert any(n.startswith("creditwatch/migrations/versions/0001") for n in names)
    assert any(n.startswith("creditwatch/models/") and n.endswith(".onnx") for n in names)
    assert any(n.startswith("creditwatch/models/") and n.endswith(".json") for n in names)
    assert not any(n.startswith(("server/", "clients/", "tests/")) for n in names)


def test_api_reference_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "api.md"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_api_docs.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_text() == (ROOT / "docs" / "api.md").read_text(), "run `make proto`"


def test_the_command_turns_grpc_fork_support_off_before_grpc_loads() -> None:
    """The server forks pg_ctl for its embedded PostgreSQL while gRPC runs; the
    `creditwatch` command sets GRPC_ENABLE_FORK_SUPPORT=false before anything
    imports grpc (which reads it once), and leaves a caller's own choice alone."""
    # What the variable was when grpc was first imported, and after.
    check = """
import os, sys
class Watch:
    seen = "grpc not imported"
    def find_spec(self, name, path=None, target=None):
        if name == "grpc" and Watch.seen == "grpc not imported":
            Watch.seen = str(os.environ.get("GRPC_ENABLE_FORK_SUPPORT"))
sys.meta_path.insert(0, Watch())
import creditwatch.server.cli
import grpc
print(Watch.seen, os.environ["GRPC_ENABLE_FORK_SUPPORT"])
"""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    ran = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert ran.stdout.split() == ["false", "false"], ran.stderr
    env["GRPC_ENABLE_FORK_SUPPORT"] = "true"
    ran = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert ran.stdout.split() == ["true", "true"], ran.stderr
