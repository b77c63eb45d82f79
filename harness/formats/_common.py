"""Helpers shared by the format modules: prompt tables, header peeks, score parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.families import task_families


def prompt_table(sample_ids, tasks, prompts, source: str, gold=None, families=None, turns=None) -> pd.DataFrame:  # noqa: ANN001
    """Rows of the prompts table (harness.store.PROMPT_SCHEMA); families from harness.families unless given."""
    tasks = pd.Series(list(tasks), dtype=object).astype(str)
    n = len(tasks)
    turns = [1] * n if turns is None else list(turns)
    return pd.DataFrame(
        {
            "sample_id": pd.Series(list(sample_ids), dtype=object).astype(str).to_numpy(),
            "task": tasks.to_numpy(),
            "task_family": (task_families(tasks) if families is None else pd.Series(list(families), dtype=object)).to_numpy(),
            "prompt": list(prompts),
            "prompt_original": [None] * n,
            "gold": [None] * n if gold is None else [None if g is None or (isinstance(g, float) and np.isnan(g)) else str(g) for g in gold],
            "meta": [json.dumps({"source": source, **({"turns": int(t)} if t > 1 else {})}) for t in turns],
        }
    )


def first_json_line(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.loads(fh.readline() or "null")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def read_json(path: Path, what: str):  # noqa: ANN201
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path.name}: cannot read {what} as JSON ({type(exc).__name__}: {exc})") from exc


def require_keys(row: dict, keys: tuple[str, ...], path: Path, where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(f"{path.name}: {where} lacks field(s) {', '.join(missing)}")


def true_false(col: pd.Series, path: Path, column: str) -> np.ndarray:
    """A True/False correctness column as 1.0/0.0 (null stays NaN); anything else is an error."""
    if col.dtype == bool:
        return col.to_numpy(dtype=float)
    mapped = col.map(lambda v: {True: 1.0, False: 0.0, "True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}.get(v, np.nan) if not pd.isna(v) else np.nan)
    bad = mapped.isna() & col.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"{path.name}: column '{column}' row {i + 1} is {col.iloc[i]!r}, not True/False")
    return mapped.to_numpy(dtype=float)
