"""``run.json``: what an evaluation was computed from, written next to its results.

It names the store, the full evaluation spec, the package version and git commit, and the time,
so that a results directory says where its numbers came from (and the leaderboard can label it).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _package_version() -> str | None:
    try:
        return version("routerbench")
    except PackageNotFoundError:
        return None


def run_record(spec: Any, store_uri: str, label: str | None = None, **extra: Any) -> dict[str, Any]:
    """The record of one evaluation (``spec``: an :class:`harness.evaluate.EvalSpec`)."""
    return {
        "dataset": label,
        "store": store_uri,
        "spec": asdict(spec),
        "package_version": _package_version(),
        "git_commit": _git_commit(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_run_record(directory: Path, record: dict[str, Any]) -> Path:
    path = directory / RUN_FILE
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def read_label(directory: Path) -> str:
    """A results directory's dataset label: ``run.json``'s ``dataset``, else the directory's name."""
    try:
        label = json.loads((directory / RUN_FILE).read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        label = None
    return str(label) if label else directory.resolve().name
