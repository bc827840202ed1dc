"""docker-buildx as a Docker CLI plugin, and a buildx builder on the kit's buildkitd
through the remote driver (which needs no Docker engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from ..core import files
from ..core.errors import InstallError, KitError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT
from ..core.results import Outcome
from ..daemon.contexts import context_with_base
from ..daemon.install import binary_version, cached_go_binary
from .discovery import config_dir

BUILDX_VERSION = "v0.38.2"
"""Pinned: the newest stable docker/buildx the Go module proxy serves."""
MODULE = "github.com/docker/buildx"


def plugin_dir(layout: Layout, docker_config: str = "") -> Path:
    """Production installs for every user (/usr/local/lib/docker/cli-plugins under the
    state dir); lab and ci install into the Docker config directory's cli-plugins."""
    if layout.style == "fhs":
        return layout.state_dir / "usr/local/lib/docker/cli-plugins"
    return config_dir(docker_config) / "cli-plugins"


def docker_env(docker_config: str = "") -> dict[str, str]:
    return dict(os.environ, DOCKER_CONFIG=str(config_dir(docker_config)))


def plugin_version(path: Path) -> str | None:
    return binary_version(path, "version")


def debian_candidate() -> str | None:
    """The docker-buildx version apt would install, or None when no source has it."""
    if not shutil.which("apt-cache"):
        return None
    out = subprocess.run(["apt-cache", "policy", "docker-buildx"], capture_output=True, text=True).stdout
    match = re.search(r"Candidate:\s*(\S+)", out)
    return match.group(1) if match and match.group(1) != "(none)" else None


def from_go(version: str = BUILDX_VERSION) -> Path:
    """buildx VERSION in the kit's cache, built from the module proxy once per version."""
    return cached_go_binary(MODULE, "cmd/buildx", version, ldflags=f"-s -w -X {MODULE}/version.Version={version}")


