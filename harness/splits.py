"""Train/test splits of a task family's prompts.

A splitter gets the family to evaluate and every family's matrix and returns folds; each fold's
test prompts are routed by a router fitted on its training prompts. Folds of one family have
disjoint test sets, so pooling them gives one routing decision per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from harness.errors import UserError
from harness.matrix import OutcomeMatrix
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


def parse_split(spec: str) -> Splitter:
    """A splitter from ``name`` or ``name:argument`` (e.g. ``routerbench``, ``kfold:5``)."""
    name, _, arg = spec.partition(":")
    return SPLITS.get(name)(arg or None)


