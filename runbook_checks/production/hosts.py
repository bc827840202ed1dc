"""Rehearsal hosts: a Debian root filesystem (debootstrap, cached by its recipe outside the
checkout) booted with systemd-nspawn, systemd as PID 1, each with its own name and
address on a veth pair, so the production profile runs for real on this machine.

On a cgroup v1 host nspawn mounts the controllers read-only, so systemd inside creates
no controller cgroups for its units and runc cannot create the build containers'. The
recipe that makes both work (measured on this machine kind): boot with the keyring
syscalls allowed (`--system-call-filter=add_key keyctl request_key`, which runc needs to
join a session keyring), then, once booted, remount each controller read-write and have
systemd re-execute so it sees them. Units started after that get cgroups with their
limits in force.

Inside a host the kit is available read-only at its own path (the checkout and the
Python it runs on), and a per-host exchange directory carries run records, client
bundles and the BuildKit archive the production install uses (a host has no internet)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core import files
from ..core.errors import HostError
from ..core.paths import PROJECT_ROOT, cache_dir
from ..daemon.cgroups import CGROUP_ROOT
from ..daemon.install import cached_build

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# what a build server needs: systemd, the runtime for build steps and their own network (CNI
# plugins, iptables), the front door, the tools the kit's steps call (ip, ps, mount,
# logrotate), a static busybox for the kit's test images
PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "runc", "haproxy", "busybox-static", "procps",
            "ca-certificates", "logrotate", "containernetworking-plugins", "iptables",
            "libsqlite3-0")  # the operator's Python, bound in, links it (nbval's coverage imports sqlite3)
NAME = re.compile(r"[a-z][a-z0-9-]{0,10}")  # ve-NAME must fit the 15 bytes of an interface name
SUBNET = "10.213"
EXCHANGE = Path("/var/lib/buildkit-ops/exchange")  # inside a host; the operator's side is hosts_dir()/NAME/exchange
CGROUP_RECIPE = ("for c in /sys/fs/cgroup/*/; do case $(stat -f -c %T $c) in cgroupfs) mount -o remount,rw,bind $c;;"
                 " esac; done; systemctl daemon-reexec")


def hosts_dir() -> Path:
    """Where the hosts live: $BUILDKIT_OPS_HOSTS_DIR, else /var/lib/buildkit-ops/hosts."""
    return Path(os.environ.get("BUILDKIT_OPS_HOSTS_DIR") or "/var/lib/buildkit-ops/hosts")


@dataclass
class Host:
    name: str
    index: int
    created: str
    rootfs_key: str

    @property
    def folder(self) -> Path:
        return hosts_dir() / self.name

    @property
    def rootfs(self) -> Path:
        return self.folder / "rootfs"

    @property
    def exchange(self) -> Path:
        """The operator's side of EXCHANGE."""
        return self.folder / "exchange"

    @property
    def address(self) -> str:
        """The host's address, as the operator's side reaches it."""
        return f"{SUBNET}.{self.index}.2"

    @property
    def gateway(self) -> str:
        """The operator's side of the veth pair."""
        return f"{SUBNET}.{self.index}.1"

    @property
    def interface(self) -> str:
        return f"ve-{self.name}"

    def save(self) -> None:
        files.atomic_write(self.folder / "host.json", json.dumps(asdict(self), indent=2) + "\n")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise HostError(f"host name {name!r} is not 1 to 11 lowercase letters, digits and -, starting with a letter",
                        "choose a name like h1 or build-a (its interface ve-NAME must fit 15 bytes)")
    return name


