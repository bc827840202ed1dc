"""A Dockerfile whose instruction order invalidates its slow step on every build: found
and fixed, the image unchanged."""

import shutil
import tempfile
import uuid
from pathlib import Path

from runbook_checks.cache.proof import work_steps
from runbook_checks.core.errors import KitError
from runbook_checks.labs.catalogue import expect

AREA = 2
START_SECONDS = 10  # lab.start, measured on the kit's machine kind (2 cores, warm)
HERE = Path(__file__).parent
SLOW = "installing dependencies"


def app(box) -> Path:
    return box.work / "app"


def setup(box):
    box.workspace(HERE / "app")


def check(box):
    with tempfile.TemporaryDirectory(prefix="lab-", dir=box.work) as tmp:
        ctx, out = Path(tmp) / "app", Path(tmp) / "out"
        shutil.copytree(app(box), ctx, symlinks=True)
        try:
            box.buildctl.build(ctx, build_args={"BUILD_ID": "ci-1"}, timeout=120)
        except KitError as exc:
            yield expect(False, "", f"the app does not build: {exc.problem.rsplit('error: ', 1)[-1]}")
            return
        change = f"print('a developer changed this: {uuid.uuid4().hex[:8]}')\n"
        with open(ctx / "main.txt", "a") as fh:
            fh.write(change)
        result = box.buildctl.build(ctx, build_args={"BUILD_ID": "ci-2"}, output=f"type=local,dest={out}", timeout=120)
        slow = [v for v in work_steps(result) if SLOW in v["name"]]
        yield expect(slow and slow[0].get("cached"),
                     "after a change of main.txt and a new BUILD_ID, the dependency step was CACHED",
                     "after a change of main.txt and a new BUILD_ID, the dependency step ran again" if slow
                     else "no step installs the dependencies any more")
        held = {name: (out / name).read_text() if (out / name).is_file() else None
                for name in ("deps-installed", "app", "build-id")}
        yield expect(held["deps-installed"] == (ctx / "deps.txt").read_text(), "/deps-installed is deps.txt",
                     "/deps-installed is missing or not deps.txt")
        yield expect(held["app"] == (ctx / "main.txt").read_text(), "/app is the changed main.txt",
                     "/app is missing or not the changed main.txt")
        yield expect((held["build-id"] or "").strip() == "ci-2", "/build-id holds the build's BUILD_ID",
                     f"/build-id is {held['build-id']!r}, not the build's BUILD_ID (ci-2)")


def solve(box):
    shutil.copy(HERE / "solution" / "Dockerfile", app(box) / "Dockerfile")


def wrong_fix(box):
    """ARG BUILD_ID moved down to the step that uses it, `COPY . /src` left in front of
    the slow step: main.txt still invalidates it."""
    dockerfile = app(box) / "Dockerfile"
    lines = [line for line in dockerfile.read_text().splitlines() if line != "ARG BUILD_ID"]
    last = max(i for i, line in enumerate(lines) if line.startswith("RUN"))
    lines.insert(last, "ARG BUILD_ID")
    dockerfile.write_text("\n".join(lines) + "\n")
