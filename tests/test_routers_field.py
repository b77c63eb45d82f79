"""Routers from the field (sw-ranking, CARROT, kNN with ties / several k / cross-validated k) on
synthetic matrices whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.neighbors import NearestNeighbors

from harness.evaluate import EvalSpec, summarise_family
from harness.matrix import OutcomeMatrix
from routers import ROUTERS, RoutingOptions, build_routers
from routers.base import route_lambdas
from routers.carrot import CarrotRouter
from routers.knn import KNNCVRouter, KNNRouter
from routers.sw_ranking import SWRankingRouter, pairwise_wins
from tests.matrices import toy_matrix


def matrix(scores, costs, features, prompts=None, models=None) -> OutcomeMatrix:
    return toy_matrix(scores, costs, features, models, prompts)


def planted(n: int, strengths: np.ndarray, seed: int) -> OutcomeMatrix:
    """Scores = strength + Gumbel noise: model i beats j with probability σ(s_i − s_j), exactly Bradley–Terry."""
    rng = np.random.default_rng(seed)
    scores = strengths[None, :] + rng.gumbel(size=(n, len(strengths)))
    return matrix(scores, np.full(scores.shape, 0.01), rng.normal(size=(n, 8)))


def bt_mle(comparisons: np.ndarray) -> np.ndarray:
    """Bradley–Terry log-strengths (mean 0) by generic numerical minimisation of the weighted negative log-likelihood."""
    m = len(comparisons)

    def nll(s: np.ndarray) -> float:
        d = s[:, None] - s[None, :]
        return float((comparisons * np.logaddexp(0.0, -d)).sum())

    s = minimize(nll, np.zeros(m), method="BFGS", options={"gtol": 1e-10}).x
    return s - s.mean()


def with_missing(m: OutcomeMatrix, share: float, seed: int, never: int | None = None) -> OutcomeMatrix:
    rng = np.random.default_rng(seed)
    gone = rng.random(m.scores.shape) < share
    if never is not None:
        gone[:, never] = True
    from dataclasses import replace

    return replace(m, scores=np.where(gone, np.nan, m.scores), costs=np.where(gone, np.nan, m.costs))


# ---------------------------------------------------------------------- sw-ranking
STRENGTHS = np.array([0.0, 1.5, -1.0, 0.7, -0.3])


def test_sw_ranking_global_fit_is_the_bradley_terry_mle_and_recovers_the_planted_order() -> None:
    train, test = planted(1500, STRENGTHS, seed=0), planted(50, STRENGTHS, seed=1)
    router = SWRankingRouter(RoutingOptions(), gamma=5, global_weight=1.0)
    router.fit(train)
    s = router.strengths(test)
    # every prompt gets the global fit, which is the MLE of all comparisons plus the prior ties
    wins = pairwise_wins(train.scores).mean(axis=0) + 0.5 * 0.01 * (1 - np.eye(5))
    np.testing.assert_allclose(s, np.tile(bt_mle(wins), (test.n, 1)), atol=1e-5)
    np.testing.assert_allclose(s[0], STRENGTHS - STRENGTHS.mean(), atol=0.15)
    q = router.predict(test)
    assert (np.argsort(-q, axis=1) == np.argsort(-STRENGTHS)).all()  # quality keeps the planted order
    # local fits (γ = 10, no global term) on unstructured features recover it too, on average
    local = SWRankingRouter(RoutingOptions(), gamma=10, global_weight=0.0)
    local.fit(train)
    assert (np.argsort(-local.strengths(test).mean(axis=0)) == np.argsort(-STRENGTHS)).all()


def two_clusters_opposite_orders(n_a: int, n_b: int, seed: int) -> OutcomeMatrix:
    """Cluster A (the larger): m0 > m1 > m2; cluster B: m2 > m1 > m0. Equal costs."""
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal([5, 0, 0], 0.3, (n_a, 3)), rng.normal([0, 5, 0], 0.3, (n_b, 3))])
    order = np.array([2.0, 1.0, 0.0])
    scores = np.vstack([order + rng.gumbel(size=(n_a, 3)) * 0.5, order[::-1] + rng.gumbel(size=(n_b, 3)) * 0.5])
    return matrix(scores, np.full(scores.shape, 0.01), x)


def test_sw_ranking_local_weights_route_each_cluster_to_its_own_best_model() -> None:
    train, test = two_clusters_opposite_orders(120, 60, seed=0), two_clusters_opposite_orders(20, 20, seed=1)
    options = RoutingOptions(lambdas=(1e6,))
    local = SWRankingRouter(options, gamma=10, global_weight=0.0)
    local.fit(train)
    choice = local.route(test).choice[0]
    assert (choice[:20] == 0).all() and (choice[20:] == 2).all()
    glob = SWRankingRouter(options, gamma=10, global_weight=1.0)
    glob.fit(train)
    assert (glob.route(test).choice[0] == 0).all()  # the global ranking favours the larger cluster's best


def test_sw_ranking_compares_only_models_observed_on_a_prompt() -> None:
    wins = pairwise_wins(np.array([[1.0, 0.0, np.nan, 1.0]]))[0]
    np.testing.assert_array_equal(wins, [[0, 1, 0, 0.5], [0, 0, 0, 0], [0, 0, 0, 0], [0.5, 1, 0, 0]])


# ---------------------------------------------------------------------- CARROT
def length_priced(n: int, seed: int, with_prompts: bool = True) -> OutcomeMatrix:
    """Two equally good models: A costs 1e-5 $ per prompt character, B a flat 0.01 $."""
    rng = np.random.default_rng(seed)
    lengths = np.r_[rng.integers(20, 300, n // 2), rng.integers(3000, 10000, n - n // 2)]
    prompts = ["x" * int(k) for k in lengths]
    costs = np.column_stack([1e-5 * lengths * rng.uniform(0.9, 1.1, n), np.full(n, 0.01)])
    return matrix(np.ones((n, 2)), costs, rng.normal(size=(n, 6)), prompts if with_prompts else None, models=("A", "B"))


def test_carrot_sends_short_prompts_to_the_model_that_is_cheap_on_them() -> None:
    train, test = length_priced(200, seed=0), length_priced(40, seed=1)
    router = CarrotRouter(RoutingOptions(lambdas=(1.0, 100.0)), alpha=1.0)
    router.fit(train)
    cost = router.predict_cost(test)
    np.testing.assert_allclose(cost[:, 1], 0.01, rtol=1e-6)
    np.testing.assert_allclose(cost[:, 0], 1e-5 * np.array([len(p) for p in test.prompts]), rtol=0.1)
    routing = router.route(test)
    assert (routing.choice[:, :20] == 0).all() and (routing.choice[:, 20:] == 1).all()
    # the points are paid at the recorded cost of the chosen model, not the predicted one
    np.testing.assert_array_equal(routing.cost, test.costs[np.arange(test.n), routing.choice])
    # a per-model expected cost sends every prompt to the same model
    knn = KNNRouter(RoutingOptions(lambdas=(1.0,)), k=5)
    knn.fit(train)
    assert len(set(knn.route(test).choice[0])) == 1


def test_carrot_without_prompt_texts_falls_back_to_the_embedding() -> None:
    train, test = length_priced(200, seed=0, with_prompts=False), length_priced(40, seed=1, with_prompts=True)
    router = CarrotRouter(RoutingOptions(), alpha=1.0)
    router.fit(train)
    cost = router.predict_cost(test)
    assert cost.shape == (40, 2) and np.isfinite(cost).all() and (cost >= 0).all()
    trained_on_texts = CarrotRouter(RoutingOptions(), alpha=1.0)
    trained_on_texts.fit(length_priced(200, seed=0))
    assert np.isfinite(trained_on_texts.predict_cost(length_priced(40, seed=1, with_prompts=False))).all()  # mean length


def test_routing_with_a_per_prompt_cost() -> None:
    rng = np.random.default_rng(0)
    predicted, cost, lam = rng.random((7, 4)), rng.random((7, 4)) * 0.1, np.array([1e-3, 0.1, 1.0, 10.0])
    predicted[2, 1] = np.nan
    choice = route_lambdas(predicted, cost, lam)
    expected = np.array([[int(np.nanargmax(predicted[i] * l - cost[i])) for i in range(7)] for l in lam])
    np.testing.assert_array_equal(choice, expected)
    # a per-model cost is a per-prompt cost repeated over prompts
    np.testing.assert_array_equal(route_lambdas(predicted, np.tile(cost[0], (7, 1)), lam), route_lambdas(predicted, cost[0], lam))


# ---------------------------------------------------------------------- kNN: ties, several k, cross-validated k
def tied_knn(train: OutcomeMatrix, test: OutcomeMatrix, k: int) -> np.ndarray:
    """The definition with ties, one prompt and model at a time: the mean score over every observed
    training prompt at a distance ≤ the k-th smallest distance among the observed ones."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    dist = 1 - unit(test.features) @ unit(train.features).T
    out = np.full((test.n, train.m), np.nan)
    for i in range(test.n):
        for j in range(train.m):
            rows = np.flatnonzero(train.observed[:, j])
            if len(rows):
                d = dist[i, rows]
                kth = np.sort(d)[min(k, len(rows)) - 1]
                out[i, j] = train.scores[rows[d <= kth + 1e-9], j].mean()
    return out


