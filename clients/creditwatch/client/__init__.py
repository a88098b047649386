"""The creditwatch Python SDK: a typed async client over gRPC.

    from creditwatch.client import CreditwatchClient, entry

    async with CreditwatchClient("localhost:50051", api_key) as client:
        watch_list = await client.watch_lists.create("Key accounts", pd_threshold=0.05)
        await client.watch_lists.add_entries(
            watch_list.name, [entry("NO", "923609016", exposure=("NOK", 250_000))]
        )
        async for item in client.watch_lists.list_entries(watch_list.name, risk_classes=["D"]):
            print(item.company.register_number, item.latest_score.probability_of_default)

Methods return the generated protobuf messages of `creditwatch.v1` (typed,
documented by the proto comments); single-field responses are unwrapped (a
`WatchList`, an entry, a count). Failed calls raise `CreditwatchError`
subclasses carrying the `google.rpc` details. `creditwatch.client.testing`
starts a real server for tests.
"""

from creditwatch.client._alerts import AlertsClient, AlertStream, alert_filter
from creditwatch.client._batches import MAX_BATCH
from creditwatch.client._client import CreditwatchClient, PemSource
from creditwatch.client._errors import (
    AbortedError,
    AlreadyExistsError,
    CreditwatchError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from creditwatch.client._messages import (
    Amount,
    MoneyLike,
    company,
    entries_from_csv,
    entry,
    entry_name,
    money,
)
from creditwatch.client._retry import RetryPolicy
from creditwatch.client._services import (
    CreditLimitsClient,
    PortfolioClient,
    ScoringClient,
    score_item,
)
from creditwatch.client._statements import (
    RESULT_COLUMNS,
    STATEMENT_COLUMNS,
    result_row,
    score_items_from_csv,
)
from creditwatch.client._watchlists import RiskClassLike, WatchListsClient

__all__ = [
    "MAX_BATCH",
    "RESULT_COLUMNS",
    "STATEMENT_COLUMNS",
    "AbortedError",
    "AlertStream",
    "AlertsClient",
    "AlreadyExistsError",
    "Amount",
    "CreditLimitsClient",
    "CreditwatchClient",
    "CreditwatchError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "MoneyLike",
    "NotFoundError",
    "PemSource",
    "PermissionDeniedError",
    "PortfolioClient",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RiskClassLike",
    "ScoringClient",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "WatchListsClient",
    "alert_filter",
    "company",
    "entries_from_csv",
    "entry",
    "entry_name",
    "money",
    "result_row",
    "score_item",
    "score_items_from_csv",
]
