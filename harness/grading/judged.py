"""Task families that only the LLM judge can grade: served traffic.

``routerbench serve`` appends each request as a prompt of a family (``traffic``) that no registered
task family renders and that has no gold answer. One decision, shared by ``extend --tasks`` and
``regrade --family``: :func:`judged_families` says which families of a store are such, and
:func:`with_judge` makes the judge (``--judge``) grade each one a run names, with the judge prompts
its settings keep, else those MT-Bench's family keeps. The choice goes into the store's families
table, so later runs (a plain ``regrade``, ``refresh``) grade those families with the judge too,
never with exact-match against a gold answer that does not exist.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from harness.errors import UserError
from harness.grading.judge import JudgeGrader
from harness.prompt_meta import FamilySettings
from harness.tasks import resolve
from harness.tasks.mtbench import JUDGE_PROMPTS_KEY

JUDGE = JudgeGrader.name


def judged_families(prompts: pd.DataFrame, families: Mapping[str, FamilySettings]) -> list[str]:
    """The task families of ``prompts`` (rows with ``task_family, gold, meta``) that no registered
    task family renders and that either the judge grades already or that name no grader and have
    no gold answer at all (``families``: the store's families table)."""
    gold = prompts["gold"].fillna("").astype(str).str.strip().ne("")
    has_gold = gold.groupby(prompts["task_family"]).any()  # one pass over every prompt
    out = []
    for row in prompts.drop_duplicates("task_family")[["task_family", "meta"]].to_dict("records"):  # one row per family
        family, meta = resolve(row, families)
        registered = family.name != "generic" or meta.get("family") == "generic"  # a generic set names its family
        grader = meta.get("grader")
        if not registered and (grader == JUDGE or (not grader and not has_gold[row["task_family"]])):
            out.append(str(row["task_family"]))
    return sorted(out)


def with_judge(
    store: Any, prompts: pd.DataFrame, names: Iterable[str], families: Mapping[str, FamilySettings], grader_options: Mapping[str, Any], flag: str
) -> dict[str, FamilySettings]:
    """The families table with each judged family (:func:`judged_families`) among ``names`` graded by
    the judge, written to ``store`` where that is new. A one-line error naming ``flag`` (the option
    that named the families) when the run has no ``--judge`` or the store no judge prompts."""
    names = set(names)
    judged = judged_families(prompts[prompts["task_family"].isin(names)], families)
    out = dict(families)
    if not judged:
        return out
    which = ", ".join(judged)
    if not grader_options.get("judge"):
        raise UserError(f"{flag} {which}: served traffic, no gold answers to grade against; grade it with an LLM judge: --judge model_configs/<judge>.yaml")
    new = []
    for name in judged:
        own = families.get(name)
        settings = dict(own.settings) if own is not None else {}
        if not settings.get(JUDGE_PROMPTS_KEY):
            mtbench = families.get("mtbench")
            kept = mtbench.settings.get(JUDGE_PROMPTS_KEY) if mtbench is not None else None
            if not kept:
                raise UserError(f"{flag} {name}: the judge needs MT-Bench's judge prompts in the store: `routerbench prompts import mtbench DIR` (DIR with judge_prompts.jsonl) first")
            settings[JUDGE_PROMPTS_KEY] = kept
        out[name] = FamilySettings(task_family=name, family=own.family if own is not None else None, grader=JUDGE, settings=settings)
        if out[name] != own:
            new.append(out[name].row())
    if new:
        store.append(families=pd.DataFrame(new), overwrite=True, source=f"{flag} {which}: graded by {JUDGE}")
    return out


__all__ = ["JUDGE", "judged_families", "with_judge"]
