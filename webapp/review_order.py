"""The review-order seam: which pending image an inspector sees next.

A `Strategy` supplies the per-image score shown beside an image and, per request, the
ordering of the queue (as storage sort keys, so the lease is still claimed in one query).
Keys are chosen per request because some orders depend on the deployment's state (`auto`)
or mix in chance (`anomaly`). Strategies are registered once in `STRATEGIES`; the API's
`order=` and the UI's radio list exactly these names. A new order is one class and one line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from storage.review_queue import QueueKey
from storage.schema import Image, Prediction

COLD_START_SEED = 0  # one seeded generator per process: reproducible, still mixed


@dataclass(frozen=True)
class OrderContext:
    """What a strategy may look at when it chooses the keys of one request."""

    model_served: bool  # a supervised model answers predictions in this process
    random_share: float = 0.2  # cold start: share of requests served at random


class Strategy(Protocol):
    name: str
    label: str

    def keys(self, context: OrderContext) -> tuple[QueueKey, ...]:
        """The sort keys of the queue for one request."""
        ...

    def score(self, image: Image, prediction: Prediction | None) -> float | None:
        """The number this strategy ranks an image by (None: it ranks by arrival only)."""
        ...


class Uncertainty:
    """Most uncertain first (active learning): labels where the model is least sure."""

    name = "uncertainty"
    label = "most uncertain first"

    def keys(self, context: OrderContext) -> tuple[QueueKey, ...]:
        return (QueueKey.uncertainty_desc, QueueKey.arrival)

    def score(self, image: Image, prediction: Prediction | None) -> float | None:
        return None if prediction is None else float(prediction.uncertainty)


class Arrival:
    """Oldest first: the order the line produced them."""

    name = "arrival"
    label = "oldest first"

    def keys(self, context: OrderContext) -> tuple[QueueKey, ...]:
        return (QueueKey.arrival,)

    def score(self, image: Image, prediction: Prediction | None) -> float | None:
        return None


class MostAnomalous:
    """Cold start, no supervised model: most anomalous first (the normality model's score),
    with a share of random picks so the first labels are not all of one kind."""

    name = "anomaly"
    label = "most anomalous first"

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random(COLD_START_SEED)

    def keys(self, context: OrderContext) -> tuple[QueueKey, ...]:
        if self.rng.random() < context.random_share:
            return (QueueKey.random,)
        return (QueueKey.anomaly_desc, QueueKey.arrival)

    def score(self, image: Image, prediction: Prediction | None) -> float | None:
        return None if image.anomaly_score is None else float(image.anomaly_score)


class Auto:
    """Most anomalous first while no supervised model is served, most uncertain first once
    one is: the default, so a new deployment needs no choice."""

    name = "auto"
    label = "automatic (anomalous first until a model is served, then uncertain first)"

    def __init__(self, cold: Strategy, served: Strategy) -> None:
        self.cold = cold
        self.served = served

    def resolve(self, context: OrderContext) -> Strategy:
        return self.served if context.model_served else self.cold

    def keys(self, context: OrderContext) -> tuple[QueueKey, ...]:
        return self.resolve(context).keys(context)

    def score(self, image: Image, prediction: Prediction | None) -> float | None:
        return (self.served if prediction is not None else self.cold).score(image, prediction)


def _registry() -> dict[str, Strategy]:
    uncertainty, anomaly = Uncertainty(), MostAnomalous()
    ordered: tuple[Strategy, ...] = (Auto(anomaly, uncertainty), uncertainty, anomaly, Arrival())
    return {s.name: s for s in ordered}


STRATEGIES: dict[str, Strategy] = _registry()  # `auto` first: the UI lists them in this order
DEFAULT_STRATEGY = "auto"


def strategy(name: str) -> Strategy:
    """The registered strategy `name`; ValueError (422) naming the choices otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        choices = ", ".join(STRATEGIES)
        raise ValueError(f"order must be one of {choices}; got {name!r}") from None
