"""The router contract.

A router is fitted on training prompts (their features, scores and costs) and routes test prompts.
It returns, for each of its settings (λ values, budgets…), the quality and the cost it obtains on
each test prompt; metrics turn those into points and hulls. Most routers pick one model per prompt
and only implement :meth:`Router.choose`; the base class checks the choices against the pool once
and looks up the chosen scores and costs in one vectorised step.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.errors import UserError
from harness.matrix import OutcomeMatrix
from harness.metrics import gather


@dataclass(frozen=True)
class Routing:
    """K routing decisions of one router on n test prompts."""

    router: str
    configs: list[str]
    lam: np.ndarray  # (K,), NaN where λ does not apply
    quality: np.ndarray  # (K, n) score obtained on each prompt
    cost: np.ndarray  # (K, n) $ spent on each prompt
    choice: np.ndarray | None = None  # (K, n) model index, -1 = no model; None for soft routers

    def __post_init__(self) -> None:
        k = len(self.configs)
        if self.quality.shape != self.cost.shape or self.quality.shape[0] != k or self.lam.shape != (k,):
            raise ValueError(f"inconsistent routing shapes for {self.router}")


@dataclass(frozen=True)
class Choices:
    """What :meth:`Router.choose` returns: model indices per setting, with labels."""

    configs: list[str]
    choice: np.ndarray  # (K, n) int
    lam: np.ndarray | None = None


def config_label(params: dict[str, Any]) -> str:
    """``{"k": 5, "metric": "cosine"}`` → ``"k=5,metric=cosine"`` (the ``config`` column)."""
    return ",".join(f"{k}={v}" for k, v in params.items())


class Router(ABC):
    """Base class: subclasses set ``name``, read their settings from ``self.params`` and implement
    :meth:`choose` (one model per prompt) or override :meth:`route` (anything else)."""

    name: ClassVar[str]
    #: Whether the router needs prompt embeddings (``OutcomeMatrix.features``).
    needs_features: ClassVar[bool] = False
    #: Whether the router needs the prompt texts (``OutcomeMatrix.prompts``).
    needs_prompts: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label})"

    @classmethod
    def grid(cls) -> list[dict[str, Any]]:
        """Default settings to evaluate, one router instance each (RouterBench's grid)."""
        return [{}]

    @property
    def label(self) -> str:
        return config_label(self.params)

    def fit(self, train: OutcomeMatrix) -> None:  # noqa: B027 - most baselines need no training
        """Learn from the training prompts; the default router needs nothing."""

    def choose(self, test: OutcomeMatrix) -> Choices:
        raise NotImplementedError

    def route(self, test: OutcomeMatrix) -> Routing:
        decided = self.choose(test)
        choice = np.asarray(decided.choice, dtype=np.int64)
        if choice.ndim == 1:
            choice = choice[None, :]
        if choice.shape[1] != test.n:
            raise ValueError(f"router '{self.name}' chose for {choice.shape[1]} prompts, expected {test.n}")
        bad = (choice < -1) | (choice >= test.m)
        if bad.any():
            raise UserError(f"router '{self.name}' chose model index {int(choice[bad][0])}, outside the pool of {test.m} models")
        routed = choice >= 0
        idx = np.maximum(choice, 0)
        quality = np.where(routed, gather(test.scores, idx), 0.0)
        cost = np.where(routed, gather(test.costs, idx), 0.0)
        lam = np.full(len(decided.configs), np.nan) if decided.lam is None else np.asarray(decided.lam, dtype=float)
        return Routing(self.name, decided.configs, lam, quality, cost, choice)

    def routing_from_values(self, configs: list[str], quality: np.ndarray, cost: np.ndarray, lam: np.ndarray | None = None) -> Routing:
        """A routing given directly as per-prompt quality and cost (soft or multi-call routers)."""
        quality = np.atleast_2d(quality)
        lam = np.full(len(configs), np.nan) if lam is None else np.asarray(lam, dtype=float)
        return Routing(self.name, configs, lam, quality, np.atleast_2d(cost))
