"""The command line's files: an export that fails leaves the file it would
replace as it was, and a failed import says what it may have written."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from creditwatch.client import CreditwatchError, entry
from creditwatch.client.cli import _csv_output, _import_failure_note


def test_a_failed_export_leaves_the_old_file_and_no_part(tmp_path: Path) -> None:
    target = tmp_path / "book.csv"
    target.write_text("the last good export\n")
    with pytest.raises(RuntimeError), _csv_output(target) as handle:
        handle.write("country,register_number\nNO,9236")
        raise RuntimeError("the connection went")
    assert target.read_text() == "the last good export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["book.csv"]
    with _csv_output(target) as handle:
        handle.write("country,register_number\n")
    assert target.read_text() == "country,register_number\n"
    assert [p.name for p in tmp_path.iterdir()] == ["book.csv"]


def test_an_export_keeps_the_file_s_mode_and_writes_through_what_is_no_plain_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "book.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    with _csv_output(target) as handle:
        handle.write("new\n")
    assert target.stat().st_mode & 0o777 == 0o640
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    with _csv_output(link) as handle:
        handle.write("through the link\n")
    assert link.is_symlink() and target.read_text() == "through the link\n"
    with _csv_output(Path(os.devnull)) as handle:  # a device stays one
        handle.write("gone\n")
    assert not Path(os.devnull).is_file()


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "line 4 on were not"),
        (grpc.StatusCode.PERMISSION_DENIED, "line 4 on were not"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "lines 4 to 5 may or may not have been imported"),
        (grpc.StatusCode.UNAVAILABLE, "lines 4 to 5 may or may not have been imported"),
    ],
)
def test_a_failed_chunk_is_said_to_be_unwritten_only_when_it_was_refused(
    code: grpc.StatusCode, said: str
) -> None:
    rows = [(line, entry("NO", "923609016")) for line in (2, 3, 4, 5)]
    error = CreditwatchError(code, "failed")
    _import_failure_note(error, rows, 2, rows[2:])
    notes = " ".join(error.__notes__)
    assert "CSV lines 2 to 3 (2 entries) were imported before this" in notes
    assert said in notes
