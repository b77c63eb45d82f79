"""ARC-Challenge: the official JSONL (``question.stem``, ``question.choices``, ``answerKey``), or
RouterBench's rows with the gold letter recovered from its scores.

From the official files (SOURCE: a ``.jsonl`` file or a directory of them; the 5-shot exemplars are
the first items of the ``-Dev`` file when there is one): a question that RouterBench's prompts in
the store already hold — same stem, same choice texts — gets the gold letter *of RouterBench's
prompt*, found by the answer's text, since RouterBench lists the choices in another order than this
copy; the others are added as ``arc-challenge.<official id>``.
From RouterBench's files (CSV/pickle): see :mod:`harness.tasks.routerbench_source`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from harness.errors import UserError
from harness.grading.base import parse_meta
from harness.tasks import mc_format
from harness.tasks.base import LoadedSet, files_in, need, pick_shots, read_jsonl
from harness.tasks.multiple_choice import MultipleChoiceFamily, mc_meta
from harness.tasks.routerbench_source import gold_from_scores, is_routerbench_source


def _item(record: dict, where: str) -> dict:
    need(record, ("question", "answerKey"), where)
    q = record["question"]
    need(q, ("stem", "choices"), where)
    labels = [str(c["label"]) for c in q["choices"]]
    if str(record["answerKey"]) not in labels:
        raise UserError(f"{where}: answerKey {record['answerKey']!r} is not one of the choice labels {labels}")
    index = labels.index(str(record["answerKey"]))
    return {
        "_key": record.get("id"),
        "question": q["stem"],
        "choices": [str(c["text"]) for c in q["choices"]],
        "answer": mc_format.LETTERS[index],
    }


def _key(question: str, choices: list[str]) -> str:
    return mc_format.normalize(question) + "||" + "|".join(sorted(mc_format.normalize(c) for c in choices))


class ARCChallenge(MultipleChoiceFamily):
    name = "arc-challenge"

    def load(self, source: Path, shots: int = 5, **options: Any) -> LoadedSet:
        if is_routerbench_source(source):
            return gold_from_scores(source, self.name)
        files = files_in(source, "*.jsonl")
        items = {p: [_item(r, f"{p}:{n}") for n, r in enumerate(read_jsonl(p), 1)] for p in files}
        pool = next((v for p, v in items.items() if "dev" in p.name.lower()), next(iter(items.values())))
        rows = []
        for path, batch in items.items():
            for n, item in enumerate(batch, 1):
                if not item["_key"]:
                    raise UserError(f"{path}:{n}: missing field 'id'")
                rows.append(
                    {
                        "sample_id": f"{self.name}.{item['_key']}",
                        "task": self.name,
                        "prompt": mc_format.prompt(item["question"], item["choices"]),
                        "gold": item["answer"],
                        "meta": mc_meta(item["question"], item["choices"], item["answer"], pick_shots(pool, shots, item["_key"]), arc_id=item["_key"], source=path.name),
                    }
                )
        return LoadedSet(pd.DataFrame(rows))

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        keys: dict[str, list[str]] = {}
        for sid, prompt in zip(stored["sample_id"], stored["prompt"]):
            question, choices = mc_format.last_block(str(prompt))
            if choices:
                keys.setdefault(_key(question, list(choices.values())), []).append(sid)
        found = [keys.get(_key(m["question"], m["choices"]), []) if "question" in m else [] for m in new["meta"]]
        return pd.Series([f[0] if len(f) == 1 else pd.NA for f in found], index=new.index, dtype=object)

    def attach(self, new_row: Mapping, stored_row: Mapping) -> tuple[str | None, dict]:
        """The gold letter in the stored prompt's own choice order, found by the answer's text."""
        meta = dict(new_row["meta"])
        _, choices = mc_format.last_block(str(stored_row["prompt"]))
        letters: list[str] = []
        for fold in (False, True):  # "Cc or cc" and "CC or Cc" are different answers
            answer = mc_format.normalize(meta["answer_text"], fold)
            letters = letters or [x for x, text in choices.items() if mc_format.normalize(text, fold) == answer]
        extra = {"labels": "".join(choices), "answer_text": meta["answer_text"], "arc_id": meta.get("arc_id"), "gold_from": "arc-challenge answer key, by choice text"}
        return (letters[0] if len(letters) == 1 else None), {**parse_meta(stored_row.get("meta")), **extra}
