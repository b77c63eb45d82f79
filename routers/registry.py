"""The router registry: built-in names, ``routerbench.routers`` entry points, ``module:attr`` plug-ins."""

from __future__ import annotations

from harness.registry import Registry

ROUTERS: Registry = Registry("router", entry_point_group="routerbench.routers")
