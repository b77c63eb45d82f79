"""The theory against independent computations: brute-force hulls, closed-form AIQ, hand-made matrices."""

from __future__ import annotations

import numpy as np
import pytest

from bench.routerbench_port import calc_aiq
from harness import metrics
from harness.metrics import Hull, aiq, aiq_range, area, non_decreasing_hull, oracle, random_expected, zero_router


def brute_force_value(cost: np.ndarray, quality: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Best quality reachable at cost ≤ c by mixing at most two points (enough in the plane), O(n²) per c."""
    ci, cj = cost[:, None], cost[None, :]
    qi, qj = quality[:, None], quality[None, :]
    out = np.full(len(c), np.nan)
    for k, x in enumerate(c):
        pure = quality[cost <= x]
        if len(pure) == 0:
            out[k] = 0.0
            continue
        span = (ci <= x) & (cj > x)
        with np.errstate(divide="ignore", invalid="ignore"):
            mixed = qi + (qj - qi) * (x - ci) / (cj - ci)
        out[k] = max(pure.max(), mixed[span].max(initial=-np.inf))
    return out


def brute_force_vertices(cost: np.ndarray, quality: np.ndarray) -> set[tuple[float, float]]:
    """Points that no other point weakly dominates and that lie strictly above every chord spanning them."""
    pts = sorted(set(zip(cost.tolist(), quality.tolist())))
    keep = set()
    for p in pts:
        if any(r != p and r[0] <= p[0] and r[1] >= p[1] for r in pts):
            continue
        under = False
        for a in pts:
            for b in pts:
                if a[0] < p[0] < b[0]:
                    chord = a[1] + (b[1] - a[1]) * (p[0] - a[0]) / (b[0] - a[0])
                    under |= p[1] <= chord + 1e-12
        if not under:
            keep.add(p)
    return keep


POINT_SETS = {
    "random": lambda rng: (rng.random(40), rng.random(40)),
    "duplicates": lambda rng: (np.repeat(rng.random(8), 4), np.repeat(rng.random(8), 4)),
    "collinear": lambda rng: (np.linspace(0, 1, 12), 0.1 + 0.5 * np.linspace(0, 1, 12)),
    "decreasing": lambda rng: (np.linspace(0, 1, 10), np.linspace(1, 0, 10)),
    "same_cost": lambda rng: (np.zeros(6), rng.random(6)),
    "grid": lambda rng: (rng.integers(0, 5, 60) / 4.0, rng.integers(0, 5, 60) / 4.0),
    "concave_curve": lambda rng: (np.linspace(0.01, 1, 200), np.sqrt(np.linspace(0.01, 1, 200))),
    "single": lambda rng: (np.array([0.3]), np.array([0.7])),
}


@pytest.mark.parametrize("kind", sorted(POINT_SETS))
@pytest.mark.parametrize("seed", range(5))
def test_hull_matches_brute_force(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cost, quality = POINT_SETS[kind](rng)
    hull = non_decreasing_hull(cost, quality)
    assert np.all(np.diff(hull.cost) > 0) and np.all(np.diff(hull.quality) > 0)
    grid = np.unique(np.concatenate([cost, np.linspace(cost.min() - 0.1, cost.max() + 0.1, 301)]))
    np.testing.assert_allclose(hull(grid), brute_force_value(cost, quality, grid), atol=1e-12)
    if kind != "concave_curve":  # O(n³) reference: skip the 200-point set
        assert set(zip(hull.cost.tolist(), hull.quality.tolist())) == brute_force_vertices(cost, quality)


def test_hull_ignores_non_finite_points_and_rejects_none() -> None:
    hull = non_decreasing_hull(np.array([0.1, np.nan, 0.5]), np.array([0.2, 0.9, np.inf]))
    assert hull.cost.tolist() == [0.1] and hull.quality.tolist() == [0.2]
    with pytest.raises(ValueError):
        non_decreasing_hull(np.array([np.nan]), np.array([1.0]))


def test_hull_curve_is_zero_below_first_point_and_flat_after_last() -> None:
    hull = non_decreasing_hull(np.array([1.0, 2.0, 3.0]), np.array([0.2, 0.6, 0.5]))
    assert hull.cost.tolist() == [1.0, 2.0]
    np.testing.assert_allclose(hull(np.array([0.5, 0.999, 1.0, 1.5, 2.0, 10.0])), [0, 0, 0.2, 0.4, 0.6, 0.6])


def test_aiq_one_point_closed_form() -> None:
    hull = Hull(np.array([2.0]), np.array([0.8]))
    assert aiq(hull, 1.0, 5.0) == pytest.approx(0.8 * 3.0 / 4.0)
    assert aiq(hull, 2.0, 5.0) == pytest.approx(0.8)  # starts at the cheapest model: full credit
    assert aiq(hull, 0.0, 2.0) == pytest.approx(0.0)  # the point only reached at the range's end


def test_aiq_two_points_closed_form() -> None:
    hull = Hull(np.array([1.0, 3.0]), np.array([0.4, 0.8]))
    expected = ((3 - 1) * (0.4 + 0.8) / 2 + (6 - 3) * 0.8) / (6 - 0)
    assert aiq(hull, 0.0, 6.0) == pytest.approx(expected)
    # a range inside one segment: the trapezoid of the hull's values at its ends
    assert aiq(hull, 1.5, 2.5) == pytest.approx((0.5 + 0.7) / 2)


def test_aiq_step_matches_numeric_integral() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        hull = non_decreasing_hull(rng.random(15), rng.random(15))
        lo, hi = sorted(rng.random(2) * 1.2)
        xs = np.linspace(lo, hi, 400_001)
        numeric = np.trapezoid(hull(xs), xs) / (hi - lo)
        assert aiq(hull, lo, hi) == pytest.approx(numeric, abs=2e-5)


def test_aiq_degenerate_range_is_value_at_that_cost() -> None:
    hull = Hull(np.array([1.0, 2.0]), np.array([0.5, 0.9]))
    assert aiq(hull, 1.5, 1.5) == pytest.approx(0.7)
    assert area(hull, 3.0, 1.0) == 0.0


def test_aiq_ranges_of_both_modes() -> None:
    hulls = [Hull(np.array([1.0, 4.0]), np.array([0.2, 0.5])), Hull(np.array([2.0, 7.0]), np.array([0.3, 0.6]))]
    assert aiq_range("paper", np.array([3.0, 1.0, 5.0]), hulls) == (1.0, 5.0)
    assert aiq_range("compat", np.array([3.0, 1.0, 5.0]), hulls) == (0.0, 7.0)
    with pytest.raises(ValueError):
        aiq_range("other", np.array([1.0]), hulls)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(6))
def test_compat_mode_reproduces_routerbench_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sets = [np.column_stack([rng.random(n), rng.random(n)]) for n in (1, 3, 8, 12)]
    theirs = calc_aiq(sets)
    hulls = [non_decreasing_hull(s[:, 0], s[:, 1]) for s in sets]
    lo, hi = aiq_range("compat", np.array([]), hulls)
    ours = [aiq(h, lo, hi) for h in hulls]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# ---------------------------------------------------------------------- baseline routers
SCORES = np.array(
    [
        [1.0, 1.0, 0.0],  # two models right: the cheaper (model 1) wins
        [0.0, 0.0, 0.0],  # nobody right: oracle routes nowhere
        [0.0, 0.5, 1.0],  # the best is the most expensive
        [0.3, 0.3, 0.3],  # a three-way tie on a partial score: cheapest
    ]
)
COSTS = np.array(
    [
        [0.5, 0.2, 0.1],
        [0.5, 0.2, 0.1],
        [0.5, 0.2, 0.9],
        [0.4, 0.3, 0.35],
    ]
)


def test_oracle_on_hand_made_matrix() -> None:
    quality, cost, choice = oracle(SCORES, COSTS)
    assert choice.tolist() == [1, -1, 2, 1]
    np.testing.assert_allclose(quality, [1.0, 0.0, 1.0, 0.3])
    np.testing.assert_allclose(cost, [0.2, 0.0, 0.9, 0.3])


def test_random_expected_point_on_hand_made_matrix() -> None:
    quality, cost = random_expected(SCORES, COSTS)
    c, q = metrics.points(quality, cost)
    assert q == pytest.approx(SCORES.mean())
    assert c == pytest.approx(COSTS.mean())


def test_random_draws_are_seeded_and_converge_to_expectation() -> None:
    a = metrics.random_draws(4, 3, 2000, seed=1)
    assert np.array_equal(a, metrics.random_draws(4, 3, 2000, seed=1))
    assert not np.array_equal(a, metrics.random_draws(4, 3, 2000, seed=2))
    q = SCORES[np.arange(4), a].mean()
    assert q == pytest.approx(SCORES.mean(), abs=0.01)


def test_zero_router_is_hull_of_single_models() -> None:
    c, q = metrics.points(SCORES.T, COSTS.T)  # each model alone
    hull = zero_router(c, q)
    # model costs 0.45, 0.225, 0.3625; qualities 0.325, 0.45, 0.325: model 1 dominates both others
    assert hull.cost.tolist() == pytest.approx([0.225]) and hull.quality.tolist() == pytest.approx([0.45])


def test_weighted_points_equal_resampled_means() -> None:
    rng = np.random.default_rng(0)
    quality, cost = rng.random((3, 50)), rng.random((3, 50))
    w = metrics.bootstrap_weights(50, 4, seed=3)
    bc, bq = metrics.points(quality, cost, weights=w)
    idx = np.repeat(np.arange(50), w[2].astype(int))
    np.testing.assert_allclose(bq[2], quality[:, idx].mean(axis=1))
    np.testing.assert_allclose(bc[2], cost[:, idx].mean(axis=1))
    assert np.array_equal(w, metrics.bootstrap_weights(50, 4, seed=3))
