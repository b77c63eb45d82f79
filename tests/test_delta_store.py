"""The store as Delta tables: versions to cite, time travel, `--rerun`, other readers, migration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.store import EMBEDDINGS, OUTCOMES, PROMPTS, Store
from harness.embeddings import _embedding_rows
from harness.errors import UserError
from harness.outcome_import import load_sources
from harness.legacy_store import LegacyStore
from tests.conftest import SHARED_DATA, require_shared


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def cli_error(*args: str) -> str:
    """The one-line error a command fails with (``main`` prints it and exits 2; in process it is the UserError)."""
    res = CliRunner().invoke(app, list(args))
    assert isinstance(res.exception, UserError), res.output
    assert "\n" not in str(res.exception)
    return str(res.exception)


def extra_model(store: Store, model: str = "extra", score: float = 1.0) -> None:
    """Outcomes of one more model on every prompt: a new version of the outcomes table."""
    ids = store.prompts(["sample_id"])["sample_id"]
    store.append(outcomes=pd.DataFrame({"sample_id": ids, "model": model, "score": score, "cost_usd": 1e-6}), source=f"test: {model}")


def info_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_history_and_as_of_read_the_store_as_it_was(tmp_path: Path, routerbench_dir: Path) -> None:
    store = str(tmp_path / "s")
    cli("import", str(routerbench_dir / "mbpp_test.csv"), "--store", store)
    extra_model(Store(store))
    hist = cli("data", "history", "--store", store)
    assert re.search(r"outcomes\s+│\s+0\s+│.*WRITE\s+│\s+1408", hist) and re.search(r"outcomes\s+│\s+1\s+│.*MERGE\s+│\s+128\s+│.*test: extra", hist), hist
    assert info_line(hist).endswith("latest: outcomes v1, prompts v0"), hist

    assert info_line(cli("data", "info", "--store", store)).startswith("128 prompts, 1536 outcomes, 12 models")
    assert info_line(cli("data", "info", "--store", store, "--as-of", "0")).startswith("128 prompts, 1408 outcomes, 11 models (prompts v0, outcomes v0")
    v0_time = Store(store).history().query("table == 'outcomes' and version == 0")["time"].iloc[0]
    assert "1408 outcomes, 11 models" in info_line(cli("data", "info", "--store", store, "--as-of", v0_time.isoformat()))
    before_any = (v0_time - pd.Timedelta(days=1)).isoformat()
    assert "is empty" in cli_error("data", "info", "--store", store, "--as-of", before_any)

    cli("export", "--store", store, "--as-of", "0", "--out", str(tmp_path / "v0.csv"))
    cli("export", "--store", store, "--out", str(tmp_path / "latest.csv"))
    assert "extra" not in pd.read_csv(tmp_path / "v0.csv", nrows=1).columns and "extra" in pd.read_csv(tmp_path / "latest.csv", nrows=1).columns

    assert "the outcomes table has versions 0 to 1" in cli_error("data", "info", "--store", store, "--as-of", "7")
    assert "--as-of must be a version number or an ISO time" in cli_error("data", "info", "--store", store, "--as-of", "last tuesday")
    with pytest.raises(UserError, match="cannot be written to"):
        extra_model(Store(store, as_of=0), "another")


def test_rerun_reproduces_a_run_on_the_versions_it_read(tmp_path: Path, routerbench_dir: Path) -> None:
    store, first, again, fresh = (str(tmp_path / n) for n in ("s", "first", "again", "fresh"))
    common = ["--routers", "llm,oracle,random,cascade", "--bootstrap", "20", "--sequential"]
    cli("evaluate", "--store", store, "--data", str(routerbench_dir / "mbpp_test.csv"), "--out", first, "--label", "mbpp", "--seed", "3", *common)
    record = json.loads((Path(first) / "run.json").read_text())
    assert record["store_versions"] == {"prompts": 0, "families": None, "outcomes": 0, "embeddings": None}
    assert record["spec"]["seed"] == 3 and record["embedder"]["model"] == "all-MiniLM-L6-v2" and record["store"] == store

    extra_model(Store(store))  # a better and cheaper model arrives: a plain evaluate now differs
    cli("evaluate", "--store", store, "--out", fresh, "--seed", "3", *common)
    cli("evaluate", "--rerun", f"{first}/run.json", "--out", again, "--sequential")

    def points(d: str) -> pd.DataFrame:
        return pd.read_parquet(Path(d) / "points.parquet").sort_values(["router", "config"], ignore_index=True)

    pd.testing.assert_frame_equal(points(again), points(first))
    pd.testing.assert_frame_equal(pd.read_csv(Path(again) / "aiq.csv"), pd.read_csv(Path(first) / "aiq.csv"))
    assert not points(fresh).equals(points(first))
    rerun_record = json.loads((Path(again) / "run.json").read_text())
    assert rerun_record["store_versions"] == record["store_versions"] and rerun_record["dataset"] == "mbpp" and rerun_record["rerun_of"] == f"{first}/run.json"
    assert "drop --data and --as-of" in cli_error("evaluate", "--rerun", f"{first}/run.json", "--as-of", "0")


def test_other_delta_readers_see_what_data_info_counts(tmp_path: Path, routerbench_dir: Path, ray_local) -> None:
    """Polars, deltalake and Ray Data read the tables directly and get data info's numbers: no
    duplicates from re-imports (the case that doubled MBPP for outside readers before), overwrites
    or compaction."""
    pl = pytest.importorskip("polars")
    from deltalake import DeltaTable

    store = str(tmp_path / "s")
    mbpp = str(require_shared(SHARED_DATA / "mbpp" / "sanitized-mbpp.json"))
    for _ in range(2):
        cli("prompts", "import", "mbpp", mbpp, "--store", store)
        cli("import", str(routerbench_dir / "mbpp_test.csv"), "--store", store)
    cli("import", str(routerbench_dir / "mbpp_test.csv"), "--store", store, "--overwrite")
    cli("data", "compact", "--store", store, "--retain-hours", "0")
    info = info_line(cli("data", "info", "--store", store))
    n_prompts, n_outcomes = map(int, re.match(r"(\d+) prompts, (\d+) outcomes", info).groups())

    prompts = pl.read_delta(f"{store}/prompts")
    outcomes = pl.read_delta(f"{store}/outcomes").filter(pl.col("score").is_not_null())
    assert prompts.height == n_prompts and prompts["sample_id"].n_unique() == n_prompts
    assert outcomes.height == n_outcomes and outcomes.select(["sample_id", "model"]).n_unique() == n_outcomes
    assert len(DeltaTable(f"{store}/outcomes").to_pandas(columns=["sample_id", "model"]).drop_duplicates()) == len(DeltaTable(f"{store}/outcomes").to_pandas(columns=["sample_id"]))
    assert n_prompts >= 427 and n_outcomes == 1408
    assert ray_local.data.read_delta(f"{store}/outcomes", columns=["score"]).to_pandas()["score"].notna().sum() == n_outcomes


def test_a_store_of_the_old_layout_is_named_and_migrates_identically(tmp_path: Path, routerbench_dir: Path) -> None:
    from harness.evaluate import EvalSpec, evaluate

    old, new = tmp_path / "old", tmp_path / "new"
    legacy = LegacyStore(old)  # the layout the code before Delta wrote, written by that code
    batch = load_sources([str(routerbench_dir / "mbpp_test.csv")])
    legacy.append(batch.prompts, batch.outcomes, source="mbpp")
    first = batch.outcomes.iloc[:5].assign(score=0.0)
    legacy.append(outcomes=first, overwrite=True)  # a superseded value the old readers hide
    toy = np.arange(12, dtype=np.float32).reshape(3, 4)
    legacy.append_tables({EMBEDDINGS: _embedding_rows(np.array([f"{i:064x}" for i in range(3)]), "toy", toy)}, source="embeddings")
    with pytest.raises(UserError, match="layout before Delta Lake; convert it with `routerbench data migrate"):
        Store(old).outcomes()

    out = cli("data", "migrate", str(old), str(new))
    assert "prompts: 128 added" in out and "outcomes: 1408 added" in out and "embeddings: 3 added" in out, out
    assert "outcomes: 0 added, 1408 already there" in cli("data", "migrate", str(old), str(new))  # a rerun resumes: nothing twice

    migrated = Store(new)
    for spec in (PROMPTS, OUTCOMES, EMBEDDINGS):
        a = legacy.read_table(spec).to_pandas().sort_values(list(spec.key), ignore_index=True)
        b = migrated.read_table(spec).to_pandas().sort_values(list(spec.key), ignore_index=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    sa, sb = legacy.summary(), migrated.summary()
    pd.testing.assert_frame_equal(sa.counts, sb.counts)
    pd.testing.assert_series_equal(sa.per_family, sb.per_family)
    pd.testing.assert_series_equal(sa.cost_sources, sb.cost_sources)

    spec = EvalSpec(routers=("llm", "oracle", "random", "cascade"), bootstrap=10)
    got = [evaluate(s, spec, parallel=False).points.sort_values(["router", "config"], ignore_index=True) for s in (legacy, migrated)]
    pd.testing.assert_frame_equal(got[0], got[1])


def test_compact_keeps_old_versions_readable_for_the_retention_period(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    ids = [f"q{i}" for i in range(6)]
    store.append(pd.DataFrame({"sample_id": ids, "task": "winogrande", "task_family": "winogrande", "prompt": ids}))
    for i in ids:  # six small files in one partition
        store.append(outcomes=pd.DataFrame({"sample_id": [i], "model": ["m"], "score": [1.0], "cost_usd": [0.1]}))
    assert store.compact().files_merged == 6
    assert len(Store(tmp_path / "s", as_of=2).outcomes()) == 3  # every file of version 2 is still there (7 days)
    assert len(list((tmp_path / "s" / "outcomes").rglob("part-*.parquet"))) == 7
    assert store.compact(retain_hours=0).files_vacuumed == 6
    assert len(Store(tmp_path / "s").outcomes()) == 6
    with pytest.raises(UserError, match=r"cannot read version 2 of the outcomes table: its files were vacuumed") as exc:
        Store(tmp_path / "s", as_of=2).outcomes()
    assert "\n" not in str(exc.value)
    assert not store.compact()  # nothing left to merge or delete
