"""Bring a prompt set into the store: add new prompts, attach gold answers to the ones already there.

A loaded row whose sample_id is stored already must have the same prompt text (else it would
silently re-point outcomes at another question): its gold and meta are updated. A row the family
recognises as a stored prompt under another id (``TaskFamily.match``) gives that prompt its gold
and meta, the prompt text untouched. Everything else is added. What the set keeps once for its
family (MT-Bench's judge prompts) goes to the families table. One atomic commit per table (the
family's settings, then its prompts); rerunning the same import changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.store import Store
from harness.errors import UserError
from harness.families import task_families
from harness.prompt_meta import FamilySettings, is_missing, parse_meta
from harness.tasks import get_family
from harness.tasks.base import LoadedSet, TaskFamily, finalize

STORED_COLUMNS = ["sample_id", "task", "task_family", "prompt", "prompt_original", "gold", "meta"]


@dataclass
class ImportReport:
    family: str
    read: int  # prompts the source holds
    added: int = 0  # new prompts
    attached: int = 0  # prompts already stored under other ids that got gold and meta
    updated: int = 0  # prompts stored under the same id whose gold or meta changed
    unchanged: int = 0
    gold_changed: int = 0  # stored gold answers the import replaced with a different one
    without_gold: int = 0  # of the prompts read, those without a gold answer
    tasks: dict[str, int] = field(default_factory=dict)  # prompts read per task
    notes: list[str] = field(default_factory=list)
    commit: str | None = None


def _same(a: object, b: object) -> bool:
    return is_missing(a) and is_missing(b) if is_missing(a) or is_missing(b) else a == b


def import_prompts(store: Store, family: str, source: str | Path, **options: object) -> ImportReport:
    """Read ``source`` with the task family ``family`` and write its prompts into ``store``."""
    fam = get_family(family)
    return write_prompt_set(store, fam, fam.load(Path(source), **options), str(source))


def derive_gold_in_store(store: Store, family: str) -> ImportReport:
    """Give the store's RouterBench prompts of ``family`` the gold letters its stored scores imply."""
    from harness.tasks.routerbench_source import gold_from_store

    fam = get_family(family)
    return write_prompt_set(store, fam, gold_from_store(store, fam.name), f"{store.uri} ({family} outcomes)")


def write_prompt_set(store: Store, fam: TaskFamily, loaded: LoadedSet, source: str) -> ImportReport:
    """Add, attach and update as the module says, in one commit."""
    rows = loaded.rows.reset_index(drop=True)
    report = ImportReport(fam.name, len(rows), notes=list(loaded.notes))
    report.tasks = {str(k): int(v) for k, v in rows["task"].value_counts().sort_index().items()}
    report.without_gold = int(rows["gold"].isna().sum())
    stored = store.prompts(STORED_COLUMNS).set_index("sample_id", drop=False)

    same_id = rows["sample_id"].isin(stored.index).to_numpy()
    ids = rows["sample_id"][same_id]
    clash = list(ids[stored["prompt"].reindex(ids).to_numpy(dtype=object) != rows["prompt"][same_id].to_numpy(dtype=object)])
    if clash:
        raise UserError(
            f"{source}: {len(clash)} sample_id(s) already in the store with a different prompt ({', '.join(clash[:3])}); "
            "they would re-point stored outcomes at another question"
        )
    others = rows[~same_id]
    # the family's own prompts, and (generic sets) those of the families its tasks fall in
    candidates = stored[stored["task_family"].isin({fam.name, *task_families(others["task"])})]
    matched = fam.match(others, candidates) if len(others) and len(candidates) else pd.Series(pd.NA, index=others.index, dtype=object)
    matched = matched[matched.notna() & ~matched.duplicated()]

    updates = []
    new_rows, stored_rows = rows.to_dict("index"), stored.to_dict("index")  # plain dicts: one lookup per row
    attached = set(matched.index)
    for i, sid in list(zip(rows.index[same_id], rows["sample_id"][same_id])) + list(matched.items()):
        new, old = new_rows[i], stored_rows[sid]
        if i in attached:
            gold, meta = fam.attach(new, old)
        else:
            gold, meta = new["gold"], {**parse_meta(old["meta"]), **{k: v for k, v in dict(new["meta"]).items() if not k.startswith("_")}}
        meta = {k: v for k, v in meta.items() if k not in loaded.settings}  # a store's older rows kept them per row
        if is_missing(gold) and not is_missing(old["gold"]):
            gold = old["gold"]  # an import never erases a gold answer it could not recover itself
        meta_json = json.dumps(meta, ensure_ascii=False)
        if _same(gold, old["gold"]) and meta_json == (old["meta"] or "{}"):
            report.unchanged += 1
            continue
        report.gold_changed += int(not is_missing(old["gold"]) and not _same(gold, old["gold"]))
        report.attached += int(i in attached)
        report.updated += int(i not in attached)
        updates.append({**old, "gold": gold, "meta": meta_json})

    adds = rows.drop(index=rows.index[same_id]).drop(index=matched.index)
    report.added = len(adds)
    if len(adds) and len(candidates) and not len(matched):
        report.notes.append(
            f"none of these prompts is one of the store's {len(candidates)} {fam.name} prompts: all {len(adds)} are added as new "
            "(check that this is the split the stored prompts come from, e.g. GSM8K's train.jsonl for RouterBench's)"
        )
    frames = [finalize(adds, Path(source), fam)] if len(adds) else []
    if updates:
        frames.append(pd.DataFrame(updates)[STORED_COLUMNS])
    touched = set(frames[0]["task_family"]) if len(adds) else set()
    touched |= set(stored.loc[[sid for _, sid in list(zip(rows.index[same_id], rows["sample_id"][same_id])) + list(matched.items())], "task_family"])
    families = _family_rows(store, fam, loaded, touched)
    if frames or families is not None:
        prompts = pd.concat(frames, ignore_index=True) if frames else None
        result = store.append(prompts=prompts, families=families, overwrite=True, source=f"{source} ({fam.name})")
        report.commit = result.commit
    return report


def _family_rows(store: Store, fam: TaskFamily, loaded: LoadedSet, task_families: set[str]) -> pd.DataFrame | None:
    """The families-table rows an import writes: the loaded set's family-wide settings (MT-Bench's
    judge prompts), merged over what each task family it touched kept; None when nothing changes."""
    if not loaded.settings:
        return None
    stored = store.families()
    rows = []
    for tf in sorted(task_families):
        old = stored.get(tf)
        new = FamilySettings(task_family=tf, family=fam.name, grader=fam.grader or None, settings={**(old.settings if old else {}), **loaded.settings})
        if new != old:
            rows.append(new.row())
    return pd.DataFrame(rows) if rows else None
