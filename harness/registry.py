"""A generic name → object registry, with lazy ``module:attr`` entries and entry-point plug-ins.

One instance per kind of component (routers, graders, engines, splits, formats), in the style of
lm-evaluation-harness: ``@REGISTRY.register("name")`` on the class, ``REGISTRY.get("name")`` to
find it, and an unknown name fails with the list of names that do exist.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

from harness.errors import UserError

T = TypeVar("T")


def load_object(spec: str) -> object:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise UserError(f"'{spec}' is not of the form module:attribute")
    if os.getcwd() not in sys.path:  # a user's module next to where they run the command
        sys.path.append(os.getcwd())
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import module '{module_name}' (from '{spec}'): {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"module '{module_name}' has no attribute '{attr_path}' (from '{spec}')") from None
    return obj


class Registry(Generic[T]):
    """Maps names to objects; entries may be given as ``"module:attr"`` strings and load on first use."""

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        built_in: dict[str, T | str] | None = None,
        built_in_modules: tuple[str, ...] = (),
    ) -> None:
        """``built_in_modules`` register their entries (``@register``) when imported, which is
        put off until the first lookup: a command that never asks for a name never imports them
        (the routers' torch and scikit-learn were 3 of the CLI's 5 s to start)."""
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T | str] = {}
        self._modules = built_in_modules
        self._plugins_loaded = False  # built-in modules and entry points, on the first lookup
        for name, obj in (built_in or {}).items():
            self.add(name, obj)

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T | str) -> None:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        for module in self._modules:
            importlib.import_module(module)
        if self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                self._entries.setdefault(ep.name, ep.value)
        self._plugins_loaded = True  # only now: another thread's lookup meanwhile loads (and waits on the imports) too

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def known(self, name: str) -> str:
        """``name`` if registered; else a ValueError listing what is (a pydantic field validator)."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} '{name}' (available: {', '.join(self.names())})")
        return name

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._entries:
            raise UserError(f"Unknown {self.kind} '{name}'. Available: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = load_object(entry)  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]
