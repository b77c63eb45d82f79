"""The outcome store on real Parquet files: appends, keys, atomicity, concurrency, matrices."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.dataset import COMMITS_DIR, Store
from harness.errors import UserError


def prompts(ids: list[str], task: str = "mmlu-astronomy") -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ids, "task": task, "task_family": task.split("-")[0], "prompt": [f"question {i}" for i in ids]})


def outcomes(ids: list[str], model: str, score: float = 1.0, cost: float = 0.01) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ids, "model": model, "score": score, "cost_usd": cost, "response": "A"})


def test_append_and_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    assert store.is_empty() and store.models() == []
    res = store.append(prompts(["a", "b"]), pd.concat([outcomes(["a", "b"], "m1"), outcomes(["a"], "m2", 0.0, 0.5)]))
    assert (res.prompts_added, res.outcomes_added) == (2, 3)
    assert store.models() == ["m1", "m2"]
    got = store.outcomes().sort_values(["sample_id", "model"])
    assert got[["sample_id", "model", "score", "cost_usd"]].values.tolist() == [["a", "m1", 1.0, 0.01], ["a", "m2", 0.0, 0.5], ["b", "m1", 1.0, 0.01]]
    assert got["created_at"].notna().all()
    # partitioned by model: one directory per model, names quoted
    dirs = sorted(p.name for p in (tmp_path / "s" / "outcomes").iterdir())
    assert dirs == ["model=m1", "model=m2"]


def test_model_names_with_slashes_get_their_own_partition(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.append(prompts(["a"]), outcomes(["a"], "meta/llama-2-70b-chat"))
    assert store.models() == ["meta/llama-2-70b-chat"]
    assert (tmp_path / "s" / "outcomes" / "model=meta%2Fllama-2-70b-chat").is_dir()


def test_append_is_idempotent_and_overwrite_wins(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.append(prompts(["a", "b"]), outcomes(["a", "b"], "m1", 1.0))
    again = store.append(prompts(["a", "b", "c"]), outcomes(["a", "b", "c"], "m1", 0.0))
    assert (again.prompts_added, again.prompts_skipped, again.outcomes_added, again.outcomes_skipped) == (1, 2, 1, 2)
    scores = store.outcomes().set_index("sample_id")["score"].sort_index()
    assert scores.tolist() == [1.0, 1.0, 0.0]  # existing keys kept their first value
    store.append(outcomes=outcomes(["a"], "m1", 0.25), overwrite=True)
    scores = store.outcomes().set_index("sample_id")["score"].sort_index()
    assert scores.tolist() == [0.25, 1.0, 0.0] and len(store.outcomes()) == 3


def test_nothing_to_add_writes_no_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.append(prompts(["a"]), outcomes(["a"], "m1"))
    res = store.append(prompts(["a"]), outcomes(["a"], "m1"))
    assert res.commit is None and len(store.commits()) == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        (outcomes(["a"], "m1", score=1.5), "outside [0, 1]"),
        (outcomes(["a"], "m1", cost=-0.1), "negative cost_usd"),
        (pd.concat([outcomes(["a"], "m1"), outcomes(["a"], "m1", 0.0)]), "repeat a key"),
        (outcomes(["zzz"], "m1"), "prompts not in the store"),
        (outcomes(["a"], "m1").drop(columns="model"), "missing column(s) model"),
    ],
)
def test_bad_appends_are_one_line_errors_and_change_nothing(tmp_path: Path, bad: pd.DataFrame, message: str) -> None:
    store = Store(tmp_path / "s")
    store.append(prompts(["a"]), outcomes(["a"], "m2"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")) as exc:
        store.append(outcomes=bad, source="bad.csv")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("bad.csv")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_prompt_that_changed_text_is_an_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.append(prompts(["a"]))
    changed = prompts(["a"]).assign(prompt="another question")
    with pytest.raises(UserError, match="different prompt .*a"):
        store.append(changed)
    store.append(changed, overwrite=True)
    assert store.prompts()["prompt"].tolist() == ["another question"]


def test_uncommitted_files_are_invisible(tmp_path: Path) -> None:
    """What a crash between writing data and writing the commit leaves behind is ignored."""
    store = Store(tmp_path / "s")
    store.append(prompts(["a"]), outcomes(["a"], "m1"))
    stray = tmp_path / "s" / "outcomes" / "model=m9" / "part-crashed.parquet"
    stray.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(next((tmp_path / "s" / "outcomes" / "model=m1").glob("*.parquet"))), stray)
    (tmp_path / "s" / COMMITS_DIR / "999.json.tmp-abc").write_text("{half a commit")
    assert store.models() == ["m1"] and len(Store(tmp_path / "s").outcomes()) == 1


def _append_model(root: str, model: str, n: int) -> None:
    store = Store(root)
    ids = [f"q{i:04d}" for i in range(n)]
    for chunk in range(0, n, 25):
        store.append(outcomes=outcomes(ids[chunk : chunk + 25], model))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "s")
    Store(root).append(prompts([f"q{i:04d}" for i in range(200)]))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_model, args=(root, f"model-{k}", 200)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    got = Store(root).outcomes(["sample_id", "model"])
    assert len(got) == 600 and not got.duplicated().any()
    assert got.groupby("model").size().tolist() == [200, 200, 200]


def test_compact_keeps_rows_and_latest_values(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.append(prompts(["a", "b"]))
    store.append(outcomes=outcomes(["a", "b"], "m1", 1.0))
    store.append(outcomes=outcomes(["a"], "m1", 0.5), overwrite=True)
    store.append(outcomes=outcomes(["a"], "m2"))
    before = store.outcomes().sort_values(["sample_id", "model"], ignore_index=True)
    assert store.compact() == 4
    after = Store(tmp_path / "s")
    assert len(after.commits()) == 1
    pd.testing.assert_frame_equal(after.outcomes().sort_values(["sample_id", "model"], ignore_index=True), before)
    files = list((tmp_path / "s").rglob("*.parquet"))
    assert len(files) == 3  # prompts + two model partitions, old files removed


def test_matrices_match_a_naive_pivot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(60)]
    store = Store(tmp_path / "s")
    tasks = pd.concat([prompts(ids[:30], "mmlu-astronomy"), prompts(ids[30:], "winogrande")])
    rows = [(i, m, float(rng.random()), float(rng.random())) for i in ids for m in ("b", "a", "c") if rng.random() > 0.1]
    out = pd.DataFrame(rows, columns=["sample_id", "model", "score", "cost_usd"])
    store.append(tasks, out)
    mats = store.matrices()
    assert sorted(mats) == ["mmlu", "winogrande"]
    m = mats["mmlu"]
    assert m.models == ("a", "b", "c") and list(m.sample_ids) == ids[:30]
    for i, sid in enumerate(m.sample_ids):
        for j, model in enumerate(m.models):
            hit = out[(out.sample_id == sid) & (out.model == model)]
            if len(hit):
                assert m.scores[i, j] == hit.score.item() and m.costs[i, j] == hit.cost_usd.item()
            else:
                assert np.isnan(m.scores[i, j]) and np.isnan(m.costs[i, j])
    complete = m.complete_rows()
    assert complete.sum() == sum(out[out.sample_id == s].shape[0] == 3 for s in ids[:30])


def test_failed_outcomes_are_stored_but_not_in_matrices(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    failed = outcomes(["b"], "m1").assign(score=np.nan, response=None, error="engine:timeout")
    store.append(prompts(["a", "b"]), pd.concat([outcomes(["a"], "m1"), failed]))
    assert store.outcomes().set_index("sample_id").loc["b", "error"] == "engine:timeout"
    m = store.matrices()["mmlu"]
    assert np.isnan(m.scores[1, 0]) and m.scores[0, 0] == 1.0


def test_store_by_file_uri(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}/uri-store")
    store.append(prompts(["a"]), outcomes(["a"], "m1"))
    assert Store(str(tmp_path / "uri-store")).outcomes()["sample_id"].tolist() == ["a"]


def test_default_store_location_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from harness.dataset import default_store_uri

    monkeypatch.setenv("ROUTERBENCH_STORE", str(tmp_path / "x"))
    assert default_store_uri() == str(tmp_path / "x")
    monkeypatch.delenv("ROUTERBENCH_STORE")
    assert default_store_uri() == os.path.expanduser("~/.routerbench/store")
