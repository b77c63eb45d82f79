"""GSM8K (family ``grade-school-math``): ``question`` and ``answer`` (a solution ending ``#### N``).

SOURCE is ``test.jsonl`` or the directory holding it; the k-shot exemplars are the first k items of
``train.jsonl`` beside it (else of the source itself). Gold is the number after ``####`` with its
thousands separators removed. The prompt format is the usual one for GSM8K few-shot
(``Question: … / Answer: <solution>``), whose ``#### N`` endings the math grader reads first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from harness.errors import UserError
from harness.prompt_meta import parse_meta
from harness.tasks import prompt_match
from harness.jsonl import read_jsonl
from harness.tasks.base import LoadedSet, TaskFamily, exemplars, files_in, need, pick_shots

TASK = "grade-school-math"


def final_answer(solution: str, where: str) -> str:
    if "####" not in solution:
        raise UserError(f"{where}: the answer has no '#### <number>' line")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def _qa(question: str, answer: str | None = None) -> str:
    return f"Question: {question}\nAnswer:" + (f" {answer}" if answer is not None else "")


class GSM8K(TaskFamily):
    name = TASK
    grader = "math"
    template = "gsm8k-qa-1"
    structured_keys = ("question",)

    def load(self, source: Path, shots: int = 5, **options: Any) -> LoadedSet:
        files = [p for p in files_in(source, "*.jsonl") if source.is_file() or p.name == "test.jsonl"]
        if not files:
            raise UserError(f"{source}: no test.jsonl in this directory")
        train = files[0].parent / "train.jsonl"
        pool_records = read_jsonl(train) if train.exists() and train not in files else []
        rows = []
        for path in files:
            records = read_jsonl(path)
            items = []
            for n, r in enumerate(records, 1):
                need(r, ("question", "answer"), f"{path}:{n}")
                items.append({"_key": n - 1, "question": r["question"], "answer": r["answer"], "gold": final_answer(r["answer"], f"{path}:{n}")})
            pool = [{"_key": None, "question": r["question"], "answer": r["answer"]} for r in pool_records[:shots]] or items
            split = path.stem
            for item in items:
                rows.append(
                    {
                        "sample_id": f"{TASK}.{split}-{item['_key']}",
                        "task": TASK,
                        "prompt": item["question"],
                        "gold": item["gold"],
                        "meta": {
                            "question": item["question"],
                            "solution": item["answer"],
                            "shots": [{"question": s["question"], "answer": s["answer"]} for s in pick_shots(pool, shots, item["_key"])],
                            "source": path.name,
                        },
                    }
                )
        return LoadedSet(pd.DataFrame(rows))

    def render_from_meta(self, meta: dict, shots: int) -> str:
        parts = [_qa(s["question"], s["answer"]) for s in exemplars(meta, shots)]
        return "\n\n".join([*parts, _qa(meta["question"])])

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        """A stored prompt whose last ``Question:`` (RouterBench's prompts follow exemplars) is this question."""
        keys = [prompt_match.canon(prompt_match.last_question(p)) for p in stored["prompt"]]
        wanted = [prompt_match.canon(m["question"]) if m.get("question") else "" for m in new["meta"]]
        return prompt_match.pair(new, wanted, stored, keys)

    def attach(self, new_row: Mapping, stored_row: Mapping) -> tuple[str | None, dict]:
        """Gold and the reference solution; the stored prompt keeps being sent as stored."""
        meta = {k: v for k, v in dict(new_row["meta"]).items() if k not in ("question", "shots", "source") and not k.startswith("_")}
        return new_row["gold"], {**parse_meta(stored_row.get("meta")), **meta, "gold_from": "gsm8k answer key, by question text"}
