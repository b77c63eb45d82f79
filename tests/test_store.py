"""The outcome store on real Delta tables: appends, keys, atomicity, concurrency, matrices."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from harness.store import OUTCOMES, PROMPTS, Store
from harness.errors import UserError
from harness.outcome_import import load_sources
from harness.matrix import outcome_matrices


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
    assert dirs == ["_delta_log", "model=m1", "model=m2"]


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
    assert res.commit is None and len(store.history()) == 2  # prompts v0 and outcomes v0, nothing since


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
    """What a crash between writing data and committing leaves behind is ignored, by us and by other Delta readers."""
    store = Store(tmp_path / "s")
    store.append(prompts(["a"]), outcomes(["a"], "m1"))
    stray = tmp_path / "s" / "outcomes" / "model=m9" / "part-crashed.parquet"
    stray.parent.mkdir(parents=True)
    pq.write_table(pq.read_table(next((tmp_path / "s" / "outcomes" / "model=m1").glob("*.parquet"))), stray)
    (tmp_path / "s" / "outcomes" / "_delta_log" / "_commit_half.json.tmp").write_text("{half a commit")
    assert store.models() == ["m1"] and len(Store(tmp_path / "s").outcomes()) == 1
    assert len(DeltaTable(str(tmp_path / "s" / "outcomes")).to_pandas()) == 1


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
    store.append(prompts(["a", "b", "c"]))
    for sid in "abc":  # three small files
        store.append(outcomes=outcomes([sid], "m1", 1.0))
    store.append(outcomes=outcomes(["a"], "m1", 0.5), overwrite=True)  # rewrites a's file
    store.append(outcomes=outcomes(["a"], "m2"))
    before = store.outcomes().sort_values(["sample_id", "model"], ignore_index=True)
    kept = store.compact()  # the default retention keeps every file a reader of the last 7 days may use
    assert kept.files_merged == 3 and kept.files_vacuumed == 0
    assert len(list((tmp_path / "s").rglob("part-*.parquet"))) == 7
    versions = Store(tmp_path / "s").versions()
    assert store.compact(retain_hours=0).files_vacuumed == 4  # m1's three merged files and the one the overwrite replaced
    after = Store(tmp_path / "s")
    assert {"VACUUM START", "VACUUM END"} <= set(after.history()["operation"]) and after.versions()["outcomes"] > versions["outcomes"]
    pd.testing.assert_frame_equal(after.outcomes().sort_values(["sample_id", "model"], ignore_index=True), before)
    files = list((tmp_path / "s").rglob("part-*.parquet"))
    assert len(files) == 3  # prompts + two model partitions, old files removed


def test_matrices_match_a_naive_pivot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"s{i:03d}" for i in range(60)]
    store = Store(tmp_path / "s")
    tasks = pd.concat([prompts(ids[:30], "mmlu-astronomy"), prompts(ids[30:], "winogrande")])
    rows = [(i, m, float(rng.random()), float(rng.random())) for i in ids for m in ("b", "a", "c") if rng.random() > 0.1]
    out = pd.DataFrame(rows, columns=["sample_id", "model", "score", "cost_usd"])
    store.append(tasks, out)
    mats = outcome_matrices(store)
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
    m = outcome_matrices(store)["mmlu"]
    assert np.isnan(m.scores[1, 0]) and m.scores[0, 0] == 1.0


def test_store_by_file_uri(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}/uri-store")
    store.append(prompts(["a"]), outcomes(["a"], "m1"))
    assert Store(str(tmp_path / "uri-store")).outcomes()["sample_id"].tolist() == ["a"]


def test_default_store_location_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from harness.store import default_store_uri

    monkeypatch.setenv("ROUTERBENCH_STORE", str(tmp_path / "x"))
    assert default_store_uri() == str(tmp_path / "x")
    monkeypatch.delenv("ROUTERBENCH_STORE")
    assert default_store_uri() == os.path.expanduser("~/.routerbench/store")


# ---------------------------------------------------------------------- processes at once
# Each process imports the CLI (the slow part), says it is ready, then waits for the start file.
AT_ONCE = """
import os, sys, time
ready, go = sys.argv[1], sys.argv[2]
from harness.cli import main
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
sys.argv = ["routerbench", *sys.argv[3:]]
main()
"""


def run_at_once(tmp_path: Path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Start ``routerbench`` commands in separate processes, released together; wait for all."""
    tag = uuid.uuid4().hex[:8]
    go = tmp_path / f"go-{tag}"
    procs = []
    for i, cmd in enumerate(commands):
        ready = tmp_path / f"ready-{tag}-{i}"
        procs.append((ready, subprocess.Popen([sys.executable, "-c", AT_ONCE, str(ready), str(go), *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    # readiness is awaited as an event (each ready file); a child that exits first fails at once, and
    # the deadline is only a safety limit for a hung one, far past any import on a loaded machine
    deadline = time.monotonic() + 600
    while not all(r.exists() for r, _ in procs):
        assert all(p.poll() is None for _, p in procs), [p.communicate() for _, p in procs if p.poll() is not None]
        assert time.monotonic() < deadline, "a process hung before it was ready"
        time.sleep(0.01)
    go.touch()
    done = []
    for _, p in procs:
        out, err = p.communicate(timeout=600)  # a safety limit for a hung process, not a bound on the command
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def live_rows(store: Store, table: str = "outcomes") -> pd.DataFrame:
    """Every row of the table's latest version as another Delta reader sees it (not through our code)."""
    return DeltaTable(store.table_uri(OUTCOMES if table == "outcomes" else PROMPTS)).to_pandas()


def race_file(path: Path, ids: list[str], score: float, cost: float) -> Path:
    rows = [{"sample_id": i, "model": m, "score": score, "cost_usd": cost, "prompt": f"question {i}", "task": "mmlu-anatomy"} for i in ids for m in ("m1", "m2")]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_two_processes_appending_the_same_keys_keep_the_first_and_the_other_says_so(tmp_path: Path) -> None:
    ids = [f"r{i:03d}" for i in range(150)]
    files = {1.0: race_file(tmp_path / "ones.csv", ids, 1.0, 0.5), 0.0: race_file(tmp_path / "zeros.csv", ids, 0.0, 0.25)}
    raced_rounds = 0
    for rnd in range(5):
        store_dir = tmp_path / f"store{rnd}"
        done = run_at_once(tmp_path, *[["import", str(f), "--store", str(store_dir)] for f in files.values()])
        for d in done:
            assert d.returncode == 0 and d.stderr == "", d.stderr
        winners = [d for d in done if "imported 150 prompts and 300 outcomes" in d.stdout]
        losers = [d for d in done if "imported 0 prompts and 0 outcomes" in d.stdout]
        assert len(winners) == 1 and len(losers) == 1, [d.stdout for d in done]
        loser = losers[0].stdout
        assert "already there: 150 prompts, 300 outcomes" in loser
        assert "300 outcomes were written by another process meanwhile, with other values; kept theirs" in loser or "300 of the outcomes already there have other values" in loser, loser
        raced_rounds += "another process meanwhile" in loser

        # exactly one row per key in the live files, all from the winner, and every read agrees
        store = Store(store_dir)
        rows = live_rows(store)
        assert len(rows) == 300 and not rows.duplicated(["sample_id", "model"]).any()
        winner_score = 1.0 if str(files[1.0]) in winners[0].args else 0.0
        assert (rows["score"] == winner_score).all()
        reads = [Store(store_dir).outcomes(["sample_id", "model", "score", "cost_usd"]).sort_values(["sample_id", "model"], ignore_index=True) for _ in range(3)]
        for r in reads[1:]:
            pd.testing.assert_frame_equal(r, reads[0])
        assert len(live_rows(store, "prompts")) == 150

    # importing the winner's file again adds nothing and reports nothing different
    again = subprocess.run([sys.executable, "-m", "harness.cli", "import", str(files[winner_score]), "--store", str(store_dir)], capture_output=True, text=True)
    assert "imported 0 prompts and 0 outcomes" in again.stdout and "other values" not in again.stdout, again.stdout
    # Whether a round raced (both checked before either committed) is up to the scheduler; the
    # raced path itself is forced, deterministically, in the test below.
    print(f"{raced_rounds} of 5 rounds raced")


def test_a_writer_that_loses_the_race_keeps_the_first_writers_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving the two-process test can only hope for, forced: writer B commits the same
    keys after writer A has read the stored keys and before A commits; Delta fails A's commit and A
    starts over from B's version."""
    ids = [f"r{i:03d}" for i in range(10)]
    batches = {s: load_sources([str(race_file(tmp_path / f"{s}.csv", ids, s, 0.1))]) for s in (1.0, 0.0)}
    a, b = Store(tmp_path / "store"), Store(tmp_path / "store")
    seed = race_file(tmp_path / "seed.csv", ["seed"], 0.5, 0.1)  # the prompts and both models' partitions exist: the race is on the outcomes
    seeded = load_sources([str(seed)])
    a.append(seeded.prompts, seeded.outcomes)
    check = Store._drop_existing
    calls = []

    def b_commits_first(self: Store, spec, tbl, source, dt):  # noqa: ANN001
        checked = check(self, spec, tbl, source, dt)
        if self is a and spec is OUTCOMES and not calls:
            calls.append(b.append(outcomes=batches[0.0].outcomes, source="writer B"))
        return checked

    monkeypatch.setattr(Store, "_drop_existing", b_commits_first)
    result = a.append(batches[1.0].prompts, batches[1.0].outcomes, source="writer A")
    assert calls[0].outcomes_added == 20 and result.outcomes_added == 0
    assert result.outcomes_raced == 20 and result.outcomes_skipped == 20
    rows = live_rows(Store(tmp_path / "store")).query("sample_id != 'seed'")
    assert len(rows) == 20 and (rows["score"] == 0.0).all()  # B's, the first to commit


def test_concurrent_compacts_and_an_append_lose_nothing(tmp_path: Path) -> None:
    store_dir = tmp_path / "s"
    store = Store(store_dir)
    ids = [f"q{i:03d}" for i in range(40)]
    store.append(prompts(ids))
    extra = pd.DataFrame({"sample_id": ids, "model": "late", "score": 0.5, "cost_usd": 0.125})
    for rnd in range(4):
        for k in range(3):  # small files to compact, one partition overwritten
            for part in (ids[k:20:3], ids[20 + k :: 3]):
                store.append(outcomes=outcomes(part, f"m{rnd}-{k}", score=0.25 * k))
        store.append(outcomes=outcomes(ids[:5], "m0-0", score=0.75), overwrite=True)
        before = Store(store_dir).outcomes().sort_values(["sample_id", "model"], ignore_index=True)
        late = tmp_path / f"late{rnd}.csv"
        extra.assign(model=f"late-{rnd}").to_csv(late, index=False)
        done = run_at_once(tmp_path, ["data", "compact", "--store", str(store_dir)], ["data", "compact", "--store", str(store_dir)], ["import", str(late), "--store", str(store_dir)])
        for d in done:
            assert d.returncode == 0 and "Traceback" not in d.stderr, d.stderr
        said = [d.stdout.strip() for d in done[:2]]
        assert any(s.startswith("compacted ") for s in said), said
        for s in said:
            assert s.startswith(("compacted ", "nothing to compact")) or s.endswith("nothing to do"), s
        assert "imported 0 prompts and 40 outcomes" in done[2].stdout

        after = Store(store_dir)
        got = after.outcomes().sort_values(["sample_id", "model"], ignore_index=True)
        expected = pd.concat([before, got[got["model"] == f"late-{rnd}"]]).sort_values(["sample_id", "model"], ignore_index=True)
        pd.testing.assert_frame_equal(got, expected)
        assert len(got[got["model"] == f"late-{rnd}"]) == 40
        assert not live_rows(after).duplicated(["sample_id", "model"]).any()
        assert after.history()["source"].eq("data compact").sum() >= rnd + 1
