"""`routerbench serve`: a chosen router setting behind an OpenAI-compatible endpoint on Ray Serve.

Modules, one job each: :mod:`~harness.serving.setting` (setting names such as
``knn:k=10@cost=0.001``), :mod:`~harness.serving.fitted` (fit once on the store, route one prompt),
:mod:`~harness.serving.wire` (OpenAI's JSON), :mod:`~harness.serving.upstream` (forwarding through
the engines), :mod:`~harness.serving.traffic` (served requests back into the store),
:mod:`~harness.serving.metrics`, :mod:`~harness.serving.app` (the deployment; needs the ``serve``
extra) and :mod:`~harness.serving.server` (start, stop, status). Only ``app`` imports Ray Serve.
"""

from harness.serving.fitted import TRAFFIC_FAMILY, Embedder, FittedRoute, RouteDecision, fit_routes
from harness.serving.setting import RouteSetting, parse_setting, parse_settings

__all__ = ["TRAFFIC_FAMILY", "Embedder", "FittedRoute", "RouteDecision", "RouteSetting", "fit_routes", "parse_setting", "parse_settings"]
