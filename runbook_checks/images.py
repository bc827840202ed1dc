"""Base images built locally (no image is pulled from the internet): a busybox-static
root filesystem that a Dockerfile stage `FROM scratch` + `COPY rootfs/ /` turns into a
base image, in a build context or pushed to the lab's local registry."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from .buildctl import Buildctl
from .errors import KitError
from .layout import Layout
from .results import Outcome

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def static_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.exists():
            with open(path, "rb") as fh:
                head = fh.read(1 << 16)
            if b"ld-linux" not in head:  # a dynamic executable names its interpreter early on
                return path
    raise KitError("no statically linked busybox on this host (a base image needs one)",
                   "apt-get install busybox-static")


def busybox_rootfs(dest: Path) -> Path:
    """dest/bin/busybox plus one symlink per applet: a minimal base image's files."""
    busybox = static_busybox()
    bin_dir = dest / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, bin_dir / "busybox")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = bin_dir / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    for d in ("tmp", "etc", "root"):
        (dest / d).mkdir(exist_ok=True)
    return dest


BASE_STAGE = "FROM scratch AS base\nCOPY rootfs/ /\n"


def context_with_base(dest: Path, dockerfile_body: str) -> Path:
    """A build context whose Dockerfile starts from the local busybox base stage."""
    busybox_rootfs(dest / "rootfs")
    (dest / "Dockerfile").write_text(BASE_STAGE + dockerfile_body)
    return dest


# --------------------------------------------------------------------------------------
# the busybox base in the local registry
# --------------------------------------------------------------------------------------
BASE_REPOSITORY = "kit/busybox"
BASE_TAG = "latest"
BASE_DOCKERFILE = "FROM scratch\nCOPY rootfs/ /\n"
# A fixed timestamp for the base's files and config, so the same busybox gives the same
# image digest on every push (and a second seeding changes nothing).
BASE_EPOCH = "0"


def base_ref(registry_port: int) -> str:
    return f"127.0.0.1:{registry_port}/{BASE_REPOSITORY}:{BASE_TAG}"


def push_busybox_base(layout: Layout, registry_port: int, apply: bool = True) -> Outcome:
    """Build the busybox-static base (FROM scratch + rootfs) on the layout's buildkitd and
    push it to the local registry as 127.0.0.1:PORT/kit/busybox:latest. buildkitd reaches
    127.0.0.1 over plain HTTP (the configure runbook also writes `http = true` for it)."""
    from . import registry

    if not registry_port:
        raise KitError("registry_port is 0: there is no local registry to push the base image to",
                       "set registry_port (lab: 15000) and apply the install and configure runbooks")
    ref = base_ref(registry_port)
    if not registry.answers(registry_port):
        if not apply:
            return Outcome.changed(f"would build the busybox base and push it as {ref}; the registry does not"
                                   f" answer on 127.0.0.1:{registry_port} now, and apply needs it (the configure"
                                   " runbook starts it)", base_image=ref)
        raise registry.RegistryError(f"the local registry does not answer on http://127.0.0.1:{registry_port}/v2/",
                                     "apply the configure runbook with registry_port set; read log/registry.log")
    before = registry.manifest_digest(registry_port, BASE_REPOSITORY, BASE_TAG)
    if not apply:
        if before:
            return Outcome.ok(f"{ref} is in the registry ({before})", base_image=ref)
        return Outcome.changed(f"would build the busybox base and push it as {ref}", base_image=ref)
    with tempfile.TemporaryDirectory(prefix="bk-base-") as tmp:
        ctx = Path(tmp)
        busybox_rootfs(ctx / "rootfs")
        (ctx / "Dockerfile").write_text(BASE_DOCKERFILE)
        result = Buildctl.for_layout(layout).build(
            ctx, build_args={"SOURCE_DATE_EPOCH": BASE_EPOCH},
            output=f"type=image,name={ref},push=true,rewrite-timestamp=true")
    digest = result.metadata.get("containerimage.digest", "")
    if digest and digest == before:
        return Outcome.ok(f"{ref} is up to date ({digest})", base_image=ref, base_digest=digest)
    was = f" (was {before})" if before else ""
    return Outcome.changed(f"pushed {ref} {digest}{was}", base_image=ref, base_digest=digest)


FROM_BASE_DOCKERFILE = """FROM {ref}
ARG NONCE
RUN echo "$NONCE" > /nonce && echo "built on the local registry's base" > /etc/motd
RUN mkdir -p /app && cat /etc/motd > /app/one && echo two >> /app/one
RUN test "$(wc -l < /app/one)" = 2 && busybox --help >/dev/null
"""


def build_from_registry_base(layout: Layout, registry_port: int) -> Outcome:
    """A Dockerfile `FROM 127.0.0.1:PORT/kit/busybox:latest` with RUN steps builds (the RUN
    steps really run: a fresh nonce keeps them out of the cache)."""
    ref = base_ref(registry_port)
    with tempfile.TemporaryDirectory(prefix="bk-from-") as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text(FROM_BASE_DOCKERFILE.format(ref=ref))
        try:
            result = Buildctl.for_layout(layout).build(ctx, build_args={"NONCE": uuid.uuid4().hex})
        except KitError as exc:
            raise KitError(f"a build FROM {ref} failed: {exc.problem}",
                           "seed the base first (images.push_busybox_base) and check the registry answers") from None
    runs = [v for v in result.steps if " RUN " in v["name"]]
    ran = [v for v in runs if not v.get("cached")]
    if len(runs) != 3 or len(ran) != 3:
        raise KitError(f"the build FROM {ref} ran {len(ran)} of {len(runs)} RUN steps, expected 3 of 3",
                       "this is a kit bug: report it with the build's output")
    return Outcome.ok(f"built FROM {ref}: {len(result.steps)} steps, 3 RUN steps ran, in {result.seconds:.1f}s",
                      base_build_seconds=result.seconds)
