"""What every `routerbench` command group shares: the consoles and the common options.

Piped output (CI logs, `ray job logs`) gets wide lines instead of rich's 80-column default.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from harness.store import Store, default_store_uri

console = Console(width=None if sys.stdout.isatty() else 150, soft_wrap=True)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

StoreOpt = Annotated[
    Optional[str],
    typer.Option("--store", envvar="ROUTERBENCH_STORE", help="Store location: a path or pyarrow URI (s3://…).", show_default="~/.routerbench/store"),
]
AddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster address (default: RAY_ADDRESS or a local Ray).")]


def open_store(uri: str | None, as_of: str | None = None) -> Store:
    """The store a command's ``--store`` names (else ``$ROUTERBENCH_STORE``, else the default)."""
    return Store(uri or default_store_uri(), as_of=as_of)