def duplicated(n: int, seed: int, m: int = 3, distinct: int = 6) -> OutcomeMatrix:
    """Prompts drawn from a few distinct embeddings: every neighbour search meets ties."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(distinct, 4))
    return matrix(rng.random((n, m)).round(1), np.full((n, m), 0.01), base[rng.integers(0, distinct, n)])


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_knn_averages_every_tied_neighbour_whatever_the_row_order(k: int, missing: float) -> None:
    train = with_missing(duplicated(60, seed=0), missing, seed=k)
    test = duplicated(15, seed=1)
    router = KNNRouter(RoutingOptions(), k=k)
    router.fit(train)
    p = router.predict(test)
    np.testing.assert_allclose(p, tied_knn(train, test, k), rtol=1e-12)
    shuffled = KNNRouter(RoutingOptions(), k=k)
    shuffled.fit(train.take(np.random.default_rng(9).permutation(train.n)))
    np.testing.assert_allclose(shuffled.predict(test), p, rtol=1e-12)


def test_knn_sklearn_ties_are_sklearns_neighbours() -> None:
    train, test = duplicated(60, seed=0), duplicated(15, seed=1)
    router = KNNRouter(RoutingOptions(), k=3, metric="cosine", ties="sklearn")
    router.fit(train)
    _, idx = NearestNeighbors(n_neighbors=3, metric="cosine", algorithm="brute").fit(train.features).kneighbors(test.features)
    np.testing.assert_array_equal(router.predict(test), train.scores[idx].mean(axis=1))
    assert not np.allclose(router.predict(test), tied_knn(train, test, 3))  # an arbitrary part of each tie


@pytest.mark.parametrize("ties, data", [("all", "duplicated"), ("sklearn", "duplicated"), ("sklearn", "random"), ("all", "partial")])
def test_one_multi_k_router_routes_each_k_as_its_own_router_would(ties: str, data: str) -> None:
    rng = np.random.default_rng(0)
    if data == "duplicated":
        train, test = duplicated(120, seed=0), duplicated(30, seed=1)
    else:
        train = matrix(rng.random((120, 3)), np.tile([0.001, 0.01, 0.1], (120, 1)), rng.normal(size=(120, 5)))
        test = matrix(rng.random((30, 3)), np.tile([0.001, 0.01, 0.1], (30, 1)), rng.normal(size=(30, 5)))
        if data == "partial":
            train = with_missing(train, 0.3, seed=1)
    options = RoutingOptions(lambdas=(0.01, 0.1, 1.0, 10.0))
    both = KNNRouter(options, k="5,10,40", metric="cosine", ties=ties)
    both.fit(train)
    routing = both.route(test)
    singles = []
    for k in (5, 10, 40):
        one = KNNRouter(options, k=k, metric="cosine", ties=ties)
        one.fit(train)
        singles.append(one.route(test))
    np.testing.assert_array_equal(routing.choice, np.concatenate([r.choice for r in singles]))
    np.testing.assert_array_equal(routing.quality, np.concatenate([r.quality for r in singles]))
    assert routing.configs == [c for r in singles for c in r.configs]
    assert routing.configs[:4] == [f"k=5,metric=cosine,ties={ties}"] * 4
    np.testing.assert_array_equal(routing.lam, np.tile(options.lambdas, 3))


def test_default_knn_grid_is_one_router_with_todays_configs_and_one_hull_per_k() -> None:
    routers = build_routers("knn", RoutingOptions())
    assert len(routers) == 1
    rng = np.random.default_rng(0)
    train = matrix(rng.random((80, 3)), np.tile([0.001, 0.01, 0.1], (80, 1)), rng.normal(size=(80, 5)))
    test = matrix(rng.random((30, 3)), np.tile([0.001, 0.01, 0.1], (30, 1)), rng.normal(size=(30, 5)))
    routers[0].fit(train)
    routing = routers[0].route(test)
    labels = ["k=5,metric=cosine", "k=10,metric=cosine", "k=40,metric=cosine"]
    assert routing.choice.shape == (3 * 32, 30) and routing.curves == [c for c in labels for _ in range(32)]
    llm = build_routers("llm")[0].route(test)
    points, aiq = summarise_family("toy", test, EvalSpec(bootstrap=0), llm, routing)
    assert points.query("router == 'knn'").groupby("config").size().to_dict() == {c: 32 for c in labels}
    assert set(aiq.query("router == 'knn'")["config"]) == set(labels)


def local_labels(seed: int) -> OutcomeMatrix:
    """60 tight groups of 6 prompts, each with its own scores: only the nearest few neighbours know."""
    rng = np.random.default_rng(seed)
    centres, labels = rng.normal(size=(60, 10)), rng.random((60, 3))
    group = np.repeat(np.arange(60), 6)
    x = centres[group] + rng.normal(0, 0.01, (360, 10))
    return matrix(labels[group] + rng.normal(0, 0.02, (360, 3)), np.full((360, 3), 0.01), x)


def global_noise(seed: int) -> OutcomeMatrix:
    rng = np.random.default_rng(seed)
    return matrix(0.5 + rng.normal(0, 0.2, (400, 3)), np.full((400, 3), 0.01), rng.normal(size=(400, 10)))


@pytest.mark.parametrize("missing", [0.0, 0.2])
def test_knn_cv_picks_a_small_k_for_local_structure_and_a_large_one_for_noise(missing: float) -> None:
    local = KNNCVRouter(RoutingOptions())
    local.fit(with_missing(local_labels(0), missing, seed=1))
    assert local.chosen_k <= 5 and local.k == local.chosen_k
    noise = KNNCVRouter(RoutingOptions())
    noise.fit(with_missing(global_noise(0), missing, seed=1))
    assert noise.chosen_k >= 80
    assert min(noise.cv_errors, key=noise.cv_errors.get) == noise.chosen_k
    routing = local.route(local_labels(1))
    assert set(routing.configs) == {"k=cv"} and [r.label for r in build_routers("knn-cv")] == ["k=cv,metric=cosine"]


# ---------------------------------------------------------------------- every new router
NEW = [
    (SWRankingRouter, {"gamma": 10, "global_weight": 0.5}),
    (CarrotRouter, {"alpha": 1.0}),
    (KNNRouter, {"k": "5,10,40", "metric": "cosine"}),
    (KNNCVRouter, {"k": "cv", "metric": "cosine"}),
]


@pytest.mark.parametrize("cls, params", NEW, ids=[c.name for c, _ in NEW])
def test_partial_matrices_and_determinism(cls, params) -> None:
    """A third of the training outcomes missing and one model with none: predictions exist for the
    others, the model without outcomes is never chosen, and two fits route identically."""
    rng = np.random.default_rng(0)
    n, m = 150, 4
    x = np.vstack([rng.normal([3, 0, 0, 0], 0.5, (n // 2, 4)), rng.normal([0, 3, 0, 0], 0.5, (n - n // 2, 4))])
    prompts = ["p" * int(k) for k in rng.integers(10, 500, n)]
    full = matrix((rng.random((n, m)) < 0.6).astype(float), rng.uniform(0.001, 0.01, (n, m)) * [1, 2, 4, 8], x, prompts)
    train = with_missing(full, 0.33, seed=2, never=2)
    test = full.take(np.arange(0, n, 3))
    routings = []
    for _ in range(2):
        router = cls(RoutingOptions(), **params)
        router.fit(router.training_rows(train))
        p = router.predict(test)
        assert p.shape == (test.n, m) and np.isnan(p[:, 2]).all() and np.isfinite(p[:, [0, 1, 3]]).all()
        routings.append(router.route(test))
    assert not (routings[0].choice == 2).any()
    np.testing.assert_array_equal(routings[0].choice, routings[1].choice)
    np.testing.assert_array_equal(routings[0].quality, routings[1].quality)


def test_registered_with_small_grids() -> None:
    sizes = {name: len(ROUTERS.get(name).grid()) for name in ("sw-ranking", "carrot", "knn", "knn-cv")}
    assert sizes == {"sw-ranking": 4, "carrot": 2, "knn": 1, "knn-cv": 1}
    assert all(ROUTERS.get(name).handles_missing for name in sizes) and ROUTERS.get("carrot").needs_prompts
