"""RouterBench's wide layout (its ``routerbench_0shot.pkl`` / ``_5shot.pkl`` and CSV copies).

Columns ``sample_id, prompt, eval_name``, per model ``<model>`` (score), ``<model>|model_response``,
``<model>|total_cost`` (USD, ``cost_source`` ``published``). Sample ids are the file's own.
Details in :func:`harness.outcome_import.from_wide`.
"""

from __future__ import annotations

from pathlib import Path

from harness.formats import Format, ImportOptions
from harness.outcome_import import LONG_REQUIRED, from_wide, peek_columns, read_frames, wide_models

SUFFIXES = (".csv", ".pkl", ".pickle", ".parquet", ".json", ".jsonl")


def detect(path: Path) -> bool:
    if path.suffix.lower() not in SUFFIXES:
        return False
    cols = peek_columns(path)
    if cols is None or all(c in cols for c in LONG_REQUIRED):  # a long file may carry eval_name too
        return False
    return "eval_name" in cols or bool(wide_models(cols))


def read(paths: list[Path], options: ImportOptions):  # noqa: ANN201 - ImportBatch
    return from_wide(read_frames(paths), options.on_ambiguous, missing_cost=options.missing_cost)


FORMAT = Format("routerbench-wide", detect, read, "RouterBench's wide layout: sample_id, prompt, eval_name, <model>, <model>|total_cost (.pkl/.csv)")
