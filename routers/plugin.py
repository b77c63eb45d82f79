"""A user's own router, named ``module:attr`` on the command line, evaluated like a built-in one.

Accepted targets:

* a function ``prompt -> model name``;
* an object or class with ``route(prompt) -> model name`` (or ``route_batch(prompts) -> names``),
  and optionally ``fit(train)`` taking the training :class:`~harness.matrix.OutcomeMatrix` (only
  its complete rows, unless the object sets ``handles_missing = True``);
* a :class:`~routers.base.Router` subclass or instance.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from harness.errors import UserError
from harness.matrix import OutcomeMatrix
from routers.base import Choices, Router, RoutingOptions


class PluginRouter(Router):
    """Adapts a ``prompt -> model`` function or an object with ``route``."""

    needs_prompts = True

    def __init__(self, spec: str, target: Any) -> None:
        super().__init__()
        self.name = spec  # type: ignore[misc]  # the plug-in is reported under its own spec
        self.target = target
        # Without fit() it learns nothing from training prompts; with one, it says what it takes.
        trains = callable(getattr(target, "fit", None))
        self.handles_missing = bool(getattr(target, "handles_missing", False)) or not trains  # type: ignore[misc]

    def fit(self, train: OutcomeMatrix) -> None:
        fit = getattr(self.target, "fit", None)
        if callable(fit):
            fit(train)

    def _route_all(self, prompts: list[str]) -> list[Any]:
        batch = getattr(self.target, "route_batch", None)
        if callable(batch):
            return list(batch(prompts))
        one: Callable[[str], Any] = getattr(self.target, "route", None) or self.target
        return [one(p) for p in prompts]

    def choose(self, test: OutcomeMatrix) -> Choices:
        if test.prompts is None:
            raise ValueError("plug-in routers need the prompt texts")
        names = self._route_all(list(test.prompts))
        if len(names) != test.n:
            raise UserError(f"router '{self.name}' returned {len(names)} choices for {test.n} prompts")
        idx = test.model_index(np.asarray([str(n) for n in names], dtype=object))
        if (idx < 0).any():
            bad = str(names[int(np.flatnonzero(idx < 0)[0])])
            raise UserError(
                f"router '{self.name}' chose model '{bad}', which is not in the store's pool "
                f"({', '.join(test.models)})"
            )
        return Choices([""], idx)


def routers_from(spec: str, target: Any, options: RoutingOptions) -> list[Router]:
    """Router instances for a loaded object: one per grid setting of a Router subclass, else a plug-in."""
    if inspect.isclass(target) and issubclass(target, Router):
        return [target(options, **params) for params in target.grid()]
    if isinstance(target, Router):
        return [target]
    if inspect.isclass(target):
        target = target()
    if not any(callable(x) for x in (target, getattr(target, "route", None), getattr(target, "route_batch", None))):
        raise UserError(f"'{spec}' is neither a function prompt -> model nor an object with route() or route_batch()")
    return [PluginRouter(spec, target)]
