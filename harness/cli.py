"""The ``routerbench`` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.store import AppendResult, Store
from harness.errors import RunStopped, UserError
from harness.generation.cli import generate
from harness.outcome_import import EXPORTS, ImportBatch, load_sources
from harness.cli_options import AddressOpt, StoreOpt, console, err_console, open_store
from harness.progress import progress
from harness.tasks.cli import prompts_app
from routers import DEFAULT_ROUTERS

if TYPE_CHECKING:
    from harness.evaluate import EvalSpec

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Evaluate LLM routers on recorded outcomes.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and maintain the outcome store.")
app.add_typer(data_app, name="data")
sandbox_app = typer.Typer(no_args_is_help=True, help="The sandbox that runs model-written code.")
app.add_typer(sandbox_app, name="sandbox")
JudgeOpt = Annotated[Optional[Path], typer.Option(help="Model config of the LLM judge for MT-Bench answers and served traffic.")]
UnsafeSandboxOpt = Annotated[
    bool,
    typer.Option("--unsafe-sandbox", help="Grade model-written code without bubblewrap, in the weaker process sandbox (warned, recorded in each outcome's grader)."),
]
AsOfOpt = Annotated[
    Optional[str],
    typer.Option("--as-of", help="Read the store as it was: a version of its outcomes table (see `routerbench data history`) or an ISO time."),
]


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _import(
    store: Store,
    sources: list[str],
    on_ambiguous: str,
    overwrite: bool,
    refresh: bool,
    missing_cost: str = "error",
    sha256: list[str] | None = None,
    *,
    format: str | None = None,
    prices: str | None = None,
    unit_cost: bool = False,
    models_dir: str | None = None,
    write_split: Path | None = None,
) -> tuple[ImportBatch, AppendResult]:
    with console.status("reading sources…"):
        batch = load_sources(
            sources, on_ambiguous=on_ambiguous, refresh=refresh, missing_cost=missing_cost, sha256=sha256 or (),
            format=format, prices=prices, unit_cost=unit_cost, models_dir=models_dir,
        )
    with console.status(f"writing {len(batch.outcomes)} outcomes to {store.uri}…"):
        result = store.append(batch.prompts, batch.outcomes, overwrite=overwrite, source=", ".join(sources))
    console.print(
        f"imported {result.prompts_added} prompts and {result.outcomes_added} outcomes into {store.uri}"
        + (f" (already there: {result.prompts_skipped} prompts, {result.outcomes_skipped} outcomes)" if result.prompts_skipped or result.outcomes_skipped else "")
    )
    if result.outcomes_raced:
        console.print(f"  {result.outcomes_raced} outcomes were written by another process meanwhile, with other values; kept theirs")
    if result.outcomes_changed:
        console.print(f"  {result.outcomes_changed} of the outcomes already there have other values in the store; kept the stored ones (--overwrite replaces them)")
    if batch.models_without_cost:
        console.print(f"  skipped {len(batch.models_without_cost)} models without a '<model>|total_cost' column: {', '.join(batch.models_without_cost)}")
    if batch.duplicates_dropped:
        console.print(f"  {batch.duplicates_dropped} identical duplicate rows stored once")
    if batch.ambiguous:
        console.print(
            f"  skipped {len(batch.ambiguous)} ambiguous sample_ids (used by rows with different prompts; "
            f"--on-ambiguous rekey keeps them): {', '.join(batch.ambiguous)}"
        )
    if batch.rekeyed:
        console.print(f"  re-keyed {batch.rekeyed} rows whose sample_id was shared by different prompts (<id>~<prompt hash>)")
    if batch.missing_by_model:
        missing = ", ".join(f"{m}: {n}" for m, n in sorted(batch.missing_by_model.items()))
        console.print(f"  missing outcomes (no score, not stored): {missing}")
    for note in batch.notes:
        console.print(f"  {note}", highlight=False)
    if batch.split:
        if write_split:
            import json

            write_split.parent.mkdir(parents=True, exist_ok=True)
            write_split.write_text(json.dumps(batch.split, indent=1))
            console.print(f"  wrote the set's own train/test split to {write_split} (evaluate --split file:{write_split})")
        else:
            console.print("  this set has its own train/test split: --write-split PATH writes it for `evaluate --split file:PATH`")
    return batch, result


@app.command("import")
def import_(
    sources: Annotated[Optional[list[str]], typer.Argument(help="Files, directories or http(s)/s3:// URLs in any format of --list-formats.")] = None,
    store: StoreOpt = None,
    on_ambiguous: Annotated[str, typer.Option(help="A sample_id used by different prompts: 'skip' its rows or 'rekey' them.")] = "skip",
    overwrite: Annotated[bool, typer.Option(help="Replace outcomes whose (sample_id, model) is already stored.")] = False,
    refresh: Annotated[bool, typer.Option(help="Download URLs again instead of using the cache.")] = False,
    missing_cost: Annotated[str, typer.Option(help="A wide file's model column without '<model>|total_cost': 'error', or 'skip-model' to import the other models.")] = "error",
    sha256: Annotated[
        Optional[list[str]],
        typer.Option("--sha256", help="Expected sha256 of a URL source's file; repeat it once per URL source, in their order (local sources are not checked). A mismatch fails and the download is not kept."),
    ] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="Read every source in this format (default: detect each file's; see --list-formats).")] = None,
    list_formats: Annotated[bool, typer.Option("--list-formats", help="List the import formats and exit.")] = False,
    prices: Annotated[Optional[Path], typer.Option("--prices", help="YAML/JSON {model: {input_per_mtok, output_per_mtok}}: prices for sets without published costs, before the set's own table and model_configs/.")] = None,
    unit_cost: Annotated[bool, typer.Option("--unit-cost", help="Every call costs 1 (cost_source 'unit'): for sets without prices.")] = False,
    models_dir: Annotated[Optional[Path], typer.Option(help="Model configs whose prices cost sets without published costs.")] = None,
    write_split: Annotated[Optional[Path], typer.Option("--write-split", help="Write a set's own train/test split (LLMRouter's) as JSON for `evaluate --split file:PATH`.")] = None,
) -> None:
    """Import outcomes into the store (atomic: all of it or nothing)."""
    if list_formats:
        from harness.formats import FORMATS

        for name in FORMATS.names():
            console.print(f"{name}: {FORMATS.get(name).summary}", highlight=False)
        return
    if not sources:
        raise UserError("name at least one SOURCE to import (or pass --list-formats)")
    _import(
        open_store(store), sources, on_ambiguous, overwrite, refresh, missing_cost, sha256,
        format=format, prices=str(prices) if prices else None, unit_cost=unit_cost, models_dir=str(models_dir) if models_dir else None, write_split=write_split,
    )


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="File to write.")],
    format: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(EXPORTS.names())}.")] = "routerbench-csv",
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task families (default: all).")] = None,
    store: StoreOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Write the store out, e.g. in RouterBench's wide layout."""
    writer = EXPORTS.get(format)
    st = open_store(store, as_of)
    out.parent.mkdir(parents=True, exist_ok=True)
    fams = _csv(tasks)
    writer(st, list(fams) if fams else None, out)
    console.print(f"wrote {out}")


