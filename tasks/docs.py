"""`invoke docs.build`, `docs.serve`: the site."""

from __future__ import annotations

import sys

from invoke import task

from ._kit import refusals


@task(help={"strict": "fail on warnings (default true)"})
def build(c, strict=True):
    """Build the MkDocs Material site into site/ (notebooks rendered, never executed)."""
    c.run(f"{sys.executable} -m mkdocs build {'--strict' if strict else ''}", pty=False)


@task
def serve(c):
    """Serve the site on 127.0.0.1:8000 with live reload."""
    c.run(f"{sys.executable} -m mkdocs serve -a 127.0.0.1:8000", pty=False)


@task(help={"runbook": "only this runbook (default: each one)",
            "runs": "where the run records are (default: $BUILDKIT_OPS_RUNS_DIR, else runs/)"})
@refusals
def record(c, runbook="", runs=""):
    """Put each runbook's newest run that did not fail (the lab, a rehearsal host, a test
    run) on the site: sanitised into docs/recorded/, shown on its runbook's pages."""
    from pathlib import Path

    from runbook_checks.core import profiles, recorded

    if runbook:
        profiles.runbook_path(runbook)  # an unknown name is refused with the list
    for name in [runbook] if runbook else profiles.list_runbooks():
        found = recorded.record(name, Path(runs) if runs else None)
        print(f"{name}: " + (f"recorded {found.description}" if found else
                             f"no run that did not fail (run it: invoke runbook {name} ...), the page keeps the last"))
