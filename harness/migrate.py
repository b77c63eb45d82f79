"""``routerbench data migrate``: a store of the layout before Delta Lake, rewritten as Delta tables.

Table by table, partition by partition (one model's outcomes at a time, so memory stays bounded by
the largest partition), through the store's ordinary idempotent append: a migration that is killed
resumes where it stopped when run again, and a finished one adds nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.store import TABLES, Store
from harness.errors import UserError
from harness.legacy_store import LegacyStore


@dataclass
class Migrated:
    added: int = 0
    skipped: int = 0


def migrate(old: str, new: str, on_table: Callable[[str, int], None] | None = None) -> dict[str, Migrated]:
    """Copy every live row of the old store at ``old`` into the Delta store at ``new``; rows added and skipped per table."""
    src = LegacyStore(old)
    if not src.commits():
        raise UserError(f"{old}: no store of the old layout there (nothing in {old}/_commits)")
    dst = Store(new)
    counts: dict[str, Migrated] = {}
    for spec in TABLES.values():
        done = counts[spec.name] = Migrated()
        parts = [None] if spec.partition_by is None else sorted({f.partition for f in src.files(spec.name)})
        rows = 0
        for part in parts:
            tbl = src.read_table(spec, None, None if part is None else [part])
            rows += len(tbl)
            if len(tbl):
                res = dst.append_tables({spec: tbl}, source=f"migrate {old}")
                done.added += res.added.get(spec.name, 0)
                done.skipped += res.skipped.get(spec.name, 0)
        if on_table:
            on_table(spec.name, rows)
    return counts
