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
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.tasks import mc_format
from harness.jsonl import read_jsonl
from harness.tasks.base import LoadedSet, files_in, need, pick_shots
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
