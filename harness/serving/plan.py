"""What a serving replica is given: fitted routes, upstreams, the embedder, where traffic goes.

Built where the command runs (:func:`harness.serving.server.build_plan`), so every check and the
fitting happen once, before Serve starts, and a bad flag is a one-line error, not a crashed replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.serving.fitted import TRAFFIC_FAMILY, Embedder, FittedRoute
from harness.serving.traffic import FLUSH_S
from harness.serving.upstream import Upstream


@dataclass
class ServePlan:
    routes: list[FittedRoute]
    upstreams: dict[str, Upstream]  # by model name (the store's `model` column)
    embedder: Embedder
    store_uri: str
    family: str = TRAFFIC_FAMILY
    flush_s: float = FLUSH_S  # traffic rows are written at least this often
    cache_dir: str | None = None  # the command's $ROUTERBENCH_CACHE (the fast embedder's ONNX file is built there once)
