"""RouterBench's cost–quality theory, as pure vectorised functions.

* A routing decision over n prompts is a point (mean $ cost per query, mean score).
* Mixing two routers at random reaches every point on the segment between them, so what a router
  really offers is the non-decreasing convex hull (NDCH) of its points.
* The zero router is the NDCH of the single models' points (mixing LLMs with no information).
* AIQ is the area under a hull over a cost range divided by that range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

AiqMode = Literal["paper", "compat"]
AIQ_MODES: tuple[str, ...] = ("paper", "compat")
#: Relative tolerance under which three points count as collinear (the middle one is no vertex).
COLLINEAR_TOL = 1e-12


@dataclass(frozen=True)
class Hull:
    """Vertices of a non-decreasing convex hull, cost strictly increasing, quality strictly increasing."""

    cost: np.ndarray
    quality: np.ndarray

    def __call__(self, c: np.ndarray | float) -> np.ndarray:
        """R̃(c): 0 below the cheapest vertex, linear between vertices, flat after the last one."""
        c = np.asarray(c, dtype=float)
        value = np.interp(c, self.cost, self.quality)
        return np.where(c < self.cost[0], 0.0, value)

    @property
    def c_max(self) -> float:
        return float(self.cost[-1])


# ---------------------------------------------------------------------- points
def points(quality: np.ndarray, cost: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean cost and mean quality along the last axis (prompts).

    ``quality`` and ``cost`` are (..., n) per-prompt values; ``weights`` (B, n) gives B weighted
    means at once (bootstrap resamples), returning (B, ...) arrays.
    """
    if weights is None:
        return cost.mean(axis=-1), quality.mean(axis=-1)
    w = weights / weights.sum(axis=1, keepdims=True)
    return np.tensordot(w, cost, axes=([1], [-1])), np.tensordot(w, quality, axes=([1], [-1]))


