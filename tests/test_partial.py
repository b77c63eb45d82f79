"""Partial outcome matrices: not every model answered every prompt.

Routers that handle missing entries train on every outcome that exists (kNN per model over the
neighbours that have it, the SVM per model on its observed rows); the others get the complete
training rows; evaluation tests on the prompts complete for the pool and counts those left out.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from harness.store import EMBEDDINGS, Store
from harness.embeddings import attach_features
from harness.evaluate import EvalSpec, complete_folds, evaluate, route_folds
from harness.matrix import OutcomeMatrix, outcome_matrices
from harness.splits import Fold, routerbench_order
from routers import ROUTERS, Router, RoutingOptions, build_routers
from routers.base import Choices, expected_cost
from routers.knn import KNNRouter
from routers.mlp import MLPRouter
from routers.svm import SVMRouter
from tests.matrices import toy_matrix

MODELS = ("cheap", "newcomer", "dear")


def matrix(scores, costs, features=None) -> OutcomeMatrix:
    return toy_matrix(scores, costs, features, MODELS[: np.shape(scores)[1]])


def two_topics(n_per: int, seed: int, newcomer_on_b: bool) -> OutcomeMatrix:
    """Topic A: the cheap model is right; topic B: only the dear one. The newcomer is wrong on
    both, and (training) answered only topic A, half of the prompts, unless ``newcomer_on_b``."""
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal([5, 0, 0], 0.3, (n_per, 3)), rng.normal([0, 5, 0], 0.3, (n_per, 3))])
    scores = np.vstack([np.tile([1.0, 0.0, 1.0], (n_per, 1)), np.tile([0.0, 0.0, 1.0], (n_per, 1))])
    costs = np.tile([0.001, 0.002, 0.1], (2 * n_per, 1))
    if not newcomer_on_b:
        scores[n_per:, 1] = costs[n_per:, 1] = np.nan
    return matrix(scores, costs, x)


def brute_force_knn(train: OutcomeMatrix, test: OutcomeMatrix, k: int) -> np.ndarray:
    """Per test prompt and model, the mean score of the k nearest (cosine) training prompts with that
    model's outcome: the definition, one prompt and model at a time."""
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    dist = 1 - unit(test.features) @ unit(train.features).T
    out = np.full((test.n, train.m), np.nan)
    for i in range(test.n):
        for j in range(train.m):
            rows = np.flatnonzero(train.observed[:, j])
            if len(rows):
                out[i, j] = train.scores[rows[np.argsort(dist[i, rows])[:k]], j].mean()
    return out


def test_observed_mask_and_complete_rows() -> None:
    m = matrix([[1, np.nan, 0], [1, 1, 0], [0, 1, 1]], [[0.1, 0.2, 0.3], [0.1, 0.2, np.nan], [0.1, 0.2, 0.3]])
    # an outcome needs both a score and a cost
    np.testing.assert_array_equal(m.observed, [[True, False, True], [True, True, False], [True, True, True]])
    np.testing.assert_array_equal(m.complete_rows(), [False, False, True])
    np.testing.assert_array_equal(m.coverage(), [3, 2, 2])


def test_expected_cost_averages_observed_outcomes_only() -> None:
    m = matrix([[1, np.nan, 0], [1, 1, 0], [0, 1, np.nan]], [[0.1, 9.0, 0.3], [0.3, 0.2, 0.5], [0.2, 0.4, 7.0]])
    np.testing.assert_allclose(RoutingOptions().cost_vector(m), [0.2, 0.3, 0.4])  # the 9.0 and 7.0 have no score
    none = matrix([[1, np.nan], [0, np.nan]], [[0.1, np.nan], [0.3, np.nan]])
    cost = expected_cost(none)
    assert cost[0] == pytest.approx(0.2) and np.isnan(cost[1])


def test_knn_with_missing_recovers_quality_that_complete_rows_lose() -> None:
    train, test = two_topics(30, seed=0, newcomer_on_b=False), two_topics(20, seed=1, newcomer_on_b=True)
    options = RoutingOptions(lambdas=(1.0,))
    masked = KNNRouter(options, k=5, metric="cosine")
    masked.fit(masked.training_rows(train))
    complete = KNNRouter(options, k=5, metric="cosine")
    complete.fit(train.take(train.complete_rows()))  # what a complete-rows-only router sees: topic A alone
    # per model, the masked kNN predicts what it should: the cheap and dear models from their
    # neighbours in the prompt's own topic; complete rows know nothing of topic B
    p_masked, p_complete = masked.predict(test), complete.predict(test)
    np.testing.assert_array_equal(p_masked[:, [0, 2]], test.scores[:, [0, 2]])
    assert p_complete[20:, 0].mean() == 1.0  # topic B's cheap model looks right: it is not
    assert masked.route(test).quality.mean() == 1.0  # A → cheap, B → dear
    assert complete.route(test).quality.mean() == 0.5  # B → cheap: every B prompt lost
    np.testing.assert_allclose(p_masked, brute_force_knn(train, test, 5))


