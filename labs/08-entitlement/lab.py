"""A build refused for network.host: granted in the profile, that one entitlement only."""

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runbook_checks.daemon import recovery
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect

AREA = 3
START_SECONDS = 12  # lab.start, measured on the kit's machine kind (2 cores, warm)
HERE = Path(__file__).parent
INSECURE = "FROM scratch\nCOPY rootfs/ /\nRUN --security=insecure cat /proc/self/status > /status\n"


def app(box) -> Path:
    return box.work / "app"


def setup(box):
    box.workspace(HERE / "app")


def check(box):
    """The three findings, looked at side by side: buildkitd takes about 5 s to refuse a
    build an entitlement it does not grant, so both builds run in threads of their own
    while the configure runbook's check mode runs in this one (papermill's kernel)."""
    registry = f"127.0.0.1:{box.registry_port}"
    with tempfile.TemporaryDirectory(prefix="lab-", dir=box.work) as tmp, ThreadPoolExecutor(2) as pool:
        ctx = Path(tmp)
        shutil.copytree(box.work / "rootfs", ctx / "rootfs", symlinks=True)
        (ctx / "Dockerfile").write_text(INSECURE)
        team = pool.submit(recovery.build_error, lambda: box.buildctl.build(
            app(box), build_args={"REGISTRY": registry}, allow=["network.host"], timeout=120))
        insecure = pool.submit(recovery.build_error, lambda: box.buildctl.build(
            ctx, allow=["security.insecure"], timeout=120))
        converged = checks.converged(box, "configure", "the daemon's entitlements come from the profile")
        said, refused = team.result(), insecure.result()
    yield expect(not said, "the release team's build with --allow network.host succeeded",
                 f"the release team's build with --allow network.host failed: {said}")
    yield converged
    yield expect("security.insecure is not allowed" in refused or "entitlement security.insecure" in refused,
                 "a build asking for security.insecure is refused",
                 "a build asking for security.insecure was granted it: this builder runs privileged steps for"
                 " anyone who asks" if not refused else f"a build asking for security.insecure failed, but not"
                 f" for the entitlement: {refused}")


def _grant(box, entitlements):
    import yaml

    from runbook_checks.core import files

    profile = yaml.safe_load(box.profile_path.read_text())
    profile["insecure_entitlements"] = entitlements
    files.atomic_write(box.profile_path, yaml.safe_dump(profile, sort_keys=False))
    box.must_pass("configure")


def solve(box):
    _grant(box, ["network.host"])


def wrong_fix(box):
    """Both entitlements granted, "to be safe": the build passes, and so would any
    privileged step."""
    _grant(box, ["network.host", "security.insecure"])
