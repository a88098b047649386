"""Watch lists and their entries: the rules that hold whatever the storage."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal

from creditwatch.server.domain.errors import FieldViolation
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.money import Money
from creditwatch.server.domain.scores import StoredScore

MAX_ENTRIES_PER_CALL = 10_000
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 2_000
MAX_EXTERNAL_REFERENCE = 200
MAX_LABELS = 64
_LABEL_KEY = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,62}")
MAX_LABEL_VALUE = 255
UPDATABLE_FIELDS = ("display_name", "description", "pd_threshold", "alert_rules", "labels")


def _sha256(asks: object) -> str:
    raw = json.dumps(asks, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class AlertRules:
    """Which alerts a watch list wants. Enum values are the wire numbers."""

    alert_types: tuple[int, ...] = ()
    minimum_severity: int = 0
    minimum_class_change: int = 0


@dataclass(frozen=True)
class WatchListSpec:
    """The client-settable fields of a watch list."""

    display_name: str
    description: str = ""
    pd_threshold: float = 0.0
    alert_rules: AlertRules = field(default_factory=AlertRules)
    labels: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 of the spec: what a CreateWatchList call asks besides its
        `request_id`, to tell a retry from another request reusing the id."""
        return _sha256(asdict(self))


@dataclass(frozen=True)
class WatchList:
    """A stored watch list."""

    id: str
    spec: WatchListSpec
    entry_count: int
    create_time: datetime
    update_time: datetime


@dataclass(slots=True)
class EntrySpec:
    """The client-settable fields of one watch list entry."""

    company: CompanyId
    exposure: Money | None = None
    credit_limit: Money | None = None
    external_reference: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class EntryColumns:
    """A validated batch of entries, column by column.

    Bulk calls carry up to 10,000 entries; building one object per entry and
    re-reading it for the database costs more than the database write itself,
    so the API layer fills these columns directly while validating.
    """

    countries: list[str] = field(default_factory=list)
    register_numbers: list[str] = field(default_factory=list)
    exposure_currencies: list[str | None] = field(default_factory=list)
    exposure_amounts: list[Decimal | None] = field(default_factory=list)
    limit_currencies: list[str | None] = field(default_factory=list)
    limit_amounts: list[Decimal | None] = field(default_factory=list)
    external_references: list[str] = field(default_factory=list)
    labels_json: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.countries)

    def append(self, spec: EntrySpec, labels_json: str) -> None:
        """Add one entry; `labels_json` is `spec.labels` as a JSON object."""
        self.countries.append(spec.company.country)
        self.register_numbers.append(spec.company.register_number)
        self.exposure_currencies.append(spec.exposure.currency if spec.exposure else None)
        self.exposure_amounts.append(spec.exposure.amount if spec.exposure else None)
        self.limit_currencies.append(spec.credit_limit.currency if spec.credit_limit else None)
        self.limit_amounts.append(spec.credit_limit.amount if spec.credit_limit else None)
        self.external_references.append(spec.external_reference)
        self.labels_json.append(labels_json)

    def fingerprint(self, watch_list_id: str) -> str:
        """sha256 of what an AddEntries call asks besides its `request_id`: the
        watch list and the entries in company order (the order they were sent
        in changes nothing that is stored, so a retry may send them in another).

        It reads the columns as they are, with no object per entry: it runs for
        every 10,000-entry call with a `request_id`, which the SDK always sends.
        """
        companies = list(zip(self.countries, self.register_numbers, strict=True))
        order = sorted(range(len(companies)), key=companies.__getitem__)
        texts = (
            self.countries,
            self.register_numbers,
            self.exposure_currencies,
            self.limit_currencies,
            self.external_references,
            self.labels_json,
        )
        columns: list[list[str | None]] = [[column[i] for i in order] for column in texts]
        for amounts in (self.exposure_amounts, self.limit_amounts):
            columns.append([None if amounts[i] is None else str(amounts[i]) for i in order])
        return _sha256([watch_list_id, columns])

    @classmethod
    def of(cls, specs: list[EntrySpec]) -> EntryColumns:
        """Columns of already validated entries (tests, imports)."""
        columns = cls()
        for spec in specs:
            columns.append(spec, json.dumps(spec.labels, sort_keys=True))
        return columns


@dataclass(frozen=True)
class Entry:
    """A stored entry with its company's latest score, if any."""

    watch_list_id: str
    spec: EntrySpec
    latest_score: StoredScore | None
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class AddEntriesResult:
    """What an AddEntries call did."""

    added: int
    updated: int
    entry_count: int


NUL = "\x00"
NUL_REFUSED = "holds a NUL character (U+0000), which cannot be stored"


def validate_labels(labels: dict[str, str], prefix: str) -> list[FieldViolation]:
    """Label keys are short lowercase identifiers; values are bounded strings."""
    problems: list[FieldViolation] = []
    if len(labels) > MAX_LABELS:
        problems.append(FieldViolation(prefix, f"at most {MAX_LABELS} labels"))
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            problems.append(
                FieldViolation(
                    f"{prefix}[{key!r}]",
                    "key must be 1..63 lowercase letters, digits, '_', '-' or '.'",
                )
            )
        if len(value) > MAX_LABEL_VALUE:
            problems.append(
                FieldViolation(f"{prefix}[{key!r}]", f"value longer than {MAX_LABEL_VALUE}")
            )
        elif NUL in value:
            problems.append(FieldViolation(f"{prefix}[{key!r}]", NUL_REFUSED))
    return problems


def validate_spec(
    spec: WatchListSpec, prefix: str, fields: tuple[str, ...]
) -> list[FieldViolation]:
    """Check the named fields of a watch-list spec; paths are prefixed with `prefix`."""
    problems: list[FieldViolation] = []
    if "display_name" in fields:
        name = spec.display_name.strip()
        if not name:
            problems.append(FieldViolation(f"{prefix}.display_name", "required"))
        elif len(name) > MAX_DISPLAY_NAME:
            problems.append(
                FieldViolation(f"{prefix}.display_name", f"longer than {MAX_DISPLAY_NAME}")
            )
        elif NUL in name:
            problems.append(FieldViolation(f"{prefix}.display_name", NUL_REFUSED))
    if "description" in fields:
        if len(spec.description) > MAX_DESCRIPTION:
            problems.append(
                FieldViolation(f"{prefix}.description", f"longer than {MAX_DESCRIPTION}")
            )
        elif NUL in spec.description:
            problems.append(FieldViolation(f"{prefix}.description", NUL_REFUSED))
    if "pd_threshold" in fields and not 0.0 <= spec.pd_threshold < 1.0:
        problems.append(FieldViolation(f"{prefix}.pd_threshold", "must be at least 0 and below 1"))
    if "alert_rules" in fields and not 0 <= spec.alert_rules.minimum_class_change <= 3:
        problems.append(
            FieldViolation(f"{prefix}.alert_rules.minimum_class_change", "must be 0..3")
        )
    if "labels" in fields:
        problems.extend(validate_labels(spec.labels, f"{prefix}.labels"))
    return problems


def validate_entry(entry: EntrySpec, prefix: str) -> list[FieldViolation]:
    """Rules for one entry beyond what parsing already enforced."""
    problems: list[FieldViolation] = []
    if len(entry.external_reference) > MAX_EXTERNAL_REFERENCE:
        problems.append(
            FieldViolation(f"{prefix}.external_reference", f"longer than {MAX_EXTERNAL_REFERENCE}")
        )
    problems.extend(validate_labels(entry.labels, f"{prefix}.labels"))
    return problems
