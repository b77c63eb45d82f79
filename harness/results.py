"""An evaluation's results as typed records, written and read back in one place.

A results directory (``evaluate --out``: a path or a URI such as ``s3://bucket/results``) holds
``points.parquet``, ``aiq.csv``, ``calibrated.csv`` (with ``--target-*``), one plot per task family
and ``run.json``: the :class:`RunRecord` of what the numbers were computed from (the store and the
version of each table read, the full spec, the embedder, the environment), so the leaderboard can
label it and ``evaluate --rerun`` can compute them again. :func:`run_evaluation` is the one way an
evaluation gets from a store to such a directory; ``evaluate``, ``extend --evaluate`` and
``refresh --evaluate`` all call it, and only print what it returns.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from harness.store import Store
from harness.errors import UserError
from harness.evaluate import EvalResult, EvalSpec

RUN_FILE = "run.json"
POINTS_FILE = "points.parquet"
AIQ_FILE = "aiq.csv"
CALIBRATED_FILE = "calibrated.csv"


# ---------------------------------------------------------------------- run.json
def _git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


class Environment(BaseModel):
    """Where an evaluation ran: the versions that can change its numbers, and the host."""

    model_config = ConfigDict(extra="allow")

    python: Optional[str] = None
    routerbench: Optional[str] = None
    ray: Optional[str] = None
    deltalake: Optional[str] = None
    numpy: Optional[str] = None
    host: Optional[str] = None

    @classmethod
    def current(cls) -> Environment:
        return cls(
            python=platform.python_version(),
            routerbench=_version("routerbench"),
            ray=_version("ray"),
            deltalake=_version("deltalake"),
            numpy=_version("numpy"),
            host=socket.gethostname(),
        )


class Embedder(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Optional[str] = None
    backend: Optional[str] = None
    text: Optional[str] = None


class RunRecord(BaseModel):
    """``run.json``. Field names are those every run.json has had (other tools read them);
    ``environment`` is new, so older files read with it ``None``, and unknown top-level keys are kept."""

    model_config = ConfigDict(extra="allow")

    dataset: Optional[str] = None  # the label of `routerbench leaderboard` (None: the directory's name)
    store: str
    store_versions: Optional[dict[str, Optional[int]]] = None  # None: written before the store had versions
    spec: EvalSpec
    embedder: Embedder
    package_version: Optional[str] = None
    git_commit: Optional[str] = None
    created_at: str
    sources: list[str] = []
    rerun_of: Optional[str] = None
    environment: Optional[Environment] = None
    #: Where each routing task ran: ``{task_family, router, config, node_id}`` (Ray node ids; None without Ray).
    placement: Optional[list[dict[str, Optional[str]]]] = None

    @field_validator("spec", mode="before")
    @classmethod
    def _spec(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in fields(EvalSpec)})
            if unknown:
                raise ValueError(f"spec field(s) {', '.join(unknown)} unknown to this version of routerbench")
            return EvalSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        return value

    @property
    def label(self) -> str | None:
        return self.dataset

    @classmethod
    def of(
        cls, spec: EvalSpec, store: Store, label: str | None = None, sources: list[str] | tuple[str, ...] = (), rerun_of: str | None = None, placement: pd.DataFrame | None = None
    ) -> RunRecord:
        """The record of evaluating ``spec`` on ``store`` (pinned: its versions are what was read), now."""
        return cls(
            dataset=label,
            store=store.uri,
            store_versions=store.versions(),
            spec=spec,
            embedder=Embedder(model=spec.embedder, backend=spec.embed_backend, text=spec.embed_text),
            package_version=_version("routerbench"),
            git_commit=_git_commit(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            sources=list(sources),
            rerun_of=rerun_of,
            environment=Environment.current(),
            placement=placement.to_dict("records") if placement is not None and len(placement) else None,
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, default=str) + "\n"

    def store_at(self, uri: str | None = None, where: str = RUN_FILE) -> Store:
        """The store as this run read it (at ``uri`` when it has moved), for ``evaluate --rerun``
        (``where``: the run.json, for the message when it cannot be)."""
        if self.store_versions is None:
            raise UserError(f"{where}: has no store_versions (written before the store had versions); it cannot be rerun exactly")
        return Store(uri or self.store, versions=self.store_versions)


def _run_json_path(path: str) -> str:
    return path if path.endswith(".json") else f"{path.rstrip('/')}/{RUN_FILE}"


def parse_run_record(text: str | bytes, where: str = RUN_FILE) -> RunRecord:
    """A run.json's text as a :class:`RunRecord`; a one-line :class:`UserError` naming ``where`` if it is not one."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{where}: not a readable run.json ({str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        raise UserError(f"{where}: not a readable run.json (no spec)")
    try:
        record = RunRecord.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["loc"] == ("spec",) and msg.startswith("spec field(s)"):
            raise UserError(f"{where}: {msg}") from None
        loc = ".".join(map(str, first["loc"])) or "(top level)"
        raise UserError(f"{where}: not a readable run.json ({loc}: {msg})") from None
    return record


