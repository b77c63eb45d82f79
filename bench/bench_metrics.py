"""NDCH + AIQ speed: ours on 10⁶ points, and against a plain O(n²) reference on 10⁴ points.

Both run in this process on the same seeded points; the reference's answer is checked against
ours before any time is reported. Last line: ``ndch_aiq_1e6_s=<s> ratio_vs_quadratic=<x>``.

    python bench/bench_metrics.py [--n-large 1000000] [--n-small 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.metrics import Hull, aiq, non_decreasing_hull  # noqa: E402


def quadratic_hull(cost: np.ndarray, quality: np.ndarray) -> Hull:
    """A plain O(n²) NDCH: drop every point another point weakly dominates (one O(n) check per
    point), then gift-wrap the rest from the cheapest point by the steepest rising edge."""
    n = len(cost)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = (cost <= cost[i]) & (quality >= quality[i])
        dominated[i] = False
        if dominated.any():
            same = dominated & (cost == cost[i]) & (quality == quality[i])
            # an exact duplicate survives once: the copy with the lowest index
            keep[i] = not (dominated & ~same).any() and not same[:i].any()
    c, q = cost[keep], quality[keep]
    order = np.argsort(c)
    c, q = c[order], q[order]
    hc, hq, i = [c[0]], [q[0]], 0
    while i < len(c) - 1:
        slopes = (q[i + 1 :] - q[i]) / (c[i + 1 :] - c[i])
        j = i + 1 + int(np.flatnonzero(slopes == slopes.max())[-1])  # farthest point on the steepest edge
        hc.append(c[j])
        hq.append(q[j])
        i = j
    return Hull(np.asarray(hc), np.asarray(hq))


def best_of(repeat: int, fn, *args):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def ndch_and_aiq(cost: np.ndarray, quality: np.ndarray) -> float:
    return aiq(non_decreasing_hull(cost, quality), float(cost.min()), float(cost.max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-large", type=int, default=1_000_000)
    ap.add_argument("--n-small", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    c_small, q_small = rng.random(args.n_small), rng.random(args.n_small)
    t_ref, ref = best_of(1, quadratic_hull, c_small, q_small)
    t_ours_small, ours = best_of(args.repeat, non_decreasing_hull, c_small, q_small)
    assert np.allclose(ref.cost, ours.cost) and np.allclose(ref.quality, ours.quality), "hulls differ"
    ratio = t_ref / t_ours_small
    print(f"n={args.n_small:>9,} random   O(n²) reference {t_ref * 1e3:9.1f} ms   ours {t_ours_small * 1e3:8.3f} ms   ratio {ratio:,.0f}x")

    c_large, q_large = rng.random(args.n_large), rng.random(args.n_large)
    t_large, value = best_of(args.repeat, ndch_and_aiq, c_large, q_large)
    print(f"n={args.n_large:>9,} random   NDCH + AIQ {t_large * 1e3:8.1f} ms   (AIQ {value:.6f})")

    # The worst case for a hull: every point is a vertex (a concave curve, shuffled).
    x = rng.random(args.n_large)
    t_curve, value = best_of(args.repeat, ndch_and_aiq, x, np.sqrt(x))
    print(f"n={args.n_large:>9,} concave  NDCH + AIQ {t_curve * 1e3:8.1f} ms   (all points on the hull; AIQ {value:.6f})")
    print(f"ndch_aiq_1e6_s={t_large:.3f} ratio_vs_quadratic={ratio:.0f}")


if __name__ == "__main__":
    main()
