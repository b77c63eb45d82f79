"""k nearest neighbours on prompt embeddings: a model's predicted quality is its mean score on the
k most similar training prompts (cosine), as in RouterBench.

* **Ties.** With ``ties="all"`` (the default) the neighbours are every training prompt at a distance
  ≤ the k-th smallest (within ``d·(1 + 1e-12) + 1e-12``: duplicated prompts embed to distances
  that differ in the last bits), so duplicated training prompts are averaged together and the
  prediction does not depend on the training rows' order. ``ties="sklearn"`` takes exactly the k
  that sklearn's brute-force search for k neighbours returns (an arbitrary subset of a tie),
  as RouterBench's code does; that pick depends on how many neighbours are asked for, so this
  mode searches once per k. Where every prompt embeds alike the "tied" distances differ in the
  last bit by where each pair falls in BLAS's matrix tiles, so the pick also depends on how the
  search is computed: this mode queries exactly as RouterBench does (``n_jobs=-1``, every test
  prompt in one ``kneighbors`` call, the process's own BLAS threads rather than the one thread
  routing otherwise uses) and so returns sklearn's neighbours on any machine.
* **Several k at once.** ``k="5,10,40"`` (the default grid: one router instance, one Ray task)
  routes every k from one neighbour search: prefix sums of
  the neighbours' scores give each k's mean, and ``choose`` returns every k's λ sweep, labelled
  ``k=5,metric=cosine``… as separate single-k routers would be (one hull per k).
* **Missing outcomes.** A model's prediction averages its k nearest neighbours among the training
  prompts that have its outcome: one search deep enough for every model (deepened, rarely, until
  it is), then per model the prefix up to its k-th observed neighbour (a cumulative count over the
  mask), for all prompts at once.
* **The search.** With ``ties="all"`` and a cosine or euclidean metric, one matrix product and a
  partial sort per block of prompts (:func:`brute_kneighbors`): the same distances as sklearn's
  brute-force search without its per-call checks, which were most of a served request's routing
  (~2 ms of 2.5 on a small store). ``ties="sklearn"`` and other metrics search with sklearn.
* ``knn-cv`` picks k by 5-fold cross-validation on the training prompts (masked squared error).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_info, threadpool_limits

from harness.errors import UserError
from harness.matrix import OutcomeMatrix
from routers.base import Choices, PredictiveRouter, config_label, route_lambdas
from routers.registry import ROUTERS

#: The BLAS/OpenMP threads this process has outside any ``threadpool_limits`` (what RouterBench's
#: own k-search runs with): ties="sklearn" searches with them, as ``choose`` limits routing to one.
_PROCESS_THREADS = threadpool_info()
#: Bounds the (prompts, depth, models) arrays of one block of test prompts.
_BLOCK_ELEMENTS = 1 << 24
TIES = ("all", "sklearn")
#: Relative and absolute slack of "the same distance" (ties="all").
TIE_RTOL = TIE_ATOL = 1e-12
CV_CANDIDATES = (1, 2, 5, 10, 20, 40, 80, 160)
#: Metrics :func:`brute_kneighbors` computes itself.
BRUTE_METRICS = ("cosine", "euclidean")
#: Bounds the (prompts, training prompts) distance block of one search.
_SEARCH_ELEMENTS = 1 << 22
#: ``search(x, depth)``: each row of ``x``'s ``depth`` nearest training prompts, (distances, indices), nearest first.
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
CV_FOLDS = 5


def parse_ks(value: Any) -> tuple[int, ...]:
    """``5``, ``"5,10,40"`` or ``(5, 10, 40)`` → ``(5, 10, 40)``."""
    items = str(value).split(",") if isinstance(value, (str, int, np.integer)) else list(value)
    try:
        ks = tuple(int(str(k).strip()) for k in items)
    except ValueError:
        raise UserError(f"knn: k must be an integer or a comma-separated list of integers, not '{value}'") from None
    if not ks or min(ks) < 1:
        raise UserError(f"knn: every k must be ≥ 1, not '{value}'")
    return ks


def search_rows(train: np.ndarray, metric: str) -> np.ndarray:
    """The training rows as :func:`brute_kneighbors` reads them (unit rows for cosine)."""
    train = np.asarray(train, dtype=np.float64)
    return _unit(train) if metric == "cosine" else train


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)  # a zero row stays zero, as sklearn's normalize leaves it


def brute_kneighbors(rows: np.ndarray, metric: str, x: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``x``'s ``depth`` nearest of ``rows`` (:func:`search_rows`), nearest first, as
    sklearn's brute-force ``kneighbors`` finds them: cosine distance 1 − cos clipped to [0, 2],
    euclidean √(|x|² − 2x·y + |y|²); which of equally distant rows come first may differ."""
    n = len(rows)
    x = np.asarray(x, dtype=np.float64)
    dist_out, idx_out = [], []
    step = max(1, _SEARCH_ELEMENTS // max(n, 1))
    for start in range(0, len(x), step):
        q = x[start : start + step]
        if metric == "cosine":
            d = _unit(q) @ rows.T
            np.subtract(1.0, d, out=d)
            np.clip(d, 0.0, 2.0, out=d)
        else:
            d = q @ rows.T
            d *= -2.0
            d += (q * q).sum(axis=1)[:, None]
            d += (rows * rows).sum(axis=1)[None, :]
            np.maximum(d, 0.0, out=d)
            np.sqrt(d, out=d)
        near = np.argpartition(d, depth - 1, axis=1)[:, :depth] if depth < n else np.broadcast_to(np.arange(n), d.shape)
        near_d = np.take_along_axis(d, near, axis=1)
        order = np.argsort(near_d, axis=1, kind="stable")
        dist_out.append(np.take_along_axis(near_d, order, axis=1))
        idx_out.append(np.take_along_axis(near, order, axis=1))
    if not dist_out:
        return np.zeros((0, depth)), np.zeros((0, depth), dtype=np.int64)
    return np.concatenate(dist_out), np.concatenate(idx_out)


def searcher(x: np.ndarray, metric: str, ties: str, n_jobs: int | None = None) -> tuple[Search, NearestNeighbors | None, np.ndarray | None]:
    """The neighbour search over training features ``x``: ``(search, sklearn index or None, rows
    for brute_kneighbors or None)``; sklearn's where ``ties="sklearn"`` (its pick within a tie is
    the point) or the metric is not one of :data:`BRUTE_METRICS`."""
    if ties == "sklearn" or metric not in BRUTE_METRICS:
        index = NearestNeighbors(n_neighbors=1, metric=metric, algorithm="brute", n_jobs=n_jobs).fit(x)
        return _sklearn_search(index), index, None
    rows = search_rows(x, metric)
    return functools.partial(brute_kneighbors, rows, metric), None, rows


def _sklearn_search(index: NearestNeighbors) -> Search:
    return lambda x, depth: index.kneighbors(x, n_neighbors=depth)


def neighbour_means(
    search: Search, observed: np.ndarray, train_scores: np.ndarray, x: np.ndarray, ks: tuple[int, ...], ties: str
) -> np.ndarray:
    """(len(ks), t, M): per k, query prompt and model, the mean score of its k nearest training
    prompts with that model's outcome (fewer where the model has fewer, NaN where it has none).

    ``observed`` / ``train_scores`` are the (n, M) mask and scores (0 where missing) of the
    training prompts ``search`` searches.
    """
    n, m = observed.shape
    if ties == "sklearn" and len(ks) > 1 and observed.all():
        # sklearn's pick within a tie depends on how many neighbours are asked for: one search per
        # k, each exactly as RouterBench's k-neighbour search (parity over speed).
        return np.concatenate([neighbour_means(search, observed, train_scores, x, (k,), ties) for k in ks])
    available = observed.sum(axis=0)
    k_max = min(max(ks), n)
    # Deep enough that a model answering a share s of the prompts shows about k/s of them in
    # expectation, with room to spare (and for ties); deepened until every model has what it needs.
    least = max(1, int(available[available > 0].min(initial=n)))
    depth = k_max if least >= n else 2 * int(np.ceil(k_max * n / least)) + k_max
    if ties == "all":
        depth += k_max // 4 + 8  # room for a tie at the k-th distance
    depth = min(n, depth)
    # ties="sklearn" with every outcome (RouterBench's case): every query in one search, as the port
    # asks (the tie's pick depends on the query batch); otherwise blocks bound the memory.
    block = max(1, len(x)) if ties == "sklearn" and observed.all() else max(1, _BLOCK_ELEMENTS // (depth * m))
    out = [_block_means(search, observed, train_scores, available, x[i : i + block], ks, ties, depth) for i in range(0, len(x), block)]
    return np.concatenate(out, axis=1) if out else np.zeros((len(ks), 0, m))


def _block_means(
    search: Search,
    observed: np.ndarray,
    train_scores: np.ndarray,
    available: np.ndarray,
    x: np.ndarray,
    ks: tuple[int, ...],
    ties: str,
    depth: int,
) -> np.ndarray:
    n = len(observed)
    while True:
        # ties="sklearn": RouterBench's threads, not routing's one
        with threadpool_limits(limits=_PROCESS_THREADS) if ties == "sklearn" else contextlib.nullcontext():
            dist, neighbours = search(x, depth)  # nearest first
        seen = observed[neighbours]  # (t, depth, M)
        rank = seen.cumsum(axis=1)  # observed neighbours up to each depth
        ends, enough = [], True
        for k in ks:
            wanted = np.minimum(k, available)  # (M,) observed neighbours each model needs
            kth = (rank < wanted).sum(axis=1)  # (t, M) position of the k-th observed neighbour
            enough &= bool((rank[:, -1, :] >= wanted).all())
            if ties == "all":
                d_k = np.take_along_axis(dist, np.minimum(kth, depth - 1), axis=1)  # (t, M)
                limit = d_k * (1 + TIE_RTOL) + TIE_ATOL
                end = (dist[:, :, None] <= limit[:, None, :]).sum(axis=1)  # positions within the tie
                enough &= bool(((dist[:, -1][:, None] > limit) | (wanted == 0)).all())  # no tie beyond the depth
            else:
                end = kth + 1
            ends.append(np.clip(end, 1, depth))
        if enough or depth == n:
            break
        depth = min(n, 2 * depth)
    total = np.where(seen, train_scores[neighbours], 0.0).cumsum(axis=1)  # prefix sums, nearest first
    means = []
    for end in ends:
        at = (end - 1)[:, None, :]
        count = np.take_along_axis(rank, at, axis=1)[:, 0, :]
        s = np.take_along_axis(total, at, axis=1)[:, 0, :]
        means.append(np.divide(s, count, out=np.full(count.shape, np.nan), where=count > 0))
    return np.stack(means)


@ROUTERS.register("knn")
class KNNRouter(PredictiveRouter):
    """``k`` is one integer or several (``"5,10,40"``); one instance routes them all."""

    name = "knn"
    handles_missing = True

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"k": "5,10,40", "metric": "cosine"}]

    def _ties(self) -> str:
        ties = str(self.params.get("ties", "sklearn" if self.options.parity == "routerbench" else "all"))
        if ties not in TIES:
            raise UserError(f"{self.name}: ties must be one of {', '.join(TIES)}, not '{ties}'")
        return ties

    def _requested_ks(self) -> tuple[int, ...]:
        return parse_ks(self.params.get("k", 5))

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        self.ties = self._ties()
        self.requested_ks = self._requested_ks()
        self.ks = tuple(min(k, len(x)) for k in self.requested_ks)
        self.k = self.ks[0]
        # ties="sklearn": n_jobs=-1 as RouterBench's, since it decides how the distances are
        # computed (one slice of the training prompts per job) and so which tied neighbours win.
        _, self.index, self.train_rows = searcher(x, self.params.get("metric", "cosine"), self.ties, n_jobs=-1 if self.ties == "sklearn" else None)
        self.observed = ~np.isnan(scores)
        self.train_scores = np.where(self.observed, scores, 0.0)

    def _search(self) -> Search:
        """The fitted search (built from the fitted attributes alone: a saved fit holds only those)."""
        if getattr(self, "index", None) is not None:
            return _sklearn_search(self.index)
        return functools.partial(brute_kneighbors, self.train_rows, self.params.get("metric", "cosine"))

    def predict_ks(self, test: OutcomeMatrix) -> np.ndarray:
        """(len(ks), n, M) predicted quality, every k from one neighbour search."""
        x = np.asarray(test.features, dtype=np.float64)
        return neighbour_means(self._search(), self.observed, self.train_scores, x, self.ks, self.ties)

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        """The first k's predictions (the only k of a single-k router); :meth:`choose` routes every k."""
        return self.predict_ks(test)[0]

    def _masked_mean(self, x: np.ndarray) -> np.ndarray:
        """The first k's per-model mean over observed neighbours, for raw (t, d) features."""
        return neighbour_means(self._search(), self.observed, self.train_scores, np.asarray(x, float), self.ks[:1], self.ties)[0]

    def settings(self) -> list[PredictiveRouter]:
        """One single-k router per k (what calibration tunes a λ for)."""
        ks = self._requested_ks()
        return [self] if len(ks) == 1 else [type(self)(self.options, **{**self.params, "k": k}) for k in ks]

    def config_labels(self) -> list[str]:
        """One label per k, as a single-k router with these settings would have."""
        return [config_label({**self.params, "k": k}) for k in self.requested_ks]

    def choose(self, test: OutcomeMatrix) -> Choices:
        lam = np.asarray(self.options.lambdas, dtype=float)
        with threadpool_limits(1):
            predicted = self.predict_ks(test)
        choice = np.concatenate([route_lambdas(p, self.cost, lam) for p in predicted])
        configs = [label for label in self.config_labels() for _ in lam]
        return Choices(configs, choice, np.tile(lam, len(predicted)))


