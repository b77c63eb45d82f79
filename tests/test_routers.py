"""Each router on small hand-made matrices where the right choice is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harness.errors import UserError
from harness.matrix import OutcomeMatrix
from routers import ROUTERBENCH_LAMBDAS, RoutingOptions, build_routers
from routers.base import route_lambdas
from routers.cascade import CascadeRouter, run_cascade
from routers.knn import KNNRouter
from routers.mlp import MLPRouter
from routers.svm import SVMRouter
from tests.matrices import toy_matrix


def matrix(scores, costs, features=None, models=("cheap", "mid", "dear")) -> OutcomeMatrix:
    return toy_matrix(scores, costs, features, models, id_format="s{}")


def clustered(n_per: int = 20, seed: int = 0) -> OutcomeMatrix:
    """Two clusters of prompts: the cheap model solves cluster A, only the dear one solves B."""
    rng = np.random.default_rng(seed)
    a = rng.normal([5, 0, 0], 0.1, (n_per, 3))
    b = rng.normal([0, 5, 0], 0.1, (n_per, 3))
    scores = np.vstack([np.tile([1, 0, 1], (n_per, 1)), np.tile([0, 0, 1], (n_per, 1))])
    costs = np.tile([0.001, 0.01, 0.1], (2 * n_per, 1))
    return matrix(scores, costs, np.vstack([a, b]))


def test_route_lambdas_extremes_and_ties() -> None:
    predicted = np.array([[0.2, 0.9, 0.9], [0.5, 0.5, 0.5]])
    cost = np.array([0.01, 0.02, 0.03])
    choice = route_lambdas(predicted, cost, np.array([1e-10, 1e9]))
    assert choice[0].tolist() == [0, 0]  # λ → 0: the cheapest model
    assert choice[1].tolist() == [1, 0]  # λ → ∞: the best predicted; ties go to the first in pool order


def test_knn_with_k1_reproduces_training_labels() -> None:
    train = clustered()
    router = KNNRouter(RoutingOptions(), k=1, metric="cosine")
    router.fit(train)
    np.testing.assert_array_equal(router.predict(train), train.scores)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("depth", [1, 7, 60])
def test_knns_own_search_finds_sklearns_neighbours_at_sklearns_distances(metric: str, depth: int) -> None:
    from sklearn.neighbors import NearestNeighbors

    from routers.knn import brute_kneighbors, search_rows

    rng = np.random.default_rng(depth)
    train, queries = rng.normal(size=(60, 8)), rng.normal(size=(9, 8))
    train[3] = 0.0  # a zero row: cosine similarity 0, as sklearn's normalize leaves it
    queries[0] = train[5]  # a query that is a training row: distance 0
    want_d, want_i = NearestNeighbors(metric=metric, algorithm="brute").fit(train).kneighbors(queries, n_neighbors=depth)
    got_d, got_i = brute_kneighbors(search_rows(train, metric), metric, queries, depth)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-9, atol=1e-7)  # √ of rounding error at distance 0
    assert got_i[0, 0] == 5 and got_d[0, 0] == pytest.approx(0.0, abs=1e-7)


def test_knn_routes_each_cluster_to_the_right_model() -> None:
    train, test = clustered(seed=0), clustered(seed=1)
    router = KNNRouter(RoutingOptions(lambdas=(1e-6, 1.0, 1e6)), k=5, metric="cosine")
    router.fit(train)
    routing = router.route(test)
    assert routing.choice.shape == (3, test.n) and routing.configs == ["k=5,metric=cosine"] * 3
    assert (routing.choice[0] == 0).all()  # almost free quality is worth nothing: always the cheapest
    assert (routing.choice[1, :20] == 0).all() and (routing.choice[1, 20:] == 2).all()  # pay for quality only where needed
    assert routing.quality[1].mean() == 1.0 and routing.cost[1].sum() == pytest.approx(20 * 0.001 + 20 * 0.1)
    np.testing.assert_array_equal(routing.lam, [1e-6, 1.0, 1e6])


@pytest.mark.parametrize("cls, params", [(MLPRouter, {"hidden": "16", "lr": 0.01}), (MLPRouter, {"hidden": "16", "lr": 0.01, "per_model": True}), (SVMRouter, {})])
def test_learned_routers_separate_the_clusters_and_are_deterministic(cls, params) -> None:
    train, test = clustered(40, seed=0), clustered(seed=1)
    a, b = cls(RoutingOptions(), **params), cls(RoutingOptions(), **params)
    a.fit(train)
    b.fit(train)
    p = a.predict(test)
    assert p.shape == (test.n, 3)
    np.testing.assert_array_equal(p, b.predict(test))
    assert p[:20, 0].mean() > 0.7 and p[20:, 0].mean() < 0.3


def test_lambda_grid_default_is_routerbench() -> None:
    assert len(ROUTERBENCH_LAMBDAS) == 32 and ROUTERBENCH_LAMBDAS[0] == 1e-10 and ROUTERBENCH_LAMBDAS[-1] == 1e9


def test_cost_models() -> None:
    train = matrix([[1, 1, 1]], [[0.3, 0.2, 0.1]])
    assert RoutingOptions().cost_vector(train).tolist() == [0.3, 0.2, 0.1]
    prices = {"cheap": 1e-7, "mid": 2e-7, "dear": 3e-7}
    assert RoutingOptions(cost_model="price", prices=prices).cost_vector(train).tolist() == [1e-7, 2e-7, 3e-7]
    with pytest.raises(UserError, match="needs a model config with prices for dear"):
        RoutingOptions(cost_model="price", prices={"cheap": 1, "mid": 1}).cost_vector(train)
    with pytest.raises(UserError, match="--cost-model must be one of"):
        RoutingOptions(cost_model="other")


# ---------------------------------------------------------------------- cascade
SCORES = np.array([[0, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 1]], float)
COSTS = np.array([[0.1, 0.2, 0.4], [0.1, 0.2, 0.4], [0.1, 0.2, 0.4], [0.1, 0.5, 0.4]], float)


def cascade(budgets, error_rate=0.0, draws=None, order=(0, 1, 2)):
    budgets = np.asarray(budgets, float)
    if draws is None:
        draws = np.ones((len(budgets), 4, 3))  # a draw of 1 is never < ε: the judge never errs
    return run_cascade(SCORES, COSTS, np.asarray(order), 1.0, budgets, np.full(len(budgets), error_rate), draws)


def test_perfect_judge_stops_at_first_passing_model() -> None:
    quality, cost = cascade([100.0])
    assert quality[0].tolist() == [1, 1, 0, 1]
    # paid for every model called: 0.1+0.2 / 0.1 / all three / 0.1+0.5+0.4
    np.testing.assert_allclose(cost[0], [0.3, 0.1, 0.7, 1.0])


def test_budget_stops_the_cascade_but_first_model_is_always_called() -> None:
    quality, cost = cascade([0.0001, 0.25])
    np.testing.assert_allclose(cost[0], [0.1, 0.1, 0.1, 0.1])  # over budget from the start: only the first model
    assert quality[0].tolist() == [0, 1, 0, 0]
    # budget 0.25: after 0.1 spent, 0.15 is left: the 0.2 model would reach it, so it stops
    np.testing.assert_allclose(cost[1], [0.1, 0.1, 0.1, 0.1])
    quality, cost = cascade([0.31])
    np.testing.assert_allclose(cost[0], [0.3, 0.1, 0.3, 0.1])  # prompt 3: the 0.5 model exceeds what is left
    assert quality[0].tolist() == [1, 1, 0, 0]


def test_judge_errors_flip_verdicts() -> None:
    always_wrong = np.zeros((1, 4, 3))  # a draw of 0 is < ε for any ε > 0
    quality, cost = cascade([100.0], error_rate=0.5, draws=always_wrong)
    # a wrong judge rejects good answers and accepts bad ones: stops at the first wrong answer
    assert quality[0].tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(cost[0], [0.1, 0.7, 0.1, 0.1])


def test_cascade_router_curves_and_seeds() -> None:
    test = matrix(SCORES, COSTS)
    routers = build_routers("cascade", RoutingOptions(seed=1))
    assert [r.params["error_rate"] for r in routers] == [0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8]
    r = routers[4]
    r.fit(test)
    routing = r.route(test)
    assert len(routing.configs) == 11 and routing.configs[0] == "error_rate=0.2,budget=0.001"
    assert set(routing.curves) == {"error_rate=0.2"} and np.isnan(routing.lam).all()
    again = build_routers("cascade", RoutingOptions(seed=1))[4]
    again.fit(test)
    np.testing.assert_array_equal(again.route(test).quality, routing.quality)
    big = matrix(np.tile(SCORES, (50, 1)), np.tile(COSTS, (50, 1)))
    qualities = []
    for seed in (1, 2):
        rr = CascadeRouter(RoutingOptions(seed=seed), error_rate=0.4)
        rr.fit(big)
        qualities.append(rr.route(big).quality)
    assert not np.array_equal(*qualities)


def test_cascade_threshold_is_the_95th_percentile_of_scores() -> None:
    partial = matrix([[0.2, 0.6, 0.9]] * 10 + [[0.1, 0.3, 0.95]] * 10, [[0.1, 0.2, 0.4]] * 20)
    r = CascadeRouter(RoutingOptions(), error_rate=0.0, budgets=[100.0])
    r.fit(partial)
    routing = r.route(partial)
    # 95th percentile of {0.1..0.95}: only the dear model's answers pass, so every prompt reaches it
    np.testing.assert_allclose(routing.cost[0], 0.7)


def test_features_are_needed() -> None:
    r = KNNRouter(RoutingOptions(), k=1)
    with pytest.raises(ValueError, match="needs prompt embeddings"):
        r.fit(replace(clustered(), features=None))


def test_the_cli_starts_without_the_routers_heavy_imports_and_finds_them_when_asked() -> None:
    """Built-in routers register when their modules are imported, on the first lookup: a command
    that names no router never pays for torch and scikit-learn (3 of the CLI's 5 s to start)."""
    import subprocess
    import sys

    probe = (
        "import sys, harness.cli\n"
        "heavy = sorted({'torch', 'sklearn'} & set(sys.modules))\n"
        "from routers import DEFAULT_ROUTERS, ROUTERS\n"
        "missing = sorted(set(DEFAULT_ROUTERS) - set(ROUTERS.names()))\n"
        "print(heavy, missing, ROUTERS.get('knn').__name__, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["[]", "[]", "KNNRouter", "True"], done.stdout + done.stderr
