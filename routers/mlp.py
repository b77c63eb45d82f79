"""A multi-layer perceptron regressing every model's quality from the prompt embedding.

RouterBench trains one network per model; by default this trains one network with M outputs
(``per_model=False``), which fits M times faster and predicts as well. ``per_model=True``
reproduces the original (and is what ``--parity routerbench`` uses). Either trains on the training
prompts complete for the pool.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

from harness.matrix import OutcomeMatrix
from routers.base import PredictiveRouter
from routers.registry import ROUTERS


@ROUTERS.register("mlp")
class MLPRouter(PredictiveRouter):
    name = "mlp"
    # One network with M outputs cannot leave missing entries out of its loss in sklearn, and both
    # settings should learn from the same prompts: the MLP trains on complete rows only.
    handles_missing = False

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"hidden": h, "activation": "relu", "lr": 0.001} for h in ("100", "100x100")]

    def _network(self) -> MLPRegressor:
        hidden = tuple(int(h) for h in str(self.params.get("hidden", "100")).split("x"))
        return MLPRegressor(
            hidden_layer_sizes=hidden,
            activation=self.params.get("activation", "relu"),
            solver="adam",
            learning_rate="constant",
            learning_rate_init=float(self.params.get("lr", 0.001)),
            max_iter=200,
            random_state=1234,
        )

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        # float32 halves the training time (the embeddings are float32 to begin with); parity trains
        # on float64, as RouterBench's code does.
        dtype = np.float64 if self.options.parity == "routerbench" else np.float32
        x, scores = x.astype(dtype), scores.astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.params.get("per_model", self.options.parity == "routerbench"):
                self.networks = [self._network().fit(x[~np.isnan(s)], s[~np.isnan(s)]) for s in scores.T]
            else:
                self.networks = [self._network().fit(x, scores)]

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        x = np.asarray(test.features, dtype=np.float64 if self.options.parity == "routerbench" else np.float32)
        return np.column_stack([net.predict(x).reshape(len(x), -1) for net in self.networks]).astype(np.float64)
