"""buildkitd under systemd (production): NAME.socket + NAME.service (buildkit, or
buildkit-LEVEL for one of several builders on a host) with socket activation and resource control, checked by `systemd-analyze verify` before they are
written, and `systemctl` on a host where systemd is PID 1."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ServiceError
from ..core.layout import Layout
from .install import RUNC_PATH




def systemd_is_pid1() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def choose_manager(requested: str) -> str:
    """auto: systemd where it is PID 1, else supervisord."""
    if requested == "auto":
        return "systemd" if systemd_is_pid1() else "supervisor"
    return requested


@dataclass
class Limits:
    cpu_quota: str = ""
    memory_max: str = ""
    io_weight: int = 100
    tasks_max: int = 4096

    def configured(self) -> dict[str, str]:
        """The limits as daemon.cgroups reads them back: memory in bytes, CPU as a
        percentage, tasks and I/O weight as numbers ("" or absent: not set)."""
        out = {"tasks_max": str(self.tasks_max), "io_weight": str(self.io_weight)}
        if self.cpu_quota:
            out["cpu_quota"] = self.cpu_quota
        if self.memory_max:
            out["memory_max"] = self.memory_max
        return out


def render_units(layout: Layout, limits: Limits, tcp_address: str = "", prefix: Path | None = None) -> dict[str, str]:
    """NAME.socket + NAME.service with socket activation, in NAME.slice, which carries the
    limits: buildkitd puts its build containers in that slice too (defaultCgroupParent),
    so the limits bound the builds, not only the daemon.

    Paths are the host's (`prefix` is where the binaries live on the real host)."""
    exe = (prefix or Path("/usr/local/bin")) / "buildkitd"
    config = layout.on_host(layout.config_path)
    tcp = f" --addr {tcp_address}" if tcp_address else ""
    control = [f"IOWeight={limits.io_weight}", f"TasksMax={limits.tasks_max}"]
    if limits.cpu_quota:
        control.insert(0, f"CPUQuota={limits.cpu_quota}")
    if limits.memory_max:
        control.insert(0, f"MemoryMax={limits.memory_max}")
    service = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: install).
        [Unit]
        Description=BuildKit daemon (standalone, {layout.name})
        Documentation=https://github.com/moby/buildkit
        Requires={layout.unit(kind="socket")}
        After={layout.unit(kind="socket")} network-online.target
        Wants=network-online.target

        [Service]
        Slice={layout.slice}
        Type=notify
        Environment=PATH={RUNC_PATH}
        ExecStart={exe} --config {config} --addr fd://{tcp}
        Restart=on-failure
        RestartSec=2s
        # buildkitd exits 1 on SIGTERM ("got SIGTERM/SIGINT, forcing shutdown"): a stop is
        # not a failure, and an exit 1 nobody asked for is still restarted
        SuccessExitStatus=1
        RestartForceExitStatus=1
        TimeoutStopSec=60s
        KillMode=mixed
        Delegate=yes
        LimitNOFILE=1048576
        OOMScoreAdjust=-500

        [Install]
        WantedBy=multi-user.target
        """)
    builds = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: install).
        [Unit]
        Description=BuildKit builder {layout.name}: the daemon and its build containers
        Before=slices.target

        [Slice]
        """) + "\n".join(control) + "\n"
    sock = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: install).
        [Unit]
        Description=BuildKit daemon socket ({layout.name})

        [Socket]
        ListenStream={layout.on_host(layout.socket_path)}
        SocketMode=0660
        SocketUser=root
        SocketGroup={layout.group}
        DirectoryMode=0755

        [Install]
        WantedBy=sockets.target
        """)
    return {layout.unit(): service, layout.unit(kind="socket"): sock, layout.slice: builds}


RESOURCE_FIX = "fix the resource-control parameters named above (cpu_quota, memory_max, io_weight, tasks_max)"


def verify_units(unit_dir: Path, names: list[str], fix: str = RESOURCE_FIX) -> None:
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
                           fix)


def systemctl(*args: str) -> subprocess.CompletedProcess:
    """systemctl, on a host where systemd is PID 1 (checked on use, so the failure is a
    recorded step of the runbook)."""
    if not systemd_is_pid1():
        raise ServiceError("systemd is not PID 1 on this host, so the kit's units cannot run here",
                           "use --set service_manager=supervisor (or auto) on hosts without systemd, or a rehearsal"
                           " host: invoke host.up NAME")
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)


def unit_info(unit: str) -> dict[str, Any]:
    """{"state": RUNNING | STARTING | STOPPED, "pid", "start" (epoch), "spawnerr"} of a unit."""
    out = systemctl("show", unit, "-p", "ActiveState,MainPID,ExecMainStartTimestampMonotonic").stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    state = {"active": "RUNNING", "activating": "STARTING", "reloading": "RUNNING"}.get(props.get("ActiveState", ""),
                                                                                      "STOPPED")
    boot = time.time() - time.monotonic()
    start = boot + int(props.get("ExecMainStartTimestampMonotonic", "0") or 0) / 1e6
    return {"state": state, "pid": int(props.get("MainPID", "0") or 0), "start": start, "spawnerr": ""}


class Systemd:
    """The builder's service and socket units (layout.unit()), by systemctl."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def _ctl(self, *args: str) -> subprocess.CompletedProcess:
        return systemctl(*args)

    def info(self) -> dict[str, Any]:
        return unit_info(self.layout.unit())

    def log_lines(self) -> list[str]:
        """The running buildkitd's lines in the journal (its MainPID's messages)."""
        pid = self.info()["pid"]
        out = subprocess.run(["journalctl", "-u", self.layout.unit(), f"_PID={pid}", "-o", "cat", "--no-pager",
                              "-n", "5000"], capture_output=True, text=True, timeout=60)
        return [ln for ln in out.stdout.splitlines() if ln.strip()]

    def start(self) -> None:
        self._ctl("daemon-reload")
        self._ctl("enable", "--now", self.layout.unit(kind="socket"))
        self._ctl("start", self.layout.unit())

    def reload_conf(self) -> None:
        self._ctl("daemon-reload")

    def restart(self) -> None:
        # the socket too: its unit may have changed (mode, group), and only a socket
        # unit's restart makes the listening socket again
        self._ctl("stop", self.layout.unit(), self.layout.unit(kind="socket"))
        if self.layout.run_dir.is_dir():  # DirectoryMode= applies only when systemd creates it
            self.layout.run_dir.chmod(0o755)
        self._ctl("start", self.layout.unit(kind="socket"))
        self._ctl("start", self.layout.unit())

    def stop(self) -> None:
        self._ctl("stop", self.layout.unit(), self.layout.unit(kind="socket"))

    def stop_daemon(self) -> None:
        self.stop()


