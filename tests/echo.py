"""The echo prompt set: generic, exact-match prompts the fault server answers by echoing the prompt.

Prompt ``i`` is one word and its gold another (``WORDS``), so an echo scores 1 exactly where they
agree: a test knows every outcome's score without a model.
"""

from __future__ import annotations

from pathlib import Path
import pandas as pd

# the echo set's model: a fault-server config file (one-token answers, one call at a time)
from harness.generation.testing.configs import write_fault_config as echo_config  # noqa: F401

WORDS = ["yes", "no", "maybe"]


def echo_rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [f"g{i:03d}" for i in range(n)], "prompt": [WORDS[i % 3] for i in range(n)], "gold": [WORDS[(i // 2) % 3] for i in range(n)], "task": "echo"})


def write_echo_prompts(path: Path, n: int) -> pd.DataFrame:
    """``n`` echo prompts as a generic JSONL file (``prompts import generic``); returns them."""
    rows = echo_rows(n)
    rows.to_json(path, orient="records", lines=True)
    return rows


def echo_scores(rows: pd.DataFrame) -> pd.Series:
    """The score an echo answer gets, by sample_id."""
    return (rows["prompt"] == rows["gold"]).astype(float).set_axis(rows["sample_id"])
