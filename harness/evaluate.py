"""Evaluate routers on stored outcomes: (task family × router setting) tasks on Ray, then points,
hulls and AIQ with bootstrap intervals per family.

Each family's folds are put in the object store once; every router setting is one Ray task that
fits on the training prompts and routes the test prompts; one task per family then turns all
routings into points and AIQ. ``parallel=False`` runs the same functions in this process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd

from harness import metrics
from harness.calibration import CalibrationResult, CalibrationTarget, calibrate_folds, parse_targets, supports_calibration
from harness.store import Store
from harness.errors import UserError
from harness.matrix import OutcomeMatrix, concat_matrices, outcome_matrices
from harness.ray_runtime import ensure_ray, node_id
from harness.splits import Fold, parse_split
from harness.embeddings import DEFAULT_EMBED_BACKEND, DEFAULT_EMBED_TEXT, DEFAULT_EMBEDDER, attach_features
from harness.model_config import load_model_configs
from routers import DEFAULT_ROUTERS, Router, Routing, RoutingOptions, build_routers

#: ``curve`` names the hull a point belongs to (the ``config`` of aiq.csv): the setting of a λ
#: sweep, or a cascade's error rate across its budgets.
POINT_COLUMNS = ["task_family", "router", "config", "lam", "cost", "quality", "curve"]
#: ``d_*``: ΔAIQ against the zero router, paired on each bootstrap resample; ``p_better``: the share
#: of resamples where the setting's AIQ exceeds the zero router's (ties count half); ``aiq_share``:
#: AIQ as a share of the oracle frontier's (the best any router could do), when it was evaluated.
AIQ_COLUMNS = ["task_family", "router", "config", "aiq", "aiq_lo", "aiq_hi", "d_aiq", "d_lo", "d_hi", "p_better", "aiq_share"]
ZERO = "zero"
FRONTIER = "oracle-frontier"


#: ``--parity NAME``: the settings of another tool's code, so that every point equals its own.
#: RouterBench's: list-price cost term, its AIQ range, the prompt string as stored, KNN neighbours as
#: sklearn returns them from the training rows in the split file's order, one MLP per model.
PARITY = {"routerbench": {"cost_model": "price", "aiq_mode": "compat", "embed_text": "original"}}


@dataclass(frozen=True)
class EvalSpec:
    routers: tuple[str, ...] = DEFAULT_ROUTERS
    families: tuple[str, ...] | None = None
    split: str = "routerbench"
    aiq_mode: str = "paper"
    bootstrap: int = 200
    seed: int = 0
    cost_model: str = "expected"
    embedder: str = DEFAULT_EMBEDDER
    embed_text: str = DEFAULT_EMBED_TEXT
    embed_backend: str = DEFAULT_EMBED_BACKEND
    models_dir: str | None = None  # model configs, for --cost-model price
    models: tuple[str, ...] | None = None  # the pool (default: per family, every model with outcomes there)
    parity: str | None = None  # a key of PARITY: its settings override the ones above
    target_costs: tuple[str, ...] = ()  # --target-cost USD: calibrate each λ router to a mean $ per query
    target_shares: tuple[str, ...] = ()  # --target-share MODEL:FRACTION

    def targets(self, models: tuple[str, ...] | None = None) -> tuple[CalibrationTarget, ...]:
        return parse_targets(self.target_costs, self.target_shares, models)

    def resolved(self) -> EvalSpec:
        """The spec with its parity preset applied."""
        if self.parity is None:
            return self
        if self.parity not in PARITY:
            raise UserError(f"--parity must be one of {', '.join(PARITY)}, not '{self.parity}'")
        return replace(self, **PARITY[self.parity])

    def routing_options(self) -> RoutingOptions:
        prices = {}
        if self.cost_model == "price":
            prices = {name: cfg.price.per_token for name, cfg in load_model_configs(self.models_dir).items()}
        return RoutingOptions(cost_model=self.cost_model, prices=prices, seed=self.seed, parity=self.parity)


@dataclass
class FamilyResult:
    family: str
    points: pd.DataFrame
    aiq: pd.DataFrame
    n_prompts: int
    n_train: int  # training prompts (summed over folds); routers with ``handles_missing`` fit on all of them
    n_test: int
    n_left_out: int  # test prompts without an outcome for every pool model
    partial: list[tuple[str, int]] = field(default_factory=list)  # pool models missing on some prompts: (model, prompts covered)
    n_train_complete: int | None = None  # training prompts with every outcome, what the other routers fit on
    complete_only: list[str] = field(default_factory=list)  # routers that fit on those alone, where that is fewer
    fill_in: str = ""  # where some models lack outcomes: the commands that fill them in (:func:`missing_outcomes`)

    @property
    def notes(self) -> list[str]:
        """One line for the family's report where some routers trained on fewer prompts than others."""
        if not self.complete_only:
            return []
        return [
            f"{', '.join(self.complete_only)} trained on {self.n_train_complete} of {self.n_train} training prompts "
            "(those with every model's outcome)"
        ]