@ROUTERS.register("knn-cv")
class KNNCVRouter(KNNRouter):
    """kNN whose k is chosen by 5-fold cross-validation on the training prompts: the candidate
    (``candidates``, capped at the training prompts of a fold) with the least squared error of
    predicted vs observed scores over the held-out outcomes; ties go to the smaller k. The chosen k
    is ``chosen_k``, the errors per candidate ``cv_errors``; the config stays ``k=cv,…``."""

    name = "knn-cv"

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"k": "cv", "metric": "cosine"}]

    def _requested_ks(self) -> tuple[int, ...]:
        return (getattr(self, "chosen_k", 1),)

    @property
    def label(self) -> str:
        return config_label({"k": "cv", **{key: v for key, v in self.params.items() if key != "k"}})

    def config_labels(self) -> list[str]:
        return [self.label]

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        ties, metric = self._ties(), self.params.get("metric", "cosine")
        n = len(x)
        folds = np.array_split(np.random.default_rng(self.options.seed).permutation(n), min(CV_FOLDS, n)) if n > 1 else []
        smallest_train = n - max((len(f) for f in folds), default=0)
        candidates = tuple(dict.fromkeys(min(k, max(1, smallest_train)) for k in parse_ks(self.params.get("candidates", CV_CANDIDATES))))
        sse = np.zeros(len(candidates))
        for held in folds:
            keep = np.ones(n, dtype=bool)
            keep[held] = False
            s_train, s_held = scores[keep], scores[held]
            observed = ~np.isnan(s_train)
            search, _, _ = searcher(x[keep], metric, ties)
            predicted = neighbour_means(search, observed, np.where(observed, s_train, 0.0), x[held], candidates, ties)
            err = predicted - s_held[None]
            sse += np.where(np.isnan(err), 0.0, err**2).sum(axis=(1, 2))
        self.cv_errors = dict(zip(candidates, sse.tolist()))
        self.chosen_k = int(candidates[int(np.argmin(sse))]) if folds else 1
        super().fit_features(x, scores)
