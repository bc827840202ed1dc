"""docker itself as the oracle: its own verdict on every plugin (`docker info`), compared
path by path with the kit's, and the warnings a plain `docker info` prints."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ..core.errors import PluginError
from .discovery import Ignored, Plugin
from .metadata import kill_group

ORACLE_TIMEOUT = 120  # docker waits for every plugin without a limit; we wait this long for docker



def run_docker(docker: str, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`docker ARGS` in a session of its own: on a timeout docker AND the plugins it is
    waiting for are killed (docker has no timeout of its own), then TimeoutExpired."""
    proc = subprocess.Popen([docker, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def docker_verdicts(docker: str, env: dict[str, str], timeout: float = ORACLE_TIMEOUT) -> list[dict[str, Any]]:
    """`docker info --format '{{json .ClientInfo.Plugins}}'`: Name, Path, Err, ShadowedPaths."""
    try:
        proc = run_docker(docker, ["info", "--format", "{{json .ClientInfo.Plugins}}"], env, timeout)
    except subprocess.TimeoutExpired:
        raise PluginError(f"docker info did not answer within {timeout:g}s: a plugin's metadata command hangs"
                          " and docker has no timeout",
                          "the inventory names the plugin that timed out; quarantine it (plugins-clean)") from None
    if proc.returncode != 0:
        raise PluginError(f"docker info failed ({proc.returncode}): {proc.stderr.strip()[:500]}",
                          "run `docker info --format '{{json .ClientInfo.Plugins}}'` by hand to see why")
    try:
        listed = json.loads(proc.stdout or "null") or []
    except ValueError as exc:
        raise PluginError(f"docker info printed no JSON plugin list ({exc}): {proc.stdout[:300]!r}",
                          "check that `docker` is the Docker CLI (v20.10 or newer)") from None
    return listed


def compare(plugins: list[Plugin], ignored: list[Ignored], listed: list[dict[str, Any]]) -> list[str]:
    """Disagreements between the kit's candidates and docker's list, one line each. Also
    records docker's error on each plugin (docker_error)."""
    out = []
    docker_active = {p.get("Path"): p for p in listed}
    docker_shadowed = {s: p.get("Path") for p in listed for s in p.get("ShadowedPaths") or []}
    ours = {p.path: p for p in plugins}
    for plugin in plugins:
        if plugin.active:
            theirs = docker_active.get(plugin.path)
            if theirs is None:
                out.append(f"{plugin.path}: the kit lists it, docker does not"
                           + (f" (docker: shadowed by {docker_shadowed[plugin.path]})"
                              if plugin.path in docker_shadowed else ""))
                continue
            plugin.docker_error = theirs.get("Err") or ""
            if plugin.valid != (not theirs.get("Err")):
                theirs_said = f"invalid: {theirs['Err']}" if theirs.get("Err") else "valid"
                out.append(f"{plugin.path}: docker says {theirs_said},"
                           f" the kit says {'valid' if plugin.valid else 'invalid: ' + plugin.error}")
        elif docker_shadowed.get(plugin.path) != plugin.shadowed_by:
            out.append(f"{plugin.path}: the kit says shadowed by {plugin.shadowed_by},"
                       f" docker says {docker_shadowed.get(plugin.path) or 'not shadowed'}")
    for path in docker_active:
        if path not in ours:
            out.append(f"{path}: docker lists it, the kit does not"
                       + (" (the kit ignored it: not a regular file or symlink)" if path in {i.path for i in ignored}
                          else ""))
    for path, winner in docker_shadowed.items():
        if path not in ours:
            out.append(f"{path}: docker lists it as shadowed by {winner}, the kit does not list it")
    return out


def docker_plugin_warnings(docker: str, env: dict[str, str], timeout: float = ORACLE_TIMEOUT) -> list[str]:
    """The `WARNING: Plugin ... is not valid` lines a plain `docker info` prints (its
    server part fails without an engine; that is not our business here)."""
    try:
        proc = run_docker(docker, ["info"], env, timeout)
    except subprocess.TimeoutExpired:
        raise PluginError(f"docker info did not answer within {timeout:g}s: a plugin's metadata command hangs",
                          "run the plugins-audit runbook: the plugin that timed out is in its inventory") from None
    return [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if "WARNING: Plugin" in line]
