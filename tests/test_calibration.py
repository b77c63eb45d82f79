"""Calibration to a cost or share target: a KNN router on synthetic prompts whose quality its
neighbours predict in part, checked on test prompts it never saw and against independent routing."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness.calibration import (
    CALIBRATION_COLUMNS,
    CalibrationTarget,
    calibrate,
    calibrate_folds,
    calibration_rows,
    calibration_table,
    cross_validate,
    parse_target_cost,
    parse_target_share,
    parse_targets,
    supports_calibration,
)
from harness.errors import UserError
from harness.matrix import OutcomeMatrix
from harness.splits import Fold
from routers import RoutingOptions
from routers.cascade import CascadeRouter
from routers.knn import KNNRouter
from routers.oracle import Oracle
from routers.random_choice import RandomChoice
from routers.single import SingleModel

MODELS = ("cheap", "mid", "dear")
PRICE = np.array([0.0005, 0.003, 0.02])  # mean $ per query of each model
COST_TARGETS = (0.0008, 0.0012, 0.002, 0.003, 0.005, 0.008)
SHARE_TARGETS = (0.1, 0.2, 0.3)


def synthetic(n: int, seed: int = 0, d: int = 8) -> OutcomeMatrix:
    """Prompts on a sphere; each model's success probability is a logistic function of the direction
    (dearer models better on average), prompt lengths scale every model's cost."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    direction = x / np.linalg.norm(x, axis=1, keepdims=True)
    p = 1 / (1 + np.exp(-(direction @ (3 * rng.normal(size=(d, 3))) + np.array([-1.0, 0.0, 1.0]))))
    return OutcomeMatrix(
        family="synthetic",
        sample_ids=np.array([f"s{i:06d}" for i in range(n)], dtype=object),
        tasks=np.array(["synthetic"] * n, dtype=object),
        models=MODELS,
        scores=(rng.random((n, 3)) < p).astype(float),
        costs=rng.lognormal(0, 0.3, (n, 1)) * PRICE,
        features=x,
    )


def split(m: OutcomeMatrix, seed: int = 1) -> tuple[OutcomeMatrix, OutcomeMatrix]:
    order = np.random.default_rng(seed).permutation(m.n)
    cut = int(0.7 * m.n)
    return m.take(np.sort(order[:cut])), m.take(np.sort(order[cut:]))


def knn(lambdas: tuple[float, ...] | None = None) -> KNNRouter:
    options = RoutingOptions() if lambdas is None else RoutingOptions(lambdas=lambdas)
    return KNNRouter(options, k=10, metric="cosine")


@pytest.fixture(scope="module")
def large() -> tuple[OutcomeMatrix, OutcomeMatrix]:
    return split(synthetic(8_000))


def all_targets() -> list[CalibrationTarget]:
    return [CalibrationTarget("cost", c) for c in COST_TARGETS] + [CalibrationTarget("share", f, "dear") for f in SHARE_TARGETS]


@pytest.fixture(scope="module")
def large_results(large):
    """Every target of the tests at once: one cross-validation and one test prediction serve all."""
    train, test = large
    return calibrate_folds(knn(), [Fold(train, test)], all_targets())


@pytest.fixture(scope="module")
def large_mixed(large):
    train, test = large
    return calibrate_folds(knn(), [Fold(train, test)], all_targets(), mix=True)


