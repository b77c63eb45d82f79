"""Routing strategies behind one interface (:class:`routers.base.Router`), found by name.

``build_routers("knn")`` gives one router per setting of its default grid; ``"pkg.mod:func"``
loads a user's plug-in; third-party packages register more through the ``routerbench.routers``
entry-point group.
"""

from __future__ import annotations

from harness.registry import load_object
from routers.base import ROUTERBENCH_LAMBDAS, Choices, PredictiveRouter, Router, Routing, RoutingOptions, config_label
from routers.plugin import routers_from
from routers.registry import ROUTERS

#: RouterBench's routers, then the field's since (RouteLLM's mf and sw-ranking, IRT-Router, RouterDC,
#: CARROT); knn-cv and finetuned encoders are opt-in.
DEFAULT_ROUTERS = ("llm", "oracle", "oracle-frontier", "random", "knn", "mlp", "svm", "cascade", "mf", "sw-ranking", "irt", "dual-encoder", "carrot")


def build_routers(spec: str, options: RoutingOptions | None = None) -> list[Router]:
    """Router instances for a registered name (its whole grid) or a ``module:attr`` plug-in."""
    return routers_from(spec, load_object(spec) if ":" in spec else ROUTERS.get(spec), options or RoutingOptions())


__all__ = [
    "DEFAULT_ROUTERS",
    "ROUTERBENCH_LAMBDAS",
    "ROUTERS",
    "Choices",
    "PredictiveRouter",
    "Router",
    "Routing",
    "RoutingOptions",
    "build_routers",
    "config_label",
]
