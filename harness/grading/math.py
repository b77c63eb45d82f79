"""GSM8K-style math: read the final answer a response commits to and compare it numerically.

Extraction, in order (the last occurrence of each wins, since models restate and correct themselves):

1. ``#### 42`` (GSM8K's own answer marker);
2. ``\\boxed{42}``;
3. a stated answer: "The (final) answer is 42", "Answer: $1,234.50", "A: 42";
4. otherwise the last number in the response.

GSM8K's calculator annotations (``<<6*3=18>>``) are removed first. Numbers may carry ``$``,
thousands separators, a trailing ``.0``/``.00``, a percent sign or be a fraction ``3/4``; they are
compared exactly as rationals, so ``$20.00`` equals ``20`` and ``0.5`` does not equal ``5``.
"""

from __future__ import annotations

import re
from fractions import Fraction

from harness.grading.base import Grade, Grader, failed

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_NUMBER = r"(?<![\w.])(-\s?)?\$?\s?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:\s*/\s*(\d+(?:\.\d+)?))?"
NUMBER = re.compile(_NUMBER)
_MARKERS = (
    re.compile(r"####\s*([^\n]*)"),
    re.compile(r"\\boxed\{([^{}]*)\}"),
    re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=|would be|will be)\s*:?\s*([^\n]*)", re.IGNORECASE),
    re.compile(r"(?:^|\n)\s*A:\s*([^\n]*)"),
)


def parse_number(text: str) -> Fraction | None:
    """The first number in ``text`` as an exact rational (``"$1,234.50"`` → 2469/2), or None."""
    m = NUMBER.search(text)
    return None if m is None else _to_fraction(m)


def _to_fraction(m: re.Match) -> Fraction | None:
    sign, value, denominator = m.group(1), m.group(2).replace(",", ""), m.group(3)
    try:
        number = Fraction(value)
        if denominator is not None:
            number /= Fraction(denominator)
    except (ValueError, ZeroDivisionError):
        return None
    return -number if sign else number


def extract_answer(response: str) -> tuple[Fraction | None, str | None]:
    """The answer ``response`` commits to and the text it was read from (None when there is no number)."""
    text = _CALCULATOR.sub("", response)
    for marker in _MARKERS:
        stated = [m.group(1) for m in marker.finditer(text)]
        for candidate in reversed(stated):
            number = parse_number(candidate)
            if number is not None:
                return number, candidate.strip()
    numbers = list(NUMBER.finditer(text))
    if not numbers:
        return None, None
    return _to_fraction(numbers[-1]), numbers[-1].group(0).strip()


def format_number(number: Fraction) -> str:
    return str(number.numerator) if number.denominator == 1 else (f"{float(number):g}" if 10**6 % number.denominator == 0 else str(number))


class MathGrader(Grader):
    name = "math"
    version = "1"

    def grade_valid(self, responses: list[str], golds: list[str | None], metas: list[dict]) -> list[Grade]:
        grades = []
        for response, gold in zip(responses, golds):
            want = parse_number(str(gold))
            if want is None:
                grades.append(failed(f"gold '{gold}' is not a number"))
                continue
            got, _ = extract_answer(str(response))
            grades.append(Grade(float(got == want), None, None if got is None else format_number(got)))
        return grades