@pytest.fixture(scope="module")
def independent(large, large_results) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The router's own fit + route at every λ the calibration chose: λ → (choices, costs, scores)
    per test prompt."""
    train, test = large
    lams = tuple(sorted({r.lam for r in large_results}))
    router = knn(lambdas=lams)
    router.fit(router.training_rows(train))
    routing = router.route(test)
    return {lam: (routing.choice[i], routing.cost[i], routing.quality[i]) for i, lam in enumerate(lams)}


def test_cost_targets_are_met_on_the_test_prompts(large, large_results, independent) -> None:
    """One λ: the CV estimate stays under the cap and transfers to the test prompts. A KNN with
    k=10 predicts multiples of 0.1, so its cost moves in steps (up to ~25 % apart here): a target
    between two steps lands on the lower one."""
    train, test = large
    means = test.costs.mean(axis=0)
    assert means[0] < min(COST_TARGETS) and max(COST_TARGETS) < means[2]  # inside the pool's range
    cost_results = [r for r in large_results if r.target.kind == "cost"]
    errors = np.array([r.error for r in cost_results])
    assert np.abs(errors).max() <= 0.25, errors
    for r in cost_results:
        assert r.status == "ok"
        assert r.train_cost <= r.target.value  # the CV estimate respects the cap
        _, cost, quality = independent[r.lam]
        assert r.test_cost == pytest.approx(cost.mean(), rel=1e-12)
        assert r.test_quality == pytest.approx(quality.mean(), rel=1e-12)
        # and the CV estimate transfers to the test prompts, within their sampling error
        assert abs(r.test_cost - r.train_cost) <= 3 * cost.std() / np.sqrt(len(cost))
    # Spending more buys quality: the test quality rises with the target.
    assert np.all(np.diff([r.test_quality for r in cost_results]) > 0)


def test_mixing_two_lambdas_meets_cost_and_share_targets_within_10_percent(large_results, large_mixed) -> None:
    cost_results = [r for r in large_mixed if r.target.kind == "cost"]
    errors = np.array([r.error for r in cost_results])
    assert np.abs(errors).max() <= 0.10, errors
    assert np.abs(errors).mean() <= 0.05, errors
    for r in cost_results:
        assert r.train_cost == pytest.approx(r.target.value, rel=1e-9)  # exact on the CV curve
        assert 0 <= r.mix < 1 and (r.mix == 0 or r.mix_lam > r.lam)
    assert sum(r.mix > 0 for r in cost_results) >= len(cost_results) - 1  # most targets fall between steps
    for r in (r for r in large_mixed if r.target.kind == "share"):
        assert abs(r.test_share - r.target.value) <= 0.02, (r.target, r.test_share)
    # The mixture spends what the single λ left unspent, and buys quality with it.
    single = [r for r in large_results if r.target.kind == "cost"]
    assert np.mean([r.test_quality for r in cost_results]) > np.mean([r.test_quality for r in single])


def test_cost_rule_is_best_quality_under_the_cap(large, large_results) -> None:
    """Brute force over the CV curve: nothing under the cap has better CV quality, and the next
    routing up costs more than the target (the miss is a step, not a wrong choice)."""
    train, _ = large
    curve = cross_validate(knn(), train)
    for r in (r for r in large_results if r.target.kind == "cost"):
        feasible = curve.cost <= r.target.value
        assert r.train_quality == pytest.approx(curve.quality[feasible].max(), abs=1e-12)
        above = curve.cost[curve.cost > r.train_cost + 1e-15]
        assert above.min() > r.target.value
        at = np.flatnonzero(curve.lambdas == r.lam)
        assert at.size == 1 and curve.cost[at[0]] == pytest.approx(r.train_cost, rel=1e-12)


def test_share_targets_are_met_on_the_test_prompts(large_results, independent) -> None:
    for r in (r for r in large_results if r.target.kind == "share"):
        choice, _, _ = independent[r.lam]
        assert r.test_share == pytest.approx(float((choice == MODELS.index("dear")).mean()), abs=1e-12)
        assert abs(r.test_share - r.target.value) <= 0.03, (r.target, r.train_share, r.test_share)
        assert np.isfinite(r.train_cost) and r.status == "ok"


def test_targets_out_of_reach_say_so_and_sit_at_the_ends() -> None:
    train, test = split(synthetic(3_000, seed=2))
    low, high, none_dear = calibrate_folds(
        knn(), [Fold(train, test)], [CalibrationTarget("cost", 1e-6), CalibrationTarget("cost", 1.0), CalibrationTarget("share", 0.0, "dear")]
    )
    curve = cross_validate(knn(), train)
    assert low.status == "below-range" and low.reachable[0] > 1e-6
    assert low.test_cost == pytest.approx(test.costs[:, 0].mean(), rel=1e-12)  # everything to the cheapest
    assert low.lam <= 1e-3
    assert high.status == "above-range" and high.reachable[1] < 1.0
    assert high.train_quality == pytest.approx(curve.quality.max(), abs=1e-12)  # the best routing there is
    assert high.test_cost < test.costs[:, 2].mean()
    assert none_dear.status == "ok" and none_dear.test_share < 0.01


def test_partial_training_prompts() -> None:
    """Missing outcomes in training: KNN fits on every prompt, CV scores the complete held-out ones."""
    m = synthetic(4_000, seed=3)
    train, test = split(m)
    rng = np.random.default_rng(4)
    gone = np.column_stack([np.zeros(train.n, bool), rng.random(train.n) < 0.3, rng.random(train.n) < 0.1])
    partial = OutcomeMatrix(**{**train.__dict__, "scores": np.where(gone, np.nan, train.scores), "costs": np.where(gone, np.nan, train.costs)})
    complete = int(partial.complete_rows().sum())
    assert 0.5 * train.n < complete < 0.7 * train.n
    r = calibrate(knn(), partial, test, CalibrationTarget("cost", 0.003))
    assert not r.masked and r.n_train == complete and r.n_test == test.n
    assert np.isfinite([r.lam, r.train_cost, r.test_cost, r.test_quality]).all()
    assert abs(r.error) <= 0.2, r

    # No training prompt has every outcome: CV falls back to masked means.
    rotate = np.arange(train.n)[:, None] % 3 == np.arange(3)[None, :]
    holes = OutcomeMatrix(**{**train.__dict__, "scores": np.where(rotate, np.nan, train.scores), "costs": np.where(rotate, np.nan, train.costs)})
    r = calibrate(knn(), holes, test, CalibrationTarget("share", 0.2, "dear"))
    assert r.masked and np.isfinite([r.lam, r.train_share, r.test_share]).all()
    assert abs(r.test_share - 0.2) <= 0.1, r


@pytest.mark.parametrize(
    ("parse", "text", "words"),
    [
        (parse_target_cost, "-0.01", "negative"),
        (parse_target_cost, "abc", "not a number"),
        (parse_target_cost, "nan", "not a number"),
        (parse_target_share, "gpt-4", "MODEL:FRACTION"),
        (parse_target_share, ":0.2", "MODEL:FRACTION"),
        (parse_target_share, "gpt-4:1.5", "[0, 1]"),
        (parse_target_share, "gpt-4:-0.1", "[0, 1]"),
        (parse_target_share, "gpt-4:lots", "not a number"),
    ],
)
def test_parser_errors_are_one_line_naming_flag_and_value(parse, text, words) -> None:
    with pytest.raises(UserError) as err:
        parse(text)
    message = str(err.value)
    flag = "--target-cost" if parse is parse_target_cost else "--target-share"
    assert "\n" not in message and flag in message and f"'{text}'" in message and words in message


def test_parser_values_and_pool_check() -> None:
    assert parse_target_cost("$0.001") == CalibrationTarget("cost", 0.001)
    assert parse_target_share("org/model:v2:20%") == CalibrationTarget("share", 0.2, "org/model:v2")
    targets = parse_targets(["0.001"], ["dear:0.2"], models=MODELS)
    assert [str(t) for t in targets] == ["cost=0.001", "share=dear:0.2"]
    with pytest.raises(UserError, match=r"--target-share 'gpt-4:0.2': model 'gpt-4' is not in the pool \(cheap, mid, dear\)"):
        parse_target_share("gpt-4:0.2", models=MODELS)
    train, test = split(synthetic(200))
    with pytest.raises(UserError, match="gpt-4"):
        calibrate(knn(), train, test, CalibrationTarget("share", 0.2, "gpt-4"))


def test_only_predictive_routers_are_calibrated() -> None:
    assert supports_calibration(knn())
    others = [SingleModel(model="cheap"), Oracle(), RandomChoice(), CascadeRouter()]
    assert not any(supports_calibration(r) for r in others)
    train, test = split(synthetic(200))
    with pytest.raises(TypeError, match="no λ"):
        calibrate(Oracle(), train, test, CalibrationTarget("cost", 0.001))


def test_csv_rows_table_and_pickling(large_results) -> None:
    rows = calibration_rows(large_results)
    assert list(rows.columns) == CALIBRATION_COLUMNS
    assert list(rows["target"][:2]) == ["cost=0.0008", "cost=0.0012"] and rows["target"].iloc[-1] == "share=dear:0.3"
    assert (rows[["task_family", "router", "config"]].drop_duplicates().to_numpy() == [["synthetic", "knn", "k=10,metric=cosine"]]).all()
    assert np.array_equal(rows["test_cost"], [r.test_cost for r in large_results])
    out = io.StringIO()
    Console(file=out, width=200).print(calibration_table(large_results))
    text = out.getvalue()
    first = large_results[0]
    assert "share=dear:0.3" in text and f"{100 * first.error:+.1f} %" in text
    back = pickle.loads(pickle.dumps(large_results))
    assert [(b.lam, b.test_cost, str(b.target)) for b in back] == [(r.lam, r.test_cost, str(r.target)) for r in large_results]


def test_calibration_is_deterministic_and_leaves_the_router_alone() -> None:
    train, test = split(synthetic(1_000, seed=5))
    router = knn()
    a = calibrate(router, train, test, CalibrationTarget("cost", 0.004), seed=7)
    b = calibrate(router, train, test, CalibrationTarget("cost", 0.004), seed=7)
    assert (a.lam, a.test_cost, a.train_cost) == (b.lam, b.test_cost, b.train_cost)
    assert not hasattr(router, "cost")  # never fitted: the caller's router is untouched


# ---------------------------------------------------------------------- through evaluate
def test_evaluate_calibrates_every_lambda_router_on_ray_as_in_sequence(imported_store, tmp_path, ray_local) -> None:
    from typer.testing import CliRunner

    from harness.calibration import CALIBRATION_COLUMNS, calibration_rows
    from harness.cli import app
    from harness.evaluate import EvalSpec, evaluate

    spec = EvalSpec(routers=("llm", "oracle", "svm", "cascade"), families=("mbpp",), bootstrap=0, target_costs=("0.0004",), target_shares=("gpt-4-1106-preview:0.2",))
    on_ray = evaluate(imported_store, spec, parallel=True)
    here = evaluate(imported_store, spec, parallel=False)
    pd.testing.assert_frame_equal(calibration_rows(on_ray.calibrated), calibration_rows(here.calibrated))  # NaN shares: frames, not ==
    assert [(c.router, str(c.target)) for c in here.calibrated] == [("svm", "cost=0.0004"), ("svm", "share=gpt-4-1106-preview:0.2")]
    cost, share = here.calibrated
    assert abs(cost.error) < 0.25 and abs(share.test_share - 0.2) < 0.08  # 129 test prompts: a loose tolerance

    out = tmp_path / "out"
    args = ["evaluate", "--store", imported_store.uri, "--out", str(out), "--tasks", "mbpp", "--routers", "llm,svm", "--bootstrap", "0", "--target-cost", "0.0004"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "calibrated.csv")
    assert list(table.columns) == CALIBRATION_COLUMNS and table["target"].tolist() == ["cost=0.0004"]
    assert "calibration to a target" in res.output
