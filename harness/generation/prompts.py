"""Where prompts for ``generate`` come from: a file (JSONL or CSV with ``sample_id, prompt``, and
optionally ``max_tokens``) or the store's prompts of some task families."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.generation.base import Request
from harness.jsonl import read_jsonl
from harness.registry import Registry

REQUIRED = ("sample_id", "prompt")


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


def requests_from_frame(df: pd.DataFrame, where: str, limit: int | None = None) -> list[Request]:
    """Rows with ``sample_id, prompt`` (and optional ``max_tokens``) as requests, checked."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"{where}: missing column '{missing[0]}' (need sample_id and prompt; found {', '.join(map(str, df.columns)) or 'none'})")
    if limit is not None:
        df = df.head(limit)
    dupes = df["sample_id"][df["sample_id"].duplicated()]
    if len(dupes):
        raise UserError(f"{where}: sample_id '{dupes.iloc[0]}' appears more than once")
    requests = []
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
        requests.append(Request.from_prompt(str(row.sample_id), row.prompt, max_tokens))
    return requests


def read_prompt_file(path: str | Path, limit: int | None = None) -> list[Request]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such prompt file")
    suffix = path.suffix.lower()
    if suffix not in PROMPT_READERS:
        raise UserError(f"{path}: prompt files must be one of {', '.join(PROMPT_READERS.names())}")
    return requests_from_frame(PROMPT_READERS.get(suffix)(path), str(path), limit)


def store_prompts(store_uri: str, families: Iterable[str], limit: int | None = None) -> list[Request]:
    """The store's prompts of these task families in sample_id order, rendered by their family
    (0-shot, as ``extend`` sends them): RouterBench's own prompts go as stored."""
    from harness.dataset import Store
    from harness.tasks import family_of, turns_of

    families = list(families)
    store = Store(store_uri)
    df = store.prompts(["sample_id", "task", "prompt", "task_family", "gold", "meta"], families=families)
    absent = sorted(set(families) - set(df["task_family"]))
    if absent:
        known = sorted(set(store.prompts(["task_family"])["task_family"]))
        raise UserError(f"store {store.uri} has no prompts for task family '{absent[0]}' (it has: {', '.join(known) or 'none'}); import them first")
    df = df.sort_values(["task_family", "sample_id"], kind="stable")
    if limit is not None:
        df = df.head(limit)
    requests = []
    for row in df.to_dict("records"):
        if turns_of(row) > 1:
            raise UserError(f"sample '{row['sample_id']}': a multi-turn prompt needs one answer per turn; `routerbench extend` runs those")
        requests.append(Request(str(row["sample_id"]), family_of(row).render(row, 0)))
    return requests
