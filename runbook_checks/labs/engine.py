"""The trainee's verbs: start, check, hint, solve, reset, stop, and the progress kept
beside the labs. Each started lab is a sandbox builder of its own under the labs home
(its state directory, free ports, a registry and an S3 server beside it, a Docker config
of its own): never the operator's lab, never the host's Docker config. The trainee
reaches it with the site profile the lab writes (`--profile $LAB_PROFILE`) and the
environment it prints (`BUILDKIT_HOST`, `DOCKER_CONFIG`, `PATH`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core import files
from ..core import layout as layout_mod
from ..core import runner
from ..core.errors import KitError, LabError
from ..core.paths import labs_home, runs_dir
from ..daemon import service, stack
from ..drills.sandbox import Sandbox, prepare
from .catalogue import Finding, Lab

STATE = "lab.json"
PROGRESS = "progress.json"


@dataclass
class LabBox(Sandbox):
    """A lab's sandbox: the drills' sandbox, kept between commands under the labs home."""

    home: Path = Path()
    started: str = ""  # when the lab was started (UTC, as run reports write it)

    @property
    def profile_path(self) -> Path:
        return self.home / "profile.yaml"

    @property
    def docker_config(self) -> Path:
        return self.home / "docker"

    def workspace(self, source: Path, name: str = "app") -> Path:
        """`source` copied into the lab's workspace as `name`, with the busybox root
        filesystem its Dockerfile copies in: the files the trainee works on."""
        target = self.work / name
        shutil.copytree(source, target)
        shutil.copytree(self.work / "rootfs", target / "rootfs", symlinks=True)
        return target

    def runbook(self, name: str, mode: str = "apply", *extra: str) -> runner.RunResult:
        """A runbook run as the trainee runs it: `--profile $LAB_PROFILE`."""
        return runner.run(name, str(self.profile_path), mode, extra, base=self.runs, progress=False)

    def must_pass(self, name: str, mode: str = "apply", *extra: str) -> runner.RunResult:
        result = self.runbook(name, mode, *extra)
        if result.report.status == "failed":
            failed = [s for s in result.report.steps if s.status == "failed"]
            raise LabError(f"the {name} runbook failed in the lab: {failed[-1].message if failed else ''}",
                           f"read {result.notebook}")
        return result

    def latest_report(self, runbook: str) -> dict | None:
        """The newest report of `runbook` run against this builder since the lab started,
        wherever it was recorded (the trainee's runs/ or the lab's own)."""
        found = [report for base in (runs_dir(), self.runs) for _, report in runner.records(runbook, base)
                 if runner.state_dir_of(report) == self.layout.state_dir and report.get("started", "") >= self.started]
        return max(found, key=lambda r: r["started"], default=None)

    def environment(self) -> dict[str, str]:
        return {"LAB": str(self.home), "LAB_PROFILE": str(self.profile_path), "BUILDKIT_HOST": self.layout.address,
                "BUILDKIT_OPS_RUNS_DIR": str(self.runs),  # the lab's run records stay in the lab
                "LAB_REGISTRY": f"127.0.0.1:{self.registry_port}",
                "DOCKER_CONFIG": str(self.docker_config), "PATH": f"{self.layout.bin_dir}:$PATH"}

    def write_files(self, values: dict | None = None) -> None:
        """profile.yaml (extends ci: this sandbox's directory and ports, and the lab's own
        `values`) and env."""
        profile = {"extends": "ci", "state_dir": str(self.layout.state_dir), "registry_port": self.registry_port,
                   "s3_port": self.s3_port, "docker_config": str(self.docker_config), **(values or {})}
        files.atomic_write(self.profile_path, "# a practice lab's builder (invoke lab.start wrote it)\n"
                           + yaml.safe_dump(profile, sort_keys=False))
        env = "".join(f"export {k}={v if k == 'PATH' else shlex.quote(v)}\n" for k, v in self.environment().items())
        files.atomic_write(self.home / "env", env)


@contextmanager
def _records_in(box: LabBox):
    """Runs made while a lab's verb works (its setup, check, solve) are recorded in the
    lab, as the trainee's are (the env file sets BUILDKIT_OPS_RUNS_DIR): a reset removes them."""
    before = os.environ.get("BUILDKIT_OPS_RUNS_DIR")
    os.environ["BUILDKIT_OPS_RUNS_DIR"] = str(box.runs)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("BUILDKIT_OPS_RUNS_DIR", None)
        else:
            os.environ["BUILDKIT_OPS_RUNS_DIR"] = before


def _home(lab: Lab) -> Path:
    return labs_home() / lab.name


def load(lab: Lab) -> LabBox:
    """The started lab's sandbox; refused when the lab is not started."""
    home = _home(lab)
    try:
        state = json.loads((home / STATE).read_text())
    except (OSError, ValueError):
        raise LabError(f"the lab {lab.name} is not started", f"start it: invoke lab.start {lab.name}") from None
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(home / "builder")})
    return LabBox(layout, state["registry_port"], state["s3_port"], home / "work", home, state["started"])


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------
# progress: which labs a trainee has passed, and how long it took
# --------------------------------------------------------------------------------------
def read_progress() -> dict[str, dict]:
    try:
        return json.loads((labs_home() / PROGRESS).read_text())
    except (OSError, ValueError):
        return {}


