"""How the Docker CLI (v28) judges a plugin candidate, by its own rules: the name, the
builtin commands it may not shadow, `PATH docker-cli-plugin-metadata` run as docker runs
it (with a timeout docker lacks) and its JSON read the way Go decodes it; and what the
kit knows of plugins met in the wild."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from typing import Any

NAME_PREFIX = "docker-"
METADATA_COMMAND = "docker-cli-plugin-metadata"
NAME_PATTERN = "^[a-z][a-z0-9]*$"
SCHEMA_VERSION = "0.1.0"
# The top-level commands of docker 28.2.2, hidden ones included (bake, checkpoint,
# completion, help): a plugin named like one "duplicates builtin command". Measured by
# offering docker a plugin for every command in `docker --help`, every one- and
# two-letter name and the known plugin names; tests/unit/test_plugins.py re-checks the
# visible ones against the installed docker.
BUILTIN_COMMANDS = frozenset("""
    attach bake build builder checkpoint commit completion config container context cp create
    diff events exec export help history image images import info inspect kill load login
    logout logs manifest network node pause plugin port ps pull push rename restart rm rmi
    run save search secret service stack start stats stop swarm system tag top trust
    unpause update version volume wait
""".split())
BUILTIN_ALIASES = {"remove": "rm"}  # alias -> the builtin command it belongs to

# What the kit knows about plugins met in the wild: purpose, and whether they are current.
KNOWN_PLUGINS: dict[str, tuple[str, str]] = {
    "buildx": ("Docker Buildx: builds with BuildKit; plugins-configure points it at the kit's buildkitd", "current"),
    "compose": ("Docker Compose: defines and runs multi-container applications", "current"),
    "scout": ("Docker Scout: image vulnerability and SBOM analysis", "current"),
    "scan": ("Docker Scan (Snyk): retired, replaced by docker scout", "retired"),
    "sbom": ("docker sbom (Syft): superseded by docker scout sbom", "retired"),
    "init": ("Docker Init: writes a Dockerfile, compose.yaml and .dockerignore for a project", "current"),
    "debug": ("Docker Debug: a debugging shell into containers and images (Docker Desktop)", "current"),
    "ai": ("Ask Gordon, Docker's AI assistant (Docker Desktop)", "current"),
    "extension": ("Docker Desktop extensions: install, list, remove", "current"),
    "feedback": ("Sends feedback to Docker (Docker Desktop)", "current"),
    "dev": ("Docker Dev Environments (Docker Desktop): deprecated", "retired"),
    "desktop": ("Docker Desktop's CLI: start, stop, status", "current"),
    "model": ("Docker Model Runner: runs AI models locally (Docker Desktop)", "current"),
    "app": ("Docker App (CNAB bundles): retired", "retired"),
}

# Why a candidate is invalid, and what fixes it (the guide docs/guides/plugins.md shows these).
FIXES = {
    "name": "rename it docker-NAME with NAME in lowercase letters and digits, or quarantine it (plugins-clean)",
    "builtin": "a plugin cannot replace a docker command: quarantine it (plugins-clean) or rename it",
    "exec": ("make it an executable file (chmod 755) whose #! interpreter exists, and a symlink one that resolves;"
             " or quarantine it (plugins-clean)"),
    "exit": "run `PATH docker-cli-plugin-metadata` to see its error; reinstall the plugin or quarantine it",
    "timeout": "it hangs `docker info` and every command that lists plugins: quarantine it (plugins-clean)",
    "json": "its metadata is not a JSON object: reinstall a build of the plugin for this CLI, or quarantine it",
    "schema": "built for another plugin protocol: install a current release, or quarantine it",
    "vendor": "its metadata names no Vendor: install an official build, or quarantine it",
}


class _Object(list):
    """A JSON object as its (key, value) pairs in order: Go applies duplicate keys in turn."""


def reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _go_key(key: str) -> str | None:
    """A JSON key as Go's encoding/json folds it onto an ASCII field name; None if it
    cannot match one (Go folds K (U+212A) to k and long s (U+017F) to s)."""
    folded = key.replace("\u212a", "k").replace("\u017f", "s")
    return folded.lower() if folded.isascii() else None


METADATA_FIELDS = ("SchemaVersion", "Vendor", "Version", "ShortDescription", "URL")  # all strings in docker 28


def parse_metadata(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(metadata, "") or (None, error): stdout of the metadata command read the way docker
    28 decodes it into its Metadata struct."""
    text = raw.decode("utf-8", errors="replace")  # Go replaces invalid UTF-8 too; a BOM stays and fails
    try:
        pairs = json.loads(text, object_pairs_hook=_Object, parse_constant=reject_constant)
    except RecursionError:
        return None, "invalid metadata: nested too deeply"
    except ValueError as exc:
        return None, f"invalid metadata: {exc}"
    if pairs is None:  # `null` decodes into nothing: every field stays empty
        pairs = _Object()
    if not isinstance(pairs, _Object):
        return None, f"invalid metadata: cannot unmarshal {_json_type(pairs)} into the plugin metadata object"
    by_key = {f.lower(): f for f in METADATA_FIELDS}
    meta: dict[str, Any] = {f: "" for f in METADATA_FIELDS}
    extra: dict[str, Any] = {}
    type_error = ""
    for key, value in pairs:
        folded = _go_key(key)
        name = key if key in METADATA_FIELDS else by_key.get(folded or "")
        if name is None:
            extra[key] = _plain(value)
            continue
        if value is None:
            continue
        if not isinstance(value, str):
            type_error = type_error or f"invalid metadata: {name} is a JSON {_json_type(value)}, not a string"
            continue
        meta[name] = value
    if type_error:
        return None, type_error
    meta = {k: v for k, v in meta.items() if v != ""}
    if extra:  # fields docker 28 ignores; kept for the inventory while they stay small
        meta["other"] = extra if len(json.dumps(extra)) <= 2000 else {"keys": sorted(extra)}
    return meta, ""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, _Object) else "array"


