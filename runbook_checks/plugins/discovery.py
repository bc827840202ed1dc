"""Where the Docker CLI (v28) looks for plugins and what the candidates are on disk: the
config directory and config.json, the search path in docker's order, and each file's
owner, mode, security findings and last use (read before anything runs it)."""

from __future__ import annotations

import datetime as _dt
import grp
import json
import os
import pwd
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .metadata import FIXES, reject_constant

SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)

def config_dir(docker_config: str = "") -> Path:
    """The Docker CLI's config directory: the parameter, else $DOCKER_CONFIG, else ~/.docker."""
    raw = docker_config or os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(raw).expanduser()


@dataclass
class ConfigFile:
    """$DOCKER_CONFIG/config.json as docker reads it (only what plugins depend on)."""

    path: Path
    exists: bool = False
    data: dict[str, Any] | None = None
    error: str = ""

    @property
    def extra_dirs(self) -> list[str]:
        if not self.data:
            return []
        return list(self.data.get("cliPluginsExtraDirs") or [])


def read_config(directory: Path) -> ConfigFile:
    """config.json, judged like docker: absent or empty is fine; anything that does not
    decode into docker's ConfigFile (cliPluginsExtraDirs a list of strings) is an error
    and, like docker, contributes no extra directories."""
    cfg = ConfigFile(directory / "config.json")
    try:
        raw = cfg.path.read_bytes()
    except FileNotFoundError:
        return cfg
    except OSError as exc:
        cfg.exists, cfg.error = True, f"cannot read {cfg.path}: {exc.strerror}"
        return cfg
    cfg.exists = True
    if not raw.strip():
        cfg.data = {}
        return cfg
    try:
        data = json.loads(raw.decode("utf-8", errors="replace"), parse_constant=reject_constant)
    except (ValueError, RecursionError) as exc:
        cfg.error = f"{cfg.path} is not JSON: {exc}"
        return cfg
    if data is None:
        data = {}
    if not isinstance(data, dict):
        cfg.error = f"{cfg.path} is a JSON {type(data).__name__}, not an object"
        return cfg
    extra = data.get("cliPluginsExtraDirs")
    if extra is not None and not (isinstance(extra, list) and all(isinstance(d, str) for d in extra)):
        cfg.error = f"{cfg.path}: cliPluginsExtraDirs is not a list of directory paths"
        return cfg
    cfg.data = data
    return cfg


@dataclass
class SearchDir:
    path: str
    origin: str  # cliPluginsExtraDirs | DOCKER_CONFIG | system
    state: str = "missing"  # ok | missing | not a directory | unreadable
    candidates: int = 0


def search_path(directory: Path, cfg: ConfigFile) -> list[SearchDir]:
    """Docker's plugin directories, in docker's order of preference."""
    dirs = [SearchDir(d, "cliPluginsExtraDirs") for d in cfg.extra_dirs]
    dirs.append(SearchDir(str(directory / "cli-plugins"), "DOCKER_CONFIG"))
    dirs += [SearchDir(d, "system") for d in SYSTEM_PLUGIN_DIRS]
    return dirs


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass(frozen=True)
class Mount:
    point: str
    options: tuple[str, ...]
    fstype: str


def mounts() -> list[Mount]:
    """/proc/self/mountinfo: mount point, per-mount options (where noatime lives), type."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 6:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        found.append(Mount(point, tuple(fields[5].split(",")), (right.split() or ["?"])[0]))
    return found


def mount_of(path: str, table: list[Mount] | None = None) -> Mount | None:
    real = os.path.realpath(path)
    best = None
    for mnt in table if table is not None else mounts():
        prefix = mnt.point.rstrip("/") + "/"
        if (real == mnt.point or real.startswith(prefix) or mnt.point == "/") and (
                best is None or len(mnt.point) >= len(best.point)):
            best = mnt
    return best


def last_use(st: os.stat_result, mnt: Mount | None) -> tuple[str | None, str]:
    """(ISO time or None, how far to trust it). Read before anything runs the plugin."""
    where = f"{mnt.point} ({mnt.fstype})" if mnt else "its filesystem"
    if mnt and "noatime" in mnt.options:
        return None, f"not recorded: {where} is mounted noatime"
    stamp = _dt.datetime.fromtimestamp(st.st_atime, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    listing = ("every docker command that lists plugins (docker info, docker --help, completion) runs it too,"
               " and so does this audit")
    if st.st_atime <= st.st_mtime:
        return None, f"not run since it was written ({where} keeps atime); {listing}"
    if mnt and "relatime" in mnt.options:
        return stamp, f"approximate: {where} is relatime (atime moves at most once a day); {listing}"
    return stamp, f"access time on {where}; {listing}"


def security_findings(path: str, st: os.stat_result | None, dir_st: os.stat_result | None, me: int) -> list[str]:
    """World-writable, or owned by someone other than root and the current user: either
    lets someone else change what docker runs as you. `st` is the file docker would run
    (None for a symlink that does not resolve); `dir_st` the directory holding it."""
    found = []
    if st is None:
        pass
    elif st.st_mode & stat.S_IWOTH:
        found.append(f"world-writable (mode {stat.S_IMODE(st.st_mode):04o}): anyone can change what docker runs;"
                     f" fix: chmod o-w {path}")
    if st is not None and st.st_uid not in (0, me):
        found.append(f"owned by {user_name(st.st_uid)} (uid {st.st_uid}), neither root nor the current user"
                     f" ({user_name(me)}): they can change what docker runs as you; fix: chown root {path},"
                     " or quarantine it")
    if dir_st is not None and dir_st.st_mode & stat.S_IWOTH and not dir_st.st_mode & stat.S_ISVTX:
        found.append(f"its directory {os.path.dirname(path)} is world-writable without the sticky bit: anyone"
                     f" can replace it; fix: chmod o-w {os.path.dirname(path)}")
    return found


# --------------------------------------------------------------------------------------
# one candidate, as the inventory records it
# --------------------------------------------------------------------------------------
@dataclass
class Plugin:
    """One candidate, as the inventory records it."""

    name: str
    path: str
    directory: str
    kind: str  # file | symlink
    link_target: str | None = None
    valid: bool = False
    error: str = ""
    reason: str = ""  # a FIXES key when invalid
    metadata: dict[str, Any] | None = None
    shadowed_by: str | None = None
    shadows: list[str] = field(default_factory=list)
    owner: str = ""
    group: str = ""
    uid: int | None = None
    gid: int | None = None
    mode: str = ""
    size: int | None = None
    sha256: str | None = None
    insecure: list[str] = field(default_factory=list)  # security findings, each with its fix (the exporter counts them)
    notes: list[str] = field(default_factory=list)
    last_use: str | None = None
    last_use_note: str = ""
    purpose: str = ""
    description: str = ""
    status: str = ""  # current | retired | unknown (the kit's table)
    required: str = "not required"
    metadata_seconds: float | None = None
    docker_error: str | None = None  # docker's own verdict, when the oracle ran

    @property
    def active(self) -> bool:
        return self.shadowed_by is None

    @property
    def fix(self) -> str:
        return FIXES.get(self.reason, "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["active"] = self.active
        return data


@dataclass
class Ignored:
    path: str
    why: str
