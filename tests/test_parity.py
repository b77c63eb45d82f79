"""``--parity routerbench``: RouterBench's own code (bench/routerbench_port.py, its algorithm line by
line) and ours give the same points on a published split, also where every embedding ties."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import routerbench_port as port
from harness.store import Store
from harness.embeddings import attach_features, prompt_texts
from harness.errors import UserError
from harness.evaluate import EvalSpec, evaluate
from harness.outcome_import import to_wide
from harness.matrix import OutcomeMatrix, outcome_matrices
from harness.model_config import load_model_configs
from harness.splits import parse_split, routerbench_order
from routers import ROUTERBENCH_LAMBDAS

# With RouterBench's original prompt string every ARC-Challenge prompt embeds to one vector (the
# shared 5-shot exemplars fill the 256 tokens): every neighbour ties, the hardest case for parity.
FAMILY = "arc-challenge"
KS = (5, 10, 40)


@pytest.fixture(scope="module")
def published_split(imported_store: Store, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A split file listing the training ids in RouterBench's shuffled order (its data frame's)."""
    ids = outcome_matrices(imported_store)[FAMILY].sample_ids
    order = routerbench_order(ids)
    cut = int(0.7 * len(order))
    train, test = ids[order[:cut]], ids[order[cut:]]
    path = tmp_path_factory.mktemp("split") / "split.json"
    path.write_text(json.dumps({FAMILY: {"train": train.tolist(), "test": test.tolist()}}))
    return path, train, test


def routerbench_points(store: Store, train_ids: np.ndarray, test_ids: np.ndarray, k: int) -> pd.DataFrame:
    """RouterBench's KNN router as its code runs it: (λ, cost, quality) on the test prompts."""
    m = attach_features(store, {FAMILY: outcome_matrices(store, with_prompts=True)[FAMILY]}, embed_text="original")[FAMILY]
    texts = prompt_texts(m, "original")
    embeddings = dict(zip(texts, np.asarray(m.features, dtype=np.float64)))
    wide = to_wide(store).set_index("sample_id", drop=False)
    wide["prompt"] = pd.Series(texts, index=m.sample_ids)
    train, test = wide.loc[train_ids].reset_index(drop=True), wide.loc[test_ids].reset_index(drop=True)
    models = list(m.models)
    prices = {name: cfg.price.per_token for name, cfg in load_model_configs(None).items()}
    router = port.PortKNNRouter(train, models, embeddings, {x: prices[x] for x in models}, n_neighbors=k)
    scores, costs = test[models].to_numpy(float), test[[f"{x}|total_cost" for x in models]].to_numpy(float)
    rows = []
    for lam in ROUTERBENCH_LAMBDAS:
        chosen = pd.Index(models).get_indexer(router.batch_route_prompts(test["prompt"].values, willingness_to_pay=lam))
        at = np.arange(len(test))
        rows.append({"lam": lam, "cost": costs[at, chosen].mean(), "quality": scores[at, chosen].mean()})
    return pd.DataFrame(rows)


def knn_points(result, k: int) -> pd.DataFrame:
    p = result.points
    return p[(p["router"] == "knn") & (p["config"] == f"k={k},metric=cosine")].sort_values("lam")[["lam", "cost", "quality"]].reset_index(drop=True)


def test_parity_reproduces_routerbench_knn_where_every_neighbour_ties(imported_store: Store, published_split) -> None:
    path, train, test = published_split
    spec = EvalSpec(routers=("llm", "knn"), families=(FAMILY,), split=f"file:{path}", bootstrap=0)
    parity = evaluate(imported_store, replace(spec, parity="routerbench"), parallel=False)
    ours = evaluate(imported_store, replace(spec, embed_text="original"), parallel=False)
    differs = 0
    for k in KS:
        theirs = routerbench_points(imported_store, train, test, k)
        got = knn_points(parity, k)
        np.testing.assert_array_equal(got["quality"].to_numpy(), theirs["quality"].to_numpy(), err_msg=f"k={k}")
        np.testing.assert_allclose(got["cost"].to_numpy(), theirs["cost"].to_numpy(), rtol=1e-12, err_msg=f"k={k}")
        # without parity every tied neighbour counts, and the points are not RouterBench's
        differs += int((knn_points(ours, k)["quality"].to_numpy() != theirs["quality"].to_numpy()).sum())
    assert differs > 0


def test_parity_sets_routerbench_options_and_keeps_the_split_files_order(published_split) -> None:
    spec = EvalSpec(split="file:x", parity="routerbench").resolved()
    assert (spec.cost_model, spec.aiq_mode, spec.embed_text) == ("price", "compat", "original")
    assert spec.routing_options().parity == "routerbench"
    path, train, test = published_split
    ids = np.sort(np.concatenate([train, test]))
    n = len(ids)
    m = OutcomeMatrix(FAMILY, ids, np.array([FAMILY] * n, dtype=object), ("a",), np.zeros((n, 1)), np.zeros((n, 1)))
    kept = parse_split(f"file:{path}", keep_file_order=True)(FAMILY, {FAMILY: m})[0]
    assert kept.train.sample_ids.tolist() == train.tolist() and kept.test.sample_ids.tolist() == test.tolist()
    assert parse_split(f"file:{path}")(FAMILY, {FAMILY: m})[0].train.sample_ids.tolist() == sorted(train.tolist())


def test_unknown_parity_is_a_one_line_error() -> None:
    with pytest.raises(UserError, match="--parity must be one of routerbench, not 'routellm'"):
        EvalSpec(parity="routellm").resolved()
