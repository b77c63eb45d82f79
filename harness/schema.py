"""The store's table schemas: what every prompt, family, outcome and embedding row is.

Kept apart from the store (:mod:`harness.store`), so that what produces rows (generation's outcome
files, importers) can name the columns without depending on the store itself.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

PROMPT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("task_family", pa.string(), nullable=False),
        # Decoded text; a JSON list of turns for multi-turn prompts.
        pa.field("prompt", pa.string()),
        # The prompt cell exactly as imported (RouterBench's "['…']"), for embedding parity.
        pa.field("prompt_original", pa.string()),
        pa.field("gold", pa.string()),
        pa.field("meta", pa.string()),
        pa.field("created_at", TIMESTAMP),
    ]
)

#: One row per task family in the store: what is the same for all its prompts, kept once instead of
#: in every prompt's ``meta`` (:class:`harness.prompt_meta.FamilySettings`).
FAMILY_SCHEMA = pa.schema(
    [
        pa.field("task_family", pa.string(), nullable=False),
        # The registered family that renders and grades its prompts (a generic set's: "generic").
        pa.field("family", pa.string()),
        # Its grader, when the import chose one (a generic set's --grader); null: the family's own.
        pa.field("grader", pa.string()),
        # JSON object of what its grader reads once for all prompts (MT-Bench: the judge's prompts).
        pa.field("settings", pa.string()),
        pa.field("created_at", TIMESTAMP),
    ]
)

OUTCOME_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("response", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("cost_usd", pa.float64()),
        # Where cost_usd came from: published | tokens×price | estimated | unit (harness.formats.pricing).
        # Null in stores written before the column: read it with effective_cost_source().
        pa.field("cost_source", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("latency_s", pa.float64()),
        pa.field("grader", pa.string()),
        pa.field("config_hash", pa.string()),
        # Why there is no score (engine failure, grader error, missing gold); null for a graded outcome.
        pa.field("error", pa.string()),
        pa.field("created_at", TIMESTAMP),
    ]
)


EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("text_sha256", pa.string(), nullable=False),
        pa.field("embedder", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32())),
        pa.field("created_at", TIMESTAMP),
    ]
)


#: What an outcome may hold: a score in [0, 1] and a cost of at least 0 (NaN: none or not known).
SCORE_RANGE = (0.0, 1.0)
COST_RANGE = (0.0, float("inf"))


def outside(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Where ``values`` leave ``bounds`` (NaN is never outside): the one check imports and appends share."""
    lo, hi = bounds
    return (values < lo) | (values > hi)
