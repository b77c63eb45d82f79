"""Multiple choice: read the option letter a response commits to and compare it with the gold letter.

Used for MMLU, ARC, HellaSwag and Winogrande. The rules, in order:

1. the response *starts* with a valid letter ("B", "B)", "(B)", "**B**", "B. text", "B: …") — what
   RouterBench's prompts ask for ("Print only a single choice … without explanation") and what its
   own scores reward; "A" followed by a lower-case word is the article ("A chart shows …"), not a choice;
2. otherwise the last explicit statement ("Answer: C", "the correct answer is (C)", "option C",
   ``\\boxed{C}``).

A response that commits to no letter scores 0 (a wrong answer, ``extracted=None``); only a missing
response or gold letter is an error. Valid letters are ``meta["labels"]`` (e.g. "AB" for
Winogrande), else A–E.
"""

from __future__ import annotations

import re

from harness.grading.base import Grade, Grader, failed

DEFAULT_LABELS = "ABCDE"
_LEAD = re.compile(r"^[\s*_`'\"#>]*(?:\(\s*)?([A-Z])(?![A-Za-z0-9])")
_ARTICLE = re.compile(r"^[\s*_`'\"#>]*A\s+[a-z]")
_EXPLICIT = re.compile(
    r"(?:answer|choice|option)\s*(?:is|:|=|would be|should be)?\s*(?:[:\-]\s*)?[*_`'\"]*\(?\s*([A-Z])\s*\)?(?![A-Za-z0-9])"
    r"|\\boxed\{\s*\(?([A-Z])\)?\s*\}",
    re.IGNORECASE,
)


def extract_letter(response: str, labels: str = DEFAULT_LABELS) -> str | None:
    """The option letter ``response`` commits to, or None."""
    lead = _LEAD.match(response)
    if lead and lead.group(1) in labels and not _ARTICLE.match(response):
        return lead.group(1)
    found = None
    for m in _EXPLICIT.finditer(response):
        letter = (m.group(1) or m.group(2) or "").upper()
        if letter in labels:
            found = letter
    return found


class MultipleChoiceGrader(Grader):
    name = "multiple-choice"
    version = "1"

    def grade_valid(self, responses: list[str], golds: list[str | None], metas: list[dict]) -> list[Grade]:
        grades = []
        for response, gold, meta in zip(responses, golds, metas):
            labels = str(meta.get("labels") or DEFAULT_LABELS)
            want = str(gold).strip().upper()
            if len(want) != 1 or want not in labels:
                grades.append(failed(f"gold '{gold}' is not one of the letters {labels}"))
                continue
            got = extract_letter(str(response), labels)
            grades.append(Grade(float(got == want), None, got))
        return grades