def gather(matrix: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """``matrix[i, choice[..., i]]``: the chosen model's value per prompt for one or many decisions."""
    rows = np.arange(matrix.shape[0])
    return matrix[rows, choice]


# ---------------------------------------------------------------------- hull
def _pareto(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points that beat every cheaper point's quality, sorted by cost (the only NDCH candidates)."""
    order = np.argsort(cost)
    c, q = cost[order], quality[order]
    best_before = np.empty_like(q)
    best_before[0] = -np.inf
    np.maximum.accumulate(q[:-1], out=best_before[1:])
    keep = q > best_before
    c, q = c[keep], q[keep]
    # Kept qualities rise strictly, so of equal-cost points the last one is the best.
    last_of_cost = np.append(c[1:] != c[:-1], True)
    return c[last_of_cost], q[last_of_cost]


def _upper_chain(c: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Andrew's monotone chain (upper part) on points sorted by cost with rising quality.

    A few vectorised passes first drop every point on or under the chord of its neighbours (such
    a point is never a vertex), which leaves the stack loop little to do.
    """
    for _ in range(64):
        if len(c) < 3:
            break
        a = (c[1:-1] - c[:-2]) * (q[2:] - q[:-2])
        b = (q[1:-1] - q[:-2]) * (c[2:] - c[:-2])
        drop = a - b >= -COLLINEAR_TOL * (np.abs(a) + np.abs(b))  # middle point on or below its neighbours' chord
        if not drop.any():
            return c, q
        keep = np.concatenate(([True], ~drop, [True]))
        c, q = c[keep], q[keep]
    hc: list[float] = []
    hq: list[float] = []
    for x, y in zip(c.tolist(), q.tolist()):
        while len(hc) >= 2:
            a = (hc[-1] - hc[-2]) * (y - hq[-2])
            b = (hq[-1] - hq[-2]) * (x - hc[-2])
            if a - b < -COLLINEAR_TOL * (abs(a) + abs(b)):
                break
            hc.pop()
            hq.pop()
        hc.append(x)
        hq.append(y)
    return np.asarray(hc), np.asarray(hq)


def non_decreasing_hull(cost: np.ndarray, quality: np.ndarray) -> Hull:
    """The NDCH of a point set: the upper convex hull from the cheapest point (its best quality)
    up to the highest-quality point. O(n log n)."""
    cost = np.asarray(cost, dtype=float).ravel()
    quality = np.asarray(quality, dtype=float).ravel()
    ok = np.isfinite(cost) & np.isfinite(quality)
    if not ok.any():
        raise ValueError("a hull needs at least one finite point")
    c, q = _pareto(cost[ok], quality[ok])
    return Hull(*_upper_chain(c, q))


# ---------------------------------------------------------------------- AIQ
def area(hull: Hull, c_lo: float, c_hi: float) -> float:
    """∫ R̃(c) dc over [c_lo, c_hi], exactly (R̃ is piecewise linear with one jump at the first vertex)."""
    if c_hi <= c_lo:
        return 0.0
    inner = hull.cost[(hull.cost > c_lo) & (hull.cost < c_hi)]
    x = np.concatenate(([c_lo], inner, [c_hi]))
    a, b = x[:-1], x[1:]
    start = hull.cost[0]
    right_of_a = np.where(a >= start, np.interp(a, hull.cost, hull.quality), 0.0)
    left_of_b = np.where(b > start, np.interp(b, hull.cost, hull.quality), 0.0)
    return float(np.sum((b - a) * (right_of_a + left_of_b) / 2.0))


def aiq(hull: Hull, c_min: float, c_max: float) -> float:
    """Average improvement in quality: (1 / (c_max − c_min)) ∫_{c_min}^{c_max} R̃(c) dc."""
    if c_max <= c_min:
        # A degenerate range (all models cost the same): the hull's value at that cost.
        return float(hull(c_min))
    return area(hull, c_min, c_max) / (c_max - c_min)


def aiq_range(mode: AiqMode, llm_costs: np.ndarray, hulls: list[Hull]) -> tuple[float, float]:
    """The common cost range of one comparison.

    ``paper``: cheapest to most expensive single model. ``compat`` (RouterBench's code): from 0
    (every hull then starts at its own cheapest point) to the most expensive vertex of all hulls.
    """
    if mode == "paper":
        return float(np.min(llm_costs)), float(np.max(llm_costs))
    if mode == "compat":
        return 0.0, max(h.c_max for h in hulls)
    raise ValueError(f"unknown AIQ mode '{mode}' (use one of {', '.join(AIQ_MODES)})")


# ---------------------------------------------------------------------- baseline routers
def oracle(scores: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt the cheapest among the best-scoring models.

    Returns per-prompt quality, cost and the chosen model index; where no model scores above 0
    the oracle routes nowhere: quality 0, cost 0, index -1.
    """
    best = scores.max(axis=1)
    candidates = np.where(scores == best[:, None], costs, np.inf)
    choice = np.argmin(candidates, axis=1)
    none = best <= 0
    quality = np.where(none, 0.0, best)
    cost = np.where(none, 0.0, costs[np.arange(len(costs)), choice])
    return quality, cost, np.where(none, -1, choice)


def random_expected(scores: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt expectation of a uniform choice over the models."""
    return scores.mean(axis=1), costs.mean(axis=1)


def random_draws(n_prompts: int, n_models: int, draws: int, seed: int) -> np.ndarray:
    """``draws`` seeded uniform routings: a (draws, n) matrix of model indices."""
    return np.random.default_rng(seed).integers(0, n_models, size=(draws, n_prompts))


def zero_router(llm_cost: np.ndarray, llm_quality: np.ndarray) -> Hull:
    """The NDCH of the single models' points."""
    return non_decreasing_hull(llm_cost, llm_quality)


# ---------------------------------------------------------------------- bootstrap
def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) multiplicities of each prompt in seeded resamples with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0."""
    tail = (1.0 - level) / 2.0 * 100.0
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100.0 - tail, axis=0)


def paired_difference(samples: np.ndarray, baseline: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval of ``samples − baseline`` per column (each row one resample, shared by both) and
    the share of resamples where the column is better, ties counting half (a column against
    itself: 0.5)."""
    diff = samples - baseline[:, None]
    lo, hi = percentile_interval(diff, level)
    return lo, hi, (diff > 0).mean(axis=0) + 0.5 * (diff == 0).mean(axis=0)
