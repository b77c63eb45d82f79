"""The oracle: per prompt the cheapest of the best-scoring models (an upper bound, not a router)."""

from __future__ import annotations

from harness.matrix import OutcomeMatrix
from harness.metrics import oracle
from routers.base import Choices, Router
from routers.registry import ROUTERS


@ROUTERS.register("oracle")
class Oracle(Router):
    name = "oracle"
    handles_missing = True  # no training: it reads the test outcomes, which are complete

    def choose(self, test: OutcomeMatrix) -> Choices:
        _, _, choice = oracle(test.scores, test.costs)
        return Choices([""], choice)
