"""Scores as stored and returned: PD, risk class, reasons, model version."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple


class RiskClass(enum.IntEnum):
    """Risk classes A (lowest risk) to D (highest); values match the wire enum."""

    A = 1
    B = 2
    C = 3
    D = 4


class ReasonKind(enum.IntEnum):
    """Where a reason comes from; values match the wire enum."""

    MODEL_FEATURE = 1
    OVERRIDE = 2


# Reason and StoredScore are named tuples, not frozen dataclasses: both are
# made by the hundred thousand in a re-score or a streamed upload, and a named
# tuple is built in a third of the time (a frozen dataclass sets each field
# through object.__setattr__). Both stay immutable records.


class Reason(NamedTuple):
    """One explanation of a score."""

    code: str
    description: str
    kind: ReasonKind
    pd_contribution: float


class StoredScore(NamedTuple):
    """A company's score as kept in the store."""

    probability_of_default: float
    risk_class: RiskClass
    model_risk_class: RiskClass
    reasons: tuple[Reason, ...]
    model_version: str
    data_as_of: datetime | None
    score_time: datetime


def reasons_as_json(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    """Reasons as stored (a JSON array of objects)."""
    return [
        {
            "code": r.code,
            "description": r.description,
            "kind": int(r.kind),
            "pd_contribution": r.pd_contribution,
        }
        for r in reasons
    ]


_KINDS = {int(kind): kind for kind in ReasonKind}


def reasons_from_json(values: Iterable[dict[str, Any]]) -> tuple[Reason, ...]:
    """Reasons from their stored form (`reasons_as_json`)."""
    # tuple.__new__ builds the same named tuple as Reason(...) in C, and a dict
    # look-up is cheaper than the enum's call: alerts of a re-score decode
    # hundreds of thousands of reasons.
    new = tuple.__new__
    return tuple(
        [
            new(
                Reason,
                (
                    r["code"],
                    r["description"],
                    _KINDS[r["kind"]] if r["kind"] in _KINDS else ReasonKind(r["kind"]),
                    r["pd_contribution"],
                ),
            )
            for r in values
        ]
    )