def read_run_record(path: str) -> RunRecord:
    """Read a ``run.json`` (local path or URI; a results directory means its run.json)."""
    from harness.filesystem import read_bytes, resolve, storage_errors

    where = _run_json_path(path)
    loc = resolve(where)
    try:
        with storage_errors(where):
            data = read_bytes(loc.fs, loc.path)
    except UserError as exc:
        raise UserError(f"{where}: not a readable run.json ({str(exc).splitlines()[0]})") from exc
    return parse_run_record(data, where)


# ---------------------------------------------------------------------- results directories
def is_remote(out: str | os.PathLike) -> bool:
    return "://" in os.fspath(out)


def check_destination(out: str) -> None:
    """An unreachable endpoint or a missing bucket fails now, not after the evaluation."""
    if is_remote(out):
        from harness.filesystem import check_reachable, resolve

        check_reachable(resolve(out), out)


@contextmanager
def _staging(out: str | os.PathLike, upload: Callable[[], list[str] | None] = lambda: None) -> Iterator[Path]:
    """A local directory to write into: ``out`` itself, or a temporary one uploaded to the URI afterwards
    (every file, or only the names ``upload()`` returns)."""
    if not is_remote(out):
        local = Path(out)
        local.mkdir(parents=True, exist_ok=True)
        yield local
        return
    from harness.filesystem import upload_dir

    local = Path(tempfile.mkdtemp(prefix="routerbench-results-"))
    try:
        yield local
        upload_dir(local, os.fspath(out), upload())
    finally:
        shutil.rmtree(local, ignore_errors=True)