PLACEMENT_COLUMNS = ["task_family", "router", "config", "node_id"]


@dataclass
class EvalResult:
    points: pd.DataFrame
    aiq: pd.DataFrame
    summary: pd.DataFrame
    families: list[FamilyResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # families without a prompt every pool model answered
    why_skipped: dict[str, str] = field(default_factory=dict)  # per skipped family: what is missing, what fills it in (:func:`missing_outcomes`)
    calibrated: list[CalibrationResult] = field(default_factory=list)  # with --target-cost/--target-share
    #: Where each routing task ran on Ray: ``task_family, router, config, node_id`` (empty when run without Ray).
    placement: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PLACEMENT_COLUMNS))


# ---------------------------------------------------------------------- per-task work
def complete_folds(folds: list[Fold]) -> tuple[list[Fold], int]:
    """Keep the test prompts that have an outcome for every model and count those left out;
    training prompts stay, missing entries masked (each router takes what it handles, :func:`route_folds`)."""
    kept, left_out = [], 0
    for f in folds:
        test_ok = f.test.complete_rows()
        left_out += int((~test_ok).sum())
        kept.append(Fold(f.train, f.test.take(test_ok)))
    return kept, left_out


def route_folds_placed(router: Router, folds: list[Fold]) -> tuple[Routing, str | None]:
    """:func:`route_folds` and the Ray node it ran on (a routing task's two returns)."""
    return route_folds(router, folds), node_id()


def route_folds(router: Router, folds: list[Fold]) -> Routing:
    """Fit on each fold's training prompts (the complete ones, unless the router handles missing
    entries), route its test prompts, pool the folds."""
    parts = []
    for fold in folds:
        router.fit(router.training_rows(fold.train))
        parts.append(router.route(fold.test))
    return Routing.concat_prompts(parts)


def _group_hulls(cost: np.ndarray, quality: np.ndarray, groups: list[np.ndarray]) -> list[metrics.Hull]:
    return [metrics.non_decreasing_hull(cost[g], quality[g]) for g in groups]


def _aiqs(cost: np.ndarray, quality: np.ndarray, groups: list[np.ndarray], llm: np.ndarray, mode: str) -> np.ndarray:
    """AIQ of every group's hull and (last) of the zero router, for one set of points."""
    hulls = _group_hulls(cost, quality, groups)
    hulls.append(metrics.zero_router(cost[llm], quality[llm]))
    lo, hi = metrics.aiq_range(mode, cost[llm], hulls)  # type: ignore[arg-type]
    return np.array([metrics.aiq(h, lo, hi) for h in hulls])


