"""Scores as stored and returned: PD, risk class, reasons, model version."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


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


@dataclass(frozen=True, slots=True)
class Reason:
    """One explanation of a score."""

    code: str
    description: str
    kind: ReasonKind
    pd_contribution: float


@dataclass(frozen=True, slots=True)
class StoredScore:
    """A company's score as kept in the store."""

    probability_of_default: float
    risk_class: RiskClass
    model_risk_class: RiskClass
    reasons: tuple[Reason, ...]
    model_version: str
    data_as_of: datetime | None
    score_time: datetime
