"""Runbooks, their parameters cells and the profiles: which parameters a runbook declares
(papermill's inspector reads its `name: type = default  # help` lines), what a profile
passes, and the resolved values of one run: defaults < profile < --set, validated."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ParameterError
from .params import validate
from .paths import NOTEBOOKS, PROFILES_DIR

PROFILES = ("lab", "ci", "production")

_PYTYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


def runbook_path(name: str) -> Path:
    """notebooks/NN-name.ipynb for a runbook called `name`."""
    matches = sorted(NOTEBOOKS.glob(f"[0-9][0-9]-{name}.ipynb")) + sorted(NOTEBOOKS.glob(f"{name}.ipynb"))
    if not matches:
        raise ParameterError(f"no runbook named {name!r}", f"choose one of: {', '.join(list_runbooks())}")
    return matches[0]


def list_runbooks() -> list[str]:
    return [re.sub(r"^\d\d-", "", p.stem) for p in sorted(NOTEBOOKS.glob("*.ipynb"))]


def declared_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters cell as {name: {type, default, help}}, via papermill's inspector."""
    from papermill.inspection import inspect_notebook

    found = inspect_notebook(str(path))
    return {
        name: {"type": p["inferred_type_name"], "default": p["default"], "help": p["help"]}
        for name, p in found.items()
    }


def load_profile(profile: str) -> dict[str, Any]:
    if profile not in PROFILES:
        raise ParameterError(f"profile: {profile!r} is not a profile", f"use one of: {', '.join(PROFILES)}")
    path = PROFILES_DIR / f"{profile}.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path} is not a mapping of parameter: value", "fix the YAML file")
    return data


def coerce(name: str, raw: str, type_name: str) -> Any:
    """A --set value (a string) in the declared type of the parameter."""
    if type_name == "str":
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if type_name == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type_name == "list" and isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    return value


def _check_type(name: str, value: Any, type_name: str) -> None:
    expected = _PYTYPES.get(type_name)
    if expected is None:
        return
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ParameterError(
            f"parameter {name!r}: {value!r} is not of type {type_name}",
            f"give {name} a {type_name} value (see `invoke runbook --list`)",
        )


def resolve(name: str, profile: str, mode: str, sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """All parameters for one run: defaults < profile file < --set, validated.

    Profile keys the runbook does not declare are ignored (a profile serves many
    runbooks); --set keys it does not declare are an error."""
    declared = declared_parameters(runbook_path(name))
    values: dict[str, Any] = {}
    for key, value in load_profile(profile).items():
        if key in declared:
            values[key] = value
    for item in sets:
        if "=" not in item:
            raise ParameterError(f"--set {item!r} is not key=value", "write --set name=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in declared:
            raise ParameterError(
                f"runbook {name!r} has no parameter {key!r}",
                f"its parameters are: {', '.join(sorted(declared))}",
            )
        values[key] = coerce(key, raw, declared[key]["type"])
    values["mode"] = mode
    values["profile"] = profile
    for key in ("mode", "profile"):
        if key not in declared:
            raise ParameterError(f"runbook {name!r} does not declare {key!r}", "add it to its parameters cell")
    for key, value in values.items():
        _check_type(key, value, declared[key]["type"])
    validate(values)
    return values
