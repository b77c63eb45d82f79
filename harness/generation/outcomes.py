"""Raw outcomes (answers, not graded yet) as a Parquet file with the store's column names.

``error`` holds ``engine:<kind>`` for a failed request (the store's convention), null otherwise.
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

from harness.dataset import OUTCOME_SCHEMA
from harness.errors import UserError
from harness.generation.base import Result

COLUMNS = ("sample_id", "model", "response", "input_tokens", "output_tokens", "cost_usd", "latency_s", "error", "config_hash", "created_at")
SCHEMA = pa.schema([OUTCOME_SCHEMA.field(c) for c in COLUMNS])


def outcome_table(results: Iterable[Result], config_hash: str) -> pa.Table:
    rows = [
        {
            "sample_id": r.sample_id,
            "model": r.model,
            "response": r.response,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cost_usd": r.cost_usd,
            "latency_s": r.latency_s,
            "error": None if r.ok else f"engine:{r.error}",
            "config_hash": config_hash,
            "created_at": pd.Timestamp.now(tz="UTC"),
        }
        for r in results
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def read_answered(path: Path, model: str) -> pa.Table | None:
    """Rows of an earlier run of ``model`` that have an answer (failed ones are to be redone)."""
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"{path}: exists but is not a readable Parquet file ({exc}); pass --overwrite to replace it") from None
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
