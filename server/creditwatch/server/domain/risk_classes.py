"""PD bands: the probability-of-default cut-offs that define risk classes A to D.

The cut-offs belong to a model (they are in its manifest), not to the code:
a new model version brings its own bands.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from creditwatch.server.domain.scores import RiskClass

# Indexing is cheaper than the enum's call by value, and a re-score classifies
# every company.
_BY_BAND = (RiskClass.A, RiskClass.B, RiskClass.C, RiskClass.D)


@dataclass(frozen=True)
class PdBands:
    """Upper PD bounds (exclusive) of classes A, B and C; D is everything above."""

    a_below: float
    b_below: float
    c_below: float

    def __post_init__(self) -> None:
        if not 0.0 < self.a_below < self.b_below < self.c_below < 1.0:
            raise ValueError(f"PD bands must increase within (0, 1): {self}")

    def classify(self, pd: float) -> RiskClass:
        """The class whose band holds `pd` (lower bounds inclusive)."""
        return _BY_BAND[bisect.bisect_right((self.a_below, self.b_below, self.c_below), pd)]

    def classify_many(self, pds: npt.NDArray[np.float64]) -> list[int]:
        """`classify` of each PD, as class numbers (searchsorted "right" is
        bisect_right)."""
        edges = np.array((self.a_below, self.b_below, self.c_below))
        classes: list[int] = (np.searchsorted(edges, pds, side="right") + 1).tolist()
        return classes

    def bounds(self, risk_class: RiskClass) -> tuple[float, float]:
        """(min inclusive, max exclusive) PD of a class; D's max is 1."""
        edges = (0.0, self.a_below, self.b_below, self.c_below, 1.0)
        return edges[risk_class - 1], edges[risk_class]
