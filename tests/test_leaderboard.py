"""ΔAIQ against the zero router, the oracle frontier, run.json and the leaderboard across datasets."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from harness.cli import app
from harness.store import Store
from harness.evaluate import EvalSpec, evaluate
from harness.leaderboard import LEADERBOARD_COLUMNS
from harness.metrics import paired_difference
from harness.progress import LineProgress

BOUNDS = ("llm", "oracle", "oracle-frontier", "random", "cascade")


@pytest.fixture(scope="module")
def bounds(imported_store: Store):
    return evaluate(imported_store, EvalSpec(routers=BOUNDS, bootstrap=100), parallel=False)


def test_paired_difference_of_a_column_with_itself_is_zero_with_even_odds() -> None:
    samples = np.random.default_rng(0).normal(size=(500, 3))
    lo, hi, p = paired_difference(samples, samples[:, 1])
    assert lo[1] == hi[1] == 0.0 and p[1] == 0.5
    shifted = np.column_stack([samples[:, 0] + 1.0, samples[:, 0]])
    lo, hi, p = paired_difference(shifted, samples[:, 0])
    assert lo[0] == pytest.approx(1.0) and p[0] == 1.0  # better on every resample, however noisy each AIQ is


def test_zero_router_against_itself(bounds) -> None:
    zero = bounds.aiq[bounds.aiq["router"] == "zero"]
    assert len(zero) == 3
    assert (zero["d_aiq"] == 0).all() and (zero["d_lo"] == 0).all() and (zero["d_hi"] == 0).all()
    assert (zero["p_better"] == 0.5).all()


def test_delta_is_paired_on_the_same_resamples(bounds) -> None:
    a = bounds.aiq
    assert np.allclose(a["d_aiq"], a["aiq"] - a.groupby("task_family")["aiq"].transform(lambda s: s[a.loc[s.index, "router"] == "zero"].iloc[0]))
    single = a[a["router"] == "llm"]
    # a single model never beats the hull of all single models: on no resample can it be better
    assert (single["p_better"] <= 0.5).all() and (single["d_hi"] <= 1e-12).all()
    oracle = a[a["router"] == "oracle"]
    assert (oracle["d_lo"] > 0).all() and (oracle["p_better"] == 1).all()


def test_oracle_frontier_bounds_every_router(bounds) -> None:
    for family, part in bounds.aiq.groupby("task_family"):
        frontier = part.loc[part["router"] == "oracle-frontier", "aiq"].iloc[0]
        assert frontier >= part["aiq"].max() - 1e-12, family
        assert part.loc[part["router"] == "oracle-frontier", "aiq_share"].iloc[0] == 1.0
        assert (part["aiq_share"] <= 1 + 1e-12).all()
        pts = bounds.points[(bounds.points["task_family"] == family) & (bounds.points["router"] == "oracle-frontier")]
        oracle = bounds.points[(bounds.points["task_family"] == family) & (bounds.points["router"] == "oracle")].iloc[0]
        # its λ → ∞ end is RouterBench's oracle point; cheaper points trade quality for cost
        top = pts.sort_values("lam").iloc[-1]
        assert top["quality"] == pytest.approx(oracle["quality"]) and top["cost"] == pytest.approx(oracle["cost"])
        assert pts["cost"].min() < oracle["cost"] / 2


def test_evaluate_writes_run_json_and_leaderboard_reads_it(imported_store: Store, tmp_path: Path, ray_local) -> None:
    runs = []
    for label in ("sample-a", None):
        out = tmp_path / (label or "sample-b")
        args = ["evaluate", "--store", imported_store.uri, "--out", str(out), "--routers", "llm,oracle,random,cascade", "--bootstrap", "20"]
        res = CliRunner().invoke(app, args + (["--label", label] if label else []))
        assert res.exit_code == 0, res.output
        run = json.loads((out / "run.json").read_text())
        assert run["dataset"] == label and run["store"] == imported_store.uri and run["spec"]["routers"] == ["llm", "oracle", "random", "cascade"]
        assert run["spec"]["bootstrap"] == 20 and run["created_at"]
        runs.append(out)
    board_dir = tmp_path / "board"
    res = CliRunner().invoke(app, ["leaderboard", *map(str, runs), "--out", str(board_dir)])
    assert res.exit_code == 0, res.output
    board = pd.read_csv(board_dir / "leaderboard.csv")
    assert list(board.columns) == LEADERBOARD_COLUMNS
    assert set(board["dataset"]) == {"sample-a", "sample-b"}  # run.json's label, else the directory's name
    assert set(board["router"]) == {"cascade"}  # bounds, baselines and single models are not ranked
    assert len(board) == 2 * 3  # best setting only: one row per (dataset, family, router)
    assert (board_dir / "leaderboard.png").stat().st_size > 10_000
    assert "cascade" in res.output and "panels" in res.output.splitlines()[-1]


def test_leaderboard_of_a_directory_without_results(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.cli", "leaderboard", str(tmp_path / "nothing"), "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "nothing: no evaluation results there (no aiq.csv)" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_plain_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    bar = LineProgress(Console(file=out, width=200), every_s=0.0)
    task = bar.add_task("embedding prompts", total=None, visible=False)
    bar.update(task, completed=5, total=10)  # invisible: nothing
    bar.update(task, completed=10, total=10, visible=True)
    other = bar.add_task("evaluating", total=4)
    for _ in range(4):
        bar.advance(other)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("embedding prompts: 10/10 (100 %)")
    assert [line.split("  ")[0] for line in lines[1:]] == [f"evaluating: {i}/4 ({25 * i} %)" for i in range(1, 5)]