def load(name: str) -> Host:
    path = hosts_dir() / check_name(name) / "host.json"
    try:
        return Host(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise HostError(f"there is no rehearsal host {name!r} in {hosts_dir()}",
                        f"create it with `invoke host.up {name}` (invoke host.list shows the hosts)") from None


def every() -> list[Host]:
    root = hosts_dir()
    return [load(p.parent.name) for p in sorted(root.glob("*/host.json"))] if root.is_dir() else []


# --------------------------------------------------------------------------------------
# the root filesystem, made once per recipe
# --------------------------------------------------------------------------------------
def python_package() -> tuple[str, ...]:
    """The kit runs inside on the operator's Python: bound in from its prefix, or Debian's
    python3 in the rootfs when the operator's Python is Debian's own (a prefix under /usr
    cannot be bound over the host's /usr)."""
    return ("python3",) if sys.base_prefix.startswith("/usr") else ()


def rootfs_key(packages: tuple[str, ...] = PACKAGES) -> str:
    import hashlib

    recipe = "\n".join([SUITE, MIRROR, "minbase", ",".join(sorted(packages + python_package()))])
    return f"host-{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def base_tarball(progress=print) -> Path:
    """cache_dir()/rootfs/KEY/rootfs.tar: debootstrap the first time (about a minute), reused
    after (daemon.install.cached_build: one maker at a time, the folder appears whole)."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise HostError("debootstrap is not installed, so no rehearsal host can be made",
                        "apt-get install debootstrap systemd-container (./kit setup installs them)")

    def make(staging: Path) -> None:
        root = staging / "rootfs"
        include = ",".join(PACKAGES + python_package())
        progress(f"debootstrap {SUITE} (minbase + {include}) from {MIRROR}: the first time takes a minute or two")
        start = time.monotonic()
        proc = subprocess.run([debootstrap, "--variant=minbase", f"--include={include}", SUITE, str(root), MIRROR],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            raise HostError(f"debootstrap failed: {(proc.stdout + proc.stderr).strip()[-1500:]}",
                            f"check that this machine reaches {MIRROR} (apt-get update works) and run again")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / junk).glob("*.deb"):
                path.unlink()
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(staging / "rootfs.tar"),
                        "."], check=True)
        shutil.rmtree(root)
        progress(f"  {staging / 'rootfs.tar'} ({(staging / 'rootfs.tar').stat().st_size >> 20} MiB)"
                 f" in {time.monotonic() - start:.0f}s")

    return cached_build("rootfs", rootfs_key(), ("rootfs.tar",), make, minutes=2) / "rootfs.tar"


def prepare_rootfs(host: Host, tarball: Path) -> None:
    """The host's own copy of the base, named, addressed, and with Debian's own haproxy
    service off (the access runbook runs the front door)."""
    host.rootfs.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(host.rootfs), "-xf", str(tarball)], check=True)
    etc = host.rootfs / "etc"
    (etc / "hostname").write_text(f"{host.name}\n")
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n{host.address} {host.name}\n")
    (etc / "machine-id").write_text("")
    wants = etc / "systemd/system/multi-user.target.wants"
    (wants / "haproxy.service").unlink(missing_ok=True)
    (etc / "systemd/system/kit-network.service").write_text(
        "[Unit]\nDescription=buildkit-ops: the rehearsal host's address\nBefore=network.target\n"
        "DefaultDependencies=no\nAfter=sys-subsystem-net-devices-host0.device\n\n"
        f"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/sbin/ip link set host0 up\n"
        f"ExecStart=/usr/sbin/ip addr replace {host.address}/30 dev host0\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
    (wants / "kit-network.service").symlink_to("/etc/systemd/system/kit-network.service")


# --------------------------------------------------------------------------------------
# booting, and finding a running host
# --------------------------------------------------------------------------------------
def nspawn_pid(host: Host) -> int:
    """The systemd-nspawn process of a running host, or 0."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"systemd-nspawn") and f"--machine={host.name}".encode() in argv:
            return int(proc.name)
    return 0


def leader(host: Host) -> int:
    """The PID of the host's systemd (PID 1 inside), or 0 when it is not running."""
    parent = nspawn_pid(host)
    if not parent:
        return 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(parent):
                    return int(proc.name)
            except (OSError, IndexError):
                continue
    return 0


def run_in(host: Host, argv: list[str], env: dict[str, str] | None = None, cwd: str = "/", timeout: float = 600,
           check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    """Run a command inside the host (all its namespaces, its root), with a clean
    environment: PATH, HOME and `env`."""
    pid = leader(host)
    if not pid:
        raise HostError(f"the rehearsal host {host.name} is not running", f"start it: invoke host.up {host.name}")
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                   "LANG": "C.UTF-8", **(env or {})}
    cmd = ["nsenter", "-t", str(pid), "-a", "env", "-i", "-C", cwd, *(f"{k}={v}" for k, v in environment.items()),
           *argv]
    proc = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout)
    if check and proc.returncode:
        raise HostError(f"{' '.join(argv[:3])} failed in {host.name} (exit {proc.returncode}):"
                        f" {((proc.stdout or '') + (proc.stderr or '')).strip()[-1500:]}",
                        f"look inside: invoke host.shell {host.name}")
    return proc


def state(host: Host) -> str:
    """running, degraded, starting... as systemd inside says; stopped when it is not up."""
    if not leader(host):
        return "stopped"
    proc = run_in(host, ["systemctl", "is-system-running"], check=False, timeout=30)
    return (proc.stdout or "").strip() or "starting"


