"""Which tenant grant each RPC needs: `tenant:read` or `tenant:write`.

The RPC wrappers (`api.errors`) check it before a call does any work, so a
read-only key (a dashboard's, an e-mail bridge's) cannot change what its
tenant owns. A write is anything that changes data a user of the tenant would
see or that feeds a decision: watch lists, credit limits and policy, company
facts, payment reports, the active model. An RPC missing from both sets below
is treated as a write (fail closed); a unit test checks that every RPC of the
protos is in exactly one of them.

Two reads store something, and why they stay reads:
- `AcknowledgeAlerts` (and `SubscribeAlerts` with a new `consumer`, which
  creates the consumer) stores a durable consumer's position: the reader's
  bookmark in the alert feed, not the tenant's data. It changes no alert,
  watch list, score, limit or policy, and a mail bridge or case system that
  may only read must still resume where it left off after a restart. The
  price: consumers belong to the tenant, not to a key, so a read-only key can
  move any of its tenant's consumers forward (that consumer then skips
  alerts, which stay readable with `ListAlerts` and an `after_cursor`).
- `ScoreCompany` stores a score it computed from stored facts when none is
  stored or the stored one is another model version's than the activated one:
  the score, and the alerts and limit re-decisions it causes, that the
  scheduled re-scoring would make; the caller chooses nothing in it.
"""

from __future__ import annotations

from creditwatch.server.domain.tenants import SCOPE_TENANT_READ, SCOPE_TENANT_WRITE

READS = frozenset(
    {
        # AlertService
        "SubscribeAlerts",
        "AcknowledgeAlerts",
        "ListAlerts",
        "GetAlert",
        # CompanyDataService
        "GetCompany",
        # CreditLimitService
        "GetCreditLimit",
        "ListCreditLimits",
        "GetCreditPolicy",
        # PortfolioService
        "GetPortfolioSummary",
        "GetMigrationMatrix",
        "GetRiskTrend",
        "ListSegments",
        "ListSegmentEntries",
        # ScoringService
        "ScoreCompany",
        "ScoreFinancials",
        "StreamScores",
        "GetModel",
        "ListModels",
        # WatchListService
        "GetWatchList",
        "ListWatchLists",
        "GetEntry",
        "ListEntries",
    }
)
"""RPCs any key of the tenant may call."""

WRITES = frozenset(
    {
        # CompanyDataService (the first three also need `companies:write`)
        "UpsertCompany",
        "SubmitFinancialStatement",
        "RecordEvents",
        "ReportPaymentExperience",
        # CreditLimitService: a decision can replace the standing limit
        "DecideCreditLimit",
        "ReportOverduePayment",
        "UpdateCreditPolicy",
        # ScoringService (also needs `models:activate`)
        "ActivateModel",
        # WatchListService
        "CreateWatchList",
        "UpdateWatchList",
        "DeleteWatchList",
        "AddEntries",
        "RemoveEntries",
    }
)
"""RPCs that need `tenant:write`: refused to read-only keys."""


def grant_needed(rpc: str) -> str:
    """The tenant grant a call of `rpc` (its bare method name, e.g.
    "DeleteWatchList") needs; `tenant:write` for an RPC not classified."""
    return SCOPE_TENANT_READ if rpc in READS and rpc not in WRITES else SCOPE_TENANT_WRITE
