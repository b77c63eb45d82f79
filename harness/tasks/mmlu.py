"""MMLU: ``test/<subject>_test.csv`` questions, ``dev/<subject>_dev.csv`` as the 5-shot exemplars.

Files have the columns ``question, choice0..choice3, answer`` (answer = index 0–3). Each subject is
a task ``mmlu-<subject>`` (underscores become hyphens, as RouterBench names them) of the family
``mmlu``; sample_ids are ``mmlu-<subject>.test-<row>``. SOURCE is the directory holding ``test/``
and ``dev/`` (or the ``test/`` directory itself, with ``dev/`` beside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.tasks import mc_format
from harness.tasks.base import LoadedSet, files_in
from harness.tasks.multiple_choice import MultipleChoiceFamily, mc_meta

COLUMNS = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


def _read(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read as CSV ({exc})") from exc
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (MMLU needs {', '.join(COLUMNS)})")
    bad = ~df["answer"].isin(["0", "1", "2", "3"])
    if bad.any():
        raise UserError(f"{path}: row {int(bad.to_numpy().argmax()) + 2} has answer {df['answer'][bad].iloc[0]!r}; it must be 0-3")
    return df


def _items(df: pd.DataFrame) -> list[dict]:
    return [
        {"question": q, "choices": [c0, c1, c2, c3], "answer": mc_format.LETTERS[int(a)]}
        for q, c0, c1, c2, c3, a in df[COLUMNS].itertuples(index=False)
    ]


class MMLU(MultipleChoiceFamily):
    name = "mmlu"

    def load(self, source: Path, shots: int = 5, **options: Any) -> LoadedSet:
        test_dir = source / "test" if (source / "test").is_dir() else source
        dev_dir = test_dir.parent / "dev"
        rows, notes = [], []
        for path in files_in(test_dir, "*_test.csv"):
            subject = path.name[: -len("_test.csv")] if path.name.endswith("_test.csv") else path.stem
            dev_path = dev_dir / f"{subject}_dev.csv"
            dev = _items(_read(dev_path))[:shots] if dev_path.exists() else []
            if len(dev) < shots:
                notes.append(f"{subject}: {len(dev)} dev exemplars (of {shots})")
            task = f"mmlu-{subject.replace('_', '-')}"
            for i, item in enumerate(_items(_read(path))):
                rows.append(
                    {
                        "sample_id": f"{task}.test-{i}",
                        "task": task,
                        "prompt": mc_format.prompt(item["question"], item["choices"]),
                        "gold": item["answer"],
                        "meta": mc_meta(item["question"], item["choices"], item["answer"], dev, subject=subject, source=path.name),
                    }
                )
        return LoadedSet(pd.DataFrame(rows), notes)
