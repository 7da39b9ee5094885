"""The review-order seam: which pending image an inspector sees next.

A `Strategy` supplies both the per-image score shown beside an image and the ordering of
the queue (as storage sort keys, so the lease is still claimed in one query). Strategies
are registered once in `STRATEGIES`; the API's `order=` and the UI's radio list exactly
these names. A new order (e.g. anomaly score at cold start) is one class and one line.
"""

from __future__ import annotations

from typing import Protocol

from storage.review_queue import QueueKey
from storage.schema import Prediction


class Strategy(Protocol):
    name: str
    label: str
    keys: tuple[QueueKey, ...]

    def score(self, prediction: Prediction | None) -> float | None:
        """The number this strategy ranks an image by (None: it ranks by arrival only)."""
        ...


class Uncertainty:
    """Most uncertain first (active learning): labels where the model is least sure."""

    name = "uncertainty"
    label = "most uncertain first"
    keys = (QueueKey.uncertainty_desc, QueueKey.arrival)

    def score(self, prediction: Prediction | None) -> float | None:
        return None if prediction is None else float(prediction.uncertainty)


class Arrival:
    """Oldest first: the order the line produced them."""

    name = "arrival"
    label = "oldest first"
    keys = (QueueKey.arrival,)

    def score(self, prediction: Prediction | None) -> float | None:
        return None


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Uncertainty(), Arrival())}
DEFAULT_STRATEGY = "uncertainty"


def strategy(name: str) -> Strategy:
    """The registered strategy `name`; ValueError (422) naming the choices otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        choices = ", ".join(STRATEGIES)
        raise ValueError(f"order must be one of {choices}; got {name!r}") from None