@data_app.command("info")
def data_info(store: StoreOpt = None, as_of: AsOfOpt = None) -> None:
    """Prompts per task family, and outcomes per task family × model."""
    st = open_store(store, as_of).pinned()
    summary = st.summary()
    if summary.prompts == 0:
        raise UserError(f"the store at {st.uri} is empty; import outcomes with `routerbench import SOURCE`")
    counts, sources, per_family, families = summary.counts, summary.cost_sources, summary.per_family, list(summary.per_family.index)
    table = Table(title=f"{st.uri}: outcomes per task family × model", title_justify="left")
    table.add_column("model")
    table.add_column("cost source")
    for f in families:
        table.add_column(f, justify="right")
    table.add_row("[bold]prompts[/]", "", *[f"[bold]{per_family[f]}[/]" for f in families])
    for model, row in counts.iterrows():
        table.add_row(str(model), str(sources.get(model, "")), *[str(int(row[f])) for f in families])
    console.print(table)
    versions = ", ".join(f"{t} v{v}" for t, v in st.versions().items() if v is not None)
    console.print(f"{summary.prompts} prompts, {summary.outcomes} outcomes, {len(counts)} models ({versions})")


def _cost_sources_by_family(st: Store, models: tuple[str, ...] | None = None) -> dict[str, str]:
    """Per task family, the cost sources of its pool's outcomes: ``"published (11 models)"`` or a mix."""
    from harness.store import effective_cost_source

    o = st.outcomes(["sample_id", "model", "score", "cost_source", "input_tokens"], models=list(models) if models else None)
    o = o[o["score"].notna()].merge(st.prompts(["sample_id", "task_family"]), on="sample_id")
    o["cost_source"] = effective_cost_source(o)
    per = o.drop_duplicates(["task_family", "model", "cost_source"]).groupby(["task_family", "cost_source"])["model"].nunique()
    out: dict[str, list[str]] = {}
    for (family, source), n in per.items():
        out.setdefault(str(family), []).append(f"{source} ({n} model{'s' if n > 1 else ''})")
    return {f: ", ".join(v) for f, v in out.items()}


