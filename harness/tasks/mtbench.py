"""MT-Bench: 80 two-turn questions, MT-Bench's judge prompts and GPT-4's reference answers.

SOURCE is the directory with ``question.jsonl`` and, beside it, ``judge_prompts.jsonl`` and
``reference_answer_gpt-4.jsonl`` (or FastChat's ``reference_answer/gpt-4.jsonl``). The prompt is
the JSON list of turns; gold is the JSON list of reference turns (math, reasoning and coding
questions have them; others null — the judge grades them without); ``meta`` carries the category,
the turns; MT-Bench's single-answer judge prompts are kept once for the family (the store's
``families`` table), so grading needs nothing but the store.
Rendering gives the next turn to answer: ``render(row, answers=[a1])`` → q1, a1, q2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from harness.errors import UserError
from harness.prompt_meta import parse_meta
from harness.tasks import prompt_match
from harness.jsonl import read_jsonl
from harness.tasks.base import LoadedSet, Messages, TaskFamily, need

#: The family setting holding MT-Bench's single-answer judge prompts, by name (stored once, in the
#: store's families table, not in every prompt's meta).
JUDGE_PROMPTS_KEY = "judge_prompts"
REFERENCE_FILES = ("reference_answer_gpt-4.jsonl", "reference_answer/gpt-4.jsonl")
#: MT-Bench's categories judged against a reference answer.
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system_prompt: str
    prompt_template: str


def load_judge_prompts(path: str | Path) -> dict[str, JudgePrompt]:
    """MT-Bench's ``judge_prompts.jsonl``: the single-answer prompts by name."""
    prompts: dict[str, JudgePrompt] = {}
    for n, doc in enumerate(read_jsonl(path, "judge prompts"), 1):
        if doc.get("type") != "single":
            continue
        try:
            prompts[doc["name"]] = JudgePrompt(doc["name"], doc["system_prompt"], doc["prompt_template"])
        except (KeyError, TypeError) as exc:
            raise UserError(f"{path}:{n}: not a judge prompt record ({exc})") from None
    if not prompts:
        raise UserError(f"{path}: no single-answer judge prompts (type 'single')")
    return prompts


def judge_prompts_from(settings: Mapping[str, Any]) -> dict[str, JudgePrompt]:
    """The judge prompts MT-Bench's family keeps in the store (``settings["judge_prompts"]``)."""
    return {name: JudgePrompt(doc["name"], doc["system_prompt"], doc["prompt_template"]) for name, doc in (settings.get(JUDGE_PROMPTS_KEY) or {}).items()}


def _question_file(source: Path) -> Path:
    path = source / "question.jsonl" if source.is_dir() else source
    if not path.is_file():
        raise UserError(f"{source}: no question.jsonl here")
    return path


class MTBench(TaskFamily):
    name = "mtbench"
    grader = "mtbench-judge"
    template = "mtbench-turns-1"
    structured_keys = ("turns",)

    def load(self, source: Path, **options: Any) -> LoadedSet:
        path = _question_file(source)
        folder = path.parent
        judge_file = folder / "judge_prompts.jsonl"
        judges = load_judge_prompts(judge_file) if judge_file.exists() else {}
        refs: dict[int, list[str]] = {}
        ref_file = next((folder / f for f in REFERENCE_FILES if (folder / f).exists()), None)
        for n, r in enumerate(read_jsonl(ref_file) if ref_file else [], 1):
            need(r, ("question_id", "choices"), f"{ref_file}:{n}")
            refs[int(r["question_id"])] = list(r["choices"][0]["turns"])
        notes = [] if judges else [f"no judge_prompts.jsonl beside {path.name}: give the judge its prompts when grading"]
        rows = []
        for n, q in enumerate(read_jsonl(path), 1):
            need(q, ("question_id", "category", "turns"), f"{path}:{n}")
            qid, category, turns = int(q["question_id"]), str(q["category"]), list(q["turns"])
            ref = refs.get(qid)
            rows.append(
                {
                    "sample_id": f"mtbench.q{qid}",
                    "task": "mtbench",
                    "prompt": json.dumps(turns, ensure_ascii=False),
                    "gold": json.dumps(ref, ensure_ascii=False) if ref else None,
                    "meta": {
                        "question_id": qid,
                        "category": category,
                        "turns": turns,
                        "source": path.name,
                    },
                }
            )
        notes.append(f"{sum(r['gold'] is not None for r in rows)} questions with reference answers")
        # the full set once for the family: a batch of any questions can be judged, and the judge's
        # id (a digest of its prompts) does not depend on which questions share a batch
        settings = {JUDGE_PROMPTS_KEY: {name: prompt.__dict__ for name, prompt in sorted(judges.items())}} if judges else {}
        return LoadedSet(pd.DataFrame(rows), notes, settings)

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        """A stored MT-Bench prompt (RouterBench's: the JSON list of its turns) with the same first turn."""
        keys = [prompt_match.canon(_first_turn(p)) for p in stored["prompt"]]
        wanted = [prompt_match.canon(m["turns"][0]) if m.get("turns") else "" for m in new["meta"]]
        return prompt_match.pair(new, wanted, stored, keys)

    def attach(self, new_row: Mapping, stored_row: Mapping) -> tuple[str | None, dict]:
        """The reference answers, category, turns (as a list) and judge prompts; the stored text is kept."""
        meta = {k: v for k, v in dict(new_row["meta"]).items() if not k.startswith("_")}
        return new_row["gold"], {**parse_meta(stored_row.get("meta")), **meta}

    def render(self, row: Mapping, shots: int = 0, answers: Sequence[str] = ()) -> Messages:
        """The conversation up to the next question: q1 (, a1, q2)."""
        from harness.tasks import turn_texts

        turns = turn_texts(row) or [str(row["prompt"])]
        messages: Messages = []
        for question, answer in zip(turns, [*answers, None]):
            messages.append({"role": "user", "content": question})
            if answer is None:
                break
            messages.append({"role": "assistant", "content": answer})
        return messages


def _first_turn(prompt: object) -> str:
    """The first user turn of a stored MT-Bench prompt (a JSON list of turns, or plain text)."""
    text = str(prompt)
    if text.startswith("["):
        try:
            doc = json.loads(text)
        except ValueError:
            return text
        if isinstance(doc, list) and doc:
            return str(doc[0])
    return text
