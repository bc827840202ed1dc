"""`invoke profile.show`, `profile.check`: what a profile (or a site profile) passes, and
whether it is valid, before anything runs."""

from __future__ import annotations

import json

from invoke import Exit, task

from runbook_checks.core import profiles

from ._kit import console, refusals, sets_of

PROFILE = f"{' | '.join(profiles.PROFILES)}, or the path of a site profile (a YAML file with `extends: NAME`)"


@task(positional=["profile"], iterable=["set_"], help={
    "profile": PROFILE,
    "runbook": "the runbook whose parameters to show (default: install); each runbook takes its own",
    "mode": "check | apply",
    "set_": "override a parameter as `invoke runbook` would: --set key=value",
    "json": "print JSON: {parameter: {value, source}}",
})
@refusals
def show(c, profile, runbook="install", mode="check", set_=None, json_=False):
    """Show the parameters a runbook gets with a profile, and where each one comes from.

    The source of each value: the runbook's default, a profile file and line, or --set."""
    from rich.table import Table

    resolved = profiles.resolve_sources(runbook, profile, mode, sets_of(set_))
    every = resolved.everything()
    if json_:
        print(json.dumps({k: {"value": v, "source": source} for k, (v, source) in every.items()}, indent=2))
        return
    table = Table(title=f"{runbook} · {resolved.profile.label} · {mode}", title_justify="left")
    for col in ("parameter", "value", "from"):
        table.add_column(col, overflow="fold")
    for key, (value, source) in every.items():
        table.add_row(key, json.dumps(value), source)
    console().print(table)


@task(positional=["profile"], help={"profile": PROFILE})
@refusals
def check(c, profile):
    """Validate a profile (or a site profile) as a whole, running nothing.

    Every unknown key, misplaced option and refused value, each with its file and line;
    exit 2 when there is any."""
    found = profiles.check_profile(profile)
    if found:
        raise Exit("\n".join(f"error: {e}" for e in found), code=2)
    read = profiles.load_profile(profile)
    levels = (f"; trust levels {', '.join(read.levels)}, each with its own ports and subnet"
              if read.levels else "")
    print(f"{read.label}: {len(read.values)} values, all valid for every runbook that takes them{levels}")
