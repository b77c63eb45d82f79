"""Uniform random choice over the pool: its expected point, and optionally seeded draws."""

from __future__ import annotations

from harness.matrix import OutcomeMatrix
from harness.metrics import random_draws, random_expected
from routers.base import Choices, Router, Routing
from routers.registry import ROUTERS


@ROUTERS.register("random")
class RandomChoice(Router):
    """The expected point (``config`` ""); with ``draws`` > 0, also that many seeded samples,
    reported as router ``random-draw``."""

    name = "random"
    handles_missing = True  # no training

    def route(self, test: OutcomeMatrix) -> Routing:
        quality, cost = random_expected(test.scores, test.costs)
        return self.routing_from_values([""], quality, cost)


@ROUTERS.register("random-draw")
class RandomDraws(Router):
    """Seeded uniform draws, one point each (``config`` = ``seed=S,draw=i``)."""

    name = "random-draw"
    handles_missing = True  # no training

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"seed": 0, "draws": 10}]

    def choose(self, test: OutcomeMatrix) -> Choices:
        seed, draws = int(self.params.get("seed", 0)), int(self.params.get("draws", 10))
        return Choices([f"seed={seed},draw={i}" for i in range(draws)], random_draws(test.n, test.m, draws, seed))
