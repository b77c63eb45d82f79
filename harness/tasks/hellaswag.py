"""HellaSwag's validation text, for ``families/hellaswag.yaml``: 6 lines per item — the context,
the gold label (0–3), the four endings. The one layout of the multiple-choice families that is
neither CSV nor JSONL, so it is read here and mapped by the YAML like any other record.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError

LINES_PER_ITEM = 6


def read_items(path: Path) -> list[dict]:
    """The file's items as records: ``context``, ``label`` (checked: 0–3), ``endings``."""
    try:
        lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(lines) % LINES_PER_ITEM:
        raise UserError(f"{path}: {len(lines)} lines is not a multiple of {LINES_PER_ITEM} (context, label, 4 endings)")
    items = []
    for i in range(0, len(lines), LINES_PER_ITEM):
        context, label, *endings = lines[i : i + LINES_PER_ITEM]
        if label.strip() not in {"0", "1", "2", "3"}:
            raise UserError(f"{path}:{i + 2}: gold label {label!r} is not 0-3")
        items.append({"context": context, "label": label, "endings": endings})
    return items
