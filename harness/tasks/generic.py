"""Any prompt set as JSONL or CSV with the columns ``sample_id, prompt, gold``.

Optional columns: ``task`` (default: the file's name), ``meta`` (a JSON object). The grader is
``--grader`` (default ``exact-match``), stored in each row's meta; prompts are sent as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.families import task_families
from harness.components import GRADERS
from harness.tasks import mc_format, prompt_match
from harness.tasks.base import LoadedSet, TaskFamily, files_in

REQUIRED = ("sample_id", "prompt", "gold")


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        return pd.read_json(path, lines=True, dtype=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read as {path.suffix} ({exc})") from exc


def _meta(value: Any, where: str) -> dict:
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return {}
    if isinstance(value, dict):
        return value
    try:
        doc = json.loads(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: column 'meta' is not a JSON object: {str(value)[:60]!r}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{where}: column 'meta' is not a JSON object: {str(value)[:60]!r}")
    return doc


class Generic(TaskFamily):
    name = "generic"
    grader = "exact-match"
    template = "as-is"
    structured_keys = ()

    def load(self, source: Path, task: str | None = None, grader: str | None = None, **options: Any) -> LoadedSet:
        grader = grader or self.grader
        if grader not in GRADERS:
            GRADERS.get(grader)  # the registry's "Unknown grader … Available: …"
        frames = []
        for path in [p for p in files_in(source, "*") if p.suffix.lower() in (".jsonl", ".csv")] or [source]:
            if path.suffix.lower() not in (".jsonl", ".csv"):
                raise UserError(f"{path}: a generic prompt set is a .jsonl or .csv file")
            df = _read(path)
            missing = [c for c in REQUIRED if c not in df.columns]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)} (a generic prompt set needs {', '.join(REQUIRED)})")
            empty = df["prompt"].isna() | df["sample_id"].isna()
            if empty.any():
                i = int(empty.to_numpy().argmax())
                raise UserError(f"{path}: row {i + 1} has an empty {'sample_id' if pd.isna(df['sample_id'].iloc[i]) else 'prompt'}")
            metas = [
                {**_meta(m, f"{path}: row {i + 1}"), "family": self.name, "grader": grader, "source": path.name}
                for i, m in enumerate(df["meta"] if "meta" in df.columns else [None] * len(df))
            ]
            frames.append(
                pd.DataFrame(
                    {
                        "sample_id": df["sample_id"].astype(str),
                        "task": df["task"].astype(str) if "task" in df.columns else (task or path.stem),
                        "prompt": df["prompt"].astype(str),
                        "gold": [None if pd.isna(g) else str(g) for g in df["gold"]],
                        "meta": metas,
                    }
                )
            )
        rows = pd.concat(frames, ignore_index=True)
        if task:
            rows["task"] = task
        missing_gold = int(rows["gold"].isna().sum())
        return LoadedSet(rows, [f"{missing_gold} prompts without a gold answer (graded as gold:missing)"] if missing_gold else [])

    def stored_families(self, tasks: pd.Series) -> pd.Series:
        return task_families(tasks)  # each file's task is its own family (or RouterBench's, by name)

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        """A stored prompt of the same task family with the same text (whitespace folded; nothing
        else, since a generic prompt's wording is all there is to it)."""
        keys = [mc_format.normalize(p, fold_case=False) for p in stored["prompt"]]
        return prompt_match.pair(new, [mc_format.normalize(p, fold_case=False) for p in new["prompt"]], stored, keys)
