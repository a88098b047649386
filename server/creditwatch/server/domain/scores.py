"""Scores as stored and returned: PD, risk class, reasons, model version."""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable, Sequence
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


class FeatureTexts:
    """How one model version words its feature reasons: a code per feature and
    four %-templates per feature, for (value, PD change in percentage points):
    [value missing, reported] x [PD lowered, raised].

    Bulk-written scores store a model reason as `[feature index, value,
    contribution]` (`value` null when missing) instead of its code and text:
    a fifth of the bytes, and no text formatted per company in a re-score.
    The text is made on read from the version's templates (its manifest's
    features worded by `scoring.engine`), so it reads as it did when the score
    was made as long as that model version stays loaded and the wording code
    is unchanged. Keep a retired model's files in the models folder while
    scores and alerts it made are kept: without them its reasons read as
    "input N of model V" (codes FEATURE_N)."""

    __slots__ = ("codes", "templates", "version")

    def __init__(self, version: str, codes: Sequence[str], templates: Sequence[str]) -> None:
        if len(templates) != 4 * len(codes):
            raise ValueError("four templates per feature code")
        self.version = version
        self.codes = tuple(codes)
        self.templates = tuple(templates)

    def reason(self, index: int, value: float | None, contribution: float) -> Reason:
        """The model reason `[index, value, contribution]` stands for."""
        if not 0 <= index < len(self.codes):
            return _unknown_feature(self.version, index, value, contribution)
        # The value was a float32 model input, stored as a text that reads
        # back as that float32 (the shortest one; 9 digits in older rows):
        # rounded back to float32, it is exactly the input the text was made from.
        shown = math.nan if value is None else _FLOAT32.unpack(_FLOAT32.pack(value))[0]
        template = self.templates[index * 4 + (value is not None) * 2 + (contribution > 0)]
        return tuple.__new__(
            Reason,
            (
                self.codes[index],
                template % (shown, abs(contribution) * 100),
                ReasonKind.MODEL_FEATURE,
                contribution,
            ),
        )


_FLOAT32 = struct.Struct("f")
_TEXTS: dict[str, FeatureTexts] = {}


def register_feature_texts(texts: FeatureTexts) -> None:
    """Make a model version's reason texts known to `reasons_from_json` (every
    loaded model registers its own)."""
    _TEXTS[texts.version] = texts


def _unknown_feature(version: str, index: int, value: float | None, contribution: float) -> Reason:
    # A score of a model version this process has not loaded (its files were
    # removed, or only newer replicas have them): still a truthful reason.
    shown = "not reported" if value is None else f"{value:.4g}"
    verb = "raises" if contribution > 0 else "lowers"
    return Reason(
        f"FEATURE_{index + 1}",
        f"input {index + 1} of model {version} is {shown}; {verb} the PD by "
        f"{abs(contribution) * 100:.2f} percentage points",
        ReasonKind.MODEL_FEATURE,
        contribution,
    )


def reasons_as_json(reasons: Iterable[Reason]) -> list[dict[str, Any]]:
    """Reasons in their full stored form (a JSON array of objects)."""
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


def reasons_from_json(
    values: Iterable[dict[str, Any] | list[Any]], model_version: str
) -> tuple[Reason, ...]:
    """Reasons from their stored form: objects (`reasons_as_json`) or, for model
    features, `[feature index, value, contribution]` arrays worded by the
    score's model version (`FeatureTexts`)."""
    # tuple.__new__ builds the same named tuple as Reason(...) in C, and a dict
    # look-up is cheaper than the enum's call: alerts of a re-score decode
    # hundreds of thousands of reasons.
    new = tuple.__new__
    texts = _TEXTS.get(model_version)
    reasons: list[Reason] = []
    for r in values:
        if isinstance(r, list):
            index, value, contribution = r
            reasons.append(
                texts.reason(index, value, contribution)
                if texts is not None
                else _unknown_feature(model_version, index, value, contribution)
            )
        else:
            kind = r["kind"]
            reasons.append(
                new(
                    Reason,
                    (
                        r["code"],
                        r["description"],
                        _KINDS[kind] if kind in _KINDS else ReasonKind(kind),
                        r["pd_contribution"],
                    ),
                )
            )
    return tuple(reasons)
