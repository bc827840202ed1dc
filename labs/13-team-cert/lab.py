"""A new team on the production builder: its own certificate, issued by the
installation's CA, and a build through the front door that the audit log records under
its name. On a rehearsal host of the lab's own (systemd, the front door, mutual TLS)."""

import contextlib
import time

from runbook_checks.core.clock import wait_until
from runbook_checks.core.errors import KitError
from runbook_checks.daemon.contexts import busybox_rootfs
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect
from runbook_checks.production import access, auditlog, ca, hosts

AREA = 3
START_SECONDS = 25  # lab.start, measured on the kit's machine kind (2 cores, warm: the host's root filesystem cached)
BUILDER = False  # the builder is the rehearsal host's
HOST = "lab-cert"
TEAM = "mobile"


def setup(box):
    """The host with its production builder and front door; the web team already on it,
    its bundle where the platform team keeps what it handed over."""
    checks.production_host(HOST)
    ca.write_bundle(ca.issue(checks.host_layout(HOST), "web"), box.work / "web-bundle")
    app = box.work / "app"  # something to build: a busybox root filesystem, a RUN step
    busybox_rootfs(app / "rootfs")
    (app / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\nRUN echo built on the organisation's builder"
                                    " > /hello\n")


def teardown():
    hosts.down(HOST, purge=True)


def certificate(path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    team = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (team[0].value if team else ""), cert.fingerprint(hashes.SHA256()).hex()


def check(box):
    bundle = box.work / f"{TEAM}-bundle"
    if not (bundle / "cert.pem").is_file():
        yield expect(False, "", f"no bundle for the {TEAM} team in {bundle}")
        return
    layout = checks.host_layout(HOST)
    team, fingerprint = certificate(bundle / "cert.pem")
    yield expect(team == TEAM, f"the bundle's certificate names the team {TEAM}",
                 f"the bundle's certificate names {team!r}, not {TEAM!r}: the audit log, the queue's priorities and a"
                 f" revocation would treat {TEAM}'s builds as {team}'s")
    row = next((r for r in ca.issued(layout) if r.fingerprint == fingerprint), None)
    if row is None:
        yield expect(False, "", "the installation's CA has no record of this certificate (issued.json): it was not"
                                " issued here")
    else:
        yield expect(not row.revoked, f"this installation's CA issued it (serial {row.serial}, until"
                     f" {row.not_after[:10]}): invoke certs.list shows it", f"the certificate was revoked on {row.revoked}")
    started = time.time()
    yield checks.builds_through_the_front_door(HOST, bundle, TEAM)
    yield audited(layout, started)


def audited(layout, since: float):
    """The build just made is in the audit log under the team's name (the shipper writes
    a call's line when the call ends: a few seconds at most)."""
    def solves() -> list[dict]:
        return [e for e in auditlog.read(access.audit_log(layout), since - 1)
                if e.get("method", "").endswith(".Control/Solve")]

    with contextlib.suppress(KitError):
        wait_until(solves, 10, "the build's line in the audit log", "")
    teams = sorted({e["team"] for e in solves()})
    return expect(teams == [TEAM], f"the audit log records that build under team {TEAM}",
                  f"the audit log records the build under {', '.join(teams) or 'no team'}")


def solve(box):
    layout = checks.host_layout(HOST)
    ca.write_bundle(ca.issue(layout, TEAM), box.work / f"{TEAM}-bundle")


def wrong_fix(box):
    """The web team's bundle copied for mobile: it builds, under web's name."""
    import shutil

    shutil.rmtree(box.work / f"{TEAM}-bundle", ignore_errors=True)
    shutil.copytree(box.work / "web-bundle", box.work / f"{TEAM}-bundle")
