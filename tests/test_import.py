"""Importing RouterBench's real outcomes (CSV, pickle, URL, long layout) and exporting them back."""

from __future__ import annotations

import ast
import glob
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.store import Store
from harness.errors import UserError
from harness.outcome_import import CSV_OPTIONS, decode_list_cells, encode_list_cells, load_sources, to_wide
from harness.matrix import outcome_matrices

MODELS = 11
AMBIGUOUS = 14  # arc-challenge ids each used by two different questions


def read_shared(routerbench_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f, **CSV_OPTIONS) for f in sorted(glob.glob(f"{routerbench_dir}/*.csv"))], ignore_index=True)


def test_import_counts_on_shared_data(imported_store: Store) -> None:
    prompts = imported_store.prompts()
    assert len(prompts) == 3178 - 2 * AMBIGUOUS
    assert prompts["task_family"].value_counts().to_dict() == {"arc-challenge": 1484 - 2 * AMBIGUOUS, "winogrande": 1267, "mbpp": 427}
    assert len(imported_store.models()) == MODELS
    assert len(imported_store.outcomes(["sample_id"])) == (3178 - 2 * AMBIGUOUS) * MODELS


def test_ambiguous_ids_are_reported_and_rekey_keeps_them(routerbench_dir: Path, tmp_path: Path) -> None:
    skipped = load_sources([str(routerbench_dir)])
    assert len(skipped.ambiguous) == AMBIGUOUS and all(a.startswith("arc-challenge.") for a in skipped.ambiguous)
    assert skipped.missing_by_model == {}  # the NaN scores all sit in the ambiguous rows
    rekeyed = load_sources([str(routerbench_dir)], on_ambiguous="rekey")
    assert len(rekeyed.prompts) == 3178 and rekeyed.prompts["sample_id"].is_unique
    assert rekeyed.rekeyed == 2 * AMBIGUOUS
    # a NaN score is a missing outcome, not a wrong answer: 14 rows lack 10 models' scores, 14 lack one
    assert sum(rekeyed.missing_by_model.values()) == 14 * 10 + 14 * 1
    assert len(rekeyed.outcomes) == 3178 * MODELS - 154
    store = Store(tmp_path / "s")
    store.append(rekeyed.prompts, rekeyed.outcomes)
    assert outcome_matrices(store)["arc-challenge"].complete_rows().sum() == 1484 - 2 * AMBIGUOUS


def test_prompts_are_decoded_and_the_original_string_kept(imported_store: Store, routerbench_dir: Path) -> None:
    raw = read_shared(routerbench_dir).drop_duplicates("sample_id", keep=False).set_index("sample_id")
    p = imported_store.prompts().set_index("sample_id")
    sid = "mbpp.dev.1"
    assert p.loc[sid, "prompt_original"] == raw.loc[sid, "prompt"]
    assert p.loc[sid, "prompt"] == ast.literal_eval(raw.loc[sid, "prompt"])[0] == "Write a python function to identify non-prime numbers."
    assert (p["prompt_original"] == raw.loc[p.index, "prompt"]).all()
    out = imported_store.outcomes(["sample_id", "model", "response"], models=["claude-v2"]).set_index("sample_id")
    assert out.loc[sid, "response"] == ast.literal_eval(raw.loc[sid, "claude-v2|model_response"])[0]


def test_list_cells_round_trip() -> None:
    cells = np.array(["['a']", "['it\\'s', \"two\"]", "plain text", None, "[not a list"], dtype=object)
    decoded, turns = decode_list_cells(cells)
    assert decoded.tolist() == ["a", '["it\'s", "two"]', "plain text", None, "[not a list"]
    assert turns.tolist() == [1, 2, 1, 0, 1]
    assert encode_list_cells(decoded[:2], turns[:2]).tolist() == ["['a']", "[\"it's\", 'two']"]


def test_export_gives_back_the_same_scores_and_costs(imported_store: Store, routerbench_dir: Path, tmp_path: Path) -> None:
    from harness.outcome_import import EXPORTS

    out = tmp_path / "export.csv"
    EXPORTS.get("routerbench-csv")(imported_store, None, out)
    exported = pd.read_csv(out, **CSV_OPTIONS).set_index("sample_id")
    raw = read_shared(routerbench_dir).drop_duplicates("sample_id", keep=False).set_index("sample_id").loc[exported.index]
    models = [c for c in raw.columns if f"{c}|total_cost" in raw.columns]
    assert len(models) == MODELS
    for m in models:
        assert np.array_equal(exported[m].to_numpy(), raw[m].to_numpy()), m
        assert np.array_equal(exported[f"{m}|total_cost"].to_numpy(), raw[f"{m}|total_cost"].to_numpy()), m
        assert (exported[f"{m}|model_response"] == raw[f"{m}|model_response"]).all(), m
    assert (exported["prompt"] == raw["prompt"]).all() and (exported["eval_name"] == raw["eval_name"]).all()
    # re-importing the export gives the same store content
    again = Store(tmp_path / "again")
    batch = load_sources([str(out)])
    again.append(batch.prompts, batch.outcomes)
    a = again.outcomes(["sample_id", "model", "score", "cost_usd"]).sort_values(["sample_id", "model"], ignore_index=True)
    b = imported_store.outcomes(["sample_id", "model", "score", "cost_usd"]).sort_values(["sample_id", "model"], ignore_index=True)
    pd.testing.assert_frame_equal(a, b)


