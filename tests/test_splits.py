"""RouterBench's split, recomputed literally from its recipe."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import UserError
from harness.families import task_families, task_family
from harness.splits import parse_split, routerbench_order


def test_routerbench_order_is_the_literal_recipe() -> None:
    rng = np.random.default_rng(3)
    ids = np.array([f"mbpp.dev.{i}" for i in rng.permutation(427)], dtype=object)
    literal = sorted(set(ids.tolist()))
    np.random.RandomState(42).shuffle(literal)
    assert ids[routerbench_order(ids)].tolist() == literal


def test_routerbench_split_is_70_30_and_disjoint(imported_store) -> None:
    matrices = imported_store.matrices()
    (fold,) = parse_split("routerbench")("mbpp", matrices)
    assert (fold.train.n, fold.test.n) == (int(0.7 * 427), 427 - int(0.7 * 427))
    assert not set(fold.train.sample_ids) & set(fold.test.sample_ids)
    ids = sorted(matrices["mbpp"].sample_ids.tolist())
    np.random.RandomState(42).shuffle(ids)
    assert sorted(fold.test.sample_ids.tolist()) == sorted(ids[int(0.7 * 427) :])


def test_unknown_split_is_an_error() -> None:
    with pytest.raises(UserError, match="Unknown split 'nope'"):
        parse_split("nope")
    with pytest.raises(UserError, match="takes no argument"):
        parse_split("routerbench:3")


def test_task_families() -> None:
    import pandas as pd

    tasks = ["mmlu-astronomy", "grade-school-math", "hellaswag", "arc-challenge", "mbpp", "winogrande", "mtbench", "consensus_summary"]
    expected = ["mmlu", "grade-school-math", "hellaswag", "arc-challenge", "mbpp", "winogrande", "mtbench", "consensus_summary"]
    assert [task_family(t) for t in tasks] == expected
    assert task_families(pd.Series(tasks)).tolist() == expected
