"""Extend the store with a model: prompts → generate → grade → append, as a Ray Data pipeline.

1. **Plan** (driver): the store's prompts of the families asked for (the first ``limit`` of each in
   sorted sample_id order), minus those this model already answered under the same config hash
   (model, sampling, chat and prompt template). Engine failures and stale answers are redone; a
   rerun of an interrupted run does only what is missing. Served traffic (``routerbench serve``'s
   family: no gold, no task family of its own) is answered only when named, asked as it was served
   (the model's served answers are kept) and graded by the LLM judge (:mod:`harness.grading.judged`).
2. **Generate** (an actor holding the model's engine, :class:`harness.answering.Answerer`, the
   path ``generate`` takes too): each family renders its prompts (0- or k-shot); multi-turn
   prompts are answered turn by turn. The engine brings its own parallelism:
   vLLM replicas on GPUs, API callers sharing a rate limiter, a llama.cpp server.
3. **Grade** (tasks, ``map_batches``): each row's family names its grader, built with the run's
   grader options (``spec.grader_options``: each grader takes those it declares). The graders
   declare where they run (code: on nodes with the custom ``sandbox`` resource) and whether their
   workers must hold no API key. An engine failure skips grading; a grader error or missing gold
   is recorded as the outcome's ``error``, never a 0.
4. **Append** (driver): graded rows are committed every ``commit_every`` rows, each commit atomic,
   so a killed run loses at most the rows since the last commit and a rerun fills them in. A Ray
   node or worker lost mid-run (Ray's own errors, :func:`harness.ray_runtime.lost_with_a_node`)
   fails the pipeline; the run commits what came back, re-plans the rest and goes on, up to
   ``lost_node_retries`` times: only what was in flight there is asked again.

The report says where the work ran: per prompt, the Ray node that answered and the one that graded
it (``placement``, ``--placement-log``), and per kind of node the node-seconds the run used and,
for a self-hosted model, the device cost they imply (:meth:`ExtendReport.node_usage`).

Everything that can be checked before Ray starts is (:func:`preflight`): the model's key variable
and those of the model configs among the grader options (read once, here, and carried to the
engines with their configs) and, when grading runs on this machine, each grader's own check
(bubblewrap for code).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from harness.answering import Answerer, work_rows
from harness.errors import RunStopped, UserError, first_line
from harness.grading import family_settings, grade_frame, grader_class, make_grader, prepare_options
from harness.grading.judge import served_conversation
from harness.grading.judged import judged_families, with_judge
from harness.model_config import ModelConfig
from harness.prompt_meta import FamilySettings
from harness.ray_runtime import ensure_ray, joins_cluster, keyless_runtime_env, lost_with_a_node, node_id, node_seconds
from harness.store import Store


@dataclass(frozen=True)
class ExtendSpec:
    families: tuple[str, ...] | None = None  # default: every family in the store
    limit: int | None = None  # first N prompts of each family, in sorted sample_id order
    shots: int = 0
    commit_every: int = 64
    batch_size: int | None = None  # prompts per generation batch (default from the config's concurrency)
    sample_ids: tuple[str, ...] | None = None  # restrict to these prompts (refresh's stale rows)
    lost_node_retries: int = 3  # times a run resumes after a lost Ray node or worker
    # Options for every grader that declares them: {"judge": "model_configs/j.yaml", "unsafe_sandbox": True}.
    grader_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    errors: int = 0
    spend_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)


PLACEMENT_COLUMNS = ["sample_id", "generated_on", "graded_on"]


@dataclass
class ExtendReport:
    model: str
    planned: int
    appended: int
    graded: int
    errors: dict[str, int]
    spend_usd: float
    skipped_done: int
    #: Where each answered prompt ran: ``sample_id, generated_on, graded_on`` (Ray node ids).
    placement: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PLACEMENT_COLUMNS))
    #: The Ray nodes of the run by id, with their resources (``ray.nodes()``: those at its start, and those added since).
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Seconds each node that answered or graded was up during the run (empty without Ray's state API).
    node_seconds: dict[str, float] = field(default_factory=dict)
    #: $ per device-hour of the model (self-hosted: ``price.gpu_hour``; 0 for an API model).
    gpu_hour: float = 0.0
    #: Each loss of a Ray node or worker the run resumed after (the error, what was re-planned).
    lost: list[str] = field(default_factory=list)

    def node_usage(self) -> pd.DataFrame:
        """Per kind of node (its resources): nodes, node-seconds, and for the nodes that answered with
        a self-hosted model the device cost they imply (GPUs × seconds × ``gpu_hour``)."""
        gen = set(self.placement["generated_on"].dropna())
        rows = []
        for node, seconds in self.node_seconds.items():
            res = self.nodes.get(node, {})
            kind = ", ".join(f"{k} {v:g}" for k, v in sorted(res.items()) if not k.startswith(("node:", "memory", "object_store", "accelerator")))
            devices = max(res.get("GPU", 0.0), 1.0)
            cost = devices * seconds * self.gpu_hour / 3600 if node in gen else 0.0
            rows.append({"node_kind": kind, "nodes": 1, "node_seconds": seconds, "device_usd": cost})
        frame = pd.DataFrame(rows, columns=["node_kind", "nodes", "node_seconds", "device_usd"])
        return frame.groupby("node_kind", as_index=False).sum().sort_values("node_kind", ignore_index=True)


def _node_resources() -> dict[str, dict[str, float]]:
    import ray

    return {n["NodeID"]: dict(n.get("Resources") or {}) for n in ray.nodes()}


def write_placement(report: ExtendReport, path: str | Path) -> None:
    """The run's placement as JSON: ``{"nodes": {id: resources}, "outcomes": [{sample_id, generated_on, graded_on}]}``,
    so a cluster's user (and its tests) can check from data which node type answered and graded what."""
    rows = report.placement.astype(object).where(report.placement.notna(), None).to_dict("records")
    Path(path).write_text(json.dumps({"model": report.model, "nodes": report.nodes, "outcomes": rows}, indent=1))


