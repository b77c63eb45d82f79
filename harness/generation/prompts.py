"""Where prompts for ``generate`` come from: a file (JSONL or CSV with ``sample_id, prompt``, and
optionally ``max_tokens``) or the store's prompts of some task families.

Either way they come out as prompt rows (``sample_id, task, task_family, prompt, gold, meta``) for
:func:`harness.answering.work_rows`, which renders them exactly as ``extend`` does. A file's prompt
is the generic family's (sent as it is; a JSON list of ``{role, content}`` turns is the
conversation itself), with the file's name as its task."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.generation.base import Request
from harness.jsonl import read_jsonl
from harness.registry import Registry

REQUIRED = ("sample_id", "prompt")
PROMPT_COLUMNS = ("sample_id", "task", "task_family", "prompt", "gold", "meta")


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.DataFrame(read_jsonl(path, "objects with sample_id and prompt"))


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"sample_id": str, "prompt": str}, keep_default_na=False, na_values={"max_tokens": [""]})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None


PROMPT_READERS: Registry = Registry("prompt file type")
PROMPT_READERS.add(".jsonl", _read_jsonl)
PROMPT_READERS.add(".csv", _read_csv)


def prompt_rows(df: pd.DataFrame, where: str, task: str, limit: int | None = None) -> pd.DataFrame:
    """Rows with ``sample_id, prompt`` (and optional ``max_tokens``) as checked prompt rows."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"{where}: missing column '{missing[0]}' (need sample_id and prompt; found {', '.join(map(str, df.columns)) or 'none'})")
    if limit is not None:
        df = df.head(limit)
    dupes = df["sample_id"][df["sample_id"].duplicated()]
    if len(dupes):
        raise UserError(f"{where}: sample_id '{dupes.iloc[0]}' appears more than once")
    rows = []
    for row in df.itertuples(index=False):
        if pd.isna(row.sample_id) or str(row.sample_id) == "":
            raise UserError(f"{where}: a row has an empty sample_id")
        if not isinstance(row.prompt, str) or not row.prompt:
            raise UserError(f"{where}: sample '{row.sample_id}' has an empty or non-text prompt")
        max_tokens = getattr(row, "max_tokens", None)
        if max_tokens is not None and not pd.isna(max_tokens):
            if not float(max_tokens).is_integer() or int(max_tokens) < 1:
                raise UserError(f"{where}: sample '{row.sample_id}': column 'max_tokens' must be a positive integer (got {max_tokens!r})")
            max_tokens = int(max_tokens)
        else:
            max_tokens = None
        request = Request.from_prompt(str(row.sample_id), row.prompt, max_tokens)
        rows.append({"sample_id": request.sample_id, "task": task, "task_family": "generic", "prompt": row.prompt, "gold": None, "meta": None, "messages": request.messages, "max_tokens": max_tokens})
    return pd.DataFrame(rows, columns=[*PROMPT_COLUMNS, "messages", "max_tokens"])


def read_prompt_file(path: str | Path, limit: int | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such prompt file")
    suffix = path.suffix.lower()
    if suffix not in PROMPT_READERS:
        raise UserError(f"{path}: prompt files must be one of {', '.join(PROMPT_READERS.names())}")
    return prompt_rows(PROMPT_READERS.get(suffix)(path), str(path), path.stem, limit)


def store_prompts(store, families: Iterable[str], limit: int | None = None) -> pd.DataFrame:  # noqa: ANN001 - a harness.store.StoreReader
    """A store's prompts of these task families, in (family, sample_id) order."""
    families = list(families)
    df = store.prompts(list(PROMPT_COLUMNS), families=families)
    absent = sorted(set(families) - set(df["task_family"]))
    if absent:
        known = sorted(set(store.prompts(["task_family"])["task_family"]))
        raise UserError(f"store {store.uri} has no prompts for task family '{absent[0]}' (it has: {', '.join(known) or 'none'}); import them first")
    df = df.sort_values(["task_family", "sample_id"], kind="stable")
    return df.head(limit).reset_index(drop=True) if limit is not None else df.reset_index(drop=True)
