"""A drill's sandbox: a builder of its own (install and configure applied by the runbooks,
ci profile, a temporary state directory and free ports) with a local registry and an S3
server beside it, a baseline build whose cache is in both, and builds in flight that a
drill can watch step by step to strike at the right moment."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..cache import registry
from ..cache.backends import CacheBackend, backend_from_params
from ..core import layout as layout_mod, runner
from ..core.errors import KitError
from ..core.layout import Layout
from ..daemon import service, stack
from ..daemon.buildctl import Buildctl, BuildResult
from ..daemon.contexts import busybox_rootfs
from ..daemon.supervisor import Supervisor

BUCKET = "kit-drills"
# the baseline: a RUN step and a layer of random bytes (its export takes a moment)
DOCKERFILE = ("FROM scratch\nCOPY rootfs/ /\nRUN echo {nonce} > /seed && sleep {sleep}\n"
              "RUN dd if=/dev/urandom of=/payload bs=1M count={payload_mb} 2>/dev/null\n")


@dataclass
class Sandbox:
    layout: Layout
    registry_port: int
    s3_port: int
    work: Path  # contexts and the sandbox's run records

    @property
    def manager(self) -> Supervisor:
        return Supervisor(self.layout)

    @property
    def buildctl(self) -> Buildctl:
        return Buildctl.for_layout(self.layout)

    @property
    def runs(self) -> Path:
        return self.work / "runs"

    def sets(self, *extra: str) -> tuple[str, ...]:
        return (f"state_dir={self.layout.state_dir}", f"registry_port={self.registry_port}",
                f"s3_port={self.s3_port}", *extra)

    def runbook(self, name: str, mode: str = "apply", *extra: str) -> runner.RunResult:
        return runner.run(name, "ci", mode, self.sets(*extra), base=self.runs, progress=False)

    def backend(self, kind: str, name: str) -> CacheBackend:
        """The cache NAME of a backend kind beside the sandbox, as a runbook's parameters
        would select it: the registry's kit/drills:NAME, S3's BUCKET/NAME."""
        return backend_from_params({"cache_backend": kind, "cache_ref": f"127.0.0.1:{self.registry_port}/kit/drills:{name}",
                                    "registry_port": self.registry_port, "s3_port": self.s3_port,
                                    "cache_bucket": BUCKET, "cache_prefix": name}, self.layout)

    def context(self, nonce: str = "", sleep: float = 0, payload_mb: int = 4) -> Path:
        """A build context (a fresh nonce: steps no cache holds)."""
        ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=self.work))
        shutil.copytree(self.work / "rootfs", ctx / "rootfs", symlinks=True)
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(nonce=nonce or uuid.uuid4().hex, sleep=sleep,
                                                          payload_mb=payload_mb))
        return ctx

    @property
    def baseline(self) -> Path:
        return self.work / "baseline"

    def baseline_caches(self) -> list[CacheBackend]:
        return [self.backend("registry", "baseline"), self.backend("s3", "baseline")]

    def rebuild_baseline(self) -> BuildResult:
        """The baseline again, importing its remote caches: every work step CACHED, from the
        daemon's own cache or, where a fault took that, from the registry's."""
        return self.buildctl.build(self.baseline, import_cache=[b.import_option() for b in self.baseline_caches()])


def prepare(box: Sandbox, *sets: str, baseline: bool = True, ready_timeout: float = 60) -> None:
    """Install and configure `box`'s builder with the runbooks, wait for its registry, make
    the S3 bucket and the busybox root filesystem; with `baseline`, build the baseline and
    export its cache to both."""
    for name in ("install", "configure"):
        result = box.runbook(name, "apply", *sets)
        if result.report.status == "failed":
            failed = [s for s in result.report.steps if s.status == "failed"]
            raise KitError(f"the sandbox did not come up: {name}: {failed[-1].message if failed else ''}",
                           f"read {result.notebook}")
    registry.wait_ready(box.registry_port, timeout=ready_timeout, log=registry.log_path(box.layout))
    box.backend("s3", "baseline").store.ensure_bucket(BUCKET, apply=True)
    busybox_rootfs(box.work / "rootfs")
    if baseline:
        box.context(nonce="baseline", payload_mb=4).rename(box.baseline)
        box.buildctl.build(box.baseline, export_cache=[b.export_option() for b in box.baseline_caches()])


@contextmanager
def sandbox(*sets: str, ready_timeout: float = 60) -> Iterator[Sandbox]:
    """A prepared sandbox in /tmp/bkdrill-*, with the baseline; removed after, all of it."""
    state = Path(tempfile.mkdtemp(prefix="bkdrill-", dir="/tmp"))
    work = state / "drill"
    work.mkdir()
    try:
        box = Sandbox(layout_mod.for_params({"profile": "ci", "state_dir": str(state)}),
                      service.free_port(), service.free_port(), work)
        prepare(box, *sets, ready_timeout=ready_timeout)
        yield box
    finally:
        stack.down(purge=True, state_dir=str(state), profile="ci")


# --------------------------------------------------------------------------------------
# a build in flight, watched vertex by vertex
# --------------------------------------------------------------------------------------
@dataclass
class InFlight:
    """`buildctl build --progress rawjson` running in the background; `started` holds the
    names of the vertices that have started, as they start."""

    proc: subprocess.Popen
    started: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                status = json.loads(line)
            except ValueError:
                if line.startswith("error:"):
                    self.errors.append(line.strip())
                continue
            for vertex in status.get("vertexes") or []:
                if vertex.get("started") and vertex["name"] not in self.started:
                    self.started.append(vertex["name"])

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 120) -> str:
        """The first started vertex `predicate` accepts; an error if the build ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((name for name in self.started if predicate(name)), None)
            if hit:
                return hit
            if self.proc.poll() is not None and not (self._reader and self._reader.is_alive()):
                raise KitError(f"the build ended (exit {self.proc.returncode}) before the moment the drill waits for;"
                               f" it started: {self.started[-3:]}", "make the drill's workload longer")
            time.sleep(0.02)
        raise KitError(f"no build step matched within {timeout:.0f}s; started: {self.started[-3:]}",
                       "read the daemon's log")

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        """(exit code, buildctl's error line)."""
        self.proc.wait(timeout=timeout)
        if self._reader:
            self._reader.join(timeout=10)
        return self.proc.returncode, (self.errors[-1] if self.errors else "")


def start_build(client: Buildctl, context: Path, export_cache: list[str] | tuple[str, ...] = ()) -> InFlight:
    """`client` builds `context` in the background (over mutual TLS when it has a bundle)."""
    args = [str(client.binary), "--addr", client.address, *client.tls_args(), "build", "--frontend", "dockerfile.v0",
            "--local", f"context={context}", "--local", f"dockerfile={context}", "--progress", "rawjson"]
    for spec in export_cache:
        args += ["--export-cache", spec]
    flight = InFlight(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    flight._reader = threading.Thread(target=flight._read, daemon=True)
    flight._reader.start()
    return flight
