"""A damaged bolt database that stops the daemon at start: recovered with nothing deleted."""

import uuid

from runbook_checks.daemon import recovery, service
from runbook_checks.drills.faults import garble_under
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect

AREA = 7
START_SECONDS = 11  # lab.start, measured on the kit's machine kind (2 cores, warm)


def setup(box):
    """A build fills the cache, then the worker's metadata_v2.db is garbled and the daemon
    killed: it exits at every start until supervisord gives up."""
    box.buildctl.build(box.context(nonce=uuid.uuid4().hex, payload_mb=1))
    garble_under(box, next(box.layout.root_dir.glob("*/metadata_v2.db")))
    checks.supervisor_gives_up(box, "buildkitd")


def check(box):
    layout = box.layout
    yield from checks.serving(box)
    broken = recovery.broken_databases(layout)
    yield expect(not broken,
                 f"all {len(recovery.databases(layout))} bolt databases under {layout.root_dir} pass bbolt check",
                 f"bbolt check fails on {', '.join(str(p.relative_to(layout.root_dir)) for p in broken)}")
    kept = sorted(layout.root_dir.parent.glob(f"{layout.root_dir.name}.aside-*"))
    yield expect(kept, f"the damaged state is kept for the post-mortem: {kept[0] if kept else ''}",
                 f"nothing was kept beside {layout.root_dir}: the damaged state is gone, or was never moved")


def solve(box):
    box.must_pass("recover")


def wrong_fix(box):
    """The whole root deleted and the daemon started afresh: it builds, and the cache and
    the evidence are gone."""
    import shutil

    shutil.rmtree(box.layout.root_dir)
    box.manager.start()
    service.wait_ready(box.layout, box.manager, 60)
