"""ListModels pages as scoring.proto says: page_size 0 means 100."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from creditwatch.server.api.scoring import ScoringServicer
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.v1 import scoring_pb2

pytestmark = pytest.mark.asyncio


class _ManyModels:
    """A registry of 150 loaded models (the shipped one, over and over)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.active = registry.active
        self.activated_at = None
        self._all = [registry.active] * 150

    def all(self) -> list[object]:
        return self._all


async def test_page_size_zero_means_100() -> None:
    with ThreadPoolExecutor(1) as executor:
        registry = ModelRegistry.load(executor, OverridePolicy())
        servicer = ScoringServicer(None, _ManyModels(registry), None, None)  # type: ignore[arg-type]
        listing = ScoringServicer.ListModels.__wrapped__  # type: ignore[attr-defined]
        first = await listing(servicer, scoring_pb2.ListModelsRequest(), uuid.uuid4())
        assert len(first.models) == 100
        rest = await listing(
            servicer,
            scoring_pb2.ListModelsRequest(page_token=first.next_page_token),
            uuid.uuid4(),
        )
        assert len(rest.models) == 50 and not rest.next_page_token
