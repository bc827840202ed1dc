"""The images the fleet runs, made by BuildKit on this machine from local binaries (nothing
pulled): the builder image (buildkitd, buildctl and runc with the libraries it links, a
static busybox for the probes' and the drain's shell) and the local cluster's sandbox
image (busybox sleeping). Each is an OCI archive kept in the kit's cache by content, then
imported into the local cluster's containerd, or pushed by the operator to the registry a
managed cluster pulls from."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..core.errors import FleetError
from ..core.paths import cache_dir
from ..daemon.install import BUILDKIT_VERSION, RUNC_PATH, built_with_go
from ..daemon.throwaway import defaults_config, throwaway

SANDBOX_IMAGE = "localhost/buildkit-ops/pause:1"  # the local cluster's sandbox (pause) image
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "cat", "grep", "wc", "test", "ls", "awk")


def builder_ref(version: str = BUILDKIT_VERSION) -> str:
    """The kit's builder image: BuildKit's version and the digest of what goes in it, so a
    new runc or busybox from Debian makes a new tag and the fleet rolls to it."""
    with tempfile.TemporaryDirectory(prefix="bko-context-") as tmp:
        builder_context(Path(tmp), version)
        return f"localhost/buildkit-ops/builder:{version}-{_digest(Path(tmp))[:12]}"


def _busybox(rootfs: Path, applets: tuple[str, ...]) -> None:
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    for applet in applets:
        (rootfs / "bin" / applet).symlink_to("busybox")


def _with_libraries(binary: Path, rootfs: Path, target: str) -> None:
    """`binary` at `target` in rootfs, with the shared libraries it links (ldd), at their paths."""
    dest = rootfs / target.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, dest)
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts and parts[0].startswith("/") else ""
        if path.startswith("/"):
            lib = rootfs / path.lstrip("/")
            lib.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), lib)


def sandbox_context(ctx: Path) -> None:
    _busybox(ctx / "rootfs", ("sleep",))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/bin/sleep\", \"2147483647\"]\n")


def builder_context(ctx: Path, version: str = BUILDKIT_VERSION) -> None:
    rootfs, folder = ctx / "rootfs", built_with_go(version)
    _busybox(rootfs, APPLETS)
    for name in ("buildkitd", "buildctl"):
        _with_libraries(folder / name, rootfs, f"/usr/bin/{name}")
    runc = shutil.which("runc", path=RUNC_PATH)
    if not runc:
        raise FleetError("the builder image needs runc, and none is installed", "install Debian's runc (./kit does)")
    _with_libraries(Path(runc), rootfs, "/usr/bin/runc")
    for empty in ("tmp", "etc/buildkit", "var/lib/buildkit", "run/buildkit"):
        (rootfs / empty).mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin:/bin\n"
                                    "ENTRYPOINT [\"/usr/bin/buildkitd\"]\n")


def _digest(ctx: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(ctx.rglob("*")):
        h.update(str(path.relative_to(ctx)).encode())
        h.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes() if path.is_file() else b"d")
    return h.hexdigest()[:16]


def build(ref: str, make_context, output: str, version: str = BUILDKIT_VERSION) -> None:
    """`ref` built by BuildKit (a throwaway daemon of `version`) from the context
    `make_context(dir)` writes, to `output` (a buildctl --output)."""
    with tempfile.TemporaryDirectory(prefix="bko-image-") as tmp:
        ctx = Path(tmp) / "context"
        ctx.mkdir()
        make_context(ctx)
        scratch = Path(tmp) / "daemon"
        scratch.mkdir()
        config = defaults_config(scratch, "[worker.containerd]\nenabled = false\n")
        with throwaway(built_with_go(version), config, scratch, "the image builder") as client:
            client.build(ctx, output=output, timeout=900)


def archive(ref: str, make_context, version: str = BUILDKIT_VERSION) -> Path:
    """The OCI archive of `ref` (build), kept in the kit's cache by the context's content."""
    with tempfile.TemporaryDirectory(prefix="bko-context-") as tmp:
        make_context(Path(tmp))
        name = ref.rsplit("/", 1)[-1].replace(":", "-")
        out = cache_dir() / "images" / f"{name}-{_digest(Path(tmp))}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    build(ref, make_context, f"type=oci,dest={partial},name={ref}", version)
    partial.chmod(0o644)
    os.replace(partial, out)
    return out


def push(ref: str, make_context, version: str = BUILDKIT_VERSION) -> None:
    """`ref` built and pushed to its registry (credentials: ~/.docker/config.json, as buildctl reads them)."""
    build(ref, make_context, f"type=image,name={ref},push=true", version)


def has_image(socket: Path, ref: str) -> bool:
    out = subprocess.run(["ctr", "-a", str(socket), "-n", "k8s.io", "images", "ls", "-q"], capture_output=True,
                         text=True)
    return ref in out.stdout.split()


def import_image(socket: Path, tarball: Path) -> None:
    proc = subprocess.run(["ctr", "-a", str(socket), "-n", "k8s.io", "images", "import", str(tarball)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise FleetError(f"containerd refused the image {tarball.name}: {proc.stderr.strip()[-500:]}",
                         "is the cluster's containerd up? read its log (invoke cluster.status)")
