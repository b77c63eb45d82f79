"""Task → task family: the unit that routers are trained and evaluated on.

RouterBench names tasks like ``mmlu-astronomy`` or ``arc-challenge``; a family groups the tasks of
one benchmark (all 57 MMLU subjects are one family), as its evaluation code does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FAMILY_PREFIXES = (
    "grade-school-math",
    "hellaswag",
    "mmlu",
    "arc-challenge",
    "mbpp",
    "winogrande",
    "mtbench",
)


#: Other sets' task names for benchmarks RouterBench has, so their prompts join RouterBench's families.
TASK_ALIASES = {
    "gsm8k": "grade-school-math",
    "arc_challenge": "arc-challenge",
    "arc-c": "arc-challenge",
    "mt_bench": "mtbench",
    "mt-bench": "mtbench",
    "human_eval": "humaneval",
}


def canonical_task(name: str) -> str:
    """Another set's task name in RouterBench's spelling: aliases above, else ``_`` → ``-`` and lower
    case (``MMLU_formal_logic`` → ``mmlu-formal-logic``, family ``mmlu``)."""
    key = name.strip()
    if key.lower() in TASK_ALIASES:
        return TASK_ALIASES[key.lower()]
    return key.lower().replace("_", "-").replace(" ", "-")


def task_family(task: str) -> str:
    """The first known prefix that ``task`` starts with, else ``task`` itself."""
    return next((p for p in FAMILY_PREFIXES if task.startswith(p)), task)


def task_families(tasks: pd.Series) -> pd.Series:
    """Vectorised :func:`task_family` over a column of task names."""
    tasks = tasks.astype(str)
    family = tasks.copy()
    matched = np.zeros(len(tasks), dtype=bool)
    for prefix in FAMILY_PREFIXES:
        hit = ~matched & tasks.str.startswith(prefix).to_numpy()
        family[hit] = prefix
        matched |= hit
    return family
