"""A linear support-vector regressor per model on prompt embeddings (RouterBench's SVM router),
each trained on the prompts that have that model's outcome."""

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
    handles_missing = True  # each model's regressor trains on the prompts that have its outcome

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"kernel": "linear"}]

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        self.models = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for j in range(scores.shape[1]):
                known = ~np.isnan(scores[:, j])
                self.models.append(LinearSVR(random_state=1234).fit(x[known], scores[known, j]) if known.any() else None)

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        x = np.asarray(test.features, dtype=np.float64)
        # a model without training outcomes is predicted NaN: never chosen
        return np.column_stack([np.full(len(x), np.nan) if m is None else m.predict(x) for m in self.models])
