"""What this process's Prometheus metrics have counted of shared batch chunks."""

from __future__ import annotations

from prometheus_client import REGISTRY


def failure_counts(kind: str) -> tuple[float, float]:
    """(failed attempts that left the chunk for another try, attempts that gave
    it up) at chunks of `kind` (rescore, snapshot), counted so far."""
    counted = [
        REGISTRY.get_sample_value(
            "creditwatch_batch_chunk_failures_total", {"kind": kind, "given_up": given_up}
        )
        for given_up in ("false", "true")
    ]
    return counted[0] or 0.0, counted[1] or 0.0
