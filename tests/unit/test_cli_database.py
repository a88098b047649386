"""Commands that talk to the server's database directly (admin, demo,
registers) use the server's: they do not make an empty one of their own when
run from another folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from creditwatch.server.cli import main


@pytest.mark.parametrize(
    "args",
    [["admin", "create-tenant", "Demo Bank"], ["demo", "--changes", "0"], ["registers", "sync"]],
    ids=["admin", "demo", "registers"],
)
def test_a_command_run_where_no_server_made_a_database_says_so_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    folder = tmp_path / "elsewhere" / ".creditwatch"
    result = CliRunner().invoke(main, args, env={"CREDITWATCH_DATA_DIR": str(folder)})
    assert result.exit_code == 1, result.output
    assert f"no creditwatch database in {folder}" in result.output
    assert not (folder / "pgdata").exists()
