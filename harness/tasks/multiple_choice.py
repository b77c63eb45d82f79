"""The shared base of the multiple-choice families (MMLU, ARC, HellaSwag, Winogrande)."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from harness.grading.base import parse_meta
from harness.tasks import mc_format, prompt_match
from harness.tasks.base import TaskFamily, exemplars

#: ``meta`` keys of a loaded row that stay out of a stored prompt it attaches to: with them the
#: stored RouterBench prompt would be rendered anew instead of sent as RouterBench sent it.
_RENDERING_KEYS = ("question", "choices", "labels", "shots", "answer_text", "source")


class MultipleChoiceFamily(TaskFamily):
    grader = "multiple-choice"
    template = "routerbench-mc-1"
    structured_keys = ("question", "choices")

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        """A stored prompt whose last question has the same text (up to case, spacing, punctuation,
        or a lead-in one copy adds) and the same choices in any order."""
        return prompt_match.match_multiple_choice(new, stored)

    def attach(self, new_row: Mapping, stored_row: Mapping) -> tuple[str | None, dict]:
        """The gold letter in the stored prompt's own choice order, found by the answer's text."""
        meta = dict(new_row["meta"])
        parsed = prompt_match.parse_mc(stored_row["prompt"])
        choices = parsed[1] if parsed else {}
        letters = prompt_match.letters_for(meta.get("answer_text"), choices)
        extra = {k: v for k, v in meta.items() if k not in _RENDERING_KEYS and not k.startswith("_")}
        extra.update(labels="".join(choices), answer_text=meta.get("answer_text"), gold_from=f"{self.name} answer key, by choice text")
        return (letters[0] if len(letters) == 1 else None), {**parse_meta(stored_row.get("meta")), **extra}

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
