"""The router registry: built-in names, ``routerbench.routers`` entry points, ``module:attr`` plug-ins."""

from __future__ import annotations

from harness.registry import Registry

#: The built-in routers' modules, imported on the first lookup (torch and scikit-learn with them).
BUILT_IN = tuple(
    f"routers.{m}" for m in ("carrot", "cascade", "dual_encoder", "irt", "knn", "mf", "mlp", "oracle", "random_choice", "single", "svm", "sw_ranking")
)

ROUTERS: Registry = Registry("router", entry_point_group="routerbench.routers", built_in_modules=BUILT_IN)
