"""HellaSwag validation text: 6 lines per item — context, gold label (0–3), the four endings.

Each item is a 4-way multiple-choice question in RouterBench's block format (context as the
question, endings as choices). There is no separate exemplar split in this file, so the k-shot
exemplars are the first k items (an item never serves as its own exemplar).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.tasks import mc_format
from harness.tasks.base import LoadedSet, files_in, pick_shots
from harness.tasks.multiple_choice import MultipleChoiceFamily, mc_meta

LINES_PER_ITEM = 6


def read_items(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(lines) % LINES_PER_ITEM:
        raise UserError(f"{path}: {len(lines)} lines is not a multiple of {LINES_PER_ITEM} (context, label, 4 endings)")
    items = []
    for i in range(0, len(lines), LINES_PER_ITEM):
        context, label, *endings = lines[i : i + LINES_PER_ITEM]
        if label.strip() not in {"0", "1", "2", "3"}:
            raise UserError(f"{path}:{i + 2}: gold label {label!r} is not 0-3")
        items.append({"_key": i // LINES_PER_ITEM, "question": context, "choices": endings, "answer": mc_format.LETTERS[int(label)]})
    return items


class HellaSwag(MultipleChoiceFamily):
    name = "hellaswag"

    def load(self, source: Path, shots: int = 5, **options: Any) -> LoadedSet:
        rows = []
        for path in files_in(source, "*.txt"):
            items = read_items(path)
            split = "val" if "val" in path.name else path.stem
            for item in items:
                rows.append(
                    {
                        "sample_id": f"hellaswag.{split}-{item['_key']}",
                        "task": "hellaswag",
                        "prompt": mc_format.prompt(item["question"], item["choices"]),
                        "gold": item["answer"],
                        "meta": mc_meta(item["question"], item["choices"], item["answer"], pick_shots(items, shots, item["_key"]), source=path.name),
                    }
                )
        return LoadedSet(pd.DataFrame(rows))
