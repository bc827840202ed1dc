"""The production builder's CA lost with its disk: restored from the backup the
operations documentation says to take, so that every bundle issued before builds again
and no team needs a new one. On a rehearsal host of the lab's own."""

import shutil

from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect
from runbook_checks.production import ca, hosts

AREA = 8
START_SECONDS = 30  # lab.start, measured on the kit's machine kind (2 cores, warm: the host's root filesystem cached)
BUILDER = False  # the builder is the rehearsal host's
HOST = "lab-restore"
PAGE = PROJECT_ROOT / "docs" / "operations" / "routine.md"  # the backup and restore it practises


def page_commands(*starts: str) -> list[str]:
    """The page's shell lines that start with `starts`, in that order: what it tells an
    operator to run."""
    lines = PAGE.read_text().splitlines()
    return [next(line for line in lines if line.startswith(start)) for start in starts]


def setup(box):
    """The builder, the web team's bundle, last night's backup (the page's command); then
    the disk with /etc/buildkit/access lost and the front door restarted on what is left."""
    host = checks.production_host(HOST)
    ca.write_bundle(ca.issue(checks.host_layout(HOST), "web"), box.work / "web-bundle")
    backup, = page_commands("cd / && tar ")
    hosts.run_in(host, ["bash", "-c", backup])
    hosts.run_in(host, ["rm", "-rf", "/etc/buildkit/access"])
    hosts.run_in(host, ["systemctl", "restart", "buildkit-frontdoor.service"], check=False)


def teardown():
    hosts.down(HOST, purge=True)


def check(box):
    bundle = box.work / "web-bundle"
    served = ca.paths(checks.host_layout(HOST))["ca"]
    same = served.is_file() and served.read_bytes() == (bundle / "ca.pem").read_bytes()
    yield expect(same, "the builder's CA is the one every bundle issued before trusts",
                 f"the builder's CA ({served}) is not the one in the bundles issued before"
                 if served.is_file() else f"the builder has no CA ({served} is missing)")
    yield checks.builds_through_the_front_door(HOST, bundle, "web")
    if same:  # with another CA, check mode is beside the point
        report = checks.production_runbook(HOST, "access", "check")
        drift = [s["name"] for s in report["steps"] if s["status"] == "changed"]
        yield expect(not drift, "the access runbook in check mode would change nothing",
                     f"the access runbook in check mode would still change: {', '.join(drift)}")


def solve(box):
    host = hosts.load(HOST)
    archive = next((host.rootfs / "root").glob("buildkit-backup-*.tar.gz"))
    stop, restore = page_commands("systemctl stop", "tar -C / -xzpf")
    hosts.run_in(host, stop.split())
    hosts.run_in(host, restore.replace("/root/buildkit-backup-STAMP.tar.gz", f"/root/{archive.name}").split())
    for runbook in ("configure", "access"):
        checks.production_runbook(HOST, runbook)


def wrong_fix(box):
    """The access runbook applied on the empty directory: a new CA, the front door up,
    and every bundle issued before refused."""
    shutil.rmtree(hosts.load(HOST).rootfs / "etc/buildkit/access", ignore_errors=True)
    checks.production_runbook(HOST, "access")
