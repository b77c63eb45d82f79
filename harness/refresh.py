"""Keep the store fresh without re-asking models what they already answered.

* ``regrade``: outcomes whose grader version is not the current one (or whose grading failed) are
  graded again from their stored responses by the grader rebuilt from their stored id — no model
  calls, but for a judge, which only a run given its model's config can rebuild. ``--family F``:
  only F's outcomes, and those never graded too (served traffic, which the judge grades:
  :mod:`harness.grading.judged`).
* ``reprice``: outcomes of token-priced models whose cost no longer matches the config's prices
  are re-costed from their stored token counts — no model calls.
* ``refresh``: for every model config, answer what is missing (new prompts, a new model) or stale
  (its config hash changed), then regrade (the families named, ``--tasks``, with their never-graded
  answers: served traffic's) and reprice. Imported outcomes (RouterBench's, no config
  hash and no grader of ours) are left as they were published. A config that fails to load is
  reported (``MaintenanceReport.broken``) and the others are refreshed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from harness.errors import UserError
from harness.store import Store
from harness.grading import prepare_options, regrade_options
from harness.grading.judged import with_judge
from harness.model_config import ModelConfig, scan_model_configs
from harness.extend import ExtendReport, ExtendSpec, Progress, extend, grade_batch
from harness.tasks import resolve

COST_TOLERANCE = 1e-12


@dataclass
class MaintenanceReport:
    regraded: dict[str, int] = field(default_factory=dict)
    repriced: dict[str, int] = field(default_factory=dict)
    extended: dict[str, ExtendReport] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # model → why
    broken: dict[str, str] = field(default_factory=dict)  # config file → why it did not load


def _grader_names(rows: pd.DataFrame, families: Mapping) -> list[str]:
    """Each prompt row's grader now (its family's, or the one the row or its family's settings name); meta parsed once per row."""
    names = []
    for row in rows[["task_family", "meta"]].to_dict("records"):
        fam, meta = resolve(row, families)
        names.append(fam.grader_for({**row, "meta": meta}))
    return names


#: What a regrade reads of an outcome and writes back (its cost's source and time too: nothing is lost).
REGRADE_COLUMNS = ["sample_id", "model", "response", "score", "cost_usd", "cost_source", "input_tokens", "output_tokens", "latency_s", "config_hash", "error", "created_at"]
PROMPT_COLUMNS = ["sample_id", "task", "task_family", "prompt", "gold", "meta"]


def stale_grades(
    store: Store, models: list[str] | None = None, grader_options: Mapping[str, Any] | None = None, families: Mapping | None = None, family: str | None = None
) -> pd.DataFrame:
    """Outcomes with a response whose grade is out of date and that this run can grade again (see
    :func:`harness.grading.regrade_options`), with ``grader_name`` (their family's grader) and
    ``grade_with`` (the options that rebuild it). Grades from the weaker sandbox are stale, except to
    a run that itself grades there; a judge's are regraded only by a run given its model's config.
    ``family``: only that task family's outcomes, those never graded (served traffic: a config hash,
    no grader, no score, no error) included."""
    outcomes = store.outcomes([*REGRADE_COLUMNS, "grader"], models=models)
    ours = outcomes["grader"].notna() | outcomes["error"].fillna("").str.startswith(("grader:", "gold:"))
    prompts = None
    if family is not None:
        prompts = store.prompts(PROMPT_COLUMNS, families=[family])
        in_family = outcomes["sample_id"].isin(prompts["sample_id"]).to_numpy()
        ungraded = outcomes["config_hash"].notna() & outcomes["score"].isna() & outcomes["error"].isna()
        outcomes, ours = outcomes[in_family], (ours | ungraded)[in_family]
    answered = outcomes["response"].notna() & ~outcomes["error"].fillna("").str.startswith("engine:")
    candidates = outcomes[ours & answered]
    if candidates.empty:
        return candidates.assign(prompt=None, gold=None, meta=None, task_family=None, task=None, grader_name=None, grade_with=None)
    rows = candidates.merge(store.prompts(PROMPT_COLUMNS) if prompts is None else prompts, on="sample_id", how="inner")
    keys = list(
        zip(
            [g if isinstance(g, str) else None for g in rows["grader"]],
            _grader_names(rows, store.families() if families is None else families),
            rows["error"].fillna("").str.startswith(("grader:", "gold:")),
        )
    )
    plans = {(stored, name, failed): regrade_options(stored, name, grader_options or {}, bool(failed)) for stored, name, failed in set(keys)}
    grade_with = pd.Series([plans[k] for k in keys], index=rows.index, dtype=object)
    stale = grade_with.notna().to_numpy()
    return rows.assign(grader_name=[k[1] for k in keys], grade_with=grade_with)[stale].reset_index(drop=True)


