"""MBPP (sanitized): ``task_id, prompt, code, test_imports, test_list``; graded by running the tests.

Each problem's gold answer is its test program (``test_imports`` and the asserts). New outcomes use
MBPP's standard prompt, which shows the tests (and so the function name they call)::

    You are an expert Python programmer, and here is your task: <text> Your code should pass these tests:

    assert f(...) == ...

k-shot exemplars are problems of MBPP's few-shot split (task ids 1–10), each followed by
``[BEGIN] <code> [DONE]`` as in the original paper. RouterBench's own MBPP prompts (the bare text)
already in the store are matched by text and get the tests and this prompt format attached; the
few texts two problems share are paired in order, and the import says so.
"""

from __future__ import annotations

import ast
import builtins
import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.tasks import mc_format
from harness.tasks.base import LoadedSet, TaskFamily, exemplars, files_in, need

FEW_SHOT_TASK_IDS = range(1, 11)
_BUILTINS = set(dir(builtins))


def entry_point(test: str) -> str | None:
    """The function a test calls: the first called name that is not a builtin (``set(f(x)) == …`` → f)."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in _BUILTINS:
            return node.func.id
    return None


def standard_prompt(text: str, tests: list[str]) -> str:
    return f"You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n" + "\n".join(tests)


class MBPP(TaskFamily):
    name = "mbpp"
    grader = "code-exec"
    template = "mbpp-standard-1"
    structured_keys = ("text", "tests")

    def load(self, source: Path, shots: int = 5, **options: Any) -> LoadedSet:
        path = files_in(source, "*.json")[0]
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot read as JSON ({exc})") from exc
        if not isinstance(records, list):
            raise UserError(f"{path}: expected a JSON list of problems")
        problems = []
        for n, r in enumerate(records):
            need(r, ("task_id", "prompt", "test_list"), f"{path}: problem {n}")
            problems.append(r)
        pool = [p for p in problems if p["task_id"] in FEW_SHOT_TASK_IDS]
        rows = []
        for p in problems:
            tests, imports = list(p["test_list"]), list(p.get("test_imports") or [])
            shot_items = [q for q in pool if q["task_id"] != p["task_id"]][:shots]
            rows.append(
                {
                    "sample_id": f"mbpp.task-{p['task_id']}",
                    "task": "mbpp",
                    "prompt": standard_prompt(p["prompt"], tests),
                    "gold": "\n".join([*imports, *tests]),
                    "meta": {
                        "text": p["prompt"],
                        "tests": tests,
                        "test_imports": imports,
                        "entry_point": entry_point(tests[0]) if tests else None,
                        "task_id": p["task_id"],
                        "reference_code": p.get("code"),
                        "shots": [{"text": q["prompt"], "tests": q["test_list"], "code": q.get("code", "")} for q in shot_items],
                        "source": path.name,
                    },
                }
            )
        return LoadedSet(pd.DataFrame(rows))

    def render_from_meta(self, meta: dict, shots: int) -> str:
        parts = [standard_prompt(s["text"], s["tests"]) + f"\n[BEGIN]\n{s['code']}\n[DONE]" for s in exemplars(meta, shots)]
        return "\n\n".join([*parts, standard_prompt(meta["text"], meta["tests"])])

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        by_text: dict[str, list[str]] = {}
        for sid, prompt in sorted(zip(stored["sample_id"], stored["prompt"]), key=lambda t: _natural(t[0])):
            by_text.setdefault(mc_format.normalize(prompt), []).append(sid)
        order = sorted(new.index, key=lambda i: new.at[i, "meta"]["task_id"])
        used: dict[str, int] = {}
        out = pd.Series(pd.NA, index=new.index, dtype=object)
        for i in order:
            text = mc_format.normalize(new.at[i, "meta"]["text"])
            candidates = by_text.get(text, [])
            k = used.get(text, 0)
            if k < len(candidates):
                out[i] = candidates[k]
                used[text] = k + 1
                if len(candidates) > 1:
                    new.at[i, "meta"]["match"] = f"text shared by {len(candidates)} problems; paired in order"
        return out


def _natural(sample_id: str) -> tuple:
    head, _, tail = sample_id.rpartition(".")
    return (head, int(tail)) if tail.isdigit() else (head, 0, tail)
