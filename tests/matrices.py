"""One builder of small hand-made outcome matrices for the router tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.matrix import OutcomeMatrix


def toy_matrix(
    scores,  # noqa: ANN001 - anything np.asarray takes
    costs,  # noqa: ANN001
    features=None,  # noqa: ANN001
    models: Sequence[str] | None = None,
    prompts=None,  # noqa: ANN001
    id_format: str = "s{:04d}",
) -> OutcomeMatrix:
    """Family ``toy``; models ``m0, m1…`` unless named; sample ids by ``id_format`` (their sort
    order is the row order the splits see)."""
    scores, costs = np.asarray(scores, float), np.asarray(costs, float)
    n, m = scores.shape
    return OutcomeMatrix(
        family="toy",
        sample_ids=np.array([id_format.format(i) for i in range(n)], dtype=object),
        tasks=np.array(["toy"] * n, dtype=object),
        models=tuple(models or (f"m{j}" for j in range(m))),
        scores=scores,
        costs=costs,
        prompts=None if prompts is None else np.asarray(prompts, dtype=object),
        features=None if features is None else np.asarray(features, float),
    )