def _plain(value: Any) -> Any:
    """object_pairs_hook output back to plain JSON values (for the inventory)."""
    if isinstance(value, _Object):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 1e999 decodes to inf, which JSON cannot carry
    return value


def run_metadata(path: str, timeout: float, env: dict[str, str]) -> tuple[bytes | None, str, str, float]:
    """Run `PATH docker-cli-plugin-metadata` like docker does (stdout only, stdin empty),
    but never longer than `timeout` seconds: (stdout or None, reason, error, seconds)."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen([path, METADATA_COMMAND], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return None, "exec", f"failed to fetch metadata: fork/exec {path}: {reason[:1].lower()}{reason[1:]}", 0.0
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return None, "timeout", (f"failed to fetch metadata: no answer within {timeout:g}s"
                                 " (docker itself waits for ever)"), round(time.monotonic() - start, 3)
    seconds = round(time.monotonic() - start, 3)
    if proc.returncode < 0:
        name = signal.strsignal(-proc.returncode) or f"signal {-proc.returncode}"
        return None, "exit", f"failed to fetch metadata: signal: {name[:1].lower()}{name[1:]}", seconds
    if proc.returncode > 0:
        return None, "exit", f"failed to fetch metadata: exit status {proc.returncode}", seconds
    return out, "", "", seconds


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the plugin and everything it started (a shell's `sleep` keeps stdout open)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a child escaped the group and holds the pipe
        proc.stdout.close()
        proc.wait()


def judge_name(name: str) -> tuple[str, str]:
    """(reason, error) for the checks docker makes before running anything; ("", "") if none fails."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", name):
        return "name", f"plugin candidate {json.dumps(name)} did not match {json.dumps(NAME_PATTERN)}"
    if name in BUILTIN_COMMANDS:
        return "builtin", f"plugin {json.dumps(name)} duplicates builtin command"
    if name in BUILTIN_ALIASES:
        return "builtin", (f"plugin {json.dumps(name)} duplicates an alias of builtin command"
                           f" {json.dumps(BUILTIN_ALIASES[name])}")
    return "", ""


def judge_metadata(raw: bytes | None, run_reason: str = "",
                   run_error: str = "") -> tuple[str, str, dict[str, Any] | None]:
    """(reason, error, metadata) from the metadata command's result."""
    if raw is None:
        return run_reason, run_error, None
    meta, error = parse_metadata(raw)
    if meta is None:
        return "json", error, None
    if meta.get("SchemaVersion", "") != SCHEMA_VERSION:
        return "schema", (f"plugin SchemaVersion {json.dumps(meta.get('SchemaVersion', ''))} is not valid,"
                          f" must be {SCHEMA_VERSION}"), meta
    if not meta.get("Vendor"):
        return "vendor", "plugin metadata does not define a vendor", meta
    return "", "", meta
