"""Import formats: one module per published outcome format, found by name in :data:`FORMATS`.

A format is a :class:`Format`: ``detect(path) -> bool`` (does this file look like mine? cheap: a
header or first line), and ``read(paths, options) -> ImportBatch`` (the files it claimed, combined,
as the prompts and outcomes tables that :meth:`harness.store.Store.append` takes). Adding a format
is one new file here, one line below, and its test. Plug-ins register under the entry point group
``routerbench.formats`` (value ``module:FORMAT``).

Costs are priced by :mod:`harness.formats.pricing`, which records where each cost came from in the
outcome's ``cost_source``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.registry import Registry


@dataclass(frozen=True)
class ImportOptions:
    """What the user asked of an import, passed to every format's ``read``."""

    on_ambiguous: str = "skip"
    missing_cost: str = "error"
    #: ``--prices FILE``: YAML/JSON ``{model: {input_per_mtok, output_per_mtok}}``, before any other table.
    prices: str | None = None
    #: ``--unit-cost``: every call of every imported model costs 1 (cost_source ``unit``).
    unit_cost: bool = False
    #: model config directory for prices (default ``model_configs/``).
    models_dir: str | None = None


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[Path], bool]
    read: Callable[[list[Path], ImportOptions], object]  # -> harness.outcome_import.ImportBatch
    summary: str


FORMATS: Registry[Format] = Registry("import format", entry_point_group="routerbench.formats")
FORMATS.add("routerbench-wide", "harness.formats.routerbench_wide:FORMAT")
FORMATS.add("long", "harness.formats.long:FORMAT")
FORMATS.add("routellm", "harness.formats.routellm:FORMAT")
FORMATS.add("llmrouter", "harness.formats.llmrouter:FORMAT")
FORMATS.add("routerarena", "harness.formats.routerarena:FORMAT")

__all__ = ["FORMATS", "Format", "ImportOptions"]