def summarise_family(family: str, test: OutcomeMatrix, spec: EvalSpec, *routings: Routing) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Points of every routing setting, and AIQ (with bootstrap interval) per router setting and for the zero router."""
    quality = np.concatenate([r.quality for r in routings])
    cost = np.concatenate([r.cost for r in routings])
    meta = pd.DataFrame(
        {
            "router": np.concatenate([[r.router] * len(r.configs) for r in routings]),
            "config": np.concatenate([r.configs for r in routings]),
            "lam": np.concatenate([r.lam for r in routings]),
            "curve": np.concatenate([r.curves for r in routings]),
        }
    )
    # One hull per (router, curve): a λ sweep of one setting, or a cascade's budgets at one error rate.
    by_setting = meta.groupby(["router", "curve"], sort=False).indices
    group_keys, groups = list(by_setting), list(by_setting.values())
    llm = np.flatnonzero(meta["router"].to_numpy() == "llm")

    c, q = metrics.points(quality, cost)
    pts = meta.assign(task_family=family, cost=c, quality=q)[POINT_COLUMNS]
    aiq = _aiqs(c, q, groups, llm, spec.aiq_mode)

    n_aiq = len(aiq)
    lo = hi = d_lo = d_hi = p_better = np.full(n_aiq, np.nan)
    if spec.bootstrap > 0 and test.n > 1:
        w = metrics.bootstrap_weights(test.n, spec.bootstrap, spec.seed)
        bc, bq = metrics.points(quality, cost, weights=w)
        samples = np.stack([_aiqs(bc[b], bq[b], groups, llm, spec.aiq_mode) for b in range(spec.bootstrap)])
        lo, hi = metrics.percentile_interval(samples)
        # Paired: each setting against the zero router (the last column) on the same resample.
        d_lo, d_hi, p_better = metrics.paired_difference(samples, samples[:, -1])

    names = [*group_keys, (ZERO, "")]
    routers = np.array([n[0] for n in names], dtype=object)
    frontier = aiq[routers == FRONTIER]
    aiq_df = pd.DataFrame(
        {
            "task_family": family,
            "router": routers,
            "config": [n[1] for n in names],
            "aiq": aiq,
            "aiq_lo": lo,
            "aiq_hi": hi,
            "d_aiq": aiq - aiq[-1],
            "d_lo": d_lo,
            "d_hi": d_hi,
            "p_better": p_better,
            "aiq_share": aiq / frontier[0] if len(frontier) and frontier[0] > 0 else np.nan,
        }
    )
    return pts, aiq_df


# ---------------------------------------------------------------------- orchestration
def _plugin_modules_by_value(specs: tuple[str, ...]) -> None:
    """Ship a user's plug-in module to Ray workers by value, so it need not be installed there."""
    from ray import cloudpickle

    for spec in specs:
        if ":" in spec:
            module = sys.modules.get(spec.split(":", 1)[0])
            if module is not None and not module.__name__.startswith(("routers", "harness")):
                cloudpickle.register_pickle_by_value(module)


