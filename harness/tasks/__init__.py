"""Benchmark prompt sets with gold answers: one task family per module, registered by name.

``TASKS.get("mmlu").load(path)`` reads a public prompt set; :func:`import_prompts` writes it into
the store (attaching gold answers to RouterBench's prompts already there); ``family.render(row,
shots)`` gives a stored prompt's chat messages for generation and ``family.grader_for(row)`` the
grader to score the answers.
"""

from __future__ import annotations

from typing import Mapping

from harness.grading.base import parse_meta
from harness.registry import Registry
from harness.tasks.base import LoadedSet, TaskFamily

TASKS: Registry = Registry("task family")
TASKS.add("grade-school-math", "harness.tasks.gsm8k:GSM8K")
TASKS.add("mbpp", "harness.tasks.mbpp:MBPP")
TASKS.add("mmlu", "harness.tasks.mmlu:MMLU")
TASKS.add("hellaswag", "harness.tasks.hellaswag:HellaSwag")
TASKS.add("arc-challenge", "harness.tasks.arc:ARCChallenge")
TASKS.add("winogrande", "harness.tasks.winogrande:Winogrande")
TASKS.add("mtbench", "harness.tasks.mtbench:MTBench")
TASKS.add("humaneval", "harness.tasks.humaneval:HumanEval")
TASKS.add("generic", "harness.tasks.generic:Generic")


def get_family(name: str) -> TaskFamily:
    """The task family registered as ``name`` (an instance)."""
    return TASKS.get(name)()  # type: ignore[operator]


def family_of(row: Mapping) -> TaskFamily:
    """The family that renders and grades a stored prompt row: its ``meta["family"]``, else its task family."""
    name = parse_meta(row.get("meta")).get("family") or row.get("task_family")
    return get_family(str(name)) if name in TASKS else get_family("generic")


def turns_of(row: Mapping) -> int:
    """How many user turns a stored prompt has (MT-Bench: 2), from its structured ``meta``."""
    turns = parse_meta(row.get("meta")).get("turns")
    return len(turns) if isinstance(turns, list) else 1


def import_prompts(*args, **kwargs):  # noqa: ANN002, ANN003 - re-exported lazily to avoid an import cycle
    from harness.tasks.importer import import_prompts as run

    return run(*args, **kwargs)


__all__ = ["TASKS", "LoadedSet", "TaskFamily", "family_of", "get_family", "import_prompts", "turns_of"]
