"""Hand a builder over with the executable checklist: find the items that do not hold,
mend each, until the handover runbook passes."""

import subprocess
import sys
from pathlib import Path

from runbook_checks.core import runner
from runbook_checks.core.errors import KitError
from runbook_checks.core.paths import PROJECT_ROOT, labs_home
from runbook_checks.daemon import service
from runbook_checks.labs.catalogue import expect
from runbook_checks.reports.handover import docs_built

AREA = 9
START_SECONDS = 45  # lab.start, measured on the kit's machine kind (2 cores, warm)


def site() -> Path:
    """The site the lab hands over, built beside the labs (a reset keeps it: the same
    pages, built once)."""
    return labs_home() / "site"


def PROFILE(box):
    """The builder with its monitoring on free ports (scraped every 5 s: the monitoring
    runbook's "every scrape target up" waits for a first scrape); the site it hands
    over; required plugins none (the lab's Docker config starts empty)."""
    return {"prometheus_port": service.free_port(), "alertmanager_port": service.free_port(),
            "notify_sink_port": service.free_port(), "builder_name": "lab-builder", "team_receivers": {},
            "scrape_interval": "5s", "required_plugins": [], "docs_site": str(site())}


def setup(box):
    """Monitoring and alerting applied, the site built (unless it is built from the
    current pages already); then the state a hurried team leaves: the notification sink
    (on-call's webhook) stopped, no prune ever applied, no plugin audit ever run."""
    try:
        docs_built(site())
        build = None
    except KitError:  # mkdocs builds while the runbooks apply (it needs neither)
        build = subprocess.Popen([sys.executable, "-m", "mkdocs", "build", "-q", "-d", str(site())],
                                 cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        box.must_pass("monitoring")
        box.must_pass("alerting")
        if build:
            said, _ = build.communicate(timeout=300)
            if build.returncode:
                raise subprocess.CalledProcessError(build.returncode, build.args, said)
    finally:
        if build and build.poll() is None:
            build.kill()
            build.wait()
    box.manager.stop_program("notify_sink")


def handover(box):
    return runner.run("handover", str(box.profile_path), "check", (), base=box.runs, progress=False)


def check(box):
    result = handover(box)
    for step in result.report.steps[:-1]:  # each item of the checklist, as the runbook found it
        said = f"{step.name}: {step.message.splitlines()[0] if step.message else step.status}"
        yield expect(step.status != "failed", said, said)
    passed = result.report.status != "failed"
    yield expect(passed, f"the handover runbook passes: {result.report.steps[-1].message.splitlines()[0]}",
                 f"the handover runbook fails ({result.notebook})")


def routine(box):
    box.must_pass("prune", "apply")
    box.must_pass("plugins-audit", "check")


def solve(box):
    box.must_pass("configure")  # starts what should run beside buildkitd: the notification sink
    routine(box)


def wrong_fix(box):
    """The routine runs made, the notification sink (on-call's channels) left down."""
    routine(box)
