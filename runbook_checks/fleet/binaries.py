"""The local cluster's programs, built from the Go module proxy once per version into the
kit's cache outside the checkout (daemon.install.cached_build), then reused by the lab, the
tests and CI: Kubernetes (from k8s.io/kubernetes with its staging modules taken from the
proxy), etcd and metrics-server. Nothing is downloaded from anywhere else."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..core.errors import InstallError
from ..daemon.install import cached_build

KUBERNETES_VERSION = "v1.34.4"  # 1.34: the last minor that runs on a cgroup v1 host (failCgroupV1: false)
ETCD_VERSION = "v3.6.16"  # the etcd minor Kubernetes 1.34 is tested with
METRICS_SERVER_VERSION = "v0.8.0"
KUBERNETES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")


def _go(args: list[str], cwd: Path, what: str, timeout: float = 3600) -> str:
    go = shutil.which("go")
    if not go:
        raise InstallError(f"building {what} needs a Go toolchain, and none is on PATH", "install Go (./kit checks it)")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOWORK="off")
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([go, *args], cwd=cwd, stdout=out, stderr=err, text=True, env=env)
        while proc.poll() is None:  # a long build says it is alive once a minute
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                minutes = (time.monotonic() - start) / 60
                if minutes > timeout / 60:
                    proc.kill()
                print(f"  go {args[0]} for {what}: {minutes:.0f} min so far", flush=True)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise InstallError(f"go {' '.join(args[:2])} for {what} failed:\n{err.read().strip()[-2000:]}",
                               "check that the Go module proxy is reachable (go env GOPROXY) and the version exists")
        return out.read()


def _module_copy(module: str, version: str, into: Path) -> Path:
    """A writable copy of MODULE@VERSION from the Go module proxy."""
    info = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], into, module))
    src = into / "src"
    shutil.copytree(info["Dir"], src)
    for path in [src, *src.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    return src


def _build_kubernetes(version: str, staging: Path) -> None:
    minor = version.lstrip("v").split(".")[1]
    with tempfile.TemporaryDirectory(prefix="k8s-") as tmp:
        src = _module_copy("k8s.io/kubernetes", version, Path(tmp))
        # the published module carries vendor/ and a go.work for its ./staging copies; the
        # proxy serves those same modules as k8s.io/NAME v0.MINOR.PATCH
        for extra in ("vendor", "go.work", "go.work.sum"):
            target = src / extra
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        staged = "v0" + version[2:]
        gomod = src / "go.mod"
        gomod.write_text(re.sub(r"(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+", rf"\1 => \1 {staged}",
                                gomod.read_text()))
        stamp = " ".join(f"-X {pkg}.{k}={v}" for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                         for k, v in (("gitVersion", version), ("gitMajor", "1"), ("gitMinor", minor),
                                      ("gitTreeState", "clean")))
        _go(["build", "-trimpath", "-ldflags", f"-s -w {stamp}", "-o", f"{staging}/", *(f"./cmd/{c}" for c in KUBERNETES)], src,
            f"Kubernetes {version}")


def _build_etcd(version: str, staging: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="etcd-") as tmp:
        src = _module_copy("go.etcd.io/etcd/server/v3", version, Path(tmp))
        gomod = src / "go.mod"  # its replace directives point into etcd's own repository
        gomod.write_text(re.sub(r"(?ms)^replace \(.*?^\)\n|^replace .*\n", "", gomod.read_text()))
        _go(["mod", "tidy"], src, f"etcd {version}")
        _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", f"{staging}/etcd", "."], src, f"etcd {version}")


def _build_metrics_server(version: str, staging: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="metrics-server-") as tmp:
        (Path(tmp) / "go.mod").write_text("module buildkit-ops/metrics-server\n\ngo 1.24\n")
        _go(["get", "-tool", f"sigs.k8s.io/metrics-server/cmd/metrics-server@{version}"], Path(tmp), "metrics-server")
        _go(["build", "-trimpath", "-ldflags", "-s -w", "-o", f"{staging}/metrics-server",
             "sigs.k8s.io/metrics-server/cmd/metrics-server"], Path(tmp), f"metrics-server {version}")


def programs() -> dict[str, Path]:
    """Every program of the local cluster by name, built once per version (Kubernetes about
    20 minutes cold on 2 cores; seconds once cached)."""
    k, e, m = KUBERNETES_VERSION, ETCD_VERSION, METRICS_SERVER_VERSION
    cached_build("kubernetes", k, KUBERNETES, lambda staging: _build_kubernetes(k, staging), minutes=20)
    cached_build("etcd", e, ("etcd",), lambda staging: _build_etcd(e, staging), minutes=3)
    cached_build("metrics-server", m, ("metrics-server",), lambda staging: _build_metrics_server(m, staging), minutes=3)
    return {name: cached_path(name) for _, names in FOLDERS for name in names}


FOLDERS = (("kubernetes", KUBERNETES), ("etcd", ("etcd",)), ("metrics-server", ("metrics-server",)))


def cached_path(program: str) -> Path:
    """Where a program of the local cluster is cached (whether or not it is built yet)."""
    from ..core.paths import cache_dir

    versions = {"kubernetes": KUBERNETES_VERSION, "etcd": ETCD_VERSION, "metrics-server": METRICS_SERVER_VERSION}
    folder = next(name for name, names in FOLDERS if program in names)
    return cache_dir() / folder / versions[folder] / program
