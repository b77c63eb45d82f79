"""The outcome store: prompts, outcomes and embeddings as Delta Lake tables under one URI.

Layout under the store root (a local path or an object-store URI such as ``s3://bucket/store``)::

    prompts/                      Delta table, key sample_id
    outcomes/model=<name>/        Delta table partitioned by model, key (sample_id, model)
    embeddings/embedder=<name>/   Delta table partitioned by embedder, key (text_sha256, embedder)

Every change is one Delta commit (the next numbered entry of the table's ``_delta_log``), atomic on
local disk and on object stores (put-if-absent), so a crash leaves the last committed version, and
every Delta reader (Polars, DuckDB, Spark, ``deltalake``) sees exactly the rows this code reads.

Keys are written once. An append reads the keys of the partitions it touches at the table's latest
version and inserts the absent rows with a MERGE whose predicate names those partitions; Delta's
conflict check fails that commit if another writer added files there since, and the append starts
over from the new version, skipping what the other wrote (counted in ``raced`` where the values
differ). Writers of different models touch different partitions and never conflict. ``overwrite``
updates stored values instead (a MERGE that also updates matches). Rows whose keys were generated
just now (``fresh_keys``: served traffic) are a blind Delta append instead, which reads no stored
key and never conflicts with another append: a writer that commits every few seconds for days
would otherwise read the whole table's keys at every commit.

Versions are per table. A :class:`Store` reads the latest versions unless pinned (``as_of`` or
``versions``); :meth:`Store.pinned` fixes the current ones, so that an evaluation reads one state
and can name it in ``run.json``.
"""

from __future__ import annotations

import functools
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness.errors import UserError, first_line
from harness.filesystem import Location, check_reachable, delta_location, is_directory, resolve, storage_errors
from harness.prompt_meta import FamilySettings
from harness.schema import COST_RANGE, EMBEDDING_SCHEMA, FAMILY_SCHEMA, OUTCOME_SCHEMA, PROMPT_SCHEMA, SCORE_RANGE, outside


def effective_cost_source(outcomes: pd.DataFrame) -> pd.Series:
    """``cost_source``, with rows stored before the column existed (null) read as ``tokens×price``
    where they carry token counts (outcomes of ``extend``, priced from a model config) and as
    ``published`` otherwise (imported RouterBench/long costs)."""
    src = outcomes["cost_source"] if "cost_source" in outcomes else pd.Series(None, index=outcomes.index, dtype=object)
    tokens = outcomes["input_tokens"].notna() if "input_tokens" in outcomes else pd.Series(False, index=outcomes.index)
    return src.where(src.notna(), np.where(tokens, "tokens×price", "published"))




@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    partition_by: str | None = None


PROMPTS = TableSpec("prompts", PROMPT_SCHEMA, ("sample_id",))
FAMILIES = TableSpec("families", FAMILY_SCHEMA, ("task_family",))
OUTCOMES = TableSpec("outcomes", OUTCOME_SCHEMA, ("sample_id", "model"), partition_by="model")
#: Embeddings cached per (text, embedder): computed once, reused by every router and run.
EMBEDDINGS = TableSpec("embeddings", EMBEDDING_SCHEMA, ("text_sha256", "embedder"), partition_by="embedder")
TABLES = {t.name: t for t in (PROMPTS, FAMILIES, OUTCOMES, EMBEDDINGS)}
#: Columns compared when a key is already stored: a different value there is reported, not just skipped.
VALUE_COLUMNS = {OUTCOMES.name: ["score", "cost_usd", "response", "error"]}


#: How often an append starts over after losing its commit to a concurrent writer of its partitions.
MAX_ATTEMPTS = 12
#: How often a compaction plans again after another commit landed while it was merging.
COMPACT_ATTEMPTS = 5
#: Default retention of ``compact``'s vacuum: files dropped from a table stay this long for readers of older versions.
DEFAULT_RETAIN_HOURS = 7 * 24
#: Tables a pinned store reads at its pinned versions; embeddings are a content-keyed cache, always at their latest.
PINNED_TABLES = (PROMPTS.name, FAMILIES.name, OUTCOMES.name)
#: Commit metadata key naming what wrote a version (``data history`` shows it).
SOURCE_KEY = "routerbench.source"


