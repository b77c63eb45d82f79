"""End-to-end tests of CLI commands through ``harness.cli.app``, on a small store built from the shared
RouterBench sample. Each checks what a user would see: file contents, numbers, printed lines.

Covered: ``export`` (every format, read back), ``data info``, ``data compact``, ``regrade``,
``reprice``, ``extend --evaluate``, ``report --all-configs``, ``evaluate --cost-model price``,
``--models``, every ``--split``, every ``--embed-text``, and the MT-Bench judge end to end.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.store import EMBEDDINGS, Store
from harness.errors import UserError
from harness.outcome_import import load_sources
from tests.conftest import SHARED_DATA, require_shared
from tests.chat_server import ChatServer, user_text
from tests.echo import echo_config, write_echo_prompts

FAMILIES = {"mbpp": "mbpp_test.csv", "winogrande": "winograde_test.csv"}
PER_FAMILY = 30
CHEAP, DEAR, MID = "mistralai/mistral-7b-chat", "gpt-4-1106-preview", "gpt-3.5-turbo-1106"


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def cli_error(*args: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(res.exception, UserError), (res.output, res.exception)
    return str(res.exception)


def copy_store(src: Path, dst: Path) -> str:
    shutil.copytree(src, dst)
    return str(dst)


@pytest.fixture(scope="module")
def source(routerbench_dir: Path):
    """The first PER_FAMILY sample_ids (sorted) of mbpp and winogrande, every one of the 11 models."""
    batch = load_sources([str(routerbench_dir / f) for f in FAMILIES.values()])
    prompts = batch.prompts.sort_values("sample_id")
    keep = prompts.groupby("task_family").head(PER_FAMILY)["sample_id"]
    p = batch.prompts[batch.prompts["sample_id"].isin(keep)].reset_index(drop=True)
    o = batch.outcomes[batch.outcomes["sample_id"].isin(keep)].reset_index(drop=True)
    assert p.groupby("task_family").size().to_dict() == {f: PER_FAMILY for f in FAMILIES}
    assert o.groupby("model").size().eq(2 * PER_FAMILY).all() and o["model"].nunique() == 11
    return p, o


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory, source) -> Path:
    """Read-only for tests: :func:`copy_store` before writing."""
    p, o = source
    path = tmp_path_factory.mktemp("e2e") / "store"
    Store(path).append(p, o, source="e2e subset")
    return path


def split_ids(ids, seed: int = 42, frac: float = 0.7) -> tuple[list[str], list[str]]:
    """RouterBench's split, written out as its code does it: shuffle the sorted ids, first 70 % train."""
    ids = sorted(ids)
    np.random.RandomState(seed).shuffle(ids)
    cut = int(frac * len(ids))
    return sorted(ids[:cut]), sorted(ids[cut:])


# ----------------------------------------------------------------------------- data info / compact
def table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``first_cell``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip().strip("│┃"))]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_data_info_counts_prompts_and_graded_outcomes(base_store: Path, tmp_path: Path, source) -> None:
    p, o = source
    store = copy_store(base_store, tmp_path / "s")
    mbpp = sorted(p.loc[p["task_family"] == "mbpp", "sample_id"])
    partial = pd.DataFrame({"sample_id": mbpp[:7], "model": "extra", "score": [1.0] * 5 + [np.nan] * 2, "cost_usd": 1e-6, "error": [None] * 5 + ["engine:500"] * 2})
    Store(store).append(outcomes=partial, source="test: extra")
    out = cli("data", "info", "--store", store)
    header = table_row(out, "model")
    assert header[2:] == ["mbpp", "winogrande"], out
    assert table_row(out, "prompts")[2:] == [str(PER_FAMILY), str(PER_FAMILY)]
    for model in o["model"].unique():
        assert table_row(out, model)[1:] == ["published", str(PER_FAMILY), str(PER_FAMILY)], model
    assert table_row(out, "extra")[2:] == ["5", "0"]  # only graded outcomes count; none in winogrande
    assert out.strip().splitlines()[-1].startswith(f"{2 * PER_FAMILY} prompts, {len(o) + 5} outcomes, 12 models (prompts v0, outcomes v1")
    # --as-of the first version: before the extra model
    assert cli("data", "info", "--store", store, "--as-of", "0").strip().splitlines()[-1].startswith(f"{2 * PER_FAMILY} prompts, {len(o)} outcomes, 11 models")


def parquet_files(store: str, table: str) -> list[Path]:
    """The table's data files on disk (not the checkpoints in ``_delta_log``)."""
    return sorted(f for f in Path(store, table).rglob("*.parquet") if "_delta_log" not in f.parts)


