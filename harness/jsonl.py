"""JSON Lines files, read one way everywhere: prompt sets, outcome formats, judge prompts, HumanEval.

A file that cannot be read, a line that is not JSON or a line that is not a JSON object is a
one-line error naming the file, the line and what the file was expected to hold.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from harness.errors import UserError


def read_jsonl(path: str | Path, what: str = "JSON objects") -> list[dict]:
    """The objects of a ``.jsonl`` (or gzipped ``.jsonl.gz``) file, blank lines skipped."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict] = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except ValueError as exc:
                    raise UserError(f"{path}:{n}: not valid JSON ({getattr(exc, 'msg', exc)}); expected {what}") from None
                if not isinstance(doc, dict):
                    raise UserError(f"{path}:{n}: not a JSON object; expected {what}")
                rows.append(doc)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from exc
    return rows
