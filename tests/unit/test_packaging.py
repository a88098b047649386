"""Packaging: every package folder is shipped, generated code matches proto/."""

from __future__ import annotations

import filecmp
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
