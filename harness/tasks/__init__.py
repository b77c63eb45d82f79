"""Benchmark prompt sets with gold answers: one task family per module or YAML file, registered by name.

The multiple-choice families (MMLU, ARC, HellaSwag, Winogrande) are data: one YAML file each in
``families/`` (:mod:`harness.tasks.declared`), every file there registered under its name; the
others are code. ``get_family("mmlu").load(path)`` reads a public prompt set;
:func:`harness.tasks.prompt_import.import_prompts` writes it into the store (attaching gold answers
to RouterBench's prompts already there); ``family.render(row, shots)`` gives a stored prompt's chat
messages for generation and ``family.grader_for(row)`` the grader to score the answers.
"""

from __future__ import annotations

import json
from typing import Mapping

from harness.prompt_meta import FamilySettings, parse_meta
from harness.registry import Registry
from harness.tasks.base import LoadedSet, TaskFamily
from harness.tasks.declared import declared_families

TASKS: Registry = Registry("task family")
TASKS.add("grade-school-math", "harness.tasks.gsm8k:GSM8K")
TASKS.add("mbpp", "harness.tasks.mbpp:MBPP")
for _name, _family in declared_families().items():  # mmlu, hellaswag, arc-challenge, winogrande
    TASKS.add(_name, _family)
TASKS.add("mtbench", "harness.tasks.mtbench:MTBench")
TASKS.add("humaneval", "harness.tasks.humaneval:HumanEval")
TASKS.add("generic", "harness.tasks.generic:Generic")


def get_family(name: str) -> TaskFamily:
    """The task family registered as ``name`` (an instance)."""
    return TASKS.get(name)()  # type: ignore[operator]


def family_of(row: Mapping) -> TaskFamily:
    """The family that renders and grades a prompt row: a work row's ``family``, else its
    ``meta["family"]``, else its task family."""
    name = str(row.get("family") or parse_meta(row.get("meta")).get("family") or row.get("task_family"))
    if name not in TASKS and name.replace("-", "") in TASKS:  # RouterBench's "mt-bench" spelling
        name = name.replace("-", "")
    return get_family(name) if name in TASKS else get_family("generic")


def resolve(row: Mapping, families: Mapping[str, FamilySettings] | None = None) -> tuple[TaskFamily, dict]:
    """A stored prompt row's family and its ``meta`` parsed once, with what its task family keeps in
    the store's families table (``families``) as defaults: the row then reads as it was imported."""
    meta = parse_meta(row.get("meta"))
    settings = (families or {}).get(str(row.get("task_family")))
    if settings is not None:
        meta = settings.defaults(meta)
    return family_of({**row, "meta": meta}), meta


def turn_texts(row: Mapping) -> list[str] | None:
    """The user turns of a multi-turn prompt, or None for a single-turn one.

    ``meta["turns"]`` is the list of turns for MT-Bench's own files, but a *count* for rows from
    RouterBench's wide layout, whose prompt is then the JSON list of the turns (MT-Bench rows only).
    """
    turns = parse_meta(row.get("meta")).get("turns")
    if isinstance(turns, list):
        return [str(t) for t in turns]
    text = row.get("prompt")
    # other RouterBench list cells (e.g. an instruction and an input) keep going as one message
    if isinstance(turns, int) and turns > 1 and isinstance(text, str) and text.startswith("[") and family_of(row).name == "mtbench":
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if isinstance(doc, list) and len(doc) > 1 and all(isinstance(t, str) for t in doc):
            return doc
    return None


def turns_of(row: Mapping) -> int:
    """How many user turns a stored prompt has (MT-Bench: 2)."""
    turns = turn_texts(row)
    return len(turns) if turns else 1


__all__ = ["TASKS", "LoadedSet", "TaskFamily", "family_of", "get_family", "resolve", "turn_texts", "turns_of"]
