"""Raw outcomes (answers, not graded yet) as a Parquet file in the long layout ``import`` reads.

The store's outcome columns plus ``task`` and ``prompt`` (so ``routerbench import`` adds the
prompts too) and ``score``, null: ``import`` stores the answers as ungraded and ``regrade`` grades
them. ``error`` holds ``engine:<kind>`` for a failed request (the store's convention), null otherwise.
Writes are atomic (temporary file + rename), so an interrupted run leaves the old file or the new
one, and a rerun picks up where it stopped: rows without an error are kept, the rest redone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.schema import OUTCOME_SCHEMA, PROMPT_SCHEMA
from harness.errors import UserError
from harness.generation.base import Result

COLUMNS = ("sample_id", "model", "task", "prompt", "response", "score", "input_tokens", "output_tokens", "cost_usd", "latency_s", "error", "config_hash", "created_at")
SCHEMA = pa.schema([PROMPT_SCHEMA.field(c) if c in ("task", "prompt") else OUTCOME_SCHEMA.field(c) for c in COLUMNS])


def outcome_table(results: Iterable[Result], work: pd.DataFrame) -> pa.Table:
    """The results of ``work``'s rows (:func:`harness.answering.work_rows`), with their task, prompt and config hash."""
    asked = work.set_index("sample_id")
    rows = [
        {
            "sample_id": r.sample_id,
            "model": r.model,
            "task": asked.at[r.sample_id, "task"],
            "prompt": asked.at[r.sample_id, "prompt"],
            "response": r.response,
            "score": None,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cost_usd": r.cost_usd,
            "latency_s": r.latency_s,
            "error": None if r.ok else f"engine:{r.error}",
            "config_hash": asked.at[r.sample_id, "config_hash"],
            "created_at": pd.Timestamp.now(tz="UTC"),
        }
        for r in results
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def read_answered(path: Path, model: str) -> pa.Table | None:
    """Rows of an earlier run of ``model`` that have an answer (failed ones are to be redone); a
    file written before ``task``/``prompt``/``score`` were columns is read with them null."""
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"{path}: exists but is not a readable Parquet file ({exc}); pass --overwrite to replace it") from None
    for name in ("task", "prompt", "score"):
        if name not in table.column_names:
            table = table.append_column(SCHEMA.field(name), pa.nulls(table.num_rows, SCHEMA.field(name).type))
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: not an outcomes file (no column '{missing[0]}'); pass --overwrite to replace it")
    df = table.select(list(COLUMNS)).to_pandas()
    others = sorted(set(df["model"]) - {model})
    if others:
        raise UserError(f"{path}: holds outcomes of model '{others[0]}', not '{model}'; choose another --out")
    return pa.Table.from_pandas(df[df["error"].isna()], schema=SCHEMA, preserve_index=False)


def write_outcomes(path: Path, tables: list[pa.Table]) -> int:
    """Write the tables as one file, atomically; returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table.num_rows