class CompactionSkipped(UserError):
    """Another compaction (or a writer) changed the files first: nothing left for this one."""


@dataclass(frozen=True)
class AppendResult:
    """Rows added and rows skipped (key already stored) per table, and the table versions written.

    Of the skipped rows, ``changed`` were stored before this append with other values (kept; pass
    ``overwrite`` to replace them), and ``raced`` were committed by another process while this one
    was writing, with other values (theirs kept).
    """

    added: dict[str, int]
    skipped: dict[str, int]
    versions: dict[str, int] = field(default_factory=dict)
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

    @property
    def commit(self) -> str | None:
        """The versions written, e.g. ``prompts v3, outcomes v7`` (None when nothing was added)."""
        return ", ".join(f"{t} v{v}" for t, v in self.versions.items()) or None


@dataclass(frozen=True)
class CompactResult:
    files_merged: int  # small files rewritten into larger ones
    files_vacuumed: int  # files deleted from storage (in no version within the retention period)

    def __bool__(self) -> bool:
        return bool(self.files_merged or self.files_vacuumed)


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality where two nulls are equal."""
    eq = (a == b).fillna(False).to_numpy(dtype=bool)
    return eq | (a.isna() & b.isna()).to_numpy(dtype=bool)


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
    bad = df[outside(df["score"].to_numpy(float), SCORE_RANGE)]
    if len(bad):
        r = bad.iloc[0]
        raise UserError(
            f"{source}: score {r.score} of model '{r.model}' on '{r.sample_id}' is outside [0, 1]"
            + (f" ({len(bad)} such values)" if len(bad) > 1 else "")
        )
    bad = df[outside(df["cost_usd"].to_numpy(float), COST_RANGE)]
    if len(bad):
        r = bad.iloc[0]
        raise UserError(f"{source}: negative cost_usd {r.cost_usd} of model '{r.model}' on '{r.sample_id}'")
    bad = df[df["score"].notna() & df["cost_usd"].isna()]
    if len(bad):
        r = bad.iloc[0]
        raise UserError(f"{source}: model '{r.model}' on '{r.sample_id}' has a score but no cost_usd")


def _duplicated_keys(df: pd.DataFrame, key: Iterable[str]) -> pd.Series:
    return df.duplicated(list(key), keep=False)


def compared_columns(spec: TableSpec) -> list[str]:
    """The columns an append reads of the stored rows: the key, the prompt text (prompts), the values (outcomes)."""
    return list(spec.key) + (["prompt"] if spec is PROMPTS else []) + VALUE_COLUMNS.get(spec.name, [])


def drop_known(spec: TableSpec, tbl: pa.Table, existing: pd.DataFrame, source: str) -> tuple[pa.Table, int, int]:
    """Drop rows whose key ``existing`` (stored rows, :func:`compared_columns`) holds: the rows kept,
    how many were dropped, and how many of those are stored with other values. For prompts, a
    changed text is an error: outcomes would silently attach to another question."""
    if existing.empty:
        return tbl, 0, 0
    key = list(spec.key)
    compare = ["prompt"] if spec is PROMPTS else []
    merged = tbl.select(key + compare).to_pandas().merge(existing[key + compare].assign(_stored=True), on=key, how="left", suffixes=("", "_old"))
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
    values = VALUE_COLUMNS.get(spec.name, [])
    if values and known.any():
        both = tbl.filter(pa.array(known)).select(key + values).to_pandas().merge(existing[key + values], on=key, suffixes=("", "_old"))
        same = np.logical_and.reduce([_same(both[c], both[f"{c}_old"]) for c in values])
        differ = int((~same).sum())
    return tbl.filter(pa.array(~known)), int(known.sum()), differ


def check_batch(tables: dict[TableSpec, pa.Table], source: str) -> None:
    """A batch to append repeats no key, and its outcomes have valid scores and costs."""
    for spec, tbl in tables.items():
        keys = tbl.select(list(spec.key)).to_pandas()
        dup = keys[_duplicated_keys(keys, spec.key)]
        if len(dup):
            shown = ", ".join(sorted(set(dup.iloc[:, 0].astype(str)))[:5])
            raise UserError(f"{source}: {len(dup)} {spec.name} rows repeat a key ({spec.key[0]}: {shown})")
    if OUTCOMES in tables:
        _check_outcome_values(tables[OUTCOMES], source)


def check_have_prompts(o_tbl: pa.Table, p_tbl: pa.Table | None, stored_ids: pd.Series, source: str) -> None:
    """Every outcome's sample_id is a stored prompt or one appended with it."""
    ids = pd.Index(pd.unique(o_tbl.column("sample_id").to_numpy(zero_copy_only=False)))
    known = pd.Index(stored_ids)
    if p_tbl is not None:
        known = known.append(pd.Index(p_tbl.column("sample_id").to_pandas()))
    orphans = ids.difference(known)
    if len(orphans):
        raise UserError(
            f"{source}: {len(orphans)} outcome(s) for prompts not in the store "
            f"({', '.join(map(str, orphans[:5]))}); import the prompts first or include prompt and task columns"
        )


