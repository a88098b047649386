"""Policy overrides applied on top of the model's risk class, recorded as reasons.

The model sees only financial statements; registered events can make a company
riskier than its accounts say. The policy is data (a JSON document,
`OverridePolicy.from_json`, read from the file CREDITWATCH_OVERRIDE_POLICY_FILE
names by `config.override_policy`; the defaults below without one) so credit
teams can change it without a release.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from creditwatch.server.domain.events import RiskState
from creditwatch.server.domain.scores import Reason, ReasonKind, RiskClass

MAX_NOTCHES = 3
"""More notches than this cannot move a class further (A to D is three)."""
MAX_OVERDUE_DAYS = 3650
"""Ten years: an invoice overdue longer is no signal a policy could mean."""
TAG_LENGTH = 16
"""Hex digits of the fingerprint that every stored score carries (64 bits)."""


@dataclass(frozen=True)
class OverridePolicy:
    """How events move a risk class.

    Defaults: bankruptcy opened or compulsory dissolution → class D; any open
    payment remark → one class worse; any open debt collection case → one class
    worse; open invoices more than `overdue_days` past due, reported by at
    least `overdue_min_creditors` different creditors (tenants, pooled) → one
    class worse; the notches add up, and a class never goes past D.

    The class is shared by every tenant, and any tenant may report its own
    invoices without a grant: one creditor alone (whose invoice may be
    disputed, or invented) must not move it for all, as a credit bureau pools
    payment data only once several creditors report.
    """

    version: str = "overrides-2026.12.1"
    bankruptcy_forces_d: bool = True
    dissolution_forces_d: bool = True
    payment_remark_notches: int = 1
    collection_case_notches: int = 1
    overdue_days: int = 90
    overdue_payment_notches: int = 1
    overdue_min_creditors: int = 2

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OverridePolicy:
        """Read a policy document; unknown keys and values of the wrong type are
        errors, so typos are caught. Keys left out keep their defaults."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown override policy keys: {sorted(unknown)}")
        for name, value in data.items():
            expected = _JSON_TYPES[str(known[name].type)]
            # bool is an int in Python; a policy that says `true` for a count
            # (or 1 for a switch) is a mistake, not a value.
            if type(value) is not expected[0]:
                raise ValueError(f"{name} must be a JSON {expected[1]}, got {json.dumps(value)}")
        if "version" in data and not data["version"].strip():
            raise ValueError("version must not be empty")
        for name in ("bankruptcy_forces_d", "dissolution_forces_d"):
            if data.get(name) is False:
                # A domain fact, not a preference: such a company is D
                # whatever its accounts say (DESIGN.md).
                raise ValueError(f"{name} cannot be switched off")
        policy = cls(**data)
        notches = (
            policy.payment_remark_notches,
            policy.collection_case_notches,
            policy.overdue_payment_notches,
        )
        if min(notches) < 0 or policy.overdue_days < 0:
            raise ValueError("notches and overdue_days must not be negative")
        if max(notches) > MAX_NOTCHES:
            raise ValueError(f"notches must be at most {MAX_NOTCHES} (A to D)")
        if policy.overdue_days > MAX_OVERDUE_DAYS:
            raise ValueError(f"overdue_days must be at most {MAX_OVERDUE_DAYS}")
        if policy.overdue_min_creditors < 1:
            raise ValueError("overdue_min_creditors must be at least 1")
        return policy

    def describe(self) -> dict[str, Any]:
        """The policy as `from_json` reads it (for logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the policy's canonical JSON, version included: the version
        names a policy, so the same values under a new version are a new one.
        A setting at its `_TAGGED_FROM` value is left out (see there)."""
        described = {
            name: value
            for name, value in self.describe().items()
            if name not in _TAGGED_FROM or value != _TAGGED_FROM[name]
        }
        canonical = json.dumps(described, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def tag(self) -> str:
        """The fingerprint's first TAG_LENGTH hex digits, which every score
        made with this policy stores (scores.override_policy)."""
        return self.fingerprint[:TAG_LENGTH]

    def apply(self, model_class: RiskClass, state: RiskState) -> tuple[RiskClass, list[Reason]]:
        """The final class and the override reasons that produced it."""
        reasons: list[Reason] = []
        if self.bankruptcy_forces_d and state.bankruptcy_opened:
            reasons.append(
                Reason(
                    "OVERRIDE_BANKRUPTCY",
                    "bankruptcy proceedings are open: class D whatever the accounts say",
                    ReasonKind.OVERRIDE,
                    0.0,
                )
            )
        if self.dissolution_forces_d and state.compulsory_dissolution:
            reasons.append(
                Reason(
                    "OVERRIDE_COMPULSORY_DISSOLUTION",
                    "compulsory dissolution ordered: class D whatever the accounts say",
                    ReasonKind.OVERRIDE,
                    0.0,
                )
            )
        if reasons:
            return RiskClass.D, reasons
        notches = 0
        if state.open_payment_remarks and self.payment_remark_notches:
            notches += self.payment_remark_notches
            reasons.append(
                Reason(
                    "OVERRIDE_PAYMENT_REMARK",
                    f"{state.open_payment_remarks} open payment remark(s): "
                    f"{self.payment_remark_notches} class(es) worse",
                    ReasonKind.OVERRIDE,
                    0.0,
                )
            )
        if state.open_collection_cases and self.collection_case_notches:
            notches += self.collection_case_notches
            reasons.append(
                Reason(
                    "OVERRIDE_COLLECTION_CASE",
                    f"{state.open_collection_cases} open debt collection case(s): "
                    f"{self.collection_case_notches} class(es) worse",
                    ReasonKind.OVERRIDE,
                    0.0,
                )
            )
        if (
            state.seriously_overdue_invoices
            and self.overdue_payment_notches
            and state.overdue_creditors >= self.overdue_min_creditors
        ):
            notches += self.overdue_payment_notches
            reasons.append(
                Reason(
                    "OVERRIDE_OVERDUE_PAYMENTS",
                    f"{state.seriously_overdue_invoices} open invoice(s) more than "
                    f"{self.overdue_days} days past due reported by "
                    f"{state.overdue_creditors} creditor(s): "
                    f"{self.overdue_payment_notches} class(es) worse",
                    ReasonKind.OVERRIDE,
                    0.0,
                )
            )
        return RiskClass(min(int(RiskClass.D), int(model_class) + notches)), reasons


# Settings added after scores began to carry their policy's tag, each with the
# value that does what every policy did before it had the setting. At that
# value a setting stays out of the fingerprint, so such a policy keeps the tag
# its scores carry (migration 0015 stamped the first built-in policy's on all
# older scores) and nothing is re-scored for a change that changes nothing.
_TAGGED_FROM: dict[str, object] = {"overdue_min_creditors": 1}

# A field's annotation (a string: annotations are postponed) -> its JSON type.
_JSON_TYPES: dict[str, tuple[type, str]] = {
    "bool": (bool, "true or false"),
    "int": (int, "integer"),
    "str": (str, "string"),
}
