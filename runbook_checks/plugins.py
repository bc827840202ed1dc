"""Docker CLI plugin audit: find every candidate the Docker CLI would consider, judge it
by the CLI's own rules, inventory it, and check the verdicts against `docker` itself.

What the Docker CLI (v28) does, measured on docker 28.2.2 and read in docker/cli
`cli-plugins/manager` (manager.go, plugin.go, candidate.go):

* Directories, in order: each `cliPluginsExtraDirs` entry of $DOCKER_CONFIG/config.json,
  then $DOCKER_CONFIG/cli-plugins (default ~/.docker/cli-plugins), then the system
  directories below. A directory that is missing, not a directory or unreadable is
  skipped silently. A config.json that does not parse is ignored as a whole (docker
  warns "Error parsing config file" and uses its defaults, so no extra directories).
* Candidates: entries named `docker-*` that are regular files or symlinks (to anything);
  directories, fifos and sockets are ignored without a word.
* The first candidate of a name wins; the later ones are its ShadowedPaths and are never
  run or judged.
* Judging the winner, first failure wins: the name must match ^[a-z][a-z0-9]*$; it must
  not be a builtin command or an alias of one; `PATH docker-cli-plugin-metadata` must run
  and exit 0 (no timeout: a plugin that hangs hangs `docker info`); its stdout must be a
  JSON object (Go's encoding/json: keys match fields case-insensitively, later keys
  win, null leaves a field empty, a wrong type is an error); SchemaVersion must be
  exactly "0.1.0"; Vendor must not be empty.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import grp
import hashlib
import json
import math
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import files
from .errors import PluginError
from .results import Outcome

NAME_PREFIX = "docker-"
METADATA_COMMAND = "docker-cli-plugin-metadata"
NAME_PATTERN = "^[a-z][a-z0-9]*$"
SCHEMA_VERSION = "0.1.0"
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
ORACLE_TIMEOUT = 120  # docker waits for every plugin without a limit; we wait this long for docker

# The top-level commands of docker 28.2.2, hidden ones included (bake, checkpoint,
# completion, help): a plugin named like one "duplicates builtin command". Measured by
# offering docker a plugin for every command in `docker --help`, every one- and
# two-letter name and the known plugin names; tests/unit/test_plugins.py re-checks the
# visible ones against the installed docker.
BUILTIN_COMMANDS = frozenset("""
    attach bake build builder checkpoint commit completion config container context cp create
    diff events exec export help history image images import info inspect kill load login
    logout logs manifest network node pause plugin port ps pull push rename restart rm rmi
    run save search secret service stack start stats stop swarm system tag top trust
    unpause update version volume wait
