"""Running buildkitd: systemd units for production; one supervisord per state
directory where systemd is not PID 1 (pid file, log file, restart on crash, clean stop).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files
from .errors import ConfigError, ServiceError
from .layout import Layout
from .programs import Program, check_ports_free, daemon_environment, render_sections
from .results import Outcome

RUNC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def systemd_is_pid1() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def choose_manager(requested: str) -> str:
    if requested == "auto":
        return "systemd" if systemd_is_pid1() else "supervisor"
    return requested


# --------------------------------------------------------------------------------------
# systemd (production)
# --------------------------------------------------------------------------------------
@dataclass
class Limits:
    cpu_quota: str = ""
    memory_max: str = ""
    io_weight: int = 100
    tasks_max: int = 4096

    def cgroup(self) -> dict[str, str]:
        """What these properties look like in the daemon's cgroup (v2) under systemd."""
        expected = {"io.weight": f"default {self.io_weight}", "pids.max": str(self.tasks_max)}
        if self.cpu_quota:
            expected["cpu.max"] = f"{int(self.cpu_quota.rstrip('%')) * 1000} 100000"
        if self.memory_max:
            expected["memory.max"] = self.memory_max
        return expected


def render_units(layout: Layout, limits: Limits, tcp_address: str = "", prefix: Path | None = None) -> dict[str, str]:
    """buildkit.socket + buildkit.service with socket activation and resource control.

    Paths are the host's (`prefix` is where the binaries live on the real host)."""
    exe = (prefix or Path("/usr/local/bin")) / "buildkitd"
    config = "/" + str(layout.config_path.relative_to(layout.state_dir)) if layout.style == "fhs" else str(layout.config_path)
    tcp = f" --addr {tcp_address}" if tcp_address else ""
    control = [f"IOWeight={limits.io_weight}", f"TasksMax={limits.tasks_max}"]
    if limits.cpu_quota:
        control.insert(0, f"CPUQuota={limits.cpu_quota}")
    if limits.memory_max:
        control.insert(0, f"MemoryMax={limits.memory_max}")
    service = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: install).
        [Unit]
        Description=BuildKit daemon (standalone)
        Documentation=https://github.com/moby/buildkit
        Requires=buildkit.socket
        After=buildkit.socket network-online.target
        Wants=network-online.target

        [Service]
        Type=notify
        Environment=PATH={RUNC_PATH}
        ExecStart={exe} --config {config} --addr fd://{tcp}
        Restart=on-failure
        RestartSec=2s
        TimeoutStopSec=60s
        KillMode=mixed
        Delegate=yes
        LimitNOFILE=1048576
        OOMScoreAdjust=-500
        """) + "\n".join(control) + textwrap.dedent("""

        [Install]
        WantedBy=multi-user.target
        """)
    sock = textwrap.dedent("""\
        # Managed by buildkit-ops (runbook: install).
        [Unit]
        Description=BuildKit daemon socket

        [Socket]
        ListenStream=/run/buildkit/buildkitd.sock
        SocketMode=0660
        SocketUser=root
        SocketGroup=root
        DirectoryMode=0750

        [Install]
        WantedBy=sockets.target
        """)
    return {"buildkit.service": service, "buildkit.socket": sock}


def verify_units(unit_dir: Path, names: list[str]) -> None:
    """`systemd-analyze verify`; any warning about our units counts as a failure (it
    exits 0 on some invalid values)."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        raise ServiceError("systemd-analyze is not installed, so the units cannot be verified",
                           "apt-get install systemd (the units are written only after they verify)")
    paths = [str(unit_dir / n) for n in names]
    proc = subprocess.run([tool, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=120)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines()
            if any(n in line for n in names) or proc.returncode]
    if proc.returncode or ours:
        raise ServiceError("systemd-analyze verify rejected the units:\n" + "\n".join(ours or [proc.stderr]),
                           "fix the resource-control parameters named above (cpu_quota, memory_max, io_weight, tasks_max)")


