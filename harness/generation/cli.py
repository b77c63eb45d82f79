"""``routerbench generate``: run a model config's engine over prompts and write raw outcomes.

Registered on the main app in ``harness/cli.py``; importing this module stays light (no Ray, no
SDK) so that ``routerbench --help`` is fast.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.cli_options import AddressOpt, StoreOpt, console, open_store
from harness.errors import UserError
from harness.generation.base import Result
from harness.progress import progress



class RunTally:
    """What the progress bar shows: answers, tokens, spend and errors so far."""

    def __init__(self) -> None:
        self.done = self.input_tokens = self.output_tokens = 0
        self.spent = 0.0
        self.errors: Counter[str] = Counter()
        self.example: dict[str, str] = {}

    def add(self, r: Result) -> None:
        self.done += 1
        self.input_tokens += r.input_tokens or 0
        self.output_tokens += r.output_tokens or 0
        self.spent += r.cost_usd or 0.0
        if not r.ok:
            self.errors[r.error or "engine"] += 1
            self.example.setdefault(r.error or "engine", f"{r.sample_id}: {r.error_detail}")

    def fields(self) -> dict[str, str]:
        errors = sum(self.errors.values())
        return {
            "tokens": f"{self.input_tokens:,}→{self.output_tokens:,} tok",
            "spend": f"${self.spent:.4f}",
            "errors": f"[red]{errors} errors[/]" if errors else "0 errors",
        }


def _progress():  # noqa: ANN202 - rich's Progress on a terminal, plain lines when piped
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TextColumn("{task.fields[tokens]}"),
        TextColumn("{task.fields[spend]}"),
        TextColumn("{task.fields[errors]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return progress(console, *columns)


def _prompt_rows(prompts: Path | None, tasks: str | None, store: str | None, limit: int | None):  # noqa: ANN202 - (pd.DataFrame, dict)
    """The prompt rows to answer and what the store keeps for their task families (none for a file)."""
    from harness.generation.prompts import read_prompt_file, store_prompts

    if (prompts is None) == (tasks is None):
        raise UserError("give exactly one of --prompts FILE or --tasks FAMILIES")
    if prompts is not None:
        return read_prompt_file(prompts, limit), {}
    families = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    st = open_store(store)
    return store_prompts(st, families, limit), st.families()


def _check_before_running(config) -> None:  # noqa: ANN001 - harness.model_config.ModelConfig
    """What a config needs that can be checked without starting anything (its API key, its chat
    template), checked before Ray starts or --out is touched."""
    if not config.self_hosted:
        from harness.generation.api import api_key

        api_key(config)
    config.chat_template()  # reads the template file: a missing one is a one-line error


def generate(
    model: Annotated[Path, typer.Option("--model", help="Model config YAML, e.g. model_configs/gemma3-270m-local.yaml.")],
    out: Annotated[Path, typer.Option("--out", help="Parquet file for the raw outcomes (store columns + error).")],
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="JSONL or CSV with sample_id, prompt (optional max_tokens).")] = None,
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Comma-separated task families: their prompts from the store.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N prompts.")] = None,
    store: StoreOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Start afresh instead of keeping the answers already in --out.")] = False,
    address: AddressOpt = None,
) -> None:
    """Answer prompts with a model (vLLM, llama.cpp, OpenAI, Anthropic, any OpenAI-compatible server); no grading."""
    from harness.answering import Answerer, work_rows
    from harness.generation.outcomes import outcome_table, read_answered, write_outcomes
    from harness.model_config import load_model_config
    from harness.ray_runtime import ensure_ray

    config = load_model_config(model)
    _check_before_running(config)
    rows, families = _prompt_rows(prompts, tasks, store, limit)
    work = work_rows(rows, config, families=families)
    kept = None if overwrite else read_answered(out, config.name)
    if kept is not None and kept.num_rows:
        # an answer counts under the config hash it was asked with, as in the store
        asked = set(zip(work["sample_id"], work["config_hash"]))
        same = [pair in asked for pair in zip(kept.column("sample_id").to_pylist(), kept.column("config_hash").to_pylist())]
        kept = kept.filter(same)
        work = work[~work["sample_id"].isin(set(kept.column("sample_id").to_pylist()))]
        console.print(f"{out}: keeping {kept.num_rows} answers from an earlier run")
    tables = [kept] if kept is not None else []
    if work.empty:
        console.print("nothing left to answer")
        write_outcomes(out, tables)
        return
    ensure_ray(address)
    tally, results = RunTally(), []
    try:
        with _progress() as progress:
            task = progress.add_task(config.name, total=len(work), rate="", **tally.fields())

            def show(r: Result) -> None:
                results.append(r)
                tally.add(r)
                elapsed = progress.tasks[0].elapsed or 0.0
                rate = f"{tally.done / elapsed:.1f} req/s" if elapsed > 0 else ""
                progress.update(task, advance=1, rate=rate, **tally.fields())

            answerer = Answerer(config)
            try:
                answerer.answer(work, on_result=show)
            finally:
                answerer.close()
    except BaseException:
        # An interrupted run keeps what it finished (a rerun does the rest); one that failed before
        # its first answer (an engine that cannot start on this config) leaves --out as it was.
        if results:
            write_outcomes(out, [*tables, outcome_table(results, work)])
        raise
    rows = write_outcomes(out, [*tables, outcome_table(results, work)])
    failed = sum(tally.errors.values())
    console.print(
        f"wrote {rows} outcomes of {config.name} to {out}: {tally.done - failed} answered now, {failed} failed; "
        f"{tally.input_tokens:,} input + {tally.output_tokens:,} output tokens, ${tally.spent:.4f}"
    )
    for kind, n in tally.errors.most_common():
        console.print(f"  {n} × {kind}, e.g. {tally.example[kind]}", highlight=False)
    if "spend_cap" in tally.errors:
        console.print(f"  the spend cap (limits.max_spend_usd in {model}) stopped new calls; raise it and rerun to finish")
    if failed:
        console.print("  rerun the same command to retry the failed ones")
