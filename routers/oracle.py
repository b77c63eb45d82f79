"""Oracles: what a router that knew every test outcome would do (upper bounds, not routers).

``oracle`` is RouterBench's single point: per prompt the cheapest of the best-scoring models. A
single point has AIQ 0 over every cost below it, so a learned router can "beat" it. ``oracle-frontier``
sweeps the oracle over willingness to pay λ: per prompt the model maximising λ·score − cost (or no
model, where every one loses money). Its hull is the best any router could reach at each cost, and
its λ → ∞ end is the ``oracle`` point.
"""

from __future__ import annotations

import numpy as np

from harness.matrix import OutcomeMatrix
from harness.metrics import oracle
from routers.base import Choices, Router, route_lambdas
from routers.registry import ROUTERS

#: λ values of the frontier: dense enough that the hull has a vertex wherever the sweep makes one
#: (RouterBench's 32-value grid leaves gaps of 10× in λ), plus the evaluation's own grid.
FRONTIER_LAMBDAS = np.geomspace(1e-4, 1e9, 261)


@ROUTERS.register("oracle")
class Oracle(Router):
    name = "oracle"
    handles_missing = True  # no training: it reads the test outcomes, which are complete

    def choose(self, test: OutcomeMatrix) -> Choices:
        _, _, choice = oracle(test.scores, test.costs)
        return Choices([""], choice)


@ROUTERS.register("oracle-frontier")
class OracleFrontier(Router):
    name = "oracle-frontier"
    handles_missing = True

    def choose(self, test: OutcomeMatrix) -> Choices:
        lam = np.union1d(FRONTIER_LAMBDAS, np.asarray(self.options.lambdas, dtype=float))
        best = route_lambdas(test.scores, test.costs, lam)  # the true scores as the prediction
        # A prompt nobody solves at a profit goes nowhere.
        worth_it = test.scores[np.arange(test.n), best] * lam[:, None] - test.costs[np.arange(test.n), best] > 0
        return Choices([""] * len(lam), np.where(worth_it, best, -1), lam)