@dataclass(frozen=True, eq=False)
class Results:
    """One results directory, typed. ``summary`` (prompts per family) comes from an evaluation and
    is not written; ``points`` is ``None`` when read with ``points=False``."""

    points: pd.DataFrame | None
    aiq: pd.DataFrame
    record: RunRecord | None = None
    calibrated: pd.DataFrame | None = None  # harness.calibration.CALIBRATION_COLUMNS
    summary: pd.DataFrame | None = None

    @property
    def families(self) -> list[str]:
        if self.summary is not None:
            return list(self.summary["task_family"])
        return sorted(self.aiq["task_family"].unique())

    def label(self, out: str | os.PathLike) -> str:
        """The dataset's name: run.json's ``dataset``, else the results directory's name."""
        if self.record is not None and self.record.dataset:
            return str(self.record.dataset)
        text = os.fspath(out)
        return text.rstrip("/").rsplit("/", 1)[-1] if is_remote(text) else Path(text).resolve().name

    def _plots(self, local: Path) -> list[str]:
        from harness.report import plot_family

        if self.points is None:
            raise ValueError("these results were read without their points: read them with points=True to draw plots")
        return [plot_family(self.points, self.aiq, family, local / f"{family}.png").name for family in self.families]

    def write(self, out: str | os.PathLike) -> None:
        """Write every file of the directory (to a temporary directory first when ``out`` is a URI)."""
        if self.points is None:
            raise ValueError("these results were read without their points; they cannot be written")
        with _staging(out) as local:
            self.points.to_parquet(local / POINTS_FILE, index=False)
            self.aiq.to_csv(local / AIQ_FILE, index=False)
            if self.record is not None:
                (local / RUN_FILE).write_text(self.record.to_json())
            if self.calibrated is not None:
                self.calibrated.to_csv(local / CALIBRATED_FILE, index=False)
            self._plots(local)

    def write_plots(self, out: str | os.PathLike) -> list[str]:
        """Draw the plots again into ``out`` (only they are uploaded to a URI); their file names."""
        names: list[str] = []
        with _staging(out, upload=lambda: names) as local:
            names.extend(self._plots(local))
        return names

    @classmethod
    def read(cls, out: str | os.PathLike, points: bool = True) -> Results:
        """Read a results directory back; a one-line :class:`UserError` where it holds no results."""
        text = os.fspath(out)
        required = [AIQ_FILE, *([POINTS_FILE] if points else [])]
        with _reading(text, [*required, RUN_FILE, CALIBRATED_FILE]) as (local, present):
            for name in required:
                if name not in present:
                    raise UserError(f"{text}: no evaluation results there (no {name}); run `routerbench evaluate --out {text}` first")
            try:
                aiq = pd.read_csv(local / AIQ_FILE, keep_default_na=True, float_precision="round_trip").fillna({"config": ""})
                pts = pd.read_parquet(local / POINTS_FILE) if points else None
                calibrated = (
                    pd.read_csv(local / CALIBRATED_FILE, keep_default_na=True, float_precision="round_trip").fillna({"config": ""})
                    if CALIBRATED_FILE in present
                    else None
                )
            except (OSError, ValueError) as exc:
                raise UserError(f"{text}: unreadable results ({str(exc).splitlines()[0]}); run `routerbench evaluate --out {text}` again") from exc
            record = parse_run_record((local / RUN_FILE).read_bytes(), _run_json_path(text)) if RUN_FILE in present else None
        return cls(points=pts, aiq=aiq, record=record, calibrated=calibrated)


@contextmanager
def _reading(out: str, names: list[str]) -> Iterator[tuple[Path, set[str]]]:
    """``out`` as a local directory (a URI's files downloaded to a temporary one) and which of ``names`` it holds."""
    if not is_remote(out):
        local = Path(out)
        yield local, {n for n in names if (local / n).is_file()}
        return
    from harness.filesystem import download_files

    local = Path(tempfile.mkdtemp(prefix="routerbench-report-"))
    try:
        missing = download_files(out, names, local)
        yield local, set(names) - set(missing)
    finally:
        shutil.rmtree(local, ignore_errors=True)


# ---------------------------------------------------------------------- one evaluation
@dataclass
class Evaluation:
    """What :func:`run_evaluation` wrote (``results``), with what the CLI reports beside the tables."""

    results: Results
    result: EvalResult  # per-family notes, pools, skipped families, calibrations
    store: Store  # the pinned store read
    out: str


def run_evaluation(
    store: Store,
    spec: EvalSpec,
    out: str,
    *,
    label: str | None = None,
    sources: list[str] | tuple[str, ...] = (),
    rerun_of: str | None = None,
    address: str | None = None,
    parallel: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    on_embed: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Evaluate ``spec`` on one state of ``store`` and write the results directory ``out``."""
    from harness.calibration import calibration_rows
    from harness.evaluate import evaluate

    check_destination(out)
    st = store.pinned()  # one state of the store for the whole evaluation, named in run.json
    spec = spec.resolved()
    spec.targets()  # a bad --target-* is reported before any work
    result = evaluate(st, spec, address=address, parallel=parallel, on_progress=on_progress, on_embed=on_embed)
    results = Results(
        points=result.points,
        aiq=result.aiq,
        record=RunRecord.of(spec, st, label, sources=sources, rerun_of=rerun_of, placement=result.placement),
        calibrated=calibration_rows(result.calibrated) if result.calibrated else None,
        summary=result.summary,
    )
    results.write(out)
    return Evaluation(results, result, st, out)
