"""Multiple-choice task families declared as data: one YAML file each in ``harness/tasks/families/``.

A family's file says where its questions are and how to read them; the code that reads, renders,
matches and grades them is shared (:mod:`harness.tasks.multiple_choice`). Python is needed only
for a source layout that is neither CSV nor JSONL (HellaSwag's 6-line text records), named in the
file as ``source.reader: module:function``. The schema, field by field::

    name: mmlu                     # the family (= the file's name)
    grader: multiple-choice        # a name in harness.grading.GRADERS
    template: routerbench-mc-1     # version of the prompt format, part of template_id
    source:
      format: csv                  # csv | jsonl | routerbench (RouterBench's wide files only)
      reader: pkg.mod:function     # instead of format: path -> list of record dicts
      files: "*_test.csv"          # which files of a SOURCE directory are read
      folder: test                 # SOURCE may also be the directory holding this folder
      routerbench: false           # true: RouterBench's wide files are read too (gold from its scores)
    names:                         # placeholders: {file} {stem} {n} (position in its file) {id} {task}
      file: '^(?P<subject>.+)_test\\.csv$'  # a regex on a file's name; each named group is a placeholder
      task: "mmlu-{subject}"       # the task ("_" in placeholder values becomes "-")
      sample_id: "{task}.test-{n}"
    fields:                        # where a record holds each part ("a.b": key b of the object at a)
      id: id                       # optional: the record's id ({id}), else its position
      question: question
      choices: [choice0, choice1]  # one field per choice, or one field holding the list of them
      choice_text: text            # for a list of objects: the key of each one's text …
      choice_label: label          # … and of its label
      answer: answer
    answer: index                  # the answer is a choice's index (0-based) | letter | label
    exemplars:                     # the first k items (never the question itself) of …
      file: "../dev/{subject}_dev.csv"  # … a file beside each source file (relative to its folder),
      file_named: dev              # … or the first of SOURCE's files whose name holds this,
      k: 5                         # … else the question's own file; k: the default count
    meta:                          # extra meta keys of every row, as templates
      source: "{file}"

A bad file is a one-line error naming the file and the field.
"""

from __future__ import annotations

import re
import string
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.components import GRADERS
from harness.errors import UserError
from harness.yaml_file import FieldError, load_record

if TYPE_CHECKING:
    from harness.tasks.multiple_choice import MultipleChoiceFamily

