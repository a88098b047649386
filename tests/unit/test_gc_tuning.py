"""The server's garbage-collector settings: the startup heap frozen, young collections rarer."""

from __future__ import annotations

import gc

from creditwatch.server.app import tune_garbage_collector


def test_the_startup_heap_is_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] > before[0]
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
