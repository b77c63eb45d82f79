"""RouteLLM's evaluation outcomes (two models; no costs, so they are ``estimated``).

Files, recognised by their columns (and, for the CSVs, by name):

* ``mmlu/mmlu_<subject>.csv``: ``prompt`` and one True/False column per model. Task
  ``mmlu-<subject>`` (underscores become hyphens, as RouterBench names MMLU tasks), family ``mmlu``;
  score 1/0. Sample id ``routellm.mmlu-<subject>.<row>`` (0-based data row of the file).
* ``gsm8k_responses.csv``: ``prompt``, a True/False column per model and ``<model>_response``.
  Task and family ``grade-school-math`` (RouterBench's name for GSM8K); sample id
  ``routellm.grade-school-math.<row>``.
* ``mtbench_judgements.jsonl``: GPT-4 judge ratings 1–10 per (question, model, turn). One outcome
  per (question, model): its score is the **mean of its two turns' ratings / 10** (RouterBench's
  MT-Bench scores are per question too); the prompt is the two user turns and the response the two
  answers (JSON lists), read from the turn-2 judge prompt. Task and family ``mtbench``; sample id
  ``routellm.mtbench.<question_id>``.

None of them has gold answers or costs: costs are ``estimated`` (see harness.formats.pricing).
Row-based ids are stable as long as the published file is (the same file gives the same ids).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.formats import Format, ImportOptions
from harness.formats._common import first_json_line, prompt_table, require_keys, true_false
from harness.jsonl import read_jsonl
from harness.formats.pricing import TOKENIZER, price_outcomes

SET = "routellm"
MTBENCH_KEYS = ("question_id", "model", "judge", "score", "turn")
_CONVERSATION = re.compile(r"<\|The Start of Assistant A's Conversation with User\|>(.*?)<\|The End of Assistant A's Conversation with User\|>", re.S)
_TURN = re.compile(r"\n*### (User|Assistant A):\n")


def _csv_columns(path: Path) -> list[str] | None:
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _csv_task(path: Path) -> str | None:
    stem = path.stem.lower()
    if stem.startswith("mmlu_"):
        return "mmlu-" + stem[len("mmlu_"):].replace("_", "-")
    if stem.startswith("gsm8k"):
        return "grade-school-math"
    return None


def detect(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        cols = _csv_columns(path)
        return bool(cols) and cols[0] == "prompt" and len(cols) > 1 and "sample_id" not in cols and _csv_task(path) is not None
    if suffix == ".jsonl":
        first = first_json_line(path)
        return first is not None and all(k in first for k in MTBENCH_KEYS) and "user_prompt" in first
    return False


def _read_csv(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    task = _csv_task(path)
    try:
        df = pd.read_csv(path, dtype={"prompt": object})
    except (OSError, ValueError) as exc:
        raise UserError(f"{path.name}: cannot read as RouteLLM CSV ({type(exc).__name__}: {exc})") from exc
    models = [c for c in df.columns if c != "prompt" and not c.endswith("_response")]
    if not models:
        raise UserError(f"{path.name}: no model columns besides 'prompt' (expected a True/False column per model)")
    ids = [f"{SET}.{task}.{i}" for i in range(len(df))]
    prompts = prompt_table(ids, [task] * len(df), df["prompt"].tolist(), path.name)
    parts = []
    for m in models:
        resp = df[f"{m}_response"].astype(object).where(df[f"{m}_response"].notna(), None) if f"{m}_response" in df.columns else [None] * len(df)
        parts.append(pd.DataFrame({"sample_id": ids, "model": m, "response": list(resp), "score": true_false(df[m], path, m), "_prompt": df["prompt"].tolist()}))
    return prompts, pd.concat(parts, ignore_index=True)


def _split_conversation(text: str) -> tuple[list[str], list[str]] | None:
    found = _CONVERSATION.search(text or "")
    if not found:
        return None
    pieces = _TURN.split(found.group(1))
    users = [p.strip() for role, p in zip(pieces[1::2], pieces[2::2]) if role == "User"]
    answers = [p.strip() for role, p in zip(pieces[1::2], pieces[2::2]) if role == "Assistant A"]
    return users, answers


def _read_mtbench(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = read_jsonl(path, "RouteLLM MT-Bench judgements")
    for i, r in enumerate(rows, 1):
        require_keys(r, MTBENCH_KEYS, path, f"line {i}")
        if not isinstance(r["score"], (int, float)) or not 1 <= r["score"] <= 10:
            raise UserError(f"{path.name}: line {i} has rating {r['score']!r}; MT-Bench ratings are 1–10")
    df = pd.DataFrame(rows)
    df["sample_id"] = SET + ".mtbench." + df["question_id"].astype(str)
    scores = df.groupby(["sample_id", "model"], sort=True)["score"].mean() / 10.0
    texts: dict[str, list[str]] = {}
    answers: dict[tuple[str, str], list[str]] = {}
    for r in df[df["turn"] == df.groupby(["sample_id", "model"])["turn"].transform("max")].itertuples():
        split = _split_conversation(r.user_prompt)
        if split:
            texts.setdefault(r.sample_id, split[0])
            answers[(r.sample_id, r.model)] = split[1]
    ids = sorted(df["sample_id"].unique())
    missing = [i for i in ids if i not in texts]
    if missing:
        raise UserError(f"{path.name}: no conversation found in the judge prompts of {missing[0]}; is this RouteLLM's mtbench_judgements.jsonl?")
    as_json = lambda turns: json.dumps(turns, ensure_ascii=False) if len(turns) > 1 else turns[0]  # noqa: E731
    prompts = prompt_table(ids, ["mtbench"] * len(ids), [as_json(texts[i]) for i in ids], path.name, turns=[len(texts[i]) for i in ids])
    outcomes = pd.DataFrame(
        {
            "sample_id": [k[0] for k in scores.index],
            "model": [k[1] for k in scores.index],
            "response": [as_json(answers[k]) if k in answers else None for k in scores.index],
            "score": scores.to_numpy(float),
        }
    )
    outcomes["_prompt"] = outcomes["sample_id"].map(dict(zip(ids, prompts["prompt"])))
    return prompts, outcomes


def read(paths: list[Path], options: ImportOptions):  # noqa: ANN201 - ImportBatch
    from harness.outcome_import import ImportBatch

    prompts, outcomes = [], []
    for path in paths:
        p, o = _read_mtbench(path) if path.suffix.lower() == ".jsonl" else _read_csv(path)
        prompts.append(p)
        outcomes.append(o)
    o = pd.concat(outcomes, ignore_index=True)
    missing = o["score"].isna()
    dropped = o.loc[missing, "model"].value_counts()
    o = o[~missing].reset_index(drop=True)
    priced = price_outcomes(o.drop(columns="_prompt"), o["_prompt"], None, options, SET)
    batch = ImportBatch(pd.concat(prompts, ignore_index=True).drop_duplicates("sample_id", ignore_index=True), priced)
    batch.missing_by_model = {str(k): int(v) for k, v in dropped.items()}
    if (priced["cost_source"] == "estimated").any():
        batch.notes.append(f"routellm: no costs published; estimated from prompt and response tokens ({TOKENIZER}) × price")
    return batch


FORMAT = Format("routellm", detect, read, "RouteLLM: mmlu/mmlu_<subject>.csv, gsm8k_responses.csv, mtbench_judgements.jsonl (costs estimated)")

