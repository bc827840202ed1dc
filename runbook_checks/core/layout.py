"""Where things go, per profile: one flat state directory (lab, ci) or the FHS paths of
a build server (production), both rooted at `state_dir` so tests can render a
production tree into a temporary directory."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ParameterError
from .paths import PROJECT_ROOT

UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes with the terminating NUL


@dataclass(frozen=True)
class Layout:
    state_dir: Path
    bin_dir: Path
    config_path: Path
    backup_dir: Path
    root_dir: Path
    run_dir: Path
    log_dir: Path
    unit_dir: Path
    style: str
    name: str = "buildkit"  # the builder's name on its host: units, directories, socket group
    pool_of: str = ""  # a member of the pool behind this builder's front door (its socket group is that one's)

    def unit(self, part: str = "", kind: str = "service") -> str:
        """This builder's systemd units: NAME.service, NAME.socket, NAME-frontdoor.service..."""
        return f"{self.name}{'-' + part if part else ''}.{kind}"

    @property
    def slice(self) -> str:
        """The systemd slice that holds the builder's daemon and its build containers and
        carries its limits (no "-": systemd would nest buildkit-x.slice in buildkit.slice)."""
        return f"{self.name.replace('-', '_')}.slice"

    @property
    def trust_level(self) -> str:
        """The trust level this builder serves ("" for a host's only builder)."""
        return self.name.removeprefix("buildkit-") if self.name != "buildkit" else ""

    @property
    def group(self) -> str:
        """The system group that may use buildkitd's socket (root and the front door: a
        pool member's socket is its front door's group)."""
        return self.pool_of or self.name

    def on_host(self, path: Path) -> Path:
        """`path` as the host it is for sees it: an FHS tree rendered under another
        state_dir (a rehearsal host's root, a scratch directory) is / there."""
        return Path("/") / path.relative_to(self.state_dir) if self.style == "fhs" else path

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "buildkitd.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def buildkitd(self) -> Path:
        return self.bin_dir / "buildkitd"

    @property
    def buildctl(self) -> Path:
        return self.bin_dir / "buildctl"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "buildkitd.log"

    @property
    def quarantine_dir(self) -> Path:
        """Where plugins-clean moves Docker CLI plugins (never deletes them)."""
        if self.style == "fhs":
            return self.state_dir / "var/lib/buildkit-ops/quarantine/cli-plugins"
        return self.state_dir / "quarantine/cli-plugins"

    @property
    def supervisor_conf(self) -> Path:
        return self.config_path.parent / "supervisord.conf"

    def check(self) -> None:
        if len(str(self.socket_path)) > UNIX_SOCKET_MAX:
            raise ParameterError(
                f"state_dir {self.state_dir} makes the socket path {len(str(self.socket_path))} bytes long;"
                f" unix sockets allow {UNIX_SOCKET_MAX}",
                f"choose a state_dir at least {len(str(self.socket_path)) - UNIX_SOCKET_MAX} characters shorter"
                " (for example /tmp/bk)",
            )


# Directories a state directory must never be: the kit writes, and `down --purge` removes,
# everything under it. Production may use / itself (its FHS layout); no profile may use these.
SYSTEM_DIRS = frozenset(["/etc", "/usr", "/var", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
                         "/dev", "/proc", "/sys", "/run", "/tmp", "/home", "/root", "/opt", "/srv", "/mnt", "/media",
                         "/var/lib", "/var/log", "/var/tmp", "/usr/local", "/usr/lib", "/usr/bin", "/usr/sbin"])
SAFE_PATH = re.compile(r"/[A-Za-z0-9._@+/-]*")
PATH_CHARACTERS = "letters, digits and . _ @ + - /"


def default_state_dir(profile: str) -> tuple[Path, str]:
    """(the state directory, where it came from) when state_dir is empty."""
    if profile == "production":
        return Path("/"), "the production default"
    env = os.environ.get("BUILDKIT_OPS_STATE_DIR")
    return (Path(env), "BUILDKIT_OPS_STATE_DIR") if env else (PROJECT_ROOT / ".lab", "the lab default")


def check_state_dir(state_dir: Path, profile: str, given_by: str = "state_dir") -> None:
    """A state directory the kit may own: absolute, of plain characters, not a system
    directory, not one that holds the checkout or a home directory (only production may
    use /)."""
    text = str(state_dir)
    if not text.startswith("/"):
        raise ParameterError(f"{given_by} {text!r} is not an absolute path",
                             f"give the full path, for example {PROJECT_ROOT / '.lab'} or /tmp/bk")
    if not SAFE_PATH.fullmatch(text):
        raise ParameterError(f"{given_by} {text!r} holds a character the kit does not put in paths (spaces, control"
                             " characters, quotes...)", f"use {PATH_CHARACTERS} only, for example /srv/buildkit-lab")
    norm = os.path.normpath(text)
    if norm == "/" and profile == "production":
        return
    home = str(Path.home())
    if norm == "/" or norm in SYSTEM_DIRS or norm == home:
        raise ParameterError(f"{given_by} {text!r} is a system directory: the kit would write its files into it and"
                             " `invoke down --purge` would remove it",
                             "choose a directory of the lab's own, for example /srv/buildkit-lab or"
                             f" {PROJECT_ROOT / '.lab'}" + (" (only the production profile may use /)" if norm == "/" else ""))
    for precious in (str(PROJECT_ROOT), home):
        if precious == norm or precious.startswith(norm.rstrip("/") + "/"):
            raise ParameterError(f"{given_by} {text!r} holds {precious}: `invoke down --purge` would remove it",
                                 f"choose a directory beside it, for example {norm.rstrip('/')}/buildkit-lab")


def builder_name(trust_level: str = "") -> str:
    """buildkit, or buildkit-LEVEL for one of several builders on a host (one per trust
    level: own units, directories, socket group, port and certificates)."""
    return f"buildkit-{trust_level}" if trust_level else "buildkit"


def for_params(params: dict) -> Layout:
    """The layout for a runbook's parameters (profile, state_dir, layout, trust_level); a
    state directory the kit may not own is refused (check_state_dir)."""
    profile = params.get("profile", "lab")
    raw = params.get("state_dir") or ""
    state_dir, given_by = (Path(raw), "state_dir") if raw else default_state_dir(profile)
    check_state_dir(state_dir, profile, given_by)
    state_dir = Path(os.path.normpath(state_dir))
    style = params.get("layout") or ("fhs" if profile == "production" else "flat")
    level = params.get("trust_level") or ""
    s, name = state_dir, builder_name(level)
    pool_of = builder_name() if level and level in (params.get("pool") or []) else ""
    if style == "fhs":
        layout = Layout(s, s / "usr/local/bin", s / f"etc/{name}/buildkitd.toml", s / f"var/backups/{name}",
                        s / f"var/lib/{name}", s / f"run/{name}", s / f"var/log/{name}",
                        s / "etc/systemd/system", style, name, pool_of)
    else:  # one builder per state directory
        layout = Layout(s, s / "bin", s / "etc/buildkitd.toml", s / "etc/backups", s / "lib/buildkit",
                        s / "run", s / "log", s / "etc/systemd", style, name)
    layout.check()
    return layout


def production(state_dir: str | Path = "/", trust_level: str = "", pool: list[str] = ()) -> Layout:
    """The production layout of an installation: this host's (/), or one seen through
    another root (a rehearsal host's root filesystem, a tree rendered for a server); with
    `trust_level`, that builder's among several on the host (a member of the host
    builder's `pool`, if it names the level)."""
    return for_params({"profile": "production", "state_dir": str(state_dir), "trust_level": trust_level,
                       "pool": list(pool)})
