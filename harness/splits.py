"""Train/test splits of a task family's prompts.

A splitter gets the family to evaluate and every family's matrix and returns folds; each fold's
test prompts are routed by a router fitted on its training prompts. Folds of one family have
disjoint test sets, so pooling them gives one routing decision per prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.matrix import OutcomeMatrix, concat_matrices
from harness.registry import Registry

ROUTERBENCH_SEED = 42
ROUTERBENCH_TRAIN_FRACTION = 0.7


@dataclass(frozen=True)
class Fold:
    train: OutcomeMatrix
    test: OutcomeMatrix


Splitter = Callable[[str, dict[str, OutcomeMatrix]], list[Fold]]
#: name → factory(argument or None) → Splitter
SPLITS: Registry = Registry("split")


def routerbench_order(sample_ids: np.ndarray, seed: int = ROUTERBENCH_SEED) -> np.ndarray:
    """Row indices in RouterBench's shuffled order: ``ids = sorted(unique ids)``,
    ``numpy.random.RandomState(seed).shuffle(ids)``."""
    ids = np.asarray(sample_ids, dtype=object)
    by_id = np.argsort(ids, kind="stable")  # rows in sorted sample_id order
    perm = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(perm)  # the same permutation that shuffling the id list gives
    return by_id[perm]


def routerbench_split(family: str, matrices: dict[str, OutcomeMatrix]) -> list[Fold]:
    """RouterBench's split: seed 42 shuffle of the sorted unique sample_ids, first 70 % train."""
    m = matrices[family]
    order = routerbench_order(m.sample_ids)
    cut = int(ROUTERBENCH_TRAIN_FRACTION * len(order))
    return [Fold(m.take(np.sort(order[:cut])), m.take(np.sort(order[cut:])))]


@SPLITS.register("routerbench")
def _routerbench(arg: str | None) -> Splitter:
    if arg:
        raise UserError(f"split 'routerbench' takes no argument (got '{arg}')")
    return routerbench_split


@SPLITS.register("kfold")
def _kfold(arg: str | None) -> Splitter:
    """K folds of the seed-42 shuffled ids (every prompt is tested once)."""
    try:
        k = int(arg or "")
    except ValueError:
        raise UserError(f"split kfold needs a number of folds, e.g. kfold:5 (got '{arg}')") from None
    if k < 2:
        raise UserError(f"split kfold needs at least 2 folds (got {k})")

    def kfold_split(family: str, matrices: dict[str, OutcomeMatrix]) -> list[Fold]:
        m = matrices[family]
        if m.n < k:
            raise UserError(f"task family '{family}' has {m.n} prompts, fewer than the {k} folds asked for")
        parts = np.array_split(routerbench_order(m.sample_ids), k)
        return [
            Fold(m.take(np.sort(np.concatenate(parts[:i] + parts[i + 1 :]))), m.take(np.sort(part)))
            for i, part in enumerate(parts)
        ]

    return kfold_split


@SPLITS.register("leave-task-out")
def _leave_task_out(arg: str | None) -> Splitter:
    """Train on every other family, test on all of this one: does routing transfer across tasks?"""
    if arg:
        raise UserError(f"split 'leave-task-out' takes no argument (got '{arg}')")

    def leave_task_out(family: str, matrices: dict[str, OutcomeMatrix]) -> list[Fold]:
        others = [matrices[f] for f in sorted(matrices) if f != family]
        if not others:
            raise UserError(f"leave-task-out needs another task family to train on than '{family}'")
        return [Fold(concat_matrices(others, family=family), matrices[family])]

    leave_task_out.uses_other_families = True  # type: ignore[attr-defined]
    return leave_task_out


@SPLITS.register("file")
def _from_file(arg: str | None) -> Splitter:
    """A published split: JSON ``{task_family: {"train": [sample_id…], "test": [sample_id…]}}``.

    Training rows come in sorted sample_id order; the splitter's ``in_file_order`` variant keeps the
    order the file lists them: where embeddings tie, which neighbours sklearn returns depends on the
    row order, and another tool's code keeps its data frame's (``--parity``)."""
    if not arg:
        raise UserError("split file needs a path, e.g. file:splits.json")
    try:
        doc = json.loads(Path(arg).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{arg}: cannot read split file ({exc})") from exc
    if not isinstance(doc, dict):
        raise UserError(f"{arg}: a split file maps task families to {{'train': [...], 'test': [...]}}")
    for family, parts in doc.items():
        if not isinstance(parts, dict) or not {"train", "test"} <= set(parts):
            raise UserError(f"{arg}: family '{family}' needs 'train' and 'test' lists of sample_ids")

    def file_split(family: str, matrices: dict[str, OutcomeMatrix], keep_file_order: bool = False) -> list[Fold]:
        if family not in doc:
            raise UserError(f"{arg}: no split for task family '{family}' (it has {', '.join(sorted(doc))})")
        m = matrices[family]
        index = pd.Index(m.sample_ids)
        rows = []
        for part in ("train", "test"):
            at = index.get_indexer(pd.Index(doc[family][part]).astype(str))
            if (at < 0).any():
                unknown = np.asarray(doc[family][part], dtype=object)[at < 0]
                raise UserError(f"{arg}: {len(unknown)} {part} sample_id(s) of '{family}' are not in the store ({', '.join(map(str, unknown[:3]))})")
            # parity keeps both parts in the file's order: RouterBench routes its test rows in that order,
            # and where neighbours tie only up to the last bit, which ones a query gets depends on its row
            rows.append(at if keep_file_order else np.sort(at))
        if np.intersect1d(rows[0], rows[1]).size:
            raise UserError(f"{arg}: train and test of '{family}' share sample_ids")
        return [Fold(m.take(rows[0]), m.take(rows[1]))]

    file_split.in_file_order = lambda family, matrices: file_split(family, matrices, keep_file_order=True)  # type: ignore[attr-defined]
    return file_split


def parse_split(spec: str, keep_file_order: bool = False) -> Splitter:
    """A splitter from ``name`` or ``name:argument`` (e.g. ``routerbench``, ``kfold:5``); with
    ``keep_file_order``, a split read from a file keeps its rows (training and test) in the file's order."""
    name, _, arg = spec.partition(":")
    splitter = SPLITS.get(name)(arg or None)
    return getattr(splitter, "in_file_order", splitter) if keep_file_order else splitter


