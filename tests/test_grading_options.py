"""Graders declare themselves: ids from options, the ids already in stores, rebuilding from an id."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

import pytest
import yaml

from harness.errors import UserError
from harness.grading import GRADERS, Grade, Grader, GraderOptions, grader_class, make_grader, prepare_options, regrade_options
from harness.grading.base import ConfigValue, ModelOption
from harness.tasks.mtbench import load_judge_prompts
from tests.conftest import SHARED_DATA, require_shared


def model_file(tmp: Path, name: str, **fields) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "provider": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1", **fields}))
    return path


class ReviewOptions(GraderOptions):
    reviewer: Annotated[ConfigValue, ModelOption(required=True)] = None


class ReviewGrader(Grader):
    """A plug-in grader with a model option and a resource of its own: nothing names it, yet it is
    placed, checked and rebuilt like the shipped ones."""

    name = "test-review"
    version = "2"
    resources: ClassVar[dict[str, float]] = {"reviewers": 1}
    Options = ReviewOptions

    def __init__(self, reviewer=None) -> None:
        self.options = ReviewOptions(reviewer=reviewer)

    def grade_valid(self, responses, golds, metas):
        return [Grade(1.0) for _ in responses]


GRADERS.add("test-review", ReviewGrader)


def test_ids_already_in_stores_are_kept(tmp_path: Path) -> None:
    """Stored outcomes carry these ids; a change here makes every one of them stale for regrade."""
    assert [make_grader(n).id for n in ("multiple-choice", "math", "exact-match", "code-exec")] == ["multiple-choice@1", "math@1", "exact-match@1", "code-exec@1"]
    assert make_grader("code-exec", {"unsafe_sandbox": True}).id == "code-exec@1+unsafe-sandbox"
    assert make_grader("code-exec", {"bind_entry_point": True, "keep_examples": True, "unsafe_sandbox": True}).id == "code-exec@1+bind-name+examples+unsafe-sandbox"
    prompts = load_judge_prompts(require_shared(SHARED_DATA / "mtbench" / "judge_prompts.jsonl"))
    settings = {"judge_prompts": {k: p.__dict__ for k, p in prompts.items()}}  # what MT-Bench's family keeps in the store
    judge = make_grader("mtbench-judge", {"judge": str(model_file(tmp_path, "gpt-4"))}, settings)
    assert judge.id == "mtbench-judge@1+gpt-4+prompts-39edcd7d"


def test_graders_declare_placement_keys_and_options() -> None:
    assert grader_class("code-exec").resources == {"sandbox": 1} and grader_class("code-exec").keyless
    for name in ("multiple-choice", "math", "exact-match", "mtbench-judge"):
        assert grader_class(name).resources == {} and not grader_class(name).keyless
    assert set(grader_class("code-exec").Options.model_fields) == {"bind_entry_point", "keep_examples", "unsafe_sandbox"}
    assert set(grader_class("mtbench-judge").Options.model_fields) == {"judge"}


def test_a_run_s_options_go_to_the_graders_that_declare_them(tmp_path: Path) -> None:
    run = {"judge": str(model_file(tmp_path, "j")), "unsafe_sandbox": True, "reviewer": None}
    assert make_grader("exact-match", run).id == "exact-match@1"
    assert make_grader("code-exec", run).id == "code-exec@1+unsafe-sandbox"
    with pytest.raises(UserError, match=r"^mtbench-judge needs a model config for its option 'judge': pass --judge model_configs/<model>.yaml$"):
        make_grader("mtbench-judge", {"unsafe_sandbox": True})
    with pytest.raises(UserError, match="needs a model config for its option 'reviewer'"):
        make_grader("test-review", run)
    assert make_grader("test-review", {"reviewer": str(model_file(tmp_path, "r"))}).id == "test-review@2+r"


def test_prepare_options_loads_configs_with_their_keys_once_on_the_driver(tmp_path: Path, monkeypatch) -> None:
    keyed = str(model_file(tmp_path, "keyed", api_key_env="ROUTERBENCH_TEST_REVIEW_KEY"))
    monkeypatch.delenv("ROUTERBENCH_TEST_REVIEW_KEY", raising=False)
    assert prepare_options(["exact-match"], {"reviewer": keyed}) == {"reviewer": keyed}  # no grader of the run takes it
    with pytest.raises(UserError, match="ROUTERBENCH_TEST_REVIEW_KEY is not set"):
        prepare_options(["test-review"], {"reviewer": keyed})
    monkeypatch.setenv("ROUTERBENCH_TEST_REVIEW_KEY", "sk-test")
    held = prepare_options(["test-review", "exact-match"], {"reviewer": keyed, "unsafe_sandbox": False})
    monkeypatch.delenv("ROUTERBENCH_TEST_REVIEW_KEY")
    assert held["reviewer"].name == "keyed" and held["reviewer"].api_key() == "sk-test" and held["unsafe_sandbox"] is False


def test_stored_ids_rebuild_their_grader(tmp_path: Path) -> None:
    safe, unsafe = {"unsafe_sandbox": False}, {"unsafe_sandbox": True}
    assert regrade_options("code-exec@1", "code-exec", safe) is None  # current
    assert regrade_options("code-exec@1", "code-exec", safe, failed=True) is not None
    old = regrade_options("code-exec@0+bind-name", "code-exec", unsafe)  # another version: rebuilt from its id
    assert old is not None and make_grader("code-exec", old).id == "code-exec@1+bind-name+unsafe-sandbox"
    # the weaker sandbox's grades are redone by a run without it, never the other way round
    weak = regrade_options("code-exec@1+unsafe-sandbox", "code-exec", safe)
    assert weak is not None and make_grader("code-exec", weak).id == "code-exec@1"
    assert regrade_options("code-exec@1+unsafe-sandbox", "code-exec", unsafe) is None
    assert regrade_options("code-exec@1", "code-exec", unsafe) is None
    # another grader than the family's now: the family's, with the run's options
    assert make_grader("code-exec", regrade_options("exact-match@1", "code-exec", unsafe)).id == "code-exec@1+unsafe-sandbox"


def test_a_judge_is_rebuilt_only_with_a_config_of_the_model_its_id_names(tmp_path: Path) -> None:
    stored = "mtbench-judge@0+gpt-4+prompts-39edcd7d"
    assert regrade_options(stored, "mtbench-judge", {}) is None  # no judge given: left as it is
    assert regrade_options(stored, "mtbench-judge", {"judge": str(model_file(tmp_path, "claude"))}) is None
    rebuilt = regrade_options(stored, "mtbench-judge", {"judge": str(model_file(tmp_path, "gpt-4"))})
    assert rebuilt is not None and rebuilt.judge.name == "gpt-4"
    assert regrade_options("mtbench-judge@1+gpt-4+prompts-39edcd7d", "mtbench-judge", {"judge": str(model_file(tmp_path, "gpt-4"))}) is None
    # never graded (no judge then): any judge will do, and none is no regrade
    assert regrade_options(None, "mtbench-judge", {}, failed=True) is None
    assert regrade_options(None, "mtbench-judge", {"judge": str(model_file(tmp_path, "claude"))}, failed=True).judge.name == "claude"
    assert regrade_options("test-review@1+r", "test-review", {"reviewer": str(model_file(tmp_path, "r"))}).reviewer.name == "r"
