"""The model registry: every shipped or configured model, and which one is active.

Models are loaded at start-up from the packaged `creditwatch.models` folder and
an optional extra folder. Activation is kept in PostgreSQL so every replica
uses the same version; replicas pick up a change within `refresh_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import Executor
from datetime import datetime
from importlib import resources
from pathlib import Path

from creditwatch.server.domain.errors import NotFound
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.scoring.batcher import MicroBatcher
from creditwatch.server.scoring.engine import Scorer
from creditwatch.server.scoring.model import OnnxModel
from creditwatch.server.store.activations import ActivationStore

log = logging.getLogger(__name__)


def manifest_paths(extra_dir: Path | None) -> list[Path]:
    """Model manifests (JSON files with an ONNX twin) in the package and `extra_dir`."""
    folders = [Path(str(resources.files("creditwatch.models")))]
    if extra_dir is not None:
        folders.append(extra_dir)
    return sorted(
        path
        for folder in folders
        for path in folder.glob("*.json")
        if path.with_suffix(".onnx").exists()
    )


class ModelRegistry:
    """Loaded models by version, and the active one."""

    def __init__(self, scorers: Iterable[Scorer], default_version: str | None = None) -> None:
        self._scorers = {s.version: s for s in scorers}
        if not self._scorers:
            raise RuntimeError("no model found: the package ships models/default-pd-v*.onnx")
        newest = max(self._scorers.values(), key=lambda s: s.model.info.created).version
        self._active = default_version or newest
        if self._active not in self._scorers:
            raise RuntimeError(f"configured model version {self._active!r} is not loaded")
        self.activated_at: datetime | None = None
        self._missing: tuple[str, datetime] | None = None  # an activation warned about

    @classmethod
    def load(
        cls,
        executor: Executor,
        policy: OverridePolicy,
        extra_dir: Path | None = None,
        default_version: str | None = None,
    ) -> ModelRegistry:
        """Load every model found; each gets its own micro-batcher."""
        scorers = []
        for path in manifest_paths(extra_dir):
            model = OnnxModel(path)
            scorers.append(Scorer(model, MicroBatcher(model.evaluate, executor), policy))
            log.info("model loaded", extra={"version": model.info.version, "path": str(path)})
        return cls(scorers, default_version)

    @property
    def active(self) -> Scorer:
        """The scorer of the active model version."""
        return self._scorers[self._active]

    def get(self, version: str) -> Scorer:
        """A loaded model by version, or NotFound."""
        try:
            return self._scorers[version]
        except KeyError:
            raise NotFound(f"models/{version}") from None

    @property
    def in_step(self) -> bool:
        """Whether this replica runs the activated model (or none was ever
        activated), as of its last look (`sync`): a score stored by another
        version may then be replaced by this replica's."""
        return self._missing is None

    def has(self, version: str) -> bool:
        """Whether this replica loaded model `version`."""
        return version in self._scorers

    def all(self) -> list[Scorer]:
        """Every loaded model, newest first."""
        return sorted(self._scorers.values(), key=lambda s: s.model.info.created, reverse=True)

    def activate(self, version: str, when: datetime | None = None) -> str:
        """Make `version` the active model; returns the previous version."""
        self.get(version)
        previous, self._active = self._active, version
        self.activated_at = when
        if previous != version:
            log.info("model activated", extra={"version": version, "previous": previous})
        return previous

    async def follow(self, activations: ActivationStore, interval: float) -> None:
        """Keep this replica on the version activated in PostgreSQL (runs until cancelled).

        An activation naming a version this replica has not loaded is logged
        and ignored, so a half-rolled-out model never stops scoring requests;
        the jobs that store scores in bulk (re-scoring, the register feeds)
        leave their runs to the replicas that have it (jobs.rescoring.on_activated_model).
        """
        while True:
            try:
                await self.sync(activations)
            except Exception:
                log.exception("could not read the active model version; keeping the current one")
            await asyncio.sleep(interval)

    async def sync(self, activations: ActivationStore) -> None:
        """Adopt the newest activation recorded in PostgreSQL, if this replica has it."""
        current = await activations.current()
        if current is None:
            return
        version, when = current
        if version not in self._scorers:
            if self._missing != current:  # once per activation, not at every refresh
                self._missing = current
                log.warning(
                    "the activated model version is not loaded on this replica: it keeps "
                    "answering with its own active version and leaves re-scoring runs and "
                    "the register feeds to replicas that have the activated one; deploy "
                    "the model file (CREDITWATCH_MODEL_DIR) here",
                    extra={"version": version, "this_replica": self._active},
                )
            return
        self._missing = None
        if version != self._active or self.activated_at != when:
            self.activate(version, when)
