"""The grader contract: responses and gold answers in, one typed :class:`Grade` per response out.

A grader never turns "could not grade" into a wrong answer: a missing response, a missing gold
answer or a failure of the grader itself gives ``score=None`` with an ``error`` that says which
(``response:missing``, ``gold:missing``, ``grader:<why>``), so the store records why there is no
score and a rerun can fill it in. A response that *was* graded and is wrong scores 0.

A grader declares what it is on its class, so nothing that uses it checks it by name: its
``version``, the Ray ``resources`` it must run on, whether it must run ``keyless``, and its
``Options`` (a typed record). Its id, stored with every grade, is ``name@version`` followed by
``+<tag>`` for each option that differs from its default (``code-exec@1+unsafe-sandbox``,
``mtbench-judge@1+<judge model>+prompts-<digest>``), so ``regrade`` can rebuild the grader from it.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Mapping, Self, Sequence

import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict

from harness.model_config import ModelConfig, load_model_config
from harness.prompt_meta import is_missing, parse_meta

MISSING_GOLD = "gold:missing"
MISSING_RESPONSE = "response:missing"


@dataclass(frozen=True)
class Grade:
    """One graded response: ``score`` in [0, 1] or None with the ``error`` that prevented grading."""

    score: float | None
    error: str | None = None
    extracted: str | None = None  # what the grader read from the response (letter, number, rating, test outcome)


def failed(why: str, extracted: str | None = None) -> Grade:
    """A grade the grader could not give (``grader:<why>``)."""
    return Grade(None, f"grader:{why}", extracted)


@dataclass(frozen=True)
class Flag:
    """Marks a boolean option, written ``+<tag>`` in the id when set. A ``provisional`` flag (the
    weaker sandbox) marks grades that any run without it redoes; it is never taken from an id."""

    tag: str
    provisional: bool = False


@dataclass(frozen=True)
class ModelOption:
    """Marks an option holding a model config (a path, loaded on validation), written ``+<model
    name>`` in the id. Each run gives it, its key is read on the driver, and a stored grade is
    rebuilt only with a config of the model its id names (an id holds a name, never a config)."""

    required: bool = False


def _load_config(value: object) -> object:
    return load_model_config(value) if isinstance(value, (str, os.PathLike)) else value


#: The type of a :class:`ModelOption`: a model config, given as a path or loaded.
ConfigValue = Annotated[ModelConfig | None, BeforeValidator(_load_config)]


class GraderOptions(BaseModel):
    """A grader's options; each field is marked :class:`Flag` or :class:`ModelOption`, in id order."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    @classmethod
    def markers(cls) -> dict[str, Flag | ModelOption]:
        return {name: next(m for m in f.metadata if isinstance(m, (Flag, ModelOption))) for name, f in cls.model_fields.items()}

    @classmethod
    def from_run(cls, given: Mapping[str, Any]) -> Self:
        """This grader's options out of a run's (options it does not declare, or None, are not its)."""
        return cls(**{k: v for k, v in given.items() if k in cls.model_fields and v is not None})

    @classmethod
    def from_id(cls, tags: Sequence[str], run: Self) -> Self | None:
        """The options that rebuild a grade whose id holds ``tags``, with ``run``'s provisional flags
        and model configs; None when ``run`` has no config of a model the id names."""
        markers = cls.markers()
        flags = {m.tag for m in markers.values() if isinstance(m, Flag)}
        named = iter([t for t in tags if t not in flags])  # model names, in field order, then the grader's own tags
        values: dict[str, Any] = {}
        for name, marker in markers.items():
            if isinstance(marker, Flag):
                values[name] = getattr(run, name) if marker.provisional else marker.tag in tags
                continue
            stored, given = next(named, None), getattr(run, name)
            if stored is not None and (given is None or given.name != stored):
                return None
            values[name] = given if stored is not None else None
        return cls(**values)

    def tags(self) -> list[str]:
        """The id's ``+<tag>`` parts for the options that differ from their defaults."""
        out = []
        for name, marker in self.markers().items():
            value = getattr(self, name)
            if isinstance(marker, Flag) and value:
                out.append(marker.tag)
            elif isinstance(marker, ModelOption) and value is not None:
                out.append(value.name)
        return out

    def missing(self) -> list[str]:
        """The required options that are not set."""
        return [n for n, m in self.markers().items() if isinstance(m, ModelOption) and m.required and getattr(self, n) is None]

    def redoes(self, tags: Sequence[str]) -> bool:
        """Whether a run with these options grades again what an id with ``tags`` graded: it holds a
        provisional flag (the weaker sandbox) this run does not."""
        return any(isinstance(m, Flag) and m.provisional and m.tag in tags and not getattr(self, n) for n, m in self.markers().items())

    def holding_keys(self) -> Self:
        """A copy whose model configs hold their keys (call on the driver: see ModelConfig.holding_key)."""
        held = {n: getattr(self, n).holding_key() for n, m in self.markers().items() if isinstance(m, ModelOption) and getattr(self, n) is not None}
        return self.model_copy(update=held) if held else self


