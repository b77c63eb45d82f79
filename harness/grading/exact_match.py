"""Exact match: the response, stripped and case-folded, equals the gold answer (generic prompt sets).

Whitespace is collapsed and a trailing period dropped on both sides; nothing else is normalised,
so this suits short answers (a word, a label, a number written one way). Sets with letter answers
should name ``multiple-choice``, numeric ones ``math``.
"""

from __future__ import annotations

from harness.grading.base import Grade, Grader


def normalize(text: str) -> str:
    return " ".join(str(text).split()).rstrip(".").casefold()


class ExactMatchGrader(Grader):
    name = "exact-match"
    version = "1"

    def grade_valid(self, responses: list[str], golds: list[str | None], metas: list[dict]) -> list[Grade]:
        out = []
        for response, gold in zip(responses, golds):
            got = normalize(response)
            out.append(Grade(float(got == normalize(str(gold))), None, got[:200]))
        return out
