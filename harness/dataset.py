"""The outcome store: prompts and (prompt, model) outcomes in Parquet, with atomic, idempotent appends.

Layout under the store root (any local path or pyarrow filesystem URI)::

    _commits/<time_ns>-<id>.json          one file per committed append: the files it added
    _commits/_lock, _compact.lock          local disk only: who may commit / compact right now
    prompts/part-<id>.parquet
    outcomes/model=<quoted name>/part-<id>.parquet
    embeddings/...                        caches keyed by content (see harness.embeddings)

A data file is invisible until a commit file lists it, and a commit file appears atomically
(temp file + rename on local disk, a single PUT on object stores), so a crash at any point leaves
either the old state or the new one. Writers never edit a shared file: concurrent appends (two
``extend`` runs, say) each add their own commit and cannot lose each other's rows. Readers take
the union of the live commits in commit-name order; where a key appears twice (``overwrite``), the
later commit wins.

A key is written once unless ``overwrite``: an append checks the keys stored when it starts, then,
holding the commit lock, the commits that landed while it was writing, and picks its commit name
there (after every live one). Of two processes appending the same keys at the same time, the first
to commit keeps its values and the other reports the keys it skipped; none wins by clock.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from harness.errors import UserError
from harness.filesystem import Location, check_reachable, delete_if_present, list_names, read_bytes, resolve, storage_errors, write_bytes_atomic
from harness.matrix import OutcomeMatrix

TIMESTAMP = pa.timestamp("us", tz="UTC")

PROMPT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("task_family", pa.string(), nullable=False),
        # Decoded text; a JSON list of turns for multi-turn prompts.
        pa.field("prompt", pa.string()),
        # The prompt cell exactly as imported (RouterBench's "['…']"), for embedding parity.
        pa.field("prompt_original", pa.string()),
        pa.field("gold", pa.string()),
        pa.field("meta", pa.string()),
        pa.field("created_at", TIMESTAMP),
    ]
)

OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("response", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("cost_usd", pa.float64()),
        # Where cost_usd came from: published | tokens×price | estimated | unit (harness.formats.pricing).
        # Null in stores written before the column: read it with effective_cost_source().
        pa.field("cost_source", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("latency_s", pa.float64()),
        pa.field("grader", pa.string()),
        pa.field("config_hash", pa.string()),
        # Why there is no score (engine failure, grader error, missing gold); null for a graded outcome.
        pa.field("error", pa.string()),
        pa.field("created_at", TIMESTAMP),
    ]
)


def effective_cost_source(outcomes: pd.DataFrame) -> pd.Series:
    """``cost_source``, with rows stored before the column existed (null) read as ``tokens×price``
    where they carry token counts (outcomes of ``extend``, priced from a model config) and as
    ``published`` otherwise (imported RouterBench/long costs)."""
    src = outcomes["cost_source"] if "cost_source" in outcomes else pd.Series(None, index=outcomes.index, dtype=object)
    tokens = outcomes["input_tokens"].notna() if "input_tokens" in outcomes else pd.Series(False, index=outcomes.index)
    return src.where(src.notna(), np.where(tokens, "tokens×price", "published"))


EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("text_sha256", pa.string(), nullable=False),
        pa.field("embedder", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32())),
        pa.field("created_at", TIMESTAMP),
    ]
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    partition_by: str | None = None


PROMPTS = TableSpec("prompts", PROMPT_SCHEMA, ("sample_id",))
OUTCOMES = TableSpec("outcomes", OUTCOME_SCHEMA, ("sample_id", "model"), partition_by="model")
#: Embeddings cached per (text, embedder): computed once, reused by every router and run.
EMBEDDINGS = TableSpec("embeddings", EMBEDDING_SCHEMA, ("text_sha256", "embedder"), partition_by="embedder")
TABLES = {t.name: t for t in (PROMPTS, OUTCOMES, EMBEDDINGS)}

COMMITS_DIR = "_commits"
COMMIT_FORMAT = 1
COMMIT_LOCK = "_lock"
COMPACT_LOCK = "_compact.lock"
#: Columns compared when a key is already stored: a different value there is reported, not just skipped.
VALUE_COLUMNS = {OUTCOMES.name: ["score", "cost_usd", "response", "error"]}


class CompactionSkipped(UserError):
    """Another compaction is running, or replaced these commits first: nothing left for this one."""


@dataclass(frozen=True)
class DataFile:
    table: str
    path: str  # relative to the store root
    partition: str | None
    rows: int


@dataclass(frozen=True)
class Commit:
    name: str
    files: tuple[DataFile, ...]
    supersedes: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": COMMIT_FORMAT,
                "name": self.name,
                "created_at": datetime.now(timezone.utc).isoformat(),
                "files": [f.__dict__ for f in self.files],
                "supersedes": list(self.supersedes),
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Commit:
        doc = json.loads(data)
        return cls(doc["name"], tuple(DataFile(**f) for f in doc["files"]), tuple(doc.get("supersedes", ())))


@dataclass(frozen=True)
class AppendResult:
    """Rows added and rows skipped (key already stored) per table, and the commit written.

    Of the skipped rows, ``changed`` were stored before this append with other values (kept; pass
    ``overwrite`` to replace them), and ``raced`` were committed by another process while this one
    was writing, with other values (theirs kept).
    """

    added: dict[str, int]
    skipped: dict[str, int]
    commit: str | None = None
    changed: dict[str, int] = field(default_factory=dict)
    raced: dict[str, int] = field(default_factory=dict)

    @property
    def prompts_added(self) -> int:
        return self.added.get(PROMPTS.name, 0)

    @property
    def prompts_skipped(self) -> int:
        return self.skipped.get(PROMPTS.name, 0)

    @property
    def outcomes_added(self) -> int:
        return self.added.get(OUTCOMES.name, 0)

    @property
    def outcomes_skipped(self) -> int:
        return self.skipped.get(OUTCOMES.name, 0)

    @property
    def outcomes_changed(self) -> int:
        return self.changed.get(OUTCOMES.name, 0)

    @property
    def outcomes_raced(self) -> int:
        return self.raced.get(OUTCOMES.name, 0)


def _new_commit_name() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def _next_commit_name(after: Iterable[str]) -> str:
    """A name that sorts after every name in ``after``: readers order commits by name, and a wall
    clock can step back (or differ between hosts)."""
    last = max((int(n[:20]) for n in after if n[:20].isdigit()), default=0)
    return f"{max(time.time_ns(), last + 1):020d}-{uuid.uuid4().hex[:12]}"


@contextmanager
def _flock(path: str, *, blocking: bool) -> Iterator[None]:
    """An exclusive ``flock`` on a local file; the kernel drops it when the holder dies (even by SIGKILL).
    Not blocking: :class:`BlockingIOError` when another process holds it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)  # releases the lock


