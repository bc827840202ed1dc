"""`invoke runbook NAME`: run one runbook, or list the runbooks' parameters."""

from __future__ import annotations

import sys

from invoke import task

from runbook_checks.core import profiles
from runbook_checks.core.errors import ParameterError

from ._kit import console, refusals, run_and_show, sets_of

RUNBOOKS = profiles.list_runbooks()
LIST_WORDS = ("--list", "-l", "all")


def print_parameters(name: str = "") -> None:
    """Each runbook's parameters (or one runbook's) as a table: name, type, default, help."""
    from rich.table import Table

    if name and name not in RUNBOOKS:
        raise ParameterError(f"no runbook named {name!r}", f"choose one of: {', '.join(RUNBOOKS)}")
    for runbook_name in ([name] if name else RUNBOOKS):
        table = Table(title=f"runbook {runbook_name}", title_justify="left")
        for col in ("parameter", "type", "default", "help"):
            table.add_column(col, overflow="fold")
        for pname, p in profiles.declared_parameters(profiles.runbook_path(runbook_name)).items():
            table.add_row(pname, p["type"], str(p["default"]), p["help"])
        console().print(table)


@task(iterable=["set_"], positional=["name"], optional=["list_"], help={
    "name": f"the runbook to run: {', '.join(RUNBOOKS)}",
    "profile": f"{' | '.join(profiles.PROFILES)}, or the path of a site profile (extends one of them)",
    "mode": "check (change nothing, show the diff) | apply",
    "set_": "override a parameter: --set key=value (repeatable, once per key)",
    "list_": "list the parameters instead of running: every runbook's, or NAME's (--list NAME, NAME --list)",
    "host": "run it inside this rehearsal host (invoke host.up HOST); the record comes back to runs/",
})
@refusals
def runbook(c, name=None, profile="lab", mode="check", set_=None, list_=None, host=""):
    """Run a runbook with papermill; write runs/NAME/<stamp>.{ipynb,json}; print the recap.

    Exit 2 (nothing run, nothing written) when a parameter is refused, 1 when a step
    failed. `invoke runbook --list [NAME]` lists the parameters, from each notebook's
    parameters cell."""
    if name in ("-h", "--help"):  # a required positional swallows --help: give it back
        return c.run(f"{sys.executable} -m invoke --help runbook", pty=False)
    if list_ is not None or name in LIST_WORDS:
        chosen = list_ if isinstance(list_, str) else name
        return print_parameters("" if chosen in LIST_WORDS or chosen is None else chosen)
    run_and_show(name, profile, mode, sets_of(set_), host)