""".split())
BUILTIN_ALIASES = {"remove": "rm"}  # alias -> the builtin command it belongs to

# What the kit knows about plugins met in the wild: purpose, and whether they are current.
KNOWN_PLUGINS: dict[str, tuple[str, str]] = {
    "buildx": ("Docker Buildx: builds with BuildKit; plugins-configure points it at the kit's buildkitd", "current"),
    "compose": ("Docker Compose: defines and runs multi-container applications", "current"),
    "scout": ("Docker Scout: image vulnerability and SBOM analysis", "current"),
    "scan": ("Docker Scan (Snyk): retired, replaced by docker scout", "retired"),
    "sbom": ("docker sbom (Syft): superseded by docker scout sbom", "retired"),
    "init": ("Docker Init: writes a Dockerfile, compose.yaml and .dockerignore for a project", "current"),
    "debug": ("Docker Debug: a debugging shell into containers and images (Docker Desktop)", "current"),
    "ai": ("Ask Gordon, Docker's AI assistant (Docker Desktop)", "current"),
    "extension": ("Docker Desktop extensions: install, list, remove", "current"),
    "feedback": ("Sends feedback to Docker (Docker Desktop)", "current"),
    "dev": ("Docker Dev Environments (Docker Desktop): deprecated", "retired"),
    "desktop": ("Docker Desktop's CLI: start, stop, status", "current"),
    "model": ("Docker Model Runner: runs AI models locally (Docker Desktop)", "current"),
    "app": ("Docker App (CNAB bundles): retired", "retired"),
}

# Why a candidate is invalid, and what fixes it (the guide docs/guides/plugins.md shows these).
FIXES = {
    "name": "rename it docker-NAME with NAME in lowercase letters and digits, or quarantine it (plugins-clean)",
    "builtin": "a plugin cannot replace a docker command: quarantine it (plugins-clean) or rename it",
    "exec": ("make it an executable file (chmod 755) whose #! interpreter exists, and a symlink one that resolves;"
             " or quarantine it (plugins-clean)"),
    "exit": "run `PATH docker-cli-plugin-metadata` to see its error; reinstall the plugin or quarantine it",
    "timeout": "it hangs `docker info` and every command that lists plugins: quarantine it (plugins-clean)",
    "json": "its metadata is not a JSON object: reinstall a build of the plugin for this CLI, or quarantine it",
    "schema": "built for another plugin protocol: install a current release, or quarantine it",
    "vendor": "its metadata names no Vendor: install an official build, or quarantine it",
}


# --------------------------------------------------------------------------------------
# where docker looks
# --------------------------------------------------------------------------------------
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
        data = json.loads(raw.decode("utf-8", errors="replace"), parse_constant=_no_constant)
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


# --------------------------------------------------------------------------------------
# one candidate
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


class _Object(list):
    """A JSON object as its (key, value) pairs in order: Go applies duplicate keys in turn."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _go_key(key: str) -> str | None:
    """A JSON key as Go's encoding/json folds it onto an ASCII field name; None if it
    cannot match one (Go folds K (U+212A) to k and long s (U+017F) to s)."""
    folded = key.replace("\u212a", "k").replace("\u017f", "s")
    return folded.lower() if folded.isascii() else None


METADATA_FIELDS = ("SchemaVersion", "Vendor", "Version", "ShortDescription", "URL")  # all strings in docker 28