def _delta():
    """deltalake, imported when a store is first used."""
    import deltalake

    return deltalake


def _parse_as_of(as_of: str | int) -> int | datetime:
    """``--as-of``: a version of the outcomes table, or an ISO time (naive means UTC)."""
    text = str(as_of).strip()
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--as-of must be a version number or an ISO time (2026-12-01T12:00:00Z), not '{as_of}'") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _storage_op(method):
    """Failures of the storage under a store become one-line errors naming the store."""

    @functools.wraps(method)
    def wrapper(self: Store, *args, **kwargs):
        with storage_errors(self.uri):
            return method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class StoreSummary:
    """What ``data info`` shows: prompts per task family, graded outcomes per model × family, cost sources."""

    per_family: pd.Series  # prompts per task family, by family name
    counts: pd.DataFrame  # graded outcomes: model × task family
    cost_sources: pd.Series  # per model: "published" or a mix with counts

    @property
    def prompts(self) -> int:
        return int(self.per_family.sum())

    @property
    def outcomes(self) -> int:
        return int(self.counts.to_numpy().sum())


class StoreReader:
    """What every store layout offers on top of its ``read_table``, ``append_tables`` and ``models``."""

    uri: str

    def read_table(self, table: TableSpec, columns: list[str] | None = None, partitions: Iterable[str] | None = None) -> pa.Table:
        raise NotImplementedError

    def append_tables(self, tables: dict[TableSpec, pa.Table], *, overwrite: bool = False, source: str = "append", fresh_keys: bool = False) -> AppendResult:
        raise NotImplementedError

    def models(self) -> list[str]:
        raise NotImplementedError

    def is_empty(self) -> bool:
        return not self.models()

    def summary(self) -> StoreSummary:
        prompts = self.prompts(["sample_id", "task_family"])
        outcomes = self.outcomes(["sample_id", "model", "score", "cost_source", "input_tokens"])
        outcomes = outcomes[outcomes["score"].notna()].merge(prompts, on="sample_id")
        outcomes["cost_source"] = effective_cost_source(outcomes)
        sources = outcomes.groupby("model")["cost_source"].agg(lambda s: ", ".join(f"{k} {v}" if s.nunique() > 1 else str(k) for k, v in s.value_counts().items()))
        families = sorted(prompts["task_family"].unique())
        per_family = prompts["task_family"].value_counts().reindex(families)
        if outcomes.empty:
            return StoreSummary(per_family, pd.DataFrame(columns=families, dtype=int), sources)
        counts = outcomes.pivot_table(index="model", columns="task_family", values="sample_id", aggfunc="count", fill_value=0).reindex(columns=families, fill_value=0)
        return StoreSummary(per_family, counts, sources)

    def prompts(self, columns: list[str] | None = None, families: Iterable[str] | None = None) -> pd.DataFrame:
        df = self.read_table(PROMPTS, None if columns is None else list(dict.fromkeys([*columns, "task_family"]))).to_pandas()
        if families is not None:
            df = df[df["task_family"].isin(list(families))].reset_index(drop=True)
        return df if columns is None else df[columns]

    def outcomes(self, columns: list[str] | None = None, models: Iterable[str] | None = None) -> pd.DataFrame:
        return self.read_table(OUTCOMES, columns, models).to_pandas()

    def families(self) -> dict[str, FamilySettings]:
        """What each task family keeps once for all its prompts (renderer, grader, grader settings)."""
        return FamilySettings.from_rows(self.read_table(FAMILIES).to_pandas())

    def append(
        self,
        prompts: pd.DataFrame | None = None,
        outcomes: pd.DataFrame | None = None,
        *,
        families: pd.DataFrame | None = None,
        overwrite: bool = False,
        source: str = "append",
        fresh_keys: bool = False,
    ) -> AppendResult:
        """Add family settings, prompts and outcomes (in that order, so an outcome never lacks its prompt).

        A key already in the store is skipped (idempotent re-runs) unless ``overwrite``; a prompt
        whose sample_id exists with a different text is an error, since outcomes would silently
        attach to the wrong question. ``fresh_keys``: the caller generated every key just now
        (unique ids), so none is read back from the store; a caller that cannot be sure, such as
        one retrying an append that failed after some of its commits, leaves it False.
        """
        tables = {}
        for frame, spec in ((families, FAMILIES), (prompts, PROMPTS), (outcomes, OUTCOMES)):
            if frame is not None and len(frame):
                tables[spec] = _conform(frame, spec, source)
        return self.append_tables(tables, overwrite=overwrite, source=source, fresh_keys=fresh_keys)


