"""Deployed router settings by name: ``knn:k=10@cost=0.001`` or ``mf:dim=64@lambda=1000``.

The name is what a client puts in a request's ``model`` field, so it is parsed once, at start-up,
into a typed :class:`RouteSetting`: a registered router, its parameters (merged over the first
entry of that router's default grid, so ``knn:k=10`` means ``k=10,metric=cosine``), and how the
willingness to pay λ of ``argmax λ·P − c`` is fixed — given (``@lambda=X``) or calibrated on the
store to a mean cost per query (``@cost=X``), as ``evaluate --target-cost`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.calibration import CalibrationTarget, parse_target_cost
from harness.errors import UserError
from routers import PredictiveRouter, Router, RoutingOptions, build_routers, config_label

SETTING_EXAMPLE = "knn:k=10@cost=0.001"


def _value(text: str) -> Any:
    """A parameter as the router's grid would give it: int, float, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class RouteSetting:
    """One deployable router setting. ``name`` is exactly what clients send as ``model``."""

    name: str
    router: str
    params: dict[str, Any] = field(hash=False)
    knob: Literal["lambda", "cost"]
    value: float

    @property
    def config(self) -> str:
        """The ``config`` label, as ``evaluate`` prints it (``k=10,metric=cosine``)."""
        return config_label(self.params)

    @property
    def target(self) -> CalibrationTarget | None:
        return CalibrationTarget("cost", self.value) if self.knob == "cost" else None

    def build(self, options: RoutingOptions | None = None) -> PredictiveRouter:
        """A fresh, unfitted router of this setting."""
        router = _router_class(self.router, self.name)(options or RoutingOptions(), **self.params)
        assert isinstance(router, PredictiveRouter)
        return router


def _router_class(name: str, setting: str) -> type[Router]:
    try:
        grid = build_routers(name)
    except UserError as exc:
        raise UserError(f"router setting '{setting}': {exc}") from None
    cls = type(grid[0])
    if not issubclass(cls, PredictiveRouter):
        raise UserError(f"router setting '{setting}': router '{name}' has no λ to route with; serve a predictive one (knn, mlp, svm, mf, sw-ranking, irt, dual-encoder, carrot)")
    return cls


def parse_setting(text: str) -> RouteSetting:
    """``ROUTER[:K=V,…]@cost=USD`` or ``ROUTER[:K=V,…]@lambda=X`` → :class:`RouteSetting`."""
    name = text.strip()
    head, at, knob_text = name.rpartition("@")
    if not at or not head:
        raise UserError(f"router setting '{text}': needs '@cost=USD' or '@lambda=X' after the router, e.g. {SETTING_EXAMPLE}")
    knob, eq, raw = knob_text.partition("=")
    if knob not in ("cost", "lambda") or not eq:
        raise UserError(f"router setting '{text}': '@{knob_text}' must be '@cost=USD' or '@lambda=X', e.g. {SETTING_EXAMPLE}")
    if knob == "cost":
        value = parse_target_cost(raw).value
    else:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise UserError(f"router setting '{text}': λ '{raw}' must be a number ≥ 0, e.g. @lambda=1000")
    router, _, config = head.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in config.split(","))):
        key, eq, v = item.partition("=")
        if not eq or not key:
            raise UserError(f"router setting '{text}': parameter '{item}' must be KEY=VALUE, e.g. {SETTING_EXAMPLE}")
        params[key.strip()] = _value(v.strip())
    cls = _router_class(router, name)
    defaults = dict(cls.grid()[0]) if cls.grid() else {}
    setting = RouteSetting(name, router, {**defaults, **params}, knob, value)  # type: ignore[arg-type]
    built = setting.build()
    if len(built.settings()) != 1:
        raise UserError(f"router setting '{text}': '{setting.config}' is several settings at once; name one (e.g. k=10)")
    return setting


def parse_settings(texts: list[str]) -> list[RouteSetting]:
    """Every ``--routers`` value (comma or space separated is not allowed: names hold commas)."""
    settings = [parse_setting(t) for t in texts]
    names = [s.name for s in settings]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise UserError(f"router setting '{dup}' is given twice")
    if not settings:
        raise UserError(f"serve needs at least one --routers setting, e.g. --routers {SETTING_EXAMPLE}")
    return settings
