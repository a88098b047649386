"""A per-replica cache of current scores, kept honest by PostgreSQL NOTIFY.

ScoreCompany is a look-up that integrators call on hot paths, so a replica
keeps companies' current scores in memory. Every score write (and every
score that ends, `facts.end_scores`) sends
`NOTIFY creditwatch_scores, '<country>-<number>'` in its own transaction (a
bulk write: a few notices of many comma-separated keys, see `notices`), so
the notice arrives only once the score is visible; each replica LISTENs and
drops those companies' entries; '*' empties the cache. (Replicas from
before many-key notices read such a notice as one unknown company: replace
them before bulk score writes run.) Notifications are lost while a listener is
disconnected, so the cache is used only while the listening connection is up,
and it is emptied whenever that connection is (re)established.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.scores import StoredScore
from creditwatch.server.store.listen import ChannelListener

log = logging.getLogger(__name__)

CHANNEL = "creditwatch_scores"
# A bulk write of at least this many scores sends '*' instead of the keys.
CACHE_FLUSH_FROM = 10_000
# NOTIFY payloads must be shorter than 8,000 bytes.
_PAYLOAD_BYTES = 7_900


def notices(keys: Sequence[str]) -> list[str]:
    """Payloads naming the companies `keys` (CompanyId.key), each as many keys
    (comma-separated) as fit."""
    payloads: list[str] = []
    batch: list[str] = []
    size = 0
    for key in keys:
        if batch and size + len(key) + 1 > _PAYLOAD_BYTES:
            payloads.append(",".join(batch))
            batch, size = [], 0
        batch.append(key)
        size += len(key) + 1
    if batch:
        payloads.append(",".join(batch))
    return payloads


class ScoreCache:
    """Current scores by company, invalidated by NOTIFY; bounded LRU."""

    def __init__(self, url: str, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[CompanyId, StoredScore] = OrderedDict()
        self._generation = 0
        self._listener = ChannelListener(
            url,
            CHANNEL,
            on_notice=self._invalidate,
            on_connect=self._reset,
            on_disconnect=self._reset,
            name="score-cache",
            label="score cache",
            log=log,
        )
        self.hits = 0

    @property
    def live(self) -> bool:
        """Whether invalidations are being received (else the cache is bypassed)."""
        return self._listener.live

    def get(self, company: CompanyId) -> StoredScore | None:
        """The cached score, if the cache is live and has one."""
        if not self.live:
            return None
        score = self._entries.get(company)
        if score is not None:
            self._entries.move_to_end(company)
            self.hits += 1
        return score

    def put(self, company: CompanyId, score: StoredScore, generation: int) -> None:
        """Remember a score read from the database at `generation` (see `generation`)."""
        if not self.live or generation != self._generation:
            return
        self._entries[company] = score
        self._entries.move_to_end(company)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    @property
    def generation(self) -> int:
        """Read before a database look-up and pass to `put`: a look-up that raced
        with an invalidation or a reconnect is not cached."""
        return self._generation

    def forget(self, companies: Sequence[CompanyId]) -> None:
        """Drop these companies now: a replica that has just committed their
        new scores must not answer with the old ones until its NOTIFY comes
        round (a caller reads back its own write from the same replica)."""
        self._generation += 1
        for company in companies:
            self._entries.pop(company, None)

    def _invalidate(self, payload: str) -> None:
        self._generation += 1
        if not self._entries:
            return
        for key in payload.split(","):
            country, dash, number = key.partition("-")
            if not dash:  # '*' (or anything unexpected): forget everything
                self._entries.clear()
                return
            self._entries.pop(CompanyId(country, number), None)

    def _reset(self) -> None:
        """Forget everything: notices were (or are being) missed."""
        self._entries.clear()
        self._generation += 1

    def start(self) -> None:
        """Begin listening in the background."""
        self._listener.start()

    async def stop(self) -> None:
        """Stop listening and forget everything."""
        await self._listener.stop()
