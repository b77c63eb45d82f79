"""Recover the gold letter of RouterBench's multiple-choice prompts from the answers it scored.

RouterBench ships responses and 0/1 scores but not the answer key. For each prompt, the letters
that responses scored 1 commit to (read by the multiple-choice grader's extraction) should all be
the same, and no response scored 0 should commit to it. Status per prompt:

- ``consistent``: exactly one letter among the correct answers, and no wrong answer chose it;
- ``elimination``: no answer was correct, and the wrong answers rule out every letter but one;
- ``conflict``: correct answers disagree, or a wrong answer chose the correct answers' letter;
- ``undetermined``: no correct answer and more than one letter left.

Only the first two give a gold letter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.tasks import mc_format

STATUSES = ("consistent", "elimination", "conflict", "undetermined")


def derive_gold(prompts: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """``sample_id, gold, status, labels, choices, votes`` for each prompt (``prompt`` text decoded)."""
    parsed = {sid: mc_format.last_block(str(p)) for sid, p in zip(prompts["sample_id"], prompts["prompt"])}
    labels = {sid: "".join(ch) or "AB" for sid, (_, ch) in parsed.items()}
    o = outcomes[outcomes["sample_id"].isin(parsed) & outcomes["score"].notna()]
    letters = [mc_format.extract_letter(str(r), labels[s]) if isinstance(r, str) else None for s, r in zip(o["sample_id"], o["response"])]
    o = o.assign(letter=letters, correct=o["score"].to_numpy(float) >= 1.0)
    right = o[o["correct"] & o["letter"].notna()].groupby("sample_id")["letter"].agg(lambda s: sorted(set(s)))
    wrong = o[~o["correct"] & o["letter"].notna()].groupby("sample_id")["letter"].agg(lambda s: sorted(set(s)))
    votes = o[o["correct"] & o["letter"].notna()].groupby("sample_id")["letter"].size()
    rows = []
    for sid in prompts["sample_id"]:
        pos, neg = right.get(sid, []), wrong.get(sid, [])
        remaining = [x for x in labels[sid] if x not in neg]
        if len(pos) == 1 and pos[0] not in neg:
            gold, status = pos[0], "consistent"
        elif not pos and len(remaining) == 1:
            gold, status = remaining[0], "elimination"
        else:
            gold, status = None, "conflict" if pos else "undetermined"
        rows.append((sid, gold, status, labels[sid], list(parsed[sid][1].values()), int(votes.get(sid, 0))))
    return pd.DataFrame(rows, columns=["sample_id", "gold", "status", "labels", "choices", "votes"])


def summarize(derived: pd.DataFrame) -> dict[str, int]:
    counts = derived["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES}


def gold_agreement(derived: pd.DataFrame, other: pd.Series) -> tuple[int, int]:
    """(agreeing, compared): derived gold letters against another source's, where both exist."""
    both = derived.set_index("sample_id")["gold"].dropna()
    other = other.dropna()
    common = both.index.intersection(other.index)
    return int(np.sum(both[common].to_numpy() == other[common].to_numpy())), len(common)
