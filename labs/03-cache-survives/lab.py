"""A cache exported with mode=min: a fresh builder re-runs the stage the final image does
not hold. Fixed by exporting mode=max, proven on a fresh builder."""

import shutil
import tempfile
import uuid
from pathlib import Path

from runbook_checks.cache.backends import backend_from_params
from runbook_checks.cache.proof import uncached, work_steps
from runbook_checks.core import files
from runbook_checks.daemon.buildctl import Buildctl
from runbook_checks.daemon.fresh import fresh_builder
from runbook_checks.labs.catalogue import expect

AREA = 2
START_SECONDS = 13  # lab.start, measured on the kit's machine kind (2 cores, warm)
TRIAL = "0:38"  # start to pass, one trial using only the site (2026-11-30)
APP = Path(__file__).parent / "app"


def app(box) -> Path:
    return box.work / "app"


def cache(box, mode: str = "max"):
    """The team's cache in the registry beside the lab's builder."""
    return backend_from_params({"cache_backend": "registry", "cache_mode": mode,
                                "cache_ref": f"127.0.0.1:{box.registry_port}/kit/cache:warm-app"}, box.layout)


def setup(box):
    """The app in the workspace, and its cache exported the way the team's CI does: the
    default mode, min."""
    box.workspace(APP)
    box.buildctl.build(app(box), export_cache=[cache(box, "min").export_option()])


SLOW = "resolving dependencies"


def unchanged(box) -> list[str]:
    return [p.name for p in sorted(APP.iterdir()) if files.sha256(app(box) / p.name) != files.sha256(p)]


def check(box):
    backend = cache(box)
    missing = backend.missing_blobs()
    yield expect(missing == [], f"{backend} holds a cache manifest and every blob it names",
                 f"{backend} has no cache manifest" if missing is None else
                 f"{backend}'s manifest names {len(missing or [])} blobs the registry does not hold")
    changed = unchanged(box)
    yield expect(not changed, f"{app(box)} is as the team wrote it",
                 f"{', '.join(changed)} in {app(box)} changed: the team's build must stay as it is")
    if missing is None or changed:
        return
    with tempfile.TemporaryDirectory(prefix="lab-edit-", dir=box.work) as tmp:
        edited = Path(tmp) / "app"
        shutil.copytree(app(box), edited, symlinks=True)
        with open(edited / "app.txt", "a") as fh:
            fh.write(f"a developer's change {uuid.uuid4().hex}\n")
        with fresh_builder(box.layout) as fresh:
            result = Buildctl.for_layout(fresh).build(edited, import_cache=[backend.import_option()])
    slow = [v for v in work_steps(result) if SLOW in v["name"]]
    ran = uncached(result)
    yield expect(slow and slow[0].get("cached"),
                 f"a fresh builder importing it built a one-line change without resolving the dependencies"
                 f" ({len(ran)} of {len(work_steps(result))} steps ran: the edited file and what follows it)",
                 f"a fresh builder importing it resolved the dependencies again for a one-line change"
                 f" ({len(ran)} of {len(work_steps(result))} steps ran)")


def solve(box):
    box.must_pass("cache-warm", "apply", f'warm_contexts=["{app(box)}"]')


def wrong_fix(box):
    """Export again, with BuildKit's default mode (min): the same partial cache, newer."""
    box.buildctl.build(app(box), export_cache=[f"type=registry,ref={cache(box).target}"])
