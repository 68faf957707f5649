"""Which of two key-metric values is better, for engines whose key metric is a loss or an error."""

from __future__ import annotations

__all__ = ["lower_is_better"]


def lower_is_better(current: float, best: float) -> bool:
    """A ``metric_cmp_fn`` for metrics to minimise: ``current`` beats ``best``, or there is no best yet (ignite's
    engines start from -1)."""
    return best == -1 or current < best
