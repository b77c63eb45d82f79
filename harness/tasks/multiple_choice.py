"""The shared base of the multiple-choice families (MMLU, ARC, HellaSwag, Winogrande)."""

from __future__ import annotations

from harness.tasks import mc_format
from harness.tasks.base import TaskFamily, exemplars


class MultipleChoiceFamily(TaskFamily):
    grader = "multiple-choice"
    template = "routerbench-mc-1"
    structured_keys = ("question", "choices")

    def render_from_meta(self, meta: dict, shots: int) -> str:
        return mc_format.prompt(meta["question"], list(meta["choices"]), exemplars(meta, shots))


def mc_meta(question: str, choices: list[str], answer: str | None, shots: list[dict], **extra: object) -> dict:
    """The ``meta`` of a multiple-choice row: what rendering and grading need."""
    return {
        "question": question,
        "choices": list(choices),
        "labels": mc_format.LETTERS[: len(choices)],
        "shots": [{"question": s["question"], "choices": list(s["choices"]), "answer": s["answer"]} for s in shots],
        **extra,
        **({"answer_text": choices[mc_format.LETTERS.index(answer)]} if answer else {}),
    }