class Store(StoreReader):
    """An outcome store of Delta tables at a local path or object-store URI.

    ``as_of``: read prompts and outcomes as they were at a version of the outcomes table (prompts
    at their last version committed by then) or at a time. ``versions``: exact versions per table
    (a ``run.json``'s). A pinned store is read-only, but for the embeddings cache.
    """

    def __init__(self, uri: str | os.PathLike, *, as_of: str | int | None = None, versions: dict[str, int | None] | None = None) -> None:
        self.uri = os.fspath(uri)
        self.location: Location = resolve(self.uri)
        self.root, self.storage_options = delta_location(self.uri, self.location)
        self.as_of = None if as_of is None else _parse_as_of(as_of)
        self._pins: dict[str, int | None] | None = None if versions is None else {t: versions.get(t) for t in PINNED_TABLES}
        self._probed = False
        self._pinned_tables: dict[str, Any] = {}  # a pinned version never changes: loaded once

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Ray ships stores to workers: an ``as_of`` is resolved first, so every worker reads the same versions."""
        if self.as_of is not None and self._pins is None:
            self._resolve_pins()
        return {**self.__dict__, "_pinned_tables": {}}

    # ------------------------------------------------------------------ tables and versions
    def table_uri(self, table: TableSpec) -> str:
        return f"{self.root.rstrip('/')}/{table.name}"

    def _probe(self) -> None:
        """Once per store: an unreachable endpoint fails in seconds (not after retries), an old layout by name."""
        if self._probed:
            return
        check_reachable(self.location, self.uri)
        if is_directory(self.location, "_commits"):
            raise UserError(f"{self.uri} is a store of the layout before Delta Lake; convert it with `routerbench data migrate {self.uri} NEW`")
        self._probed = True

    def _latest(self, table: TableSpec):
        """The table at its latest version, or None when it was never written."""
        self._probe()
        dl = _delta()
        try:
            return dl.DeltaTable(self.table_uri(table), storage_options=self.storage_options)
        except dl.exceptions.TableNotFoundError:
            return None

    def _resolve_pins(self) -> None:
        """Turn ``as_of`` into a version per pinned table."""
        pins: dict[str, int | None] = {}
        when = self.as_of
        if isinstance(self.as_of, int):
            outcomes = self._latest(OUTCOMES)
            if outcomes is None:
                raise UserError(f"{self.uri}: --as-of {self.as_of}: the store has no outcomes yet")
            if self.as_of > outcomes.version():
                raise UserError(f"{self.uri}: --as-of {self.as_of}: the outcomes table has versions 0 to {outcomes.version()} (see `routerbench data history`)")
            pins[OUTCOMES.name] = self.as_of
            when = _version_time(outcomes, self.as_of)
        for name in PINNED_TABLES:
            if name not in pins:
                pins[name] = _version_at(self._latest(TABLES[name]), when)
        self._pins = pins

    def _table(self, table: TableSpec):
        """The table as this store reads it: at its pinned version, else its latest (None: nothing to read)."""
        if table.name not in PINNED_TABLES or not self.is_pinned:
            return self._latest(table)
        if self._pins is None:
            self._resolve_pins()
        version = self._pins[table.name]
        if version is None:
            return None
        if table.name not in self._pinned_tables:
            self._probe()
            dl = _delta()
            try:
                self._pinned_tables[table.name] = dl.DeltaTable(self.table_uri(table), version=version, storage_options=self.storage_options)
            except dl.exceptions.TableNotFoundError:
                raise UserError(f"{self.uri}: the {table.name} table is gone (version {version} was asked for)") from None
            except Exception as exc:  # noqa: BLE001 - deltalake raises several kinds for a version it cannot rebuild
                raise UserError(f"{self.uri}: cannot read version {version} of the {table.name} table ({first_line(exc)})") from exc
        return self._pinned_tables[table.name]

    @_storage_op
    def versions(self) -> dict[str, int | None]:
        """The version of each table this store reads (None: not written yet)."""
        out = {}
        for spec in TABLES.values():
            dt = self._table(spec)
            out[spec.name] = None if dt is None else dt.version()
        return out

    def pinned(self) -> Store:
        """This store fixed at the versions it reads now: later commits do not change what it reads."""
        return Store(self.uri, versions=self.versions())

    @property
    def is_pinned(self) -> bool:
        return self.as_of is not None or self._pins is not None

    @_storage_op
    def history(self) -> pd.DataFrame:
        """Every version of every table, oldest first: time, operation, rows added and updated, files, what wrote it."""
        rows = []
        for spec in TABLES.values():
            dt = self._latest(spec)
            for h in [] if dt is None else dt.history():
                m = h.get("operationMetrics") or {}
                rows.append(
                    {
                        "table": spec.name,
                        "version": int(h["version"]),
                        "time": pd.Timestamp(int(h["timestamp"]), unit="ms", tz="UTC"),
                        "operation": h.get("operation"),
                        "rows_added": _first_of(m, "num_added_rows", "num_target_rows_inserted"),
                        "rows_updated": _first_of(m, "num_target_rows_updated"),
                        "files_added": _first_of(m, "num_added_files", "num_target_files_added", "numFilesAdded"),
                        "files_removed": _first_of(m, "num_removed_files", "num_target_files_removed", "numFilesRemoved", "numDeletedFiles"),
                        "source": h.get(SOURCE_KEY),  # delta-rs puts commit metadata beside the operation
                    }
                )
        cols = ["table", "version", "time", "operation", "rows_added", "rows_updated", "files_added", "files_removed", "source"]
        frame = pd.DataFrame(rows, columns=cols)
        for c in ("rows_added", "rows_updated", "files_added", "files_removed"):
            frame[c] = frame[c].astype("Int64")
        return frame.sort_values(["time", "table", "version"], ignore_index=True)

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Models with at least one outcome, sorted by name."""
        dt = self._table(OUTCOMES)
        return [] if dt is None else sorted({p[OUTCOMES.partition_by] for p in dt.partitions()})  # from the log: no data read

    @_storage_op
    def read_table(self, table: TableSpec, columns: list[str] | None = None, partitions: Iterable[str] | None = None) -> pa.Table:
        """A table's rows as Arrow (``partitions``: values of its partition column to read)."""
        wanted = list(table.schema.names if columns is None else columns)
        retry = not (table.name in PINNED_TABLES and self.is_pinned)  # the latest version's files, vacuumed (retention 0) a moment ago
        while True:
            dt = self._table(table)
            if dt is None:
                return table.schema.empty_table().select(wanted)
            try:
                return _scan(dt, table, wanted, partitions)
            except FileNotFoundError as exc:
                if not retry:
                    raise UserError(
                        f"{self.uri}: cannot read version {dt.version()} of the {table.name} table: its files were vacuumed "
                        f"(`data compact` keeps them --retain-hours, default 168) ({first_line(exc)})"
                    ) from exc
                retry = False

    # ------------------------------------------------------------------ writing
    @_storage_op
    def append_tables(self, tables: dict[TableSpec, pa.Table], *, overwrite: bool = False, source: str = "append", fresh_keys: bool = False) -> AppendResult:
        """Append Arrow tables (already in their schemas), one commit per table, in the order given.

        Without ``overwrite`` each key is written once: stored keys are skipped, and a commit that
        loses to a concurrent writer of the same partitions starts over from the new version.
        ``fresh_keys``: keys generated just now, appended without reading the stored ones (:meth:`append`).
        """
        if self.is_pinned and {t.name for t in tables} & set(PINNED_TABLES):
            raise UserError(f"{self.uri}: a store read as of an earlier version cannot be written to")
        check_batch(tables, source)
        if OUTCOMES in tables:
            self._check_outcomes_have_prompts(tables[OUTCOMES], tables.get(PROMPTS), source)
        result = AppendResult({}, {})
        for spec in sorted(tables, key=lambda s: s is OUTCOMES):  # prompts before the outcomes that need them
            self._commit(spec, tables[spec], overwrite, source, result, fresh_keys)
        return result

    def _commit(self, spec: TableSpec, tbl: pa.Table, overwrite: bool, source: str, result: AppendResult, fresh_keys: bool = False) -> None:
        """Insert ``tbl``'s absent keys (or upsert, ``overwrite``) in one commit, starting over when a concurrent writer wins."""
        dl = _delta()
        meta = {SOURCE_KEY: source[:500]}
        first_differ = None
        for attempt in range(MAX_ATTEMPTS):
            dt = self._latest(spec)
            todo, known, differ = (tbl, 0, 0) if overwrite or fresh_keys or dt is None else self._drop_existing(spec, tbl, source, dt)
            if first_differ is None:
                first_differ = differ
            result.added[spec.name], result.skipped[spec.name] = len(todo), known
            result.changed[spec.name] = first_differ
            result.raced[spec.name] = differ - first_differ  # keys another writer committed meanwhile, with other values
            if not len(todo):
                return
            try:
                if dt is None:  # no retry inside delta-rs: it would turn a lost creation into a blind append of the same keys
                    dl.write_deltalake(
                        self.table_uri(spec), todo, mode="error", partition_by=[spec.partition_by] if spec.partition_by else None,
                        storage_options=self.storage_options, commit_properties=dl.CommitProperties(custom_metadata=meta, max_commit_retries=0),
                    )
                elif fresh_keys and not overwrite:  # a blind append: appends commute, delta-rs commits it over any concurrent one
                    dl.write_deltalake(dt, todo, mode="append", partition_by=[spec.partition_by] if spec.partition_by else None, commit_properties=dl.CommitProperties(custom_metadata=meta))
                else:
                    merge = dt.merge(todo, _merge_predicate(spec, todo), source_alias="s", target_alias="t", commit_properties=dl.CommitProperties(custom_metadata=meta))
                    if overwrite:
                        merge = merge.when_matched_update_all()
                    merge.when_not_matched_insert_all().execute()
            except (dl.exceptions.CommitFailedError, dl.exceptions.DeltaError) as exc:
                if not _lost_to_another_writer(exc, dl):
                    raise
                if attempt == MAX_ATTEMPTS - 1:
                    raise UserError(f"{source}: the {spec.name} table changed under each of {MAX_ATTEMPTS} attempts to commit; run it again (nothing of this batch's {spec.name} was written)") from exc
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                continue
            result.versions[spec.name] = 0 if dt is None else dt.version()  # a merge moves ``dt`` to the version it wrote
            return

    def _drop_existing(self, spec: TableSpec, tbl: pa.Table, source: str, dt) -> tuple[pa.Table, int, int]:
        """``tbl`` without the keys ``dt`` holds (see :func:`drop_known`).

        The stored keys of the partitions touched are read first, texts and values (large columns)
        only when some key is stored already: appending new rows reads the key column alone.
        """
        partitions = None if spec.partition_by is None else pc.unique(tbl.column(spec.partition_by)).to_pylist()
        first = spec.key[0]
        stored = _scan(dt, spec, [first], partitions).column(first)
        if not pc.any(pc.is_in(tbl.column(first), value_set=pc.unique(stored).cast(tbl.schema.field(first).type))).as_py():
            return tbl, 0, 0
        # no key filter pushed down: files written by delta-rs's MERGE hold string views that pyarrow cannot compare with strings
        return drop_known(spec, tbl, _scan(dt, spec, compared_columns(spec), partitions).to_pandas(), source)

    def _check_outcomes_have_prompts(self, o_tbl: pa.Table, p_tbl: pa.Table | None, source: str) -> None:
        if p_tbl is not None and pc.all(pc.is_in(o_tbl.column("sample_id"), value_set=p_tbl.column("sample_id"))).as_py():
            return  # every outcome comes with its prompt: no need to read the stored ones
        check_have_prompts(o_tbl, p_tbl, self.read_table(PROMPTS, ["sample_id"]).column("sample_id").to_pandas(), source)

    # ------------------------------------------------------------------ housekeeping
    @_storage_op
    def compact(self, retain_hours: float = DEFAULT_RETAIN_HOURS) -> CompactResult:
        """Merge each partition's small files into one, then vacuum the files that no version within ``retain_hours`` reads.

        A partition is rewritten by a conditional replace (Delta's replaceWhere: remove its files, add
        one), which Delta's conflict check fails if anyone changed that partition meanwhile; the
        compaction then plans again on the new version. delta-rs's own OPTIMIZE is not used: its
        commit does not notice a concurrent OPTIMIZE or update of the same files (measured: two at
        once both commit, and every row is read twice). A reader of an older version keeps its files
        for the retention period.
        """
        if self.is_pinned:
            raise UserError(f"{self.uri}: a store read as of an earlier version cannot be compacted")
        merged = vacuumed = 0
        for spec in TABLES.values():
            dt = self._latest(spec)
            if dt is None:
                continue
            for part in _fragmented(dt, spec):
                merged += self._rewrite(spec, part)
            dt = self._latest(spec)
            dt.create_checkpoint()  # readers load the log from here instead of replaying every commit
            vacuumed += self._vacuum(spec, dt, retain_hours)
        return CompactResult(merged, vacuumed)

    def _vacuum(self, spec: TableSpec, dt, retain_hours: float) -> int:
        """Delete the files removed from ``dt`` more than ``retain_hours`` ago; how many were still there.

        delta-rs lists every removal older than the retention, deleted already or not (and commits a
        vacuum for them again), so the files still present are checked first.
        """
        from harness.filesystem import pafs

        candidates = dt.vacuum(retention_hours=int(retain_hours), dry_run=True, enforce_retention_duration=False)
        if not candidates:
            return 0
        root = self.location.join(spec.name)
        infos = self.location.fs.get_file_info([f"{root}/{rel}" for rel in candidates])
        present = sum(i.type == pafs.FileType.File for i in infos)
        if present:
            try:
                dt.vacuum(retention_hours=int(retain_hours), dry_run=False, enforce_retention_duration=False)
            except FileNotFoundError:  # another vacuum deleted one first
                pass
        return present

    def _rewrite(self, spec: TableSpec, partition: str | None) -> int:
        """Replace one partition's files by one file of the same rows; the number of files replaced (0: nothing to do any more)."""
        dl = _delta()
        props = dl.CommitProperties(custom_metadata={SOURCE_KEY: "data compact"})
        where = f"{spec.partition_by} = {_sql_string(partition)}" if spec.partition_by else f"{spec.key[0]} IS NOT NULL"
        for attempt in range(COMPACT_ATTEMPTS):
            dt = self._latest(spec)
            files = _fragmented(dt, spec).get(partition, 0)
            if files < 2:
                return 0  # another compaction got there first
            rows = _scan(dt, spec, spec.schema.names, None if partition is None else [partition])
            try:
                dl.write_deltalake(
                    dt, rows, mode="overwrite", predicate=where, partition_by=[spec.partition_by] if spec.partition_by else None, commit_properties=props
                )
                return files
            except (dl.exceptions.CommitFailedError, dl.exceptions.DeltaError) as exc:
                if not _lost_to_another_writer(exc, dl):
                    raise
        raise CompactionSkipped(f"{self.uri}: the {spec.name} table kept changing while compacting (other writers or compacts); nothing to do now")


