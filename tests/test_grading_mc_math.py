"""Multiple-choice and math graders on hand-made answers, malformed ones included."""

from __future__ import annotations

import pytest

from harness.grading import GRADERS, MISSING_GOLD, MISSING_RESPONSE, build_grader
from harness.grading.math import extract_answer, parse_number
from harness.tasks.mc_format import extract_letter


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("B", "B"),
        ("B\n", "B"),
        ("  (C) palms covered with oil", "C"),
        ("D) impact of an asteroid", "D"),
        ("**A**", "A"),
        ("A.", "A"),
        ("D (the asteroid)", "D"),
        ("Answer: B", "B"),
        ("The correct answer is (C).", "C"),
        ("I think the answer is: d", "D"),
        ("Looking at each option... Therefore the answer is B. Final answer: C", "C"),
        ("\\boxed{D}", "D"),
        ("A chart is the best tool here.", None),  # the article, not a choice
        ("I do not have enough context to choose.", None),
        ("Rachel", None),
        ("", None),
        ("E", None),  # not an option of an A-D question
    ],
)
def test_letter_extraction(response: str, letter: str | None) -> None:
    assert extract_letter(response, "ABCD") == letter


def test_multiple_choice_grades_and_errors() -> None:
    grader = build_grader("multiple-choice")
    assert grader.id == "multiple-choice@1"
    grades = grader.grade_batch(
        ["B", "C", "Answer: A", None, "A", "A", "nothing useful"],
        ["B", "B", "A", "A", None, "Z", "C"],
        [{"labels": "ABCD"}] * 7,
    )
    assert [g.score for g in grades] == [1.0, 0.0, 1.0, None, None, None, 0.0]
    assert grades[3].error == MISSING_RESPONSE and grades[4].error == MISSING_GOLD
    assert grades[5].error.startswith("grader:") and "'Z'" in grades[5].error
    assert grades[6].error is None and grades[6].extracted is None  # no answer is wrong, not an error


def test_winogrande_labels_limit_the_letters() -> None:
    grades = build_grader("multiple-choice").grade_batch(["C", "B)"], ["A", "B"], [{"labels": "AB"}] * 2)
    assert [(g.score, g.extracted) for g in grades] == [(0.0, None), (1.0, "B")]


@pytest.mark.parametrize(
    ("response", "value"),
    [
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("The total is 5 + 7 = 12.\nThe answer is 12.", "12"),
        ("so \\boxed{42} is it, checked 3 times", "42"),
        ("answer: $1,234.50", "2469/2"),
        ("#### $20.00", "20"),
        ("He is 90 - 144 = -54 miles away.\n#### -54", "-54"),
        ("So the answer is 3/4 of the cake, i.e. 75%.", "3/4"),
        ("We get 3, then 4, and finally 7.", "7"),
        ("Q: ...\nA: 18", "18"),
        ("#### 7 packs and 2 extra glue sticks", "7"),  # what it commits to, not the last number
        ("The answer is negative because of fees.\n#### -15", "-15"),
        ("no digits at all", None),
    ],
)
def test_math_extraction(response: str, value: str | None) -> None:
    got, _ = extract_answer(response)
    assert (None if got is None else str(got)) == value


def test_math_numeric_comparison_and_errors() -> None:
    grader = build_grader("math")
    grades = grader.grade_batch(
        ["#### $20.00", "The answer is 0.5", "#### 1,000", "#### 7", "gibberish", "42", None],
        ["20", "5", "1000", "7.0", "3", None, "1"],
    )
    assert [g.score for g in grades] == [1.0, 0.0, 1.0, 1.0, 0.0, None, None]
    assert grades[1].extracted == "0.5" and grades[4].extracted is None
    assert grades[5].error == MISSING_GOLD and grades[6].error == MISSING_RESPONSE
    bad = grader.grade_batch(["12"], ["twelve"])[0]
    assert bad.score is None and bad.error.startswith("grader:") and "twelve" in bad.error


def test_numbers_parse_exactly() -> None:
    assert parse_number("$1,234.50") == parse_number("1234.5")
    assert parse_number("-3/4") == parse_number("-0.75")
    assert parse_number("1,2,3") == 1  # a list, not a thousands separator
    assert parse_number("x") is None


def test_grader_registry_names_and_unknown() -> None:
    assert {"multiple-choice", "math", "code-exec", "mtbench-judge", "exact-match"} <= set(GRADERS.names())
    with pytest.raises(Exception, match="Unknown grader 'nope'. Available: "):
        build_grader("nope")


def test_exact_match() -> None:
    grades = build_grader("exact-match").grade_batch(["  Paris. ", "paris", "Lyon"], ["paris", "Paris", "Paris"])
    assert [g.score for g in grades] == [1.0, 1.0, 0.0]
