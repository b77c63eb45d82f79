"""LLMRouter's example data: a score matrix, a price table and query files with gold answers.

* ``dcrouter_preprocessed_{train,test}.json``: a JSON list of ``{question, scores: {model: 0–1}}``
  (9 open models). Each question is one prompt; its task is the ``task_name`` of the same query text
  in the query files given with it (``llmrouter`` if none has it). The file's train/test membership
  is kept as a split (``ImportBatch.split``; ``routerbench import … --write-split PATH`` writes it
  for ``evaluate --split file:PATH``). A question in both files is put in test only.
* ``example_data_llm_candidates_default_llm.json``: ``{model: {input_price, output_price, …}}``,
  $ per 1M tokens: the set's own prices.
* ``example_data_query_data_default_query_{train,test}.jsonl``: ``task_name, query, ground_truth,
  metric, choices``: prompts with gold (``ground_truth``), also those without scores.

Sample id ``llmrouter.<task>.<sha1(query text)[:12]>``: the same text always gets the same id. A
query text listed under two task names is kept once, under the first (train file before test).
Tasks are LLMRouter's names with ``_`` → ``-`` and mapped where RouterBench has the benchmark
(``gsm8k`` → ``grade-school-math``, ``arc_challenge`` → ``arc-challenge``; harness.families).
The set has no token counts and no responses: costs are ``estimated`` from the question's tokens
× input price (output tokens unknown, counted 0).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.families import canonical_task
from harness.formats import Format, ImportOptions
from harness.formats._common import first_json_line, prompt_table, read_json, require_keys
from harness.jsonl import read_jsonl
from harness.formats.pricing import TOKENIZER, price_outcomes

SET = "llmrouter"
QUERY_KEYS = ("task_name", "query", "ground_truth")


def _json_head(path: Path) -> object:
    """The first value inside a JSON file's top-level list or dict (reads at most 256 KB)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(1 << 18).lstrip()
    except (OSError, UnicodeDecodeError):
        return None
    dec = json.JSONDecoder()
    try:
        if head.startswith("["):
            return dec.raw_decode(head[1:].lstrip())[0]
        if head.startswith("{"):
            body = head[1:].lstrip()
            _, end = dec.raw_decode(body)  # the key
            rest = body[end:].lstrip()
            return dec.raw_decode(rest[1:].lstrip())[0] if rest.startswith(":") else None
    except ValueError:
        return None
    return None


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        first = first_json_line(path)
        return "queries" if first and all(k in first for k in QUERY_KEYS) else None
    if suffix == ".json":
        head = _json_head(path)
        if isinstance(head, dict) and "question" in head and isinstance(head.get("scores"), dict):
            return "scores"
        if isinstance(head, dict) and "input_price" in head and "output_price" in head:
            return "prices"
    return None


def detect(path: Path) -> bool:
    return _kind(path) is not None


def _sample_id(task: str, text: str) -> str:
    return f"{SET}.{task}.{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _split_of(path: Path) -> str:
    stem = path.stem.lower()
    return "test" if stem.endswith("test") else "train"


def read(paths: list[Path], options: ImportOptions):  # noqa: ANN201 - ImportBatch
    from harness.outcome_import import ImportBatch

    kinds = {p: _kind(p) for p in paths}
    prices: dict[str, tuple[float, float]] = {}
    for p in (p for p in paths if kinds[p] == "prices"):
        for model, entry in read_json(p, "LLMRouter's LLM candidates").items():
            try:
                prices[model] = (float(entry["input_price"]), float(entry["output_price"]))
            except (TypeError, KeyError, ValueError):
                raise UserError(f"{p.name}: model '{model}' needs numbers input_price and output_price") from None
    # queries: text -> (task, gold), first occurrence wins (train files before test files)
    task_of: dict[str, tuple[str, object, str]] = {}
    for p in sorted((p for p in paths if kinds[p] == "queries"), key=lambda p: (_split_of(p) == "test", p.name)):
        for i, r in enumerate(read_jsonl(p, "LLMRouter queries"), 1):
            require_keys(r, QUERY_KEYS, p, f"line {i}")
            task_of.setdefault(str(r["query"]), (canonical_task(str(r["task_name"])), r.get("ground_truth"), p.name))
    # the score matrix
    scored: dict[str, dict[str, float]] = {}
    split_of: dict[str, str] = {}
    source_of: dict[str, str] = {}
    for p in sorted((p for p in paths if kinds[p] == "scores"), key=lambda p: _split_of(p) == "test"):
        rows = read_json(p, "LLMRouter's score matrix")
        if not isinstance(rows, list):
            raise UserError(f"{p.name}: expected a JSON list of {{question, scores}}")
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or "question" not in r or not isinstance(r.get("scores"), dict):
                raise UserError(f"{p.name}: entry {i} lacks 'question' or a 'scores' object")
            q = str(r["question"])
            for model, v in r["scores"].items():
                if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                    raise UserError(f"{p.name}: entry {i} has score {v!r} for model '{model}'; it must be in [0, 1]")
            scored.setdefault(q, {}).update({str(m): float(v) for m, v in r["scores"].items()})
            source_of.setdefault(q, p.name)
            if _split_of(p) == "test" or q not in split_of:
                split_of[q] = _split_of(p)  # a question in both files is test only
    texts = list(dict.fromkeys([*task_of, *scored]))
    tasks = [task_of[t][0] if t in task_of else SET for t in texts]
    ids = [_sample_id(task, t) for task, t in zip(tasks, texts)]
    id_of = dict(zip(texts, ids))
    prompts = prompt_table(
        ids, tasks, texts, SET, gold=[task_of[t][1] if t in task_of else None for t in texts],
    )
    prompts["meta"] = [json.dumps({"source": task_of[t][2] if t in task_of else source_of[t]}) for t in texts]
    records = [(id_of[q], m, s, q) for q, by_model in scored.items() for m, s in by_model.items()]
    outcomes = pd.DataFrame(records, columns=["sample_id", "model", "score", "_prompt"])
    batch = ImportBatch(prompts, pd.DataFrame())
    if len(outcomes):
        batch.outcomes = price_outcomes(outcomes.drop(columns="_prompt"), outcomes["_prompt"], prices, options, SET)
        batch.notes.append(f"llmrouter: no token counts; costs estimated from question tokens ({TOKENIZER}) × input price")
        fam_of = dict(zip(prompts["sample_id"], prompts["task_family"]))
        for q, part in split_of.items():
            sid = id_of[q]
            batch.split.setdefault(fam_of[sid], {"train": [], "test": []})[part].append(sid)
    return batch


FORMAT = Format("llmrouter", detect, read, "LLMRouter: dcrouter_preprocessed_*.json scores, *_llm_candidates_*.json prices, *_query_*.jsonl prompts with gold")