@pytest.mark.parametrize("k", [1, 5, 40])
def test_masked_knn_is_per_model_knn_over_observed_neighbours(k: int) -> None:
    """Random features (no distance ties), a third of the entries missing at random, one model with
    fewer than k outcomes: the vectorised search equals the definition."""
    rng = np.random.default_rng(k)
    n, m = 120, 3
    scores = rng.random((n, m))
    scores[rng.random((n, m)) < 0.33] = np.nan
    scores[: n - 7, 2] = np.nan  # the last model answered 7 training prompts
    train = matrix(scores, np.where(np.isnan(scores), np.nan, 0.01), rng.normal(size=(n, 4)))
    test = matrix(rng.random((25, m)), np.full((25, m), 0.01), rng.normal(size=(25, 4)))
    router = KNNRouter(RoutingOptions(), k=k, metric="cosine")
    router.fit(train)
    np.testing.assert_allclose(router.predict(test), brute_force_knn(train, test, k), rtol=1e-12)


def test_masked_knn_on_a_complete_matrix_is_todays_knn() -> None:
    rng = np.random.default_rng(3)
    train = matrix(rng.random((80, 3)), np.full((80, 3), 0.01), rng.normal(size=(80, 4)))
    test = matrix(rng.random((30, 3)), np.full((30, 3), 0.01), rng.normal(size=(30, 4)))
    router = KNNRouter(RoutingOptions(), k=10, metric="cosine")
    router.fit(train)
    _, neighbours = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(train.features).kneighbors(test.features)  # sklearn's search
    today = train.scores[neighbours].mean(axis=1)
    np.testing.assert_array_equal(router.predict(test), today)
    np.testing.assert_allclose(router._masked_mean(test.features), today, rtol=1e-12)  # the masked path agrees


def test_a_model_without_training_outcomes_is_never_chosen() -> None:
    train = two_topics(10, seed=0, newcomer_on_b=True)
    train = replace(train, scores=np.where([[False, True, False]], np.nan, train.scores))
    test = two_topics(10, seed=1, newcomer_on_b=True)
    for cls in (KNNRouter, SVMRouter):
        router = cls(RoutingOptions(), k=3)
        router.fit(train)
        choice = router.route(test).choice
        assert not (choice == 1).any(), cls.name


def test_svm_fits_each_model_on_its_observed_prompts() -> None:
    from sklearn.svm import LinearSVR

    train = two_topics(20, seed=0, newcomer_on_b=False)
    router = SVMRouter(RoutingOptions())
    router.fit(train)
    known = train.observed[:, 1]
    alone = LinearSVR(random_state=1234).fit(train.features[known], train.scores[known, 1])
    np.testing.assert_array_equal(router.models[1].coef_, alone.coef_)


def test_routers_declare_whether_they_take_missing_entries() -> None:
    declared = {name: ROUTERS.get(name).handles_missing for name in ("knn", "svm", "cascade", "oracle", "random", "random-draw", "llm", "mlp")}
    assert declared == {"knn": True, "svm": True, "cascade": True, "oracle": True, "random": True, "random-draw": True, "llm": True, "mlp": False}
    train = two_topics(10, seed=0, newcomer_on_b=False)
    assert MLPRouter(RoutingOptions()).training_rows(train).n == 10
    assert KNNRouter(RoutingOptions()).training_rows(train).n == 20


def test_plugins_say_whether_their_fit_takes_missing_entries() -> None:
    from routers.plugin import PluginRouter

    class Learns:
        def fit(self, train): ...
        def route(self, prompt): ...

    class LearnsFromAll(Learns):
        handles_missing = True

    assert not PluginRouter("a:Learns", Learns()).handles_missing  # it gets complete rows, as before
    assert PluginRouter("a:LearnsFromAll", LearnsFromAll()).handles_missing
    assert PluginRouter("a:f", lambda prompt: "cheap").handles_missing  # nothing to fit


class CompleteOnly(Router):
    """A test router that records what it was fitted on and always picks the first model."""

    name = "complete-only"
    fitted_on: list[int] = []

    def fit(self, train: OutcomeMatrix) -> None:
        assert train.complete_rows().all()
        CompleteOnly.fitted_on.append(train.n)

    def choose(self, test: OutcomeMatrix) -> Choices:
        return Choices([""], np.zeros(test.n, dtype=np.int64))


def test_route_folds_gives_each_router_what_it_declares() -> None:
    train, test = two_topics(10, seed=0, newcomer_on_b=False), two_topics(5, seed=1, newcomer_on_b=True)
    folds, left_out = complete_folds([Fold(train, two_topics(5, seed=1, newcomer_on_b=False))])
    assert left_out == 5 and folds[0].test.n == 5 and folds[0].train.n == 20  # training prompts are kept, masked
    CompleteOnly.fitted_on.clear()
    route_folds(CompleteOnly(), [Fold(train, test)])
    assert CompleteOnly.fitted_on == [10]


