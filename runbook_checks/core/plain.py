"""Refusals in plain words: a pydantic error of a parameter (core.params) turned into the
kit's problem and fix, without pydantic's vocabulary."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from .errors import Refusal

KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text",
         "list": "a list", "dict": "a mapping of key: value"}


def where(loc: tuple) -> str:
    """('gc_policy', 0, 'keep_duration') -> gc_policy[0].keep_duration"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _field(loc: tuple, root: type[BaseModel]):
    """The pydantic field of `root` behind a location, for its description."""
    model, found = root, None
    for part in loc:
        if isinstance(part, str) and isinstance(model, type) and issubclass(model, BaseModel):
            found = model.model_fields.get(part)
            if found is None:
                return None
            annotation = found.annotation
            nested = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            model = nested[0] if nested else annotation
    return found


def plain(err: dict[str, Any], root: type[BaseModel]) -> tuple[str, str]:
    """(problem, fix) of one pydantic error of a `root` model, without pydantic's words."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    shown = repr(value)
    if isinstance(ctx.get("error"), Refusal):
        return ctx["error"].problem, ctx["error"].fix
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        return f"{shown} is not one of the accepted values", "use one of: " + ", ".join(c or '""' for c in choices)
    bounds = {"greater_than_equal": ("is below the lowest value,", "at least", "ge"),
              "less_than_equal": ("is above the highest value,", "at most", "le"),
              "greater_than": ("is not above", "more than", "gt"), "less_than": ("is not below", "less than", "lt")}
    if kind in bounds:
        said, words, key = bounds[kind]
        return f"{shown} {said} {ctx[key]}", f"use a value of {words} {ctx[key]}"
    if kind == "string_pattern_mismatch":
        field = _field(err["loc"], root)
        what = field.description if field is not None and field.description else "a value of the documented form"
        return f"{shown} is not {what}", f"give {what}"
    if kind == "extra_forbidden":
        parent = _field(err["loc"][:-1], root)
        annotation = getattr(parent, "annotation", None)
        nested = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        known = ", ".join(nested[0].model_fields) if nested else ""
        return f"there is no field {err['loc'][-1]!r} here", f"use the fields: {known}" if known else "remove it"
    for prefix, words in (("int", KINDS["int"]), ("float", KINDS["float"]), ("bool", KINDS["bool"]),
                          ("string", KINDS["str"]), ("list", KINDS["list"]), ("dict", KINDS["dict"]),
                          ("model", "a mapping of the fields below"), ("missing", "a value")):
        if kind.startswith(prefix):
            return f"{shown} is not {words}", f"give {words}"
    return f"{shown} is refused ({err['msg']})", "see the parameter's help: invoke runbook NAME --list"
