"""Graders: one per file, registered by name in :data:`harness.components.GRADERS`; each declares
what it is on its class.

``make_grader(name, options, settings)`` builds one from a run's options (``{"judge": path,
"unsafe_sandbox": True}``: each grader takes those it declares) and what its task family keeps in
the store (:func:`family_settings`: MT-Bench's judge prompts); ``build_grader(name, **kwargs)``
calls its constructor. A grader's id (``name@version+<option tags>``) is stored with every grade,
and :func:`regrade_options` rebuilds the grader from it. Plug-ins register under the
``routerbench.graders`` entry-point group. Every grader turns (response, gold, meta) into a typed
:class:`Grade`, and a missing response or gold answer, or a failure of the grader, is an error,
never a silent 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from harness.errors import UserError
from harness.prompt_meta import FamilySettings, parse_meta
from harness.grading.base import MISSING_GOLD, MISSING_RESPONSE, Grade, Grader, GraderOptions, grade_frame
from harness.components import GRADERS


def grader_class(name: str) -> type[Grader]:
    """The class registered as ``name``: what it declares (resources, keyless, Options) without building it."""
    return GRADERS.get(name)  # type: ignore[return-value]


def build_grader(name: str, **kwargs: object) -> Grader:
    """The grader registered as ``name``, constructed with ``kwargs``."""
    return grader_class(name)(**kwargs)  # type: ignore[call-arg]


def make_grader(name: str, options: Mapping[str, Any] | GraderOptions | None = None, settings: Mapping[str, Any] | None = None) -> Grader:
    """The grader ``name`` with the options it declares out of ``options`` (a run's, or its own record)
    and its family's ``settings``; an option it requires and lacks is a one-line error."""
    cls = grader_class(name)
    record = options if isinstance(options, GraderOptions) else cls.Options.from_run(options or {})
    for option in record.missing():  # only model options are required
        raise UserError(f"{name} needs a model config for its option '{option}': pass --{option.replace('_', '-')} model_configs/<model>.yaml")
    return cls.from_options(record, settings or {})


def family_settings(name: str, families: Mapping[str, FamilySettings] | None, task_families: Iterable[str], metas: Iterable[Any] = ()) -> dict[str, Any]:
    """What grader ``name`` reads of the settings of these task families (its ``settings_keys``),
    merged; stores written before the families table kept them in each prompt's ``meta``, which
    ``metas`` (those rows' cells) then supply. Dict-valued settings (prompts by name) are united."""
    keys = grader_class(name).settings_keys
    out: dict[str, Any] = {}
    if not keys:
        return out

    def merge(doc: Mapping[str, Any]) -> None:
        for key in keys:
            if key in doc:
                value = doc[key]
                out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value

    for meta in metas:
        merge(parse_meta(meta))
    for tf in sorted(set(task_families)):
        if families and tf in families:
            merge(families[tf].settings)
    return out


def prepare_options(names: Iterable[str], options: Mapping[str, Any], *, check_here: bool = True) -> dict[str, Any]:
    """A run's options as they travel to the grading workers, for the graders ``names``: model
    configs loaded and holding their keys (read here, on the driver), and, when grading runs on this
    machine, each grader's check that it can (bubblewrap for code). One-line errors, before Ray starts."""
    out = dict(options)
    for name in sorted(set(names)):
        cls = grader_class(name)
        record = cls.Options.from_run(options).holding_keys()
        if check_here:
            cls.check_here(record)
        out.update({k: v for k, v in record if options.get(k) is not None})
    return out


@dataclass(frozen=True)
class GraderId:
    """A stored grader id, ``name@version+tag+tag``, taken apart."""

    name: str
    version: str
    tags: tuple[str, ...]

    @classmethod
    def parse(cls, text: object) -> GraderId | None:
        if not isinstance(text, str) or "@" not in text:
            return None
        name, _, rest = text.partition("@")
        version, *tags = rest.split("+")
        return cls(name, version, tuple(tags))


def regrade_options(stored: str | None, name: str, options: Mapping[str, Any], failed: bool = False) -> GraderOptions | None:
    """The options that grade again an outcome whose family is graded by ``name`` now, or None when
    its grade is current or this run cannot rebuild its grader.

    Stale: no stored id (``failed``: its grading failed), another grader, another version, or a
    provisional flag the run does not set. A stale grade of the same grader is rebuilt from its id
    (its flags; its model options only from a run's config of the model the id names); the others
    get the run's options. Either way a required option the run lacks leaves the outcome as it is.
    """
    cls = grader_class(name)
    run = cls.Options.from_run(options)
    parsed = GraderId.parse(stored)
    if parsed is None or parsed.name != name:
        record: GraderOptions | None = run
    elif failed or parsed.version != cls.version or run.redoes(parsed.tags):
        record = cls.Options.from_id(parsed.tags, run)
    else:
        return None
    return None if record is None or record.missing() else record


__all__ = [
    "GRADERS",
    "MISSING_GOLD",
    "MISSING_RESPONSE",
    "Grade",
    "Grader",
    "GraderId",
    "GraderOptions",
    "build_grader",
    "grade_frame",
    "grader_class",
    "family_settings",
    "make_grader",
    "prepare_options",
    "regrade_options",
]
