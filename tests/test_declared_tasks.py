"""Multiple-choice families declared as YAML: a new one needs a file and no code, the shipped ones
load exactly what their Python modules used to, and a bad file is a one-line error naming it and the
field at fault."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.store import Store
from harness.errors import UserError
from harness.grading import build_grader
from harness.tasks import TASKS, family_of, get_family
from harness.tasks.prompt_import import import_prompts
from harness.tasks.base import finalize
from harness.tasks.declared import FAMILY_DIR, DeclaredFamily, load_family, load_spec
from tests.conftest import SHARED_DATA, require_shared

TOY = """\
name: toy-quiz
grader: multiple-choice
template: toy-1
source:
  format: csv
  files: "*_quiz.csv"
names:
  file: '^(?P<level>[a-z]+)_quiz\\.csv$'
  task: "toy-quiz-{level}"
  sample_id: "toy-quiz.{level}-{n}"
fields:
  question: q
  choices: [a, b, c]
  answer: correct
answer: letter
exemplars:
  k: 1
meta:
  level: "{level}"
"""
QUIZ = 'q,a,b,c,correct\n"2 + 2 = ?",3,4,5,B\nCapital of France?,Paris,Rome,Oslo,a\nLargest planet?,Mars,Venus,Jupiter,C\n'
BLOCK = 'Print only a single choice  from "A" or "B" or "C" without explanation.\nAnswer:'


@pytest.fixture()
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A family that exists only as a YAML file in tmp_path, registered the way families/ is."""
    (tmp_path / "toy-quiz.yaml").write_text(TOY)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "easy_quiz.csv").write_text(QUIZ)
    monkeypatch.setitem(TASKS._entries, "toy-quiz", DeclaredFamily(tmp_path / "toy-quiz.yaml"))
    return tmp_path / "data"


