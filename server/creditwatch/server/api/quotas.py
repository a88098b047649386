"""Per-tenant caps on the calls one replica runs at once.

Without them one tenant can take a replica for itself: a security review saw
one tenant hold 1,453 alert streams, and another's `ScoreFinancials` go from
1.1 ms to 6.4 ms (median) while the first ran 64 `StreamScores` streams. A
call past its tenant's cap is refused before it does any work (a `StreamScores`
stream once the messages the client has in flight are read and dropped, for
at most 2 s: `errors._hear_out`), with RESOURCE_EXHAUSTED and a
`google.rpc.QuotaFailure` naming the cap and the setting that raises it; it
is not queued, so a tenant at its cap cannot make the replica hold its
backlog. The caps count per replica: behind a load
balancer a tenant may have as many times more as there are replicas.

The wrappers of `creditwatch.server.api.errors` take and give back the slots
(`errors.limit_tenants` installs the caps at start-up), so servicers know
nothing of them.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from creditwatch.server.domain.errors import ResourceExhausted


@dataclass(frozen=True)
class Quota:
    """A cap on one kind of call a tenant may have running on one replica."""

    calls: str
    """What is counted, as a message names it: "open SubscribeAlerts streams";
    also what tells quotas apart in the counts, so each has its own."""
    setting: str
    """The environment variable that sets `limit`, for the operator."""
    limit: int


class QuotaExceeded(ResourceExhausted):
    """The tenant already runs `quota.limit` such calls here; this one was not started."""

    def __init__(self, quota: Quota, tenant: uuid.UUID) -> None:
        super().__init__(
            f"this tenant already has {quota.limit:,} {quota.calls} on this replica, its "
            "limit; end some, or retry with back-off"
        )
        self.subject = f"tenants/{tenant}"
        self.description = (
            f"at most {quota.limit:,} {quota.calls} per tenant on one replica "
            f"(server setting {quota.setting})"
        )


@dataclass(frozen=True)
class TenantQuotas:
    """The caps, one per kind of call the wrappers of `api.errors` run."""

    unary: Quota
    server_streams: Quota
    bidi_streams: Quota

    @classmethod
    def unlimited(cls) -> TenantQuotas:
        """No caps (servicers run without `errors.limit_tenants`, as in unit tests)."""
        return cls(
            Quota("calls in flight", "", sys.maxsize),
            Quota("open server streams", "", sys.maxsize),
            Quota("open bidirectional streams", "", sys.maxsize),
        )


class Slots:
    """How many calls of each quota each tenant runs now, on this replica.

    Only the event loop's thread touches it, so plain counts suffice."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, uuid.UUID], int] = {}

    def take(self, quota: Quota, tenant: uuid.UUID) -> Callable[[], None]:
        """Count one more call of `tenant` against `quota`, or raise
        QuotaExceeded; returns the function that gives the slot back, which
        does so once however often it is called."""
        key = (quota.calls, tenant)
        running = self._running.get(key, 0)
        if running >= quota.limit:
            raise QuotaExceeded(quota, tenant)
        self._running[key] = running + 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if given_back:
                return
            given_back = True
            left = self._running[key] - 1
            if left:
                self._running[key] = left
            else:
                del self._running[key]  # no entry kept per tenant ever seen

        return give_back

    def running(self, quota: Quota, tenant: uuid.UUID) -> int:
        """Calls of `tenant` counted against `quota` now."""
        return self._running.get((quota.calls, tenant), 0)
