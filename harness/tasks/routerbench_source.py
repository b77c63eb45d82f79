"""Read a RouterBench wide-layout source (CSV/pickle files or a directory of them) for one family."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.store import Store
from harness.errors import UserError
from harness.outcome_import import load_sources
from harness.tasks.base import LoadedSet
from harness.tasks.routerbench_gold import derive_gold, summarize

SUFFIXES = (".csv", ".pkl", ".pickle", ".parquet")


def is_routerbench_source(source: Path) -> bool:
    """A RouterBench file, or a directory with RouterBench files and no JSONL."""
    if source.is_file():
        return source.suffix.lower() in SUFFIXES
    return source.is_dir() and any(p.suffix.lower() in SUFFIXES for p in source.iterdir()) and not any(source.glob("*.jsonl"))


def read_family(source: Path, family: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prompts (as the store imports them: same sample_ids, ambiguous ids skipped) and outcomes of one family."""
    batch = load_sources([str(source)])
    prompts = batch.prompts[batch.prompts["task_family"] == family].reset_index(drop=True)
    outcomes = batch.outcomes[batch.outcomes["sample_id"].isin(prompts["sample_id"])]
    return prompts, outcomes


def gold_from_scores(source: Path, family: str) -> LoadedSet:
    """RouterBench's prompts of ``family`` with the gold letter its scores imply (see routerbench_gold)."""
    return _with_gold(*read_family(source, family))


def gold_from_store(store: Store, family: str) -> LoadedSet:
    """The same, from a store's prompts of ``family`` that have stored responses with scores."""
    prompts = store.prompts(["sample_id", "task", "task_family", "prompt", "prompt_original"], families=[family])
    outcomes = store.outcomes(["sample_id", "model", "response", "score"])
    outcomes = outcomes[outcomes["sample_id"].isin(prompts["sample_id"]) & outcomes["response"].notna()]
    prompts = prompts[prompts["sample_id"].isin(outcomes["sample_id"])].reset_index(drop=True)
    if prompts.empty:
        raise UserError(f"{store.uri}: no {family} prompts with stored responses and scores to derive gold answers from")
    return _with_gold(prompts, outcomes)


def _with_gold(prompts: pd.DataFrame, outcomes: pd.DataFrame) -> LoadedSet:
    derived = derive_gold(prompts, outcomes).set_index("sample_id")
    metas = [
        {
            "labels": derived.at[sid, "labels"],
            "gold_from": f"routerbench-scores:{derived.at[sid, 'status']}",
            "gold_votes": int(derived.at[sid, "votes"]),
        }
        for sid in prompts["sample_id"]
    ]
    rows = pd.DataFrame(
        {
            "sample_id": prompts["sample_id"],
            "task": prompts["task"],
            "prompt": prompts["prompt"],
            "prompt_original": prompts["prompt_original"],
            "gold": derived.loc[prompts["sample_id"], "gold"].to_numpy(dtype=object),
            "meta": metas,
        }
    )
    counts = summarize(derived.reset_index())
    note = (
        f"gold letters from RouterBench's scores: {counts['consistent']} consistent, {counts['elimination']} by elimination, "
        f"{counts['conflict']} conflicting, {counts['undetermined']} undetermined (of {len(rows)} prompts)"
    )
    return LoadedSet(rows, [note])