class Grader(ABC):
    """Grades a batch of responses against gold answers; :attr:`id` goes into the store."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = ""
    #: Graders that can work without a gold answer (an LLM judge on open questions) say False.
    needs_gold: ClassVar[bool] = True
    #: The Ray resources of the nodes it must run on (code execution: the ``sandbox`` resource).
    resources: ClassVar[dict[str, float]] = {}
    #: Graders that run model-written code say True: their workers hold no API key variable.
    keyless: ClassVar[bool] = False
    #: The record of its options; :meth:`from_options` builds the grader from one.
    Options: ClassVar[type[GraderOptions]] = GraderOptions
    #: Keys of its task family's settings (the store's families table) it reads: the judge, its prompts.
    settings_keys: ClassVar[tuple[str, ...]] = ()
    options: GraderOptions = GraderOptions()

    @classmethod
    def from_options(cls, options: GraderOptions, settings: Mapping[str, Any]) -> Grader:
        """The grader for ``options`` and its family's ``settings`` (the :attr:`settings_keys` of it)."""
        return cls(**dict(options))

    @classmethod
    def check_here(cls, options: GraderOptions) -> None:  # noqa: B027 - most graders run anywhere
        """Fail in one line when this machine cannot grade with ``options`` (the driver, when grading runs here)."""

    def id_tags(self) -> list[str]:
        """The ``+<tag>`` parts of the id: its options that differ from their defaults."""
        return self.options.tags()

    @property
    def id(self) -> str:
        """The store's ``grader`` column: ``<name>@<version>`` and a ``+<tag>`` per option set."""
        return f"{self.name}@{self.version}" + "".join(f"+{t}" for t in self.id_tags())

    def grade_batch(self, responses: Sequence[str | None], golds: Sequence[str | None], metas: Sequence[dict] | None = None) -> list[Grade]:
        """Grade every response; missing inputs become errors here, the rest goes to :meth:`grade_valid`."""
        metas = list(metas) if metas is not None else [{}] * len(responses)
        if not len(responses) == len(golds) == len(metas):
            raise ValueError(f"{self.name}: {len(responses)} responses, {len(golds)} golds and {len(metas)} metas")
        grades: list[Grade | None] = [None] * len(responses)
        todo: list[int] = []
        for i, (resp, gold) in enumerate(zip(responses, golds)):
            if is_missing(resp):
                grades[i] = Grade(None, MISSING_RESPONSE)
            elif self.needs_gold and is_missing(gold):
                grades[i] = Grade(None, MISSING_GOLD)
            else:
                todo.append(i)
        if todo:
            done = self.grade_valid([responses[i] for i in todo], [golds[i] for i in todo], [metas[i] or {} for i in todo])  # type: ignore[misc]
            for i, g in zip(todo, done):
                grades[i] = g
        return grades  # type: ignore[return-value]

    @abstractmethod
    def grade_valid(self, responses: list[str], golds: list[str | None], metas: list[dict]) -> list[Grade]:
        """Grade responses that are present (and have a gold answer where :attr:`needs_gold`)."""

    def close(self) -> None:  # noqa: B027 - graders without resources need nothing
        """Release pools or engines."""


def grade_frame(grader: Grader, frame: pd.DataFrame) -> pd.DataFrame:
    """Grade a frame of ``response, gold, meta`` (``prompt`` too, for graders that read the question).

    Returns the outcome columns ``score, error, grader`` (plus ``extracted``) in the frame's order,
    ready to assign to outcome rows before ``Store.append(outcomes=…, overwrite=True)``.
    """
    metas = [parse_meta(m) for m in (frame["meta"] if "meta" in frame.columns else [None] * len(frame))]
    if "prompt" in frame.columns:
        metas = [{**m, "prompt": p} if "prompt" not in m else m for m, p in zip(metas, frame["prompt"])]
    golds = frame["gold"].tolist() if "gold" in frame.columns else [None] * len(frame)
    grades = grader.grade_batch(frame["response"].tolist(), golds, metas)
    return pd.DataFrame(
        {
            "score": [g.score for g in grades],
            "error": [g.error for g in grades],
            "extracted": [g.extracted for g in grades],
            "grader": grader.id,
        },
        index=frame.index,
    ).astype({"score": "float64"})