def test_data_compact_merges_small_files_keeps_every_row_and_vacuums(base_store: Path, tmp_path: Path, source) -> None:
    p, _ = source
    store = copy_store(base_store, tmp_path / "s")
    ids = sorted(p["sample_id"])
    for k in range(4):  # four commits: four small files in the 'extra' partition
        chunk = ids[k * 5 : (k + 1) * 5]
        Store(store).append(outcomes=pd.DataFrame({"sample_id": chunk, "model": "extra", "score": 0.5, "cost_usd": 1e-6 * (k + 1)}), source=f"chunk {k}")
    before = Store(store).outcomes().sort_values(["sample_id", "model"], ignore_index=True)
    files_before = parquet_files(store, "outcomes")
    extra_before = [f for f in files_before if "extra" in str(f.parent)]
    assert len(extra_before) == 4
    out = cli("data", "compact", "--store", store, "--retain-hours", "0")
    m = re.search(r"compacted (\d+) files; vacuumed (\d+) files older than 0 hours", out)
    assert m, out
    assert int(m.group(1)) == 4 and int(m.group(2)) == 4, out  # the 4 files of 'extra', merged into one, then deleted
    files_after = parquet_files(store, "outcomes")
    assert len(files_after) == len(files_before) - 3
    assert len([f for f in files_after if "extra" in str(f.parent)]) == 1
    after = Store(store).outcomes().sort_values(["sample_id", "model"], ignore_index=True)
    pd.testing.assert_frame_equal(after, before)
    assert "nothing to compact" in cli("data", "compact", "--store", store, "--retain-hours", "0")
    history = Store(store).history()
    assert (history["source"] == "data compact").sum() >= 1


# ----------------------------------------------------------------------------- export
def store_long(store: str, families: list[str] | None = None) -> pd.DataFrame:
    st = Store(store)
    prompts = st.prompts(["sample_id", "task", "task_family", "prompt"])
    if families:
        prompts = prompts[prompts["task_family"].isin(families)]
    return st.outcomes().merge(prompts, on="sample_id").sort_values(["sample_id", "model"], ignore_index=True)


@pytest.mark.parametrize("fmt", ["long-csv", "long-parquet"])
def test_export_long_formats_read_back_equal_the_store(base_store: Path, tmp_path: Path, fmt: str) -> None:
    store = str(base_store)
    out = tmp_path / f"long.{fmt.split('-')[1]}"
    assert f"wrote {out}" in cli("export", "--store", store, "--format", fmt, "--out", out)
    back = pd.read_parquet(out) if fmt == "long-parquet" else pd.read_csv(out)
    expected = store_long(store)
    assert len(back) == len(expected) == 2 * PER_FAMILY * 11
    assert {"sample_id", "model", "score", "cost_usd", "response", "task_family", "task", "prompt"} <= set(back.columns)
    back = back.sort_values(["sample_id", "model"], ignore_index=True)
    for col in ("sample_id", "model", "task_family", "task"):
        assert back[col].astype(str).tolist() == expected[col].astype(str).tolist(), col
    np.testing.assert_allclose(back["score"].to_numpy(float), expected["score"].to_numpy(float))
    np.testing.assert_allclose(back["cost_usd"].to_numpy(float), expected["cost_usd"].to_numpy(float), rtol=1e-12)
    assert back["response"].fillna("").tolist() == expected["response"].fillna("").tolist()
    assert back["prompt"].tolist() == expected["prompt"].tolist()

    only = tmp_path / f"mbpp.{fmt.split('-')[1]}"
    cli("export", "--store", store, "--format", fmt, "--out", only, "--tasks", "mbpp")
    mbpp = pd.read_parquet(only) if fmt == "long-parquet" else pd.read_csv(only)
    assert len(mbpp) == PER_FAMILY * 11 and set(mbpp["task_family"]) == {"mbpp"}


