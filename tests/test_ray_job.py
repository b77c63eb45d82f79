"""`ray job submit -- routerbench evaluate` against a real Ray head on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import submit_job

pytestmark = pytest.mark.slow


def test_evaluate_as_a_ray_job(ray_head, imported_store, tmp_path: Path) -> None:
    out = tmp_path / "job-results"
    done = submit_job(
        ray_head,
        ["routerbench", "evaluate", "--store", imported_store.uri, "--out", str(out), "--tasks", "mbpp", "--routers", "llm,oracle,cascade", "--bootstrap", "10"],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    points = pd.read_parquet(out / "points.parquet")
    assert set(points["router"]) == {"llm", "oracle", "cascade"} and set(points["task_family"]) == {"mbpp"}
    assert (out / "mbpp.png").exists()
