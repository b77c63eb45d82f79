"""Multiple choice: read the option letter a response commits to and compare it with the gold letter.

Used for MMLU, ARC, HellaSwag and Winogrande; the letter is read by the format's own rules
(:func:`harness.tasks.mc_format.extract_letter`). A response that commits to no letter scores 0
(a wrong answer, ``extracted=None``); only a missing response or gold letter is an error. Valid letters are ``meta["labels"]`` (e.g. "AB" for
Winogrande), else A–E.
"""

from __future__ import annotations

from harness.grading.base import Grade, Grader, failed
from harness.tasks.mc_format import DEFAULT_LABELS, extract_letter


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