@data_app.command("compact")
def data_compact(
    store: StoreOpt = None,
    retain_hours: Annotated[float, typer.Option("--retain-hours", min=0, help="Delete files that no version of the last this-many hours reads (readers of older versions lose them).")] = 168,
) -> None:
    """Merge each partition's small files into one, then vacuum what no recent version reads (safe to interrupt, and to run twice at once)."""
    from harness.store import CompactionSkipped

    try:
        done = open_store(store).compact(retain_hours=retain_hours)
    except CompactionSkipped as exc:  # the other compaction does the work: not a failure
        console.print(str(exc), highlight=False)
        return
    if not done:
        console.print("nothing to compact")
        return
    console.print(f"compacted {done.files_merged} files; vacuumed {done.files_vacuumed} files older than {retain_hours:g} hours that no version needs")


@data_app.command("history")
def data_history(
    store: StoreOpt = None,
    table: Annotated[Optional[str], typer.Option(help="Only this table: prompts, families, outcomes or embeddings.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest this-many versions.")] = 50,
) -> None:
    """The store's versions: time, operation, rows added, what wrote them (cite one with `--as-of`)."""
    st = open_store(store)
    hist = st.history()
    if table:
        from harness.store import TABLES

        if table not in TABLES:
            raise UserError(f"--table must be one of {', '.join(TABLES)}, not '{table}'")
        hist = hist[hist["table"] == table]
    if hist.empty:
        raise UserError(f"the store at {st.uri} has no versions yet; import outcomes with `routerbench import SOURCE`")
    shown = hist.tail(limit)
    out = Table(title=f"{st.uri}: versions (oldest first; --as-of VERSION reads the outcomes table's)", title_justify="left")
    for col, justify in (("table", "left"), ("version", "right"), ("time (UTC)", "left"), ("operation", "left"), ("rows added", "right"), ("rows updated", "right"), ("files +/-", "right"), ("written by", "left")):
        out.add_column(col, justify=justify)
    fmt = lambda v: "" if pd.isna(v) else str(int(v))  # noqa: E731
    for r in shown.itertuples():
        out.add_row(r.table, str(r.version), r.time.strftime("%Y-%m-%d %H:%M:%S"), str(r.operation), fmt(r.rows_added), fmt(r.rows_updated), f"{fmt(r.files_added) or 0}/{fmt(r.files_removed) or 0}", str(r.source or ""))
    console.print(out)
    latest = hist.groupby("table")["version"].max()
    console.print(f"{len(hist)} versions ({len(hist) - len(shown)} older not shown); latest: " + ", ".join(f"{t} v{v}" for t, v in latest.items()))


@data_app.command("migrate")
def data_migrate(
    old: Annotated[str, typer.Argument(help="A store of the layout before Delta Lake (with a _commits/ directory).")],
    new: Annotated[str, typer.Argument(help="Where to write the Delta store (empty, or a migration to resume).")],
) -> None:
    """Convert a store of the old layout to Delta tables; rerunning resumes (keys already there are skipped)."""
    from harness.migrate import migrate

    counts = migrate(old, new, on_table=lambda name, n: console.print(f"  {name}: {n} rows read"))
    console.print(", ".join(f"{t}: {c.added} added, {c.skipped} already there" for t, c in counts.items()))
    console.print(f"migrated {old} to {new}; compare `routerbench data info --store {new}` with the old store's")


