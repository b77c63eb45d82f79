"""k nearest neighbours on prompt embeddings: a model's predicted quality is its mean score on the
k most similar training prompts (cosine), as in RouterBench."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from harness.matrix import OutcomeMatrix
from routers.base import PredictiveRouter
from routers.registry import ROUTERS


@ROUTERS.register("knn")
class KNNRouter(PredictiveRouter):
    name = "knn"

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"k": k, "metric": "cosine"} for k in (5, 10, 40)]

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        k = int(self.params.get("k", 5))
        # Brute force is what sklearn picks for cosine anyway; BLAS makes it fast at these sizes.
        self.index = NearestNeighbors(n_neighbors=min(k, len(x)), metric=self.params.get("metric", "cosine"), algorithm="brute").fit(x)
        self.train_scores = scores

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        _, neighbours = self.index.kneighbors(np.asarray(test.features, dtype=np.float64))
        return self.train_scores[neighbours].mean(axis=1)