def parse_metadata(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(metadata, "") or (None, error): stdout of the metadata command read the way docker
    28 decodes it into its Metadata struct."""
    text = raw.decode("utf-8", errors="replace")  # Go replaces invalid UTF-8 too; a BOM stays and fails
    try:
        pairs = json.loads(text, object_pairs_hook=_Object, parse_constant=_no_constant)
    except RecursionError:
        return None, "invalid metadata: nested too deeply"
    except ValueError as exc:
        return None, f"invalid metadata: {exc}"
    if pairs is None:  # `null` decodes into nothing: every field stays empty
        pairs = _Object()
    if not isinstance(pairs, _Object):
        return None, f"invalid metadata: cannot unmarshal {_json_type(pairs)} into the plugin metadata object"
    by_key = {f.lower(): f for f in METADATA_FIELDS}
    meta: dict[str, Any] = {f: "" for f in METADATA_FIELDS}
    extra: dict[str, Any] = {}
    type_error = ""
    for key, value in pairs:
        folded = _go_key(key)
        name = key if key in METADATA_FIELDS else by_key.get(folded or "")
        if name is None:
            extra[key] = _plain(value)
            continue
        if value is None:
            continue
        if not isinstance(value, str):
            type_error = type_error or f"invalid metadata: {name} is a JSON {_json_type(value)}, not a string"
            continue
        meta[name] = value
    if type_error:
        return None, type_error
    meta = {k: v for k, v in meta.items() if v != ""}
    if extra:  # fields docker 28 ignores; kept for the inventory while they stay small
        meta["other"] = extra if len(json.dumps(extra)) <= 2000 else {"keys": sorted(extra)}
    return meta, ""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, _Object) else "array"


def _plain(value: Any) -> Any:
    """object_pairs_hook output back to plain JSON values (for the inventory)."""
    if isinstance(value, _Object):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 1e999 decodes to inf, which JSON cannot carry
    return value


def run_metadata(path: str, timeout: float, env: dict[str, str]) -> tuple[bytes | None, str, str, float]:
    """Run `PATH docker-cli-plugin-metadata` like docker does (stdout only, stdin empty),
    but never longer than `timeout` seconds: (stdout or None, reason, error, seconds)."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen([path, METADATA_COMMAND], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return None, "exec", f"failed to fetch metadata: fork/exec {path}: {reason[:1].lower()}{reason[1:]}", 0.0
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None, "timeout", (f"failed to fetch metadata: no answer within {timeout:g}s"
                                 " (docker itself waits for ever)"), round(time.monotonic() - start, 3)
    seconds = round(time.monotonic() - start, 3)
    if proc.returncode < 0:
        name = signal.strsignal(-proc.returncode) or f"signal {-proc.returncode}"
        return None, "exit", f"failed to fetch metadata: signal: {name[:1].lower()}{name[1:]}", seconds
    if proc.returncode > 0:
        return None, "exit", f"failed to fetch metadata: exit status {proc.returncode}", seconds
    return out, "", "", seconds


def run_docker(docker: str, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`docker ARGS` in a session of its own: on a timeout docker AND the plugins it is
    waiting for are killed (docker has no timeout of its own), then TimeoutExpired."""
    proc = subprocess.Popen([docker, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the plugin and everything it started (a shell's `sleep` keeps stdout open)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a child escaped the group and holds the pipe
        proc.stdout.close()
        proc.wait()


def judge_name(name: str) -> tuple[str, str]:
    """(reason, error) for the checks docker makes before running anything; ("", "") if none fails."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", name):
        return "name", f"plugin candidate {json.dumps(name)} did not match {json.dumps(NAME_PATTERN)}"
    if name in BUILTIN_COMMANDS:
        return "builtin", f"plugin {json.dumps(name)} duplicates builtin command"
    if name in BUILTIN_ALIASES:
        return "builtin", (f"plugin {json.dumps(name)} duplicates an alias of builtin command"
                           f" {json.dumps(BUILTIN_ALIASES[name])}")
    return "", ""


def judge_metadata(raw: bytes | None, run_reason: str = "",
                   run_error: str = "") -> tuple[str, str, dict[str, Any] | None]:
    """(reason, error, metadata) from the metadata command's result."""
    if raw is None:
        return run_reason, run_error, None
    meta, error = parse_metadata(raw)
    if meta is None:
        return "json", error, None
    if meta.get("SchemaVersion", "") != SCHEMA_VERSION:
        return "schema", (f"plugin SchemaVersion {json.dumps(meta.get('SchemaVersion', ''))} is not valid,"
                          f" must be {SCHEMA_VERSION}"), meta
    if not meta.get("Vendor"):
        return "vendor", "plugin metadata does not define a vendor", meta
    return "", "", meta


# --------------------------------------------------------------------------------------
# files: owner, mode, hash, last use
# --------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    """The file's sha256, read without moving its access time where the kernel allows
    (O_NOATIME: the owner, or root), so that hashing is not mistaken for use."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
# the audit
# --------------------------------------------------------------------------------------
@dataclass
class Ignored:
    path: str
    why: str


@dataclass
class Audit:
    """One audit of one DOCKER_CONFIG. The step methods fill it in, in runbook order."""

    config_dir: Path
    required: list[str]
    timeout: float
    config: ConfigFile | None = None
    dirs: list[SearchDir] = field(default_factory=list)
    plugins: list[Plugin] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    docker: dict[str, Any] = field(default_factory=dict)
    inventory_paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params) -> "Audit":
        return cls(config_dir(params.docker_config), list(params.required_plugins), params.plugin_timeout)

    @property
    def env(self) -> dict[str, str]:
        """The environment docker and the plugins run in: ours, with this DOCKER_CONFIG."""
        return dict(os.environ, DOCKER_CONFIG=str(self.config_dir))

    # -- reading the host ---------------------------------------------------------------
    def scan(self) -> "Audit":
        """Everything, without the runbook: search path, candidates, verdicts."""
        self.search()
        self.inspect()
        return self

    def search(self) -> Outcome:
        """Step: the directories docker searches, in order, and what each holds."""
        self.config = read_config(self.config_dir)
        self.dirs = search_path(self.config_dir, self.config)
        for d in self.dirs:
            try:
                st = os.stat(d.path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                d.state = "not a directory"
            elif not os.access(d.path, os.R_OK | os.X_OK):
                d.state = "unreadable"
            else:
                d.state = "ok"
        lines = [f"{i}. {d.path} ({d.origin}): {d.state}" for i, d in enumerate(self.dirs, 1)]
        if self.config.error:
            lines.append(f"config.json ignored, as docker ignores it: {self.config.error}")
        present = sum(d.state == "ok" for d in self.dirs)
        return Outcome.ok(f"DOCKER_CONFIG={self.config_dir}: {present} of {len(self.dirs)} plugin directories"
                          " exist\n" + "\n".join(lines),
                          docker_config=str(self.config_dir),
                          plugin_dirs=[asdict(d) for d in self.dirs],
                          docker_config_json_error=self.config.error)

    def inspect(self) -> Outcome:
        """Step: every candidate, its verdict, metadata, owner, mode, hash, last use."""
        if self.config is None:
            self.search()
        self.plugins, self.ignored = [], []
        table = mounts()
        me = os.geteuid()
        first: dict[str, Plugin] = {}
        for d in self.dirs:
            if d.state != "ok":
                continue
            try:
                entries = sorted(os.scandir(d.path), key=lambda e: e.name)
            except OSError as exc:
                d.state = f"unreadable ({exc.strerror})"
                continue
            dir_st = os.stat(d.path)
            for entry in entries:
                if not entry.name.startswith(NAME_PREFIX):
                    continue
                if not (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
                    self.ignored.append(Ignored(entry.path, "not a regular file or symlink: docker ignores it"))
                    continue
                d.candidates += 1
                plugin = self._describe(entry.path, d.path, dir_st, me, table)
                if plugin.name in first:
                    plugin.shadowed_by = first[plugin.name].path
                    first[plugin.name].shadows.append(plugin.path)
                else:
                    first[plugin.name] = plugin
                self.plugins.append(plugin)
        self._judge_all()
        return Outcome.ok(self.summary(), **self.facts())

    def _describe(self, path: str, directory: str, dir_st: os.stat_result, me: int, table: list[Mount]) -> Plugin:
        """Name, file facts and last use; read before any process touches the file."""
        lst = os.lstat(path)
        is_link = stat.S_ISLNK(lst.st_mode)
        plugin = Plugin(name=os.path.basename(path)[len(NAME_PREFIX):], path=path, directory=directory,
                        kind="symlink" if is_link else "file", link_target=os.readlink(path) if is_link else None)
        try:
            st = os.stat(path)  # what docker would run: the link's target
        except OSError as exc:
            plugin.notes.append(f"symlink to {plugin.link_target}, which does not resolve ({exc.strerror})")
            st = None
        target = st or lst
        plugin.uid, plugin.gid = target.st_uid, target.st_gid
        plugin.owner, plugin.group = user_name(target.st_uid), group_name(target.st_gid)
        plugin.mode = f"{stat.S_IMODE(target.st_mode):04o}"
        plugin.insecure = security_findings(path, st, dir_st, me)
        if st is not None and not stat.S_ISREG(st.st_mode):
            plugin.notes.append("its target is not a regular file")
        if st is not None and stat.S_ISREG(st.st_mode):
            plugin.size = st.st_size
            try:
                plugin.sha256 = sha256_file(path)
            except OSError as exc:
                plugin.notes.append(f"cannot read it to hash it: {exc.strerror}")
            plugin.last_use, plugin.last_use_note = last_use(st, mount_of(path, table))
        plugin.required = "required" if plugin.name in self.required else "not required"
        purpose, status = KNOWN_PLUGINS.get(plugin.name, ("", "unknown"))
        plugin.status = status
        plugin.purpose = purpose
        return plugin

    def _judge_all(self) -> None:
        env = self.env
        to_run = []
        for plugin in self.plugins:
            plugin.reason, plugin.error = judge_name(plugin.name)
            if not plugin.reason:
                to_run.append(plugin)
        if to_run:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(to_run))) as pool:
                results = list(pool.map(lambda p: run_metadata(p.path, self.timeout, env), to_run))
            for plugin, (raw, run_reason, run_error, seconds) in zip(to_run, results):
                plugin.metadata_seconds = seconds
                plugin.reason, plugin.error, plugin.metadata = judge_metadata(raw, run_reason, run_error)
        for plugin in self.plugins:
            plugin.valid = not plugin.reason
            plugin.description = (plugin.metadata or {}).get("ShortDescription", "")
            if plugin.purpose and plugin.description:
                plugin.purpose = f"{plugin.purpose} (it says: {plugin.description})"
            elif not plugin.purpose:
                plugin.purpose = plugin.description or "unknown: not in the kit's table and no description"

    # -- reading the results -------------------------------------------------------------
    @property
    def active(self) -> list[Plugin]:
        return [p for p in self.plugins if p.active]

    @property
    def invalid(self) -> list[Plugin]:
        return [p for p in self.plugins if not p.valid]

    @property
    def insecure(self) -> list[Plugin]:
        return [p for p in self.plugins if p.insecure]

    def by_name(self, name: str) -> Plugin | None:
        return next((p for p in self.active if p.name == name), None)

    def inventory(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.plugins]

    def facts(self) -> dict[str, Any]:
        return {
            "inventory": self.inventory(),
            "plugins_ignored": [asdict(i) for i in self.ignored],
            "plugins_total": len(self.plugins),
            "plugins_active": len(self.active),
            "plugins_invalid": len(self.invalid),
            "plugins_insecure": len(self.insecure),
            "plugins_shadowed": len(self.plugins) - len(self.active),
        }

    def summary(self) -> str:
        if not self.plugins:
            return "no plugin candidates" + (f"; {len(self.ignored)} entries ignored" if self.ignored else "")
        shadowed = [p for p in self.plugins if not p.active]
        active_invalid = sum(not p.valid for p in self.active)
        shadowed_invalid = sum(not p.valid for p in shadowed)
        head = (f"{len(self.plugins)} candidates: {len(self.active) - active_invalid} valid,"
                f" {active_invalid} invalid, {len(shadowed)} shadowed"
                + (f" ({shadowed_invalid} of them invalid)" if shadowed_invalid else "")
                + f", {len(self.insecure)} insecure")
        lines = [head]
        for p in self.plugins:
            verdict = "valid" if p.valid else f"INVALID: {p.error}"
            extra = f" (shadowed by {p.shadowed_by})" if p.shadowed_by else ""
            lines.append(f"  {p.name or repr(p.name)} at {p.path}: {verdict}{extra}")
        for i in self.ignored:
            lines.append(f"  ignored: {i.path}: {i.why}")
        return "\n".join(lines)

    # -- the oracle ---------------------------------------------------------------------
    def compare_with_docker(self) -> Outcome:
        """Step: docker's own verdicts (`docker info`) must equal the kit's, path by path."""
        docker = shutil.which("docker")
        if not docker:
            return Outcome.skipped("docker is not on PATH: the verdicts are the kit's alone")
        listed = docker_verdicts(docker, self.env)
        self.docker = {"binary": docker, "plugins": listed}
        disagreements = compare(self.plugins, self.ignored, listed)
        if disagreements:
            raise PluginError("the kit and the Docker CLI disagree:\n  " + "\n  ".join(disagreements),
                              "docker's verdict is the truth: report this with the inventory (a rule in"
                              " runbook_checks/plugins.py is out of date for this docker); nothing was changed")
        return Outcome.ok(f"{docker} agrees on all {len(self.plugins)} candidates", **self.facts())

    # -- inventory files ----------------------------------------------------------------
    def write_inventory(self, folder: Path) -> Outcome:
        """Step: the inventory as JSON and as a Markdown table, a record beside the run's."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = files.stamp()
        json_path, md_path = folder / f"{stamp}.json", folder / f"{stamp}.md"
        json_path.write_text(json.dumps(self.document(), indent=2) + "\n")
        md_path.write_text(self.markdown())
        self.inventory_paths = {"inventory_json": str(json_path), "inventory_markdown": str(md_path)}
        return Outcome.ok(f"{json_path}\n{md_path}", **self.inventory_paths)

    def document(self) -> dict[str, Any]:
        return {
            "docker_config": str(self.config_dir),
            "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "required_plugins": self.required,
            "search_path": [asdict(d) for d in self.dirs],
            "config_json_error": self.config.error if self.config else "",
            "docker": self.docker.get("binary"),
            "plugins": self.inventory(),
            "ignored": [asdict(i) for i in self.ignored],
        }

    def markdown(self) -> str:
        rows = ["| name | verdict | required | purpose | path | shadowed by | owner | mode | findings | last use |"
                " size | sha256 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for p in self.plugins:
            verdict = "valid" if p.valid else f"**invalid**: {p.error}"
            rows.append("| " + " | ".join(_md(x) for x in (
                f"`{p.name}`", verdict, p.required, p.purpose, f"`{p.path}`", p.shadowed_by or "",
                f"{p.owner}:{p.group}", p.mode, "; ".join(p.insecure + p.notes),
                p.last_use or p.last_use_note.split(";")[0] or "not known",
                "" if p.size is None else str(p.size), (p.sha256 or "")[:12])) + " |")
        lines = [f"# Docker CLI plugins: {self.config_dir}", "",
                 f"{len(self.plugins)} candidates, {len(self.invalid)} invalid, {len(self.insecure)} insecure.", "",
                 "Search path, in docker's order:", ""]
        lines += [f"{i}. `{d.path}` ({d.origin}): {d.state}" for i, d in enumerate(self.dirs, 1)]
        lines += ["", *rows, ""]
        if self.ignored:
            lines += ["Ignored by docker:", ""] + [f"- `{i.path}`: {i.why}" for i in self.ignored] + [""]
        return "\n".join(lines)

    # -- judgement ------------------------------------------------------------------------
    def usage(self) -> Outcome:
        """Step: which plugins nobody asked for, and when each was last run (where known)."""
        extra = [p for p in self.active if p.required == "not required"]
        lines = [f"  {p.name}: {p.purpose}; last use {p.last_use or 'not known'} ({p.last_use_note or 'no file'})"
                 for p in extra]
        for p in self.plugins:
            if p.shadowed_by and p.valid:
                lines.append(f"  {p.path}: a valid copy docker never runs (shadowed by {p.shadowed_by})")
        head = (f"{len(extra)} not required (required: {', '.join(self.required) or 'none'})" if extra
                else f"every plugin is required (required: {', '.join(self.required) or 'none'})")
        return Outcome.ok("\n".join([head, *lines]),
                          plugins_not_required=[p.name for p in extra])

    def findings(self) -> list[str]:
        """Everything an operator should act on, each with its fix."""
        found = []
        for p in self.invalid:
            where = "" if p.active else f" (shadowed by {p.shadowed_by}; active if that one goes)"
            found.append(f"invalid: {p.path}{where}: {p.error}; fix: {p.fix}")
        for p in self.plugins:
            found += [f"insecure: {p.path}: {finding}" for finding in p.insecure]
        for name in self.required:
            plugin = self.by_name(name)
            if plugin is None:
                found.append(f"required plugin {name} is missing; fix: install it"
                             " (invoke runbook plugins-configure --mode apply)")
            elif not plugin.valid:
                found.append(f"required plugin {name} is invalid ({plugin.error}); fix: reinstall it"
                             " (invoke runbook plugins-configure --mode apply)")
        if self.config and self.config.error:
            found.append(f"config.json: {self.config.error}; docker ignores the whole file. fix: correct it by"
                         " hand (the kit never rewrites a file it cannot read)")
        for d in self.dirs:
            if d.origin == "cliPluginsExtraDirs" and d.state == "missing":
                found.append(f"config.json lists {d.path}, which does not exist; fix: plugins-clean removes the"
                             " entry (with a backup of config.json)")
            elif d.state.startswith("unreadable") or (d.state == "not a directory" and d.origin != "system"):
                found.append(f"plugin directory {d.path} is {d.state}: docker skips it silently; fix: make it a"
                             " readable directory or remove it from cliPluginsExtraDirs")
        return found

    def verdict(self) -> Outcome:
        """Step: fails when anything needs attention, listing each finding with its fix."""
        found = self.findings()
        if found:
            raise PluginError(f"{len(found)} findings:\n  " + "\n  ".join(found),
                              "apply each fix above; invoke runbook plugins-clean --mode apply quarantines the"
                              " invalid plugins and prunes config.json")
        return Outcome.ok(f"{len(self.active)} plugins valid and safe; required present:"
                          f" {', '.join(self.required) or 'none'}")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------------------
# docker as the oracle
# --------------------------------------------------------------------------------------
def docker_verdicts(docker: str, env: dict[str, str], timeout: float = ORACLE_TIMEOUT) -> list[dict[str, Any]]:
    """`docker info --format '{{json .ClientInfo.Plugins}}'`: Name, Path, Err, ShadowedPaths."""
    try:
        proc = run_docker(docker, ["info", "--format", "{{json .ClientInfo.Plugins}}"], env, timeout)
    except subprocess.TimeoutExpired:
        raise PluginError(f"docker info did not answer within {timeout:g}s: a plugin's metadata command hangs"
                          " and docker has no timeout",
                          "the inventory names the plugin that timed out; quarantine it (plugins-clean)") from None
    if proc.returncode != 0:
        raise PluginError(f"docker info failed ({proc.returncode}): {proc.stderr.strip()[:500]}",
                          "run `docker info --format '{{json .ClientInfo.Plugins}}'` by hand to see why")
    try:
        listed = json.loads(proc.stdout or "null") or []
    except ValueError as exc:
        raise PluginError(f"docker info printed no JSON plugin list ({exc}): {proc.stdout[:300]!r}",
                          "check that `docker` is the Docker CLI (v20.10 or newer)") from None
    return listed


def compare(plugins: list[Plugin], ignored: list[Ignored], listed: list[dict[str, Any]]) -> list[str]:
    """Disagreements between the kit's candidates and docker's list, one line each. Also
    records docker's error on each plugin (docker_error)."""
    out = []
    docker_active = {p.get("Path"): p for p in listed}
    docker_shadowed = {s: p.get("Path") for p in listed for s in p.get("ShadowedPaths") or []}
    ours = {p.path: p for p in plugins}
    for plugin in plugins:
        if plugin.active:
            theirs = docker_active.get(plugin.path)
            if theirs is None:
                out.append(f"{plugin.path}: the kit lists it, docker does not"
                           + (f" (docker: shadowed by {docker_shadowed[plugin.path]})"
                              if plugin.path in docker_shadowed else ""))
                continue
            plugin.docker_error = theirs.get("Err") or ""
            if plugin.valid != (not theirs.get("Err")):
                theirs_said = f"invalid: {theirs['Err']}" if theirs.get("Err") else "valid"
                out.append(f"{plugin.path}: docker says {theirs_said},"
                           f" the kit says {'valid' if plugin.valid else 'invalid: ' + plugin.error}")
        elif docker_shadowed.get(plugin.path) != plugin.shadowed_by:
            out.append(f"{plugin.path}: the kit says shadowed by {plugin.shadowed_by},"
                       f" docker says {docker_shadowed.get(plugin.path) or 'not shadowed'}")
    for path in docker_active:
        if path not in ours:
            out.append(f"{path}: docker lists it, the kit does not"
                       + (" (the kit ignored it: not a regular file or symlink)" if path in {i.path for i in ignored}
                          else ""))
    for path, winner in docker_shadowed.items():
        if path not in ours:
            out.append(f"{path}: docker lists it as shadowed by {winner}, the kit does not list it")
    return out


def docker_plugin_warnings(docker: str, env: dict[str, str], timeout: float = ORACLE_TIMEOUT) -> list[str]:
    """The `WARNING: Plugin ... is not valid` lines a plain `docker info` prints (its
    server part fails without an engine; that is not our business here)."""
    try:
        proc = run_docker(docker, ["info"], env, timeout)
    except subprocess.TimeoutExpired:
        raise PluginError(f"docker info did not answer within {timeout:g}s: a plugin's metadata command hangs",
                          "run the plugins-audit runbook: the plugin that timed out is in its inventory") from None
    return [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if "WARNING: Plugin" in line]


def inventory_dir() -> Path:
    """runs/plugins-audit/inventory/: beside the audit's run records, out of their *.json glob."""
    from .runner import runs_dir

    return runs_dir() / "plugins-audit" / "inventory"