class Regraded(dict):
    """Outcomes graded again, per model; ``failed``: of those, per model, the ones still without a
    grade (a grader error, e.g. the judge's engine failing: recorded, and retried by a later run)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: dict[str, int] = {}


def regrade(
    store: Store,
    models: list[str] | None = None,
    *,
    grader_options: Mapping[str, Any] | None = None,
    chunk: int = 512,
    family: str | None = None,
) -> Regraded:
    """Grade stale outcomes again from their stored responses; returns regraded counts per model.
    ``grader_options`` are the run's (``{"judge": path, "unsafe_sandbox": True}``). ``family``: only
    that task family's outcomes, ungraded ones too; served traffic is graded by the judge
    (:func:`harness.grading.judged.with_judge`)."""
    families = store.families()  # read once: grader names, then their settings
    if family is not None:
        prompts = store.prompts(["task_family", "gold", "meta"], families=[family])
        if prompts.empty:
            known = sorted(store.prompts(["task_family"])["task_family"].unique())
            raise UserError(f"--family {family}: no prompts of that task family in {store.uri} (it has: {', '.join(known) or 'none'})")
        families = with_judge(store, prompts, [family], families, grader_options or {}, flag="--family")
    rows = stale_grades(store, models, dict(grader_options or {}), families, family)
    counts = Regraded()
    tags = rows["grade_with"].map(lambda o: "+".join(o.tags()))
    for (name, _), group in rows.groupby([rows["grader_name"], tags], sort=True):
        # keys read and this machine checked (bubblewrap for code) once per grader, before its outcomes are written
        record = prepare_options([str(name)], dict(group["grade_with"].iloc[0]))
        for start in range(0, len(group), chunk):
            part = group.iloc[start : start + chunk].rename(columns={"grader": "old_grader", "grader_name": "grader"})
            graded = grade_batch(part.assign(error=None), options=record, families=families)
            out = graded[REGRADE_COLUMNS].assign(grader=graded["grader_id"])
            store.append(outcomes=out, overwrite=True, source="regrade")
            for model, n in out["model"].value_counts().items():
                counts[str(model)] = counts.get(str(model), 0) + int(n)
            for model, n in out.loc[out["score"].isna(), "model"].value_counts().items():
                counts.failed[str(model)] = counts.failed.get(str(model), 0) + int(n)
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
        new = config.price.cost(out.loc[known, "input_tokens"].to_numpy(float), out.loc[known, "output_tokens"].to_numpy(float))  # vectorised
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
    """Answer missing and stale prompts for every config in ``models_dir``, then regrade and reprice.
    Served traffic is refreshed only when ``spec.families`` names it (with a judge among ``spec.grader_options``)."""
    configs, broken = scan_model_configs(models_dir)
    report = MaintenanceReport(broken=broken)
    for name, config in configs.items():
        why = missing_key(config)
        if why:
            report.skipped[name] = why
            continue
        if on_model:
            on_model(name)
        report.extended[name] = extend(store, config, spec, address=address, on_progress=on_progress)
    report.regraded = regrade(store, grader_options=spec.grader_options)
    for family in spec.families or ():  # a named family's never-graded answers too: served traffic's, by the judge
        for model, n in regrade(store, grader_options=spec.grader_options, family=family).items():
            report.regraded[model] = report.regraded.get(model, 0) + n
    report.repriced, skipped = reprice(store, configs)
    for model, why in skipped.items():
        report.skipped.setdefault(model, why)
    return report
