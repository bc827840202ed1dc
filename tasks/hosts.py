"""`invoke host.*`: rehearsal hosts, Debian booted with systemd-nspawn, systemd as PID 1."""

from __future__ import annotations

import os

from invoke import task

from runbook_checks.production import hosts

from ._kit import console, refusals


@task(positional=["name"], help={"name": "the host's name: 1 to 11 lowercase letters, digits and -"})
@refusals
def up(c, name):
    """Boot a rehearsal host (made the first time: debootstrap, cached), systemd as PID 1.

    Prints its address; `invoke runbook NAME --profile production --host HOST` runs a
    runbook there."""
    host, changed = hosts.up(name, progress=lambda m: console().print(m, highlight=False))
    verb = "is up" if changed else "was already up"
    console().print(f"{host.name} {verb}: systemd {hosts.state(host)}, address {host.address}"
                    f" (this side: {host.gateway} on {host.interface})", highlight=False)


@task(positional=["name"], help={"name": "the host", "purge": "also remove its root filesystem and records"})
@refusals
def down(c, name, purge=False):
    """Power a rehearsal host off; --purge removes it too."""
    for line in hosts.down(name, purge):
        print(line)


@task(name="list")
@refusals
def list_(c):
    """List the rehearsal hosts: name, state, address."""
    from rich.table import Table

    table = Table(title=f"rehearsal hosts in {hosts.hosts_dir()}", title_justify="left")
    for col in ("host", "state", "address", "created"):
        table.add_column(col)
    for host in hosts.every():
        table.add_row(host.name, hosts.state(host), host.address, host.created)
    console().print(table)


@task(positional=["name"], help={"name": "the host"})
@refusals
def shell(c, name):
    """Open a login shell inside a rehearsal host."""
    argv = hosts.shell(name)
    os.execvp(argv[0], argv)
