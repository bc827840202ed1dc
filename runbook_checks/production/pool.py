"""A builder pool behind one front door (production.frontdoor): the builders' state as the
front door sees them, and draining one for maintenance (it finishes the builds it runs
and takes no new ones: its teams hash to the next builder on the ring) and putting it
back. Through HAProxy's admin socket, on the host itself; a drained builder stays
drained across the front door's reloads (its server-state file).

`python -m runbook_checks.production.pool status|drain NAME|ready NAME|slots N` is
what `invoke pool.*` (and the scaling benchmark) runs inside a rehearsal host."""

from __future__ import annotations

import argparse
import csv
import io
import json
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from ..core import files
from ..core.clock import wait_until
from ..core.errors import AccessError
from ..core.layout import Layout
from . import frontdoor

BACKEND = "calls"  # the door tier's backend: one server per builder


def admin(layout: Layout, command: str) -> str:
    """One command on the front door's admin socket, its answer."""
    path = f"{frontdoor.run_dir(layout)}/admin.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise AccessError(f"the front door's admin socket {path} does not answer ({exc.strerror or exc})",
                          f"is the front door running? systemctl status {layout.unit('frontdoor')}") from None
    return b"".join(chunks).decode()


def _state(status: str) -> str:
    """HAProxy's status of a server without health checks ("no check": it takes builds)."""
    for state in ("MAINT", "DRAIN", "DOWN"):
        if status.startswith(state):
            return state
    return "UP"


def builders(layout: Layout) -> list[dict]:
    """Each builder behind the front door: its state (UP, DRAIN, MAINT), the builds it runs
    now, the ones queued for it, and the builds it has taken since the front door started."""
    rows = csv.DictReader(io.StringIO(admin(layout, "show stat").lstrip("# ")))
    return [{"builder": r["svname"], "state": _state(r["status"]), "running": int(r["scur"] or 0),
             "queued": int(r["qcur"] or 0), "taken": int(r["stot"] or 0)}
            for r in rows if r["pxname"] == BACKEND and r["svname"] not in ("FRONTEND", "BACKEND")]


def _find(layout: Layout, name: str) -> dict:
    rows = builders(layout)
    for row in rows:
        if name in (row["builder"], row["builder"].removeprefix("buildkit-")):
            return row
    raise AccessError(f"no builder {name!r} behind the front door of {layout.name}",
                      f"name one of: {', '.join(r['builder'] for r in rows)} (invoke pool.status)")


def _set(layout: Layout, name: str, state: str) -> None:
    answer = admin(layout, f"set server {BACKEND}/{name} state {state}").strip()
    if answer:
        raise AccessError(f"the front door refused to set {name} to {state}: {answer}",
                          f"read journalctl -u {layout.unit('frontdoor')}")
    # kept for reloads and restarts (the configuration's load-server-state-from-file)
    files.atomic_write(Path(frontdoor.state_file(layout)), admin(layout, f"show servers state {BACKEND}"), 0o600)


def drain(layout: Layout, name: str, timeout: float = 3600, progress: Callable[[str], None] = lambda m: None) -> dict:
    """Take no new builds on `name` (its teams go to the next builder on the ring), then
    wait until the builds it runs and the ones queued for it have finished."""
    row = _find(layout, name)
    name = row["builder"]
    serving = [r["builder"] for r in builders(layout) if r["state"] == "UP" and r["builder"] != name]
    if row["state"] == "UP" and not serving:
        raise AccessError(f"draining {name} would leave no builder to take new builds",
                          "put another builder back first: invoke pool.ready NAME")
    running = row["running"] + row["queued"]
    _set(layout, name, "drain")
    progress(f"{name} drained: no new builds; {running} running or queued to finish")
    last = [time.monotonic()]

    def idle() -> bool:
        now = _find(layout, name)
        if time.monotonic() - last[0] >= 10:
            progress(f"{name}: {now['running']} running, {now['queued']} queued")
            last[0] = time.monotonic()
        return now["running"] + now["queued"] == 0

    seconds = wait_until(idle, timeout, f"the builds on {name} to finish",
                         "wait longer (--timeout), or find them: invoke report.audit --since 1h", AccessError, 0.5)
    return {"builder": name, "state": "DRAIN", "finished": running, "seconds": seconds,
            "serving": serving}


def ready(layout: Layout, name: str) -> dict:
    """Put a drained builder back on the ring: its teams come back to it (and its cache)."""
    name = _find(layout, name)["builder"]
    _set(layout, name, "ready")
    return _find(layout, name)


def slots(layout: Layout, count: str) -> list[dict]:
    """Every builder's build slots (its server's maxconn) set to `count` in the running
    front door, 0: no queue; until its next reload, which reads the configuration's
    again (the scaling benchmark's queue blocks)."""
    if not count.isdigit():
        raise AccessError(f"slots {count!r} is not a number of builds", "give 0 (no queue) or more")
    for row in builders(layout):
        answer = admin(layout, f"set maxconn server {BACKEND}/{row['builder']} {count}").strip()
        if answer:
            raise AccessError(f"the front door refused maxconn {count} for {row['builder']}: {answer}",
                              f"read journalctl -u {layout.unit('frontdoor')}")
    return builders(layout)


def run(host, command: str, target: str = "", timeout: float = 3600,
        progress: Callable[[str], None] = lambda m: None) -> dict | list:
    """status, drain BUILDER, ready BUILDER or slots COUNT on this machine's front door
    (host None), or inside a rehearsal host's."""
    from ..core import layout as layout_mod
    from ..core.paths import PROJECT_ROOT
    from . import hosts

    if host is None:
        layout = layout_mod.production("/")
        return {"status": lambda: builders(layout), "drain": lambda: drain(layout, target, timeout, progress),
                "ready": lambda: ready(layout, target), "slots": lambda: slots(layout, target)}[command]()
    argv = [sys.executable, "-m", __name__, command, *([target] if target else []), "--timeout", str(timeout)]
    proc = hosts.run_in(host, argv, cwd=str(PROJECT_ROOT), check=False, timeout=timeout + 60)
    for line in proc.stderr.splitlines():
        progress(line)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise AccessError(f"pool {command} failed in {host.name}: {proc.stderr.strip()[-1500:]}",
                          f"look inside: invoke host.shell {host.name}") from None
    if proc.returncode:
        raise AccessError(out["problem"], out["fix"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runbook_checks.production.pool")
    parser.add_argument("command", choices=("status", "drain", "ready", "slots"))
    parser.add_argument("target", nargs="?", default="", help="the builder (drain, ready), or a count (slots)")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    try:
        if args.command != "status" and not args.target:
            raise AccessError(f"{args.command} needs the builder's name", "see them: invoke pool.status")
        out = run(None, args.command, args.target, args.timeout, lambda m: print(m, file=sys.stderr, flush=True))
    except AccessError as exc:
        print(json.dumps({"problem": exc.problem, "fix": exc.fix}))
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