def _fragmented(dt, spec: TableSpec) -> dict[str | None, int]:
    """Partitions (None: the unpartitioned table) held in more than one file, and their file counts."""
    actions = dt.get_add_actions(flatten=True)
    if spec.partition_by is None:
        n = actions.num_rows
        return {None: n} if n > 1 else {}
    counts = pd.Series(pa.table(actions).column(f"partition.{spec.partition_by}").to_pylist()).value_counts()
    return {str(k): int(v) for k, v in counts.items() if v > 1}


def _first_of(metrics: dict[str, Any], *names: str) -> int | None:
    for n in names:
        if metrics.get(n) is not None:
            return int(metrics[n])
    return None


def _lost_to_another_writer(exc: Exception, dl) -> bool:
    """A commit that lost to a concurrent one (or a table another writer created meanwhile): read again and retry.

    delta-rs itself retries a commit whose version another writer took, when what that writer
    changed does not overlap what this one read; what reaches us overlaps.
    """
    text = str(exc).lower()
    return isinstance(exc, dl.exceptions.CommitFailedError) or "concurrent" in text or "already exists" in text


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _merge_predicate(spec: TableSpec, todo: pa.Table) -> str:
    """Match on the key within the partitions ``todo`` writes: Delta's conflict check then watches only those."""
    pred = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
    if spec.partition_by:
        values = pc.unique(todo.column(spec.partition_by)).to_pylist()
        pred += f" AND t.{spec.partition_by} IN ({', '.join(_sql_string(v) for v in values)})"
    return pred


