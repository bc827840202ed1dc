"""Build contexts that start from a base built on this host (no image is pulled from the
internet): a busybox-static root filesystem, copied into a `FROM scratch` stage named
`base` that the rest of a Dockerfile builds on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..core.errors import InstallError

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def static_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.exists():
            with open(path, "rb") as fh:
                head = fh.read(1 << 16)
            if b"ld-linux" not in head:  # a dynamic executable names its interpreter early on
                return path
    raise InstallError("no statically linked busybox on this host (a base image needs one)",
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
