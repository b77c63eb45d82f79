"""The MT-Bench judge: rating parsing on hand-made and real GPT-4 judgments, prompts, scores, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, require_shared
from harness.errors import UserError
from harness.grading import build_grader
from harness.grading.judge import JudgeGrader, parse_rating
from harness.tasks.mtbench import load_judge_prompts


@pytest.mark.parametrize(
    ("judgment", "rating"),
    [
        ("The answer is accurate and complete. Rating: [[7]]", 7.0),
        ("Rating: [[9.5]]", 9.5),
        ("Helpful. [[3]] ... on reflection: [[4]]", 4.0),
        ("I would give it [8].", 8.0),
        ("Rating: 6", 6.0),
        ("My rating is **5**/10", 5.0),
        ("Rating: [[11]]", None),  # outside 1-10
        ("Rating: [[0]]", None),
        ("The response is fine.", None),
        ("", None),
    ],
)
def test_parse_rating(judgment: str, rating: float | None) -> None:
    assert parse_rating(judgment) == rating


@pytest.fixture(scope="module")
def judge_prompts():
    return load_judge_prompts(require_shared(SHARED_DATA / "mtbench" / "judge_prompts.jsonl"))


def test_parse_rating_reads_every_real_gpt4_judgment() -> None:
    path = require_shared(SHARED_DATA / "routellm" / "mtbench_judgements.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == 320
    assert all(parse_rating(r["judgment"]) == float(r["score"]) for r in rows)


class Recorder:
    """A judge that answers from a script and keeps the messages it was sent."""

    def __init__(self, *outputs: str) -> None:
        self.outputs, self.seen = list(outputs), []

    def __call__(self, messages: list[dict]) -> str:
        self.seen.append(messages)
        out = self.outputs.pop(0)
        if out == "RAISE":
            raise TimeoutError("judge timed out")
        return out


def test_single_and_multi_turn_scores(judge_prompts) -> None:
    judge = Recorder("Good. Rating: [[8]]", "Fine [[6]]", "Second turn [[10]]")
    grader = build_grader("mtbench-judge", complete=judge, prompts=judge_prompts, judge_model="local-judge", concurrency=1)
    assert grader.id.startswith("mtbench-judge@1+local-judge+prompts-")
    meta = {"turns": ["Write a haiku.", "Now in French."], "category": "writing"}
    grades = grader.grade_batch(["A haiku.", json.dumps(["A haiku.", "Un haïku."])], [None, None], [meta, meta])
    assert grades[0].score == pytest.approx(0.8) and grades[0].extracted == "8"
    assert grades[1].score == pytest.approx(0.8) and grades[1].extracted == "6,10"  # mean of 6 and 10, / 10
    first, _, second = judge.seen
    assert first[0]["content"] == judge_prompts["single-v1"].system_prompt
    assert "Write a haiku." in first[1]["content"] and "A haiku." in first[1]["content"]
    assert "Un haïku." in second[1]["content"] and "Now in French." in second[1]["content"]


def test_math_questions_are_judged_against_the_reference(judge_prompts) -> None:
    judge = Recorder("Correct. [[10]]")
    grader = JudgeGrader(judge, judge_prompts, "j", concurrency=1)
    grades = grader.grade_batch(["x = 4"], [json.dumps(["The answer is 4.", "…"])], [{"turns": ["Solve 2x = 8."], "category": "math"}])
    assert grades[0].score == 1.0
    assert "The answer is 4." in judge.seen[0][1]["content"] and "Reference Answer" in judge.seen[0][1]["content"]


def test_unreadable_ratings_and_engine_failures_are_errors_not_zeros(judge_prompts) -> None:
    grader = JudgeGrader(Recorder("I refuse to rate this.", "RAISE"), judge_prompts, "j", concurrency=1)
    meta = {"turns": ["Q?"], "category": "stem"}
    bad, broken = grader.grade_batch(["A.", "A."], [None, None], [meta, meta])
    assert bad.score is None and bad.error == "grader:judge gave no rating in [[1-10]] form" and bad.extracted == "?"
    assert broken.score is None and broken.error.startswith("grader:judge engine: TimeoutError")
    missing = grader.grade_batch([None], [None], [meta])[0]
    assert missing.error == "response:missing"


def test_judge_prompts_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "judge.jsonl"
    bad.write_text('{"name": "x", "type": "single"}\n')
    with pytest.raises(UserError, match=r"judge.jsonl:1: not a judge prompt record"):
        load_judge_prompts(bad)
    with pytest.raises(UserError, match="cannot read judge prompts"):
        load_judge_prompts(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="single-v1"):
        JudgeGrader(lambda m: "", {}, "j")
