"""`invoke plugins.restore`: put quarantined Docker CLI plugins back."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import task

from runbook_checks.core import layout, profiles
from runbook_checks.core.errors import ParameterError
from runbook_checks.core.params import check_path
from runbook_checks.plugins import quarantine

from ._kit import refusals


def lab_quarantine_dir() -> Path:
    values = profiles.load_profile("lab").values
    lab = layout.for_params({"profile": "lab", "state_dir": values.get("state_dir") or ""})
    return quarantine.resolve_dir(values.get("quarantine_dir") or "", lab)


@task(positional=["name"], help={
    "name": "the plugin to put back (for example buildx), --all for every quarantined plugin,"
            " or --list to show what the quarantine holds",
    "quarantine_dir": "the quarantine to restore from (an absolute path); default: the lab profile's quarantine_dir",
})
@refusals
def restore(c, name, quarantine_dir=""):
    """Put quarantined Docker CLI plugins back, byte-identical, with their mode.

    As root, their owner too. A file that is in the original place again is never replaced:
    the restore of that plugin fails and says so."""
    if name in ("-h", "--help"):
        return c.run(f"{sys.executable} -m invoke --help plugins.restore", pty=False)
    if quarantine_dir:
        try:
            check_path(quarantine_dir, "quarantine")
        except ParameterError as exc:
            raise ParameterError(f"--quarantine-dir: {exc.problem}", exc.fix) from None
    directory = Path(quarantine_dir) if quarantine_dir else lab_quarantine_dir()
    if name in ("--list", "-l", "list"):
        lines = quarantine.listing(directory) or [f"the quarantine {directory} is empty"]
    elif name == "--all":
        lines = quarantine.restore(directory, everything=True)
    else:
        lines = quarantine.restore(directory, name)
    for line in lines:
        print(line)
