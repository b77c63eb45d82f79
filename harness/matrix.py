"""The prompts × models view of one task family that routers and metrics work on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the store reads tables; this module only shapes what it reads
    from harness.store import StoreReader


@dataclass(frozen=True)
class OutcomeMatrix:
    """Scores and costs of every model on every prompt of a task family.

    ``scores[i, j]`` / ``costs[i, j]`` belong to ``sample_ids[i]`` and ``models[j]``; NaN marks a
    missing outcome (not every model answered every prompt), and :attr:`observed` is the mask of the
    entries that have both. Rows are in sorted ``sample_id`` order, models in store order (sorted names).
    """

    family: str
    sample_ids: np.ndarray
    tasks: np.ndarray
    models: tuple[str, ...]
    scores: np.ndarray
    costs: np.ndarray
    prompts: np.ndarray | None = None
    prompts_original: np.ndarray | None = None
    features: np.ndarray | None = None  # (n, d) prompt embeddings, when a router needs them

    @property
    def n(self) -> int:
        return len(self.sample_ids)

    @property
    def m(self) -> int:
        return len(self.models)

    @property
    def observed(self) -> np.ndarray:
        """(n, M) boolean mask of the outcomes that exist: a score and a cost."""
        return ~(np.isnan(self.scores) | np.isnan(self.costs))

    def complete_rows(self) -> np.ndarray:
        """Boolean mask of the prompts that have an outcome for every model."""
        return self.observed.all(axis=1)

    def take(self, rows: np.ndarray) -> OutcomeMatrix:
        """The sub-matrix of the given rows (indices or boolean mask)."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return replace(
            self,
            sample_ids=self.sample_ids[rows],
            tasks=self.tasks[rows],
            scores=self.scores[rows],
            costs=self.costs[rows],
            prompts=pick(self.prompts),
            prompts_original=pick(self.prompts_original),
            features=pick(self.features),
        )

    def with_models(self, keep: np.ndarray | list[int]) -> OutcomeMatrix:
        """The matrix restricted to the model columns ``keep`` (indices, in that order)."""
        keep = np.asarray(keep, dtype=np.int64)
        return replace(self, models=tuple(self.models[i] for i in keep), scores=self.scores[:, keep], costs=self.costs[:, keep])

    def coverage(self) -> np.ndarray:
        """Per model, how many prompts have its outcome."""
        return self.observed.sum(axis=0)

    def model_index(self, names: list[str] | np.ndarray) -> np.ndarray:
        """Column indices of model names; -1 for names not in the pool."""
        return pd.Index(self.models).get_indexer(np.asarray(names, dtype=object)).astype(np.int64)


def concat_matrices(parts: list[OutcomeMatrix], family: str | None = None) -> OutcomeMatrix:
    """Rows of several matrices over the same model pool, one after another."""
    first = parts[0]
    if len(parts) == 1 and family is None:
        return first
    if any(p.models != first.models for p in parts):
        raise ValueError("matrices with different model pools cannot be concatenated")

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    return OutcomeMatrix(
        family=family or first.family,
        sample_ids=cat("sample_ids"),
        tasks=cat("tasks"),
        models=first.models,
        scores=cat("scores"),
        costs=cat("costs"),
        prompts=cat("prompts"),
        prompts_original=cat("prompts_original"),
        features=cat("features"),
    )

def outcome_matrices(
    store: StoreReader,
    families: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    with_prompts: bool = False,
) -> dict[str, OutcomeMatrix]:
    """Score and cost matrices (prompts × models) per task family of a store, in one vectorised pivot."""
    pcols = ["sample_id", "task", "task_family"] + (["prompt", "prompt_original"] if with_prompts else [])
    prompts = store.prompts(pcols, families=families).sort_values("sample_id", ignore_index=True)
    pool = list(models) if models is not None else store.models()
    outcomes = store.outcomes(["sample_id", "model", "score", "cost_usd"], models=pool)
    outcomes = outcomes[outcomes["score"].notna()]
    rows = pd.Index(prompts["sample_id"]).get_indexer(outcomes["sample_id"])
    cols = pd.Index(pool).get_indexer(outcomes["model"])
    keep = (rows >= 0) & (cols >= 0)
    shape = (len(prompts), len(pool))
    scores = np.full(shape, np.nan)
    costs = np.full(shape, np.nan)
    scores[rows[keep], cols[keep]] = outcomes["score"].to_numpy(dtype=float)[keep]
    costs[rows[keep], cols[keep]] = outcomes["cost_usd"].to_numpy(dtype=float)[keep]

    result: dict[str, OutcomeMatrix] = {}
    for family, idx in prompts.groupby("task_family", sort=True).indices.items():
        p = prompts.iloc[idx]
        result[str(family)] = OutcomeMatrix(
            family=str(family),
            sample_ids=p["sample_id"].to_numpy(dtype=object),
            tasks=p["task"].to_numpy(dtype=object),
            models=tuple(pool),
            scores=scores[idx],
            costs=costs[idx],
            prompts=p["prompt"].to_numpy(dtype=object) if with_prompts else None,
            prompts_original=p["prompt_original"].to_numpy(dtype=object) if with_prompts else None,
        )
    return result