def _eval_spec(*, routers, tasks, split, aiq_mode, bootstrap, seed, cost_model, embedder, embed_text, embed_backend, models_dir, models, parity, target_cost, target_share):  # noqa: ANN001, ANN202
    """The evaluation spec from ``evaluate``'s options, its parity preset applied."""
    from harness.evaluate import EvalSpec

    return EvalSpec(
        routers=_csv(routers) or (),
        families=_csv(tasks),
        split=split,
        aiq_mode=aiq_mode,
        bootstrap=bootstrap,
        seed=seed,
        cost_model=cost_model,
        embedder=embedder,
        embed_text=embed_text,
        embed_backend=embed_backend,
        models_dir=str(models_dir) if models_dir else None,
        models=_csv(models),
        parity=parity,
        target_costs=tuple(target_cost or ()),
        target_shares=tuple(target_share or ()),
    ).resolved()


@app.command()
def evaluate(
    store: StoreOpt = None,
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Import these sources first (path or URL; idempotent).")] = None,
    out: Annotated[str, typer.Option(help="Directory (or pyarrow URI, e.g. s3://bucket/results) for points.parquet, aiq.csv and plots.")] = "results",
    routers: Annotated[str, typer.Option(help="Comma-separated router names or module:function plug-ins.")] = ",".join(DEFAULT_ROUTERS),
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task families (default: all).")] = None,
    aiq_mode: Annotated[str, typer.Option(help="'paper' (common range of the single models) or 'compat' (RouterBench's code).")] = "paper",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for AIQ intervals (0: none).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    split: Annotated[str, typer.Option(help="routerbench (70/30, seed 42), kfold:K, leave-task-out or file:PATH.")] = "routerbench",
    cost_model: Annotated[str, typer.Option(help="Cost term of λ·P − c: 'expected' ($ per query on training prompts) or 'price' (list price per token).")] = "expected",
    embedder: Annotated[str, typer.Option(help="sentence-transformers model for prompt embeddings.")] = "all-MiniLM-L6-v2",
    embed_text: Annotated[str, typer.Option(help="Embed per task family the prompt without the prefix and suffix all its prompts share ('distinct': the question, not shared few-shot exemplars), as imported ('original', RouterBench's), decoded ('plain'), or its last 256 tokens ('tail').")] = "distinct",
    embed_backend: Annotated[str, typer.Option(help="'torch' (sentence-transformers, float) or 'fast' (the same model as int8 ONNX on onnxruntime, ~1.8x faster on a CPU, cosine ≥ 0.99; pip install onnxruntime onnx).")] = "torch",
    models_dir: Annotated[Optional[Path], typer.Option(help="Model configs (prices for --cost-model price).")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models to route between (default: per family, every model with outcomes there).")] = None,
    address: AddressOpt = None,
    sequential: Annotated[bool, typer.Option(help="Run in this process, without Ray.")] = False,
    label: Annotated[Optional[str], typer.Option(help="The dataset's name in run.json, for `routerbench leaderboard` (default: the --out directory's name).")] = None,
    target_cost: Annotated[Optional[list[str]], typer.Option("--target-cost", help="Calibrate every λ router to this mean $ per query on its training prompts (cross-validated); repeatable. Writes calibrated.csv.")] = None,
    target_share: Annotated[Optional[list[str]], typer.Option("--target-share", help="MODEL:FRACTION: calibrate every λ router to send this share of prompts to MODEL; repeatable.")] = None,
    parity: Annotated[Optional[str], typer.Option(help="'routerbench': every setting RouterBench's code used (--cost-model price, --aiq-mode compat, --embed-text original, KNN ties as sklearn breaks them, one MLP per model, a split file's training order), so its points are reproduced.")] = None,
    as_of: AsOfOpt = None,
    rerun: Annotated[Optional[str], typer.Option("--rerun", help="A results directory's run.json: evaluate again with its spec on the store versions it read (other evaluation options are ignored; --store moves the store).")] = None,
) -> None:
    """Evaluate routers per task family: points, hulls, AIQ, plots."""
    from harness.results import check_destination, read_run_record

    if rerun:
        if data or as_of:
            raise UserError("--rerun reads the store versions its run.json names: drop --data and --as-of")
        record = read_run_record(rerun)
        moved = store if store and store != os.environ.get("ROUTERBENCH_STORE") else None  # --store, not $ROUTERBENCH_STORE
        st = record.store_at(moved, where=rerun)
        spec = record.spec.resolved()
        label = label or record.label
    else:
        st = open_store(store, as_of)
        spec = _eval_spec(
            routers=routers, tasks=tasks, split=split, aiq_mode=aiq_mode, bootstrap=bootstrap, seed=seed, cost_model=cost_model, embedder=embedder,
            embed_text=embed_text, embed_backend=embed_backend, models_dir=models_dir, models=models, parity=parity, target_cost=target_cost, target_share=target_share,
        )
    if data:
        check_destination(out)  # before the import, not only after it
        _import(st, data, on_ambiguous="skip", overwrite=False, refresh=False)
    _evaluate_and_print(st, spec, out, address=address, parallel=not sequential, label=label, sources=list(data or []), rerun_of=rerun)


def _evaluate_and_print(
    st: Store, spec: EvalSpec, out: str, *, address: str | None, parallel: bool = True, label: str | None = None, sources: list[str] | None = None, rerun_of: str | None = None
) -> None:
    """:func:`harness.results.run_evaluation` with a progress bar, then its tables and notes: what
    ``evaluate``, ``extend --evaluate`` and ``refresh --evaluate`` print."""
    from harness import results
    from harness.report import aiq_table

    with progress(console) as bar:
        embed = bar.add_task("embedding prompts", total=None, visible=False)
        task = bar.add_task("evaluating", total=None)
        done = results.run_evaluation(
            st,
            spec,
            out,
            label=label,
            sources=sources or [],
            rerun_of=rerun_of,
            address=address,
            parallel=parallel,
            on_progress=lambda n, total: bar.update(task, completed=n, total=total),
            on_embed=lambda n, total: bar.update(embed, completed=n, total=total, visible=True),
        )
    result, st = done.result, done.store
    partial = {r.family: r.partial for r in result.families}
    fill_in = {r.family: r.fill_in for r in result.families}
    notes = {r.family: r.notes for r in result.families}
    cost_sources = _cost_sources_by_family(st, spec.models)
    for fam in result.summary.itertuples():
        console.print(aiq_table(result.aiq, result.points, fam.task_family))
        note = f"  {fam.test} test prompts, {fam.train} training prompts"
        if fam.left_out:
            note += f"; {fam.left_out} test prompts left out (no outcome for every one of the {fam.models} models)"
        console.print(note)
        console.print(f"  cost sources: {cost_sources.get(fam.task_family, 'none')}", highlight=False)
        for line in notes.get(fam.task_family, []):
            console.print(f"  {line}")
        for model, covered in partial.get(fam.task_family, []):
            console.print(f"  {model} has outcomes for {covered} of {fam.prompts} prompts: only those are evaluated (--models picks the pool)")
        if fill_in.get(fam.task_family):
            console.print(f"  to evaluate on every prompt, {fill_in[fam.task_family]}", highlight=False)
    for family in result.skipped:
        console.print(f"skipped {result.why_skipped.get(family, f'{family}: no test prompt has an outcome for every model of its pool')}", highlight=False)
    if len(result.placement):
        console.print(f"{len(result.placement)} routing tasks ran on {result.placement['node_id'].nunique()} Ray node(s) (run.json: placement)")
    if result.calibrated:
        from harness.calibration import calibration_table

        console.print(calibration_table(result.calibrated))
    out = out.rstrip("/")
    read = ", ".join(f"{t} v{v}" for t, v in st.versions().items() if v is not None)
    console.print(f"read {st.uri} at {read}; `routerbench evaluate --rerun {out}/run.json` computes these numbers again", highlight=False)
    console.print(f"wrote {out}/points.parquet, {out}/aiq.csv, {out}/run.json and {len(result.summary)} plots to {out}/")


@app.command()
def leaderboard(
    results: Annotated[list[Path], typer.Argument(help="Results directories of `routerbench evaluate` (one dataset each, labelled by its run.json or name).")],
    out: Annotated[Path, typer.Option(help="Directory for leaderboard.csv and leaderboard.png.")] = Path("leaderboard"),
) -> None:
    """ΔAIQ of every router against the zero router, across datasets and families."""
    from harness.leaderboard import leaderboard_table, plot_leaderboard, read_results

    board = read_results(results)
    out.mkdir(parents=True, exist_ok=True)
    board.to_csv(out / "leaderboard.csv", index=False)
    plot_leaderboard(board, out / "leaderboard.png")
    console.print(leaderboard_table(board))
    console.print(f"wrote {out}/leaderboard.csv and {out}/leaderboard.png ({board.groupby(['dataset', 'task_family']).ngroups} panels, {board['router'].nunique()} routers)")


@app.command()
def report(
    out: Annotated[str, typer.Option(help="An evaluation's output directory, or the URI it was written to (s3://bucket/results).")] = "results",
    all_configs: Annotated[bool, typer.Option(help="List every router setting, not only the best one.")] = False,
) -> None:
    """Print the tables and redraw the plots of an earlier evaluation."""
    from harness.report import aiq_table
    from harness.results import Results

    results = Results.read(out)
    for family in results.families:
        console.print(aiq_table(results.aiq, results.points, family, all_configs=all_configs))
    results.write_plots(out)
    console.print(f"redrew {len(results.families)} plots in {out.rstrip('/')}/")


@app.command()
def extend(
    model: Annotated[Path, typer.Option("--model", help="Model config YAML, e.g. model_configs/gemma3-270m-local.yaml.")],
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task families (default: every family in the store but served traffic, which is answered only when named: --tasks traffic --judge …).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="The first N prompts of each family, in sorted sample_id order.")] = None,
    shots: Annotated[int, typer.Option(min=0, help="Few-shot exemplars in each prompt (RouterBench's formats: 0 or 5).")] = 0,
    judge: JudgeOpt = None,
    commit_every: Annotated[int, typer.Option(min=1, help="Outcomes per atomic commit to the store.")] = 64,
    store: StoreOpt = None,
    address: AddressOpt = None,
    evaluate_after: Annotated[bool, typer.Option("--evaluate", help="Evaluate the routers afterwards, the new model in the pool.")] = False,
    out: Annotated[str, typer.Option(help="With --evaluate: directory (or URI) for the evaluation's results.")] = "results",
    unsafe_sandbox: UnsafeSandboxOpt = False,
    placement_log: Annotated[Optional[Path], typer.Option(help="Write which Ray node answered and graded each prompt (JSON) here.")] = None,
    lost_node_retries: Annotated[int, typer.Option(min=0, help="After a Ray node or worker is lost mid-run, keep what came back and answer the rest again, up to N times.")] = 3,
) -> None:
    """Run a model over the store's prompts, grade every answer and append the outcomes (resumable)."""
    from harness.model_config import load_model_config
    from harness.extend import ExtendSpec, write_placement
    from harness.extend import extend as run_extend

    st = open_store(store)
    config = load_model_config(model)
    spec = ExtendSpec(
        families=_csv(tasks), limit=limit, shots=shots, commit_every=commit_every, grader_options=_grader_options(judge, unsafe_sandbox), lost_node_retries=lost_node_retries
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with progress(console, *columns) as bar:
        task = bar.add_task(f"extend {config.name}", total=None, status="planning")

        def show(p) -> None:  # noqa: ANN001 - harness.extend.Progress
            status = f"{p.rate:.2f}/s  ${p.spend_usd:.4f}  " + (f"[red]{p.errors} errors[/]" if p.errors else "0 errors")
            bar.update(task, total=p.total, completed=p.done, status=status)

        report = run_extend(st, config, spec, address=address, on_progress=show)
    console.print(
        f"{config.name}: {report.planned} prompts to do ({report.skipped_done} already done), "
        f"{report.appended} outcomes appended, {report.graded} graded, ${report.spend_usd:.4f} spent"
    )
    for lost in report.lost:
        console.print(f"  resumed after a lost Ray node or worker ({lost})", highlight=False)
    if report.errors:
        console.print("  errors (recorded per outcome; a rerun retries them): " + ", ".join(f"{k} {v}" for k, v in sorted(report.errors.items())))
    usage = report.node_usage()
    for r in usage.itertuples():
        console.print(f"  nodes ({r.node_kind}): {r.nodes} up {r.node_seconds:.1f} node-s" + (f", device cost ${r.device_usd:.4f}" if r.device_usd else ""))
    if len(usage):
        how = "self-hosted, price.gpu_hour × GPUs × node-s" if config.engine.self_hosted else "an API model"
        console.print(f"  device cost ${usage['device_usd'].sum():.4f} ({how}), API spend ${0.0 if config.engine.self_hosted else report.spend_usd:.4f}")
    if placement_log is not None:
        write_placement(report, placement_log)
        on = report.placement
        console.print(f"  placement ({placement_log}): generation on {on['generated_on'].nunique()} node(s), grading on {on['graded_on'].nunique()} node(s)")
    if evaluate_after:
        from harness.evaluate import EvalSpec

        _evaluate_and_print(st, EvalSpec(families=_csv(tasks)), out, address=address)


@app.command()
def regrade(
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models (default: all).")] = None,
    judge: JudgeOpt = None,
    store: StoreOpt = None,
    unsafe_sandbox: UnsafeSandboxOpt = False,
    family: Annotated[Optional[str], typer.Option("--family", help="Only this task family's outcomes, never-graded ones too (served traffic: `--family traffic --judge …`).")] = None,
) -> None:
    """Grade stored responses again where the grader version changed or grading failed (no model calls)."""
    from harness.refresh import regrade as run_regrade

    counts = run_regrade(open_store(store), list(_csv(models) or ()) or None, grader_options=_grader_options(judge, unsafe_sandbox), family=family)
    console.print("regraded " + (", ".join(f"{m}: {n}" for m, n in sorted(counts.items())) or "nothing: every grade is current"))
    if counts.failed:
        failed = ", ".join(f"{m}: {n}" for m, n in sorted(counts.failed.items()))
        console.print(f"  still without a grade ({failed}): the grader's errors are recorded per outcome; a rerun retries them", highlight=False)


@app.command()
def reprice(
    models_dir: Annotated[Optional[Path], typer.Option(help="Model configs with the current prices.")] = None,
    store: StoreOpt = None,
) -> None:
    """Recompute costs from stored token counts where a config's prices changed (no model calls)."""
    from harness.model_config import load_model_configs
    from harness.refresh import reprice as run_reprice

    counts, skipped = run_reprice(open_store(store), load_model_configs(models_dir))
    console.print("repriced " + (", ".join(f"{m}: {n}" for m, n in sorted(counts.items())) or "nothing: every cost is current"))
    for model, why in sorted(skipped.items()):
        console.print(f"  skipped {model}: {why}")


@app.command()
def refresh(
    models_dir: Annotated[Optional[Path], typer.Option("--models", help="Directory of model configs.")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task families (default: all in the store).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="The first N prompts of each family.")] = None,
    judge: JudgeOpt = None,
    store: StoreOpt = None,
    address: AddressOpt = None,
    evaluate_after: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Evaluate the routers afterwards.")] = True,
    out: Annotated[str, typer.Option(help="Directory (or URI) for the evaluation's results.")] = "results",
    unsafe_sandbox: UnsafeSandboxOpt = False,
) -> None:
    """Scheduled upkeep: answer missing or stale prompts for every model config, regrade, reprice, evaluate."""
    from harness.extend import ExtendSpec
    from harness.refresh import refresh as run_refresh

    st = open_store(store)
    spec = ExtendSpec(families=_csv(tasks), limit=limit, grader_options=_grader_options(judge, unsafe_sandbox))
    report = run_refresh(st, str(models_dir) if models_dir else None, spec, address=address, on_model=lambda m: console.print(f"refreshing {m}…"))
    for name, r in report.extended.items():
        console.print(f"{name}: {r.appended} outcomes appended ({r.skipped_done} already current), ${r.spend_usd:.4f}")
    for name, why in sorted(report.skipped.items()):
        console.print(f"skipped {name}: {why}")
    console.print(
        "regraded " + (", ".join(f"{m}: {n}" for m, n in sorted(report.regraded.items())) or "nothing")
        + "; repriced " + (", ".join(f"{m}: {n}" for m, n in sorted(report.repriced.items())) or "nothing")
    )
    for _, why in sorted(report.broken.items()):
        err_console.print(f"broken model config (skipped): {why}", highlight=False)
    if evaluate_after:
        from harness.evaluate import EvalSpec

        _evaluate_and_print(st, EvalSpec(), out, address=address)
    if report.broken:
        raise typer.Exit(1)  # the others were refreshed; a scheduler still sees that one needs fixing


