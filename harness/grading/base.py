"""The grader contract: responses and gold answers in, one typed :class:`Grade` per response out.

A grader never turns "could not grade" into a wrong answer: a missing response, a missing gold
answer or a failure of the grader itself gives ``score=None`` with an ``error`` that says which
(``response:missing``, ``gold:missing``, ``grader:<why>``), so the store records why there is no
score and a rerun can fill it in. A response that *was* graded and is wrong scores 0.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd

MISSING_GOLD = "gold:missing"
MISSING_RESPONSE = "response:missing"


@dataclass(frozen=True)
class Grade:
    """One graded response: ``score`` in [0, 1] or None with the ``error`` that prevented grading."""

    score: float | None
    error: str | None = None
    extracted: str | None = None  # what the grader read from the response (letter, number, rating, test outcome)


def failed(why: str, extracted: str | None = None) -> Grade:
    """A grade the grader could not give (``grader:<why>``)."""
    return Grade(None, f"grader:{why}", extracted)


def _missing(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(pd.api.types.is_scalar(value) and pd.isna(value))  # None, NaN, pd.NA


class Grader(ABC):
    """Grades a batch of responses against gold answers; ``name@version`` goes into the store."""

    name: str = ""
    version: str = ""
    #: Graders that can work without a gold answer (an LLM judge on open questions) say False.
    needs_gold: bool = True
    #: Graders that run model-written code say True: they are placed on nodes with the ``sandbox``
    #: resource, never hold API keys, and take the ``unsafe_sandbox`` option.
    sandboxed: bool = False

    @property
    def id(self) -> str:
        """The store's ``grader`` column: ``<name>@<version>``."""
        return f"{self.name}@{self.version}"

    def grade_batch(self, responses: Sequence[str | None], golds: Sequence[str | None], metas: Sequence[dict] | None = None) -> list[Grade]:
        """Grade every response; missing inputs become errors here, the rest goes to :meth:`grade_valid`."""
        metas = list(metas) if metas is not None else [{}] * len(responses)
        if not len(responses) == len(golds) == len(metas):
            raise ValueError(f"{self.name}: {len(responses)} responses, {len(golds)} golds and {len(metas)} metas")
        grades: list[Grade | None] = [None] * len(responses)
        todo: list[int] = []
        for i, (resp, gold) in enumerate(zip(responses, golds)):
            if _missing(resp):
                grades[i] = Grade(None, MISSING_RESPONSE)
            elif self.needs_gold and _missing(gold):
                grades[i] = Grade(None, MISSING_GOLD)
            else:
                todo.append(i)
        if todo:
            done = self.grade_valid([responses[i] for i in todo], [golds[i] for i in todo], [metas[i] or {} for i in todo])  # type: ignore[misc]
            for i, g in zip(todo, done):
                grades[i] = g
        return grades  # type: ignore[return-value]

    @abstractmethod
    def grade_valid(self, responses: list[str], golds: list[str | None], metas: list[dict]) -> list[Grade]:
        """Grade responses that are present (and have a gold answer where :attr:`needs_gold`)."""

    def close(self) -> None:  # noqa: B027 - graders without resources need nothing
        """Release pools or engines."""


def parse_meta(value: Any) -> dict:
    """A prompt's ``meta`` cell (JSON text, dict or null) as a dict."""
    if isinstance(value, dict):
        return value
    if _missing(value):
        return {}
    try:
        doc = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def grade_frame(grader: Grader, frame: pd.DataFrame) -> pd.DataFrame:
    """Grade a frame of ``response, gold, meta`` (``prompt`` too, for graders that read the question).

    Returns the outcome columns ``score, error, grader`` (plus ``extracted``) in the frame's order,
    ready to assign to outcome rows before ``Store.append(outcomes=…, overwrite=True)``.
    """
    metas = [parse_meta(m) for m in (frame["meta"] if "meta" in frame.columns else [None] * len(frame))]
    if "prompt" in frame.columns:
        metas = [{**m, "prompt": p} if "prompt" not in m else m for m, p in zip(metas, frame["prompt"])]
    golds = frame["gold"].tolist() if "gold" in frame.columns else [None] * len(frame)
    grades = grader.grade_batch(frame["response"].tolist(), golds, metas)
    return pd.DataFrame(
        {
            "score": [g.score for g in grades],
            "error": [g.error for g in grades],
            "extracted": [g.extracted for g in grades],
            "grader": grader.id,
        },
        index=frame.index,
    ).astype({"score": "float64"})