# --------------------------------------------------------------------------------------
# supervisord (lab, ci, any host without systemd as PID 1)
# --------------------------------------------------------------------------------------
def render_supervisor_conf(layout: Layout, programs: list[Program] | tuple = (),
                           daemon_env: dict[str, str] | None = None) -> str:
    """One supervisord per state directory: buildkitd, and beside it the `programs`
    (runbook_checks.programs: the kit's exporter, the local registry, the S3 server...).
    buildkitd's environment gets what the programs ask for (or `daemon_env`)."""
    s = layout
    env = {"PATH": f"{s.bin_dir}:{RUNC_PATH}", **(daemon_environment(programs) if daemon_env is None else daemon_env)}
    environment = ",".join(f'{k}="{v}"' for k, v in env.items())
    return textwrap.dedent(f"""\
        ; Managed by buildkit-ops (runbook: install). One supervisord per state directory.
        [unix_http_server]
        file={s.run_dir}/supervisor.sock
        chmod=0700

        [supervisord]
        logfile={s.log_dir}/supervisord.log
        pidfile={s.run_dir}/supervisord.pid
        directory={s.state_dir}
        childlogdir={s.log_dir}

        [rpcinterface:supervisor]
        supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

        [supervisorctl]
        serverurl=unix://{s.run_dir}/supervisor.sock

        [program:buildkitd]
        command={s.buildkitd} --config {s.config_path}
        environment={environment}
        autostart=true
        autorestart=true
        startsecs=3
        startretries=2
        stopsignal=TERM
        stopwaitsecs=30
        stopasgroup=true
        killasgroup=true
        redirect_stderr=true
        stdout_logfile={s.log_path}
        stdout_logfile_maxbytes=20MB
        stdout_logfile_backups=3
        """) + render_sections(programs)


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

    def _rpc(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def supervisord_up(self) -> bool:
        if not self.sock.exists():
            return False
        try:
            return self._rpc().getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def info(self) -> dict[str, Any]:
        """{state, pid, start} of buildkitd; state is STOPPED when supervisord is down."""
        if not self.supervisord_up():
            return {"state": "STOPPED", "pid": 0, "start": 0, "spawnerr": ""}
        i = self._rpc().getProcessInfo("buildkitd")
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
            _wait(self.supervisord_up, 20, "supervisord socket")
            return
        if self.info()["state"] not in ("RUNNING", "STARTING"):
            try:
                self._rpc().startProcess("buildkitd", False)
            except xmlrpc.client.Fault as exc:
                if "ALREADY_STARTED" not in exc.faultString:
                    raise ServiceError(f"supervisord could not start buildkitd: {exc.faultString}",
                                       f"read {self.layout.log_path}") from None

    def reload_conf(self) -> None:
        """Pick up a changed supervisord.conf (after an install) without stopping supervisord."""
        if self.supervisord_up():
            rpc = self._rpc()
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
        rpc = self._rpc()
        try:
            rpc.stopProcess("buildkitd")
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString:
                raise
        self.start()

    def stop(self) -> None:
        """Stop buildkitd and this state directory's supervisord."""
        if not self.supervisord_up():
            return
        pidfile = self.layout.run_dir / "supervisord.pid"
        pid = int(pidfile.read_text().strip()) if pidfile.exists() else 0
        self._rpc().shutdown()
        if pid:
            _wait(lambda: not _alive(pid), 60, "supervisord to exit")


class Systemd:
    """systemctl on a host where systemd is PID 1."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def _ctl(self, *args: str) -> subprocess.CompletedProcess:
        # checked on use, not on creation, so the failure is a recorded step of the runbook
        if not systemd_is_pid1():
            raise ServiceError("systemd is not PID 1 on this host, so buildkit.service cannot run here",
                               "use --set service_manager=supervisor (or auto) on hosts without systemd")
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)

    def info(self) -> dict[str, Any]:
        out = self._ctl("show", "buildkit.service", "-p", "ActiveState,MainPID,ExecMainStartTimestampMonotonic").stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        state = {"active": "RUNNING", "activating": "STARTING"}.get(props.get("ActiveState", ""), "STOPPED")
        boot = time.time() - time.monotonic()
        start = boot + int(props.get("ExecMainStartTimestampMonotonic", "0") or 0) / 1e6
        return {"state": state, "pid": int(props.get("MainPID", "0") or 0), "start": start, "spawnerr": ""}

    def log_lines(self) -> list[str]:
        """The running buildkitd's lines in the journal (its MainPID's messages)."""
        pid = self.info()["pid"]
        out = subprocess.run(["journalctl", "-u", "buildkit.service", f"_PID={pid}", "-o", "cat", "--no-pager",
                              "-n", "5000"], capture_output=True, text=True, timeout=60)
        return [ln for ln in out.stdout.splitlines() if ln.strip()]

    def start(self) -> None:
        self._ctl("daemon-reload")
        self._ctl("enable", "--now", "buildkit.socket")
        self._ctl("start", "buildkit.service")

    def reload_conf(self) -> None:
        self._ctl("daemon-reload")

    def restart(self) -> None:
        self._ctl("restart", "buildkit.service")

    def stop(self) -> None:
        self._ctl("stop", "buildkit.service", "buildkit.socket")


def manager_for(layout: Layout, requested: str = "auto") -> Supervisor | Systemd:
    return Systemd(layout) if choose_manager(requested) == "systemd" else Supervisor(layout)


# --------------------------------------------------------------------------------------
# readiness, errors, ports
# --------------------------------------------------------------------------------------
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


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}", "read the logs named in the status output")


def daemon_answers(layout: Layout) -> bool:
    if not layout.socket_path.exists() or not layout.buildctl.exists():
        return False
    proc = subprocess.run([str(layout.buildctl), "--addr", layout.address, "--timeout", "2", "debug", "workers"],
                          capture_output=True, text=True, timeout=30)
    return proc.returncode == 0


def daemon_error(log_path: Path, offset: int) -> str:
    """The daemon's own words about why it stopped: the last error/fatal line written
    since `offset`, else the last line."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return f"(no log at {log_path})"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
            if entry.get("level") in ("fatal", "error", "panic"):
                return entry.get("msg", line)
        except ValueError:
            if "level=fatal" in line or "level=error" in line or line.startswith("buildkitd:"):
                return line
    return lines[-1] if lines else "(the daemon wrote nothing)"


