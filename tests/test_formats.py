"""Import formats (harness/formats): each published set imports with the counts an independent parse
of its raw files gives, with stable ids, documented costs and one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.store import Store, effective_cost_source
from harness.errors import UserError
from harness.outcome_import import EXPORTS, load_sources
from tests.conftest import SHARED_DATA, require_shared
from harness.matrix import outcome_matrices

ROUTELLM = SHARED_DATA / "routellm"
LLMROUTER = SHARED_DATA / "llmrouter"
ARENA = SHARED_DATA / "routerarena"
HAIKU = "claude-3-haiku-20240307"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300)


def store_with(tmp_path: Path, sources: list[str], name: str = "s", **kw) -> tuple[Store, object]:
    store = Store(tmp_path / name)
    batch = load_sources(sources, **kw)
    result = store.append(batch.prompts, batch.outcomes, source=name)
    return store, (batch, result)


# ---------------------------------------------------------------------- routellm
def test_routellm_counts_scores_and_estimated_costs(tmp_path: Path) -> None:
    require_shared(ROUTELLM)
    mmlu_files = sorted((ROUTELLM / "mmlu").glob("mmlu_*.csv"))
    models = ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]
    correct = {m: 0 for m in models}
    rows = 0
    for f in [*mmlu_files, ROUTELLM / "gsm8k_responses.csv"]:
        with open(f, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                rows += 1
                for m in models:
                    correct[m] += r[m] == "True"
    judged = [json.loads(line) for line in open(ROUTELLM / "mtbench_judgements.jsonl")]
    per_q: dict[tuple, list[float]] = {}
    for j in judged:
        per_q.setdefault((j["question_id"], j["model"]), []).append(j["score"])
    store, (batch, result) = store_with(tmp_path, [str(ROUTELLM), str(ROUTELLM / "mmlu")])
    assert batch.formats == {"routellm": len(mmlu_files) + 2}
    assert rows == 14042 + 1319
    assert result.prompts_added == rows + 80 and result.outcomes_added == 2 * rows + len(per_q)
    o = store.outcomes()
    p = store.prompts()
    fam = o.merge(p[["sample_id", "task_family"]], on="sample_id")
    for m in models:
        got = fam[(fam.model == m) & (fam.task_family != "mtbench")]["score"].sum()
        assert got == correct[m]
        mt = fam[(fam.model == m) & (fam.task_family == "mtbench")].set_index("sample_id")["score"]
        for (qid, model), ratings in per_q.items():
            if model == m:
                assert mt[f"routellm.mtbench.{qid}"] == pytest.approx(np.mean(ratings) / 10)
    assert p.groupby("task_family").size().to_dict() == {"mmlu": 14042, "grade-school-math": 1319, "mtbench": 80}
    assert "routellm.mmlu-abstract-algebra.0" in set(p.sample_id) and "mmlu-high-school-biology" in set(p.task)
    assert set(o.cost_source) == {"estimated"} and (o.cost_usd > 0).all()
    gsm = o[o.sample_id == "routellm.grade-school-math.0"]
    assert gsm.response.notna().all() and "18" in gsm.response.iloc[0]
    # re-import: nothing new, same ids
    again = load_sources([str(ROUTELLM), str(ROUTELLM / "mmlu")])
    r2 = store.append(again.prompts, again.outcomes)
    assert r2.prompts_added == 0 and r2.outcomes_added == 0 and r2.outcomes_changed == 0


# ---------------------------------------------------------------------- llmrouter
def test_llmrouter_matrix_prices_gold_and_split(tmp_path: Path) -> None:
    require_shared(LLMROUTER)
    train = json.load(open(LLMROUTER / "dcrouter_preprocessed_train.json"))
    test = json.load(open(LLMROUTER / "dcrouter_preprocessed_test.json"))
    questions = {r["question"] for r in train} | {r["question"] for r in test}
    test_q = {r["question"] for r in test}
    queries = [json.loads(line) for s in ("train", "test") for line in open(LLMROUTER / f"example_data_query_data_default_query_{s}.jsonl")]
    texts = {q["query"] for q in queries} | questions
    prices = json.load(open(LLMROUTER / "example_data_llm_candidates_default_llm.json"))
    store, (batch, result) = store_with(tmp_path, [str(LLMROUTER)])
    assert result.prompts_added == len(texts)
    assert result.outcomes_added == 9 * len(questions)
    o = store.outcomes()
    assert len(o.model.unique()) == 9 and set(o.model) <= set(prices)  # the table prices more models than the matrix has
    assert set(o.cost_source) == {"estimated"}
    # output tokens unknown: cost ∝ input price, so equal-priced models cost the same on a question
    q = o[o.sample_id == o.sample_id.iloc[0]].set_index("model")["cost_usd"]
    assert q["gemma-2-9b-it"] * prices["qwen2.5-7b-instruct"]["input_price"] == pytest.approx(q["qwen2.5-7b-instruct"] * prices["gemma-2-9b-it"]["input_price"])
    p = store.prompts()
    first = queries[0]
    row = p[p.prompt == first["query"]].iloc[0]
    assert row.gold == first["ground_truth"] and row.task == "agentverse-logicgrid"
    assert row.sample_id.startswith("llmrouter.agentverse-logicgrid.")
    assert "grade-school-math" in set(p.task_family) and "arc-challenge" in set(p.task_family)
    split = batch.split
    assert sum(len(v["test"]) for v in split.values()) == len(test_q)
    assert sum(len(v["train"]) for v in split.values()) == len(questions - test_q)
    # the split reads with --split file:
    from harness.splits import parse_split

    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    fold = parse_split(f"file:{path}")("mmlu", outcome_matrices(store, families=["mmlu"]))[0]
    assert fold.test.n == len(split["mmlu"]["test"]) and fold.train.n == len(split["mmlu"]["train"])
    # --write-split through the CLI
    out = tmp_path / "cli-split.json"
    done = cli("import", str(LLMROUTER), "--store", str(tmp_path / "cli"), "--write-split", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == split


# ---------------------------------------------------------------------- routerarena
def test_routerarena_tokens_times_price_and_round_trip(tmp_path: Path) -> None:
    require_shared(ARENA)
    cost = json.load(open(ARENA / "cost.json"))
    raw = {m: [json.loads(line) for line in open(ARENA / f"{m}.jsonl")] for m in (HAIKU, "gemini-2.0-flash-001")}
    store, (batch, result) = store_with(tmp_path, [str(ARENA)])
    assert result.prompts_added == 809 and result.outcomes_added == 1618
    o = store.outcomes().set_index(["sample_id", "model"])
    for m, rows in raw.items():
        for r in rows[:50]:
            tok, price = r["token_usage"], cost[m]
            want = (tok["input_tokens"] * price["input_token_price_per_million"] + tok["output_tokens"] * price["output_token_price_per_million"]) / 1e6
            got = o.loc[(f"routerarena.{r['global_index']}", m)]
            assert got.cost_usd == pytest.approx(want) and got.cost_source == "tokens×price"
            assert got.score == pytest.approx(min(max(r["evaluation_result"]["score"], 0), 1))
    p = store.prompts().set_index("sample_id")
    assert p.loc["routerarena.AIME_112", "gold"] == "610"
    assert p.task_family.value_counts().to_dict()["routerarena"] > 500
    assert not p.task_family.str.startswith("mmlupro").any()
    # export long, import back: the same store
    for fmt, name in (("long-parquet", "long.parquet"), ("long-csv", "long.csv")):
        EXPORTS.get(fmt)(store, None, tmp_path / name)
        back, (b2, _) = store_with(tmp_path, [str(tmp_path / name)], name=f"back-{fmt}")
        assert b2.formats == {"long": 1}
        cols = ["sample_id", "model", "response", "score", "cost_usd", "cost_source", "input_tokens", "output_tokens"]
        a = store.outcomes(cols).sort_values(["sample_id", "model"], ignore_index=True)
        b = back.outcomes(cols).sort_values(["sample_id", "model"], ignore_index=True)
        pd.testing.assert_frame_equal(a, b, check_exact=False)
        pc = ["sample_id", "task", "task_family", "prompt"]
        pd.testing.assert_frame_equal(store.prompts(pc).sort_values("sample_id", ignore_index=True), back.prompts(pc).sort_values("sample_id", ignore_index=True))
    again = load_sources([str(ARENA)])
    assert store.append(again.prompts, again.outcomes).outcomes_added == 0
    # what `evaluate` prints per family, and `data info` per model
    from harness.cli import _cost_sources_by_family

    assert _cost_sources_by_family(store) == {"grade-school-math": "tokens×price (2 models)", "mmlu": "tokens×price (2 models)", "routerarena": "tokens×price (2 models)"}
    info = cli("data", "info", "--store", str(store.uri))
    assert info.returncode == 0 and "tokens×price" in info.stdout, info.stderr


# ---------------------------------------------------------------------- prices
def test_prices_unit_cost_and_missing_price(tmp_path: Path) -> None:
    require_shared(ARENA)
    alone = str(ARENA / f"{HAIKU}.jsonl")
    with pytest.raises(UserError, match=f"no price for model '{HAIKU}'.*--prices FILE.*--unit-cost"):
        load_sources([alone])
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"{HAIKU}: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}\n")
    b = load_sources([alone], prices=str(prices))
    o = b.outcomes
    assert set(o.cost_source) == {"tokens×price"}
    np.testing.assert_allclose(o.cost_usd, (o.input_tokens.astype(float) * 1 + o.output_tokens.astype(float) * 2) / 1e6)
    # --prices comes before the set's own table
    with_table = load_sources([alone, str(ARENA / "cost.json")], prices=str(prices)).outcomes
    np.testing.assert_allclose(with_table.cost_usd, o.cost_usd)
    unit = load_sources([alone], unit_cost=True).outcomes
    assert set(unit.cost_source) == {"unit"} and (unit.cost_usd == 1).all()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({HAIKU: {"input_per_mtok": "cheap"}}))
    with pytest.raises(UserError, match="bad.json: model 'claude-3-haiku-20240307' needs numbers"):
        load_sources([alone], prices=str(bad))


def test_long_without_costs_is_estimated_and_old_rows_read_published(tmp_path: Path) -> None:
    f = tmp_path / "nocost.csv"
    pd.DataFrame(
        {"sample_id": ["a", "a", "b"], "model": ["gpt-4-1106-preview", "claude-v2", "gpt-4-1106-preview"], "score": [1, 0, 1],
         "prompt": ["What is two plus two?", "What is two plus two?", "Name a prime number larger than ten."], "task": ["t", "t", "t"],
         "response": ["four", "five", "eleven"]}
    ).to_csv(f, index=False)
    b = load_sources([str(f)])
    assert b.formats == {"long": 1} and set(b.outcomes.cost_source) == {"estimated"}
    gpt = b.outcomes[b.outcomes.model == "gpt-4-1106-preview"].set_index("sample_id")["cost_usd"]
    assert 0 < gpt["a"] < gpt["b"]  # more prompt and response tokens, more cost
    with_tokens = f.with_name("tokens.csv")
    pd.read_csv(f).assign(input_tokens=100, output_tokens=10).to_csv(with_tokens, index=False)
    t = load_sources([str(with_tokens)]).outcomes
    assert set(t.cost_source) == {"tokens×price"}
    assert t[t.model == "gpt-4-1106-preview"].cost_usd.iloc[0] == pytest.approx((100 * 10 + 10 * 30) / 1e6)
    old = pd.DataFrame({"cost_source": [None, None, "estimated"], "input_tokens": [None, 5, None]})
    assert effective_cost_source(old).tolist() == ["published", "tokens×price", "estimated"]


# ---------------------------------------------------------------------- detection and errors
def test_list_formats_and_ambiguous_file(tmp_path: Path) -> None:
    done = cli("import", "--list-formats")
    assert done.returncode == 0
    names = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert names == ["llmrouter", "long", "routellm", "routerarena", "routerbench-wide"]
    both = tmp_path / "both.jsonl"
    row = {"sample_id": "x", "model": "m", "score": 1, "cost_usd": 0.1, "global_index": "X_1", "question": "q",
           "token_usage": {"input_tokens": 1, "output_tokens": 1}, "evaluation_result": {"score": 1}}
    both.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError, match=r"^both.jsonl: formats long and routerarena both claim this file; pass --format NAME"):
        load_sources([str(both)])
    chosen = load_sources([str(both)], format="routerarena", unit_cost=True)
    assert chosen.formats == {"routerarena": 1} and chosen.outcomes.sample_id.tolist() == ["routerarena.X_1"]


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    mmlu = tmp_path / "mmlu_anatomy.csv"
    mmlu.write_text("prompt,gpt-4-1106-preview\nWhat?,maybe\n")
    done = cli("import", str(mmlu), "--store", str(tmp_path / "s"))
    assert done.returncode == 2
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err == "error: mmlu_anatomy.csv: column 'gpt-4-1106-preview' row 1 is 'maybe', not True/False"
    assert not (tmp_path / "s").exists()
    scores = tmp_path / "dcrouter_preprocessed_train.json"
    scores.write_text(json.dumps([{"question": "q", "scores": {"m": 2}}]))
    with pytest.raises(UserError, match=r"entry 0 has score 2 for model 'm'; it must be in \[0, 1\]"):
        load_sources([str(scores)])
    judged = tmp_path / "mtbench_judgements.jsonl"
    judged.write_text(json.dumps({"question_id": 1, "model": "m", "judge": ["gpt-4", "x"], "score": 11, "turn": 1, "user_prompt": ""}) + "\n")
    with pytest.raises(UserError, match="line 1 has rating 11; MT-Bench ratings are 1–10"):
        load_sources([str(judged)])
    with pytest.raises(UserError, match="Unknown import format 'nope'. Available: llmrouter, long"):
        load_sources([str(judged)], format="nope")
