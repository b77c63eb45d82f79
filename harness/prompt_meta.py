"""A stored prompt's cells as Python values: what counts as missing, and its ``meta`` JSON.

The lowest layer that task families, graders and the pipeline share, so none of them imports
another for it.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd


def is_missing(value: object) -> bool:
    """None, NaN, pd.NA, or a string of only whitespace: no answer, no gold."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or bool(pd.api.types.is_scalar(value) and pd.isna(value))


def parse_meta(value: Any) -> dict:
    """A prompt's ``meta`` cell (JSON text, dict or null) as a dict."""
    if isinstance(value, dict):
        return value
    if is_missing(value):
        return {}
    try:
        doc = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