# ---------------------------------------------------------------------- plan
def error_kind(error: str) -> str:
    """``engine:timeout`` / ``gold:missing`` / ``grader`` — the part of an error worth counting."""
    head, _, rest = error.partition(":")
    return f"{head}:{rest.split(':', 1)[0]}" if head in ("engine", "gold", "response") else head


def plan(store: Store, config: ModelConfig, spec: ExtendSpec, settings: Mapping[str, FamilySettings] | None = None) -> tuple[pd.DataFrame, int]:
    """The prompts to answer (work rows, :func:`harness.answering.work_rows`) and how many were
    already done; ``settings``: the store's families table (read here when not given)."""
    work, done, _ = _plan(store, config, spec, store.families() if settings is None else settings)
    return work, done


def _as_served(work: pd.DataFrame, config: ModelConfig, served: list[str]) -> pd.DataFrame:
    """Served traffic's work rows asked as ``routerbench serve`` asked them: a conversation as its
    messages, and under the config hash serve records (the model config's, no prompt template), so
    an answer the model gave when it was served counts as done and is not asked for again."""
    rows = work["task_family"].isin(served).to_numpy()
    if rows.any():
        conversations = [served_conversation(p) for p in work.loc[rows, "prompt"]]
        work.loc[rows, "messages"] = [m if c is None else json.dumps(c, ensure_ascii=False) for c, m in zip(conversations, work.loc[rows, "messages"])]
        work.loc[rows, "config_hash"] = config.config_hash()
    return work


def _plan(store: Store, config: ModelConfig, spec: ExtendSpec, settings: Mapping[str, FamilySettings]) -> tuple[pd.DataFrame, int, dict[str, FamilySettings]]:
    """:func:`plan`, and the families table as grading reads it: served traffic (answered only when
    ``spec.families`` names it) graded by the judge (:func:`harness.grading.judged.with_judge`)."""
    prompts = store.prompts(["sample_id", "task", "task_family", "prompt", "gold", "meta"])
    if prompts.empty:
        raise UserError(f"the store at {store.uri} has no prompts; `routerbench import` or `routerbench prompts import` first")
    available = sorted(prompts["task_family"].unique())
    served = judged_families(prompts, settings)
    families = list(spec.families) if spec.families else [f for f in available if f not in served]
    unknown = [f for f in families if f not in available]
    if unknown:
        raise UserError(f"no prompts of task famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} in the store (it has {', '.join(available)})")
    settings = with_judge(store, prompts, families, settings, spec.grader_options, flag="--tasks")
    prompts = prompts[prompts["task_family"].isin(families)].sort_values("sample_id", ignore_index=True)
    if spec.sample_ids is not None:
        prompts = prompts[prompts["sample_id"].isin(list(spec.sample_ids))]
    if spec.limit is not None:
        prompts = prompts.groupby("task_family", sort=True).head(spec.limit).reset_index(drop=True)

    work = _as_served(work_rows(prompts, config, spec.shots, settings), config, [f for f in served if f in families])
    done = store.outcomes(["sample_id", "response", "score", "error", "config_hash"], models=[config.name])
    # An answer is kept once the model gave one: a grading problem (missing gold, grader error) is
    # `regrade`'s to fix from the stored response, only engine failures are asked again.
    answered = done["score"].notna() | (done["response"].notna() & ~done["error"].fillna("").str.startswith("engine:"))
    stored = work[["sample_id", "config_hash"]].merge(done[answered.to_numpy()].assign(_present=True), on="sample_id", how="left", suffixes=("", "_stored"))
    # Done: answered under the same config hash, or imported (no hash: answers published as they are).
    finished = stored["_present"].notna() & (stored["config_hash_stored"].isna() | (stored["config_hash_stored"] == stored["config_hash"]))
    return work[~finished.to_numpy()].reset_index(drop=True), int(finished.sum()), settings


