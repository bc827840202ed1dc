"""`invoke pool.*`: the builders behind a front door (a pool, production.pool): their
state, draining one for maintenance and putting it back, on a rehearsal host (--host) or
on this machine."""

from __future__ import annotations

import json

from invoke import task

from runbook_checks.production import hosts, pool

from ._kit import console, refusals

HOST = {"host": "the rehearsal host whose front door it is (invoke host.up NAME); default: this machine"}


def _host(name: str):
    return hosts.load(name) if name else None


@task(help={**HOST, "json": "print JSON"})
@refusals
def status(c, host="", json_=False):
    """Each builder behind the front door: UP, DRAIN or MAINT, builds running and queued."""
    from rich.table import Table

    rows = pool.run(_host(host), "status")
    if json_:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="builders behind the front door", title_justify="left")
    for col in ("builder", "state", "running", "queued", "taken"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["builder"], r["state"], str(r["running"]), str(r["queued"]), str(r["taken"]))
    console().print(table)


@task(positional=["builder"], help={"builder": "the builder (buildkit-b2, or b2)", **HOST,
                                    "timeout": "seconds to wait for its builds to finish (default 3600)"})
@refusals
def drain(c, builder, host="", timeout=3600):
    """Take a builder out for maintenance: no new builds (its teams go to the next one),
    and wait until the builds it runs have finished."""
    out = pool.run(_host(host), "drain", builder, float(timeout), lambda m: console().print(m, highlight=False))
    console().print(f"{out['builder']} is drained: {out['finished']} build(s) finished in {out['seconds']}s;"
                    f" new builds go to {', '.join(out['serving'])}. Back: invoke pool.ready {out['builder']}",
                    highlight=False)


@task(positional=["builder"], help={"builder": "the builder (buildkit-b2, or b2)", **HOST})
@refusals
def ready(c, builder, host=""):
    """Put a drained builder back: its teams' builds come back to it (and to its cache)."""
    out = pool.run(_host(host), "ready", builder)
    console().print(f"{out['builder']} is {out['state']}: it takes its teams' builds again", highlight=False)