def _from_debian(staging: Path) -> Path:
    """`apt-get download` and extract: never adds an apt source or upgrades anything."""
    if not debian_candidate():
        raise InstallError("no docker-buildx package in this host's apt sources",
                           "use buildx_source=go (do not add a newer Debian suite unpinned: it upgrades libc and systemd)")
    subprocess.run(["apt-get", "download", "docker-buildx"], cwd=staging, check=True, capture_output=True, timeout=600)
    deb = next(staging.glob("docker-buildx_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(staging / "root")], check=True, timeout=120)
    found = list((staging / "root").rglob("docker-buildx"))
    if not found:
        raise InstallError(f"{deb.name} holds no docker-buildx binary", "use buildx_source=go")
    return found[0]


def ensure_plugin(target_dir: Path, version: str, source: str, apply: bool) -> Outcome:
    """docker-buildx of `version` in `target_dir`, staged and version-checked before it
    replaces anything."""
    target = target_dir / "docker-buildx"
    have = plugin_version(target)
    if have == version:
        return Outcome.ok(f"{target} is buildx {version}", buildx=str(target), buildx_version=version)
    chosen = source if source != "auto" else ("debian" if debian_candidate() else "go")
    diff = f"-docker-buildx {have or '(absent)'}\n+docker-buildx {version}\n"
    if not apply:
        files.writable_dir(target_dir)
        return Outcome.changed(f"would install buildx {version} from {chosen} into {target_dir}", diff)
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=target_dir) as tmp:
        built = from_go(version) if chosen == "go" else _from_debian(Path(tmp))
        got = plugin_version(built)
        if got != version:
            raise InstallError(f"the {chosen} source gave buildx {got or '(no version)'}, not {version}",
                               "nothing was replaced; set buildx_version to what the source provides")
        files.atomic_copy(built, target)
    return Outcome.changed(f"installed buildx {version} from {chosen} as {target}", diff, buildx=str(target),
                           buildx_version=version)


def _docker(*args: str, env: dict[str, str], timeout: float = 120, check: bool = True,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    if not shutil.which("docker"):
        raise KitError("the docker CLI is not installed", "install the Docker CLI (docker-ce-cli); no engine is needed")
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if check and proc.returncode:
        raise KitError(f"docker {' '.join(args[:3])} failed: {(proc.stderr or proc.stdout).strip()[-1000:]}",
                       "read the message above; `docker buildx ls` shows the builders")
    return proc


def builder_endpoint(name: str, env: dict[str, str]) -> str | None:
    proc = _docker("buildx", "inspect", name, env=env, check=False)
    if proc.returncode:
        return None
    match = re.search(r"^Endpoint:\s*(\S+)", proc.stdout, re.M)
    return match.group(1) if match else ""


def current_builder(env: dict[str, str]) -> str | None:
    proc = _docker("buildx", "inspect", env=env, check=False)
    match = re.search(r"^Name:\s*(\S+)", proc.stdout, re.M)
    return match.group(1) if proc.returncode == 0 and match else None


def ensure_builder(name: str, endpoint: str, env: dict[str, str], apply: bool) -> Outcome:
    """A remote-driver builder named `name` pointing at `endpoint`, made the default."""
    have = builder_endpoint(name, env)
    current = current_builder(env)
    if have == endpoint and current == name:
        return Outcome.ok(f"builder {name} → {endpoint} is the default", builder=name, endpoint=endpoint)
    actions = []
    if have != endpoint:
        actions.append(f"{'recreate' if have is not None else 'create'} builder {name} → {endpoint}")
    if current != name:
        actions.append(f"make {name} the default (now {current or 'none'})")
    diff = f"-{name} {have or '(absent)'} default={current}\n+{name} {endpoint} default={name}\n"
    if not apply:
        return Outcome.changed("would " + "; ".join(actions), diff)
    if have is not None and have != endpoint:
        _docker("buildx", "rm", name, env=env)
    if have != endpoint:
        _docker("buildx", "create", "--name", name, "--driver", "remote", endpoint, env=env)
    _docker("buildx", "use", "--default", "--global", name, env=env)
    return Outcome.changed("; ".join(actions), diff, builder=name, endpoint=endpoint)


def build_through(name: str, env: dict[str, str], apply: bool) -> Outcome:
    """`docker buildx build` through the builder: a RUN step on the local busybox base."""
    if builder_endpoint(name, env) is None:
        if not apply:
            return Outcome.skipped(f"builder {name} does not exist yet (check mode)")
        raise KitError(f"builder {name} does not exist", "run the plugins-configure runbook in apply mode")
    with tempfile.TemporaryDirectory(prefix="bk-buildx-") as tmp:
        ctx = context_with_base(Path(tmp), "FROM base\nARG NONCE\nRUN echo $NONCE >/dev/null && expr 6 \\* 7\n")
        proc = _docker("buildx", "build", "--builder", name, "--progress", "plain", "--build-arg",
                       f"NONCE={uuid.uuid4().hex}", str(ctx), env=env, timeout=600)
    if not re.search(r"^#\d+ [\d.]+ 42$", proc.stderr, re.M):
        raise KitError("docker buildx build succeeded but the RUN step's output is missing",
                       "run it by hand with --progress plain and compare")
    return Outcome.ok(f"docker buildx build through {name} ran a RUN step on the kit's buildkitd")


POLICY_EXAMPLE = PROJECT_ROOT / "docs/examples/build-policy"


def policy_in_force(name: str, env: dict[str, str], apply: bool) -> Outcome:
    """buildx's build policies (Rego in Dockerfile.rego beside the Dockerfile, buildx 0.31
    and later): the example policy's own tests pass, and a build through the builder whose
    base the policy does not allow is refused before anything is pulled. buildx evaluates
    them on the client: buildctl, or a client without the file, is not bound by them."""
    if builder_endpoint(name, env) is None:
        if not apply:
            return Outcome.skipped(f"builder {name} does not exist yet (check mode)")
        raise KitError(f"builder {name} does not exist", "run the plugins-configure runbook in apply mode")
    tests = _docker("buildx", "policy", "test", ".", env=env, check=False, cwd=POLICY_EXAMPLE)  # it reads ./Dockerfile.rego
    passed = re.findall(r"^(\S+): PASS", tests.stdout, re.M)
    if tests.returncode or not passed:
        raise KitError(f"the example policy's tests did not pass: {(tests.stdout + tests.stderr).strip()[-1000:]}",
                       f"run docker buildx policy test {POLICY_EXAMPLE} by hand (buildx 0.31 or later)")
    with tempfile.TemporaryDirectory(prefix="bk-policy-") as tmp:
        shutil.copy2(POLICY_EXAMPLE / "Dockerfile.rego", tmp)
        (Path(tmp) / "Dockerfile").write_text("FROM 127.0.0.1:9/kit/not-allowed:1\nRUN true\n")
        proc = _docker("buildx", "build", "--builder", name, "--progress", "plain", tmp, env=env, check=False,
                       timeout=300)
    said = next((ln for ln in proc.stderr.splitlines() if "not allowed by policy" in ln), "")
    if not proc.returncode or not said:
        raise KitError(f"a base image outside the build policy was not refused by it: {proc.stderr.strip()[-800:]}",
                       "check that buildx is 0.31 or later (buildx_version) and loads Dockerfile.rego")
    return Outcome.ok(f"buildx evaluates build policies: {len(passed)} tests of {POLICY_EXAMPLE.name} pass, and a base"
                      " outside the policy is refused before any pull"
                      f" ({said.split('could not resolve image due to policy:')[-1].strip()})")
