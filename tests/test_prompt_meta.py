"""Prompt metadata as typed records, and what a task family keeps once in the store's families table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.answering import work_rows
from harness.errors import UserError
from harness.grading import family_settings, make_grader
from harness.model_config import ModelConfig
from harness.prompt_meta import FamilySettings, PromptMeta
from harness.store import FAMILIES, Store
from harness.tasks import get_family
from harness.tasks.base import finalize
from harness.tasks.prompt_import import import_prompts
from tests.conftest import SHARED_DATA, require_shared

PROMPT_COLUMNS = ["sample_id", "task", "task_family", "prompt", "gold", "meta"]


def _judge_config(tmp_path: Path) -> str:
    path = tmp_path / "judge.yaml"
    path.write_text("name: judge\nprovider: openai_compatible\nmodel: j\nbase_url: http://127.0.0.1:9/v1\napi_key_env: null\n")
    return str(path)


def _config() -> ModelConfig:
    return ModelConfig(name="m", provider="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1", api_key_env=None)


def test_known_meta_keys_are_typed_and_a_wrong_type_is_a_one_line_error() -> None:
    meta = PromptMeta.of('{"turns": ["q1", "q2"], "question": "free text", "shots": [{"question": "x"}]}')
    assert meta.turns == ["q1", "q2"] and meta.shots == [{"question": "x"}] and meta.model_extra == {"question": "free text"}
    assert PromptMeta.of(None).turns is None and PromptMeta.of('{"turns": 2}').turns == 2
    with pytest.raises(UserError, match=r"^p.jsonl: s1: meta field 'turns'"):
        PromptMeta.of({"turns": {"not": "turns"}}, "p.jsonl: s1")
    with pytest.raises(UserError, match=r"meta field 'shots'"):
        PromptMeta.of({"shots": "three"})


def test_an_import_with_a_malformed_meta_key_names_the_row(tmp_path: Path) -> None:
    src = tmp_path / "set.jsonl"
    src.write_text(json.dumps({"sample_id": "a1", "prompt": "Say hi", "gold": "hi", "meta": {"turns": "two"}}) + "\n")
    loaded = get_family("generic").load(src, grader="exact-match")
    with pytest.raises(UserError, match=r"set.jsonl: a1: meta field 'turns'"):
        finalize(loaded.rows, src, get_family("generic"))


def test_mtbench_judge_prompts_are_stored_once_for_the_family(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    import_prompts(store, "mtbench", require_shared(SHARED_DATA / "mtbench"))
    prompts = store.prompts(PROMPT_COLUMNS)
    assert len(prompts) == 80 and not any("judge_prompts" in json.loads(m) for m in prompts["meta"])
    fams = store.families()
    assert list(fams) == ["mtbench"] and fams["mtbench"].grader == "mtbench-judge"
    assert {"single-v1", "single-v1-multi-turn", "single-math-v1"} <= set(fams["mtbench"].settings["judge_prompts"])
    # once: the families table has one row, and importing again commits nothing new there
    before = store.versions()[FAMILIES.name]
    import_prompts(store, "mtbench", SHARED_DATA / "mtbench")
    assert store.versions()[FAMILIES.name] == before and len(store.read_table(FAMILIES)) == 1


def test_a_store_that_kept_judge_prompts_per_row_grades_alike_and_a_reimport_moves_them(tmp_path: Path) -> None:
    """Stores written before the families table carry the judge prompts in every MT-Bench row."""
    fam = get_family("mtbench")
    loaded = fam.load(require_shared(SHARED_DATA / "mtbench"))
    old_rows = loaded.rows.copy()
    old_rows["meta"] = [{**m, **loaded.settings} for m in old_rows["meta"]]
    old = Store(tmp_path / "old")
    old.append(prompts=finalize(old_rows, SHARED_DATA / "mtbench", fam), source="an older import")
    new = Store(tmp_path / "new")
    import_prompts(new, "mtbench", SHARED_DATA / "mtbench")

    judge = {"judge": _judge_config(tmp_path)}
    ids = {}
    for name, store in (("old", old), ("new", new)):
        rows = store.prompts(PROMPT_COLUMNS).head(5)  # a batch of any five questions
        settings = family_settings("mtbench-judge", store.families(), rows["task_family"], rows["meta"])
        ids[name] = make_grader("mtbench-judge", judge, settings).id
    assert ids["old"] == ids["new"] and "+prompts-" in ids["new"]

    import_prompts(old, "mtbench", SHARED_DATA / "mtbench")  # the same set again: the prompts move to the family
    assert not any("judge_prompts" in json.loads(m) for m in old.prompts(PROMPT_COLUMNS)["meta"])
    assert old.families()["mtbench"].settings == new.families()["mtbench"].settings


def test_work_rows_take_the_family_and_grader_the_families_table_keeps(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    prompts = pd.DataFrame(
        {
            "sample_id": ["t.1", "t.2"],
            "task": "toy",
            "task_family": "toy",
            "prompt": ["Say yes", "Say no"],
            "gold": ["yes", "no"],
            "meta": [None, json.dumps({"grader": "math"})],  # a row's own grader wins over its family's
        }
    )
    families = pd.DataFrame([FamilySettings(task_family="toy", family="generic", grader="exact-match").row()])
    store.append(prompts=prompts, families=families, source="toy")
    work = work_rows(store.prompts(PROMPT_COLUMNS), _config(), families=store.families()).set_index("sample_id")
    assert work.at["t.1", "grader"] == "exact-match" and work.at["t.2", "grader"] == "math"
    assert (work["family"] == "generic").all()
    assert json.loads(work.at["t.1", "messages"]) == [{"role": "user", "content": "Say yes"}]
    without = work_rows(store.prompts(PROMPT_COLUMNS), _config()).set_index("sample_id")
    assert without.at["t.1", "grader"] == "exact-match"  # generic's own default: the table is not what decides here…
    store2 = Store(tmp_path / "s2")
    store2.append(prompts=prompts, families=pd.DataFrame([FamilySettings(task_family="toy", family="generic", grader="math").row()]), source="toy")
    assert work_rows(store2.prompts(PROMPT_COLUMNS), _config(), families=store2.families()).set_index("sample_id").at["t.1", "grader"] == "math"  # …but here it is
