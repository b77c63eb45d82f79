"""The store layout before Delta Lake (read by ``routerbench data migrate`` and the store benchmark).

Layout under the store root (any local path or pyarrow filesystem URI)::

    _commits/<time_ns>-<id>.json          one file per committed append: the files it added
    _commits/_lock, _compact.lock          local disk only: who may commit / compact right now
    prompts/part-<id>.parquet
    outcomes/model=<quoted name>/part-<id>.parquet
    embeddings/embedder=<quoted name>/part-<id>.parquet

A data file is invisible until a commit file lists it; readers take the union of the live commits
in commit-name order, the later commit winning where a key appears twice. It is kept whole, writer
included, so that tests can make a store of this layout and ``migrate`` can be checked against it.
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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from harness.store import (
    OUTCOMES,
    PROMPTS,
    TABLES,
    AppendResult,
    StoreReader,
    TableSpec,
    check_batch,
    check_have_prompts,
    compared_columns,
    drop_known,
)
from harness.errors import UserError
from harness.filesystem import Location, check_reachable, delete_if_present, list_names, read_bytes, resolve, storage_errors, write_bytes_atomic

COMMITS_DIR = "_commits"
COMMIT_FORMAT = 1
COMMIT_LOCK = "_lock"
COMPACT_LOCK = "_compact.lock"


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
    def wrapper(self: LegacyStore, *args, **kwargs):
        with storage_errors(self.uri):
            return method(self, *args, **kwargs)

    return wrapper


def _partition_dir(table: TableSpec, value: str | None) -> str:
    if value is None:
        return table.name
    return f"{table.name}/{table.partition_by}={quote(value, safe='')}"


class LegacyStore(StoreReader):
    """A store of the pre-Delta layout at a local path or pyarrow filesystem URI."""

    def __init__(self, uri: str | os.PathLike) -> None:
        self.uri = os.fspath(uri)
        self.location: Location = resolve(self.uri)
        self._commit_cache: dict[str, Commit] = {}
        self._reachable = self.location.is_local

    def __repr__(self) -> str:
        return f"LegacyStore({self.uri!r})"

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

    # ------------------------------------------------------------------ writing
    @_storage_op
    def append_tables(self, tables: dict[TableSpec, pa.Table], *, overwrite: bool = False, source: str = "append", fresh_keys: bool = False) -> AppendResult:  # noqa: ARG002 - keys checked always
        """Append Arrow tables (already in their table's schema) in one atomic commit.

        Without ``overwrite`` each key is written once: keys stored when the append starts are
        skipped, and so are keys that another process commits while this one writes its files
        (checked again under the commit lock, where the commit name is chosen too). So of two
        concurrent writers of the same keys, the first to commit keeps its values, and the second
        counts what it skipped in ``raced``; readers never see the two values flip.
        """
        check_batch(tables, source)
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
        partitions = None if spec.partition_by is None else pc.unique(tbl.column(spec.partition_by)).to_pylist()
        return drop_known(spec, tbl, self._read(spec, compared_columns(spec), partitions, commits), source)

    def _check_outcomes_have_prompts(self, o_tbl: pa.Table, p_tbl: pa.Table | None, source: str, commits: list[Commit]) -> None:
        check_have_prompts(o_tbl, p_tbl, self._read(PROMPTS, ["sample_id"], None, commits)["sample_id"], source)

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
