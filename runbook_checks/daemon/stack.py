"""The local lab stack: bring it up by running the runbooks in order, show where
everything is, stop it, purge it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..core import layout as layout_mod, runner
from ..core.errors import KitError, ParameterError
from ..core.paths import PROJECT_ROOT
from ..core.profiles import declared_parameters, parse_sets, resolve, runbook_path
from .config import read_debug_port
from .programs import answers, served_urls
from .supervisor import Supervisor

UP_SEQUENCE = (("install", "apply"), ("configure", "apply"), ("verify", "check"), ("monitoring", "apply"),
               ("alerting", "apply"))


@dataclass
class Status:
    state_dir: str
    state: str
    pid: int
    address: str
    metrics_url: str
    log_path: str
    services: dict[str, str] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)

    answering: dict[str, bool] = field(default_factory=dict)  # service -> its URL answers now

    def rows(self) -> list[tuple[str, str]]:
        rows = [("state directory", self.state_dir), ("buildkitd", f"{self.state} (pid {self.pid})" if self.pid else self.state),
                ("address", self.address), ("metrics", self.metrics_url), ("log", self.log_path)]
        rows += [(name, f"{url} ({'answers' if self.answering.get(name) else 'does not answer'})")
                 for name, url in self.services.items()]
        rows += [(f"report: {name}", path) for name, path in self.reports.items()]
        return rows


def status(state_dir: str = "") -> Status:
    """The lab of `state_dir` (empty: $BUILDKIT_OPS_STATE_DIR, else .lab): its daemon, and
    each service beside it with whether its URL answers now."""
    layout = layout_mod.for_params({"profile": "lab", "state_dir": state_dir})
    info = Supervisor(layout).info()
    port = read_debug_port(layout.config_path)
    conf = layout.supervisor_conf.read_text() if layout.supervisor_conf.exists() else ""
    services = served_urls(conf)
    return Status(str(layout.state_dir), info["state"], info["pid"], layout.address,
                  f"http://127.0.0.1:{port}/metrics" if port else "(not configured)", str(layout.log_path),
                  services, {name: str(path) for name, path in runner.latest_reports().items()},
                  {name: answers(url) for name, url in services.items()})


def up(sets: tuple[str, ...] = (), progress: bool = True, on_report=None) -> list[runner.RunResult]:
    """install → configure → verify → monitoring → alerting with the lab profile; stop
    at the first failure. Every value is validated for every runbook before any runs:
    a --set key none of them declares, or one any of them refuses, changes nothing."""
    given = parse_sets(sets)
    known = set().union(*(declared_parameters(runbook_path(name)) for name, _ in UP_SEQUENCE))
    unknown = sorted(set(given) - known)
    if unknown:
        raise ParameterError(f"no runbook of `invoke up` has the parameter(s) {', '.join(unknown)}",
                             f"their parameters are: {', '.join(sorted(known - {'mode', 'profile'}))}")
    plan = [(name, mode, [s for s in sets if _declares(name, s)]) for name, mode in UP_SEQUENCE]
    for name, mode, chosen in plan:
        resolve(name, "lab", mode, chosen)
    results = []
    for name, mode, chosen in plan:
        result = runner.run(name, "lab", mode, chosen, progress=progress)
        results.append(result)
        if on_report:
            on_report(result)
        if result.report.status == "failed":
            break
    return results


def _declares(runbook: str, item: str) -> bool:
    return item.split("=", 1)[0] in declared_parameters(runbook_path(runbook))


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1].replace("\\040", " ") for line in fh]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def purgeable(state_dir: Path) -> bool:
    """Never remove /, a top-level directory (/var, /tmp), the checkout or a home
    directory, or anything that contains them."""
    state_dir = state_dir.resolve()
    if len(state_dir.parts) < 3:
        return False
    return not any(p.resolve().is_relative_to(state_dir) for p in (PROJECT_ROOT, Path.home()))


def down(purge: bool = False, state_dir: str = "", profile: str = "lab") -> list[str]:
    """Stop the daemon and the state directory's supervisord; with purge, unmount what
    the daemon left mounted under it and remove the state directory."""
    layout = layout_mod.for_params({"profile": profile, "state_dir": state_dir})
    if purge and not purgeable(layout.state_dir):
        raise KitError(f"refusing to purge {layout.state_dir}: it is a top-level directory or holds the checkout"
                       " or a home directory", "point BUILDKIT_OPS_STATE_DIR (or state_dir) at the lab's own directory")
    done = []
    supervisor = Supervisor(layout)
    if supervisor.supervisord_up():
        supervisor.stop()
        done.append("stopped buildkitd and supervisord")
    if purge and layout.state_dir.exists():
        for point in mounts_under(layout.state_dir):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(layout.state_dir)
        done.append(f"removed {layout.state_dir}")
    return done or ["nothing was running"]
