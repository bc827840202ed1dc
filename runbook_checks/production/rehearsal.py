"""Running the kit for a rehearsal host: a runbook runs inside the host (the kit read-only,
the host's own systemd, files and daemons), and its run record comes back to the
operator's runs/, marked with the host's name.

A rehearsal host has no internet, as many build servers have none: the install runbook
installs BuildKit there from a release archive the operator's side makes once per
version (daemon.install.release_archive), unless `--set source=...` says otherwise."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..core import files, profiles
from ..core.errors import HostError
from ..core.paths import PROJECT_ROOT, runs_dir
from ..daemon import install
from . import hosts

RUNS = hosts.EXCHANGE / "runs"


def host_sets(host: hosts.Host, runbook: str, sets: list[str] | tuple[str, ...]) -> list[str]:
    """What a runbook needs on a host, unless the operator set it: the BuildKit archive
    as the install source (a host has no internet), and the host's address and name in
    the front door's certificate (the address first: it is how this side reaches it)."""
    declared = profiles.declared_parameters(profiles.runbook_path(runbook))
    given = profiles.parse_sets(sets)
    extra = []
    if "source" in declared and "source" not in given and "archive_path" not in given:
        version = given.get("buildkit_version") or install.BUILDKIT_VERSION
        archive = install.release_archive(version)
        target = host.exchange / "archives" / archive.name
        if not target.exists() or target.stat().st_size != archive.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(archive, target)
        extra = ["source=archive", f"archive_path={hosts.EXCHANGE / 'archives' / archive.name}"]
    if "frontdoor_names" in declared and "frontdoor_names" not in given:
        extra.append(f"frontdoor_names=[{host.address}, {host.name}, localhost, 127.0.0.1]")
    return [*sets, *extra]


def profile_for(host: hosts.Host, profile: str) -> str:
    """A profile name as is; a site profile's file copied into the host's exchange."""
    if profile in profiles.PROFILES:
        return profile
    read = profiles.load_profile(profile)  # refused here, on the operator's side, if it is wrong
    target = host.exchange / "profiles" / Path(profile).name
    target.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(target, Path(profile).read_text())
    return str(hosts.EXCHANGE / "profiles" / read.site.name) if read.site else profile


def run_runbook(name: str, runbook: str, profile: str, mode: str, sets: list[str] | tuple[str, ...],
                capture: bool = False) -> tuple[int, list[Path]]:
    """`invoke runbook RUNBOOK` inside the host, its output streamed (or, with `capture`,
    kept back); (exit code, the run records brought back to runs_dir()/RUNBOOK/)."""
    host = hosts.load(name)
    profiles.resolve(runbook, profile, mode, sets)  # refuse bad input here, before the host is touched
    chosen = host_sets(host, runbook, sets)
    argv = ["runbook", runbook, "--profile", profile_for(host, profile), "--mode", mode]
    for item in chosen:
        argv += ["--set", item]
    folder = host.exchange / "runs" / runbook
    before = set(folder.glob("*.json")) if folder.exists() else set()
    proc = run_invoke(host, argv, capture=capture)
    return proc.returncode, bring_back(host, runbook, sorted(set(folder.glob("*.json")) - before))


def run_invoke(host: hosts.Host, argv: list[str], capture: bool = False, timeout: float = 3600):
    """`invoke ARGV` inside the host, from the checkout, its run records going to the
    host's exchange folder; the finished process (its exit code is not checked)."""
    return hosts.run_in(host, [sys.executable, "-m", "invoke", *argv], env={"BUILDKIT_OPS_RUNS_DIR": str(RUNS),
                        "COLUMNS": "120"}, cwd=str(PROJECT_ROOT), timeout=timeout, check=False, capture=capture)


def bring_back(host: hosts.Host, runbook: str, reports: list[Path]) -> list[Path]:
    """Copy each new record into the operator's runs/, its notebook beside it, the
    report marked with the host (and its notebook path the operator's copy)."""
    out = []
    dest = runs_dir() / runbook
    for report in reports:
        dest.mkdir(parents=True, exist_ok=True)
        notebook = report.with_suffix(".ipynb")
        if notebook.exists():
            shutil.copy2(notebook, dest / notebook.name)
        data = json.loads(report.read_text())
        data["host"] = host.name
        data["notebook"] = str(dest / notebook.name)
        files.atomic_write(dest / report.name, json.dumps(data, indent=2) + "\n")
        out.append(dest / report.name)
    if not out:
        raise HostError(f"the runbook {runbook} left no run record in {host.name}",
                        f"read its output above, or look inside: invoke host.shell {host.name}")
    return out