@pytest.mark.parametrize("fmt", ["routerbench-csv", "routerbench-pkl"])
def test_export_wide_formats_equal_routerbench_source_rows_and_reimport(base_store: Path, tmp_path: Path, routerbench_dir: Path, source, fmt: str) -> None:
    p, o = source
    out = tmp_path / ("wide.csv" if fmt == "routerbench-csv" else "wide.pkl")
    cli("export", "--store", base_store, "--format", fmt, "--out", out)
    wide = pd.read_csv(out) if fmt == "routerbench-csv" else pd.read_pickle(out)
    models = sorted(o["model"].unique())
    assert wide["sample_id"].tolist() == sorted(p["sample_id"])
    assert set(wide.columns) == {"sample_id", "prompt", "eval_name", "oracle_model_to_route_to", *models, *(f"{m}|model_response" for m in models), *(f"{m}|total_cost" for m in models)}
    # every cell as in RouterBench's own files
    orig = pd.concat([pd.read_csv(routerbench_dir / f) for f in FAMILIES.values()]).drop_duplicates("sample_id").set_index("sample_id").loc[wide["sample_id"]]
    w = wide.set_index("sample_id")
    assert w["prompt"].tolist() == orig["prompt"].tolist() and w["eval_name"].tolist() == orig["eval_name"].tolist()
    for m in models:
        np.testing.assert_allclose(w[m].to_numpy(float), orig[m].to_numpy(float), err_msg=m)
        np.testing.assert_allclose(w[f"{m}|total_cost"].to_numpy(float), orig[f"{m}|total_cost"].to_numpy(float), rtol=1e-12, err_msg=m)
        assert w[f"{m}|model_response"].tolist() == orig[f"{m}|model_response"].tolist(), m
    # the oracle column: the cheapest model of those with the best score
    scores, costs = w[models].to_numpy(float), w[[f"{m}|total_cost" for m in models]].to_numpy(float)
    for sid, s, c, chosen in zip(w.index, scores, costs, w["oracle_model_to_route_to"]):
        if s.max() > 0:
            best = np.flatnonzero(s == s.max())
            assert chosen == models[best[np.argmin(c[best])]], sid
    # and it imports back into the same outcomes
    if fmt == "routerbench-csv":
        again = str(tmp_path / "again")
        cli("import", out, "--store", again)
        key = ["sample_id", "model"]
        a = Store(again).outcomes(["sample_id", "model", "score", "cost_usd", "response"]).sort_values(key, ignore_index=True)
        b = Store(str(base_store)).outcomes(["sample_id", "model", "score", "cost_usd", "response"]).sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(a, b)


# ----------------------------------------------------------------------------- evaluate options
def evaluate(store: str | Path, out: Path, *args: str) -> str:
    return cli("evaluate", "--store", store, "--out", out, "--bootstrap", "0", "--sequential", *args)


def points(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "points.parquet")


def family_matrix(o: pd.DataFrame, p: pd.DataFrame, family: str, what: str = "score") -> pd.DataFrame:
    ids = p.loc[p["task_family"] == family, "sample_id"]
    return o[o["sample_id"].isin(ids)].pivot(index="sample_id", columns="model", values=what).sort_index()


def test_models_restricts_the_pool(base_store: Path, tmp_path: Path, source) -> None:
    p, o = source
    pool = [CHEAP, MID, "WizardLM/WizardLM-13B-V1.2"]
    out = tmp_path / "r"
    printed = evaluate(base_store, out, "--routers", "llm,oracle,random", "--tasks", "mbpp", "--models", ",".join(pool))
    pts = points(out)
    assert set(pts["task_family"]) == {"mbpp"}
    llm = pts[pts["router"] == "llm"].set_index("config")
    assert sorted(llm.index) == sorted(pool)
    aiq = pd.read_csv(out / "aiq.csv")
    assert sorted(aiq.loc[aiq["router"] == "llm", "config"]) == sorted(pool)
    scores, costs = family_matrix(o, p, "mbpp"), family_matrix(o, p, "mbpp", "cost_usd")
    _, test = split_ids(scores.index)
    for m in pool:
        assert llm.loc[m, "quality"] == pytest.approx(scores.loc[test, m].mean())
        assert llm.loc[m, "cost"] == pytest.approx(costs.loc[test, m].mean())
    # the oracle knows only the pool: the best of the three on each test prompt
    oracle = pts[pts["router"] == "oracle"].iloc[0]
    assert oracle["quality"] == pytest.approx(scores.loc[test, pool].max(axis=1).mean())
    assert oracle["quality"] < scores.loc[test].max(axis=1).mean()  # the whole field would do better here
    assert "claude-v2" not in printed and CHEAP in printed
    assert json.loads((out / "run.json").read_text())["spec"]["models"] == pool


