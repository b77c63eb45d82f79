"""Find a public prompt set's questions among the prompts the store already holds under other ids.

RouterBench's prompts are its own renderings of the public questions: MMLU, ARC, HellaSwag and
Winogrande as ``X) choice`` blocks with its instruction line, 0-shot or after k answered
exemplars, the choices in another order than the public files; GSM8K after exemplars and a
``Question:`` line; MT-Bench as the JSON list of its turns. Matching compares *canonical* text
(case, whitespace, punctuation and HellaSwag's ``[title]``-style tags folded), so that a copy
that differs in those (HellaSwag's validation file adds the activity label and drops the tags)
still finds its question. All lookups are dictionaries: one pass over the stored prompts, one over
the new ones.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Callable, Sequence

import pandas as pd

from harness.tasks import mc_format

_TAG = re.compile(r"\[[^\[\]\n]{1,40}\]")
_NON_WORD = re.compile(r"[\W_]+")
INSTRUCTION = "Print only a single choice"
# What ends the text before a question: RouterBench's MMLU lead-in, or an exemplar's answer letter.
_BEFORE_QUESTION = re.compile(r"Please answer with the letter of the correct answer\.|Answer:[ \t]*\n?[ \t]*[A-J][ \t]*\n[ \t]*\n")
_QUESTION_LINE = re.compile(r"(?:^|\n)[ \t]*(?:Question|Q)[ \t]*:", re.IGNORECASE)
_TRAILING_ANSWER = re.compile(r"\n[ \t]*(?:Answer|A)[ \t]*:[ \t]*$", re.IGNORECASE)
#: the shorter of two texts where one ends the other must have this many characters to count
MIN_SUFFIX = 12


def canon(text: object) -> str:
    """Lower case, tags like ``[title]`` and all punctuation dropped, whitespace folded."""
    raw = str(text)
    out = " ".join(_NON_WORD.sub(" ", _TAG.sub(" ", raw).casefold()).split())
    return out or mc_format.normalize(raw)  # a text of symbols only keeps them


def choice_key(choices: Sequence[str]) -> str:
    """The choices as a set (RouterBench shuffled them)."""
    return "|".join(sorted(canon(c) for c in choices))


def parse_mc(prompt: object) -> tuple[str, dict[str, str]] | None:
    """The last question of a RouterBench multiple-choice prompt and its ``{letter: choice}``.

    The last block starts after the lead-in or the last exemplar's answer letter (so a question may
    span paragraphs); its ``A) …``, ``B) …`` lines up to the instruction are the choices (a choice
    may span lines). None if the prompt has no choice block.
    """
    text = str(prompt)
    k = text.rfind(INSTRUCTION)
    if k < 0:
        question, choices = mc_format.last_block(text)
        return (question, choices) if choices else None
    body = text[:k]
    block = "\n" + body[max((m.end() for m in _BEFORE_QUESTION.finditer(body)), default=0) :]
    starts: list[tuple[str, int]] = []
    for label in mc_format.LETTERS:  # the instruction may name more letters than there are choices
        at = block.find(f"\n{label}) ", starts[-1][1] + 1 if starts else 0)
        if at < 0:
            break
        starts.append((label, at))
    if not starts:
        return None
    ends = [at for _, at in starts[1:]] + [len(block)]
    choices = {label: block[at + len(label) + 3 : end].strip() for (label, at), end in zip(starts, ends)}
    return block[: starts[0][1]].strip(), choices


def last_question(prompt: object) -> str:
    """The text after the last ``Question:`` line of a prompt (GSM8K's), without a trailing ``Answer:``."""
    text = str(prompt)
    starts = [m.end() for m in _QUESTION_LINE.finditer(text)]
    tail = text[starts[-1] :] if starts else text
    return _TRAILING_ANSWER.sub("", tail.rstrip()).strip()


def compatible(a: str, b: str) -> bool:
    """Same canonical question, or one ends with the other (a label or lead-in added to a copy)."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= MIN_SUFFIX and long.endswith(" " + short)


def natural_key(sample_id: object) -> list:
    """``x.test.9`` before ``x.test.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(sample_id))]


def pair(
    new: pd.DataFrame,
    wanted: Sequence[str],
    stored: pd.DataFrame,
    keys: Sequence[str],
    fallback: Callable[[int], list[int]] | None = None,
) -> pd.Series:
    """For each new row, the sample_id of a stored row with the same key (or NaN).

    Each stored row is given to one new row at most; rows of the same task are preferred, and new
    rows sharing a key (a question a data set holds twice) take its stored rows in sample_id order.
    ``fallback(i)`` gives candidate stored positions for a new row whose key found none.
    """
    sids, tasks = stored["sample_id"].astype(str).to_numpy(), stored["task"].astype(str).to_numpy()
    by_key: dict[str, list[int]] = defaultdict(list)
    for j in sorted(range(len(stored)), key=lambda j: natural_key(sids[j])):
        if keys[j]:
            by_key[keys[j]].append(j)
    new_tasks = new["task"].astype(str).to_numpy()
    new_ids = new["sample_id"].astype(str).to_numpy()
    found: list[object] = [pd.NA] * len(new)
    used: set[int] = set()
    for i in sorted(range(len(new)), key=lambda i: natural_key(new_ids[i])):
        candidates = by_key.get(wanted[i], []) if wanted[i] else []
        if not candidates and fallback is not None:
            candidates = fallback(i)
        free = [j for j in candidates if j not in used]
        pick = [j for j in free if tasks[j] == new_tasks[i]] or free
        if pick:
            found[i] = sids[pick[0]]
            used.add(pick[0])
    return pd.Series(found, index=new.index, dtype=object)


def match_multiple_choice(new: pd.DataFrame, stored: pd.DataFrame) -> pd.Series:
    """New rows (``meta`` with ``question``, ``choices``) against stored RouterBench MC prompts."""
    keys, by_choices = [], defaultdict(list)
    for j, prompt in enumerate(stored["prompt"]):
        parsed = parse_mc(prompt)
        if parsed is None or not parsed[1]:
            keys.append("")
            continue
        q, ck = canon(parsed[0]), choice_key(list(parsed[1].values()))
        keys.append(q + "||" + ck)
        by_choices[ck].append((q, j))
    metas = list(new["meta"])
    wanted = [canon(m["question"]) + "||" + choice_key(m["choices"]) if "question" in m and m.get("choices") else "" for m in metas]

    def same_choices_similar_question(i: int) -> list[int]:
        m = metas[i]
        if "question" not in m or not m.get("choices"):
            return []
        q = canon(m["question"])
        return [j for sq, j in by_choices.get(choice_key(m["choices"]), []) if compatible(sq, q)]

    return pair(new, wanted, stored, keys, same_choices_similar_question)


def letters_for(answer: object, choices: dict[str, str]) -> list[str]:
    """The letters whose choice is the answer's text: exact, then case-folded, then canonical."""
    if answer is None:
        return []
    for fold in (lambda t: mc_format.normalize(t, False), mc_format.normalize, canon):
        letters = [x for x, text in choices.items() if fold(text) == fold(answer)]
        if letters:
            return letters
    return []
