"""Cascades: call models cheapest first until a judge accepts an answer or the budget runs out.

The judge accepts an answer whose score reaches a threshold (by default the 95th percentile of
all scores of the family) but errs with probability ε, flipping its verdict. Every model called
is paid for; the first model is always called; before each further model the cascade stops if
that model's cost on this prompt would reach the budget left. Without an accepted answer the
last answer counts. All (budget, ε) settings and all prompts advance together, one model at a
time: M vectorised steps instead of a Python loop over prompts.
"""

from __future__ import annotations

import numpy as np

from harness.matrix import OutcomeMatrix
from routers.base import Router, Routing
from routers.registry import ROUTERS

BUDGETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0)
ERROR_RATES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)


def run_cascade(
    scores: np.ndarray,
    costs: np.ndarray,
    order: np.ndarray,
    threshold: float,
    budgets: np.ndarray,
    error_rates: np.ndarray,
    judge_draws: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Quality and cost per (setting, prompt) for settings ``(budgets[k], error_rates[k])``.

    ``judge_draws`` (K, n, M) are uniform draws; the judge errs on step s when its draw < ε.
    """
    k, n = len(budgets), len(scores)
    active = np.ones((k, n), dtype=bool)
    spent = np.zeros((k, n))
    remaining = np.repeat(np.asarray(budgets, dtype=float)[:, None], n, axis=1)
    last = np.zeros((k, n))
    for step, j in enumerate(order):
        cost_j = costs[:, j][None, :]
        if step > 0:
            active &= ~((cost_j >= remaining) & (spent > 0))
        wrong = judge_draws[:, :, step] < error_rates[:, None]
        good = scores[:, j][None, :] >= threshold
        accepted = np.where(wrong, ~good, good)
        spent = np.where(active, spent + cost_j, spent)
        remaining = np.where(active, remaining - cost_j, remaining)
        last = np.where(active, scores[:, j][None, :], last)
        active &= ~accepted
        if not active.any():
            break
    return last, spent


@ROUTERS.register("cascade")
class CascadeRouter(Router):
    """One router instance per judge error rate ε, sweeping the budgets; one curve per ε."""

    name = "cascade"
    # Training gives only the cheapest-first order (expected costs over observed outcomes) and the
    # score threshold; the cascade itself runs on the test prompts, which are complete.
    handles_missing = True

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"error_rate": e} for e in ERROR_RATES]

    def fit(self, train: OutcomeMatrix) -> None:
        self.cost = self.options.cost_vector(train)
        self.train_scores = train.scores[train.observed]

    def route(self, test: OutcomeMatrix) -> Routing:
        error_rate = float(self.params.get("error_rate", 0.0))
        budgets = np.asarray(self.params.get("budgets", BUDGETS), dtype=float)
        quantile = float(self.params.get("quantile", 0.95))
        all_scores = np.concatenate([self.train_scores, test.scores.ravel()])
        threshold = float(self.params.get("threshold", np.nanquantile(all_scores, quantile)))
        order = np.argsort(self.cost, kind="stable")  # cheapest first; ties keep pool order
        seed = [self.options.seed, int(round(error_rate * 1e6))]
        draws = np.random.default_rng(seed).random((len(budgets), test.n, test.m))
        quality, cost = run_cascade(
            test.scores, test.costs, order, threshold, budgets, np.full(len(budgets), error_rate), draws
        )
        configs = [f"error_rate={error_rate:g},budget={b:g}" for b in budgets]
        return self.routing_from_values(configs, quality, cost, curves=[f"error_rate={error_rate:g}"] * len(budgets))
