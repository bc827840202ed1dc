"""Runbooks, their parameters cells and the profiles: which parameters a runbook declares
(papermill's inspector reads its `name: type = default  # help` lines), what a profile
passes, and the resolved values of one run: defaults < profile < site profile < --set,
each value with where it came from, all validated before anything runs.

A profile is a name (lab, ci, production: notebooks/profiles/NAME.yaml) or the path of
an organisation's site profile: a YAML file outside the checkout that says
`extends: NAME` and overrides some values. Every refusal names the file and the line."""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ParameterError
from .params import BUILDKIT_SUBNET, TRUST_LEVEL, problems
from .paths import NOTEBOOKS, PROFILES_DIR
from .plain import KINDS

# jsonschema (imported by nbformat, imported by papermill) imports rfc3987-syntax when it is
# installed (jupyter-events asks for it) and compiles its grammar: 2 of the 3 seconds every
# `invoke runbook` took before it could check a parameter, for IRI formats that no notebook
# schema uses. Left out of the kit's processes (measured: papermill imports in 0.8 s, not 3.1 s).
sys.modules.setdefault("rfc3987_syntax", None)

PROFILES = ("lab", "ci", "production")
# what each builder on a host needs for itself: its ports, its build network's subnet
OWN_PORTS = ("frontdoor_port", "frontdoor_metrics_port", "audit_metrics_port", "debug_port", "bridge_subnet")
_PYTYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}
OPTIONS = {"mode": "--mode check|apply", "profile": "--profile NAME|PATH"}  # parameters with options of their own


# --------------------------------------------------------------------------------------
# runbooks and their parameters cells
# --------------------------------------------------------------------------------------
def runbook_path(name: str) -> Path:
    """notebooks/NN-name.ipynb for a runbook called `name`."""
    matches = sorted(NOTEBOOKS.glob(f"[0-9][0-9]-{name}.ipynb")) + sorted(NOTEBOOKS.glob(f"{name}.ipynb"))
    if not matches:
        raise ParameterError(f"no runbook named {name!r}", f"choose one of: {', '.join(list_runbooks())}")
    return matches[0]


def list_runbooks() -> list[str]:
    return [re.sub(r"^\d\d-", "", p.stem) for p in sorted(NOTEBOOKS.glob("*.ipynb"))]


@lru_cache(maxsize=None)
def _inspect(path: Path, mtime: float) -> dict[str, dict[str, Any]]:
    from papermill.inspection import inspect_notebook

    found = inspect_notebook(str(path))
    return {name: {"type": p["inferred_type_name"], "default": p["default"], "help": p["help"]}
            for name, p in found.items()}


def declared_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters cell as {name: {type, default, help}}, via papermill's inspector."""
    return dict(_inspect(path, path.stat().st_mtime))


def every_parameter() -> set[str]:
    """Every name some runbook declares."""
    return set().union(*(declared_parameters(runbook_path(r)) for r in list_runbooks()))


