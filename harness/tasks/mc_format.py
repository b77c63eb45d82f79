"""RouterBench's multiple-choice prompt format, as its stored ARC-Challenge prompts show it.

One block per question — the question, one ``X) choice`` line per option, then the instruction —
and for k-shot the k exemplar blocks first, each followed by its answer letter, blocks separated by
a blank line::

    Which of these ...?
    A) ...
    B) ...
    Print only a single choice  from "A" or "B" or "C" or "D" without explanation.
    Answer:

(The double space in "choice  from" is RouterBench's; it is kept so new prompts match the old.)

An answer is read back by :func:`extract_letter` (the multiple-choice grader's rules, also used to
recover gold letters from RouterBench's scored responses):

1. the response *starts* with a valid letter ("B", "B)", "(B)", "**B**", "B. text", "B: …") — what
   the prompts ask for and what RouterBench's own scores reward; "A" followed by a lower-case word
   is the article ("A chart shows …"), not a choice;
2. otherwise the last explicit statement ("Answer: C", "the correct answer is (C)", "option C",
   ``\\boxed{C}``).
"""

from __future__ import annotations

import re

LETTERS = "ABCDEFGHIJ"
_CHOICE_LINE = re.compile(r"^([A-J])\) (.*)$")


def instruction(labels: str) -> str:
    return "Print only a single choice  from " + " or ".join(f'"{x}"' for x in labels) + " without explanation."


def block(question: str, choices: list[str], labels: str | None = None) -> str:
    labels = labels or LETTERS[: len(choices)]
    lines = [question, *(f"{x}) {c}" for x, c in zip(labels, choices)), instruction(labels), "Answer:"]
    return "\n".join(lines)


def prompt(question: str, choices: list[str], shots: list[dict] = ()) -> str:  # type: ignore[assignment]
    """k exemplar blocks (``question``, ``choices``, ``answer`` letter) and the question's block."""
    parts = [block(s["question"], s["choices"]) + "\n" + s["answer"] for s in shots]
    return "\n\n".join([*parts, block(question, choices)])


def last_block(text: str) -> tuple[str, dict[str, str]]:
    """The question and its ``{letter: choice}`` from the last block of a RouterBench MC prompt."""
    lines = text.rstrip().split("\n\n")[-1].split("\n")
    first = next((i for i, ln in enumerate(lines) if _CHOICE_LINE.match(ln)), len(lines))
    choices = {}
    for ln in lines[first:]:
        m = _CHOICE_LINE.match(ln)
        if not m:
            break
        choices[m.group(1)] = m.group(2)
    return "\n".join(lines[:first]).strip(), choices


def normalize(text: str, fold_case: bool = True) -> str:
    """Whitespace (and case) folded, for matching questions and choices across copies of a data set."""
    text = " ".join(str(text).split())
    return text.casefold() if fold_case else text


DEFAULT_LABELS = "ABCDE"
_LEAD = re.compile(r"^[\s*_`'\"#>]*(?:\(\s*)?([A-Z])(?![A-Za-z0-9])")
_ARTICLE = re.compile(r"^[\s*_`'\"#>]*A\s+[a-z]")
_EXPLICIT = re.compile(
    r"(?:answer|choice|option)\s*(?:is|:|=|would be|should be)?\s*(?:[:\-]\s*)?[*_`'\"]*\(?\s*([A-Z])\s*\)?(?![A-Za-z0-9])"
    r"|\\boxed\{\s*\(?([A-Z])\)?\s*\}",
    re.IGNORECASE,
)


def extract_letter(response: str, labels: str = DEFAULT_LABELS) -> str | None:
    """The option letter ``response`` commits to, or None."""
    lead = _LEAD.match(response)
    if lead and lead.group(1) in labels and not _ARTICLE.match(response):
        return lead.group(1)
    found = None
    for m in _EXPLICIT.finditer(response):
        letter = (m.group(1) or m.group(2) or "").upper()
        if letter in labels:
            found = letter
    return found
