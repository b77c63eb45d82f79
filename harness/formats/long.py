"""The long layout: one row per outcome, ``sample_id, model, score`` and ``cost_usd``.

Optionally the other outcome columns (``response, input_tokens, output_tokens, cost_source, …``) and
``prompt`` plus ``task`` (or ``eval_name``) to add the prompts too. Sample ids are the file's own.
Without a ``cost_usd`` column, costs are priced (``tokens×price`` from token columns, else
``estimated`` from prompt and response text; see :mod:`harness.formats.pricing`). This is also what
``routerbench export --format long-csv|long-parquet`` writes.
"""

from __future__ import annotations

from pathlib import Path

from harness.formats import Format, ImportOptions
from harness.outcome_import import LONG_REQUIRED, from_long, peek_columns, read_frames

SUFFIXES = (".csv", ".pkl", ".pickle", ".parquet", ".json", ".jsonl")


def detect(path: Path) -> bool:
    if path.suffix.lower() not in SUFFIXES:
        return False
    cols = peek_columns(path)
    return cols is not None and all(c in cols for c in LONG_REQUIRED)


def read(paths: list[Path], options: ImportOptions):  # noqa: ANN201 - ImportBatch
    return from_long(read_frames(paths), options.on_ambiguous, missing_cost=options.missing_cost, options=options)


FORMAT = Format("long", detect, read, "one row per outcome: sample_id, model, score[, cost_usd, prompt, task, …] (.csv/.parquet/.jsonl)")