def test_a_new_multiple_choice_family_is_a_yaml_file_alone(toy: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    report = import_prompts(store, "toy-quiz", toy)
    assert (report.read, report.added, report.tasks) == (3, 3, {"toy-quiz-easy": 3})
    rows = store.prompts().set_index("sample_id")
    assert list(rows.index) == ["toy-quiz.easy-0", "toy-quiz.easy-1", "toy-quiz.easy-2"]
    # the family's own name, though the task is named otherwise (a task is not its family)
    assert list(rows["gold"]) == ["B", "A", "C"] and set(rows["task_family"]) == {"toy-quiz"} and set(rows["task"]) == {"toy-quiz-easy"}
    row = rows.loc["toy-quiz.easy-1"]
    assert row["prompt"] == f"Capital of France?\nA) Paris\nB) Rome\nC) Oslo\n{BLOCK}"
    meta = json.loads(row["meta"])
    assert meta["level"] == "easy" and meta["answer_text"] == "Paris" and meta["labels"] == "ABC"
    fam = family_of({**row, "sample_id": row.name})
    assert (fam.name, fam.grader_for(row), fam.template_id(1)) == ("toy-quiz", "multiple-choice", "toy-quiz/toy-1/1-shot")
    # the exemplar is the file's first other item, with its answer letter
    one_shot = fam.render(row, shots=1)[0]["content"]
    assert one_shot == f"2 + 2 = ?\nA) 3\nB) 4\nC) 5\n{BLOCK}\nB\n\n{row['prompt']}"
    grades = build_grader(fam.grader_for(row)).grade_batch(["A", "Answer: B"], [row["gold"]] * 2, [meta] * 2)
    assert [g.score for g in grades] == [1.0, 0.0]
    again = import_prompts(store, "toy-quiz", toy)
    assert (again.added, again.unchanged) == (0, 3)


def test_a_bad_answer_in_a_declared_family_names_the_row(toy: Path, tmp_path: Path) -> None:
    (toy / "hard_quiz.csv").write_text("q,a,b,c,correct\nq1,x,y,z,D\n")
    with pytest.raises(UserError, match=r"hard_quiz.csv: row 2 has correct 'D'; it must be one of A, B, C"):
        import_prompts(Store(tmp_path / "s"), "toy-quiz", toy)
    (toy / "hard_quiz.csv").write_text("q,a,b,correct\nq1,x,y,A\n")
    with pytest.raises(UserError, match=r"hard_quiz.csv: missing column\(s\) c \(toy-quiz needs q, a, b, c, correct\)"):
        import_prompts(Store(tmp_path / "s"), "toy-quiz", toy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("grader: multiple-choice", "grader: nope"), r"field 'grader': unknown grader 'nope' \(available: .*multiple-choice"),
        (("answer: letter", "answer: letters"), r"field 'answer': Input should be 'index', 'letter' or 'label' \(got 'letters'\)"),
        (("  format: csv\n", "  format: csv\n  reader: a.b:c\n"), r"field 'source': give exactly one of 'format' .* and 'reader'"),
        (("toy-quiz.{level}-{n}", "toy-quiz.{lvl}-{n}"), r"field 'names.sample_id': unknown placeholder \{lvl\} \(known here: file, level, n, stem, task\)"),
        (("meta:\n", "tmplate: x\nmeta:\n"), r"field 'tmplate': Extra inputs are not permitted"),
        (("name: toy-quiz", "name: quiz"), r"field 'name': 'quiz' is not the file's name 'toy-quiz'"),
        (("answer: letter", "answer: label"), r"field 'fields.choice_label': required with answer: label"),
        (("  file: '^(?P<level>", "  file: '^(?P<level"), r"field 'names.file': not a regular expression"),
        (("  k: 1", "  k: -1"), r"field 'exemplars.k': Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_family_file_is_one_line_naming_file_and_field(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = tmp_path / "toy-quiz.yaml"
    assert change[0] in TOY
    path.write_text(TOY.replace(change[0], change[1]))
    with pytest.raises(UserError, match=message) as err:
        load_family(path)
    assert str(err.value).startswith(f"{path}: field '") and "\n" not in str(err.value)


def test_a_reader_hook_that_does_not_import_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "toy-quiz.yaml"
    path.write_text(TOY.replace("  format: csv\n", "  reader: no_such_module:read\n"))
    (tmp_path / "a_quiz.csv").write_text(QUIZ)
    with pytest.raises(UserError, match=r"toy-quiz.yaml: field 'source.reader': cannot import module 'no_such_module'"):
        load_family(path).load(tmp_path)


def test_a_family_file_without_its_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "toy-quiz.yaml"
    path.write_text("name: toy-quiz\nsource:\n  format: jsonl\n")
    with pytest.raises(UserError, match=r"toy-quiz.yaml: field 'names': required unless source.format is routerbench"):
        load_spec(path)
    path.write_text("- not a mapping\n")
    with pytest.raises(UserError, match="toy-quiz.yaml: a task family file must be a mapping of fields"):
        load_spec(path)


def test_the_shipped_families_are_yaml_files_registered_by_name() -> None:
    shipped = {p.stem for p in FAMILY_DIR.glob("*.yaml")}
    assert shipped == {"mmlu", "hellaswag", "arc-challenge", "winogrande"} and shipped <= set(TASKS.names())
    for name in shipped:
        spec = load_spec(FAMILY_DIR / f"{name}.yaml")
        assert (spec.name, spec.grader, spec.template) == (name, "multiple-choice", "routerbench-mc-1")
    assert get_family("winogrande").structured_keys == () and get_family("mmlu").structured_keys == ("question", "choices")


# sha256 (first 16 hex) of the sorted rows (sample_id, task, task_family, prompt, gold, meta) that the
# Python families (harness/tasks/{mmlu,hellaswag,arc,winogrande}.py, before they became YAML) loaded
# from ../shared/data: the YAML families must load the very same prompts, gold and meta.
PYTHON_FAMILY_DIGESTS = {
    "mmlu": ("mmlu", "ca4b991528469dc3"),
    "hellaswag": ("hellaswag/hellaswag_val_full.txt", "3af8f42f8b4b58d5"),
    "arc-challenge": ("arc-challenge", "827ada3ee06d691d"),
    "winogrande": ("routerbench", "f1a3d0ba444f820b"),
}


@pytest.mark.parametrize("family", sorted(PYTHON_FAMILY_DIGESTS))
def test_declared_families_load_what_the_python_ones_did(family: str) -> None:
    source, digest = PYTHON_FAMILY_DIGESTS[family]
    path = require_shared(SHARED_DATA / source)
    rows = finalize(get_family(family).load(path).rows, path, get_family(family)).sort_values("sample_id")
    doc = rows[["sample_id", "task", "task_family", "prompt", "gold", "meta"]].values.tolist()
    assert hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()[:16] == digest


def test_one_mmlu_test_file_finds_its_dev_exemplars(tmp_path: Path) -> None:
    test = require_shared(SHARED_DATA / "mmlu" / "test" / "virology_test.csv")
    loaded = get_family("mmlu").load(test, shots=2)
    meta = loaded.rows["meta"][0]
    assert loaded.notes == [] and len(meta["shots"]) == 2 and meta["subject"] == "virology"
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "virology_test.csv").write_text(test.read_text())
    lone = get_family("mmlu").load(tmp_path)
    assert lone.notes == ["virology_test.csv: 0 exemplars (of 5) in ../dev/virology_dev.csv (no such file)"]
    assert lone.rows["meta"][0]["shots"] == [] and lone.rows["sample_id"][0] == "mmlu-virology.test-0"
