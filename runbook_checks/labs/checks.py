"""What several labs' setups and checks do, written once: the builder serving and
building, a runbook in check mode changing nothing, the supervisor giving up on a
daemon that cannot start; a production builder on a rehearsal host of the lab's own,
and a build through its front door with a team's bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ..core import layout as layout_mod
from ..core.clock import wait_until
from ..core.errors import LabError
from ..daemon import recovery, service
from ..daemon.buildctl import Buildctl
from ..production import access, hosts, rehearsal
from .catalogue import Finding, expect


def serving(box) -> Iterator[Finding]:
    """buildkitd answers; then a build with a RUN step no cache holds runs on it."""
    layout = box.layout
    answers = service.daemon_answers(layout)
    yield expect(answers, f"buildkitd answers on {layout.address}", f"no buildkitd answers on {layout.address}")
    if answers:
        said = recovery.probe_fails(box.buildctl, timeout=50)
        yield expect(not said, "a build with a RUN step ran", f"a build with a RUN step failed: {said}")


def converged(box, runbook: str, proven: str) -> Finding:
    """`runbook` in check mode, with the lab's profile, would change nothing."""
    run = box.runbook(runbook, "check")
    drift = [s.name for s in run.report.steps if s.status == "changed"]
    return expect(run.report.status != "failed" and not drift,
                  f"{proven}: the {runbook} runbook in check mode would change nothing",
                  f"the {runbook} runbook in check mode, with {box.profile_path.name}, would still change: "
                  f"{', '.join(drift) or run.report.status}")


def supervisor_gives_up(box, what: str) -> None:
    """Until supervisord gives up restarting a daemon that cannot start (FATAL)."""
    wait_until(lambda: box.manager.info()["state"] == "FATAL", 90, f"supervisord giving up on {what}",
               f"read {box.layout.log_path}")


# --------------------------------------------------------------------------------------
# labs on a production builder: a rehearsal host of the lab's own
# --------------------------------------------------------------------------------------
PRODUCTION = ("install", "configure", "access")


def production_runbook(host: str, runbook: str, mode: str = "apply", *sets: str) -> dict:
    """`invoke runbook RUNBOOK --profile production --host HOST`, as the trainee runs it:
    its report; refused when it failed."""
    code, records = rehearsal.run_runbook(host, runbook, "production", mode, sets)
    report = json.loads(records[-1].read_text()) if records else {}
    if code or report.get("status") == "failed":
        failed = [s for s in report.get("steps", []) if s["status"] == "failed"]
        raise LabError(f"the {runbook} runbook failed on {host}: {failed[-1]['message'] if failed else f'exit {code}'}",
                       f"look inside: invoke host.shell {host}")
    return report


def production_host(name: str) -> hosts.Host:
    """The rehearsal host NAME booted afresh (one left from before removed first), with
    the production builder and its front door applied."""
    hosts.down(name, purge=True)
    host, _ = hosts.up(name, progress=lambda m: None)
    for runbook in PRODUCTION:
        production_runbook(name, runbook)
    return host


def host_layout(name: str) -> layout_mod.Layout:
    return layout_mod.production(hosts.load(name).rootfs)


def bundle_client(name: str, bundle: Path) -> Buildctl:
    """buildctl through the host's front door with the bundle in `bundle` (ca.pem, cert.pem, key.pem)."""
    return access.client(access.remote(host_layout(name)), bundle)


def builds_through_the_front_door(name: str, bundle: Path, team: str) -> Finding:
    """A build with a RUN step no cache holds, through the front door with the bundle."""
    if not all((bundle / f).is_file() for f in ("ca.pem", "cert.pem", "key.pem")):
        return expect(False, "", f"no bundle in {bundle} (ca.pem, cert.pem, key.pem)")
    said = recovery.probe_fails(bundle_client(name, bundle), timeout=60)
    return expect(not said, f"a build with a RUN step ran through {name}'s front door with {team}'s bundle",
                  f"a build through {name}'s front door with the bundle in {bundle} failed: {said}")
