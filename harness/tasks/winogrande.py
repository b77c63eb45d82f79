"""Winogrande: RouterBench's prompts, with the gold letter recovered from RouterBench's own scores.

The Winogrande dev answers are not in the shared data; RouterBench's rows are (two options, A/B,
in RouterBench's own prompt text). SOURCE is RouterBench's wide files (CSV/pickle, or their
directory); rows keep RouterBench's sample_ids and text, so importing them into a store that
already holds RouterBench's outcomes only attaches ``gold`` and ``meta`` to those prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.tasks.base import LoadedSet
from harness.tasks.multiple_choice import MultipleChoiceFamily
from harness.tasks.routerbench_source import gold_from_scores, is_routerbench_source


class Winogrande(MultipleChoiceFamily):
    name = "winogrande"
    structured_keys = ()  # only RouterBench's stored prompts: always sent as stored

    def load(self, source: Path, **options: Any) -> LoadedSet:
        if not is_routerbench_source(source):
            raise UserError(f"{source}: winogrande reads RouterBench's wide files (CSV/pickle or their directory)")
        return gold_from_scores(source, self.name)
