"""A linear support-vector regressor per model on prompt embeddings (RouterBench's SVM router)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVR

from harness.matrix import OutcomeMatrix
from routers.base import PredictiveRouter
from routers.registry import ROUTERS


@ROUTERS.register("svm")
class SVMRouter(PredictiveRouter):
    name = "svm"

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"kernel": "linear"}]

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        self.models = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for j in range(scores.shape[1]):
                known = ~np.isnan(scores[:, j])
                self.models.append(LinearSVR(random_state=1234).fit(x[known], scores[known, j]))

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        x = np.asarray(test.features, dtype=np.float64)
        return np.column_stack([m.predict(x) for m in self.models])