def _storage_op(method):
    """Failures of the filesystem under a store (an unreachable endpoint, a missing bucket, no
    permission) become one-line errors naming the store."""

    @functools.wraps(method)
    def wrapper(self: Store, *args, **kwargs):
        with storage_errors(self.uri):
            return method(self, *args, **kwargs)

    return wrapper


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality where two nulls are equal."""
    eq = (a == b).fillna(False).to_numpy(dtype=bool)
    return eq | (a.isna() & b.isna()).to_numpy(dtype=bool)


def _partition_dir(table: TableSpec, value: str | None) -> str:
    if value is None:
        return table.name
    return f"{table.name}/{table.partition_by}={quote(value, safe='')}"


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _conform(df: pd.DataFrame, table: TableSpec, source: str) -> pa.Table:
    """Cast a frame to the table's schema (missing optional columns become null)."""
    missing = [f.name for f in table.schema if not f.nullable and f.name not in df.columns]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)} for the {table.name} table")
    df = df.copy()
    created = pd.to_datetime(df["created_at"], utc=True) if "created_at" in df.columns else pd.Series(pd.NaT, index=df.index, dtype="datetime64[us, UTC]")
    df["created_at"] = created.fillna(_now())
    for f in table.schema:
        if f.name not in df.columns:
            df[f.name] = None
        if not f.nullable and df[f.name].isna().any():
            raise UserError(f"{source}: column '{f.name}' has empty values")
    try:
        return pa.Table.from_pandas(df[table.schema.names], schema=table.schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserError(f"{source}: a column does not fit the {table.name} schema: {exc}") from exc


def _check_outcome_values(tbl: pa.Table, source: str) -> None:
    df = tbl.select(["sample_id", "model", "score", "cost_usd"]).to_pandas()
    bad = df[(df["score"] < 0) | (df["score"] > 1)]
    if len(bad):
        r = bad.iloc[0]
        raise UserError(
            f"{source}: score {r.score} of model '{r.model}' on '{r.sample_id}' is outside [0, 1]"
            + (f" ({len(bad)} such values)" if len(bad) > 1 else "")
        )
    bad = df[df["cost_usd"] < 0]
    if len(bad):
        r = bad.iloc[0]
        raise UserError(f"{source}: negative cost_usd {r.cost_usd} of model '{r.model}' on '{r.sample_id}'")
    bad = df[df["score"].notna() & df["cost_usd"].isna()]
    if len(bad):
        r = bad.iloc[0]
        raise UserError(f"{source}: model '{r.model}' on '{r.sample_id}' has a score but no cost_usd")


def _duplicated_keys(df: pd.DataFrame, key: Iterable[str]) -> pd.Series:
    return df.duplicated(list(key), keep=False)


class Store:
    """An outcome store at a local path or pyarrow filesystem URI."""

    def __init__(self, uri: str | os.PathLike) -> None:
        self.uri = os.fspath(uri)
        self.location: Location = resolve(self.uri)
        self._commit_cache: dict[str, Commit] = {}
        self._reachable = self.location.is_local

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # ------------------------------------------------------------------ commits
    def _abs(self, rel: str) -> str:
        return self.location.join(rel)

    def _all_commits(self) -> tuple[list[Commit], list[Commit]]:
        """Every commit file (superseded ones included) and the live commits, both in name order."""
        if not self._reachable:  # one quick probe: an unreachable endpoint fails in seconds, not after retries
            check_reachable(self.location, self.uri)
            self._reachable = True
        fs = self.location.fs
        names = [n[: -len(".json")] for n in list_names(fs, self._abs(COMMITS_DIR)) if n.endswith(".json")]
        for name in names:
            if name not in self._commit_cache:
                self._commit_cache[name] = Commit.from_json(read_bytes(fs, self._abs(f"{COMMITS_DIR}/{name}.json")))
        every = [self._commit_cache[n] for n in names]
        superseded = {s for c in every for s in c.supersedes}
        return every, [c for c in every if c.name not in superseded]

    @_storage_op
    def commits(self) -> list[Commit]:
        """The live commits, oldest first."""
        return self._all_commits()[1]

    def files(self, table: str, partitions: Iterable[str] | None = None, commits: list[Commit] | None = None) -> list[DataFile]:
        wanted = None if partitions is None else set(partitions)
        return [
            f
            for c in (self.commits() if commits is None else commits)
            for f in c.files
            if f.table == table and (wanted is None or f.partition in wanted)
        ]

    def is_empty(self) -> bool:
        return not self.files(OUTCOMES.name)

    def models(self) -> list[str]:
        """Models with at least one outcome, in store order (sorted by name)."""
        return sorted({f.partition for f in self.files(OUTCOMES.name) if f.partition is not None})

    @contextmanager
    def _commit_lock(self) -> Iterator[None]:
        """Between an append's last look for stored keys and its commit, nobody else commits.

        Local disk: ``flock`` on ``_commits/_lock``, held for a listing and a commit write (plus a
        read of whatever landed meanwhile). Object stores: pyarrow offers no put-if-absent to build
        a lock on, so there the last look runs unlocked and two writers of the same keys that take
        it in the same instant can both commit (the later commit's values are then read).
        """
        if not self.location.is_local:
            yield
            return
        with _flock(self._abs(f"{COMMITS_DIR}/{COMMIT_LOCK}"), blocking=True):
            yield

    # ------------------------------------------------------------------ reading
    @_storage_op
    def read_table(self, table: TableSpec, columns: list[str] | None = None, partitions: Iterable[str] | None = None) -> pa.Table:
        """The live rows of a table as Arrow, deduplicated by key (the latest commit wins)."""
        for attempt in range(3):
            try:
                return self._read_table(table, columns, partitions, self.commits())
            except FileNotFoundError:
                if attempt == 2:
                    raise
                # a compaction committed and removed the files listed a moment ago: list again

    def _read_table(self, table: TableSpec, columns: list[str] | None, partitions: Iterable[str] | None, commits: list[Commit]) -> pa.Table:
        files = self.files(table.name, partitions, commits)
        wanted = list(table.schema.names if columns is None else columns)
        read_cols = wanted + [k for k in table.key if k not in wanted]
        if not files:
            return table.schema.empty_table().select(wanted)

        def load(f: DataFile) -> pa.Table:
            ds = pads.dataset(self._abs(f.path), schema=table.schema, format="parquet", filesystem=self.location.fs)
            return ds.to_table(columns=read_cols)

        with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
            tbl = pa.concat_tables(list(pool.map(load, files)))
        keys = tbl.select(list(table.key)).to_pandas()
        latest = ~keys.duplicated(list(table.key), keep="last").to_numpy()
        if not latest.all():  # overwritten keys
            tbl = tbl.filter(pa.array(latest))
        return tbl.select(wanted)

    def _read(self, table: TableSpec, columns: list[str] | None, partitions: Iterable[str] | None, commits: list[Commit] | None = None) -> pd.DataFrame:
        if commits is None:
            return self.read_table(table, columns, partitions).to_pandas()
        return self._read_table(table, columns, partitions, commits).to_pandas()

    def prompts(self, columns: list[str] | None = None, families: Iterable[str] | None = None) -> pd.DataFrame:
        df = self._read(PROMPTS, None if columns is None else list(dict.fromkeys([*columns, "task_family"])), None)
        if families is not None:
            df = df[df["task_family"].isin(list(families))].reset_index(drop=True)
        return df if columns is None else df[columns]

    def outcomes(self, columns: list[str] | None = None, models: Iterable[str] | None = None) -> pd.DataFrame:
        return self._read(OUTCOMES, columns, models)

    # ------------------------------------------------------------------ writing
    def append(
        self,
        prompts: pd.DataFrame | None = None,
        outcomes: pd.DataFrame | None = None,
        *,
        overwrite: bool = False,
        source: str = "append",
    ) -> AppendResult:
        """Add prompts and outcomes in one atomic commit.

        A key already in the store is skipped (idempotent re-runs) unless ``overwrite``; a prompt
        whose sample_id exists with a different text is an error, since outcomes would silently
        attach to the wrong question.
        """
        tables = {}
        for frame, spec in ((prompts, PROMPTS), (outcomes, OUTCOMES)):
            if frame is not None and len(frame):
                tables[spec] = _conform(frame, spec, source)
        return self.append_tables(tables, overwrite=overwrite, source=source)

    @_storage_op
    def append_tables(self, tables: dict[TableSpec, pa.Table], *, overwrite: bool = False, source: str = "append") -> AppendResult:
        """Append Arrow tables (already in their table's schema) in one atomic commit.

        Without ``overwrite`` each key is written once: keys stored when the append starts are
        skipped, and so are keys that another process commits while this one writes its files
        (checked again under the commit lock, where the commit name is chosen too). So of two
        concurrent writers of the same keys, the first to commit keeps its values, and the second
        counts what it skipped in ``raced``; readers never see the two values flip.
        """
        for spec, tbl in tables.items():
            keys = tbl.select(list(spec.key)).to_pandas()
            dup = keys[_duplicated_keys(keys, spec.key)]
            if len(dup):
                shown = ", ".join(sorted(set(dup.iloc[:, 0].astype(str)))[:5])
                raise UserError(f"{source}: {len(dup)} {spec.name} rows repeat a key ({spec.key[0]}: {shown})")
        if OUTCOMES in tables:
            _check_outcome_values(tables[OUTCOMES], source)
        skipped: dict[str, int] = {}
        changed: dict[str, int] = {}
        raced: dict[str, int] = {}
        for attempt in range(3):  # a compaction may remove the files of the listing being checked
            snapshot = self.commits()
            try:
                todo = dict(tables)
                if not overwrite:
                    for spec in list(todo):
                        todo[spec], skipped[spec.name], changed[spec.name] = self._drop_existing(spec, todo[spec], source, snapshot)
                if OUTCOMES in todo and len(todo[OUTCOMES]):
                    self._check_outcomes_have_prompts(todo[OUTCOMES], todo.get(PROMPTS), source, snapshot)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        tables = todo

        files = self._write_tables(tables)
        name = None
        try:
            if files:
                with self._commit_lock():
                    live = self.commits()
                    seen = {c.name for c in snapshot}
                    newer = [c for c in live if c.name not in seen]
                    if newer and not overwrite:  # committed while we wrote: the first to commit keeps its values
                        dropped = False
                        for spec in list(tables):
                            kept, known, differ = self._drop_existing(spec, tables[spec], source, newer)
                            if known:
                                tables[spec], dropped = kept, True
                                skipped[spec.name] += known
                                raced[spec.name] = differ
                        if dropped:
                            self._delete_files(files)
                            files = self._write_tables(tables)
                    if files:
                        name = _next_commit_name(c.name for c in live)
                        write_bytes_atomic(self.location.fs, self._abs(f"{COMMITS_DIR}/{name}.json"), Commit(name, tuple(files)).to_json())
        finally:
            if name is None:  # nothing committed: the files written for it would only be clutter
                self._delete_files(files)
        return AppendResult({spec.name: len(tbl) for spec, tbl in tables.items()}, skipped, name, changed, raced)

    def _write_tables(self, tables: dict[TableSpec, pa.Table]) -> list[DataFile]:
        """Write each table's rows, one file per partition (invisible until a commit lists them)."""
        token = _new_commit_name()
        files: list[DataFile] = []
        for spec, tbl in tables.items():
            if not len(tbl):
                continue
            if spec.partition_by is None:
                files.append(self._write_part(spec, None, tbl, token))
                continue
            values = tbl.column(spec.partition_by).to_pandas()
            for value, idx in values.groupby(values, sort=True).indices.items():
                files.append(self._write_part(spec, str(value), tbl.take(pa.array(idx)), token))
        return files

    def _write_part(self, table: TableSpec, partition: str | None, tbl: pa.Table, token: str) -> DataFile:
        rel = f"{_partition_dir(table, partition)}/part-{token}.parquet"
        path = self._abs(rel)
        self.location.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(tbl, path, filesystem=self.location.fs, compression="zstd")
        return DataFile(table.name, rel, partition, len(tbl))

    def _delete_files(self, files: Iterable[DataFile]) -> None:
        for f in files:
            delete_if_present(self.location.fs, self._abs(f.path))

    def _drop_existing(self, spec: TableSpec, tbl: pa.Table, source: str, commits: list[Commit]) -> tuple[pa.Table, int, int]:
        """Drop rows whose key ``commits`` hold already: the rows kept, how many were dropped, and how
        many of those are stored with other values. For prompts, a changed text is an error."""
        key = list(spec.key)
        compare = ["prompt"] if spec is PROMPTS else []
        new = tbl.select(key + compare).to_pandas()
        partitions = None if spec.partition_by is None else new[spec.partition_by].unique().tolist()
        existing = self._read(spec, key + compare, partitions, commits)
        if existing.empty:
            return tbl, 0, 0
        merged = new.merge(existing.assign(_stored=True), on=key, how="left", suffixes=("", "_old"))
        known = merged["_stored"].notna().to_numpy()
        if compare:
            clash = known & (merged["prompt"].fillna("") != merged["prompt_old"].fillna("")).to_numpy()
            if clash.any():
                ids = merged.loc[clash, "sample_id"].tolist()
                raise UserError(
                    f"{source}: {len(ids)} sample_id(s) already in the store with a different prompt "
                    f"({', '.join(ids[:5])}); re-key them (--on-ambiguous rekey) or pass --overwrite"
                )
        differ = 0
        values = VALUE_COLUMNS.get(spec.name)
        if values and known.any():
            mine = tbl.filter(pa.array(known)).select(key + values).to_pandas()
            theirs = self._read(spec, key + values, partitions, commits)
            both = mine.merge(theirs, on=key, suffixes=("", "_old"))
            same = np.logical_and.reduce([_same(both[c], both[f"{c}_old"]) for c in values])
            differ = int((~same).sum())
        return tbl.filter(pa.array(~known)), int(known.sum()), differ

    def _check_outcomes_have_prompts(self, o_tbl: pa.Table, p_tbl: pa.Table | None, source: str, commits: list[Commit]) -> None:
        ids = pd.Index(pd.unique(o_tbl.column("sample_id").to_numpy(zero_copy_only=False)))
        known = pd.Index(self._read(PROMPTS, ["sample_id"], None, commits)["sample_id"])
        if p_tbl is not None:
            known = known.append(pd.Index(p_tbl.column("sample_id").to_pandas()))
        orphans = ids.difference(known)
        if len(orphans):
            raise UserError(
                f"{source}: {len(orphans)} outcome(s) for prompts not in the store "
                f"({', '.join(map(str, orphans[:5]))}); import the prompts first or include prompt and task columns"
            )

    @_storage_op
    def compact(self) -> int:
        """Rewrite the live files as one file per partition; returns the number of commits replaced.

        One compaction at a time: one started while another runs, or whose commits another replaced
        first, raises :class:`CompactionSkipped` and leaves the store as it found it. Appends may go
        on meanwhile; their commits sort after the compaction's, so every read gives the same rows.
        """
        with self._compaction_lock():
            live = self.commits()
            if len(live) <= 1:
                return 0
            name = f"{live[-1].name}~compact-{uuid.uuid4().hex[:8]}"
            files: list[DataFile] = []
            committed = False
            try:
                for spec in TABLES.values():
                    partitions = sorted({f.partition for c in live for f in c.files if f.table == spec.name}, key=str)
                    for part in partitions:
                        tbl = self._read_table(spec, None, None if part is None else [part], live)
                        files.append(self._write_part(spec, part, tbl, name))
                with self._commit_lock():
                    current = {c.name for c in self.commits()}
                    if not all(c.name in current for c in live):
                        raise CompactionSkipped(f"{self.uri}: another compact replaced these commits meanwhile; nothing to do")
                    commit = Commit(name, tuple(files), tuple(c.name for c in live))
                    write_bytes_atomic(self.location.fs, self._abs(f"{COMMITS_DIR}/{name}.json"), commit.to_json())
                    committed = True
            except FileNotFoundError as exc:  # another compaction removed what this one was reading
                raise CompactionSkipped(f"{self.uri}: the store changed while compacting (another compact?); nothing to do") from exc
            finally:
                if not committed:
                    self._delete_files(files)
            self._delete_superseded()
            return len(live)

    @contextmanager
    def _compaction_lock(self) -> Iterator[None]:
        if not self.location.is_local:  # no lock on object stores: the check before committing guards instead
            yield
            return
        try:
            with _flock(self._abs(f"{COMMITS_DIR}/{COMPACT_LOCK}"), blocking=False):
                yield
        except BlockingIOError:
            raise CompactionSkipped(f"{self.uri}: another compact is running; nothing to do") from None

    def _delete_superseded(self) -> None:
        """Remove the files of superseded commits, data first: a commit file is the last thing to go,
        so an interrupted cleanup is finished by the next one."""
        every, live = self._all_commits()
        in_use = {f.path for c in live for f in c.files}
        live_names = {c.name for c in live}
        fs = self.location.fs
        for c in every:
            if c.name in live_names:
                continue
            self._delete_files(f for f in c.files if f.path not in in_use)
            delete_if_present(fs, self._abs(f"{COMMITS_DIR}/{c.name}.json"))
            self._commit_cache.pop(c.name, None)

    # ------------------------------------------------------------------ matrices
    def matrices(
        self,
        families: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        with_prompts: bool = False,
    ) -> dict[str, OutcomeMatrix]:
        """Score and cost matrices (prompts × models) per task family, in one vectorised pivot."""
        pcols = ["sample_id", "task", "task_family"] + (["prompt", "prompt_original"] if with_prompts else [])
        prompts = self.prompts(pcols, families=families).sort_values("sample_id", ignore_index=True)
        pool = list(models) if models is not None else self.models()
        outcomes = self.outcomes(["sample_id", "model", "score", "cost_usd"], models=pool)
        outcomes = outcomes[outcomes["score"].notna()]
        rows = pd.Index(prompts["sample_id"]).get_indexer(outcomes["sample_id"])
        cols = pd.Index(pool).get_indexer(outcomes["model"])
        keep = (rows >= 0) & (cols >= 0)
        shape = (len(prompts), len(pool))
        scores = np.full(shape, np.nan)
        costs = np.full(shape, np.nan)
        scores[rows[keep], cols[keep]] = outcomes["score"].to_numpy(dtype=float)[keep]
        costs[rows[keep], cols[keep]] = outcomes["cost_usd"].to_numpy(dtype=float)[keep]

        result: dict[str, OutcomeMatrix] = {}
        for family, idx in prompts.groupby("task_family", sort=True).indices.items():
            p = prompts.iloc[idx]
            result[str(family)] = OutcomeMatrix(
                family=str(family),
                sample_ids=p["sample_id"].to_numpy(dtype=object),
                tasks=p["task"].to_numpy(dtype=object),
                models=tuple(pool),
                scores=scores[idx],
                costs=costs[idx],
                prompts=p["prompt"].to_numpy(dtype=object) if with_prompts else None,
                prompts_original=p["prompt_original"].to_numpy(dtype=object) if with_prompts else None,
            )
        return result


def default_store_uri() -> str:
    """``$ROUTERBENCH_STORE``, else ``~/.routerbench/store``."""
    return os.environ.get("ROUTERBENCH_STORE") or os.path.expanduser("~/.routerbench/store")
