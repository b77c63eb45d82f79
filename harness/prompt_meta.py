"""A stored prompt's cells as Python values: what counts as missing, its ``meta`` JSON as a typed
record (:class:`PromptMeta`), and what its task family keeps once for all its prompts
(:class:`FamilySettings`, the store's ``families`` table).

The lowest layer that task families, graders and the pipeline share, so none of them imports
another for it.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Union

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import UserError


def is_missing(value: object) -> bool:
    """None, NaN, pd.NA, or a string of only whitespace: no answer, no gold."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(pd.api.types.is_scalar(value) and pd.isna(value))


def parse_meta(value: Any) -> dict:
    """A prompt's ``meta`` cell (JSON text, dict or null) as a dict."""
    if isinstance(value, dict):
        return value
    if is_missing(value):
        return {}
    try:
        doc = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


class PromptMeta(BaseModel):
    """The keys of a prompt's ``meta`` that the harness itself reads; a family's own render inputs
    (question, choices, tests, …) ride along as extra fields, read by that family alone.

    ``family`` and ``grader`` in a row are what stores written before the families table kept per
    prompt; new imports keep them once, in :class:`FamilySettings`."""

    model_config = ConfigDict(extra="allow")

    #: The registered family that renders and grades this prompt, when not its task family's.
    family: Optional[str] = None
    grader: Optional[str] = None
    #: The user turns of a multi-turn prompt, or (RouterBench's wide layout) just their count.
    turns: Union[list[str], int, None] = None
    #: Few-shot exemplars, in order; each family knows their fields.
    shots: Optional[list[dict[str, Any]]] = None

    @classmethod
    def of(cls, value: Any, where: str = "meta") -> PromptMeta:
        """A ``meta`` cell (JSON text, dict or null) checked: a wrong type of a known key is a one-line error."""
        doc = parse_meta(value)
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            field = str(exc.errors()[0]["loc"][0])
            expected = {"family": "a family name", "grader": "a grader name", "turns": "a list of turns or their count", "shots": "a list of exemplar objects"}.get(field, "of another type")
            raise UserError(f"{where}: meta field '{field}' should be {expected}, not {json.dumps(doc[field])[:60]}") from None


class FamilySettings(BaseModel):
    """One row of the store's ``families`` table: what all prompts of a task family share.

    ``settings`` holds what their grader reads once for the whole family (MT-Bench: the judge's
    prompts; each grader names the keys it reads in :attr:`harness.grading.base.Grader.settings_keys`)."""

    model_config = ConfigDict(frozen=True)

    task_family: str
    family: Optional[str] = None
    grader: Optional[str] = None
    settings: dict[str, Any] = {}

    @classmethod
    def from_rows(cls, frame: pd.DataFrame) -> dict[str, FamilySettings]:
        """The families table's rows (``settings`` as JSON text) by task family."""
        return {
            str(r["task_family"]): cls(
                task_family=str(r["task_family"]),
                family=None if is_missing(r["family"]) else str(r["family"]),
                grader=None if is_missing(r["grader"]) else str(r["grader"]),
                settings=parse_meta(r["settings"]),
            )
            for r in frame.to_dict("records")
        }

    def row(self) -> dict[str, Any]:
        return {"task_family": self.task_family, "family": self.family, "grader": self.grader, "settings": json.dumps(self.settings, ensure_ascii=False, sort_keys=True)}

    def defaults(self, meta: dict) -> dict:
        """``meta`` with this family's renderer and grader where the row names none (stores written
        before the families table name them per row, and those win)."""
        extra = {k: v for k, v in (("family", self.family), ("grader", self.grader)) if v and not meta.get(k)}
        return {**meta, **extra} if extra else meta
