"""A builder that runs every step of a fan-out build at once on two CPUs: capped at two
steps at a time from the profile, proven by when the steps really ran."""

import tempfile
import uuid
from pathlib import Path

import yaml

from runbook_checks.core import files
from runbook_checks.core.errors import KitError
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect

AREA = 6
START_SECONDS = 15  # lab.start, measured on the kit's machine kind (2 cores, warm)
HERE = Path(__file__).parent
LIMIT = 2  # steps at once: the capacity plan for a 2-CPU builder
PROFILE = {"max_parallelism": 8}  # copied from the 8-CPU build machines' profile


def setup(box):
    box.workspace(HERE / "app")


def spans(box) -> dict[str, tuple[float, float]]:
    """The release build with a new BUILD_ID (no step cached): {job: (began, ended)}, as
    each job's own step wrote them (/proc/uptime, one clock for every container)."""
    with tempfile.TemporaryDirectory(prefix="lab-", dir=box.work) as tmp:
        out = Path(tmp) / "out"
        box.buildctl.build(box.work / "app", build_args={"BUILD_ID": uuid.uuid4().hex[:12]},
                           output=f"type=local,dest={out}", timeout=120)
        return {job.name: (float((job / "began").read_text()), float((job / "ended").read_text()))
                for job in sorted((out / "jobs").iterdir())}


def at_once(found: dict[str, tuple[float, float]]) -> int:
    """The most jobs running at one moment (each job's start is such a moment)."""
    return max(sum(1 for b, e in found.values() if b <= began < e) for began, _ in found.values())


def check(box):
    try:
        found = spans(box)
    except KitError as exc:
        yield expect(False, "", f"the release build failed: {exc.problem.rsplit('error: ', 1)[-1]}")
        return
    start = min(b for b, _ in found.values())
    timeline = ", ".join(f"{job} {b - start:.1f}-{e - start:.1f}s" for job, (b, e) in found.items())
    most = at_once(found)
    yield expect(most <= LIMIT, f"at most {LIMIT} of the build's {len(found)} jobs ran at once ({timeline})",
                 f"{most} of the build's {len(found)} jobs ran at once, more than {LIMIT} ({timeline})")
    yield expect(most >= LIMIT, f"{LIMIT} jobs ran side by side: the builder uses both CPUs",
                 f"only {most} job ran at a time ({timeline}): the builder leaves a CPU idle and the build"
                 f" takes twice as long; the plan is {LIMIT} at once")
    yield checks.converged(box, "configure", "the limit comes from the profile")


def set_limit(box, steps: int) -> None:
    profile = yaml.safe_load(box.profile_path.read_text())
    profile["max_parallelism"] = steps
    files.atomic_write(box.profile_path, yaml.safe_dump(profile, sort_keys=False))
    box.must_pass("configure")


def solve(box):
    set_limit(box, LIMIT)


def wrong_fix(box):
    """One step at a time: never more than two at once, and half the builder idle."""
    set_limit(box, 1)
