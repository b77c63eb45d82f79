"""Every prompt to one model: the single-LLM points that the zero router is built from."""

from __future__ import annotations

import numpy as np

from harness.matrix import OutcomeMatrix
from routers.base import Choices, Router
from routers.registry import ROUTERS


@ROUTERS.register("llm")
class SingleModel(Router):
    """One setting per model in the pool; ``config`` is the model name."""

    name = "llm"
    handles_missing = True  # no training

    def choose(self, test: OutcomeMatrix) -> Choices:
        choice = np.repeat(np.arange(test.m)[:, None], test.n, axis=1)
        return Choices(list(test.models), choice)
