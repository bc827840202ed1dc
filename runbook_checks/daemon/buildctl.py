"""A thin wrapper over buildctl returning parsed JSON."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import BuildctlError
from ..core.layout import Layout
from ..core.paths import in_checkout


@dataclass
class BuildResult:
    """The vertices of one build, from `--progress rawjson`."""

    vertices: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)  # --metadata-file: image digest, ...
    transfers: dict[str, int] = field(default_factory=dict)  # status id (a blob's digest...) -> total bytes

    @property
    def bytes_transferred(self) -> int:
        """Bytes of the layer/blob transfers the progress reported (pulls, cache imports)."""
        return sum(self.transfers.values())

    @property
    def steps(self) -> list[dict[str, Any]]:
        """Build steps proper (RUN, COPY, ...), not the [internal] context/definition loads."""
        return [v for v in self.vertices if not v["name"].startswith("[internal]")]

    @property
    def cached_steps(self) -> int:
        return sum(1 for v in self.steps if v.get("cached"))


class Buildctl:
    """buildctl for one daemon address; `tls` is a client bundle for mutual TLS (a team's,
    through the front door): {"ca.pem", "cert.pem", "key.pem": path, "servername": name}."""

    def __init__(self, binary: Path, address: str, timeout: int = 5, tls: dict[str, str] | None = None):
        self.binary = binary
        self.address = address
        self.timeout = timeout
        self.tls = tls or {}

    def tls_args(self) -> list[str]:
        if not self.tls:
            return []
        return ["--tlsservername", self.tls["servername"], "--tlscacert", str(self.tls["ca.pem"]),
                "--tlscert", str(self.tls["cert.pem"]), "--tlskey", str(self.tls["key.pem"])]

    @classmethod
    def for_layout(cls, layout: Layout) -> "Buildctl":
        return cls(layout.buildctl, layout.address)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.binary), "--addr", self.address, "--timeout", str(self.timeout), *self.tls_args(), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise BuildctlError(f"{self.binary} does not exist", "run the install runbook first") from None
        except subprocess.TimeoutExpired:
            raise BuildctlError(f"buildctl {' '.join(args[:2])} did not finish within {timeout:.0f}s",
                                "look for a stuck step with `buildctl debug histories`, or a daemon at its"
                                " max-parallelism, and run again") from None
        if proc.returncode:
            # with --progress rawjson, stderr is JSON status lines and then buildctl's own "error: ..." line
            said = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
            raise BuildctlError(f"buildctl {' '.join(args[:2])} failed: {(said[-1] if said else proc.stderr.strip())[-1500:]}",
                                f"check that buildkitd is running and listening on {self.address}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--format", "{{json .}}").stdout)

    def info(self) -> dict[str, Any]:
        return self.json("debug", "info")

    def workers(self) -> list[dict[str, Any]]:
        return self.json("debug", "workers")

    def disk_usage(self) -> list[dict[str, Any]]:
        """`buildctl du -v` records (ID, RecordType, Size, InUse, Shared, LastUsedAt, ...)."""
        return self.json("du", "-v") or []  # an empty cache is `null`

    def histories(self) -> list[dict[str, Any]]:
        """The daemon's build history (`buildctl debug histories`), one record per build."""
        out = self.run("debug", "histories", "--format", "{{json .}}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def lint(self, context: Path) -> str:
        """BuildKit's own build checks of context/Dockerfile (the Dockerfile frontend's
        frontend.lint subrequest): its text report, empty when nothing is found. A
        Dockerfile that does not parse gives an empty report too (the build says why)."""
        return self.run("build", "--frontend", "dockerfile.v0", "--local", f"context={context}",
                        "--local", f"dockerfile={context}", "--opt", "requestid=frontend.lint").stdout

    def build(self, context: Path, *, build_args: dict[str, str] | None = None, output: str = "",
              export_cache: list[str] | tuple[str, ...] = (), import_cache: list[str] | tuple[str, ...] = (),
              opts: dict[str, str] | None = None, allow: list[str] | tuple[str, ...] = (),
              source_policy: Path | str = "", timeout: float = 600) -> BuildResult:
        """`buildctl build` of context/Dockerfile; `export_cache` / `import_cache` take
        the option strings of runbook_checks.cache (one flag each); `opts` are frontend
        options (`target=STAGE`...); `allow` asks for entitlements (network.host...);
        `source_policy` is a policy file sent with the build (daemon.sourcepolicy)."""
        import tempfile
        import time

        args = ["build", "--frontend", "dockerfile.v0", "--local", f"context={context}",
                "--local", f"dockerfile={context}", "--progress", "rawjson"]
        for key, value in (build_args or {}).items():
            args += ["--opt", f"build-arg:{key}={value}"]
        for key, value in (opts or {}).items():  # frontend options, e.g. target=STAGE
            args += ["--opt", f"{key}={value}"]
        if output:
            args += ["--output", output]
        for entitlement in allow:
            args += ["--allow", entitlement]
        if source_policy:
            args += ["--source-policy-file", str(in_checkout(source_policy))]
        for spec in export_cache:
            args += ["--export-cache", spec]
        for spec in import_cache:
            args += ["--import-cache", spec]
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="bk-meta-") as tmp:
            meta_path = Path(tmp) / "metadata.json"
            proc = self.run(*args, "--metadata-file", str(meta_path), timeout=timeout)
            metadata = json.loads(meta_path.read_text() or "{}") if meta_path.exists() else {}
        vertices: dict[str, dict[str, Any]] = {}
        transfers: dict[str, int] = {}
        for line in proc.stderr.splitlines():
            try:
                status = json.loads(line)
            except ValueError:
                continue
            for vertex in status.get("vertexes") or []:
                vertices.setdefault(vertex["digest"], {}).update(vertex)
            for st in status.get("statuses") or []:
                if st.get("total"):
                    transfers[st["id"]] = max(transfers.get(st["id"], 0), int(st["total"]))
        return BuildResult(list(vertices.values()), round(time.monotonic() - start, 3), metadata, transfers)