# ---------------------------------------------------------------------- grade
def grade_batch(batch: pd.DataFrame, options: dict[str, Any] | None = None, families: Mapping[str, FamilySettings] | None = None) -> pd.DataFrame:
    """Grade the rows that have a response, grader by grader, each with the ``options`` it declares
    and what their task families keep for it (``families``); engine failures keep their error."""
    out = batch.copy()
    out["score"] = np.nan
    out["grader_id"] = pd.array([None] * len(out), dtype="string")
    out["error"] = out["error"].astype("string")
    answered = out["error"].isna()
    for name, idx in out[answered].groupby("grader").groups.items():
        rows = out.loc[idx]
        try:
            grader = make_grader(str(name), options, family_settings(str(name), families, rows["task_family"], rows["meta"]))
            graded = grade_frame(grader, rows[["response", "gold", "meta", "prompt"]])
            grader.close()
        except UserError as exc:
            out.loc[idx, "error"] = f"grader:{exc}"
            continue
        out.loc[idx, "score"] = graded["score"]
        out.loc[idx, "error"] = graded["error"]
        out.loc[idx, "grader_id"] = graded["grader"]
    out["graded_on"] = pd.array([node_id()] * len(out), dtype="string")
    return out


# ---------------------------------------------------------------------- run
def _outcome_rows(graded: pd.DataFrame, model: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": graded["sample_id"],
            "model": model,
            "response": graded["response"],
            "score": graded["score"].astype("float64"),
            "cost_usd": graded["cost_usd"].astype("float64"),
            "input_tokens": graded["input_tokens"].astype("Int64"),
            "output_tokens": graded["output_tokens"].astype("Int64"),
            "latency_s": graded["latency_s"].astype("float64"),
            "grader": graded["grader_id"],
            "config_hash": graded["config_hash"],
            "error": graded["error"],
        }
    )


def preflight(config: ModelConfig, spec: ExtendSpec, graders: set[str], address: str | None = None) -> tuple[ModelConfig, ExtendSpec]:
    """Fail here, in one line, on what would otherwise fail inside Ray: an unset key variable (of
    the model or of a model config among the options of the ``graders``) and, when grading runs on
    this machine, what a grader checks there (bubblewrap for code; a cluster's sandbox nodes are
    checked where they grade). Returns the config and spec holding their keys."""
    config = config.holding_key()
    options = prepare_options(graders, spec.grader_options, check_here=not joins_cluster(address))
    return config, replace(spec, grader_options=options)


def _pipeline(work: pd.DataFrame, config: ModelConfig, spec: ExtendSpec, families: Mapping[str, FamilySettings]) -> Iterator[pd.DataFrame]:
    """Graded batches of ``work`` as they come: the engine's actor answers, grading tasks grade."""
    import ray
    from ray.util.annotations import RayDeprecationWarning

    engine = config.engine
    size = spec.batch_size or engine.batch_size(config)
    graders = [grader_class(str(g)) for g in work["grader"].dropna().unique()]
    # Where the graders declare they run (code: on sandbox nodes), and without any key variable if
    # one must hold none (a cluster's nodes may hold keys).
    resources = {r: max(g.resources.get(r, 0) for g in graders) for g in graders for r in g.resources}
    grade_args: dict[str, Any] = {"resources": resources} if resources else {}
    if any(g.keyless for g in graders):
        grade_args["runtime_env"] = keyless_runtime_env()
    # One block per generation batch, so graded rows stream back batch by batch.
    ds = ray.data.from_pandas([work.iloc[i : i + size] for i in range(0, len(work), size)])
    with warnings.catch_warnings():  # max_restarts has no named parameter in Ray Data yet
        warnings.simplefilter("ignore", RayDeprecationWarning)
        ds = ds.map_batches(
            Answerer,
            fn_constructor_kwargs={"config": config, "shots": spec.shots},
            batch_size=size,
            batch_format="pandas",
            # Two batches in flight on the one engine: no idle tail while a batch's last answers finish.
            compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=2, max_concurrent_calls_per_actor=2, enable_true_multi_threading=True),
            **engine.stage_resources(config),
            # A restarted engine would answer a batch twice; a lost one fails the pipeline, and
            # extend re-plans what did not come back (spec.lost_node_retries).
            max_restarts=0,
        )
    ds = ds.map_batches(grade_batch, fn_kwargs={"options": spec.grader_options, "families": families}, batch_size=size, batch_format="pandas", num_cpus=1, **grade_args)
    yield from ds.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=1)