def evaluate(
    store: Store,
    spec: EvalSpec,
    *,
    address: str | None = None,
    parallel: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    on_embed: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate ``spec.routers`` on every task family of ``store`` (or ``spec.families``).

    ``on_progress(done, total)`` follows the routing tasks, ``on_embed(done, total)`` the
    embedding of prompts not cached yet.
    """
    spec = spec.resolved()
    if spec.aiq_mode not in metrics.AIQ_MODES:
        raise UserError(f"--aiq-mode must be one of {', '.join(metrics.AIQ_MODES)}, not '{spec.aiq_mode}'")
    if store.is_empty():
        raise UserError(
            f"the store at {store.uri} holds no outcomes; import some first, e.g. "
            "`routerbench import ../shared/data/routerbench` (or pass --data SOURCE)"
        )
    targets = spec.targets()
    names = tuple(dict.fromkeys(("llm", *spec.routers)))
    options = spec.routing_options()
    routers = [r for name in names for r in build_routers(name, options)]
    splitter = parse_split(spec.split, keep_file_order=spec.parity is not None)
    needs_features = any(r.needs_features for r in routers)
    matrices = outcome_matrices(store, with_prompts=needs_features or any(r.needs_prompts for r in routers))
    families = list(spec.families) if spec.families else sorted(matrices)
    unknown = [f for f in families if f not in matrices]
    if unknown:
        raise UserError(f"unknown task famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; the store has {', '.join(sorted(matrices))}")
    if not getattr(splitter, "uses_other_families", False):
        matrices = {f: matrices[f] for f in families}
    matrices = choose_pools(matrices, spec.models, shared=getattr(splitter, "uses_other_families", False))
    for family in families:
        for t in targets:
            t.check_pool(matrices[family].models)
    if needs_features:
        matrices = attach_features(store, matrices, spec.embedder, spec.embed_text, on_embed, spec.embed_backend)

    prepared: dict[str, tuple[list[Fold], int]] = {}
    why_skipped: dict[str, str] = {}
    for family in families:
        # no graded outcome at all (served traffic before it is judged): a pool of no models, nothing to route to
        folds, left_out = complete_folds(splitter(family, matrices)) if matrices[family].m else ([], 0)
        if sum(f.test.n for f in folds) == 0:
            why_skipped[family] = missing_outcomes(store, family, spec.models).line()
            if spec.families:
                raise UserError(why_skipped[family])
            continue
        prepared[family] = (folds, left_out)
    skipped = list(why_skipped)
    if not prepared:
        raise UserError(f"no task family has test prompts with an outcome for every model of its pool ({', '.join(skipped)})")
    calibrated = [s for r in routers if supports_calibration(r) for s in r.settings()] if targets else []

    placement = pd.DataFrame(columns=PLACEMENT_COLUMNS)
    if parallel:
        summaries, calibrations, placement = _run_ray(prepared, routers, spec, address, on_progress, calibrated, targets)
    else:
        summaries = {
            fam: summarise_family(fam, concat_matrices([fold.test for fold in folds]), spec, *[route_folds(r, folds) for r in routers])
            for fam, (folds, _) in prepared.items()
        }
        calibrations = [c for folds, _ in prepared.values() for r in calibrated for c in calibrate_folds(r, folds, targets, mix=True)]

    complete_only = list(dict.fromkeys(r.name for r in routers if not r.handles_missing))
    results = []
    for family, (folds, left_out) in prepared.items():
        pts, aiq = summaries[family]
        n_train = sum(f.train.n for f in folds)
        n_complete = sum(int(f.train.complete_rows().sum()) for f in folds)
        partial = [(m, int(c)) for m, c in zip(matrices[family].models, matrices[family].coverage()) if c < matrices[family].n]
        results.append(
            FamilyResult(
                family,
                pts,
                aiq,
                n_prompts=matrices[family].n,
                n_train=n_train,
                n_test=sum(f.test.n for f in folds),
                n_left_out=left_out,
                partial=partial,
                n_train_complete=n_complete,
                complete_only=complete_only if n_complete < n_train else [],
                fill_in=missing_outcomes(store, family, spec.models).fill_in if partial else "",
            )
        )
    summary = pd.DataFrame(
        [
            {
                "task_family": r.family,
                "prompts": r.n_prompts,
                "train": r.n_train,
                "test": r.n_test,
                "left_out": r.n_left_out,
                "models": len(matrices[r.family].models),
            }
            for r in results
        ]
    )
    return EvalResult(
        points=pd.concat([r.points for r in results], ignore_index=True),
        aiq=pd.concat([r.aiq for r in results], ignore_index=True),
        summary=summary,
        families=results,
        skipped=skipped,
        why_skipped=why_skipped,
        calibrated=calibrations,
        placement=placement,
    )


@dataclass(frozen=True)
class Missing:
    """What keeps prompts of a family from a graded outcome of every model of its pool."""

    family: str
    pool: list[str]  # ``--models``, else every model with an outcome row there, graded or not
    per_model: str  # "a: 2 of 4 graded, 2 not answered; b: …"
    fill_in: str  # the commands that fill it in ("" when nothing is missing)

    def line(self) -> str:
        """The one line for a family that has no test prompt to evaluate on."""
        if not self.pool:
            return f"task family '{self.family}' has no outcome of any model: {self.fill_in}"
        return f"task family '{self.family}' has no test prompt with a graded outcome of every model ({', '.join(self.pool)}): {self.per_model}" + (
            f"; {self.fill_in}" if self.fill_in else ""
        )


def missing_outcomes(store: Store, family: str, models: tuple[str, ...] | None = None) -> Missing:
    """Per model of the pool, how many prompts of ``family`` it has graded, answered but not graded,
    and not answered, and the commands that fill them in (served traffic's with the judge,
    :mod:`harness.grading.judged`)."""
    from harness.grading.judged import judged_families

    prompts = store.prompts(["sample_id", "task_family", "gold", "meta"], families=[family])
    outcomes = store.outcomes(["sample_id", "model", "score", "error"], models=list(models) if models else None)  # not the responses: large
    outcomes = outcomes[outcomes["sample_id"].isin(prompts["sample_id"])]
    pool = list(models) if models else sorted(outcomes["model"].unique())
    graded = outcomes["score"].notna()
    ungraded = ~graded & ~outcomes["error"].fillna("").str.startswith("engine:")  # answered: a grader error, no gold, or never graded (served)
    counts = pd.DataFrame({"model": outcomes["model"], "graded": graded, "ungraded": ungraded}).groupby("model").sum().reindex(pool, fill_value=0)
    n = len(prompts)
    unanswered = n - counts["graded"] - counts["ungraded"]
    judge = " --judge model_configs/<judge>.yaml" if judged_families(prompts, store.families()) else ""
    extend = f"`routerbench extend --model <config>.yaml --tasks {family}{judge}`"
    if not pool:
        return Missing(family, pool, "", f"answer its {n} prompts with {extend} for each model of the pool")
    per_model = "; ".join(
        f"{m}: {g} of {n} graded" + (f", {u} answered but not graded" if u else "") + (f", {a} not answered" if a else "")
        for m, g, u, a in zip(pool, counts["graded"], counts["ungraded"], unanswered)
    )
    fixes = []
    if (unanswered > 0).any():
        fixes.append(f"answer them with {extend} for {', '.join(m for m, a in zip(pool, unanswered) if a)}")
    if (counts["ungraded"] > 0).any():
        fixes.append(f"grade the answers with `routerbench regrade --family {family}{judge}`")
    return Missing(family, pool, per_model, "; ".join(fixes))


def choose_pools(matrices: dict[str, OutcomeMatrix], models: tuple[str, ...] | None, shared: bool) -> dict[str, OutcomeMatrix]:
    """Each family's model pool: ``models`` if given, else the models with outcomes in that family
    (in every family, when a split trains across families)."""
    if models:
        out = {}
        for fam, m in matrices.items():
            idx = m.model_index(list(models))
            if (idx < 0).any():
                raise UserError(f"--models: {', '.join(np.asarray(models)[idx < 0])} not in the store (it has {', '.join(m.models)})")
            out[fam] = m.with_models(idx)
        return out
    present = {fam: m.coverage() > 0 for fam, m in matrices.items()}
    if shared:
        everywhere = np.logical_and.reduce(list(present.values()))
        present = {fam: everywhere for fam in matrices}
    return {fam: m.with_models(np.flatnonzero(present[fam])) for fam, m in matrices.items()}


def _run_ray(
    prepared: dict[str, tuple[list[Fold], int]],
    routers: list[Router],
    spec: EvalSpec,
    address: str | None,
    on_progress: Callable[[int, int], None] | None,
    calibrated: list[Router],
    targets: tuple[CalibrationTarget, ...],
) -> tuple[dict[str, tuple[pd.DataFrame, pd.DataFrame]], list[CalibrationResult], pd.DataFrame]:
    """Routing tasks (and calibrations) spread over the cluster's nodes; returns each family's
    summary, the calibrations and where each routing task ran."""
    import ray
    from ray.exceptions import RayTaskError

    ensure_ray(address)
    _plugin_modules_by_value(spec.routers)
    # SPREAD: the routers' fits are the CPU-heavy part; on one node it changes nothing.
    route_task = ray.remote(num_returns=2, scheduling_strategy="SPREAD")(route_folds_placed)
    summary_task = ray.remote(summarise_family)
    calibrate_task = ray.remote(scheduling_strategy="SPREAD")(calibrate_folds)
    all_refs: list[Any] = []
    summary_refs, calibration_refs, node_refs = {}, [], []
    for family, (folds, _) in prepared.items():
        folds_ref = ray.put(folds)
        routing_refs, where = zip(*[route_task.remote(r, folds_ref) for r in routers])
        node_refs += [(family, r.name, r.label, ref) for r, ref in zip(routers, where)]
        calibration_refs += [calibrate_task.remote(r, folds_ref, targets, mix=True) for r in calibrated]
        # Top-level ObjectRef arguments reach the task as values; the driver never holds the routings.
        summary_refs[family] = summary_task.remote(family, ray.put(concat_matrices([f.test for f in folds])), spec, *routing_refs)
        all_refs += routing_refs
    all_refs += list(summary_refs.values()) + calibration_refs
    pending, done = list(all_refs), 0
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)  # surface a task's error as soon as it happens
            done += len(ready)
            if on_progress:
                on_progress(done, len(all_refs))
    except RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise
    placement = pd.DataFrame([(*names, ray.get(ref)) for *names, ref in node_refs], columns=PLACEMENT_COLUMNS)
    return {f: ray.get(ref) for f, ref in summary_refs.items()}, [c for ref in calibration_refs for c in ray.get(ref)], placement
