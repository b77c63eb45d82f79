"""The multiple-choice families (MMLU, ARC, HellaSwag, Winogrande): one class, driven by each
family's YAML (:mod:`harness.tasks.declared`).

``load`` reads the declared files into records, maps their fields to a question, its choices and
the gold letter, picks the k exemplars, and names tasks and sample_ids; ``render_from_meta`` is
RouterBench's block format (:mod:`harness.tasks.mc_format`); ``match`` and ``attach`` find the
same questions among RouterBench's prompts in the store and give them the gold letter in their own
choice order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.prompt_meta import parse_meta
from harness.jsonl import read_jsonl
from harness.registry import load_object
from harness.tasks import mc_format, prompt_match
from harness.tasks.base import (
    LoadedSet,
    TaskFamily,
    exemplars,
    files_in,
    need,
    pick_shots,
)
from harness.tasks.declared import FamilySpec, placeholders
from harness.tasks.routerbench_source import gold_from_scores, is_routerbench_source

#: ``meta`` keys of a loaded row that stay out of a stored prompt it attaches to: with them the
#: stored RouterBench prompt would be rendered anew instead of sent as RouterBench sent it.
_RENDERING_KEYS = ("question", "choices", "labels", "shots", "answer_text", "source")


class MultipleChoiceFamily(TaskFamily):
    def __init__(self, spec: FamilySpec) -> None:
        self.spec = spec
        self.name, self.grader, self.template = spec.name, spec.grader, spec.template
        # RouterBench-only families have no structured rows: their prompts are always sent as stored
        self.structured_keys = ("question", "choices") if spec.structured else ()

    def load(self, source: Path, shots: int | None = None, **options: Any) -> LoadedSet:
        src = self.spec.source
        if src.format == "routerbench" or (src.routerbench and is_routerbench_source(source)):
            if not is_routerbench_source(source):
                raise UserError(f"{source}: {self.name} reads RouterBench's wide files (CSV/pickle or their directory)")
            return gold_from_scores(source, self.name)
        k = self.spec.exemplars.k if shots is None else shots
        folder = source / src.folder if src.folder and (source / src.folder).is_dir() else source
        items = {path: self._items(path) for path in files_in(folder, src.files)}
        named = self.spec.exemplars.file_named
        pool = next((v for p, v in items.items() if named.lower() in p.name.lower()), next(iter(items.values()))) if named else None
        rows, notes = [], []
        for path, batch in items.items():
            names = self._file_names(path)
            task = self.spec.names.task.format(**{n: v.replace("_", "-") for n, v in names.items()})  # type: ignore[union-attr]
            beside = self._beside(path, names, k, notes) if self.spec.exemplars.file else None
            for item in batch:
                values = {**names, "n": item["_n"], "id": item["_key"], "task": task}
                shots_of = beside if beside is not None else pick_shots(pool if pool is not None else batch, k, item["_key"])
                rows.append(
                    {
                        "sample_id": self.spec.names.sample_id.format(**values),  # type: ignore[union-attr]
                        "task": task,
                        "prompt": mc_format.prompt(item["question"], item["choices"]),
                        "gold": item["answer"],
                        "meta": mc_meta(item["question"], item["choices"], item["answer"], shots_of, **_formatted(self.spec.meta, values)),
                    }
                )
        return LoadedSet(pd.DataFrame(rows), notes)

    def _items(self, path: Path) -> list[dict]:
        """The questions of one file: ``question``, ``choices``, ``answer`` letter, ``_key``, ``_n``."""
        fields = self.spec.fields
        assert fields is not None  # a structured family has fields (declared.FamilySpec)
        out = []
        for n, (record, where) in enumerate(self._records(path)):
            need(record, tuple(fields.columns), where)
            choices, labels = self._choices(record, where)
            answer = _answer(self.spec.answer, _get(record, fields.answer, where), len(choices), labels, fields.answer, where)
            key = _get(record, fields.id, where) if fields.id else (path.name, n)  # what keeps a question out of its own shots
            if not key:
                raise UserError(f"{where}: missing field '{fields.id}'")
            out.append({"_key": key, "_n": n, "question": _get(record, fields.question, where), "choices": choices, "answer": answer})
        return out

    def _records(self, path: Path) -> list[tuple[dict, str]]:
        """A file's records, each with where it is (for messages)."""
        src = self.spec.source
        if src.reader:
            try:
                reader: Callable[[Path], list[dict]] = load_object(src.reader)  # type: ignore[assignment]
            except UserError as exc:
                raise UserError(f"{self.spec.path}: field 'source.reader': {exc}") from None
            return [(r, f"{path}: item {n}") for n, r in enumerate(reader(path), 1)]
        if src.format == "jsonl":
            return [(r, f"{path}:{n}") for n, r in enumerate(read_jsonl(path), 1)]
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read as CSV ({exc})") from exc
        columns = self.spec.fields.columns  # type: ignore[union-attr]
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} ({self.name} needs {', '.join(columns)})")
        return [(r, f"{path}: row {i + 2}") for i, r in enumerate(df.to_dict("records"))]

    def _choices(self, record: dict, where: str) -> tuple[list[str], list[str]]:
        """The choice texts and their labels (the labels only where the fields name them)."""
        fields = self.spec.fields
        assert fields is not None
        if isinstance(fields.choices, list):
            return [str(_get(record, f, where)) for f in fields.choices], []
        listed = _get(record, fields.choices, where)
        if not isinstance(listed, list):
            raise UserError(f"{where}: field '{fields.choices}' is not a list of choices")
        if len(listed) > len(mc_format.LETTERS):
            raise UserError(f"{where}: {len(listed)} choices in '{fields.choices}'; at most {len(mc_format.LETTERS)} have letters")
        texts = [str(_get(c, fields.choice_text, where) if fields.choice_text else c) for c in listed]
        labels = [str(_get(c, fields.choice_label, where)) for c in listed] if fields.choice_label else []
        return texts, labels

    def _file_names(self, path: Path) -> dict[str, str]:
        """A file's placeholders: ``file``, ``stem`` and the named groups of ``names.file`` (else the stem)."""
        names = {"file": path.name, "stem": path.stem}
        pattern = self.spec.names.file  # type: ignore[union-attr]
        if pattern:
            rx = re.compile(pattern)
            m = rx.search(path.name)
            names.update({g: (m.group(g) if m and m.group(g) is not None else path.stem) for g in rx.groupindex})
        return names

    def _beside(self, path: Path, names: dict[str, str], k: int, notes: list[str]) -> list[dict]:
        """The first k items of the exemplar file beside ``path`` (a note when there are fewer)."""
        rel = self.spec.exemplars.file.format(**names)  # type: ignore[union-attr]
        other = path.parent / rel
        found = self._items(other)[:k] if other.is_file() else []
        if len(found) < k:
            notes.append(f"{path.name}: {len(found)} exemplars (of {k}) in {rel}{'' if other.is_file() else ' (no such file)'}")
        return found

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        """A stored prompt whose last question has the same text (up to case, spacing, punctuation,
        or a lead-in one copy adds) and the same choices in any order."""
        return prompt_match.match_multiple_choice(new, stored)

    def attach(self, new_row: Mapping, stored_row: Mapping) -> tuple[str | None, dict]:
        """The gold letter in the stored prompt's own choice order, found by the answer's text."""
        meta = dict(new_row["meta"])
        parsed = prompt_match.parse_mc(stored_row["prompt"])
        choices = parsed[1] if parsed else {}
        letters = prompt_match.letters_for(meta.get("answer_text"), choices)
        extra = {k: v for k, v in meta.items() if k not in _RENDERING_KEYS and not k.startswith("_")}
        extra.update(labels="".join(choices), answer_text=meta.get("answer_text"), gold_from=f"{self.name} answer key, by choice text")
        return (letters[0] if len(letters) == 1 else None), {**parse_meta(stored_row.get("meta")), **extra}

    def render_from_meta(self, meta: dict, shots: int) -> str:
        return mc_format.prompt(meta["question"], list(meta["choices"]), exemplars(meta, shots))


