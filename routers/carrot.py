"""CARROT: predict each model's quality *and its cost on this prompt*, route by ``λ·q̂ − ĉ``.

* Quality: per model, a ridge regression of the score on the embedding (intercept unpenalised),
  fitted on the training prompts that have that model's outcome; predictions are clipped to the
  range of the scores it was fitted on.
* Cost: per model, a ridge regression of ``log(cost + ε)`` on ``[log(prompt length in
  characters), embedding]``: the length term (unpenalised, like the intercept) carries the input
  tokens, the embedding the kind of prompt and so the expected answer length. ``ε`` is 10⁻³ of
  the model's median positive cost (free models stay free). Back on the $ scale the prediction
  is multiplied by the mean of ``exp(residual)`` (Duan's smearing), so ``ĉ`` estimates the mean
  cost, not its geometric mean. Where the training matrix has no prompt texts the cost model uses
  the embedding alone; a test set without texts while training had them gets the training mean
  log-length.

Only the decision uses ``ĉ``: the points' cost is still the recorded cost of the chosen model
(:meth:`Router.route`). ``ĉ`` is in $ whatever ``--cost-model`` says.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from harness.matrix import OutcomeMatrix
from routers.base import PredictiveRouter
from routers.registry import ROUTERS


def ridge_per_column(x: np.ndarray, y: np.ndarray, alpha: float, free: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients (p, M) and a mask of fitted columns for ``y ≈ x @ coef`` per column of the
    (n, M) target, each on its non-NaN rows; the first ``free`` columns of ``x`` (intercept…) are
    not penalised. Columns with the same missing pattern share one solve."""
    observed = ~np.isnan(y)
    penalty = np.full(x.shape[1], alpha)
    penalty[:free] = 0.0
    coef = np.zeros((x.shape[1], y.shape[1]))
    patterns, which = np.unique(observed.T, axis=0, return_inverse=True)
    for p, rows in enumerate(patterns):  # one solve per missing pattern (one for a complete matrix)
        cols = np.flatnonzero(which.ravel() == p)
        if not rows.any():
            continue
        xr = x[rows]
        gram = xr.T @ xr + np.diag(penalty) + 1e-10 * np.eye(x.shape[1])
        coef[:, cols] = np.linalg.solve(gram, xr.T @ y[rows][:, cols])
    return coef, observed.any(axis=0)


@ROUTERS.register("carrot")
class CarrotRouter(PredictiveRouter):
    """Settings: ``alpha`` (ridge penalty of both regressions)."""

    name = "carrot"
    needs_prompts = True
    handles_missing = True

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"alpha": a} for a in (1.0, 10.0)]

    def fit(self, train: OutcomeMatrix) -> None:
        super().fit(train)  # quality (fit_features) and the expected cost vector
        self.uses_length = train.prompts is not None
        observed = train.observed
        costs = np.where(observed, train.costs, np.nan)
        positive = np.where(costs > 0, costs, np.nan)
        has_positive = (~np.isnan(positive)).any(axis=0)
        median = np.nanmedian(np.where(has_positive[None, :], positive, 1.0), axis=0)
        self.eps = np.where(has_positive, 1e-3 * median, 1e-12)
        log_cost = np.log(np.maximum(costs, 0.0) + self.eps)
        if self.uses_length:
            self.mean_log_length = float(self._log_length(train).mean()) if train.n else 0.0
        x = self._cost_design(train)
        with threadpool_limits(1):
            self.cost_coef, self.cost_known = ridge_per_column(x, log_cost, self.alpha, free=2 if self.uses_length else 1)
            spread = np.where(observed, np.exp(log_cost - x @ self.cost_coef), 0.0)
        count = observed.sum(axis=0)
        self.smearing = np.divide(spread.sum(axis=0), count, out=np.ones(train.m), where=count > 0)

    @staticmethod
    def _log_length(matrix: OutcomeMatrix) -> np.ndarray:
        return np.log1p(np.fromiter(map(len, map(str, matrix.prompts)), dtype=float, count=len(matrix.prompts)))

    def _cost_design(self, matrix: OutcomeMatrix) -> np.ndarray:
        """``[1, log(1 + prompt characters), embedding]`` (no length column without texts at fit)."""
        x = np.asarray(matrix.features, dtype=np.float64)
        columns = [np.ones((len(x), 1))]
        if self.uses_length:
            log_length = self._log_length(matrix) if matrix.prompts is not None else np.full(len(x), self.mean_log_length)
            columns.append(log_length[:, None])
        return np.hstack([*columns, x])

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        self.alpha = float(self.params.get("alpha", 1.0))
        design = np.hstack([np.ones((len(x), 1)), x])
        self.quality_coef, self.quality_known = ridge_per_column(design, scores, self.alpha)
        fitted = np.where(self.quality_known, scores, 0.0)  # a model without outcomes: range [0, 0], never chosen
        self.low, self.high = np.nanmin(fitted, axis=0), np.nanmax(fitted, axis=0)

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        x = np.asarray(test.features, dtype=np.float64)
        quality = np.clip(np.hstack([np.ones((len(x), 1)), x]) @ self.quality_coef, self.low, self.high)
        return np.where(self.quality_known[None, :], quality, np.nan)

    def predict_cost(self, test: OutcomeMatrix) -> np.ndarray:
        """(n, M) predicted $ of each model on each test prompt; NaN for a model without training costs."""
        log_cost = self._cost_design(test) @ self.cost_coef
        cost = np.maximum(np.exp(log_cost) * self.smearing - self.eps, 0.0)
        return np.where(self.cost_known[None, :], cost, np.nan)

    def cost_term(self, test: OutcomeMatrix) -> np.ndarray:
        """The predicted (n, M) cost routes, not a per-model constant."""
        return self.predict_cost(test)
