"""k nearest neighbours on prompt embeddings: a model's predicted quality is its mean score on the
k most similar training prompts (cosine), as in RouterBench.

Where some training prompts lack a model's outcome, that model's prediction averages its k nearest
neighbours among the prompts that have it: one neighbour search deep enough for every model, then
per model the first k observed neighbours (a cumulative count over the mask), for all prompts at once.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from harness.matrix import OutcomeMatrix
from routers.base import PredictiveRouter
from routers.registry import ROUTERS

#: Test prompts per block of the masked search: bounds the (prompts, depth, models) arrays it builds.
_BLOCK_ELEMENTS = 1 << 24


@ROUTERS.register("knn")
class KNNRouter(PredictiveRouter):
    name = "knn"
    handles_missing = True

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"k": k, "metric": "cosine"} for k in (5, 10, 40)]

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        self.k = min(int(self.params.get("k", 5)), len(x))
        # Brute force is what sklearn picks for cosine anyway; BLAS makes it fast at these sizes.
        self.index = NearestNeighbors(n_neighbors=self.k, metric=self.params.get("metric", "cosine"), algorithm="brute").fit(x)
        self.observed = ~np.isnan(scores)
        self.train_scores = np.where(self.observed, scores, 0.0)

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        x = np.asarray(test.features, dtype=np.float64)
        if self.observed.all():
            _, neighbours = self.index.kneighbors(x)
            return self.train_scores[neighbours].mean(axis=1)
        n, m = self.observed.shape
        block = max(1, _BLOCK_ELEMENTS // (n * m))
        return np.concatenate([self._masked_mean(x[i : i + block]) for i in range(0, len(x), block)])

    def _masked_mean(self, x: np.ndarray) -> np.ndarray:
        """Per prompt and model, the mean score of the k nearest training prompts with that model's
        outcome (fewer where the model has fewer; NaN where it has none)."""
        n = len(self.observed)
        available = self.observed.sum(axis=0)
        wanted = np.minimum(self.k, available)  # observed neighbours each model needs
        # Deep enough that a model answering a share s of the prompts shows about k/s of them in
        # expectation, with room to spare; deepened (rarely) until every model has what it needs.
        depth = min(n, 2 * int(np.ceil(self.k * n / max(1, available[available > 0].min(initial=n)))) + self.k)
        while True:
            _, neighbours = self.index.kneighbors(x, n_neighbors=depth)
            observed = self.observed[neighbours]  # (t, depth, M), nearest first
            rank = observed.cumsum(axis=1)
            if depth == n or (rank[:, -1, :] >= wanted).all():
                break
            depth = min(n, 2 * depth)
        take = observed & (rank <= self.k)
        count = take.sum(axis=1)
        total = np.where(take, self.train_scores[neighbours], 0.0).sum(axis=1)
        return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)