# --------------------------------------------------------------------------------------
# profiles: a name or a site profile file
# --------------------------------------------------------------------------------------
@dataclass
class Profile:
    """A profile as read: its base name (lab, ci, production), its values, and where each
    value was set ("notebooks/profiles/ci.yaml:12", "/etc/site.yaml:3")."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    site: Path | None = None
    # a site profile's `trust_levels:` (one builder per level on a host): level -> values, sources
    levels: dict[str, dict[str, Any]] = field(default_factory=dict)
    level_sources: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.site} (extends {self.name})" if self.site else self.name


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML mapping and the line of each key (a nested key of `trust_levels` as
    "trust_levels.LEVEL.KEY"); a refusal names the file and the line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParameterError(f"the profile file {path} does not exist",
                             f"give a profile name ({', '.join(PROFILES)}) or the path of a site profile") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"the profile file {path} cannot be read: {exc}", "check its permissions and encoding") \
            from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ParameterError(f"{path}{where} is not valid YAML: {getattr(exc, 'problem', None) or exc}",
                             "fix the YAML: one `parameter: value` per line, lists as [a, b] or `- item` lines")\
            from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise ParameterError(f"{path} is not a mapping of parameter: value", "write one `parameter: value` per line")
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key in lines:
            raise ParameterError(f"{path}, line {key_node.start_mark.line + 1}: {key!r} is set twice (line"
                                 f" {lines[key]} too)", "keep one of the two lines")
        lines[key] = key_node.start_mark.line + 1
        if key == "trust_levels" and isinstance(value_node, yaml.MappingNode):
            for level_node, values_node in value_node.value:
                lines[f"trust_levels.{level_node.value}"] = level_node.start_mark.line + 1
                if isinstance(values_node, yaml.MappingNode):
                    for k, _v in values_node.value:
                        lines[f"trust_levels.{level_node.value}.{k.value}"] = k.start_mark.line + 1
    return data, lines


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(NOTEBOOKS.parent))
    except ValueError:
        return str(path)


def load_profile(profile: str | Path) -> Profile:
    """A profile by name, or a site profile by path (`extends: NAME` plus overrides)."""
    text = str(profile)
    if text in PROFILES:
        path = PROFILES_DIR / f"{text}.yaml"
        data, lines = read_yaml(path)
        return Profile(text, data, {k: f"{_relative(path)}:{lines[k]}" for k in data})
    if not re.search(r"[/.]", text):
        close = difflib.get_close_matches(text, PROFILES, n=1)
        raise ParameterError(f"--profile {text!r} is neither a profile nor a file",
                             f"use one of: {', '.join(PROFILES)}" + (f" (did you mean {close[0]}?)" if close else "")
                             + ", or the path of a site profile (a YAML file with `extends: production`)")
    path = Path(text).expanduser()
    data, lines = read_yaml(path)
    base = data.pop("extends", None)
    if base not in PROFILES:
        line = f", line {lines['extends']}" if "extends" in lines else ""
        raise ParameterError(f"{path}{line}: a site profile must say which profile it extends"
                             + (f" (it says {base!r})" if base is not None else ""),
                             f"add a first line `extends: production` (or {', '.join(PROFILES[:-1])})")
    levels = data.pop("trust_levels", None) or {}
    if not isinstance(levels, dict) or not all(isinstance(v, dict) for v in levels.values()):
        raise ParameterError(f"{path}, line {lines.get('trust_levels', '?')}: trust_levels is not a mapping of"
                             " LEVEL: {parameter: value}", "write it like docs/examples/trust-levels.yaml")
    for level in levels:
        if not re.fullmatch(TRUST_LEVEL, str(level)):
            raise ParameterError(f"{path}, line {lines.get(f'trust_levels.{level}', '?')}: {level!r} is not a trust"
                                 " level name", "use up to 12 lowercase letters and digits, a letter first")
    parent = load_profile(base)
    values = {**parent.values, **data}
    sources = {**parent.sources, **{k: f"{path}:{lines[k]}" for k in data}}
    level_sources = {lv: {k: f"{path}:{lines.get(f'trust_levels.{lv}.{k}', '?')} (trust level {lv})" for k in kv}
                     for lv, kv in levels.items()}
    return Profile(base, values, sources, site=path, levels={str(k): v for k, v in levels.items()},
                   level_sources=level_sources)


def check_profile(profile: str | Path) -> list[ParameterError]:
    """Everything wrong with a profile, validated as a whole: unknown keys, mode or
    profile set in the file, and each value's meaning and type, each refusal naming the
    file and the line."""
    found: list[ParameterError] = []
    try:
        read = load_profile(profile)
    except ParameterError as exc:
        return [exc]
    known = every_parameter()
    for key, where in read.sources.items():
        if key in OPTIONS:
            found.append(ParameterError(f"{where}: {key!r} is not a profile setting", f"pass it as {OPTIONS[key]}"))
        elif key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            found.append(ParameterError(f"{where}: no runbook has a parameter {key!r}",
                                        f"did you mean {close[0]}?" if close else
                                        "remove it, or see the parameters with `invoke runbook NAME --list`"))
    kept = {k: v for k, v in read.values.items() if k in known and k not in OPTIONS}
    for runbook in list_runbooks():
        declared = declared_parameters(runbook_path(runbook))
        for key, value in kept.items():
            if key in declared and (error := type_error(key, value, declared[key], read.sources.get(key))):
                if str(error) not in {str(e) for e in found}:
                    found.append(error)
    found += problems({**kept, "profile": read.name}, {k: f"set at {w}" for k, w in read.sources.items()})
    for level, level_values in read.levels.items():
        where = read.level_sources[level]
        for key in level_values:
            if key in OPTIONS or key in ("trust_level", "pool") or key not in known:
                found.append(ParameterError(f"{where[key]}: {key!r} is not a setting a trust level may change",
                                            "set pool at the top of the profile: a pool is the host builder's"
                                            if key == "pool" else
                                            "give a runbook parameter (see `invoke runbook NAME --list`)"))
        merged = {**kept, **{k: v for k, v in level_values.items() if k in known}, "trust_level": level}
        for runbook in list_runbooks():
            declared = declared_parameters(runbook_path(runbook))
            for key, value in level_values.items():
                if key in declared and (error := type_error(key, value, declared[key], where.get(key))):
                    if str(error) not in {str(e) for e in found}:
                        found.append(error)
        found += [e for e in problems({**merged, "profile": read.name},
                                      {**{k: f"set at {w}" for k, w in read.sources.items()},
                                       **{k: f"set at {w}" for k, w in where.items()}})
                  if str(e) not in {str(f) for f in found}]
    for level in read.values.get("pool") or []:
        if level not in read.levels:
            found.append(ParameterError(f"{read.sources.get('pool', 'pool')}: the pool names {level!r}, which"
                                        " trust_levels does not declare",
                                        "declare it under trust_levels with its own ports and bridge_subnet, like"
                                        " docs/examples/pool.yaml"))
    found += shared_ports(read)
    return found


def shared_ports(read: Profile) -> list[ParameterError]:
    """Two trust levels of one profile run on one host: each needs its own ports and its
    own build-network subnet (OWN_PORTS); with a pool, the host's builder runs beside
    them too (on BuildKit's default subnet when it sets none)."""
    found, seen = [], {}
    pool = read.values.get("pool") or []
    builders = dict(read.levels)
    if pool:
        builders = {"the host's builder": {**{k: read.values.get(k, 0) for k in OWN_PORTS},
                                          "bridge_subnet": read.values.get("bridge_subnet") or BUILDKIT_SUBNET},
                    **builders}
    for level, level_values in builders.items():
        for key in OWN_PORTS:
            if level in pool and key not in ("debug_port", "bridge_subnet"):
                continue  # a pool's builder has no front door of its own
            port = level_values.get(key, read.values.get(key, 0))
            if not port:
                continue
            if (key, port) in seen:
                found.append(ParameterError(
                    f"{read.site}: {seen[(key, port)]} and {level} both use {key} {port} (they run on one host)",
                    f"give each level its own {key} under trust_levels"))
            seen.setdefault((key, port), level)
    return found


# --------------------------------------------------------------------------------------
# one run's parameters
# --------------------------------------------------------------------------------------
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


def type_error(name: str, value: Any, declared: dict[str, Any], where: str | None = None) -> ParameterError | None:
    """A refusal when `value` is not of the type the runbook's parameters cell declares."""
    type_name = declared["type"]
    expected = _PYTYPES.get(type_name)
    if expected is None:
        return None
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if ok:
        return None
    kind = KINDS.get(type_name, type_name)
    return ParameterError(f"parameter {name!r}: {value!r} is not {kind}" + (f" (set at {where})" if where else ""),
                          f"give {name} {kind}, for example {name}={declared['default'].strip(chr(34))}")


@dataclass
class Resolved:
    """One run's parameters and where each came from: "default", a profile file and line,
    or "--set". `values` holds what the run passes (papermill leaves the rest at the
    parameters cell's defaults); `everything()` adds those defaults."""

    runbook: str
    profile: Profile
    values: dict[str, Any]
    sources: dict[str, str]

    def everything(self) -> dict[str, tuple[Any, str]]:
        """{parameter: (value, source)} for every parameter the runbook declares."""
        import ast

        out = {}
        for key, spec in declared_parameters(runbook_path(self.runbook)).items():
            if key in self.values:
                out[key] = (self.values[key], self.sources[key])
            else:
                try:
                    out[key] = (ast.literal_eval(spec["default"]), "default")
                except (ValueError, SyntaxError):
                    out[key] = (spec["default"], "default")
        return out


def parse_sets(sets: list[str] | tuple[str, ...]) -> dict[str, str]:
    """--set key=value items as {key: raw}; malformed, repeated, or mode/profile refused."""
    out: dict[str, str] = {}
    for item in sets:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ParameterError(f"--set {item!r} is not key=value", "write --set name=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key in OPTIONS:
            raise ParameterError(f"--set {key}={raw} would be ignored: {key} is an option of its own",
                                 f"use {OPTIONS[key]}")
        if key in out:
            raise ParameterError(f"--set {key} is given twice ({out[key]!r} and {raw!r})",
                                 f"give {key} once, with the value you mean")
        out[key] = raw
    return out


def resolve_sources(name: str, profile: str | Path, mode: str, sets: list[str] | tuple[str, ...] = ()) -> Resolved:
    """All parameters for one run with their sources: defaults < profile < --set,
    validated. Profile keys the runbook does not declare are ignored (a profile serves
    many runbooks); --set keys it does not declare are an error."""
    if mode not in ("check", "apply"):
        raise ParameterError(f"--mode {mode!r} is not a mode", "use --mode check (change nothing) or --mode apply")
    declared = declared_parameters(runbook_path(name))
    read = load_profile(profile)
    if read.site:  # an organisation's file is validated as a whole before anything runs
        found = check_profile(profile)
        if found:
            more = f" (and {len(found) - 1} more: `invoke profile.check {read.site}` lists them)" if len(found) > 1 else ""
            raise ParameterError(found[0].problem + more, found[0].fix)
    values: dict[str, Any] = {}
    sources = {k: "default" for k in declared}
    for key, value in read.values.items():
        if key in declared and key not in OPTIONS:
            values[key], sources[key] = value, read.sources[key]
    given = parse_sets(sets)
    level = given.get("trust_level", read.values.get("trust_level", ""))
    if read.levels and "trust_level" in declared:
        names = ", ".join(read.levels)
        if not level and not read.values.get("pool"):  # with a pool, none is the host's builder
            raise ParameterError(f"{read.site} declares one builder per trust level ({names}), and this run names none",
                                 f"add --set trust_level=LEVEL, one of: {names}")
        if level and level not in read.levels:
            raise ParameterError(f"trust_level {level!r} is not one of the levels {read.site} declares ({names})",
                                 f"use one of: {names}, or add it under trust_levels")
        for key, value in read.levels.get(level, {}).items():
            if key in declared:
                values[key], sources[key] = value, read.level_sources[level][key]
    for key, raw in given.items():
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            raise ParameterError(f"runbook {name!r} has no parameter {key!r}",
                                 (f"did you mean {close[0]}? " if close else "")
                                 + f"its parameters are: {', '.join(sorted(declared))}")
        values[key], sources[key] = coerce(key, raw, declared[key]["type"]), "--set"
    for key in ("mode", "profile"):
        if key not in declared:
            raise ParameterError(f"runbook {name!r} does not declare {key!r}", "add it to its parameters cell")
    values["mode"], values["profile"] = mode, read.name
    sources["mode"], sources["profile"] = "--mode", "--profile"
    if read.site and "site_profile" in declared and not values.get("site_profile"):
        # a runbook that runs others (handover) runs them with the same site profile
        values["site_profile"], sources["site_profile"] = str(Path(read.site).absolute()), "--profile"
    for key, value in values.items():
        where = sources[key] if sources[key] not in ("--set", "--mode", "--profile") else None
        if error := type_error(key, value, declared[key], where):
            raise error
    found = problems(values, {k: (f"set at {w}" if w not in ("--set", "--mode", "--profile", "default") else
                                  f"from {w}" if w != "default" else "the runbook's default")
                              for k, w in sources.items()})
    if found:
        raise found[0]
    return Resolved(name, read, values, sources)


def resolve(name: str, profile: str | Path, mode: str, sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """All parameters for one run (resolve_sources, without the sources)."""
    return resolve_sources(name, profile, mode, sets).values