def wait_for(host: Host, wanted: tuple[str, ...] = ("running", "degraded"), timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = "stopped"
    while time.monotonic() < deadline and nspawn_pid(host):
        seen = state(host)
        if seen in wanted:
            return seen
        time.sleep(0.5)
    log = (host.folder / "boot.log").read_text(errors="replace")[-1500:] if (host.folder / "boot.log").exists() else ""
    why = f"within {timeout:.0f}s (systemd says {seen})" if nspawn_pid(host) else "(systemd-nspawn exited)"
    raise HostError(f"the rehearsal host {host.name} did not boot {why}",
                    f"read {host.folder / 'boot.log'}:\n{log}")


def remove_interface(host: Host) -> None:
    """The operator's side of a veth pair left by a host that is not running (nspawn
    cannot make it again while it exists)."""
    if Path(f"/sys/class/net/{host.interface}").exists() and not nspawn_pid(host):
        proc = subprocess.run(["ip", "link", "delete", host.interface], capture_output=True, text=True)
        if proc.returncode:
            raise HostError(f"{host.interface} is left from an earlier boot of {host.name}, and cannot be removed:"
                            f" {proc.stderr.strip()}", f"ip link delete {host.interface}")


def boot(host: Host) -> None:
    """systemd-nspawn -b in the background (its console to boot.log), then the operator's
    side of the veth pair, then the cgroup recipe (module docstring)."""
    nspawn = shutil.which("systemd-nspawn")
    if not nspawn:
        raise HostError("systemd-nspawn is not installed, so no rehearsal host can boot",
                        "apt-get install systemd-container (./kit setup installs it)")
    host.exchange.mkdir(parents=True, exist_ok=True)
    remove_interface(host)
    binds = [f"--bind-ro={PROJECT_ROOT}", f"--bind={host.exchange}:{EXCHANGE}"]
    if not sys.base_prefix.startswith("/usr"):
        binds.append(f"--bind-ro={sys.base_prefix}")
    if cache_dir().is_dir():  # what the kit built once (bbolt, syft...), where the kit looks for it
        binds.append(f"--bind-ro={cache_dir()}")
    cmd = [nspawn, "-D", str(host.rootfs), f"--machine={host.name}", f"--hostname={host.name}", "--register=no",
           "--keep-unit", "-b", "--network-veth", "--system-call-filter=add_key keyctl request_key", *binds,
           "--console=passive"]
    with open(host.folder / "boot.log", "ab") as log:
        spawned = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while not Path(f"/sys/class/net/{host.interface}").exists():
        # the Popen, not a scan of /proc: until it has exec'd, the child is not named nspawn yet
        if time.monotonic() > deadline or spawned.poll() is not None:
            raise HostError(f"systemd-nspawn did not start {host.name}",
                            f"read {host.folder / 'boot.log'}")
        time.sleep(0.2)
    for cmd in (["ip", "addr", "replace", f"{host.gateway}/30", "dev", host.interface],
                ["ip", "link", "set", host.interface, "up"]):
        subprocess.run(cmd, check=True, capture_output=True)
    wait_for(host)
    run_in(host, ["sh", "-c", CGROUP_RECIPE], timeout=120)
    wait_for(host)


def one_at_a_time(name: str) -> None:
    """On a cgroup v1 machine the recipe hands each host the machine's cgroup hierarchies
    whole, so two running hosts' units of one name are one cgroup (seen: `systemctl kill
    buildkit.service` failing with "Input/output error" on the other host's process, which
    is pid 0 in this one's namespace). A second host is refused, naming the first."""
    if not (CGROUP_ROOT / "memory").is_dir():  # cgroup v2: each host gets a subtree of its own
        return
    running = [h.name for h in every() if h.name != name and leader(h)]
    if running:
        raise HostError(f"the rehearsal host {running[0]} is running, and on this cgroup v1 machine two hosts share"
                        " the machine's cgroup hierarchies: their builders' units would be one cgroup",
                        f"power it off first: invoke host.down {running[0]}")


def up(name: str, progress=print) -> tuple[Host, bool]:
    """The host running (created the first time): (host, whether anything was done)."""
    check_name(name)
    folder = hosts_dir() / name
    if (folder / "host.json").exists():
        host = load(name)
        if leader(host):
            return host, False
        one_at_a_time(name)
        boot(host)
        return host, True
    one_at_a_time(name)
    used = {h.index for h in every()}
    index = next(i for i in range(1, 250) if i not in used)
    tarball = base_tarball(progress)
    host = Host(name, index, files.stamp(), rootfs_key())
    try:
        prepare_rootfs(host, tarball)
        host.save()
        boot(host)
    except BaseException:
        down(name, purge=True)
        raise
    return host, True


def down(name: str, purge: bool = False, timeout: float = 60) -> list[str]:
    """Power the host off (systemctl poweroff inside, then the nspawn process); with
    purge, remove its folder too."""
    check_name(name)
    done = []
    host_json = hosts_dir() / name / "host.json"
    host = load(name) if host_json.exists() else Host(name, 0, "", "")
    pid = nspawn_pid(host)
    if pid:
        inside = leader(host)
        if inside:
            run_in(host, ["systemctl", "poweroff"], check=False, timeout=30)
        deadline = time.monotonic() + timeout
        while nspawn_pid(host) and time.monotonic() < deadline:
            time.sleep(0.3)
        if nspawn_pid(host):
            # PID 1 inside first (its whole PID namespace goes with it), then nspawn's group
            for kill, victim in ((os.kill, inside), (os.killpg, pid)):
                try:
                    kill(victim, signal.SIGKILL) if victim else None
                except ProcessLookupError:
                    pass
            done.append(f"killed {name} (it did not power off within {timeout:.0f}s)")
        else:
            done.append(f"stopped {name}")
    remove_interface(host)
    if purge and host.folder.exists():
        shutil.rmtree(host.folder)
        done.append(f"removed {host.folder}")
    return done or [f"{name} was not running"]


def shell(name: str) -> list[str]:
    """The command that opens a login shell inside the host."""
    host = load(name)
    pid = leader(host)
    if not pid:
        raise HostError(f"the rehearsal host {name} is not running", f"start it: invoke host.up {name}")
    return ["nsenter", "-t", str(pid), "-a", "env", "-C", "/root", "/bin/bash", "-l"]
