"""The router contract.

A router is fitted on training prompts (their features, scores and costs) and routes test prompts.
It returns, for each of its settings (λ values, budgets…), the quality and the cost it obtains on
each test prompt; metrics turn those into points and hulls. Most routers pick one model per prompt
and only implement :meth:`Router.choose`; the base class checks the choices against the pool once
and looks up the chosen scores and costs in one vectorised step.

Predictive routers (:class:`PredictiveRouter`) predict an n×M quality matrix once and route a
whole grid of willingness-to-pay values λ with one argmax of ``λ·P − c``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from harness.errors import UserError
from harness.matrix import OutcomeMatrix
from harness.metrics import gather

#: RouterBench's willingness-to-pay grid (utils.WILLINGNESS_TO_PAY).
ROUTERBENCH_LAMBDAS: tuple[float, ...] = (
    1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.1, 0.5, 1.0, 1.5, 2.0, 10.0,
    50.0, 100.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 7500.0, 1e4, 2.5e4, 5e4, 7.5e4, 1e5, 1e6, 1e9,
)  # fmt: skip
COST_MODELS = ("expected", "price")
#: Elements of one block of route_lambdas' (λ, n, M) utility array.
_UTILITY_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class RoutingOptions:
    """Settings shared by every router of an evaluation.

    ``cost_model``: the cost term ``c`` of ``λ·P − c`` (and the cascade's order). ``expected``: each
    model's mean $ per query on the training prompts of the family. ``price``: RouterBench's, each
    model's input + output list price per token, from ``prices`` (its model config).
    """

    cost_model: str = "expected"
    prices: dict[str, float] = field(default_factory=dict)
    lambdas: tuple[float, ...] = ROUTERBENCH_LAMBDAS
    seed: int = 0
    #: ``"routerbench"``: routers reproduce that code's choices where ours differ on purpose
    #: (KNN ties as sklearn breaks them, one MLP per model).
    parity: str | None = None

    def __post_init__(self) -> None:
        if self.cost_model not in COST_MODELS:
            raise UserError(f"--cost-model must be one of {', '.join(COST_MODELS)}, not '{self.cost_model}'")

    def cost_vector(self, train: OutcomeMatrix) -> np.ndarray:
        """The per-model cost term, in pool order."""
        if self.cost_model == "expected":
            return expected_cost(train)
        missing = [m for m in train.models if m not in self.prices]
        if missing:
            raise UserError(
                f"--cost-model price needs a model config with prices for {', '.join(missing)} "
                "(add model_configs/<name>.yaml or use --cost-model expected)"
            )
        return np.array([self.prices[m] for m in train.models], dtype=float)


def expected_cost(train: OutcomeMatrix) -> np.ndarray:
    """Each model's mean $ per query over the training prompts that have its outcome; NaN for a
    model with none (a router never chooses it)."""
    observed = train.observed
    count = observed.sum(axis=0)
    total = np.where(observed, train.costs, 0.0).sum(axis=0)
    return np.divide(total, count, out=np.full(train.m, np.nan), where=count > 0)


@dataclass(frozen=True)
class Routing:
    """K routing decisions of one router on n test prompts.

    ``configs`` labels each decision's settings (the ``config`` column of points); ``curves``
    groups decisions into the curves whose hull and AIQ are reported (a λ sweep, or a cascade's
    budgets at one judge error rate).
    """

    router: str
    configs: list[str]
    lam: np.ndarray  # (K,), NaN where λ does not apply
    quality: np.ndarray  # (K, n) score obtained on each prompt
    cost: np.ndarray  # (K, n) $ spent on each prompt
    choice: np.ndarray | None = None  # (K, n) model index, -1 = no model; None for other routers
    curves: list[str] | None = None

    def __post_init__(self) -> None:
        k = len(self.configs)
        if self.quality.shape != self.cost.shape or self.quality.shape[0] != k or self.lam.shape != (k,):
            raise ValueError(f"inconsistent routing shapes for {self.router}")
        if self.curves is None:
            object.__setattr__(self, "curves", list(self.configs))

    @classmethod
    def concat_prompts(cls, parts: list[Routing]) -> Routing:
        """Pool routings of the same router over disjoint prompt sets (folds)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        stack = lambda name: np.concatenate([getattr(p, name) for p in parts], axis=1)  # noqa: E731
        choice = None if first.choice is None else stack("choice")
        return cls(first.router, first.configs, first.lam, stack("quality"), stack("cost"), choice, first.curves)


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
    #: Whether :meth:`fit` takes training prompts that lack some models' outcomes (NaN scores and
    #: costs, ``OutcomeMatrix.observed``). Routers that don't (the default) are fitted on the
    #: complete training rows only (:meth:`training_rows`); test prompts are always complete.
    handles_missing: ClassVar[bool] = False

    def __init__(self, options: RoutingOptions | None = None, **params: Any) -> None:
        self.options = options or RoutingOptions()
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

    def settings(self) -> list[Router]:
        """The router as single-setting routers: itself, unless one instance routes several settings
        at once (a multi-k KNN), which calibration tunes one at a time."""
        return [self]

    def training_rows(self, train: OutcomeMatrix) -> OutcomeMatrix:
        """What :meth:`fit` gets: every training prompt, or only the complete ones (``handles_missing``)."""
        return train if self.handles_missing else train.take(train.complete_rows())

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

    def routing_from_values(
        self, configs: list[str], quality: np.ndarray, cost: np.ndarray, curves: list[str] | None = None
    ) -> Routing:
        """A routing given directly as per-prompt quality and cost (soft or multi-call routers)."""
        quality = np.atleast_2d(quality)
        return Routing(self.name, configs, np.full(len(configs), np.nan), quality, np.atleast_2d(cost), curves=curves)


class PredictiveRouter(Router):
    """Predicts each model's quality on each prompt from its embedding, then routes every λ at once."""

    needs_features = True

    def fit(self, train: OutcomeMatrix) -> None:
        if train.features is None:
            raise ValueError(f"router '{self.name}' needs prompt embeddings")
        if train.n == 0:
            which = "training prompts" if self.handles_missing else "training prompts with an outcome for every model"
            raise UserError(f"router '{self.name}' has no {which} in task family '{train.family}' (--models picks a smaller pool)")
        self.cost = self.options.cost_vector(train)
        scores = np.where(train.observed, train.scores, np.nan)  # NaN exactly where an outcome is missing
        # One BLAS thread: float sums then do not depend on how many threads a process has, so a
        # Ray worker (OMP_NUM_THREADS=1) and this process fit and predict bit-identically.
        with threadpool_limits(1):
            self.fit_features(np.asarray(train.features, dtype=np.float64), scores)

    @abstractmethod
    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        """Learn to predict the (n, M) scores from the (n, d) embeddings; with ``handles_missing``,
        NaN scores are outcomes that do not exist."""

    @abstractmethod
    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        """Predicted quality, (n, M), computed once per test set; NaN where the router knows nothing
        of a model (it is then never chosen)."""

    def cost_term(self, test: OutcomeMatrix) -> np.ndarray:
        """The ``c`` of ``λ·P − c`` on these prompts: (M,) per model, or (n, M) for a router that
        predicts each prompt's cost."""
        return self.cost

    def choose(self, test: OutcomeMatrix) -> Choices:
        lam = np.asarray(self.options.lambdas, dtype=float)
        with threadpool_limits(1):
            predicted, cost = self.predict(test), self.cost_term(test)
        return Choices([self.label] * len(lam), route_lambdas(predicted, cost, lam), lam)


def route_lambdas(predicted: np.ndarray, cost: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """(K, n) choices: per λ and prompt the model maximising ``P·λ − c`` (first model wins ties).

    ``cost`` is (M,) per model or (n, M) per prompt. Computed as RouterBench does, ``P * λ - c`` in
    float64: at λ = 1e9 the cost vanishes under the product's rounding and ties fall to pool order,
    exactly as in its code. A NaN prediction or cost (a model without training outcomes) is never chosen.
    Blocks of λ bound the (λ, n, M) utility array, whatever the grid (calibration's has ~430 values).
    """
    cost = np.asarray(cost, dtype=float)[None]
    lambdas = np.asarray(lambdas, dtype=float)
    choice = np.empty((len(lambdas), predicted.shape[0]), dtype=np.int64)
    per_block = max(1, _UTILITY_ELEMENTS // max(1, predicted.size))
    for start in range(0, len(lambdas), per_block):
        utility = predicted[None, :, :] * lambdas[start : start + per_block, None, None] - cost
        choice[start : start + per_block] = np.where(np.isnan(utility), -np.inf, utility).argmax(axis=2)
    return choice
