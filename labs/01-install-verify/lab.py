"""Install a builder from nothing and prove it builds."""

from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect

AREA = 1
START_SECONDS = 1  # lab.start, measured on the kit's machine kind (2 cores, warm)
TRIAL = "0:49"  # start to pass, one trial using only the site (2026-11-30)
BUILDER = False  # the trainee makes it: the lab starts from an empty directory


def setup(box):
    """Nothing to break: the profile and the empty directory are the starting state."""


def check(box):
    layout = box.layout
    missing = [p.name for p in (layout.buildkitd, layout.buildctl) if not p.is_file()]
    yield expect(not missing, f"buildkitd and buildctl are installed in {layout.bin_dir}",
                 f"{layout.bin_dir} lacks {', '.join(missing)}: nothing is installed yet")
    yield from checks.serving(box)
    run = box.latest_report("verify")
    yield expect(run and run["status"] != "failed", f"the verify runbook passed against it ({run and run['notebook']})",
                 "no passing verify run against this builder since the lab started"
                 + (f" (the last one failed: {run['notebook']})" if run else ""))


def solve(box):
    for name in ("install", "configure", "verify"):
        box.must_pass(name)


def wrong_fix(box):
    """Binaries in place, but the daemon never configured nor started."""
    box.must_pass("install")
