"""Similarity-weighted Bradley–Terry ranking (RouteLLM's ``sw_ranking``, with Eagle's global + local mix).

Every training prompt implies pairwise comparisons among the models that answered it: model i beats
j when its score is higher; a tie is half a win each (as RouteLLM's Elo MLE counts ties), so two
models that always tie get equal strengths and an all-tie prompt says "these are alike" rather
than nothing. For a test prompt the comparisons of training prompt p are weighted by
``exp(γ·(cos(x, x_p) − max_p cos(x, x_p)))`` and normalised to sum to 1: RouteLLM's "top weight is 1
before the exponent" without its division by the top similarity (undefined when it is ≤ 0); after
normalisation only γ, the sharpness, matters. ``global_weight`` g mixes in the unweighted average
over all training prompts (Eagle's global ranking): comparisons = (1 − g)·local + g·global, plus a
prior of ``prior`` virtual ties per pair, which keeps a model that never loses (or never wins)
finite.

Strengths come from weighted maximum likelihood by the MM algorithm (Hunter 2004),
``p_i ← W_i / Σ_j n_ij / (p_i + p_j)``, batched over a block of test prompts as (prompts, M, M)
arrays. A model's win probability against the pool, ``mean_j σ(s_i − s_j)``, becomes a quality on
the score scale by a per-model affine map with a non-negative slope, fitted by least squares on the
training prompts' leave-one-out local win probabilities (each training prompt ranked without its
own comparisons, without the global mix), so ``λ·q − c`` weighs it against cost in the units of
the scores. Where every training prompt compares every pair once (a complete matrix), the MLE's
win probability against the pool equals the weighted win rate (its score equations say so), so
there the ranking is a similarity-weighted win rate; with missing outcomes it is not.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from harness.matrix import OutcomeMatrix
from routers.base import PredictiveRouter
from routers.registry import ROUTERS

#: Bounds the (prompts, M, M) and (prompts, training prompts) arrays of one block.
_BLOCK_ELEMENTS = 1 << 22
MM_ITERATIONS = 500
MM_TOLERANCE = 1e-9


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so that dot products are cosine similarities."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def pairwise_wins(scores: np.ndarray) -> np.ndarray:
    """(n, M, M): per prompt, 1 where model i scored higher than j, ½ where they tied, 0 where
    either lacks an outcome (NaN) or i = j."""
    a, b = scores[:, :, None], scores[:, None, :]
    wins = (a > b).astype(np.float64) + 0.5 * (a == b)
    idx = np.arange(scores.shape[1])
    wins[:, idx, idx] = 0.0
    return wins


def bradley_terry(comparisons: np.ndarray) -> np.ndarray:
    """(T, M) log-strengths (mean 0 per prompt) from (T, M, M) weighted win counts ``c[t, i, j]``
    of i over j, every pair compared (a prior makes sure), by batched MM iterations."""
    wins = comparisons.sum(axis=2)
    games = comparisons + comparisons.transpose(0, 2, 1)
    p = np.ones(wins.shape)
    for _ in range(MM_ITERATIONS):
        new = wins / (games / (p[:, :, None] + p[:, None, :])).sum(axis=2)
        new /= np.exp(np.log(new).mean(axis=1, keepdims=True))  # geometric mean 1: only ratios are identified
        done = np.abs(new - p).max() <= MM_TOLERANCE * new.max()
        p = new
        if done:
            break
    return np.log(p)


def win_probability(strengths: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(T, M) mean over the other known models j of σ(s_i − s_j)."""
    diff = strengths[:, :, None] - strengths[:, None, :]
    sigma = 0.5 * (1.0 + np.tanh(0.5 * diff))  # σ without overflow
    others = known[None, :] & ~np.eye(len(known), dtype=bool)
    count = np.maximum(others.sum(axis=1), 1)
    return np.where(others, sigma, 0.0).sum(axis=2) / count[None, :]


