"""The task-family contract: read a public prompt set, render its prompts, name its grader.

A family turns a source (a file, a directory, a package) into prompt rows for the store's prompts
table — ``sample_id, task, task_family, prompt, prompt_original, gold, meta`` — with the structured
fields it needs later (question, choices, tests, few-shot exemplars) in ``meta``. ``render`` turns a
stored row into chat messages in RouterBench's format, 0-shot or k-shot; rows imported from
RouterBench itself (no structured ``meta``) are sent exactly as RouterBench stored them.

``match`` lets a family recognise prompts already in the store under other ids (RouterBench's
``arc-challenge.test.12`` is an ARC question under RouterBench's id): the import then attaches the
gold answer and metadata to that row instead of adding a duplicate.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from harness.errors import UserError
from harness.prompt_meta import PromptMeta, parse_meta

Messages = list[dict[str, str]]
#: Columns of a loaded prompt set (``meta`` as a dict until written).
ROW_COLUMNS = ["sample_id", "task", "prompt", "gold", "meta"]


@dataclass
class LoadedSet:
    """A prompt set read from its source, before it meets the store."""

    rows: pd.DataFrame  # ROW_COLUMNS, plus prompt_original where the source had one
    notes: list[str] = field(default_factory=list)  # what the loader wants the user to know
    #: What the family's grader reads once for all these prompts (MT-Bench: its judge prompts),
    #: kept in the store's families table instead of in every row's meta.
    settings: dict[str, Any] = field(default_factory=dict)


class TaskFamily(ABC):
    """One benchmark: how to read it, how to render its prompts, which grader scores it."""

    name: str = ""
    grader: str = ""
    #: Version of the prompt format; part of :meth:`template_id`, which goes into config hashes.
    template: str = "1"
    #: ``meta`` keys that a row must have for :meth:`render_from_meta` to build its prompt
    #: (empty: the family only has RouterBench's stored prompts, always sent as stored).
    structured_keys: tuple[str, ...] = ("question",)

    @abstractmethod
    def load(self, source: Path, **options: Any) -> LoadedSet:
        """Read the public files at ``source`` into prompt rows."""

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        """For each new row, the sample_id of the stored row that is the same problem (or NaN)."""
        return pd.Series(pd.NA, index=new.index, dtype=object)

    def attach(self, new_row: Mapping, stored_row: Mapping) -> tuple[str | None, dict]:
        """Gold and meta for a stored row that ``match`` paired with ``new_row`` (its text is kept)."""
        return new_row["gold"], {**parse_meta(stored_row.get("meta")), **dict(new_row["meta"])}

    def template_id(self, shots: int = 0) -> str:
        return f"{self.name}/{self.template}/{shots}-shot"

    def stored_families(self, tasks: pd.Series) -> pd.Series:
        """The ``task_family`` stored with loaded rows of these tasks: this family's name (a
        generic set, whose tasks are its own families, says otherwise)."""
        return pd.Series(self.name, index=tasks.index, dtype=object)

    def render(self, row: Mapping, shots: int = 0) -> Messages:
        """Chat messages for generation: from ``meta`` when it is structured, else the stored prompt."""
        meta = parse_meta(row.get("meta"))
        if self.structured_keys and all(k in meta for k in self.structured_keys):
            return [{"role": "user", "content": self.render_from_meta(meta, shots)}]
        return [{"role": "user", "content": str(row["prompt"])}]

    def render_from_meta(self, meta: dict, shots: int) -> str:
        """The prompt text for a structured row; families with structured rows override this."""
        raise NotImplementedError(f"{self.name}: no prompt template")

    def grader_for(self, row: Mapping) -> str:
        return str(parse_meta(row.get("meta")).get("grader") or self.grader)


def exemplars(meta: dict, shots: int) -> list[dict]:
    """The first ``shots`` few-shot exemplars stored with a row; asking for more than there are is an error."""
    pool = meta.get("shots") or []
    if shots > len(pool):
        raise UserError(f"{shots}-shot asked, but this prompt has {len(pool)} exemplars stored (re-import with more)")
    return pool[:shots]


def pick_shots(items: list[dict], k: int, exclude: object) -> list[dict]:
    """``k`` exemplars from ``items`` (in order), leaving out the item itself."""
    out = []
    for it in items:
        if len(out) == k:
            break
        if it.get("_key") != exclude:
            out.append(it)
    return out


def finalize(rows: pd.DataFrame, source: Path, family: TaskFamily) -> pd.DataFrame:
    """Prompt-table columns for loaded rows (``task_family`` as the family stores it, ``meta`` as JSON)."""
    if rows.empty:
        raise UserError(f"{source}: no prompts found")
    dup = rows["sample_id"][rows["sample_id"].duplicated()]
    if len(dup):
        raise UserError(f"{source}: sample_id {dup.iloc[0]} appears twice")
    out = rows.copy()
    out["task_family"] = family.stored_families(out["task"]).to_numpy()
    if "prompt_original" not in out.columns:
        out["prompt_original"] = None
    metas = [{k: v for k, v in m.items() if not k.startswith("_")} for m in out["meta"]]
    for sid, meta in zip(out["sample_id"], metas):
        PromptMeta.of(meta, f"{source}: {sid}")  # the keys the harness reads have their types
    out["meta"] = [json.dumps(m, ensure_ascii=False) for m in metas]
    return out[["sample_id", "task", "task_family", "prompt", "prompt_original", "gold", "meta"]]


def need(record: Mapping, keys: tuple[str, ...], where: str) -> None:
    """Fail with the file and record when a source record lacks a field."""
    for key in keys:
        if key not in record or record[key] is None:
            raise UserError(f"{where}: missing field '{key}'")


def files_in(source: Path, pattern: str) -> list[Path]:
    """``source`` itself if it is a file, else the files in it matching ``pattern``."""
    if not source.exists():
        raise UserError(f"{source}: no such file or directory")
    if source.is_file():
        return [source]
    found = sorted(source.glob(pattern))
    if not found:
        raise UserError(f"{source}: no {pattern} files in this directory")
    return found