#: The built-in families' files; each is registered in ``harness.tasks.TASKS`` under its name.
FAMILY_DIR = Path(__file__).with_name("families")
_FILE_PLACEHOLDERS = {"file", "stem"}
_RECORD_PLACEHOLDERS = {"n", "id", "task"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    format: Literal["csv", "jsonl", "routerbench"] | None = None
    reader: str | None = None
    files: str = "*"
    folder: str | None = None
    routerbench: bool = False

    @model_validator(mode="after")
    def _one_way_to_read(self) -> Source:
        if (self.format is None) == (self.reader is None):
            raise ValueError("give exactly one of 'format' (csv, jsonl, routerbench) and 'reader' (module:function)")
        if self.reader is not None and ":" not in self.reader:
            raise ValueError(f"reader '{self.reader}' is not of the form module:function")
        return self


class Names(_Strict):
    file: str | None = None
    task: str = Field(min_length=1)
    sample_id: str = Field(min_length=1)

    @field_validator("file")
    @classmethod
    def _a_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression ({exc})") from None
        return value

    @property
    def file_groups(self) -> set[str]:
        return set(re.compile(self.file).groupindex) if self.file else set()


class Fields(_Strict):
    id: str | None = None
    question: str
    choices: list[str] | str
    choice_text: str | None = None
    choice_label: str | None = None
    answer: str

    @property
    def columns(self) -> list[str]:
        """The top-level keys a record must have (a CSV file's columns)."""
        paths = [self.question, *([self.choices] if isinstance(self.choices, str) else self.choices), self.answer, *([self.id] if self.id else [])]
        return list(dict.fromkeys(p.split(".")[0] for p in paths))


class Exemplars(_Strict):
    file: str | None = None
    file_named: str | None = None
    k: int = Field(5, ge=0)

    @model_validator(mode="after")
    def _one_pool(self) -> Exemplars:
        if self.file and self.file_named:
            raise ValueError("give at most one of 'file' and 'file_named'")
        return self


class FamilySpec(_Strict):
    """One multiple-choice family, as its YAML file declares it."""

    name: str = Field(min_length=1)
    grader: Annotated[str, AfterValidator(GRADERS.known)] = "multiple-choice"
    template: str = "routerbench-mc-1"
    source: Source
    names: Names | None = None
    fields: Fields | None = None
    answer: Literal["index", "letter", "label"] = "index"
    exemplars: Exemplars = Field(default_factory=Exemplars)
    meta: dict[str, str] = Field(default_factory=dict)
    path: str | None = Field(None, exclude=True)  # the file it came from, for messages

    @model_validator(mode="after")
    def _layout_is_complete(self) -> FamilySpec:
        if self.source.format == "routerbench":
            return self  # RouterBench's rows: its prompt text and ids, nothing to map
        for part in ("names", "fields"):
            if getattr(self, part) is None:
                raise _at((part,), f"required unless source.format is routerbench (a {self.source.format or 'reader'} source needs it)")
        if self.answer == "label" and not self.fields.choice_label:
            raise _at(("fields", "choice_label"), "required with answer: label (the key of each choice's label)")
        file_level = _FILE_PLACEHOLDERS | self.names.file_groups
        record_level = file_level | (_RECORD_PLACEHOLDERS - (set() if self.fields.id else {"id"}))
        _check_placeholders(("names", "task"), self.names.task, file_level)
        _check_placeholders(("names", "sample_id"), self.names.sample_id, record_level)
        if self.exemplars.file:
            _check_placeholders(("exemplars", "file"), self.exemplars.file, file_level)
        for key, value in self.meta.items():
            _check_placeholders(("meta", key), value, record_level)
        return self

    @property
    def structured(self) -> bool:
        """Whether rows carry question and choices (else they are RouterBench's, sent as stored)."""
        return self.source.format != "routerbench"


def _at(loc: tuple[str, ...], message: str) -> FieldError:
    return FieldError(loc, message)


def placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _check_placeholders(loc: tuple[str, ...], template: str, allowed: set[str]) -> None:
    try:
        unknown = [p for p in placeholders(template) if p not in allowed]
    except ValueError as exc:
        raise _at(loc, f"not a template ({exc})") from None
    if unknown:
        raise _at(loc, f"unknown placeholder {{{unknown[0]}}} (known here: {', '.join(sorted(allowed))})")


def load_spec(path: str | Path) -> FamilySpec:
    """A family's YAML file, validated; a problem is one line naming the file and the field."""
    path = Path(path)
    spec = load_record(path, FamilySpec, "task family file", extra={"path": str(path)})
    if spec.name != path.stem:
        raise UserError(f"{path}: field 'name': '{spec.name}' is not the file's name '{path.stem}' (rename one of them)")
    return spec


class DeclaredFamily:
    """A ``TASKS`` entry for a family's YAML file: calling it gives the family (the file is read once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @cached_property
    def spec(self) -> FamilySpec:
        return load_spec(self.path)

    def __call__(self) -> MultipleChoiceFamily:
        from harness.tasks.multiple_choice import MultipleChoiceFamily

        return MultipleChoiceFamily(self.spec)

    def __repr__(self) -> str:
        return f"DeclaredFamily({str(self.path)!r})"


def declared_families(directory: str | Path = FAMILY_DIR) -> dict[str, DeclaredFamily]:
    """The families of a directory's ``*.yaml`` files, by name (the file's name); none is read yet."""
    return {p.stem: DeclaredFamily(p) for p in sorted(Path(directory).glob("*.yaml"))}


def load_family(path: str | Path) -> MultipleChoiceFamily:
    """The family one YAML file declares (e.g. a new one, before it goes into ``families/``)."""
    return DeclaredFamily(path)()