@ROUTERS.register("sw-ranking")
class SWRankingRouter(PredictiveRouter):
    """Settings: ``gamma`` (similarity sharpness), ``global_weight`` (Eagle's g), ``prior`` (virtual ties per pair)."""

    name = "sw-ranking"
    handles_missing = True

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"gamma": g, "global_weight": w} for g in (5, 10) for w in (0, 0.5)]

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        self.gamma = float(self.params.get("gamma", 10))
        self.global_weight = float(self.params.get("global_weight", 0.0))
        self.prior = float(self.params.get("prior", 0.01))
        self.unit = unit_rows(x)
        observed = ~np.isnan(scores)
        self.known = observed.any(axis=0)  # a model without training outcomes is never ranked
        m = scores.shape[1]
        self.wins = pairwise_wins(scores).reshape(len(x), m * m)
        self.global_wins = self.wins.mean(axis=0)
        # Calibration: leave-one-out *local* win probabilities of the training prompts → observed
        # scores. Fitted on the mix instead, the map would absorb the global term (a constant per
        # model) and every global_weight would route alike; fitted on the local ones, the global
        # ranking shrinks each prompt's prediction towards it, which is Eagle's point.
        mix, self.global_weight = self.global_weight, 0.0
        loo = self._win_probability(self.unit, exclude_self=True)
        self.global_weight = mix
        self.slope, self.intercept = np.zeros(m), np.zeros(m)
        for j in np.flatnonzero(self.known):  # M least-squares lines, not a loop over prompts
            wp, y = loo[observed[:, j], j], scores[observed[:, j], j]
            var = wp.var()
            slope = max(0.0, float(((wp - wp.mean()) * (y - y.mean())).mean() / var)) if var > 1e-15 else 0.0
            self.slope[j], self.intercept[j] = slope, float(y.mean() - slope * wp.mean())

    def _win_probability(self, unit: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """(t, M) win probability against the pool of every query prompt (unit-norm rows)."""
        return self._blocks(unit, exclude_self, lambda c: win_probability(bradley_terry(c), self.known))

    def _blocks(self, unit: np.ndarray, exclude_self: bool, then: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``then(comparisons)`` per block of query prompts, concatenated."""
        n, m = len(self.unit), len(self.known)
        block = max(1, _BLOCK_ELEMENTS // max(n, m * m))
        parts = [then(self._comparisons(unit[i : i + block], i if exclude_self else None)) for i in range(0, len(unit), block)]
        return np.concatenate(parts) if parts else np.zeros((0, m))

    def _comparisons(self, unit: np.ndarray, self_offset: int | None) -> np.ndarray:
        """(t, M, M) similarity-weighted win counts, mixed with the global ones, plus the prior."""
        sim = unit @ self.unit.T  # (t, n) cosine similarities
        if self_offset is not None:
            rows = np.arange(len(unit))
            sim[rows, self_offset + rows] = -np.inf  # a training prompt does not vote on itself
        top = sim.max(axis=1, keepdims=True)
        weight = np.exp(self.gamma * (sim - np.where(np.isfinite(top), top, 0.0)))
        total = weight.sum(axis=1, keepdims=True)
        weight = np.divide(weight, total, out=np.zeros_like(weight), where=total > 0)
        m = len(self.known)
        mixed = (1 - self.global_weight) * (weight @ self.wins) + self.global_weight * self.global_wins[None, :]
        return mixed.reshape(len(unit), m, m) + 0.5 * self.prior * (1 - np.eye(m))

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        quality = self.intercept + self.slope * self._win_probability(unit_rows(np.asarray(test.features, dtype=np.float64)))
        return np.where(self.known[None, :], quality, np.nan)

    def strengths(self, test: OutcomeMatrix) -> np.ndarray:
        """(n, M) fitted log-strengths per test prompt (for inspection and tests)."""
        return self._blocks(unit_rows(np.asarray(test.features, dtype=np.float64)), False, bradley_terry)