def price_dir(tmp: Path, prices: dict[str, float]) -> Path:
    d = tmp / "configs"
    d.mkdir()
    for i, (name, per_mtok) in enumerate(prices.items()):
        doc = {"name": name, "provider": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1", "price": {"input_per_mtok": per_mtok, "output_per_mtok": per_mtok}}
        (d / f"m{i}.yaml").write_text(yaml.safe_dump(doc))
    return d


def test_cost_model_price_orders_by_the_configs_prices(base_store: Path, tmp_path: Path, source) -> None:
    """The cascade calls models cheapest first by its cost term. With a $0.001 budget only the first
    is ever paid for on mbpp (gpt-4's answers cost more than that), so that point *is* the first model:
    mistral by expected cost, gpt-4 when the configs price gpt-4 below mistral."""
    p, o = source
    costs = family_matrix(o, p, "mbpp", "cost_usd")
    assert costs[DEAR].min() > 0.001 > costs[CHEAP].max()
    pool = f"{CHEAP},{DEAR}"
    args = ("--routers", "llm,cascade", "--tasks", "mbpp", "--models", pool)

    def cascade_at_smallest_budget(out: Path) -> tuple[pd.Series, pd.DataFrame]:
        pts = points(out).set_index(["router", "config"])
        return pts.loc[("cascade", "error_rate=0,budget=0.001")], pts.loc["llm"]

    evaluate(base_store, tmp_path / "expected", *args)
    expected, llm = cascade_at_smallest_budget(tmp_path / "expected")
    assert (expected["quality"], expected["cost"]) == pytest.approx((llm.loc[CHEAP, "quality"], llm.loc[CHEAP, "cost"]))

    inverted = price_dir(tmp_path, {CHEAP: 100.0, DEAR: 0.01})
    evaluate(base_store, tmp_path / "price", *args, "--cost-model", "price", "--models-dir", inverted)
    priced, llm_priced = cascade_at_smallest_budget(tmp_path / "price")
    assert (priced["quality"], priced["cost"]) == pytest.approx((llm.loc[DEAR, "quality"], llm.loc[DEAR, "cost"]))
    pd.testing.assert_frame_equal(llm_priced, llm)  # list prices steer routing; what a call cost stays as stored
    assert json.loads((tmp_path / "price" / "run.json").read_text())["spec"]["cost_model"] == "price"

    # the real prices (model_configs/) agree with the expected costs on which model is cheaper
    real = Path(__file__).resolve().parents[1] / "model_configs"
    evaluate(base_store, tmp_path / "real", *args, "--cost-model", "price", "--models-dir", real)
    assert tuple(cascade_at_smallest_budget(tmp_path / "real")[0][["quality", "cost"]]) == pytest.approx(tuple(expected[["quality", "cost"]]))

    (tmp_path / "m").mkdir()
    missing = price_dir(tmp_path / "m", {CHEAP: 1.0})
    msg = cli_error("evaluate", "--store", base_store, "--out", tmp_path / "x", "--bootstrap", "0", "--sequential", *args, "--cost-model", "price", "--models-dir", missing)
    assert f"--cost-model price needs a model config with prices for {DEAR}" in msg


# ----------------------------------------------------------------------------- report --all-configs
def table_rows(output: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip().strip("│┃"))]
        if cells and cells[0] == first_cell:
            rows.append(cells)
    return rows


