"""``run.json``: what an evaluation was computed from, written next to its results.

It names the store and the version of each of its tables that was read, the full evaluation spec,
the embedder, the package version and git commit, and the time, so that a results directory says
where its numbers came from (the leaderboard labels it) and ``evaluate --rerun`` can compute them
again from the same data.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, fields
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


def run_record(spec: Any, store_uri: str, label: str | None = None, store_versions: dict[str, int | None] | None = None, **extra: Any) -> dict[str, Any]:
    """The record of one evaluation (``spec``: an :class:`harness.evaluate.EvalSpec`)."""
    return {
        "dataset": label,
        "store": store_uri,
        "store_versions": store_versions,
        "spec": asdict(spec),
        "embedder": {"model": spec.embedder, "backend": spec.embed_backend, "text": spec.embed_text},
        "package_version": _package_version(),
        "git_commit": _git_commit(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def write_run_record(directory: Path, record: dict[str, Any]) -> Path:
    path = directory / RUN_FILE
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


@dataclass(frozen=True)
class RunRecord:
    """A ``run.json`` read back: enough to evaluate again on the same data."""

    store: str
    store_versions: dict[str, int | None]
    spec: Any  # harness.evaluate.EvalSpec
    label: str | None


def read_run_record(path: str) -> RunRecord:
    """Read a ``run.json`` (local path or URI; a results directory means its run.json)."""
    from harness.errors import UserError
    from harness.evaluate import EvalSpec
    from harness.filesystem import read_bytes, resolve, storage_errors

    where = path if path.endswith(".json") else f"{path.rstrip('/')}/{RUN_FILE}"
    loc = resolve(where)
    try:
        with storage_errors(where):
            doc = json.loads(read_bytes(loc.fs, loc.path))
    except (UserError, ValueError) as exc:
        raise UserError(f"{where}: not a readable run.json ({str(exc).splitlines()[0]})") from exc
    if not isinstance(doc.get("store_versions"), dict) or not isinstance(doc.get("spec"), dict):
        raise UserError(f"{where}: has no store_versions (written before the store had versions); it cannot be rerun exactly")
    known = {f.name: f for f in fields(EvalSpec)}
    unknown = sorted(set(doc["spec"]) - set(known))
    if unknown:
        raise UserError(f"{where}: spec field(s) {', '.join(unknown)} unknown to this version of routerbench")
    spec = EvalSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["spec"].items()})
    return RunRecord(str(doc["store"]), {str(k): v for k, v in doc["store_versions"].items()}, spec.resolved(), doc.get("dataset"))


def read_label(directory: Path) -> str:
    """A results directory's dataset label: ``run.json``'s ``dataset``, else the directory's name."""
    try:
        label = json.loads((directory / RUN_FILE).read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        label = None
    return str(label) if label else directory.resolve().name
