"""Bring outcomes from elsewhere into the store, and write them back out.

Two input layouts are recognised by their columns:

* RouterBench's wide layout (its ``routerbench_0shot.pkl`` and CSV copies): ``sample_id, prompt,
  eval_name``, then per model ``<model>`` (score), ``<model>|model_response``,
  ``<model>|total_cost``, and ``oracle_model_to_route_to``. Prompts and responses are Python list
  literals (``"['…']"``); they are decoded, and the prompt cell is also kept exactly as it was.
* The long layout, one row per outcome: ``sample_id, model, score, cost_usd`` and optionally the
  other outcome columns, plus ``prompt`` and ``task`` (or ``eval_name``) to add prompts as well.
  Without ``cost_usd`` the costs are priced (see :mod:`harness.formats.pricing`).

Each layout, and every other published format, is an entry of :data:`harness.formats.FORMATS`
(``harness/formats/<name>.py``); :func:`load_sources` finds each file's format there.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.store import Store
from harness.schema import COST_RANGE, OUTCOME_SCHEMA, SCORE_RANGE, outside
from harness.errors import UserError
from harness.families import task_families
from harness.metrics import oracle
from harness.registry import Registry
from harness.safe_pickle import unpickle_frame
from harness.sources import display_name, fetch, url_digests

SOURCE = "_source"
NO_MODEL_CORRECT = "no_model_correct"
WIDE_KEYS = ("sample_id", "prompt", "eval_name")
LONG_KEYS = ("sample_id", "model", "score", "cost_usd")
#: Columns a long file must have; without ``cost_usd`` its costs are priced (harness.formats.pricing).
LONG_REQUIRED = ("sample_id", "model", "score")
#: The error of an imported answer that has no score yet (a grading error, so `regrade` takes it).
UNGRADED = "grader:ungraded"
AMBIGUOUS_POLICIES = ("skip", "rekey")
MISSING_COST_POLICIES = ("error", "skip-model")
#: Wide-layout columns that are never a model's scores.
NOT_MODEL_COLUMNS = frozenset({*WIDE_KEYS, "oracle_model_to_route_to", "gold", "task", "task_family", SOURCE})


@dataclass
class ImportBatch:
    """Prompts and outcomes ready for one atomic append, and what the import did to get them."""

    prompts: pd.DataFrame
    outcomes: pd.DataFrame
    missing_by_model: dict[str, int] = field(default_factory=dict)
    ambiguous: list[str] = field(default_factory=list)
    rekeyed: int = 0
    duplicates_dropped: int = 0
    #: Wide-layout models left out for want of a ``<model>|total_cost`` column (``--missing-cost skip-model``).
    models_without_cost: list[str] = field(default_factory=list)
    #: Files per format used.
    formats: dict[str, int] = field(default_factory=dict)
    #: A set's own train/test split, ``{task_family: {"train": [...], "test": [...]}}`` (for ``--split file:``).
    split: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: Lines for the user about how the import went (e.g. how costs were estimated).
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- reading files
READERS: Registry = Registry("file type")
# Exact floats from CSV: pandas 3 parses them round-trip by default, older pandas must be asked.
CSV_OPTIONS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
READERS.add(".csv", lambda p: pd.read_csv(p, low_memory=False, **CSV_OPTIONS))
READERS.add(".parquet", pd.read_parquet)
# Pickles go through the restricted unpickler: a plain unpickle runs whatever the file names.
READERS.add(".pkl", lambda p: unpickle_frame(p, display_name(p)))
READERS.add(".pickle", lambda p: unpickle_frame(p, display_name(p)))
READERS.add(".jsonl", lambda p: pd.read_json(p, lines=True, dtype=False))
READERS.add(".json", lambda p: pd.read_json(p, dtype=False))


def read_frame(path: Path) -> pd.DataFrame:
    """Read one data file into a frame; any failure is a one-line error naming the file."""
    reader = READERS.get(path.suffix.lower())
    try:
        df = reader(path)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file, report it as such
        raise UserError(f"{display_name(path)}: cannot read as {path.suffix} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(df, pd.DataFrame):
        raise UserError(f"{display_name(path)}: holds a {type(df).__name__}, not a table")
    return df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed: ")])


def wide_models(columns: pd.Index) -> list[str]:
    """Model names of a wide frame: score columns that have a ``|total_cost`` companion."""
    names = {str(c) for c in columns}
    return [str(c) for c in columns if "|" not in str(c) and f"{c}|total_cost" in names]


def models_without_cost(df: pd.DataFrame) -> list[str]:
    """Columns of a wide frame that hold a model's scores but have no ``<model>|total_cost``: such a
    model cannot be priced, and leaving it out unannounced would shrink the pool behind the user's back.

    A model column is one with a ``<name>|…`` companion (``|model_response``), or any other column
    whose values are all numbers in [0, 1] (RouterBench's layout has no other such columns)."""
    names = {str(c) for c in df.columns}
    prefixes = {n.split("|", 1)[0] for n in names if "|" in n}
    found = []
    for c in df.columns:
        name = str(c)
        if "|" in name or name in NOT_MODEL_COLUMNS or name.startswith("Unnamed: ") or f"{name}|total_cost" in names:
            continue
        if name in prefixes or _all_in_unit_interval(df[c]):
            found.append(name)
    return found


def _all_in_unit_interval(col: pd.Series) -> bool:
    if col.dtype == bool:
        return True
    if not pd.api.types.is_numeric_dtype(col):
        return False
    values = col.dropna()
    return len(values) > 0 and bool(((values >= 0) & (values <= 1)).all())


# ---------------------------------------------------------------------- cell decoding
def decode_list_cells(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode RouterBench's list cells: ``"['a']"`` → ``"a"``, ``"['a', 'b']"`` → JSON ``["a","b"]``.

    Returns the decoded strings and the number of turns per cell (0 for null, 1 for plain text).
    A cell that is not a list literal is kept as it is.
    """
    out = np.empty(len(values), dtype=object)
    turns = np.zeros(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        items = v
        single = _single_item(v) if isinstance(v, str) else None
        if single is not None:  # the common case, without compiling the cell as Python
            out[i] = single
            turns[i] = 1
            continue
        if isinstance(v, str) and v.startswith("[") and v.endswith("]"):
            try:
                items = ast.literal_eval(v)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                items = v
        if isinstance(items, np.ndarray):
            items = items.tolist()
        if isinstance(items, (list, tuple)) and all(isinstance(t, str) for t in items) and items:
            out[i] = items[0] if len(items) == 1 else json.dumps(list(items), ensure_ascii=False)
            turns[i] = len(items)
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            out[i] = None
        else:
            out[i] = v if isinstance(v, str) else str(v)
            turns[i] = 1
    return out, turns


def _single_item(cell: str) -> str | None:
    """``"['text']"`` (a one-string list as Python's repr writes it) → ``text``, without ast; None
    for anything else (several items, other quoting), which ast.literal_eval then decodes."""
    if len(cell) < 4 or cell[0] != "[" or cell[-1] != "]" or cell[1] not in "'\"" or cell[-2] != cell[1]:
        return None
    quote, inner = cell[1], cell[2:-2]
    if "\\" not in inner:
        return inner if quote not in inner else None
    if quote in inner.replace("\\\\", "").replace("\\" + quote, ""):
        return None  # an unescaped quote: more than one item
    try:  # repr's escapes (\n, \\, \', \xNN, \uNNNN); non-Latin-1 text passes as \u escapes
        return inner.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        return None


def encode_list_cells(values: np.ndarray, turns: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_list_cells`: back to Python list literals as RouterBench stores them."""
    out = np.empty(len(values), dtype=object)
    for i, (v, t) in enumerate(zip(values, turns)):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[i] = None
        else:
            out[i] = str(json.loads(v)) if t > 1 else str([v])
    return out


# ---------------------------------------------------------------------- validation helpers
def _numeric(df: pd.DataFrame, column: str, what: str) -> np.ndarray:
    col = df[column]
    if col.dtype == bool or col.dtype == object and col.dropna().map(type).eq(bool).all():
        col = col.astype("float64")
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() & col.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{df[SOURCE].iloc[i]}: {what} column '{column}' has a non-numeric value {col.iloc[i]!r} "
            f"(sample_id {df['sample_id'].iloc[i]})"
        )
    return values.to_numpy(dtype=float)


def _check_range(values: np.ndarray, df: pd.DataFrame, column: str, bounds: tuple[float, float], what: str) -> None:
    bad = outside(values, bounds)
    if bad.any():
        lo, hi = bounds
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{df[SOURCE].iloc[i]}: column '{column}' has {what} {float(values[i]):g} at sample_id "
            f"{df['sample_id'].iloc[i]}; it must be in [{lo:g}, {hi:g}]"
        )


def _resolve_ambiguous(df: pd.DataFrame, policy: str, batch: ImportBatch, compare: list[str]) -> pd.DataFrame:
    """Drop exact duplicate rows; handle ids shared by different prompts; reject conflicting duplicates."""
    before = len(df)
    df = df.drop_duplicates(subset=compare, ignore_index=True)
    batch.duplicates_dropped += before - len(df)
    prompts_per_id = df.groupby("sample_id", sort=False)["prompt"].nunique(dropna=False)
    ambiguous = prompts_per_id.index[prompts_per_id > 1]
    if len(ambiguous):
        hit = df["sample_id"].isin(ambiguous)
        if policy == "rekey":
            digest = df.loc[hit, "prompt"].astype(str).map(lambda s: hashlib.sha1(s.encode()).hexdigest()[:8])
            df.loc[hit, "sample_id"] = df.loc[hit, "sample_id"] + "~" + digest
            batch.rekeyed += int(hit.sum())
        else:
            batch.ambiguous.extend(sorted(map(str, ambiguous)))
            df = df[~hit].reset_index(drop=True)
    return df


def _reject_conflicts(df: pd.DataFrame, key: list[str], what: str) -> None:
    dup = df[df.duplicated(key, keep=False)]
    if len(dup):
        ids = sorted(set(dup["sample_id"].astype(str)))
        raise UserError(
            f"{dup[SOURCE].iloc[0]}: {len(ids)} sample_id(s) appear twice with the same prompt but different "
            f"{what}: {', '.join(ids[:5])}"
        )


def _prompt_rows(df: pd.DataFrame, tasks: pd.Series) -> pd.DataFrame:
    decoded, turns = decode_list_cells(df["prompt"].to_numpy(dtype=object))
    original = df["prompt"].map(lambda v: v if isinstance(v, str) else (None if v is None else str(list(v))))
    meta = [json.dumps({"source": s, **({"turns": int(t)} if t > 1 else {})}) for s, t in zip(df[SOURCE], turns)]
    return pd.DataFrame(
        {
            "sample_id": df["sample_id"].astype(str).to_numpy(),
            "task": tasks.astype(str).to_numpy(),
            # a long file exported by this tool carries task_family: keep it (a set's own family survives the round trip)
            "task_family": (
                df["task_family"].astype(object).where(df["task_family"].notna(), task_families(tasks).to_numpy()).astype(str).to_numpy()
                if "task_family" in df.columns
                else task_families(tasks).to_numpy()
            ),
            "prompt": decoded,
            "prompt_original": original.to_numpy(dtype=object),
            "gold": df["gold"].to_numpy(dtype=object) if "gold" in df.columns else None,
            "meta": meta,
        }
    )


# ---------------------------------------------------------------------- layouts
def from_wide(df: pd.DataFrame, on_ambiguous: str = "skip", missing_cost: str = "error") -> ImportBatch:
    """RouterBench's wide layout → long prompts and outcomes.

    A model column without its ``|total_cost`` is an error, or with ``missing_cost="skip-model"``
    left out and listed in ``models_without_cost``.
    """
    first = df[SOURCE].iloc[0] if len(df) else "input"
    missing = [c for c in WIDE_KEYS if c not in df.columns]
    if missing:
        raise UserError(f"{first}: missing column(s) {', '.join(missing)} of RouterBench's layout")
    batch = ImportBatch(pd.DataFrame(), pd.DataFrame())
    costless = models_without_cost(df)
    if costless and missing_cost != "skip-model":
        m = costless[0]
        where = df.loc[df[m].notna(), SOURCE]
        more = f" (and {len(costless) - 1} more: {', '.join(costless[1:4])}{', …' if len(costless) > 4 else ''})" if len(costless) > 1 else ""
        raise UserError(
            f"{where.iloc[0] if len(where) else first}: model column '{m}' has no '{m}|total_cost' column{more}; "
            "add the costs, or pass --missing-cost skip-model to import the other models"
        )
    batch.models_without_cost = costless
    models = wide_models(df.columns)
    if not models:
        raise UserError(f"{first}: no model columns (expected '<model>' with '<model>|total_cost')")
    df = df.assign(sample_id=df["sample_id"].astype(str))
    response_cols = [f"{m}|model_response" for m in models if f"{m}|model_response" in df.columns]
    compare = [*WIDE_KEYS, *models, *(f"{m}|total_cost" for m in models), *response_cols]
    df = _resolve_ambiguous(df, on_ambiguous, batch, compare)
    _reject_conflicts(df, ["sample_id"], "scores, costs or responses")

    n, m = len(df), len(models)
    scores = np.column_stack([_numeric(df, c, "score") for c in models]) if n else np.empty((0, m))
    costs = np.column_stack([_numeric(df, f"{c}|total_cost", "cost") for c in models]) if n else np.empty((0, m))
    for j, model in enumerate(models):
        _check_range(scores[:, j], df, model, SCORE_RANGE, "score")
        have = ~np.isnan(scores[:, j])
        _check_range(np.where(have, costs[:, j], 0.0), df, f"{model}|total_cost", COST_RANGE, "cost")
        if (have & np.isnan(costs[:, j])).any():
            i = int(np.flatnonzero(have & np.isnan(costs[:, j]))[0])
            raise UserError(f"{df[SOURCE].iloc[i]}: '{model}|total_cost' is empty at sample_id {df['sample_id'].iloc[i]}")
    batch.missing_by_model = {model: int(k) for model, k in zip(models, np.isnan(scores).sum(axis=0)) if k}

    batch.prompts = _prompt_rows(df, df["eval_name"])
    responses = np.full((n, m), None, dtype=object)
    for j, model in enumerate(models):
        col = f"{model}|model_response"
        if col in df.columns:
            responses[:, j] = decode_list_cells(df[col].to_numpy(dtype=object))[0]
    have = ~np.isnan(scores).ravel()
    batch.outcomes = pd.DataFrame(
        {
            "sample_id": np.repeat(df["sample_id"].to_numpy(dtype=object), m)[have],
            "model": np.tile(np.asarray(models, dtype=object), n)[have],
            "response": responses.ravel()[have],
            "score": scores.ravel()[have],
            "cost_usd": costs.ravel()[have],
            "cost_source": "published",
        }
    )
    return batch


def from_long(df: pd.DataFrame, on_ambiguous: str = "skip", missing_cost: str = "error", options=None) -> ImportBatch:  # noqa: ANN001
    """One row per outcome; prompts are added too when ``prompt`` and ``task``/``eval_name`` are present.

    (``missing_cost`` is for the wide layout: a long row with an empty ``cost_usd`` is an error when
    stored.) A file without a ``cost_usd`` column is priced with ``options`` (an ImportOptions):
    ``tokens×price`` where it has ``input_tokens``/``output_tokens``, else ``estimated``.
    A ``cost_usd`` given without ``cost_source`` is ``published``.
    """
    first = df[SOURCE].iloc[0] if len(df) else "input"
    priced_here = "cost_usd" not in df.columns and all(c in df.columns for c in LONG_REQUIRED)
    if priced_here:
        df = df.assign(cost_usd=0.0)
    missing = [c for c in LONG_KEYS if c not in df.columns]
    if missing:
        raise UserError(f"{first}: missing column(s) {', '.join(missing)} (long layout needs {', '.join(LONG_KEYS)})")
    batch = ImportBatch(pd.DataFrame(), pd.DataFrame())
    df = df.assign(sample_id=df["sample_id"].astype(str), model=df["model"].astype(str))
    if "task" not in df.columns and "eval_name" in df.columns:
        df = df.rename(columns={"eval_name": "task"})
    with_prompts = "prompt" in df.columns and "task" in df.columns
    before = len(df)
    df = df.drop_duplicates(subset=[c for c in df.columns if c != SOURCE], ignore_index=True)
    batch.duplicates_dropped = before - len(df)
    if with_prompts:
        ids = _resolve_ambiguous(df[["sample_id", "prompt", SOURCE]].drop_duplicates(["sample_id", "prompt"]), on_ambiguous, batch, ["sample_id", "prompt"])
        if batch.ambiguous:
            df = df[~df["sample_id"].isin(batch.ambiguous)]
        elif batch.rekeyed:
            df = df.drop(columns="sample_id").merge(ids[["prompt", "sample_id"]], on="prompt", how="left")
    _reject_conflicts(df, ["sample_id", "model"], "outcomes")

    score = _numeric(df, "score", "score")
    cost = _numeric(df, "cost_usd", "cost")
    _check_range(score, df, "score", SCORE_RANGE, "score")
    _check_range(cost, df, "cost_usd", COST_RANGE, "cost")
    failed = df["error"].notna().to_numpy() if "error" in df.columns else np.zeros(len(df), bool)
    # An answer without a score (`generate`'s output) is kept, marked for `regrade` to grade it.
    ungraded = np.isnan(score) & ~failed & (df["response"].notna().to_numpy() if "response" in df.columns else False)
    if ungraded.any():
        df = df.assign(error=np.where(ungraded, UNGRADED, df["error"] if "error" in df.columns else None))
        batch.notes.append(f"{int(ungraded.sum())} answers without a score stored as {UNGRADED}: `routerbench regrade` grades them")
    keep = ~np.isnan(score) | failed | ungraded
    dropped = df.loc[~keep, "model"].value_counts()
    batch.missing_by_model = {str(k): int(v) for k, v in dropped.items()}
    df = df.assign(score=score, cost_usd=cost)[keep]
    outcomes = df[[c for c in OUTCOME_SCHEMA.names if c in df.columns]].reset_index(drop=True)
    if priced_here:
        from harness.formats import ImportOptions
        from harness.formats.pricing import price_outcomes

        text = df["prompt"].reset_index(drop=True) if "prompt" in df.columns else pd.Series([None] * len(df))
        outcomes = price_outcomes(outcomes, text, None, options or ImportOptions(), first)
    elif "cost_source" in outcomes.columns:
        outcomes["cost_source"] = outcomes["cost_source"].where(outcomes["cost_source"].notna(), "published")
    else:
        outcomes["cost_source"] = "published"
    batch.outcomes = outcomes
    if with_prompts:
        first_rows = df.drop_duplicates("sample_id")
        batch.prompts = _prompt_rows(first_rows, first_rows["task"])
    return batch


LAYOUTS: Registry = Registry("import layout")
LAYOUTS.add("routerbench-wide", from_wide)
LAYOUTS.add("long", from_long)


def detect_layout(df: pd.DataFrame, name: str) -> str:
    if all(c in df.columns for c in LONG_KEYS):
        return "long"
    if "eval_name" in df.columns or wide_models(df.columns):
        return "routerbench-wide"
    raise UserError(
        f"{name}: unrecognised columns ({', '.join(map(str, df.columns[:8]))}…); expected RouterBench's wide "
        f"layout (sample_id, prompt, eval_name, <model>, <model>|total_cost) or the long layout ({', '.join(LONG_KEYS)})"
    )


def peek_columns(path: Path) -> list[str] | None:
    """A data file's column names, cheaply where the file type allows (a CSV header, a Parquet
    schema, a JSONL first line); None when it cannot be read as a table."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return [str(c) for c in pd.read_csv(path, nrows=0).columns if not str(c).startswith("Unnamed: ")]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if suffix == ".jsonl":
            with open(path, encoding="utf-8") as fh:
                first = json.loads(fh.readline() or "{}")
            return list(first) if isinstance(first, dict) else None
        return [str(c) for c in _cached_frame(path).columns]
    except (UserError, OSError, ValueError, UnicodeDecodeError):
        return None


_FRAMES: dict[Path, pd.DataFrame] = {}


def _cached_frame(path: Path) -> pd.DataFrame:
    """read_frame, remembered during one load_sources call (detecting a pickle's layout reads it whole)."""
    if path not in _FRAMES:
        _FRAMES[path] = read_frame(path)
    return _FRAMES[path]


def detect_format(path: Path) -> str:
    """The one format that claims ``path``; none or two is a one-line error."""
    from harness.formats import FORMATS

    name = display_name(path)
    claimed = [n for n in FORMATS.names() if FORMATS.get(n).detect(path)]
    if len(claimed) > 1:
        raise UserError(f"{name}: formats {' and '.join(claimed)} both claim this file; pass --format NAME to choose")
    if not claimed:
        detect_layout(_cached_frame(path), name)  # raises: unreadable, or unrecognised columns
        raise UserError(f"{name}: no import format recognises this file; see `routerbench import --list-formats`")
    return claimed[0]


def load_sources(
    specs: list[str],
    on_ambiguous: str = "skip",
    refresh: bool = False,
    *,
    missing_cost: str = "error",
    sha256: Sequence[str] = (),
    format: str | None = None,
    prices: str | None = None,
    unit_cost: bool = False,
    models_dir: str | None = None,
) -> ImportBatch:
    """Read every source, group files by format, and turn each group into prompts and outcomes.

    Each file's format is ``format`` if given, else the one entry of :data:`harness.formats.FORMATS`
    whose ``detect`` claims it. Files of one format are combined before checks, so a sample_id reused
    across files (RouterBench's train/test copies) is seen as such. ``sha256`` holds the expected
    digest of each URL source, in order (see :func:`harness.sources.url_digests`). ``prices``,
    ``unit_cost`` and ``models_dir`` price sets without published costs (harness.formats.pricing).
    """
    from harness.formats import FORMATS, ImportOptions

    if on_ambiguous not in AMBIGUOUS_POLICIES:
        raise UserError(f"--on-ambiguous must be one of {', '.join(AMBIGUOUS_POLICIES)}, not '{on_ambiguous}'")
    if missing_cost not in MISSING_COST_POLICIES:
        raise UserError(f"--missing-cost must be one of {', '.join(MISSING_COST_POLICIES)}, not '{missing_cost}'")
    chosen = FORMATS.get(format) if format else None
    options = ImportOptions(on_ambiguous=on_ambiguous, missing_cost=missing_cost, prices=prices, unit_cost=unit_cost, models_dir=models_dir)
    groups: dict[str, list[Path]] = {}
    try:
        for spec, digest in zip(specs, url_digests(specs, sha256)):
            for path in fetch(spec, refresh=refresh, sha256=digest):
                groups.setdefault(chosen.name if chosen else detect_format(path), []).append(path)
        total = ImportBatch(pd.DataFrame(), pd.DataFrame())
        for fmt, paths in groups.items():
            part = FORMATS.get(fmt).read(paths, options)
            _add(total, part)
            total.formats[fmt] = total.formats.get(fmt, 0) + len(paths)
    finally:
        _FRAMES.clear()
    return total


def read_frames(paths: list[Path]) -> pd.DataFrame:
    """The files as one frame, each row tagged with its file's name (for messages)."""
    return pd.concat([_cached_frame(p).assign(**{SOURCE: display_name(p)}) for p in paths], ignore_index=True)


def _add(total: ImportBatch, part: ImportBatch) -> None:
    total.prompts = pd.concat([total.prompts, part.prompts], ignore_index=True)
    total.outcomes = pd.concat([total.outcomes, part.outcomes], ignore_index=True)
    for k, v in part.missing_by_model.items():
        total.missing_by_model[k] = total.missing_by_model.get(k, 0) + v
    total.ambiguous += part.ambiguous
    total.rekeyed += part.rekeyed
    total.duplicates_dropped += part.duplicates_dropped
    total.models_without_cost += part.models_without_cost
    for fam, parts in part.split.items():
        into = total.split.setdefault(fam, {"train": [], "test": []})
        for k in ("train", "test"):
            into[k] += parts.get(k, [])
    total.notes += part.notes


# ---------------------------------------------------------------------- export
def to_wide(store: Store, families: list[str] | None = None) -> pd.DataFrame:
    """The store in RouterBench's wide layout (prompt cells as originally imported)."""
    prompts = store.prompts(["sample_id", "task", "prompt", "prompt_original", "meta"], families=families)
    prompts = prompts.sort_values("sample_id", ignore_index=True)
    models = store.models()
    outcomes = store.outcomes(["sample_id", "model", "response", "score", "cost_usd"], models=models)
    outcomes = outcomes[outcomes["score"].notna() & outcomes["sample_id"].isin(prompts["sample_id"])]
    turns = prompts["meta"].map(lambda m: json.loads(m).get("turns", 1) if m else 1).to_numpy()
    prompt_cells = prompts["prompt_original"].where(
        prompts["prompt_original"].notna(), pd.Series(encode_list_cells(prompts["prompt"].to_numpy(object), turns))
    )
    wide = pd.DataFrame({"sample_id": prompts["sample_id"], "prompt": prompt_cells, "eval_name": prompts["task"]})
    pivot = outcomes.pivot(index="sample_id", columns="model").reindex(prompts["sample_id"])
    turn_of = pd.Series(turns, index=prompts["sample_id"])
    scores = np.column_stack([pivot["score"].get(m, pd.Series(np.nan, index=pivot.index)).to_numpy(float) for m in models])
    costs = np.column_stack([pivot["cost_usd"].get(m, pd.Series(np.nan, index=pivot.index)).to_numpy(float) for m in models])
    cols: dict[str, object] = {}
    for j, m in enumerate(models):
        cols[m] = scores[:, j]
    for m in models:
        resp = pivot["response"].get(m, pd.Series(None, index=pivot.index, dtype=object)).to_numpy(object)
        cols[f"{m}|model_response"] = encode_list_cells(resp, turn_of.to_numpy())
    for j, m in enumerate(models):
        cols[f"{m}|total_cost"] = costs[:, j]
    _, _, choice = oracle(np.nan_to_num(scores, nan=0.0), np.nan_to_num(costs, nan=0.0))
    cols["oracle_model_to_route_to"] = np.where(choice >= 0, np.asarray(models, dtype=object)[np.maximum(choice, 0)], NO_MODEL_CORRECT)
    return pd.concat([wide, pd.DataFrame(cols)], axis=1)


def to_long(store: Store, families: list[str] | None = None) -> pd.DataFrame:
    prompts = store.prompts(["sample_id", "task", "task_family", "prompt"], families=families)
    outcomes = store.outcomes()
    return outcomes.merge(prompts, on="sample_id", how="inner").sort_values(["sample_id", "model"], ignore_index=True)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)


EXPORTS: Registry = Registry("export format")
EXPORTS.add("routerbench-csv", lambda store, fams, path: _write_csv(to_wide(store, fams), path))
EXPORTS.add("routerbench-pkl", lambda store, fams, path: to_wide(store, fams).to_pickle(path))
EXPORTS.add("long-parquet", lambda store, fams, path: to_long(store, fams).to_parquet(path, index=False))
EXPORTS.add("long-csv", lambda store, fams, path: _write_csv(to_long(store, fams), path))