@sandbox_app.command("check")
def sandbox_check() -> None:
    """Which layers of the code sandbox are active here, each shown by a short self-test."""
    from harness.grading.sandbox_check import run_checks

    checks = run_checks()
    table = Table(title="code sandbox (model-written code runs here when grading)", title_justify="left")
    for col in ("layer", "active", "evidence"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.layer, {True: "[green]yes[/]", False: "[red]NO[/]", None: "[yellow]n/a[/]"}[c.ok], c.detail)
    console.print(table)
    failed = [c.layer for c in checks if c.ok is False]
    if failed:
        raise UserError(f"sandbox layers not working: {', '.join(failed)}")
    console.print("sandbox ok: code-exec grading runs in bubblewrap")


def _grader_options(judge: Path | None, unsafe_sandbox: bool) -> dict:
    """The grader options the CLI's flags set; each grader takes those it declares."""
    if unsafe_sandbox:
        err_console.print("[bold red]warning:[/] --unsafe-sandbox: model-written code is graded without bubblewrap; outcomes record 'code-exec@…+unsafe-sandbox'", highlight=False)
    return {k: v for k, v in {"judge": str(judge) if judge else None, "unsafe_sandbox": unsafe_sandbox}.items() if v}


app.add_typer(prompts_app, name="prompts")
app.command()(generate)