def extend(
    store: Store,
    config: ModelConfig,
    spec: ExtendSpec,
    *,
    address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ExtendReport:
    """Answer, grade and append every planned prompt for ``config``'s model. A Ray node (or worker)
    lost mid-run loses only what was in flight there: the rest is kept and that is re-planned and
    answered again, up to ``spec.lost_node_retries`` times."""
    import ray

    # read once: planning renders with it, grading reads its settings (served traffic's: the judge's)
    work, already, families = _plan(store, config, spec, store.families())
    if not work.empty:
        config, spec = preflight(config, spec, set(work["grader"].dropna().astype(str)), address)
    progress = Progress(total=len(work))
    report = ExtendReport(config.name, len(work), 0, 0, {}, 0.0, already)
    if on_progress:
        on_progress(progress)
    if work.empty:
        return report
    ensure_ray(address)
    started = time.time()
    resources_at_start = _node_resources()  # a node lost mid-run has none by the end
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one bar for the whole pipeline
    ctx.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)

    pending: list[pd.DataFrame] = []
    placed: list[pd.DataFrame] = []

    def flush(final: bool = False) -> None:
        rows = pd.concat(pending, ignore_index=True) if pending else pd.DataFrame()
        pending.clear()
        while len(rows) >= spec.commit_every or (final and len(rows)):
            part, rows = rows.iloc[: spec.commit_every], rows.iloc[spec.commit_every :]
            # overwrite: the planned keys had no graded outcome (or a failed/stale one) when planned
            store.append(outcomes=_outcome_rows(part, config.name), overwrite=True, source=f"extend {config.name}")
            report.appended += len(part)
        if len(rows):
            pending.append(rows)

    for attempt in range(spec.lost_node_retries + 1):
        try:
            for batch in _pipeline(work, config, spec, families):
                pending.append(batch)
                placed.append(batch[PLACEMENT_COLUMNS])
                progress.done += len(batch)
                errors = batch["error"].dropna()
                progress.errors += len(errors)
                progress.spend_usd += float(batch["cost_usd"].fillna(0).sum())
                for error in errors:
                    kind = error_kind(str(error))
                    report.errors[kind] = report.errors.get(kind, 0) + 1
                report.graded += int(batch["score"].notna().sum())
                flush()
                if on_progress:
                    on_progress(progress)
            break
        except Exception as exc:
            if not lost_with_a_node(exc):
                raise
            # What came back before the loss is graded and kept; the rest, in flight there, is redone.
            flush(final=True)
            answered = set(pd.concat(placed)["sample_id"]) if placed else set()
            work = work[~work["sample_id"].isin(answered)].reset_index(drop=True)
            what = f"{type(exc).__name__}: {first_line(exc)[:200]}"
            if attempt == spec.lost_node_retries:
                raise RunStopped(
                    f"extend {config.name}: Ray lost a node or worker {attempt + 1} time(s), the last {what}; "
                    f"{report.appended} outcomes are stored, {len(work)} prompts not done: rerun to resume"
                ) from exc
            report.lost.append(f"{what}; {len(work)} prompts re-planned")
            logging.getLogger(__name__).warning("extend %s: a Ray node or worker was lost (%s); resuming %d prompts", config.name, type(exc).__name__, len(work))
    flush(final=True)
    report.spend_usd = progress.spend_usd
    report.placement = pd.concat(placed, ignore_index=True) if placed else report.placement
    report.nodes = {**resources_at_start, **{node: res for node, res in _node_resources().items() if res}}
    report.node_seconds = node_seconds(set(report.placement["generated_on"].dropna()) | set(report.placement["graded_on"].dropna()), started)
    report.gpu_hour = config.price.gpu_hour if config.engine.self_hosted else 0.0
    return report
