"""RouterBench's split, recomputed literally from its recipe."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import UserError
from harness.families import task_families, task_family
from harness.splits import parse_split, routerbench_order
from harness.matrix import outcome_matrices


def test_routerbench_order_is_the_literal_recipe() -> None:
    rng = np.random.default_rng(3)
    ids = np.array([f"mbpp.dev.{i}" for i in rng.permutation(427)], dtype=object)
    literal = sorted(set(ids.tolist()))
    np.random.RandomState(42).shuffle(literal)
    assert ids[routerbench_order(ids)].tolist() == literal


def test_routerbench_split_is_70_30_and_disjoint(imported_store) -> None:
    matrices = outcome_matrices(imported_store)
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


def test_kfold_tests_every_prompt_once(imported_store) -> None:
    matrices = outcome_matrices(imported_store)
    folds = parse_split("kfold:5")("mbpp", matrices)
    assert len(folds) == 5
    tested = np.concatenate([f.test.sample_ids for f in folds])
    assert sorted(tested) == sorted(matrices["mbpp"].sample_ids)
    for f in folds:
        assert not set(f.train.sample_ids) & set(f.test.sample_ids) and f.train.n + f.test.n == 427
    with pytest.raises(UserError, match="kfold needs a number of folds"):
        parse_split("kfold:x")


def test_leave_task_out_trains_on_the_other_families(imported_store) -> None:
    matrices = outcome_matrices(imported_store)
    (fold,) = parse_split("leave-task-out")("mbpp", matrices)
    assert fold.test.n == 427 and fold.train.n == matrices["arc-challenge"].n + matrices["winogrande"].n
    assert not any(s.startswith("mbpp") for s in fold.train.sample_ids) and fold.train.family == "mbpp"


def test_split_from_file(imported_store, tmp_path) -> None:
    import json

    matrices = outcome_matrices(imported_store)
    ids = sorted(matrices["mbpp"].sample_ids)
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"mbpp": {"train": ids[:100], "test": ids[100:150]}}))
    (fold,) = parse_split(f"file:{path}")("mbpp", matrices)
    assert sorted(fold.train.sample_ids) == ids[:100] and sorted(fold.test.sample_ids) == ids[100:150]
    with pytest.raises(UserError, match="no split for task family 'winogrande'"):
        parse_split(f"file:{path}")("winogrande", matrices)
    path.write_text(json.dumps({"mbpp": {"train": ["nope"], "test": ids[:2]}}))
    with pytest.raises(UserError, match="1 train sample_id\\(s\\) of 'mbpp' are not in the store \\(nope\\)"):
        parse_split(f"file:{path}")("mbpp", matrices)