@app.command()
def serve(
    routers: Annotated[Optional[list[str]], typer.Option("--routers", help="A router setting to deploy, named as clients send it in `model`: ROUTER[:K=V,…]@cost=USD (λ calibrated on the store to that mean $ per query) or @lambda=X, e.g. knn:k=10@cost=0.001. Repeat for several.")] = None,
    models: Annotated[Optional[list[Path]], typer.Option("--models", help="Model config YAML of each model of the pool (its name is the store's model), e.g. --models model_configs/a.yaml --models model_configs/b.yaml.")] = None,
    store: StoreOpt = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of Ray Serve's proxy.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every one).")] = "127.0.0.1",
    address: AddressOpt = None,
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated task families to fit on (default: all but the traffic family).")] = None,
    family: Annotated[str, typer.Option(help="Task family that served requests are appended to.")] = "traffic",
    embedder: Annotated[str, typer.Option(help="sentence-transformers model embedding the prompts.")] = "all-MiniLM-L6-v2",
    embed_backend: Annotated[Optional[str], typer.Option(help="torch or fast (int8 ONNX); default fast where onnxruntime is installed.")] = None,
    status: Annotated[bool, typer.Option("--status", help="Print the metrics of the app running at --host/--port and exit.")] = False,
    save_fit: Annotated[Optional[Path], typer.Option("--save-fit", help="After fitting, save each setting's fit into this directory (a JSON manifest + a .skops state each) for --fit.")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Serve replicas of the app (each routes on one Python thread; --status adds up their counters).")] = 1,
    fit: Annotated[Optional[Path], typer.Option("--fit", help="Load the settings' fits saved in this directory by --save-fit instead of fitting on the store (no embedding, no cross-validation).")] = None,
) -> None:
    """Serve router settings behind an OpenAI-compatible endpoint on Ray Serve; served traffic goes to the store."""
    from harness.serving import server

    if status:
        console.print(server.status_table(server.read_status(f"http://{host}:{port}")))
        return
    if not routers:
        raise UserError("serve needs --routers, e.g. --routers knn:k=10@cost=0.001")
    st = open_store(store)
    plan = server.build_plan(st.uri, routers, models or [], family=family, tasks=_csv(tasks), embedder=embedder, embed_backend=embed_backend, save_fit=save_fit, fit=fit)
    where = f", loaded from {fit}" if fit is not None else f", saved to {save_fit}" if save_fit is not None else ""
    for r in plan.routes:
        console.print(f"{r.setting.name}: {r.setting.router} {r.setting.config} at λ={r.lam:.4g} ({r.status}), fitted on {r.n_train} prompts{where}")
    url = server.start(plan, port=port, host=host, address=address, replicas=replicas)
    console.print(f"serving {', '.join(r.setting.name for r in plan.routes)} at {url}/v1 (Ctrl-C stops; traffic goes to {st.uri}, family {family})")
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
        console.print("stopped; queued traffic was written")


def main() -> None:
    try:
        app()
    except UserError as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except RunStopped as exc:
        err_console.print(f"error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; the store keeps only completed commits, rerun to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