def verify_rendered_units(layout: Layout, units: dict[Path, str]) -> None:
    """Verify units in a scratch directory before anything is written.

    systemd-analyze checks ExecStart against this host's paths; when the units are
    rendered into a tree (state_dir other than /) or before the binaries exist, the
    scratch copy points at the tree's binary, or /bin/true: this step verifies unit
    syntax and values, the binaries step owns the binary."""
    host_exe = str(layout.on_host(layout.buildkitd))
    exe = next((str(p) for p in (Path(host_exe), layout.buildkitd) if p.exists()), "/bin/true")
    verify_units_text({p: t.replace(f"ExecStart={host_exe} ", f"ExecStart={exe} ") for p, t in units.items()})


def ensure_group(apply: bool, group: str) -> str:
    """The system group of buildkitd's socket: "" if it exists, else what was (or would
    be) done."""
    import grp

    try:
        grp.getgrnam(group)
        return ""
    except KeyError:
        pass
    if not apply:
        return f"would create the system group {group}"
    proc = subprocess.run(["groupadd", "--system", group], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise ServiceError(f"groupadd {group} failed: {proc.stderr.strip()}", f"create it by hand: groupadd --system {group}")
    return f"created the system group {group}"


def verify_units_text(units: dict[Path, str], fix: str = RESOURCE_FIX) -> None:
    """`systemd-analyze verify` on units not written yet (a scratch copy)."""
    with tempfile.TemporaryDirectory() as scratch:
        for path, text in units.items():
            (Path(scratch) / path.name).write_text(text)
        verify_units(Path(scratch), [p.name for p in units], fix)
