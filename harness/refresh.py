"""Keep the store fresh without re-asking models what they already answered.

* ``regrade``: outcomes whose grader version is not the current one (or whose grading failed) are
  graded again from their stored responses — no model calls.
* ``reprice``: outcomes of token-priced models whose cost no longer matches the config's prices
  are re-costed from their stored token counts — no model calls.
* ``refresh``: for every model config, answer what is missing (new prompts, a new model) or stale
  (its config hash changed), then regrade and reprice. Imported outcomes (RouterBench's, no config
  hash and no grader of ours) are left as they were published.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from harness.dataset import Store
from harness.grading import build_grader
from harness.grading.code_exec import UNSAFE_SUFFIX
from harness.model_config import ModelConfig, load_model_configs
from harness.pipeline import ExtendReport, ExtendSpec, Progress, extend, grade_batch
from harness.tasks import family_of

COST_TOLERANCE = 1e-12


@dataclass
class MaintenanceReport:
    regraded: dict[str, int] = field(default_factory=dict)
    repriced: dict[str, int] = field(default_factory=dict)
    extended: dict[str, ExtendReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # model → why


def current_graders(rows: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row, the grader its family uses now and that grader's ``name@version`` (None for the
    MT-Bench judge, whose version names the judge model: only a run with ``--judge`` can tell)."""
    names = pd.Series([family_of(r).grader_for(r) for r in rows.to_dict("records")], index=rows.index, dtype=object)
    ids = {name: None if name == "mtbench-judge" else build_grader(str(name)).id for name in names.unique()}
    return names, names.map(ids)


def stale_grades(store: Store, models: list[str] | None = None, unsafe_sandbox: bool = False) -> pd.DataFrame:
    """Outcomes with a response whose grade is out of date: another grader version, or a grading
    error. Grades from the weaker sandbox (``+unsafe-sandbox``) are stale, except to a run that
    itself grades there, which would only give the same grade again."""
    outcomes = store.outcomes(["sample_id", "model", "response", "score", "cost_usd", "input_tokens", "output_tokens", "latency_s", "grader", "config_hash", "error"], models=models)
    ours = outcomes["grader"].notna() | outcomes["error"].fillna("").str.startswith(("grader:", "gold:"))
    answered = outcomes["response"].notna() & ~outcomes["error"].fillna("").str.startswith("engine:")
    candidates = outcomes[ours & answered]
    if candidates.empty:
        return candidates.assign(prompt=None, gold=None, meta=None, task_family=None, task=None, grader_name=None)
    prompts = store.prompts(["sample_id", "task", "task_family", "prompt", "gold", "meta"])
    rows = candidates.merge(prompts, on="sample_id", how="inner")
    names, current = current_graders(rows)
    failed = rows["error"].fillna("").str.startswith(("grader:", "gold:"))
    current_here = current + UNSAFE_SUFFIX if unsafe_sandbox else current
    same = (rows["grader"] == current) | (rows["grader"] == current_here)
    stale = (current.notna() & (~same | failed)).to_numpy()
    return rows.assign(grader_name=names)[stale].reset_index(drop=True)


def regrade(store: Store, models: list[str] | None = None, judge: str | None = None, chunk: int = 512, unsafe_sandbox: bool = False) -> dict[str, int]:
    """Grade stale outcomes again from their stored responses; returns regraded counts per model."""
    rows = stale_grades(store, models, unsafe_sandbox)
    counts: dict[str, int] = {}
    for start in range(0, len(rows), chunk):
        part = rows.iloc[start : start + chunk].rename(columns={"grader": "old_grader", "grader_name": "grader"})
        graded = grade_batch(part.assign(error=None), judge=judge, unsafe_sandbox=unsafe_sandbox)
        out = graded[["sample_id", "model", "response", "score", "cost_usd", "input_tokens", "output_tokens", "latency_s", "config_hash", "error"]].assign(
            grader=graded["grader_id"]
        )
        store.append(outcomes=out, overwrite=True, source="regrade")
        for model, n in out["model"].value_counts().items():
            counts[str(model)] = counts.get(str(model), 0) + int(n)
    return counts


def reprice(store: Store, configs: dict[str, ModelConfig]) -> tuple[dict[str, int], dict[str, str]]:
    """Re-cost outcomes of token-priced models from their stored usage; self-hosted models are
    priced by device time, which the store does not keep, so they are reported as skipped."""
    counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    models = [m for m in store.models() if m in configs]
    for model in models:
        config = configs[model]
        if config.self_hosted:
            skipped[model] = "self-hosted: costed by device time, not tokens"
            continue
        out = store.outcomes(models=[model])
        known = out["input_tokens"].notna() & out["output_tokens"].notna()
        if not known.any():
            continue
        new = (
            out.loc[known, "input_tokens"].to_numpy(float) * config.price.input_per_mtok
            + out.loc[known, "output_tokens"].to_numpy(float) * config.price.output_per_mtok
        ) / 1e6 + config.price.per_request
        old = out.loc[known, "cost_usd"].to_numpy(float)
        changed = ~np.isclose(new, old, rtol=0, atol=COST_TOLERANCE) | np.isnan(old)
        if not changed.any():
            continue
        rows = out.loc[known].loc[changed].assign(cost_usd=new[changed])
        store.append(outcomes=rows.drop(columns=["created_at"]), overwrite=True, source=f"reprice {model}")
        counts[model] = int(changed.sum())
    return counts, skipped


def missing_key(config: ModelConfig) -> str | None:
    """Why this model cannot be called here (its key's variable is unset), or None."""
    if config.api_key_env and not os.environ.get(config.api_key_env):
        return f"{config.api_key_env} is not set"
    return None


def refresh(
    store: Store,
    models_dir: str | None = None,
    spec: ExtendSpec = ExtendSpec(),
    *,
    address: str | None = None,
    on_model: Callable[[str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> MaintenanceReport:
    """Answer missing and stale prompts for every config in ``models_dir``, then regrade and reprice."""
    configs = load_model_configs(models_dir)
    report = MaintenanceReport()
    for name, config in configs.items():
        why = missing_key(config)
        if why:
            report.skipped[name] = why
            continue
        if on_model:
            on_model(name)
        report.extended[name] = extend(store, config, spec, address=address, on_progress=on_progress)
    report.regraded = regrade(store, judge=spec.judge, unsafe_sandbox=spec.unsafe_sandbox)  # type: ignore[arg-type]
    report.repriced, skipped = reprice(store, configs)
    for model, why in skipped.items():
        report.skipped.setdefault(model, why)
    return report