# ---------------------------------------------------------------------- on a partial store
DROPPED = "gpt-4-1106-preview"


@pytest.fixture(scope="module")
def partial_store(imported_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The shared mbpp sample with one model's outcomes on a seeded half of the prompts removed."""
    prompts = imported_store.prompts(families=["mbpp"])
    outcomes = imported_store.outcomes()
    outcomes = outcomes[outcomes["sample_id"].isin(prompts["sample_id"])]
    ids = np.sort(prompts["sample_id"].unique())
    gone = set(np.random.default_rng(0).choice(ids, len(ids) // 2, replace=False))
    outcomes = outcomes[~((outcomes["model"] == DROPPED) & outcomes["sample_id"].isin(gone))]
    store = Store(tmp_path_factory.mktemp("partial") / "store")
    store.append(prompts, outcomes, source="partial mbpp")
    # the same texts: reuse the shared store's embeddings (computed there once per session)
    attach_features(imported_store, {"mbpp": outcome_matrices(imported_store, with_prompts=True)["mbpp"]})
    store.append_tables({EMBEDDINGS: imported_store.read_table(EMBEDDINGS)}, source="embeddings of the shared sample")
    return store


SPEC = EvalSpec(routers=("llm", "oracle", "knn", "svm", "tests.test_partial:CompleteOnly"), families=("mbpp",), bootstrap=20)


def test_evaluation_on_a_partial_store_trains_on_every_outcome_and_counts_what_is_left_out(partial_store: Store) -> None:
    result = evaluate(partial_store, SPEC, parallel=False)
    m = outcome_matrices(partial_store)["mbpp"]
    order = routerbench_order(m.sample_ids)
    cut = int(0.7 * m.n)
    train, test = np.sort(order[:cut]), np.sort(order[cut:])
    complete = m.complete_rows()
    row = result.summary.set_index("task_family").loc["mbpp"]
    assert row["left_out"] == int((~complete[test]).sum()) > 0
    assert row["test"] == int(complete[test].sum()) and row["train"] == len(train)
    fam = result.families[0]
    assert fam.partial == [(DROPPED, int(m.coverage()[m.models.index(DROPPED)]))]
    assert fam.n_train_complete == int(complete[train].sum()) < len(train)
    # only the router that needs complete rows is named; knn, svm and the baselines took every prompt
    assert fam.notes == [f"complete-only trained on {fam.n_train_complete} of {len(train)} training prompts (those with every model's outcome)"]
    # the single-model points are means over the complete test prompts
    pts = result.points.query("router == 'llm'").set_index("config")
    j = m.models.index(DROPPED)
    assert pts.loc[DROPPED, "quality"] == pytest.approx(m.scores[test[complete[test]], j].mean())
    again = evaluate(partial_store, SPEC, parallel=False)
    pd.testing.assert_frame_equal(again.points, result.points)
    pd.testing.assert_frame_equal(again.aiq, result.aiq)


def test_no_note_where_every_training_prompt_is_complete(imported_store: Store) -> None:
    result = evaluate(imported_store, EvalSpec(routers=("llm", "tests.test_partial:CompleteOnly"), families=("mbpp",), bootstrap=0), parallel=False)
    fam = result.families[0]
    assert fam.notes == [] and fam.n_train_complete == fam.n_train


def test_complete_store_gives_the_same_points_whichever_rows_routers_take(imported_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a complete matrix the masked path is today's: declaring every router complete-only changes nothing."""
    spec = EvalSpec(routers=("llm", "oracle", "knn", "svm", "cascade"), families=("mbpp",), bootstrap=10)
    # sklearn's neighbours (not every tied one), so that the plain formula below is the reference
    monkeypatch.setattr(KNNRouter, "grid", classmethod(lambda cls: [{"k": "5,10,40", "metric": "cosine", "ties": "sklearn"}]))
    masked = evaluate(imported_store, spec, parallel=False)
    for r in build_routers("knn") + build_routers("svm") + build_routers("cascade"):
        monkeypatch.setattr(type(r), "handles_missing", False)

    def plain_knn(self, test):  # noqa: ANN001, ANN202 - not a mock: the pre-mask formula the masked path must equal
        x = np.asarray(test.features, float)
        return np.stack([self.train_scores[self.index.kneighbors(x, n_neighbors=k)[1]].mean(axis=1) for k in self.ks])

    monkeypatch.setattr(KNNRouter, "predict_ks", plain_knn)
    rows_only = evaluate(imported_store, spec, parallel=False)
    pd.testing.assert_frame_equal(masked.points, rows_only.points)
    pd.testing.assert_frame_equal(masked.aiq, rows_only.aiq)
