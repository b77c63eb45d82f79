"""Results as typed records: written and read back in one place, old run.json files still read and
rerun, and every command that evaluates goes through :func:`harness.results.run_evaluation`."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness import cli as cli_module
from harness import results as results_module
from harness.calibration import CALIBRATION_COLUMNS
from harness.cli import app
from harness.store import Store
from harness.errors import UserError
from harness.evaluate import EvalSpec
from harness.extend import ExtendReport
from harness.outcome_import import load_sources
from harness.results import Results, RunRecord, read_run_record, run_evaluation

CHEAP = EvalSpec(routers=("llm", "oracle", "random"), families=("mbpp",), bootstrap=10, seed=4)


@pytest.fixture(scope="module")
def mbpp_store(tmp_path_factory: pytest.TempPathFactory, routerbench_dir: Path) -> Store:
    """128 mbpp prompts × 11 models: evaluating the baselines on it takes well under a second."""
    store = Store(tmp_path_factory.mktemp("results-store") / "mbpp")
    batch = load_sources([str(routerbench_dir / "mbpp_test.csv")])
    store.append(batch.prompts, batch.outcomes)
    return store


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_written_results_read_back_equal(mbpp_store: Store, tmp_path: Path) -> None:
    done = run_evaluation(mbpp_store, CHEAP, str(tmp_path / "local"), label="sample", sources=["mbpp_test.csv"], parallel=False)
    calibrated = pd.DataFrame(
        [["mbpp", "svm", "", "$0.0004", 0.25, 4e-4, 3.9e-4, 0.61, np.nan, np.nan, np.nan, "ok"], ["mbpp", "knn", "k=5", "gpt-4:0.3", 1 / 3, 1e-3, 2e-3, 0.5, 0.3, 0.1, 0.2, "mixed"]],
        columns=CALIBRATION_COLUMNS,
    )
    written = replace(done.results, calibrated=calibrated)
    uri = f"file://{tmp_path}/remote"
    written.write(tmp_path / "local")
    written.write(uri)
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["aiq.csv", "calibrated.csv", "mbpp.png", "points.parquet", "run.json"]
    record = written.record
    assert isinstance(record, RunRecord) and record.store == mbpp_store.uri and record.store_versions == {"prompts": 0, "families": None, "outcomes": 0, "embeddings": None}
    assert record.environment is not None and record.environment.python and record.environment.numpy == np.__version__ and record.environment.host
    for where in (tmp_path / "local", uri):
        back = Results.read(where)
        pd.testing.assert_frame_equal(back.points, written.points)
        pd.testing.assert_frame_equal(back.aiq, written.aiq)
        pd.testing.assert_frame_equal(back.calibrated, calibrated)
        assert back.record == record and back.record.spec == CHEAP and back.label(where) == "sample"
        assert back.families == written.families == ["mbpp"]
    # run.json keeps the names other tools read
    doc = json.loads((tmp_path / "local" / "run.json").read_text())
    assert list(doc)[:10] == ["dataset", "store", "store_versions", "spec", "embedder", "package_version", "git_commit", "created_at", "sources", "rerun_of"]
    assert doc["spec"] == json.loads(json.dumps(asdict(CHEAP))) and doc["sources"] == ["mbpp_test.csv"]
    assert Results.read(tmp_path / "local", points=False).points is None


def old_run_json(store: Store, eval_spec: EvalSpec, **changes) -> dict:
    """A run.json as harness/run_record.py wrote it before run.json was a pydantic model."""
    doc = {
        "dataset": "old",
        "store": store.uri,
        "store_versions": {"prompts": 0, "outcomes": 0, "embeddings": None},
        "spec": asdict(eval_spec),
        "embedder": {"model": eval_spec.embedder, "backend": eval_spec.embed_backend, "text": eval_spec.embed_text},
        "package_version": "0.1.0",
        "git_commit": None,
        "created_at": "2026-11-30T12:00:00+00:00",
        "sources": [],
        "rerun_of": None,
    }
    return {k: v for k, v in {**doc, **changes}.items() if v is not ...}


def test_an_old_run_json_reads_and_reruns(mbpp_store: Store, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps(old_run_json(mbpp_store, CHEAP), indent=2, default=str) + "\n")
    record = read_run_record(str(old))
    assert record.spec == CHEAP and record.label == "old" and record.environment is None and record.store_versions["outcomes"] == 0
    again = tmp_path / "again"
    shown = cli("evaluate", "--rerun", f"{old}/run.json", "--out", str(again), "--sequential")
    assert last_line(shown) == f"wrote {again}/points.parquet, {again}/aiq.csv, {again}/run.json and 1 plots to {again}/"
    rerun = Results.read(again).record
    assert rerun.rerun_of == f"{old}/run.json" and rerun.spec == CHEAP and rerun.dataset == "old" and rerun.environment is not None
    direct = run_evaluation(mbpp_store, CHEAP, str(tmp_path / "direct"), parallel=False).results
    pd.testing.assert_frame_equal(Results.read(again).aiq, direct.aiq)

    # older still: no store versions (reads, for the leaderboard, but cannot be rerun exactly);
    # a spec field this version does not know is named
    (old / "run.json").write_text(json.dumps(old_run_json(mbpp_store, CHEAP, store_versions=..., sources=..., rerun_of=...)))
    assert read_run_record(str(old)).store_versions is None
    res = CliRunner().invoke(app, ["evaluate", "--rerun", str(old), "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, UserError) and "has no store_versions" in str(res.exception)
    (old / "run.json").write_text(json.dumps(old_run_json(mbpp_store, CHEAP, spec={**asdict(CHEAP), "warp": 9})))
    with pytest.raises(UserError, match=r"run.json: spec field\(s\) warp unknown to this version of routerbench$"):
        read_run_record(str(old))
    (old / "run.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable run.json"):
        read_run_record(str(old / "run.json"))


def test_extend_and_refresh_evaluate_through_run_evaluation(mbpp_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command's evaluation is one call of run_evaluation with `evaluate`'s default spec;
    none calls the `evaluate` command function (patched here to fail)."""
    calls: list[tuple[str, str, EvalSpec]] = []
    real = results_module.run_evaluation

    def recorded(store, spec, out, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append((store.uri, out, spec))
        return real(store, replace(spec, routers=CHEAP.routers, bootstrap=0), out, **{**kw, "parallel": False})

    def not_the_command(**kw):  # noqa: ANN003, ANN202
        raise AssertionError("a Typer command function was called from code")

    monkeypatch.setattr(results_module, "run_evaluation", recorded)
    monkeypatch.setattr(cli_module, "evaluate", not_the_command)
    monkeypatch.setattr("harness.model_config.load_model_config", lambda path: SimpleNamespace(name="fake-model"))
    monkeypatch.setattr("harness.extend.extend", lambda *a, **k: ExtendReport("fake-model", planned=0, appended=0, graded=0, errors={}, spend_usd=0.0, skipped_done=128))
    from harness.refresh import MaintenanceReport

    monkeypatch.setattr("harness.refresh.refresh", lambda *a, **k: MaintenanceReport())

    outs = {name: str(tmp_path / name) for name in ("evaluate", "extend", "refresh")}
    shown = {
        "evaluate": cli("evaluate", "--store", mbpp_store.uri, "--tasks", "mbpp", "--out", outs["evaluate"]),
        "extend": cli("extend", "--model", str(tmp_path / "fake.yaml"), "--store", mbpp_store.uri, "--tasks", "mbpp", "--evaluate", "--out", outs["extend"]),
        "refresh": cli("refresh", "--store", mbpp_store.uri, "--out", outs["refresh"]),
    }
    assert [(store, out) for store, out, _ in calls] == [(mbpp_store.uri, outs[name]) for name in ("evaluate", "extend", "refresh")]
    evaluate_spec, extend_spec, refresh_spec = (spec for _, _, spec in calls)
    assert extend_spec == evaluate_spec and refresh_spec == replace(evaluate_spec, families=None)
    for name, out in outs.items():
        assert last_line(shown[name]) == f"wrote {out}/points.parquet, {out}/aiq.csv, {out}/run.json and 1 plots to {out}/"
        assert "mbpp: AIQ" in shown[name] and Results.read(out).record.spec == replace(calls[0][2], routers=CHEAP.routers, bootstrap=0, families=refresh_spec.families if name == "refresh" else ("mbpp",))