def wait_ready(layout: Layout, manager, timeout: float) -> None:
    """Until buildctl reaches the daemon; fail early when the supervisor gave up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon_answers(layout):
            return
        if manager.info()["state"] == "FATAL":  # the supervisor gave up retrying
            break
        time.sleep(0.3)
    raise ServiceError(f"buildkitd did not answer on {layout.address} within {timeout:.0f}s", f"read {layout.log_path}")


def check_debug_port(layout: Layout, manager, port: int) -> Outcome:
    """Fail before anything is written if 127.0.0.1:port is taken by someone else."""
    from .config import read_debug_port

    if manager is None:
        return Outcome.skipped(f"no daemon runs from a tree rendered under {layout.state_dir}")
    if manager.info()["state"] in ("RUNNING", "STARTING") and read_debug_port(layout.config_path) == port:
        return Outcome.ok(f"127.0.0.1:{port} is served by this buildkitd", debug_address=f"127.0.0.1:{port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ServiceError(f"port {port} on 127.0.0.1 is already in use by another process",
                               "stop that process, or choose another port: --set debug_port=N (0 picks a free one)") from None
    return Outcome.ok(f"127.0.0.1:{port} is free", debug_address=f"127.0.0.1:{port}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------
def runs_dir() -> Path:
    from .runner import runs_dir as where

    return where()


def host_bin_dir(layout: Layout) -> Path:
    """Where the binaries are on the real host (an FHS tree may be rendered elsewhere)."""
    return Path("/") / layout.bin_dir.relative_to(layout.state_dir) if layout.style == "fhs" else layout.bin_dir


def verify_rendered_units(layout: Layout, units: dict[Path, str]) -> None:
    """Verify units in a scratch directory before anything is written.

    systemd-analyze checks ExecStart against this host's paths; when the units are
    rendered into a tree (state_dir other than /) or before the binaries exist, the
    scratch copy points at the tree's binary, or /bin/true: this step verifies unit
    syntax and values, the binaries step owns the binary."""
    host_exe = str(host_bin_dir(layout) / "buildkitd")
    exe = next((str(p) for p in (Path(host_exe), layout.buildkitd) if p.exists()), "/bin/true")
    with tempfile.TemporaryDirectory() as scratch:
        for path, text in units.items():
            (Path(scratch) / path.name).write_text(text.replace(f"ExecStart={host_exe} ", f"ExecStart={exe} "))
        verify_units(Path(scratch), [p.name for p in units])


def write_service_definition(layout: Layout, manager_name: str, limits: Limits, tcp_address: str,
                             apply: bool, programs: list[Program] | tuple = (),
                             daemon_env: dict[str, str] | None = None) -> Outcome:
    """supervisord.conf with the `programs` beside buildkitd (and their config files), or
    buildkit.service + buildkit.socket verified by systemd-analyze."""
    if manager_name == "supervisor":
        wanted = {layout.supervisor_conf: render_supervisor_conf(layout, programs, daemon_env)}
        for prog in programs:
            wanted.update(prog.files)
    elif programs:
        names = ", ".join(p.name for p in programs)
        raise ServiceError(f"{names}: these services run under supervisord only (the lab stack), not as systemd units",
                           "set their *_port parameters to 0 for systemd, and point the kit at the organisation's"
                           " registry, object store and monitoring")
    else:
        units = render_units(layout, limits, tcp_address, host_bin_dir(layout))
        wanted = {layout.unit_dir / n: t for n, t in units.items()}
        verify_rendered_units(layout, wanted)
    stale = {p: t for p, t in wanted.items() if files.read_text(p) != t}
    if not stale:
        return Outcome.ok(f"{', '.join(str(p) for p in wanted)} up to date", service_manager=manager_name)
    diff = "".join(files.unified_diff(files.read_text(p), t, p) for p, t in stale.items())
    if programs:
        check_ports_free(programs, manager_for(layout, manager_name))
    if not apply:
        files.writable_dir(next(iter(stale)).parent)
        return Outcome.changed(f"would write {', '.join(str(p) for p in stale)}", diff, service_manager=manager_name)
    for path, text in stale.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        files.backup(path, layout.backup_dir)
        files.atomic_write(path, text)
    for prog in programs:
        for d in prog.dirs:
            d.mkdir(parents=True, exist_ok=True)
    return Outcome.changed(f"wrote {', '.join(str(p) for p in stale)}", diff, service_manager=manager_name)


def _settle(paths: list[Path], margin: float = 0.05) -> None:
    """Start a process only `margin` seconds after the newest of its input files was
    written, so the start time read back from /proc (10 ms ticks) is clearly later than
    the files' mtimes and the next run does not restart it again."""
    newest = max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)
    wait = newest + margin - time.time()
    if wait > 0:
        time.sleep(wait)


