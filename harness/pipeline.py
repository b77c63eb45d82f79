"""Extend the store with a model: prompts → generate → grade → append, as a Ray Data pipeline.

1. **Plan** (driver): the store's prompts of the families asked for (the first ``limit`` of each in
   sorted sample_id order), minus those this model already answered under the same config hash
   (model, sampling, chat and prompt template). Engine failures and stale answers are redone; a
   rerun of an interrupted run does only what is missing.
2. **Generate** (an actor holding the model's engine): each family renders its prompts (0- or
   k-shot); multi-turn prompts are answered turn by turn. The engine brings its own parallelism:
   vLLM replicas on GPUs, API callers sharing a rate limiter, a llama.cpp server.
3. **Grade** (tasks, ``map_batches``): each row's family names its grader; code runs in the
   sandbox (bubblewrap) on nodes with the custom ``sandbox`` resource, in workers whose environment
   holds no API key. An engine failure skips grading; a grader error or missing gold is recorded
   as the outcome's ``error``, never a 0.

Everything that can be checked before Ray starts is (:func:`preflight`): the model's and the
judge's key variables (read once, here, and carried to the engines with their configs) and, for
code grading on this machine, bubblewrap.
4. **Append** (driver): graded rows are committed every ``commit_every`` rows, each commit atomic,
   so a killed run loses at most the rows since the last commit and a rerun fills them in.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd

from harness.dataset import Store
from harness.errors import UserError
from harness.generation.base import Request, Result, build_engine
from harness.grading import GRADERS, build_grader, grade_frame
from harness.grading.base import parse_meta
from harness.grading.sandbox import require_bubblewrap
from harness.model_config import ModelConfig, load_model_config
from harness.ray_runtime import SANDBOX_RESOURCE, ensure_ray, joins_cluster, keyless_runtime_env
from harness.tasks import family_of, turns_of

WORK_COLUMNS = ["sample_id", "task_family", "prompt", "gold", "meta", "messages", "grader", "config_hash"]


@dataclass(frozen=True)
class ExtendSpec:
    families: tuple[str, ...] | None = None  # default: every family in the store
    limit: int | None = None  # first N prompts of each family, in sorted sample_id order
    shots: int = 0
    judge: str | ModelConfig | None = None  # model config (path, or loaded) of the MT-Bench judge
    commit_every: int = 64
    batch_size: int | None = None  # prompts per generation batch (default from the config's concurrency)
    sample_ids: tuple[str, ...] | None = None  # restrict to these prompts (refresh's stale rows)
    unsafe_sandbox: bool = False  # grade code in the weaker process sandbox (no bubblewrap)


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


@dataclass
class ExtendReport:
    model: str
    planned: int
    appended: int
    graded: int
    errors: dict[str, int]
    spend_usd: float
    skipped_done: int


# ---------------------------------------------------------------------- plan
def error_kind(error: str) -> str:
    """``engine:timeout`` / ``gold:missing`` / ``grader`` — the part of an error worth counting."""
    head, _, rest = error.partition(":")
    return f"{head}:{rest.split(':', 1)[0]}" if head in ("engine", "gold", "response") else head


def plan(store: Store, config: ModelConfig, spec: ExtendSpec) -> tuple[pd.DataFrame, int]:
    """The prompts to answer (``WORK_COLUMNS``) and how many were already done."""
    prompts = store.prompts(["sample_id", "task", "task_family", "prompt", "gold", "meta"])
    if prompts.empty:
        raise UserError(f"the store at {store.uri} has no prompts; `routerbench import` or `routerbench prompts import` first")
    available = sorted(prompts["task_family"].unique())
    families = list(spec.families) if spec.families else available
    unknown = [f for f in families if f not in available]
    if unknown:
        raise UserError(f"no prompts of task famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} in the store (it has {', '.join(available)})")
    prompts = prompts[prompts["task_family"].isin(families)].sort_values("sample_id", ignore_index=True)
    if spec.sample_ids is not None:
        prompts = prompts[prompts["sample_id"].isin(list(spec.sample_ids))]
    if spec.limit is not None:
        prompts = prompts.groupby("task_family", sort=True).head(spec.limit).reset_index(drop=True)

    rows = []
    for row in prompts.to_dict("records"):
        fam = family_of(row)
        rows.append(
            {
                **row,
                "grader": fam.grader_for(row),
                "config_hash": config.config_hash({"template": fam.template_id(spec.shots)}),
                # multi-turn prompts are rendered turn by turn while generating, with the model's own answers
                "messages": json.dumps(fam.render(row, spec.shots), ensure_ascii=False) if turns_of(row) == 1 else None,
            }
        )
    work = pd.DataFrame(rows, columns=[*WORK_COLUMNS, "task"])
    done = store.outcomes(["sample_id", "response", "score", "error", "config_hash"], models=[config.name])
    # An answer is kept once the model gave one: a grading problem (missing gold, grader error) is
    # `regrade`'s to fix from the stored response, only engine failures are asked again.
    answered = done["score"].notna() | (done["response"].notna() & ~done["error"].fillna("").str.startswith("engine:"))
    stored = work[["sample_id", "config_hash"]].merge(done[answered.to_numpy()].assign(_present=True), on="sample_id", how="left", suffixes=("", "_stored"))
    # Done: answered under the same config hash, or imported (no hash: answers published as they are).
    finished = stored["_present"].notna() & (stored["config_hash_stored"].isna() | (stored["config_hash_stored"] == stored["config_hash"]))
    return work[~finished.to_numpy()].reset_index(drop=True)[WORK_COLUMNS], int(finished.sum())


# ---------------------------------------------------------------------- generate
class GenerateStage:
    """Ray Data actor: holds one engine for the model and answers batches of work rows."""

    def __init__(self, config: ModelConfig, shots: int) -> None:
        self.config = config
        self.shots = shots
        self.engine = build_engine(config)
        start = getattr(self.engine, "start", None)
        if callable(start):  # servers and replicas up before two batches may call in at once
            start()

    def _answer(self, requests: list[Request]) -> dict[str, Any]:
        return {r.sample_id: r for r in self.engine.generate(requests)} if requests else {}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        results = self._answer([Request(s, json.loads(m)) for s, m in zip(batch["sample_id"], batch["messages"]) if m is not None])
        multi = batch[batch["messages"].isna()]
        if len(multi):
            results.update(self._answer_turns(multi))
        out = batch.copy()
        rs = [results[s] for s in batch["sample_id"]]
        # Typed columns: every block then has the same Arrow schema, whatever its nulls.
        out["response"] = pd.array([r.response for r in rs], dtype="string")
        out["input_tokens"] = pd.array([r.input_tokens for r in rs], dtype="Int64")
        out["output_tokens"] = pd.array([r.output_tokens for r in rs], dtype="Int64")
        out["latency_s"] = pd.array([r.latency_s for r in rs], dtype="Float64")
        out["cost_usd"] = pd.array([r.cost_usd for r in rs], dtype="Float64")
        out["error"] = pd.array([None if r.error is None else f"engine:{r.error}" for r in rs], dtype="string")
        return out

    def _answer_turns(self, rows: pd.DataFrame) -> dict[str, Any]:
        """Multi-turn prompts (MT-Bench): turn k is asked with the model's own answers to turns < k;
        the response is the JSON list of answers, usage and cost summed over the turns."""
        records = {r["sample_id"]: r for r in rows.to_dict("records")}
        answers: dict[str, list[str]] = {s: [] for s in records}
        totals: dict[str, Result] = {s: Result(s, self.config.name, input_tokens=0, output_tokens=0, latency_s=0.0, cost_usd=0.0) for s in records}
        for turn in range(max(turns_of(r) for r in records.values())):
            live = [s for s, r in records.items() if turn < turns_of(r) and totals[s].ok]
            requests = [Request(s, family_of(records[s]).render(records[s], self.shots, answers=answers[s])) for s in live]
            for s, res in self._answer(requests).items():
                total = totals[s]
                total.input_tokens = (total.input_tokens or 0) + (res.input_tokens or 0)
                total.output_tokens = (total.output_tokens or 0) + (res.output_tokens or 0)
                total.latency_s = (total.latency_s or 0.0) + (res.latency_s or 0.0)
                total.cost_usd = (total.cost_usd or 0.0) + (res.cost_usd or 0.0)
                total.error, total.error_detail = res.error, res.error_detail
                if res.ok:
                    answers[s].append(res.response or "")
        for s, total in totals.items():
            total.response = json.dumps(answers[s], ensure_ascii=False) if total.ok else None
        return totals


# ---------------------------------------------------------------------- grade
def is_sandboxed(grader: str) -> bool:
    """Whether the grader registered as ``grader`` runs model-written code."""
    return bool(getattr(GRADERS.get(grader), "sandboxed", False))


def make_grader(name: str, metas: list[dict], judge: str | ModelConfig | None, unsafe_sandbox: bool = False):
    """A grader by name; the MT-Bench judge is built from a judge model config and the prompts stored with the questions."""
    if name != "mtbench-judge":
        return build_grader(name, **({"unsafe_sandbox": True} if unsafe_sandbox and is_sandboxed(name) else {}))
    from harness.grading.judge import JudgeGrader, engine_completer, judge_prompts_from_metas

    if judge is None:
        raise UserError("MT-Bench answers need a judge: pass --judge model_configs/<judge>.yaml")
    config = judge if isinstance(judge, ModelConfig) else load_model_config(judge)
    return JudgeGrader(engine_completer(config), judge_prompts_from_metas(metas), config.name)


def grade_batch(batch: pd.DataFrame, judge: str | ModelConfig | None = None, unsafe_sandbox: bool = False) -> pd.DataFrame:
    """Grade the rows that have a response, grader by grader; engine failures keep their error."""
    out = batch.copy()
    out["score"] = np.nan
    out["grader_id"] = pd.array([None] * len(out), dtype="string")
    out["error"] = out["error"].astype("string")
    answered = out["error"].isna()
    for name, idx in out[answered].groupby("grader").groups.items():
        rows = out.loc[idx]
        try:
            grader = make_grader(str(name), [parse_meta(m) for m in rows["meta"]], judge, unsafe_sandbox)
            graded = grade_frame(grader, rows[["response", "gold", "meta", "prompt"]])
            grader.close()
        except UserError as exc:
            out.loc[idx, "error"] = f"grader:{exc}"
            continue
        out.loc[idx, "score"] = graded["score"]
        out.loc[idx, "error"] = graded["error"]
        out.loc[idx, "grader_id"] = graded["grader"]
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
    the model or the judge) and code grading without bubblewrap on this machine (a cluster's
    sandbox nodes are checked where they grade). Returns the config and spec holding their keys."""
    config = config.holding_key()
    judge = spec.judge
    if "mtbench-judge" in graders and judge is not None:
        judge = (judge if isinstance(judge, ModelConfig) else load_model_config(judge)).holding_key()
    if not spec.unsafe_sandbox and not joins_cluster(address) and any(is_sandboxed(g) for g in graders):
        require_bubblewrap()
    return config, replace(spec, judge=judge)