def _scan(dt, table: TableSpec, columns: list[str], partitions: Iterable[str] | None) -> pa.Table:
    """Columns of ``dt``, of the files of ``partitions`` only (the others are not opened)."""
    if partitions is None:
        return dt.to_pyarrow_dataset().to_table(columns=columns)
    if table.partition_by is None:
        raise ValueError(f"the {table.name} table has no partitions")
    values = list(partitions)
    if not values:
        return table.schema.empty_table().select(columns)
    return dt.to_pyarrow_dataset(file_pruning_predicate=[(table.partition_by, "in", values)]).to_table(columns=columns)


def _version_time(dt, version: int) -> datetime:
    for h in dt.history():
        if int(h["version"]) == version:
            return datetime.fromtimestamp(int(h["timestamp"]) / 1000, tz=timezone.utc)
    raise UserError(f"version {version} is not in the history of {dt.table_uri}")


def _version_at(dt, when: datetime) -> int | None:
    """The last version of ``dt`` committed at or before ``when`` (None: none was, or no table)."""
    if dt is None:
        return None
    cutoff = when.timestamp() * 1000
    versions = [int(h["version"]) for h in dt.history() if int(h["timestamp"]) <= cutoff]
    return max(versions) if versions else None


def default_store_uri() -> str:
    """``$ROUTERBENCH_STORE``, else ``~/.routerbench/store``."""
    return os.environ.get("ROUTERBENCH_STORE") or os.path.expanduser("~/.routerbench/store")