def test_oracle_column_of_export_agrees_with_routerbench(imported_store: Store, routerbench_dir: Path) -> None:
    wide = to_wide(imported_store).set_index("sample_id")
    raw = read_shared(routerbench_dir).drop_duplicates("sample_id", keep=False).set_index("sample_id").loc[wide.index]
    # RouterBench broke cost ties between claude-v1 and claude-v2 its own way; everything else agrees
    agree = (wide["oracle_model_to_route_to"] == raw["oracle_model_to_route_to"]).mean()
    assert agree > 0.99


def test_pickle_import(routerbench_dir: Path, tmp_path: Path) -> None:
    df = pd.read_csv(routerbench_dir / "mbpp_test.csv")
    df.to_pickle(tmp_path / "rb.pkl")
    batch = load_sources([str(tmp_path / "rb.pkl")])
    assert len(batch.prompts) == 128 and len(batch.outcomes) == 128 * MODELS


@pytest.fixture()
def http_dir(tmp_path: Path):
    """A real HTTP server on 127.0.0.1 serving a directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_import_by_url(http_dir, routerbench_dir: Path, tmp_path: Path) -> None:
    root, base = http_dir
    pd.read_csv(routerbench_dir / "winograde_test.csv").to_pickle(root / "routerbench_0shot.pkl")
    batch = load_sources([f"{base}/routerbench_0shot.pkl"])
    assert len(batch.prompts) == 380 and batch.prompts["meta"].str.contains("routerbench_0shot.pkl").all()
    (root / "routerbench_0shot.pkl").unlink()  # second time: from the download cache
    assert len(load_sources([f"{base}/routerbench_0shot.pkl"]).prompts) == 380
    with pytest.raises(UserError, match="HTTP 404"):
        load_sources([f"{base}/missing.pkl"])


def test_long_layout_import(tmp_path: Path) -> None:
    long = pd.DataFrame(
        {
            "sample_id": ["x1", "x1", "x2", "x2"],
            "model": ["m1", "m2", "m1", "m2"],
            "score": [1, 0, None, 0.5],
            "cost_usd": [0.1, 0.2, 0.1, 0.2],
            "prompt": ["What?", "What?", "Why?", "Why?"],
            "task": ["grade-school-math"] * 4,
            "input_tokens": [10, 12, 10, 12],
        }
    )
    long.to_parquet(tmp_path / "long.parquet")
    batch = load_sources([str(tmp_path / "long.parquet")])
    assert batch.missing_by_model == {"m1": 1}
    store = Store(tmp_path / "s")
    store.append(batch.prompts, batch.outcomes)
    assert store.prompts()["task_family"].unique().tolist() == ["grade-school-math"]
    got = store.outcomes().sort_values(["sample_id", "model"])
    assert got["score"].tolist() == [1.0, 0.0, 0.5] and got["input_tokens"].tolist() == [10, 12, 12]
    # outcomes without prompt columns attach to prompts already in the store
    more = pd.DataFrame({"sample_id": ["x1"], "model": ["m3"], "score": [1.0], "cost_usd": [0.3]})
    more.to_csv(tmp_path / "more.csv", index=False)
    b2 = load_sources([str(tmp_path / "more.csv")])
    store.append(b2.prompts, b2.outcomes)
    assert store.models() == ["m1", "m2", "m3"]


def write_variant(routerbench_dir: Path, tmp_path: Path, edit) -> Path:
    df = pd.read_csv(routerbench_dir / "mbpp_test.csv")
    df = edit(df)
    path = tmp_path / "mbpp_bad.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.drop(columns="eval_name"), "mbpp_bad.csv: missing column(s) eval_name"),
        (lambda d: d.assign(**{"claude-v2": d["claude-v2"].where(d.index != 3, 1.5)}), "mbpp_bad.csv: column 'claude-v2' has score 1.5 at sample_id mbpp.dev.1\\d*; it must be in \\[0, 1\\]"),
        (lambda d: d.assign(**{"claude-v2|total_cost": -d["claude-v2|total_cost"]}), "mbpp_bad.csv: column 'claude-v2|total_cost' has cost"),
        (lambda d: d.assign(**{"claude-v2": d["claude-v2"].astype(object).where(d.index != 0, "yes")}), "non-numeric value 'yes'"),
        (lambda d: pd.concat([d, d.iloc[[5]].assign(**{"claude-v2": 1 - d["claude-v2"].iloc[5]})]), "appear twice with the same prompt but different"),
        (lambda d: d.drop(columns=[c for c in d.columns if c.endswith("|total_cost")]), "mbpp_bad.csv: model column 'WizardLM/WizardLM-13B-V1.2' has no 'WizardLM/WizardLM-13B-V1.2|total_cost' column \\(and 10 more: claude-instant-v1, claude-v1, claude-v2, …\\); add the costs, or pass --missing-cost skip-model"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(imported_store: Store, routerbench_dir: Path, tmp_path: Path, edit, message: str) -> None:
    store_dir = tmp_path / "copy"
    shutil.copytree(imported_store.uri, store_dir)
    before = sorted(p for p in store_dir.rglob("*"))
    path = write_variant(routerbench_dir, tmp_path, edit)
    result = subprocess.run([sys.executable, "-m", "harness.cli", "import", str(path), "--store", str(store_dir)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    import re

    assert re.search(message.replace("(", r"\(").replace(")", r"\)"), err), err
    assert sorted(p for p in store_dir.rglob("*")) == before


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match=r"^broken.parquet: cannot read as .parquet"):
        load_sources([str(tmp_path / "broken.parquet")])
    with pytest.raises(UserError, match="no such file"):
        load_sources([str(tmp_path / "nope.csv")])


def _big_long_file(path: Path, models: int = 60, prompts: int = 3000) -> int:
    ids = np.array([f"p{i:05d}" for i in range(prompts)], dtype=object)
    df = pd.DataFrame(
        {
            "sample_id": np.tile(ids, models),
            "model": np.repeat([f"model-{k:02d}" for k in range(models)], prompts),
            "score": np.random.default_rng(0).random(models * prompts),
            "cost_usd": 0.001,
            "prompt": np.tile(ids, models),
            "task": "mmlu-anatomy",
            "response": "x" * 200,
        }
    )
    df.to_parquet(path)
    return len(df)


@pytest.mark.slow
def test_sigkill_mid_import_leaves_store_unchanged_and_rerun_completes(tmp_path: Path) -> None:
    n = _big_long_file(tmp_path / "big.parquet")
    store_dir = tmp_path / "store"
    Store(store_dir).append(
        pd.DataFrame({"sample_id": ["old"], "task": ["winogrande"], "task_family": ["winogrande"], "prompt": ["old prompt"]}),
        pd.DataFrame({"sample_id": ["old"], "model": ["model-00"], "score": [1.0], "cost_usd": [0.5]}),
    )
    cmd = [sys.executable, "-m", "harness.cli", "import", str(tmp_path / "big.parquet"), "--store", str(store_dir)]
    killed_mid_write = 0
    for attempt in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        # wait for the import's first data file, then kill it while it writes the others
        while time.time() < deadline and proc.poll() is None:
            parts = [p for p in (store_dir / "outcomes").rglob("part-*.parquet")]
            if len(parts) > 1 + attempt:
                break
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        store = Store(store_dir)
        # the prompts commit first (an outcome never lacks its prompt), then the outcomes in one commit
        assert len(store.prompts()) in (1, 3001)
        if store.versions()["outcomes"] == 0:  # killed before the outcomes' commit: they are exactly as before
            killed_mid_write += 1
            assert len(store.outcomes()) == 1 and "old" in store.prompts()["sample_id"].tolist()
        else:  # the kill came after the commit: all of it is there
            assert len(store.outcomes()) == n + 1
    assert killed_mid_write >= 1, "the kill never landed between the first data file and the commit"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    store = Store(store_dir)
    out = store.outcomes(["sample_id", "model"])
    assert len(out) == n + 1 and not out.duplicated().any()


def test_wide_costs_are_published_and_formats_are_found_by_registry(imported_store: Store, routerbench_dir: Path) -> None:
    """RouterBench's own costs are recorded as published; its files are claimed by routerbench-wide alone."""
    from harness.outcome_import import detect_format

    assert set(imported_store.outcomes(["cost_source"])["cost_source"]) == {"published"}
    assert {detect_format(p) for p in sorted(routerbench_dir.glob("*.csv"))} == {"routerbench-wide"}
