"""A tree of crafted Docker CLI plugins: one DOCKER_CONFIG with a cli-plugins directory,
an extra directory listed in config.json (and one listed there that does not exist).

Each fixture says what docker 28 makes of it: valid, invalid (with a piece of docker's
message), or ignored (not a candidate at all). The tests check that docker and the kit
both say exactly that."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

VENDOR = "buildkit-ops tests"


def metadata(**fields) -> str:
    data = {"SchemaVersion": "0.1.0", "Vendor": VENDOR, "Version": "0.0.1",
            "ShortDescription": "a crafted test plugin"}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def script(stdout: str = "", exit_code: int = 0, before: str = "") -> str:
    """A POSIX sh plugin answering docker-cli-plugin-metadata with `stdout`."""
    quoted = stdout.replace("'", "'\\''")
    return (f"#!/bin/sh\n{before}"
            f"if [ \"$1\" = docker-cli-plugin-metadata ]; then printf '%s' '{quoted}'; exit {exit_code}; fi\n"
            "echo \"crafted plugin $0 $*\"\n")


def write(path: Path, text: str, mode: int = 0o755) -> None:
    path.write_text(text)
    os.chmod(path, mode)


@dataclass
class Fixture:
    key: str  # short name for the tests
    rel: str  # path under the tree root
    verdict: str  # valid | invalid | ignored | shadowed
    message: str  # a piece of docker's error (invalid), or why (ignored)
    make: Callable[[Path, "Tree"], None]
    covers: str = ""
    root_only: bool = False


@dataclass
class Tree:
    root: Path
    hang_seconds: int = 0

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def plugin_dir(self) -> Path:
        return self.config_dir / "cli-plugins"

    @property
    def extra_dir(self) -> Path:
        return self.root / "extra"

    @property
    def gone_dir(self) -> Path:
        return self.root / "gone"

    @property
    def config_json(self) -> Path:
        return self.config_dir / "config.json"

    def path(self, fixture: Fixture) -> Path:
        return self.root / fixture.rel


def _valid(path, tree):
    write(path, script(metadata()))


def _fifo(path, tree):
    os.mkfifo(path)


def _socket(path, tree):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays


def _foreign(path, tree):
    write(path, script(metadata()))
    os.chown(path, 65534, 65534)


FIXTURES = [
    Fixture("buildx", "config/cli-plugins/docker-buildx", "valid", "", lambda p, t: write(
        p, script(metadata(ShortDescription="stands in for Docker Buildx in the tests", Version="v0.0.0-test"))),
        "valid, and required"),
    Fixture("hello", "config/cli-plugins/docker-hello", "valid", "", _valid, "valid"),
    Fixture("noexec", "config/cli-plugins/docker-noexec", "invalid", "permission denied",
            lambda p, t: write(p, script(metadata()), 0o644), "not executable"),
    Fixture("dangling", "config/cli-plugins/docker-dangling", "invalid", "no such file or directory",
            lambda p, t: os.symlink(t.root / "nowhere" / "docker-dangling", p), "a broken symlink"),
    Fixture("exitthree", "config/cli-plugins/docker-exitthree", "invalid", "exit status 3",
            lambda p, t: write(p, script(metadata(), exit_code=3)), "exits non-zero"),
    Fixture("garbage", "config/cli-plugins/docker-garbage", "invalid", "invalid metadata",
            lambda p, t: write(p, script("this is not json")), "invalid JSON metadata"),
    Fixture("upper", "config/cli-plugins/docker-Upper", "invalid", 'plugin candidate "Upper" did not match',
            _valid, "a bad name (uppercase)"),
    Fixture("dash", "config/cli-plugins/docker-two-words", "invalid", 'plugin candidate "two-words" did not match',
            _valid, "a bad name (a dash)"),
    Fixture("adir", "config/cli-plugins/docker-adir", "ignored", "not a regular file",
            lambda p, t: p.mkdir(), "not a regular file: a directory"),
    Fixture("fifo", "config/cli-plugins/docker-fifo", "ignored", "not a regular file", _fifo,
            "not a regular file: a fifo"),
    Fixture("socket", "config/cli-plugins/docker-socket", "ignored", "not a regular file", _socket,
            "not a regular file: a socket"),
    Fixture("dirlink", "config/cli-plugins/docker-dirlink", "invalid", "permission denied",
            lambda p, t: os.symlink(t.extra_dir, p), "a symlink to a directory"),
    Fixture("sleepy", "config/cli-plugins/docker-sleepy", "invalid", "unexpected end of JSON input",
            lambda p, t: write(p, script("", before=f"sleep {t.hang_seconds}\n")), "hangs (prints nothing, late)"),
    Fixture("twice", "extra/docker-twice", "valid", "", lambda p, t: write(
        p, script(metadata(ShortDescription="the copy in the extra directory"))), "the same plugin in two directories"),
    Fixture("twice-shadowed", "config/cli-plugins/docker-twice", "shadowed", "extra/docker-twice", _valid,
            "... and its shadowed copy"),
    Fixture("shadowbad", "extra/docker-shadowbad", "valid", "", _valid, "a valid plugin ..."),
    Fixture("shadowbad-shadowed", "config/cli-plugins/docker-shadowbad", "shadowed", "extra/docker-shadowbad",
            lambda p, t: write(p, script(metadata(), exit_code=1)), "... shadowing an invalid copy"),
    Fixture("novendor", "config/cli-plugins/docker-novendor", "invalid", "does not define a vendor",
            lambda p, t: write(p, script(metadata(Vendor=...))), "missing vendor"),
    Fixture("nullvendor", "config/cli-plugins/docker-nullvendor", "invalid", "does not define a vendor",
            lambda p, t: write(p, script(metadata(Vendor=None))), "vendor null"),
    Fixture("oldschema", "config/cli-plugins/docker-oldschema", "invalid", 'SchemaVersion "0.0.9" is not valid',
            lambda p, t: write(p, script(metadata(SchemaVersion="0.0.9"))), "wrong SchemaVersion"),
    Fixture("wrongtype", "config/cli-plugins/docker-wrongtype", "invalid", "cannot unmarshal number",
            lambda p, t: write(p, script(metadata(Vendor=5))), "a field of the wrong JSON type"),
    Fixture("lowerkeys", "config/cli-plugins/docker-lowerkeys", "valid", "",
            lambda p, t: write(p, script('{"schemaversion":"0.1.0","vendor":"lower"}')),
            "lowercase keys (Go matches fields case-insensitively)"),
    Fixture("builtin", "config/cli-plugins/docker-ps", "invalid", 'plugin "ps" duplicates builtin command', _valid,
            "named like a builtin command"),
    Fixture("alias", "config/cli-plugins/docker-remove", "invalid", "duplicates an alias of builtin command", _valid,
            "named like an alias of a builtin"),
    Fixture("noshebang", "config/cli-plugins/docker-noshebang", "invalid", "exec format error",
            lambda p, t: write(p, metadata()), "executable text without #!"),
    Fixture("linked", "config/cli-plugins/docker-linked", "valid", "",
            lambda p, t: os.symlink(t.extra_dir / "docker-twice", p), "a symlink to a valid plugin"),
    Fixture("open", "config/cli-plugins/docker-open", "valid", "", lambda p, t: write(p, script(metadata()), 0o777),
            "world-writable (valid, insecure)"),
    Fixture("foreign", "config/cli-plugins/docker-foreign", "valid", "", _foreign,
            "owned by nobody (valid, insecure)", root_only=True),
]
BY_KEY = {f.key: f for f in FIXTURES}


def build(root: Path, keys: list[str] | None = None, hang_seconds: int = 0, config: str | None = None) -> Tree:
    """The tree under `root`; `keys` picks fixtures (default: all but the hanging one,
    which needs hang_seconds). config.json lists extra/ and gone/ unless `config` is given."""
    tree = Tree(root, hang_seconds)
    tree.plugin_dir.mkdir(parents=True)
    tree.extra_dir.mkdir()
    if config is None:
        config = json.dumps({"auths": {}, "cliPluginsExtraDirs": [str(tree.extra_dir), str(tree.gone_dir)]},
                            indent="\t") + "\n"
    tree.config_json.write_text(config)
    os.chmod(tree.config_json, 0o600)
    chosen = keys if keys is not None else [f.key for f in FIXTURES if f.key != "sleepy" or hang_seconds]
    for key in chosen:
        fixture = BY_KEY[key]
        if fixture.root_only and os.geteuid() != 0:
            continue
        fixture.make(tree.path(fixture), tree)
    (tree.plugin_dir / "README").write_text("not a plugin: no docker- prefix\n")
    return tree


def present(tree: Tree, keys: list[str] | None = None) -> list[Fixture]:
    return [f for f in FIXTURES if os.path.lexists(tree.path(f)) and (keys is None or f.key in keys)]


def tree_state(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every path under root: type, mode, owner, bytes' sha256 or link target, mtime.
    Directories by type and mode only (moving files in and out changes their mtime)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        st = os.lstat(path)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path), st.st_uid, st.st_gid)
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", mode, st.st_uid, st.st_gid)
        elif stat.S_ISREG(st.st_mode):
            found[rel] = ("file", mode, st.st_uid, st.st_gid, hashlib.sha256(path.read_bytes()).hexdigest(),
                          st.st_mtime_ns)
        else:
            found[rel] = ("special", stat.S_IFMT(st.st_mode), mode, st.st_uid, st.st_gid)
    return found
