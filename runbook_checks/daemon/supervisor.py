"""buildkitd under supervisord: one supervisord per state directory (lab, ci, any host
without systemd as PID 1), controlled through its XML-RPC socket; the running daemon's
lines in the log file it shares with earlier runs."""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from ..core.clock import wait_until
from ..core.errors import ServiceError
from ..core.layout import Layout

LOGS = "read the logs named in the status output"


_LOG_TIME = re.compile(r'"time":\s*"([^"]+)"|time="([^"]+)"')


def _line_time(line: str) -> float | None:
    match = _LOG_TIME.search(line)
    if not match:
        return None
    try:
        return _dt.datetime.fromisoformat((match.group(1) or match.group(2)).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def current_process_lines(lines: list[str], since: float) -> list[str]:
    """What the process started at `since` wrote to a log shared with earlier ones: drop
    everything up to the last exit message ("buildkitd: <error>" and its Go stack; a
    running daemon has printed none), then lines stamped before `since` (the log's times
    are whole seconds)."""
    last_exit = max((i for i, ln in enumerate(lines) if ln.startswith("buildkitd: ")), default=-1)
    if last_exit >= 0:
        last_exit += 1
        while last_exit < len(lines) and not (lines[last_exit].startswith("{") or "level=" in lines[last_exit]):
            last_exit += 1
        lines = lines[last_exit:]
    first = next((i for i, ln in enumerate(lines) if (_line_time(ln) or since) >= int(since)), len(lines))
    return lines[first:]


def read_log_tail(path: Path, tail_bytes: int = 500_000) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - tail_bytes))
            return [ln for ln in fh.read().decode(errors="replace").splitlines()[1:] if ln.strip()]
    except FileNotFoundError:
        raise ServiceError(f"no log at {path}", "start the daemon with the configure runbook") from None


class Supervisor:
    """Control of one state directory's supervisord through its XML-RPC socket."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.sock = layout.run_dir / "supervisor.sock"

    def rpc(self) -> Any:
        """supervisord's XML-RPC interface (the `supervisor` namespace)."""
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def supervisord_up(self) -> bool:
        if not self.sock.exists():
            return False
        try:
            return self.rpc().getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def info(self) -> dict[str, Any]:
        """{state, pid, start} of buildkitd; state is STOPPED when supervisord is down."""
        if not self.supervisord_up():
            return {"state": "STOPPED", "pid": 0, "start": 0, "spawnerr": ""}
        i = self.rpc().getProcessInfo("buildkitd")
        start = process_start(i["pid"]) if i["pid"] else i["start"]
        return {"state": i["statename"], "pid": i["pid"], "start": start, "spawnerr": i["spawnerr"]}

    def log_lines(self) -> list[str]:
        """The running buildkitd's lines in the supervisor's log file."""
        return current_process_lines(read_log_tail(self.layout.log_path), self.info()["start"])

    def start(self) -> None:
        if not self.supervisord_up():
            for d in (self.layout.run_dir, self.layout.log_dir):
                d.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.layout.supervisor_conf)],
                                  capture_output=True, text=True, timeout=60)
            if proc.returncode:
                raise ServiceError(f"supervisord did not start: {proc.stderr.strip() or proc.stdout.strip()}",
                                   f"read {self.layout.log_dir}/supervisord.log")
            wait_until(self.supervisord_up, 20, "supervisord answering on its socket", LOGS, ServiceError, 0.2)
            return
        if self.info()["state"] not in ("RUNNING", "STARTING"):
            try:
                self.rpc().startProcess("buildkitd", False)
            except xmlrpc.client.Fault as exc:
                if "ALREADY_STARTED" not in exc.faultString:
                    raise ServiceError(f"supervisord could not start buildkitd: {exc.faultString}",
                                       f"read {self.layout.log_path}") from None

    def reload_conf(self) -> None:
        """Pick up a changed supervisord.conf (after an install) without stopping supervisord."""
        if self.supervisord_up():
            rpc = self.rpc()
            added, changed, removed = rpc.reloadConfig()[0]
            for name in changed + removed:
                try:
                    rpc.stopProcess(name)
                except xmlrpc.client.Fault:
                    pass
                rpc.removeProcessGroup(name)
            for name in changed + added:
                rpc.addProcessGroup(name)

    def restart(self) -> None:
        if not self.supervisord_up():
            return self.start()
        self.stop_program("buildkitd")
        self.start()

    def stop_program(self, name: str) -> None:
        """Stop one program and wait until it has stopped; one that is not running is
        already where it should be."""
        try:
            self.rpc().stopProcess(name)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString:
                raise ServiceError(f"supervisord could not stop {name}: {exc.faultString}",
                                   f"read {self.layout.log_dir}/supervisord.log") from None

    def stop_daemon(self) -> None:
        """Stop buildkitd only (the services beside it keep running)."""
        if self.supervisord_up():
            self.stop_program("buildkitd")

    def stop(self) -> None:
        """Stop buildkitd and this state directory's supervisord."""
        if not self.supervisord_up():
            return
        pidfile = self.layout.run_dir / "supervisord.pid"
        pid = int(pidfile.read_text().strip()) if pidfile.exists() else 0
        self.rpc().shutdown()
        if pid:
            wait_until(lambda: not _alive(pid), 60, "supervisord exiting", LOGS, ServiceError, 0.2)


def process_start(pid: int) -> float:
    """When a process started, as an epoch time with the kernel's 10 ms resolution
    (supervisord's own start time is whole seconds, too coarse to compare with mtimes)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