def test_report_all_configs_lists_every_setting(base_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    evaluate(base_store, out, "--routers", "llm,oracle,cascade", "--tasks", "mbpp")
    aiq = pd.read_csv(out / "aiq.csv", keep_default_na=False)
    cascade = aiq[aiq["router"] == "cascade"]
    assert len(cascade) == 8  # one curve per judge error rate
    (out / "mbpp.png").unlink()
    best = cli("report", "--out", out)
    assert (out / "mbpp.png").stat().st_size > 0 and "redrew 1 plots" in best
    rows = table_rows(best, "cascade")
    assert len(rows) == 1
    top = cascade.sort_values("aiq", ascending=False).iloc[0]
    assert rows[0][1] == top["config"] and rows[0][2] == f"{top['aiq']:.4f}"
    assert len(table_rows(best, "llm")) == 11
    every = cli("report", "--out", out, "--all-configs")
    rows = table_rows(every, "cascade")
    assert sorted(r[1] for r in rows) == sorted(cascade["config"])
    assert {r[1]: r[2] for r in rows} == {c: f"{a:.4f}" for c, a in zip(cascade["config"], cascade["aiq"])}
    assert len(table_rows(every, "llm")) == 11 and len(table_rows(every, "oracle")) == 1


# ----------------------------------------------------------------------------- --split
PROBE = textwrap.dedent(
    """
    import json, os

    class Probe:
        '''Routes everything to one model and writes down what it was trained and tested on.'''

        def fit(self, train):
            self._log({"fit": str(train.family), "ids": [str(s) for s in train.sample_ids]})

        def route_batch(self, prompts):
            self._log({"route": list(prompts)})
            return ["mistralai/mistral-7b-chat"] * len(prompts)

        def _log(self, event):
            with open(os.environ["E2E_PROBE_LOG"], "a") as f:
                f.write(json.dumps(event) + "\\n")
    """
)


@pytest.fixture()
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "e2e_split_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("E2E_PROBE_LOG", str(log))
    return log


def folds_seen(log: Path, p: pd.DataFrame) -> dict[str, list[tuple[list[str], list[str]]]]:
    """Per family (of the test prompts), the (train ids, test ids) of each fold the probe saw."""
    id_of = {(r.task_family, r.prompt): r.sample_id for r in p.itertuples()}
    events = [json.loads(line) for line in log.read_text().splitlines()]
    folds: dict[str, list] = {}
    for fit, route in zip(events[::2], events[1::2]):
        assert "fit" in fit and "route" in route, (fit, route)
        family = fit["fit"]
        test = [id_of[(family, text)] for text in route["route"]]
        folds.setdefault(family, []).append((sorted(fit["ids"]), sorted(test)))
    return folds


@pytest.mark.parametrize("split", ["routerbench", "kfold:3", "leave-task-out", "file"])
def test_every_split_gives_disjoint_train_and_test_as_specified(base_store: Path, tmp_path: Path, source, probe: Path, split: str) -> None:
    p, _ = source
    assert not p.duplicated(["task_family", "prompt"]).any()  # the probe maps prompt texts back to ids
    ids = {f: sorted(p.loc[p["task_family"] == f, "sample_id"]) for f in FAMILIES}
    if split == "file":
        spec = {f: {"test": v[:8], "train": v[10:25]} for f, v in ids.items()}  # 7 prompts in neither
        (tmp_path / "split.json").write_text(json.dumps(spec))
        split = f"file:{tmp_path / 'split.json'}"
    printed = evaluate(base_store, tmp_path / "r", "--routers", "llm,e2e_split_probe:Probe", "--split", split)
    folds = folds_seen(probe, p)
    assert sorted(folds) == sorted(FAMILIES)
    for family, fam_ids in ids.items():
        got = folds[family]
        for train, test in got:
            assert not set(train) & set(test), family
        if split == "routerbench":
            assert got == [split_ids(fam_ids)]
        elif split == "kfold:3":
            shuffled = list(fam_ids)
            np.random.RandomState(42).shuffle(shuffled)
            parts = [sorted(part) for part in np.array_split(np.array(shuffled, dtype=object), 3)]
            assert [t for _, t in got] == parts  # each prompt tested once
            assert all(train == sorted(set(fam_ids) - set(test)) for train, test in got)
        elif split == "leave-task-out":
            other = next(f for f in FAMILIES if f != family)
            assert got == [(ids[other], fam_ids)]
        else:
            assert got == [(spec[family]["train"], spec[family]["test"])]
    # the points are test means over exactly those prompts, and the summary line counts them
    pts = points(tmp_path / "r").set_index(["task_family", "router", "config"])
    _, o = source
    for family in FAMILIES:
        scores = family_matrix(o, p, family)
        tested = sorted(s for _, t in folds[family] for s in t)
        trained = sum(len(tr) for tr, _ in folds[family])
        assert pts.loc[(family, "llm", DEAR), "quality"] == pytest.approx(scores.loc[tested, DEAR].mean())
        assert pts.loc[(family, "e2e_split_probe:Probe", ""), "quality"] == pytest.approx(scores.loc[tested, CHEAP].mean())
        assert f"{len(tested)} test prompts, {trained} training prompts" in printed


def test_file_split_naming_an_unknown_sample_id_is_a_one_line_error(base_store: Path, tmp_path: Path) -> None:
    (tmp_path / "split.json").write_text(json.dumps({"mbpp": {"train": ["mbpp.nope"], "test": []}}))
    msg = cli_error("evaluate", "--store", base_store, "--out", tmp_path / "r", "--routers", "llm", "--tasks", "mbpp", "--split", f"file:{tmp_path / 'split.json'}", "--sequential", "--bootstrap", "0")
    assert "1 train sample_id(s) of 'mbpp' are not in the store (mbpp.nope)" in msg


# ----------------------------------------------------------------------------- --embed-text
@pytest.mark.slow  # loads torch and the embedder: ~10 s on an idle 2-core machine, 40-60 s on a loaded one
def test_every_embed_text_embeds_its_own_text(base_store: Path, tmp_path: Path, source) -> None:
    """Each value embeds other strings (or cuts them on another side): the store's embedding cache
    holds exactly the hashes of those strings under the embedder's key, and KNN routes differently."""
    from harness.embeddings import DEFAULT_EMBEDDER, distinct_texts, text_hashes

    p, _ = source
    by_family = {f: p[p["task_family"] == f].sort_values("sample_id") for f in FAMILIES}
    original = {f: d["prompt_original"].to_numpy(object) for f, d in by_family.items()}
    plain = {f: d["prompt"].to_numpy(object) for f, d in by_family.items()}
    distinct = {f: distinct_texts(v) for f, v in original.items()}
    assert all(len(d) < len(o) for d, o in zip(distinct["winogrande"], original["winogrande"]))  # shared 5-shot exemplars cut off
    # winogrande for the two modes that differ most there, mbpp (short prompts, cheap) for the others
    expected = {
        "distinct": ("winogrande", DEFAULT_EMBEDDER, set(text_hashes(distinct["winogrande"]))),
        "original": ("winogrande", DEFAULT_EMBEDDER, set(text_hashes(original["winogrande"]))),
        "plain": ("mbpp", DEFAULT_EMBEDDER, set(text_hashes(plain["mbpp"]))),
        "tail": ("mbpp", f"{DEFAULT_EMBEDDER}@cut-left", set(text_hashes(original["mbpp"]))),
    }
    assert set(text_hashes(plain["mbpp"])).isdisjoint(text_hashes(original["mbpp"]))  # "['…']" as imported vs decoded
    knn = {}
    for mode, (family, key, want) in expected.items():
        store = copy_store(base_store, tmp_path / mode)
        out = tmp_path / f"r-{mode}"
        evaluate(store, out, "--routers", "llm,knn", "--tasks", family, "--embed-text", mode)
        cached = Store(store).read_table(EMBEDDINGS, ["text_sha256", "embedder"]).to_pandas()
        assert set(cached["embedder"]) == {key}, mode
        assert set(cached["text_sha256"]) == want and len(cached) == len(want), mode
        assert json.loads((out / "run.json").read_text())["spec"]["embed_text"] == mode
        pts = points(out)
        knn[mode] = pts[pts["router"] == "knn"].sort_values(["config", "lam"], ignore_index=True)[["quality", "cost"]]
    # RouterBench's 5-shot winogrande prompts embed to one vector as imported: KNN then cannot tell
    # prompts apart, and routes otherwise than on the questions
    assert not knn["distinct"].equals(knn["original"])


# ----------------------------------------------------------------------------- regrade / reprice
N_ECHO = 12


def echo_prompts(tmp: Path, store: str) -> pd.DataFrame:
    """The echo prompt set (:mod:`tests.echo`), imported into ``store``."""
    rows = write_echo_prompts(tmp / "echo.jsonl", N_ECHO)
    assert f"{N_ECHO}" in cli("prompts", "import", "generic", tmp / "echo.jsonl", "--store", store)
    return rows


def outcome_rows(rows: pd.DataFrame, model: str, **cols) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": rows["sample_id"], "model": model, "response": rows["prompt"], "cost_usd": 1e-6, **cols})


def test_regrade_grades_stale_and_failed_outcomes_from_their_responses(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    rows = echo_prompts(tmp_path, store)
    right = (rows["prompt"] == rows["gold"]).astype(float).to_numpy()
    stale = outcome_rows(rows, "m1", score=0.5, grader="exact-match@0")  # an old grader version, wrong scores
    stale.loc[1, ["score", "grader", "error"]] = [np.nan, "exact-match@1", "grader:boom"]  # grading failed: redone
    stale.loc[2, ["response", "score", "grader", "error"]] = [None, np.nan, None, "engine:500"]  # never answered: left for extend
    current = outcome_rows(rows, "m2", score=1.0 - right, grader="exact-match@1")  # current version: kept, even if "wrong"
    imported = outcome_rows(rows, "imported", score=0.5)  # published scores, no grader of ours: never regraded
    Store(store).append(outcomes=pd.concat([stale, current, imported]), source="test")

    assert cli("regrade", "--store", store, "--models", "m2,imported").strip().endswith("regraded nothing: every grade is current")
    assert cli("regrade", "--store", store).strip().endswith(f"regraded m1: {N_ECHO - 1}")
    out = Store(store).outcomes().set_index(["model", "sample_id"]).sort_index()
    m1 = out.loc["m1"].loc[rows["sample_id"]]
    graded = np.arange(N_ECHO) != 2
    np.testing.assert_array_equal(m1["score"].to_numpy()[graded], right[graded])
    assert set(m1["grader"][graded]) == {"exact-match@1"} and m1["error"][graded].isna().all()
    assert m1.iloc[2]["error"] == "engine:500" and np.isnan(m1.iloc[2]["score"])
    np.testing.assert_array_equal(out.loc["m2"].loc[rows["sample_id"], "score"].to_numpy(), 1.0 - right)
    assert (out.loc["imported", "score"] == 0.5).all() and out.loc["imported", "grader"].isna().all()
    assert cli("regrade", "--store", store).strip().endswith("regraded nothing: every grade is current")


def test_reprice_recosts_from_token_counts_with_the_configs_prices(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    rows = echo_prompts(tmp_path, store)
    tokens_in, tokens_out = np.arange(N_ECHO) * 10 + 5, np.arange(N_ECHO) + 1
    old = (tokens_in * 1.0 + tokens_out * 2.0) / 1e6
    priced = outcome_rows(rows, "priced", score=1.0, grader="exact-match@1", input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=old, cost_source="tokens×price")
    local = priced.assign(model="local-model", cost_usd=0.5, cost_source="device-time")
    imported = outcome_rows(rows, "imported", score=1.0, cost_usd=0.25)
    Store(store).append(outcomes=pd.concat([priced, local, imported]), source="test")
    d = tmp_path / "configs"
    d.mkdir()
    api = {"provider": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    (d / "priced.yaml").write_text(yaml.safe_dump({"name": "priced", **api, "price": {"input_per_mtok": 3.0, "output_per_mtok": 5.0, "per_request": 0.001}}))
    (d / "imported.yaml").write_text(yaml.safe_dump({"name": "imported", **api, "price": {"input_per_mtok": 9.0, "output_per_mtok": 9.0}}))
    (d / "local.yaml").write_text(yaml.safe_dump({"name": "local-model", "provider": "llama_cpp", "model": "x", "price": {"gpu_hour": 1.0}}))

    printed = cli("reprice", "--models-dir", d, "--store", store)
    assert f"repriced priced: {N_ECHO}" in printed
    assert "skipped local-model: self-hosted: costed by device time, not tokens" in printed
    out = Store(store).outcomes().set_index(["model", "sample_id"]).sort_index()
    np.testing.assert_allclose(out.loc["priced"].loc[rows["sample_id"], "cost_usd"].to_numpy(), (tokens_in * 3.0 + tokens_out * 5.0) / 1e6 + 0.001, rtol=1e-12)
    assert (out.loc["priced", "score"] == 1.0).all()  # only the cost changes
    assert (out.loc["local-model", "cost_usd"] == 0.5).all() and (out.loc["imported", "cost_usd"] == 0.25).all()
    assert "repriced nothing: every cost is current" in cli("reprice", "--models-dir", d, "--store", store)


# ----------------------------------------------------------------------------- extend: judge, --evaluate
class JudgeServer(ChatServer):
    """An OpenAI-compatible judge on 127.0.0.1 that rates every first turn [[8]] and every second
    turn (MT-Bench's multi-turn judge prompt) [[6]]; a judge prompt containing ``refuse`` gets no rating."""

    def __init__(self) -> None:
        self.refuse: str | None = None
        self.prompts: list[str] = []
        super().__init__(self.rate)

    def rate(self, body: dict) -> str:
        text = user_text(body)
        self.prompts.append(text)
        if self.refuse and self.refuse in text:
            return "I would rather not rate this answer."
        return "Explanation: fine. Rating: [[6]]" if "### User:" in text else "Explanation: good. Rating: [[8]]"


def model_file(tmp: Path, name: str, url: str, max_tokens: int = 4) -> Path:
    limits = {"timeout_s": 5.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 2, "max_concurrency": 4}
    return echo_config(tmp, url, name, limits=limits, sampling={"max_tokens": max_tokens})


def test_judge_scores_mtbench_answers_end_to_end_and_regrade_keeps_them(tmp_path: Path, ray_local) -> None:
    from harness.generation.testing.fault_server import FaultPlan, FaultServer
    from harness.grading.judge import REFERENCE_CATEGORIES

    require_shared(SHARED_DATA / "mtbench")
    store = str(tmp_path / "s")
    cli("prompts", "import", "mtbench", SHARED_DATA / "mtbench", "--store", store)
    prompts = Store(store).prompts().sort_values("sample_id", ignore_index=True)
    first3 = prompts.head(3)
    category = first3["meta"].map(lambda m: json.loads(m)["category"])
    assert set(category) & set(REFERENCE_CATEGORIES) and not set(category) <= set(REFERENCE_CATEGORIES)  # both judge prompt kinds
    refused = first3[~category.isin(REFERENCE_CATEGORIES)].iloc[0]  # (a reference question alone: see the xfail below)
    with FaultServer(FaultPlan(completion_tokens=4)) as model_server, JudgeServer() as judge:
        model = model_file(tmp_path, "echo-model", model_server.url)
        judge_cfg = model_file(tmp_path, "e2e-judge", judge.url, max_tokens=64)
        judge.refuse = json.loads(refused["prompt"])[0]  # its first question: in both of its judge prompts
        printed = cli("extend", "--model", model, "--judge", judge_cfg, "--tasks", "mtbench", "--limit", "3", "--store", store)
        assert "echo-model: 3 prompts to do (0 already done), 3 outcomes appended, 2 graded" in printed, printed
        out = Store(store).outcomes(models=["echo-model"]).set_index("sample_id").sort_index()
        assert list(out.index) == sorted(first3["sample_id"])
        ok = out.drop(refused["sample_id"])
        assert ok["score"].tolist() == pytest.approx([(8 + 6) / 2 / 10] * 2)  # the mean over both turns, rating / 10
        assert ok["grader"].str.startswith("mtbench-judge@1+e2e-judge+prompts-").all() and ok["error"].isna().all()
        bad = out.loc[refused["sample_id"]]
        assert np.isnan(bad["score"]) and bad["error"] == "grader:judge gave no rating in [[1-10]] form"
        assert len(judge.prompts) == 6  # two turns per answer, each judged once
        for sid, row in out.iterrows():  # the judge read the model's answers
            answers = json.loads(row["response"])
            assert len(answers) == 2 and any(answers[0] in p for p in judge.prompts), sid

        judge.refuse = None
        assert cli("regrade", "--judge", judge_cfg, "--store", store).strip().endswith("regraded echo-model: 1")
        again = Store(store).outcomes(models=["echo-model"]).set_index("sample_id").sort_index()
        assert again["score"].tolist() == pytest.approx([0.7] * 3) and again["error"].isna().all()
        pd.testing.assert_frame_equal(again.drop(refused["sample_id"]), ok)  # the good grades untouched, not rewritten
        assert len(judge.prompts) == 8  # only the failed answer was judged again
        assert cli("regrade", "--judge", judge_cfg, "--store", store).strip().endswith("regraded nothing: every grade is current")
        assert len(judge.prompts) == 8


@pytest.mark.slow  # the default evaluation (13 routers, 200 bootstrap resamples) on Ray: ~16 s idle
def test_extend_evaluate_puts_the_new_model_in_the_pool(tmp_path: Path, ray_local) -> None:
    from harness.generation.testing.fault_server import FaultPlan, FaultServer

    store, out = str(tmp_path / "s"), tmp_path / "results"
    rows = echo_prompts(tmp_path, store)
    right = pd.Series((rows["prompt"] == rows["gold"]).astype(float).to_numpy(), index=rows["sample_id"])
    Store(store).append(outcomes=outcome_rows(rows, "always-yes", response="yes", score=(rows["gold"] == "yes").astype(float), cost_usd=1e-4), source="test")
    with FaultServer(FaultPlan(completion_tokens=1)) as server:
        printed = cli("extend", "--model", model_file(tmp_path, "echo-model", server.url, max_tokens=1), "--store", store, "--evaluate", "--out", out)
    assert f"echo-model: {N_ECHO} prompts to do (0 already done), {N_ECHO} outcomes appended, {N_ECHO} graded" in printed
    assert f"wrote {out}/points.parquet" in printed
    pts = points(out)
    llm = pts[pts["router"] == "llm"].set_index("config")
    assert sorted(llm.index) == ["always-yes", "echo-model"]
    _, test = split_ids(rows["sample_id"])
    assert llm.loc["echo-model", "quality"] == pytest.approx(right[test].mean())
    stored = Store(store).outcomes(models=["echo-model"]).set_index("sample_id")
    assert llm.loc["echo-model", "cost"] == pytest.approx(stored.loc[test, "cost_usd"].mean())
    assert {"oracle", "knn", "cascade"} <= set(pts["router"]) and json.loads((out / "run.json").read_text())["spec"]["families"] is None


def failed_judge_store(tmp: Path, name: str, sample_ids: list[str]) -> str:
    """MT-Bench prompts, and answers of ``sample_ids`` whose judging failed (as a refusing judge leaves them)."""
    store = str(tmp / name)
    cli("prompts", "import", "mtbench", SHARED_DATA / "mtbench", "--store", store)
    failed = pd.DataFrame(
        {"sample_id": sample_ids, "model": "echo-model", "response": json.dumps(["An answer.", "Another answer."]), "cost_usd": 1e-6, "error": "grader:judge gave no rating in [[1-10]] form"}
    )
    Store(store).append(outcomes=failed, source="test")
    return store


def test_regrade_of_a_reference_question_alone(tmp_path: Path, ray_local) -> None:
    require_shared(SHARED_DATA / "mtbench")
    store = failed_judge_store(tmp_path, "s", ["mtbench.q101"])  # reasoning: judged against the reference answer
    assert json.loads(Store(store).prompts().set_index("sample_id").at["mtbench.q101", "meta"])["category"] == "reasoning"
    with JudgeServer() as judge:
        cfg = model_file(tmp_path, "e2e-judge", judge.url, max_tokens=64)
        assert cli("regrade", "--judge", cfg, "--store", store).strip().endswith("regraded echo-model: 1")
        out = Store(store).outcomes(models=["echo-model"]).set_index("sample_id")
        assert out.at["mtbench.q101", "score"] == pytest.approx(0.7), out.at["mtbench.q101", "error"]


def test_judge_grader_id_does_not_depend_on_the_batch(tmp_path: Path, ray_local) -> None:
    require_shared(SHARED_DATA / "mtbench")
    alone = failed_judge_store(tmp_path, "alone", ["mtbench.q100"])
    mixed = failed_judge_store(tmp_path, "mixed", ["mtbench.q100", "mtbench.q102"])
    with JudgeServer() as judge:
        cfg = model_file(tmp_path, "e2e-judge", judge.url, max_tokens=64)
        cli("regrade", "--judge", cfg, "--store", alone)
        cli("regrade", "--judge", cfg, "--store", mixed)
    a = Store(alone).outcomes(models=["echo-model"]).set_index("sample_id")
    m = Store(mixed).outcomes(models=["echo-model"]).set_index("sample_id")
    assert a.at["mtbench.q100", "score"] == m.at["mtbench.q100", "score"] == pytest.approx(0.7)
    assert a.at["mtbench.q100", "grader"] == m.at["mtbench.q100", "grader"]
