"""Routers fitted once, at start-up, on the store's outcomes; then one prompt (or a few) at a time.

Fitting reuses what ``evaluate`` uses: the store's outcome matrices of the deployed pool (every
task family but the traffic one, rows pooled: a served prompt may be about anything), prompt
embeddings from the store's cache (:func:`harness.embeddings.attach_features`), the router's own
``fit``, and for ``@cost=X`` the λ that cross-validation on the store picks for that mean cost
(:func:`harness.calibration.cross_validate` + :func:`~harness.calibration.select_lambda`).

Serving embeds the request's text with the same embedder and text mode (``plain``: a served prompt
has no family whose shared few-shot prefix could be stripped, so training texts are not stripped
either) and routes with the router's ``predict`` + ``route_lambdas`` at the fixed λ, vectorised
over however many prompts arrive together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from harness.calibration import DEFAULT_CV_FOLDS, cross_validate, select_lambda
from harness.embed_backends import FAST_BACKEND, OnnxEncoder, build_onnx
from harness.embeddings import DEFAULT_EMBED_BACKEND, DEFAULT_EMBEDDER, attach_features, encode, load_embedder, model_inputs
from harness.errors import UserError
from harness.matrix import OutcomeMatrix, concat_matrices, outcome_matrices
from harness.serving.setting import RouteSetting
from harness.store import Store
from routers import PredictiveRouter
from routers.base import route_lambdas

#: The task family served requests are appended to (and left out of fitting).
TRAFFIC_FAMILY = "traffic"
EMBED_TEXT = "plain"


@dataclass(frozen=True)
class Embedder:
    """Which model embeds prompts, the same at fit time and at request time."""

    name: str = DEFAULT_EMBEDDER
    backend: str = DEFAULT_EMBED_BACKEND

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors of the few texts of a request (or of requests that came together)."""
        if self.backend == FAST_BACKEND:
            _, inverse, ids, _ = model_inputs(texts, self.name)
            return _request_encoder(self.name).encode(ids)[inverse].astype(np.float64)
        return encode(texts, self.name, backend=self.backend).astype(np.float64)


class RequestEncoder(OnnxEncoder):
    """The fast backend's int8 graph, run as a request path needs it: on one thread that sleeps
    between calls. The batch encoder spreads a batch over every core and keeps its threads
    spinning between runs; between requests that spinning takes the cores Serve's proxy and the
    upstream calls need (on 2 busy cores it doubled the routing overhead)."""

    def __init__(self, path: Path, pad_id: int, input_names: list[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.pad_id = pad_id
        self.names = [i.name for i in self.session.get_inputs()]


@lru_cache(maxsize=2)
def _request_encoder(name: str) -> RequestEncoder:
    model = load_embedder(name)
    return RequestEncoder(build_onnx(model, name), model.tokenizer.pad_token_id or 0, list(model.tokenizer.model_input_names))


@dataclass(frozen=True)
class RouteDecision:
    """Where one prompt goes, and what the router expected of it there."""

    setting: str
    model: str
    predicted_quality: float
    predicted_cost: float

    def header(self) -> str:
        """The ``x-routerbench-route`` header value."""
        return f"setting={self.setting}; model={self.model}; quality={self.predicted_quality:.4g}; cost={self.predicted_cost:.4g}"


@dataclass
class FittedRoute:
    """A fitted router at one λ over a fixed model pool."""

    setting: RouteSetting
    router: PredictiveRouter
    lam: float
    models: tuple[str, ...]
    n_train: int
    status: str = "ok"  # calibration: ok | below-range | above-range (the target was out of reach)

    def decide(self, features: np.ndarray) -> list[RouteDecision]:
        """One decision per row of ``features`` (n, d): one predict and one argmax for all."""
        n, m = len(features), len(self.models)
        rows = OutcomeMatrix(
            family=TRAFFIC_FAMILY,
            sample_ids=np.array([f"request-{i}" for i in range(n)], dtype=object),
            tasks=np.full(n, TRAFFIC_FAMILY, dtype=object),
            models=self.models,
            scores=np.full((n, m), np.nan),
            costs=np.full((n, m), np.nan),
            features=np.asarray(features, dtype=np.float64),
        )
        predicted = self.router.predict(rows)
        cost = np.broadcast_to(np.asarray(self.router.cost_term(rows), dtype=float), (n, m))
        choice = route_lambdas(predicted, cost, np.array([self.lam]))[0]
        at = np.arange(n)
        quality, spend = predicted[at, choice], cost[at, choice]
        return [RouteDecision(self.setting.name, self.models[j], float(q), float(c)) for j, q, c in zip(choice, quality, spend)]


def training_matrix(store: Store, models: Sequence[str], embedder: Embedder, families: Sequence[str] | None = None) -> OutcomeMatrix:
    """All prompts of the store (but traffic) × the pool, with embeddings, as one matrix."""
    matrices = outcome_matrices(store, families, models=list(models), with_prompts=True)
    matrices = {f: m for f, m in matrices.items() if f != TRAFFIC_FAMILY}
    if not matrices:
        raise UserError(f"{store.uri}: no prompts to fit routers on{' in task families ' + ', '.join(families) if families else ''}; import or extend outcomes first")
    train = concat_matrices(list(attach_features(store, matrices, embedder.name, EMBED_TEXT, embed_backend=embedder.backend).values()), family="serve")
    empty = [m for m, k in zip(train.models, train.coverage()) if k == 0]
    if empty:
        raise UserError(f"{store.uri}: model '{empty[0]}' has no scored outcomes to learn from; run `routerbench extend --model model_configs/{empty[0]}.yaml` first or leave it out of --models")
    return train


def fit_route(setting: RouteSetting, train: OutcomeMatrix, cv_folds: int = DEFAULT_CV_FOLDS) -> FittedRoute:
    """Fit ``setting`` on ``train``; a cost target picks λ by cross-validation on the same rows."""
    router = setting.build()
    lam, status = setting.value, "ok"
    if setting.target is not None:
        curve = cross_validate(router, train, folds=cv_folds)
        at, status = select_lambda(setting.target, curve.cost, curve.quality, None)
        lam = float(curve.lambdas[at])
    rows = router.training_rows(train)
    router.fit(rows)
    if not math.isfinite(lam):
        raise UserError(f"router setting '{setting.name}': no λ could be chosen")
    return FittedRoute(setting, router, lam, train.models, rows.n, status)


def fit_routes(store: Store, settings: Sequence[RouteSetting], models: Sequence[str], embedder: Embedder, families: Sequence[str] | None = None) -> list[FittedRoute]:
    """Every deployed setting fitted on one training matrix (embedded once)."""
    train = training_matrix(store, models, embedder, families)
    return [fit_route(s, train) for s in settings]
