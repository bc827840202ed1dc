"""What several labs' setups and checks do, written once: the builder serving and
building, a runbook in check mode changing nothing, the supervisor giving up on a
daemon that cannot start."""

from __future__ import annotations

from typing import Iterator

from ..core.clock import wait_until
from ..daemon import recovery, service
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
