"""ScoreCompany on a replica that keeps another model version's scores stays a
cache lookup: whether to replace that version is asked once, not per call."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.intake import Intake
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import facts
from creditwatch.server.store.activations import ActivationStore
from creditwatch.server.store.score_cache import ScoreCache
from tests.integration.test_jobs import _watched
from tests.integration.test_score_cache import _until


@pytest.mark.asyncio
async def test_a_replica_pinned_to_an_older_model_reads_a_newer_score_from_its_cache(
    own_database: tuple[str, async_sessionmaker[AsyncSession]],
    registry: ModelRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, sessions = own_database
    newest, older, *_ = registry.all()
    new_replica = ModelRegistry(registry.all(), newest.version)
    pinned = ModelRegistry(registry.all(), older.version)  # CREDITWATCH_MODEL_VERSION=older
    _, companies = await _watched(sessions, new_replica, 99_470_000, 1)  # scored by newest
    counts = {"latest_score": 0, "activations": 0}
    real_latest, real_current = facts.latest_score, ActivationStore.current

    async def latest(*args, **kwargs):  # type: ignore[no-untyped-def]
        counts["latest_score"] += 1
        return await real_latest(*args, **kwargs)

    async def current(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        counts["activations"] += 1
        return await real_current(self, *args, **kwargs)

    monkeypatch.setattr(facts, "latest_score", latest)
    monkeypatch.setattr(ActivationStore, "current", current)
    cache = ScoreCache(url)
    cache.start()
    try:
        await _until(lambda: cache.live)
        intake = Intake(sessions, pinned, cache)
        for _ in range(100):
            score, computed = await intake.score_company(companies[0])
            assert score.model_version == newest.version and not computed
        # A newer model's score is kept (no activation says otherwise), and asked about once.
        assert counts == {"latest_score": 1, "activations": 1}
        # Its own model activated, this replica replaces the score at once,
        # not once the memo runs out.
        when = await ActivationStore(sessions).record(older.version, None)
        pinned.activate(older.version, when)
        score, computed = await intake.score_company(companies[0])
        assert (score.model_version, computed) == (older.version, True)
    finally:
        await cache.stop()
