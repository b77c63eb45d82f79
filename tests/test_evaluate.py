"""`routerbench evaluate` on the real RouterBench sample: Ray vs in-process, outputs, plug-ins, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness import metrics
from harness.cli import app
from harness.store import Store
from harness.errors import UserError
from harness.evaluate import AIQ_COLUMNS, POINT_COLUMNS, EvalSpec, evaluate
from harness.outcome_import import load_sources
from harness.splits import routerbench_order
from harness.matrix import outcome_matrices

FAMILIES = ["arc-challenge", "mbpp", "winogrande"]


BASELINES = ("llm", "oracle", "random")


# mbpp's prompts are short, so embedding them is quick; the slow test below runs all three families.
ALL_ROUTERS = EvalSpec(families=("mbpp",), bootstrap=50)


@pytest.fixture(scope="module")
def sequential_result(imported_store: Store):
    """Every built-in router (the default grid) on the shared mbpp sample, in this process."""
    return evaluate(imported_store, ALL_ROUTERS, parallel=False)


def test_ray_run_equals_sequential_run(imported_store: Store, sequential_result, ray_local) -> None:
    on_ray = evaluate(imported_store, ALL_ROUTERS, parallel=True)
    pd.testing.assert_frame_equal(on_ray.points, sequential_result.points)
    pd.testing.assert_frame_equal(on_ray.aiq, sequential_result.aiq)
    # where each router's routing task ran (one per family and router setting; none without Ray)
    placed = on_ray.placement
    assert set(placed["task_family"]) == set(on_ray.summary["task_family"]) and not placed.duplicated(["task_family", "router", "config"]).any()
    assert placed["node_id"].notna().all() and set(placed["router"]) == set(on_ray.points["router"]) - {"zero"} and sequential_result.placement.empty


def test_points_and_aiq_shapes(sequential_result) -> None:
    check_all_routers(sequential_result.points, sequential_result.aiq, ["mbpp"])


def check_all_routers(pts: pd.DataFrame, aiq: pd.DataFrame, families: list[str]) -> None:
    assert list(pts.columns) == POINT_COLUMNS and list(aiq.columns) == AIQ_COLUMNS
    assert sorted(pts["task_family"].unique()) == families
    for fam in families:
        p = pts[pts["task_family"] == fam]
        counts = {"llm": 11, "oracle": 1, "oracle-frontier": 281, "random": 1, "knn": 3 * 32, "mlp": 2 * 32, "svm": 32, "cascade": 11 * 8}
        counts |= {"mf": 2 * 32, "sw-ranking": 4 * 32, "irt": 2 * 32, "dual-encoder": 2 * 32, "carrot": 2 * 32}
        assert p["router"].value_counts().to_dict() == counts
        with_lam = ["oracle-frontier", "knn", "mlp", "svm", "mf", "sw-ranking", "irt", "dual-encoder", "carrot"]
        assert p.loc[p["router"].isin(with_lam), "lam"].notna().all()
        assert p.loc[~p["router"].isin(with_lam), "lam"].isna().all()
        knn = p[p["router"] == "knn"]
        assert set(knn["config"]) == {"k=5,metric=cosine", "k=10,metric=cosine", "k=40,metric=cosine"}
        cascade = p[p["router"] == "cascade"]
        assert "error_rate=0.2,budget=0.01" in set(cascade["config"]) and cascade["curve"].nunique() == 8
        a = aiq[aiq["task_family"] == fam].set_index(["router", "config"])["aiq"]
        assert ("zero", "") in a.index and ("oracle", "") in a.index and len(a) == 11 + 1 + 1 + 1 + 3 + 2 + 1 + 8 + 2 + 4 + 2 + 2 + 2 + 1
        assert ("cascade", "error_rate=0.2") in a.index
        # the zero router mixes the single models, so it is at least as good as any one of them,
        # and the oracle (knowing every answer) is better still
        assert a[("zero", "")] >= a.loc["llm"].max() - 1e-12
        assert a[("oracle", "")] > a[("zero", "")]
        # a perfect judge makes the cascade nearly an oracle; a judge that errs 80 % of the time cannot beat ε = 0
        assert a[("cascade", "error_rate=0")] > a[("cascade", "error_rate=0.8")]
    # Every setting has an interval, in order. That it contains its own estimate is not asserted: a
    # percentile interval holds the middle 95 % of the resampled AIQs, and a hull's AIQ is biased on
    # resamples (the hull keeps the best of noisy points), so the estimate may lie outside it with
    # nothing wrong. What the interval is, is asserted exactly in
    # test_bootstrap_interval_is_the_percentile_of_resampled_aiqs.
    assert aiq["aiq_lo"].notna().all() and (aiq["aiq_lo"] <= aiq["aiq_hi"]).all()


def test_single_model_points_are_test_split_means(imported_store: Store, sequential_result) -> None:
    m = outcome_matrices(imported_store)["mbpp"]
    order = routerbench_order(m.sample_ids)
    test = np.sort(order[int(0.7 * m.n) :])
    pts = sequential_result.points.query("task_family == 'mbpp' and router == 'llm'").set_index("config")
    for j, model in enumerate(m.models):
        assert pts.loc[model, "quality"] == pytest.approx(m.scores[test, j].mean())
        assert pts.loc[model, "cost"] == pytest.approx(m.costs[test, j].mean())


def test_bootstrap_interval_is_the_percentile_of_resampled_aiqs(imported_store: Store) -> None:
    """Each single model's and the zero router's interval: the 2.5th and 97.5th percentiles of their
    AIQs recomputed here on the same seeded resamples of the test prompts (with replacement)."""
    resamples, seed = 40, 7
    aiq = evaluate(imported_store, EvalSpec(("llm",), families=("mbpp",), bootstrap=resamples, seed=seed), parallel=False).aiq
    m = outcome_matrices(imported_store)["mbpp"]
    test = np.sort(routerbench_order(m.sample_ids)[int(0.7 * m.n) :])
    n = len(test)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    quality, cost = counts @ m.scores[test] / n, counts @ m.costs[test] / n  # (resamples, models)
    samples = []
    for q, c in zip(quality, cost):
        lo, hi = c.min(), c.max()  # paper mode: the single models' cost range
        single = [metrics.aiq(metrics.non_decreasing_hull(c[[j]], q[[j]]), lo, hi) for j in range(len(m.models))]
        samples.append([*single, metrics.aiq(metrics.zero_router(c, q), lo, hi)])
    expected_lo, expected_hi = np.percentile(np.array(samples), [2.5, 97.5], axis=0)
    rows = aiq.set_index(["router", "config"]).loc[[*(("llm", model) for model in m.models), ("zero", "")]]
    np.testing.assert_allclose(rows["aiq_lo"], expected_lo, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rows["aiq_hi"], expected_hi, rtol=1e-12, atol=1e-15)


def test_bootstrap_is_seeded(imported_store: Store) -> None:
    routers = ("llm", "oracle", "cascade")
    spec = EvalSpec(routers, families=("mbpp",), bootstrap=30, seed=5)
    a = evaluate(imported_store, spec, parallel=False).aiq
    b = evaluate(imported_store, spec, parallel=False).aiq
    pd.testing.assert_frame_equal(a, b)
    c = evaluate(imported_store, EvalSpec(routers, families=("mbpp",), bootstrap=30, seed=6), parallel=False).aiq
    assert not np.allclose(a["aiq_lo"], c["aiq_lo"])


def test_compat_mode_changes_the_range(imported_store: Store) -> None:
    paper = evaluate(imported_store, EvalSpec(BASELINES, families=("winogrande",), bootstrap=0), parallel=False).aiq.set_index("router")
    compat = evaluate(imported_store, EvalSpec(BASELINES, families=("winogrande",), bootstrap=0, aiq_mode="compat"), parallel=False).aiq.set_index("router")
    # compat integrates from $0, so every hull loses the stretch below its cheapest point
    assert compat.loc["zero", "aiq"] < paper.loc["zero", "aiq"]
    assert paper["aiq_lo"].isna().all()


def test_prompts_without_every_outcome_are_left_out_and_counted(routerbench_dir: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "rekeyed")
    batch = load_sources([str(routerbench_dir)], on_ambiguous="rekey")
    store.append(batch.prompts, batch.outcomes)
    result = evaluate(store, EvalSpec(BASELINES, families=("arc-challenge",), bootstrap=0), parallel=False)
    m = outcome_matrices(store)["arc-challenge"]
    test = routerbench_order(m.sample_ids)[int(0.7 * m.n) :]
    expected = int((~m.complete_rows()[test]).sum())
    assert expected > 0
    row = result.summary.set_index("task_family").loc["arc-challenge"]
    assert row["left_out"] == expected and row["test"] == len(test) - expected


PLUGIN = textwrap.dedent(
    """
    def cheapest(prompt):
        return "mistralai/mistral-7b-chat"

    class ByLength:
        def route_batch(self, prompts):
            return ["gpt-4-1106-preview" if len(p) > 70 else "mistralai/mistral-7b-chat" for p in prompts]

    def wrong(prompt):
        return "gpt-5-imaginary"
    """
)


@pytest.fixture()
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_routers.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_routers"


def test_plugin_function_router_is_evaluated_like_a_builtin(imported_store: Store, plugin_module: str, ray_local) -> None:
    spec = EvalSpec(routers=(f"{plugin_module}:cheapest", f"{plugin_module}:ByLength"), families=("mbpp",), bootstrap=0)
    result = evaluate(imported_store, spec, parallel=True)  # the module reaches Ray workers by value
    pts = result.points.set_index(["router", "config"])
    assert pts.loc[(f"{plugin_module}:cheapest", ""), "quality"] == pts.loc[("llm", "mistralai/mistral-7b-chat"), "quality"]
    by_length = pts.loc[(f"{plugin_module}:ByLength", "")]
    assert pts.loc[("llm", "mistralai/mistral-7b-chat"), "cost"] < by_length["cost"] < pts.loc[("llm", "gpt-4-1106-preview"), "cost"]
    assert f"{plugin_module}:ByLength" in set(result.aiq["router"])


def test_plugin_naming_a_model_outside_the_pool_is_an_error(imported_store: Store, plugin_module: str) -> None:
    with pytest.raises(UserError, match="chose model 'gpt-5-imaginary', which is not in the store's pool"):
        evaluate(imported_store, EvalSpec(routers=(f"{plugin_module}:wrong",), families=("mbpp",), bootstrap=0), parallel=False)


def test_unknown_router_and_family_and_empty_store(imported_store: Store, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Unknown router 'nope'. Available: .*llm.*oracle"):
        evaluate(imported_store, EvalSpec(routers=("nope",)), parallel=False)
    with pytest.raises(UserError, match="unknown task family mmlu; the store has arc-challenge, mbpp, winogrande"):
        evaluate(imported_store, EvalSpec(BASELINES, families=("mmlu",)), parallel=False)
    with pytest.raises(UserError, match="holds no outcomes; import some first"):
        evaluate(Store(tmp_path / "empty"), EvalSpec(BASELINES), parallel=False)
    with pytest.raises(UserError, match="cannot import module 'no_such_module'"):
        evaluate(imported_store, EvalSpec(routers=("no_such_module:f",)), parallel=False)


def test_cli_evaluate_writes_points_aiq_and_plots(imported_store: Store, tmp_path: Path, ray_local) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["evaluate", "--store", imported_store.uri, "--out", str(out), "--bootstrap", "20", "--routers", "llm,oracle,random,cascade"])
    assert res.exit_code == 0, res.output
    assert "AIQ" in res.output and "zero" in res.output and "gpt-4-1106-preview" in res.output
    assert res.output.strip().splitlines()[-1].startswith("wrote ")
    pts = pd.read_parquet(out / "points.parquet")
    aiq = pd.read_csv(out / "aiq.csv")
    assert list(pts.columns) == POINT_COLUMNS and list(aiq.columns) == AIQ_COLUMNS
    for fam in FAMILIES:
        png = out / f"{fam}.png"
        assert png.stat().st_size > 20_000 and png.read_bytes()[:4] == b"\x89PNG"
    again = CliRunner().invoke(app, ["report", "--out", str(out)])
    assert again.exit_code == 0 and "redrew 3 plots" in again.output


@pytest.mark.slow
def test_readme_command_evaluates_every_router_on_the_shared_sample(routerbench_dir: Path, tmp_path: Path) -> None:
    """The README's main job, as a user runs it: a fresh store, a local Ray started by the program."""
    import subprocess
    import sys

    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.cli", "evaluate", "--data", str(routerbench_dir), "--store", str(tmp_path / "store"), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported 3150 prompts and 34650 outcomes" in done.stdout
    check_all_routers(pd.read_parquet(out / "points.parquet"), pd.read_csv(out / "aiq.csv").fillna({"config": ""}), FAMILIES)
    assert done.stdout.strip().splitlines()[-1].startswith("wrote ")


def test_cli_evaluate_with_data_imports_first(routerbench_dir: Path, tmp_path: Path, ray_local) -> None:
    store = tmp_path / "fresh"
    args = ["evaluate", "--store", str(store), "--data", str(routerbench_dir / "mbpp_test.csv"), "--out", str(tmp_path / "o"), "--bootstrap", "0", "--routers", "llm,oracle,random"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "imported 128 prompts and 1408 outcomes" in first.output
    second = CliRunner().invoke(app, args)
    assert "imported 0 prompts and 0 outcomes" in second.output and "already there: 128 prompts, 1408 outcomes" in second.output


def test_results_can_go_to_a_filesystem_uri(imported_store: Store, tmp_path: Path, ray_local) -> None:
    uri = f"file://{tmp_path}/uri-results"
    res = CliRunner().invoke(app, ["evaluate", "--store", imported_store.uri, "--out", uri, "--tasks", "mbpp", "--routers", "llm,oracle", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "uri-results").iterdir()) == ["aiq.csv", "mbpp.png", "points.parquet", "run.json"]
    assert res.output.strip().splitlines()[-1] == f"wrote {uri}/points.parquet, {uri}/aiq.csv, {uri}/run.json and 1 plots to {uri}/"