def _get(record: Any, path: str, where: str) -> Any:
    """The value at a dotted field path (``question.stem``); a missing one is an error naming it."""
    value = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            raise UserError(f"{where}: missing field '{path}'")
        value = value[part]
    return value


def _answer(kind: str, value: Any, choices: int, labels: list[str], field: str, where: str) -> str:
    """The gold letter of a record's answer field: a choice's index (0-based), letter, or label."""
    letters = mc_format.LETTERS[:choices]
    if kind == "label":
        if str(value) not in labels:
            raise UserError(f"{where}: {field} {value!r} is not one of the choice labels {labels}")
        return letters[labels.index(str(value))]
    text = str(value).strip()
    if kind == "letter":
        if len(text) != 1 or text.upper() not in letters:
            raise UserError(f"{where} has {field} {value!r}; it must be one of {', '.join(letters)}")
        return text.upper()
    if text not in [str(i) for i in range(choices)]:
        raise UserError(f"{where} has {field} {value!r}; it must be 0-{choices - 1}")
    return letters[int(text)]


def _formatted(templates: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """``meta`` templates filled in; a template that is one placeholder keeps the value's type."""
    out: dict[str, Any] = {}
    for key, template in templates.items():
        names = placeholders(template)
        out[key] = values[names[0]] if names and template == "{" + names[0] + "}" else template.format(**values)
    return out


def mc_meta(question: str, choices: list[str], answer: str | None, shots: list[dict], **extra: object) -> dict:
    """The ``meta`` of a multiple-choice row: what rendering and grading need."""
    return {
        "question": question,
        "choices": list(choices),
        "labels": mc_format.LETTERS[: len(choices)],
        "shots": [{"question": s["question"], "choices": list(s["choices"]), "answer": s["answer"]} for s in shots],
        **extra,
        **({"answer_text": choices[mc_format.LETTERS.index(answer)]} if answer else {}),
    }
