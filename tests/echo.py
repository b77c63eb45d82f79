"""The echo prompt set: generic, exact-match prompts the fault server answers by echoing the prompt.

Prompt ``i`` is one word and its gold another (``WORDS``), so an echo scores 1 exactly where they
agree: a test knows every outcome's score without a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

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


def echo_config(tmp: Path, url: str, name: str, **fields: Any) -> Path:
    """A model config file for the fault server at ``url``: one-token answers, one call at a time
    (``fields`` replace top-level entries, e.g. ``limits=…``, ``resources=…``)."""
    doc = {
        "name": name,
        "provider": "openai_compatible",
        "model": "fault-model",
        "base_url": url,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "limits": {"timeout_s": 5.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 2, "max_concurrency": 1},
        "sampling": {"max_tokens": 1},
        **fields,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
