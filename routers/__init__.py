"""Routing strategies behind one interface (:class:`routers.base.Router`), found by name.

``build_routers("knn")`` gives one router per setting of its default grid; ``"pkg.mod:func"``
loads a user's plug-in; third-party packages register more through the ``routerbench.routers``
entry-point group.
"""

from __future__ import annotations

from routers import oracle, random_choice, single  # noqa: F401  (register the built-ins)
from routers.base import Choices, Router, Routing, config_label
from harness.registry import load_object
from routers.plugin import routers_from
from routers.registry import ROUTERS

DEFAULT_ROUTERS = ("llm", "oracle", "random")


def build_routers(spec: str) -> list[Router]:
    """Router instances for a registered name (its whole grid) or a ``module:attr`` plug-in."""
    return routers_from(spec, load_object(spec) if ":" in spec else ROUTERS.get(spec))


__all__ = ["ROUTERS", "DEFAULT_ROUTERS", "Choices", "Router", "Routing", "build_routers", "config_label"]
