"""YAML files that are typed records (model configs, task families): read, validated by a pydantic
model, and every problem one line naming the file and the field to fix."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import UserError

M = TypeVar("M", bound=BaseModel)


class FieldError(ValueError):
    """A validator's complaint about a field other than the one it validates (a cross-field
    check in a model validator): reported at ``loc``, below the validated field's own location."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def read_mapping(path: Path, what: str) -> dict:
    """The YAML document at ``path``, which must be a mapping (``what`` names it in messages)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a {what} must be a mapping of fields")
    return doc


def validation_line(path: Path, exc: ValidationError, secret_fields: tuple[str, ...] = ()) -> str:
    """The first validation error as ``PATH: field 'a.b': why (got VALUE)``; values of
    ``secret_fields`` (a key pasted by mistake) and whole mappings are never echoed."""
    err = exc.errors()[0]
    inner = (err.get("ctx") or {}).get("error")
    loc = ".".join(str(p) for p in (*err["loc"], *(inner.loc if isinstance(inner, FieldError) else ()))) or "(top level)"
    message = err["msg"].removeprefix("Value error, ")
    echo = "input" in err and not isinstance(err["input"], dict) and not set(loc.split(".")) & set(secret_fields)
    return f"{path}: field '{loc}': {message}" + (f" (got {err['input']!r})" if echo else "")


def load_record(path: str | Path, model: type[M], what: str, secret_fields: tuple[str, ...] = (), extra: dict | None = None) -> M:
    """Read and validate one YAML file as ``model`` (``extra`` fields added, e.g. its source path)."""
    path = Path(path)
    doc = read_mapping(path, what)
    try:
        return model(**doc, **(extra or {}))
    except ValidationError as exc:
        raise UserError(validation_line(path, exc, secret_fields)) from None
