"""The embedded PostgreSQL's data folder: a path it cannot use is refused with
a plain message, and a lock file whose PID another process has taken since a
crash is removed (not taken for a running PostgreSQL, whose process would be
killed at exit)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from creditwatch.server.cli import main
from creditwatch.server.store import database


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    # Once it is `sleep`: in the middle of its exec its command line reads
    # empty, which the check takes for a process it cannot judge (a loaded
    # machine caught it there).
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while cmdline.exists() and not cmdline.read_bytes().startswith(b"sleep"):
        assert time.monotonic() < deadline, "sleep never started"
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def _lock_file(folder: Path, pid: int, started: float | None = None) -> Path:
    """A PostgreSQL lock file (PID, data folder, start time, port); by default
    written by a PostgreSQL that started an hour ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "postmaster.pid"
    when = int(started if started is not None else time.time() - 3600)
    path.write_text(f"{pid}\n{folder}\n{when}\n5432\n")
    return path


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_a_lock_file_naming_another_process_is_removed_and_others_are_kept(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    stale = _lock_file(tmp_path / "a", sleeper.pid)
    database._drop_stale_pid_file(stale)
    assert not stale.exists()
    # A process older than the PostgreSQL that wrote the file (a PID of
    # another PID namespace, a kernel thread) may be that PostgreSQL: kept.
    older = _lock_file(tmp_path / "d", sleeper.pid, started=time.time() + 3600)
    database._drop_stale_pid_file(older)
    assert older.exists()
    # A PostgreSQL's (by its command line) is PostgreSQL's to judge; so is a
    # dead process's.
    postgres = subprocess.Popen(["bash", "-c", "exec -a postgres sleep 60"])
    cmdline = Path(f"/proc/{postgres.pid}/cmdline")
    while not cmdline.read_bytes().startswith(b"postgres"):  # bash has not exec'ed yet
        time.sleep(0.01)
    try:
        live = _lock_file(tmp_path / "b", postgres.pid)
        database._drop_stale_pid_file(live)
        assert live.exists()
    finally:
        postgres.kill()
        postgres.wait()
    dead = _lock_file(tmp_path / "c", postgres.pid)
    database._drop_stale_pid_file(dead)
    assert dead.exists()


def test_a_data_folder_with_a_space_is_refused_in_plain_words(tmp_path: Path) -> None:
    folder = tmp_path / "My Projects" / ".creditwatch"
    with pytest.raises(database.DataDirUnusable, match="holds a space"):
        database.start_embedded(folder)
    assert not folder.exists()
    result = CliRunner().invoke(
        main, ["serve"], env={"CREDITWATCH_DATA_DIR": str(folder), "DATABASE_URL": ""}
    )
    assert result.exit_code == 1 and "CREDITWATCH_DATA_DIR" in result.output, result.output
    assert "Traceback" not in result.output