def _record(lab: Lab, **changes) -> dict:
    progress = read_progress()
    entry = progress.setdefault(lab.name, {"first_started": _now(), "starts": 0, "checks": 0, "hints": 0,
                                           "passed": None, "seconds": None, "solved_by_kit": False})
    for key, value in changes.items():
        entry[key] = value(entry.get(key)) if callable(value) else value
    labs_home().mkdir(parents=True, exist_ok=True)
    files.atomic_write(labs_home() / PROGRESS, json.dumps(progress, indent=2) + "\n")
    return entry


# --------------------------------------------------------------------------------------
# the verbs
# --------------------------------------------------------------------------------------
def start(lab: Lab, say=print) -> tuple[LabBox, float]:
    """Make the lab's sandbox, then its broken (or empty) starting state: (box, seconds)."""
    home = _home(lab)
    if (home / STATE).exists():
        raise LabError(f"the lab {lab.name} is already started in {home}",
                       f"go on with it (invoke lab.check {lab.name}), or start over: invoke lab.reset {lab.name}")
    if home.exists():  # a start that failed half-way: take it down first
        _remove(home)
    begun = time.monotonic()
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(home / "builder")})
    box = LabBox(layout, service.free_port(), service.free_port(), home / "work", home, _now())
    try:
        box.work.mkdir(parents=True)
        box.docker_config.mkdir()
        values = getattr(lab.module, "PROFILE", {})  # the lab's own values: a dict, or made for this box
        box.write_files(values(box) if callable(values) else values)
        if getattr(lab.module, "BUILDER", True):
            say(f"making the lab's builder in {layout.state_dir} (install and configure, ci profile)")
            prepare(box, baseline=False)
        say("setting up the lab's starting state")
        with _records_in(box):
            lab.verb("setup")(box)
        files.atomic_write(home / STATE, json.dumps({"lab": lab.name, "started": box.started, "registry_port":
                                                     box.registry_port, "s3_port": box.s3_port}) + "\n")
    except BaseException:
        _teardown(lab)
        _remove(home)
        raise
    _record(lab, starts=lambda n: (n or 0) + 1, started=_now())
    return box, round(time.monotonic() - begun, 1)


@dataclass
class Verdict:
    passed: bool
    findings: list[Finding]
    hint: str = ""
    seconds: float = 0.0
    progress: dict = field(default_factory=dict)

    @property
    def wrong(self) -> list[str]:
        return [f.said for f in self.findings if not f.ok]


def check(lab: Lab) -> Verdict:
    """Inspect the real sandbox: passed, with what was proven; or what is still wrong and
    the first hint. The first pass is recorded with the time since the lab was first started."""
    box = load(lab)
    begun = time.monotonic()
    try:
        with _records_in(box):
            findings = list(lab.verb("check")(box))
    except KitError as exc:  # the check could not even look: that is what is wrong
        findings = [Finding(False, f"{exc.problem} ({exc.fix})")]
    passed = bool(findings) and all(f.ok for f in findings)
    entry = _record(lab, checks=lambda n: (n or 0) + 1)
    if passed and not entry["passed"]:
        first = _dt.datetime.strptime(entry["first_started"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
        entry = _record(lab, passed=_now(),
                        seconds=round((_dt.datetime.now(_dt.timezone.utc) - first).total_seconds()))
    return Verdict(passed, findings, "" if passed else lab.hints[0], round(time.monotonic() - begun, 1), entry)


def hint(lab: Lab, level: int = 1) -> str:
    hints = lab.hints
    if not 1 <= level <= len(hints):
        raise LabError(f"the lab {lab.name} has hints 1 to {len(hints)}, not {level}", f"--level 1 to {len(hints)}")
    _record(lab, hints=lambda n: max(n or 0, level))
    return hints[level - 1]


def solve(lab: Lab) -> LabBox:
    """Bring the sandbox to the solved state (as task.md's solution does); recorded as solved by the kit."""
    box = load(lab)
    with _records_in(box):
        lab.verb("solve")(box)
    if not read_progress().get(lab.name, {}).get("passed"):  # a pass after this is the kit's, not the trainee's
        _record(lab, solved_by_kit=True)
    return box


def stop(lab: Lab) -> bool:
    """Take the lab's sandbox down and remove it (the progress stays): whether there was one."""
    home = _home(lab)
    if not home.exists():
        return False
    _teardown(lab)
    _remove(home)
    return True


def _teardown(lab: Lab) -> None:
    """What the lab made outside its home (a rehearsal host): its teardown(), if it has one."""
    teardown = getattr(lab.module, "teardown", None)
    if callable(teardown):
        teardown()


def reset(lab: Lab, say=print) -> tuple[LabBox, float]:
    """Back to the starting state: the sandbox removed and made again."""
    stop(lab)
    return start(lab, say)


def _remove(home: Path) -> None:
    if (home / "builder").exists():
        stack.down(purge=True, state_dir=str(home / "builder"), profile="ci")
    shutil.rmtree(home, ignore_errors=True)


def progress_rows(labs: list[Lab]) -> list[dict]:
    """One row per lab: its state for this trainee (not started, started, passed), time
    spent to the first pass, hints used, checks run."""
    progress = read_progress()
    rows = []
    for lab in labs:
        entry = progress.get(lab.name, {})
        running = (_home(lab) / STATE).exists()
        if entry.get("passed"):
            state = "passed (lab.solve)" if entry.get("solved_by_kit") else "passed"
        else:
            state = "started" if running else ("stopped" if entry else "not started")
        rows.append({"lab": lab.name, "area": lab.area_name, "state": state, "seconds": entry.get("seconds"),
                     "hints": entry.get("hints", 0), "checks": entry.get("checks", 0), "running": running})
    return rows
