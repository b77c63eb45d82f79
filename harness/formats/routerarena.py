"""RouterArena's per-query results: one JSONL per model, priced by ``cost.json``.

* ``<model>.jsonl``: per line ``global_index`` (e.g. ``MMLUPro_history_12``), ``question``,
  ``llm_selected`` (the model), ``generated_answer``, ``token_usage {input_tokens, output_tokens}``,
  ``evaluation_result {ground_truth, score, metric, …}``.
* ``cost.json``: ``{model: {input_token_price_per_million, output_token_price_per_million}}``.

Sample id ``routerarena.<global_index>`` (the set's own id). Task: ``global_index`` without its
trailing number, via harness.families.canonical_task (``MMLU_formal_logic`` → ``mmlu-formal-logic``,
family ``mmlu``; ``GSM8K`` → ``grade-school-math``); every other task is in the family
``routerarena`` (RouterArena scores its split as one). Gold: ``evaluation_result.ground_truth``.
Score: ``evaluation_result.score``, clipped to [0, 1] (a few of its metrics go slightly below 0).
Costs: ``tokens×price`` from ``token_usage`` and the price table (or --prices / model configs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.families import FAMILY_PREFIXES, canonical_task
from harness.formats import Format, ImportOptions
from harness.formats._common import first_json_line, prompt_table, read_json, require_keys
from harness.jsonl import read_jsonl
from harness.formats.pricing import price_outcomes

SET = "routerarena"
KEYS = ("global_index", "question", "token_usage", "evaluation_result")
PRICE_KEYS = ("input_token_price_per_million", "output_token_price_per_million")


def _kind(path: Path) -> str | None:
    if path.suffix.lower() == ".jsonl":
        first = first_json_line(path)
        return "results" if first and all(k in first for k in KEYS) else None
    if path.suffix.lower() == ".json":
        try:
            with open(path, encoding="utf-8") as fh:
                head = fh.read(4096)
        except (OSError, UnicodeDecodeError):
            return None
        return "prices" if all(k in head for k in PRICE_KEYS) else None
    return None


def detect(path: Path) -> bool:
    return _kind(path) is not None


def _obj(v: object, path: Path, line: int, field: str) -> dict:
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            pass
    if not isinstance(v, dict):
        raise UserError(f"{path.name}: line {line} field '{field}' is not an object")
    return v


def _task(global_index: str) -> str:
    head, _, tail = global_index.rpartition("_")
    return canonical_task(head if tail.isdigit() and head else global_index)


def _family(task: str) -> str:
    # whole-word prefixes only: MMLU-Pro (``mmlupro-…``) is not MMLU
    return next((p for p in FAMILY_PREFIXES if task == p or task.startswith(p + "-")), SET)


def read(paths: list[Path], options: ImportOptions):  # noqa: ANN201 - ImportBatch
    from harness.outcome_import import ImportBatch

    prices: dict[str, tuple[float, float]] = {}
    for p in (p for p in paths if _kind(p) == "prices"):
        for model, entry in read_json(p, "RouterArena's cost table").items():
            try:
                prices[model] = (float(entry[PRICE_KEYS[0]]), float(entry[PRICE_KEYS[1]]))
            except (TypeError, KeyError, ValueError):
                raise UserError(f"{p.name}: model '{model}' needs numbers {' and '.join(PRICE_KEYS)}") from None
    records, prompt_rows = [], {}
    for p in (p for p in paths if _kind(p) == "results"):
        for i, r in enumerate(read_jsonl(p, "RouterArena results"), 1):
            require_keys(r, KEYS, p, f"line {i}")
            tokens = _obj(r["token_usage"], p, i, "token_usage")
            ev = _obj(r["evaluation_result"], p, i, "evaluation_result")
            model = str(r.get("llm_selected") or p.stem)
            sid = f"{SET}.{r['global_index']}"
            score = ev.get("score")
            if score is not None and not isinstance(score, (int, float)):
                raise UserError(f"{p.name}: line {i} has score {score!r}; expected a number")
            prompt_rows.setdefault(sid, (_task(str(r["global_index"])), str(r["question"]), ev.get("ground_truth")))
            records.append(
                {
                    "sample_id": sid,
                    "model": model,
                    "response": r.get("generated_answer"),
                    "score": np.nan if score is None else float(min(max(score, 0.0), 1.0)),
                    "input_tokens": tokens.get("input_tokens"),
                    "output_tokens": tokens.get("output_tokens"),
                    "_prompt": str(r["question"]),
                }
            )
    if not records:
        raise UserError(f"{paths[0].name}: a price table alone; import it together with RouterArena's <model>.jsonl files")
    ids = list(prompt_rows)
    tasks = [prompt_rows[s][0] for s in ids]
    prompts = prompt_table(ids, tasks, [prompt_rows[s][1] for s in ids], SET, gold=[prompt_rows[s][2] for s in ids], families=[_family(t) for t in tasks])
    o = pd.DataFrame(records)
    dup = o.duplicated(["sample_id", "model"], keep=False)
    if dup.any():
        raise UserError(f"{SET}: model '{o.loc[dup, 'model'].iloc[0]}' has two results for {o.loc[dup, 'sample_id'].iloc[0]}")
    missing = o["score"].isna()
    batch = ImportBatch(prompts, pd.DataFrame())
    batch.missing_by_model = {str(k): int(v) for k, v in o.loc[missing, "model"].value_counts().items()}
    o = o[~missing].reset_index(drop=True)
    o["input_tokens"] = pd.array(o["input_tokens"], dtype="Int64")
    o["output_tokens"] = pd.array(o["output_tokens"], dtype="Int64")
    batch.outcomes = price_outcomes(o.drop(columns="_prompt"), o["_prompt"], prices, options, SET)
    return batch


FORMAT = Format("routerarena", detect, read, "RouterArena: one <model>.jsonl per model (token_usage, evaluation_result), priced by cost.json")
