"""Running buildkitd on what is on disk: which manager (systemd where it is PID 1, else
supervisord), the service definition (units or supervisord.conf with the programs beside
buildkitd), start / restart / roll back, and readiness."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import textwrap
import time
from pathlib import Path

from ..core import files
from ..core.errors import ConfigError, ServiceError
from ..core.layout import Layout
from ..core.results import Outcome
from .install import RUNC_PATH
from .programs import Program, check_ports_free, daemon_environment, render_sections
from .supervisor import Supervisor
from . import systemd
from .systemd import Limits, Systemd, choose_manager, render_units, verify_rendered_units


def manager_for(layout: Layout, requested: str = "auto") -> Supervisor | Systemd:
    return Systemd(layout) if choose_manager(requested) == "systemd" else Supervisor(layout)


# --------------------------------------------------------------------------------------
# supervisord.conf
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


def environment_on_disk(layout: Layout) -> dict[str, str]:
    """The environment buildkitd runs with, read from its service definition on disk:
    supervisord.conf's `environment=` of [program:buildkitd], else the service unit's
    `Environment=` lines; {} when there is neither."""
    import configparser
    import shlex

    from supervisor.datatypes import dict_of_key_value_pairs

    conf, unit = files.read_text(layout.supervisor_conf), files.read_text(layout.unit_dir / layout.unit())
    if conf is not None:
        parser = configparser.RawConfigParser()
        parser.read_string(conf)
        return dict_of_key_value_pairs(parser.get("program:buildkitd", "environment", fallback=""))
    found: dict[str, str] = {}
    for line in (unit or "").splitlines():
        if line.startswith("Environment="):
            found.update(item.split("=", 1) for item in shlex.split(line[len("Environment="):]) if "=" in item)
    return found


# --------------------------------------------------------------------------------------
# readiness, errors, ports
# --------------------------------------------------------------------------------------
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


_HANDED: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, below the kernel's ephemeral range: a port from that
    range can be taken as the source port of some outgoing connection before the server
    it is for binds it (seen in CI: versitygw's "bind: address already in use"). Never
    the same port twice in one process."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(500):
        port = random.randint(20000, max(20001, low - 1))
        if port in _HANDED:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED.add(port)
        return port
    raise ServiceError(f"no free port on 127.0.0.1 between 20000 and {low} after 500 tries",
                       "stop what holds them, or set the *_port parameters yourself")


def log_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------
def write_service_definition(layout: Layout, manager_name: str, limits: Limits, tcp_address: str,
                             apply: bool, programs: list[Program] | tuple = (),
                             daemon_env: dict[str, str] | None = None) -> Outcome:
    """supervisord.conf with the `programs` beside buildkitd (and their config files), or
    the service and socket units verified by systemd-analyze."""
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
        units = render_units(layout, limits, tcp_address, layout.on_host(layout.bin_dir))
        wanted = {layout.unit_dir / n: t for n, t in units.items()}
        verify_rendered_units(layout, wanted)
    if programs and any(files.read_text(p) != t for p, t in wanted.items()):
        check_ports_free(programs, manager_for(layout, manager_name))
    outcome = files.converge(wanted, apply, layout.backup_dir, service_manager=manager_name)
    group = systemd.ensure_group(apply, layout.group) if manager_name == "systemd" and str(layout.state_dir) == "/" \
        else ""
    if group:  # the socket's group (the socket unit's SocketGroup)
        outcome.status = "changed"
        outcome.message = f"{outcome.message}; {group}"
    if apply:
        for prog in programs:
            for d in prog.dirs:
                d.mkdir(parents=True, exist_ok=True)
    return outcome


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
    watched = (layout.config_path, layout.buildkitd, layout.supervisor_conf, layout.unit_dir / layout.unit(),
               layout.unit_dir / layout.unit(kind="socket"), layout.unit_dir / layout.slice)
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
