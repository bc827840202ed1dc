"""`invoke up`, `status`, `down`: the lab on this machine."""

from __future__ import annotations

from invoke import Exit, task

from runbook_checks.daemon import stack

from ._kit import console, refusals, sets_of, show

STATE_DIR = "the lab's state directory (default: $BUILDKIT_OPS_STATE_DIR, else .lab in the checkout)"


def status_table(state_dir: str = "") -> stack.Status:
    from rich.table import Table

    found = stack.status(state_dir)
    table = Table(title="lab stack", show_header=False)
    for key, value in found.rows():
        table.add_row(key, value)
    console().print(table)
    return found


@task(iterable=["set_"], help={"set_": "override a lab parameter for every runbook that has it: --set key=value"})
@refusals
def up(c, set_=None):
    """Bring up the lab: install, configure and verify a real buildkitd, then its monitoring.

    Every value is checked for every runbook first: one refused value changes nothing."""
    results = stack.up(sets_of(set_), on_report=show)
    state_dir = results[0].report.facts.get("state_dir", "") if results else ""
    found = status_table(state_dir)
    if results[-1].report.status == "failed":
        raise Exit("the lab is not up: see the failed step above", code=1)
    console().print(f"\n[bold green]lab is up[/]: try\n  {found.state_dir}/bin/buildctl --addr {found.address}"
                    " debug workers", soft_wrap=True)


@task(help={"state_dir": STATE_DIR})
@refusals
def status(c, state_dir=""):
    """Show a lab: its daemon, the services beside it (answering or not), the latest reports.

    The daemon's state, address, metrics URL and log; each service's URL and whether it
    answers now; the newest report of each runbook."""
    status_table(state_dir)


@task(help={"purge": "also remove the lab state directory (binaries, config, cache, logs)", "state_dir": STATE_DIR})
@refusals
def down(c, purge=False, state_dir=""):
    """Stop a lab's daemon and its supervisord; --purge removes the lab's state too."""
    for line in stack.down(purge, state_dir):
        print(line)