def extend(
    store: Store,
    config: ModelConfig,
    spec: ExtendSpec,
    *,
    address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ExtendReport:
    """Answer, grade and append every planned prompt for ``config``'s model."""
    import ray
    from ray.util.annotations import RayDeprecationWarning

    work, already = plan(store, config, spec)
    if not work.empty:
        config, spec = preflight(config, spec, set(work["grader"].dropna().astype(str)), address)
    progress = Progress(total=len(work))
    report = ExtendReport(config.name, len(work), 0, 0, {}, 0.0, already)
    if on_progress:
        on_progress(progress)
    if work.empty:
        return report
    ensure_ray(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one bar for the whole pipeline
    ctx.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)

    engine = config.engine
    size = spec.batch_size or engine.batch_size(config)
    sandboxed = any(is_sandboxed(str(g)) for g in work["grader"].dropna().unique())
    # Code graders: on sandbox nodes, and with every key variable blanked (a cluster's nodes may hold keys).
    grade_args: dict[str, Any] = {"resources": {SANDBOX_RESOURCE: 1}, "runtime_env": keyless_runtime_env()} if sandboxed else {}
    # One block per generation batch, so graded rows stream back batch by batch.
    ds = ray.data.from_pandas([work.iloc[i : i + size] for i in range(0, len(work), size)])
    with warnings.catch_warnings():  # max_restarts has no named parameter in Ray Data yet
        warnings.simplefilter("ignore", RayDeprecationWarning)
        ds = ds.map_batches(
            GenerateStage,
            fn_constructor_kwargs={"config": config, "shots": spec.shots},
            batch_size=size,
            batch_format="pandas",
            # Two batches in flight on the one engine: no idle tail while a batch's last answers finish.
            compute=ray.data.ActorPoolStrategy(size=1, max_tasks_in_flight_per_actor=2, max_concurrent_calls_per_actor=2, enable_true_multi_threading=True),
            **engine.stage_resources(config),
            max_restarts=0,  # a restarted engine would answer a batch twice; failures are recorded instead
        )
    ds = ds.map_batches(grade_batch, fn_kwargs={"judge": spec.judge, "unsafe_sandbox": spec.unsafe_sandbox}, batch_size=size, batch_format="pandas", num_cpus=1, **grade_args)

    pending: list[pd.DataFrame] = []

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

    for batch in ds.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=1):
        pending.append(batch)
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
    flush(final=True)
    report.spend_usd = progress.spend_usd
    return report
