"""Validation errors as one line: a pydantic error becomes "field: problem; the fix", with did-you-mean."""

from __future__ import annotations

import difflib
import re

from pydantic import ValidationError

from .api import Options, W2SError


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def options_error(exc: Exception, where: str, cls: type | None = None) -> W2SError:
    """Turn a pydantic ValidationError (or any error) into one line naming the field and fix."""
    if isinstance(exc, W2SError):
        return exc
    if not isinstance(exc, ValidationError):
        return W2SError(f"{where}: {type(exc).__name__}: {exc}".splitlines()[0])
    err = _first_error(exc.errors())
    field_path = ".".join(p for p in (where, ".".join(printable(p) for p in err["loc"])) if p)
    if err["type"] == "extra_forbidden":
        valid = _valid_fields(cls, err["loc"])
        hint = did_you_mean(str(err["loc"][-1]), valid) if valid else ""
        return W2SError(f"{field_path}: unknown option{hint}; valid: {', '.join(valid) or 'none'}")
    if err["type"] == "missing":
        return W2SError(f"{field_path}: required field is missing; add it")
    got = err.get("input")
    shown = f" (got {repr(got)[:80]})" if not isinstance(got, dict | list) else ""
    return W2SError(f"{field_path}: {err['msg']}{shown}")


def printable(part) -> str:
    """A field name as shown in an error: as it is when printable, else quoted with escapes (never a line break)."""
    text = str(part)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


UNION_TAG = re.compile(r"^(list\[)?[A-Z]\w*Spec\]?$")  # pydantic names a union's member in loc: task.TaskSpec.n_test
BRANCH_MISMATCH = {"model_type", "model_attributes_type", "dict_type", "list_type"}


def _first_error(errors: list[dict]) -> dict:
    """The error to show: for a union (`[task]` or `[[task]]`) the one from the member the input matches, without
    the member's name in its location."""
    tagged = [e for e in errors if any(isinstance(p, str) and UNION_TAG.match(p) for p in e["loc"])]
    if not tagged:
        return errors[0]
    chosen = next((e for e in errors if e["type"] not in BRANCH_MISMATCH), errors[0])
    return {**chosen, "loc": tuple(p for p in chosen["loc"] if not (isinstance(p, str) and UNION_TAG.match(p)))}


def _valid_fields(cls: type | None, loc) -> list[str]:
    for part in loc[:-1]:
        if cls is None or isinstance(part, int):
            continue
        info = cls.model_fields.get(part)
        cls = _model_of(info.annotation) if info else None
    return sorted(cls.model_fields) if cls else []


def _model_of(annotation):
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        for arg in (candidate, *getattr(candidate, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, Options):
                return arg
    return None