def converge_daemon(layout: Layout, manager, apply: bool, rollback_to: str = "", timeout: float = 60) -> Outcome:
    """The daemon runs on what is on disk: start it if stopped; restart it if its config,
    binary or service definition is newer than the process. With `rollback_to` (the
    backup this run's config step made), a daemon that will not come up on the new
    config gets that previous file back, is brought up on it, and the step fails with
    the daemon's own error. Without it (nothing was rewritten) there is nothing to roll
    back to, and the step fails with the daemon's error."""
    if not layout.config_path.exists():
        return Outcome.skipped(f"no {layout.config_path} yet (the configure runbook writes it)")
    if manager is None:
        return Outcome.skipped(f"units rendered under {layout.state_dir}, which the host's systemd does not read;"
                               " install them on the build server (state_dir=/) to run the daemon")
    info = manager.info()
    running = info["state"] in ("RUNNING", "STARTING")
    watched = (layout.config_path, layout.buildkitd, layout.supervisor_conf,
               layout.unit_dir / "buildkit.service", layout.unit_dir / "buildkit.socket")
    inputs = [p for p in watched if p.exists()]
    newer = [p.name for p in inputs if p.stat().st_mtime > info["start"]]
    if running and not newer and daemon_answers(layout):
        return Outcome.ok(f"buildkitd pid {info['pid']} serves {layout.address} on the current files",
                          address=layout.address, pid=info["pid"])
    action = "restart" if running else "start"
    why = f" ({', '.join(newer)} changed)" if running and newer else ""
    if not apply:
        return Outcome.changed(f"would {action} buildkitd{why}")
    offset = log_offset(layout.log_path)
    manager.reload_conf()
    _settle(inputs)
    (manager.restart if running else manager.start)()
    try:
        wait_ready(layout, manager, timeout)
    except ServiceError:
        error = daemon_error(layout.log_path, offset)
        previous = Path(rollback_to) if rollback_to else None
        if previous is None or previous.read_text() == layout.config_path.read_text():
            raise ServiceError(f"buildkitd did not come up: {error}", f"read {layout.log_path}") from None
        rejected = layout.config_path.with_name(layout.config_path.name + ".rejected")
        files.atomic_write(rejected, layout.config_path.read_text())
        files.atomic_write(layout.config_path, previous.read_text())
        _settle(inputs)
        manager.restart()
        wait_ready(layout, manager, timeout)
        raise ConfigError(
            f"buildkitd refused the new config: {error}. Restored the previous file from {previous};"
            f" the daemon is serving on it again (the refused file is kept as {rejected})",
            "fix the parameter behind the daemon's error and apply again") from None
    info = manager.info()
    return Outcome.changed(f"buildkitd {action}ed{why}, pid {info['pid']}, serving {layout.address}",
                           address=layout.address, pid=info["pid"])
