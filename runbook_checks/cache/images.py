"""Base images built on this host and pushed to the lab's local registry (no image is
pulled from the internet): the busybox-static base, and a Debian base from a debootstrap
root filesystem; which kit-made bases a Dockerfile starts FROM, and how to seed each."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from ..core import files
from ..core.errors import KitError, RegistryError
from ..core.layout import Layout
from ..core.results import Outcome
from ..daemon.buildctl import Buildctl
from ..daemon.contexts import busybox_rootfs
from . import registry

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
    push it to the local registry as 127.0.0.1:PORT/kit/busybox:latest."""
    def context(ctx: Path) -> None:
        busybox_rootfs(ctx / "rootfs")
        (ctx / "Dockerfile").write_text(BASE_DOCKERFILE)

    return push_made_image(layout, registry_port, BASE_REPOSITORY, BASE_TAG, context, "the busybox base", apply)


def push_made_image(layout: Layout, registry_port: int, repository: str, tag: str, make_context, what: str,
                    apply: bool = True) -> Outcome:
    """Build an image the kit makes here (`make_context(dir)` writes its context) on the
    layout's buildkitd and push it to the local registry as 127.0.0.1:PORT/REPOSITORY:TAG,
    with fixed timestamps, so the same files give the same digest and a second push
    changes nothing. buildkitd reaches 127.0.0.1 over plain HTTP (the configure runbook
    writes `http = true` for it). Facts: base_image, base_digest."""
    if not registry_port:
        raise KitError(f"registry_port is 0: there is no local registry to push {what} to",
                       "set registry_port (lab: 15000) and apply the install and configure runbooks")
    ref = f"127.0.0.1:{registry_port}/{repository}:{tag}"
    if not registry.answers(registry_port):
        if not apply:
            return Outcome.changed(f"would build {what} and push it as {ref}; the registry does not"
                                   f" answer on 127.0.0.1:{registry_port} now, and apply needs it (the configure"
                                   " runbook starts it)", base_image=ref)
        raise RegistryError(f"the local registry does not answer on http://127.0.0.1:{registry_port}/v2/",
                            "apply the configure runbook with registry_port set; read log/registry.log")
    before = registry.manifest_digest(registry_port, repository, tag)
    if not apply:
        if before:
            return Outcome.ok(f"{ref} is in the registry ({before})", base_image=ref)
        return Outcome.changed(f"would build {what} and push it as {ref}", base_image=ref)
    digest = build_and_push(layout, ref, make_context)
    if digest and digest == before:
        return Outcome.ok(f"{ref} is up to date ({digest})", base_image=ref, base_digest=digest)
    was = f" (was {before})" if before else ""
    return Outcome.changed(f"pushed {ref} {digest}{was}", base_image=ref, base_digest=digest)


def build_and_push(layout: Layout, ref: str, make_context) -> str:
    """Build the context `make_context(dir)` writes, with fixed timestamps (the same files
    give the same digest), and push it as `ref`: its digest."""
    with tempfile.TemporaryDirectory(prefix="bk-made-") as tmp:
        make_context(Path(tmp))
        result = Buildctl.for_layout(layout).build(
            Path(tmp), build_args={"SOURCE_DATE_EPOCH": BASE_EPOCH},
            output=f"type=image,name={ref},push=true,rewrite-timestamp=true")
    return result.metadata.get("containerimage.digest", "")


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


# --------------------------------------------------------------------------------------
# a Debian base from a debootstrap rootfs (built once, kept under the state directory)
# --------------------------------------------------------------------------------------
DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_INCLUDE = ("ca-certificates",)
DEBIAN_REPOSITORY = "kit/debian"
# Certificates this host trusts beyond Debian's bundle (a TLS-inspecting proxy's, an
# organisation's CA): the base trusts them too, so a build's pip or curl reaches the same
# HTTPS servers the host reaches. They are public certificates, never keys.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
# The image records which rootfs it was made from, so a second seeding can tell that the
# registry already holds it without running debootstrap or a build again.
ROOTFS_LABEL = "org.buildkit-ops.rootfs"
DEBIAN_DOCKERFILE = """FROM scratch
ADD rootfs.tar /
ARG ROOTFS_KEY
LABEL {label}=$ROOTFS_KEY
ENV LANG=C.UTF-8
CMD ["bash"]
"""


def debian_ref(registry_port: int, suite: str = DEBIAN_SUITE) -> str:
    return f"127.0.0.1:{registry_port}/{DEBIAN_REPOSITORY}:{suite}"


def images_dir(layout: Layout) -> Path:
    """Where the kit keeps the root filesystems it builds base images from."""
    return layout.state_dir / "images"


def local_certificates(ca_dir: Path = LOCAL_CA_DIR) -> list[Path]:
    return sorted(ca_dir.rglob("*.crt")) if ca_dir.is_dir() else []


def rootfs_key(suite: str = DEBIAN_SUITE, variant: str = DEBIAN_VARIANT, include: tuple[str, ...] = DEBIAN_INCLUDE,
               mirror: str = DEBIAN_MIRROR, certificates: list[Path] | None = None) -> str:
    """A name for one rootfs: suite, variant, packages, mirror and the local CA
    certificates added to it (their bytes)."""
    import hashlib

    certs = local_certificates() if certificates is None else certificates
    text = "\n".join([suite, variant, ",".join(sorted(include)), mirror] + [files.sha256(c) for c in certs])
    return f"debian-{suite}-{variant}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def debootstrap_binary() -> Path:
    found = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else "")
    if not found:
        raise KitError("debootstrap is not installed, so the kit cannot make its Debian base image",
                       "apt-get install debootstrap (./kit setup installs it)")
    return Path(found)


def debian_rootfs(cache_dir: Path, suite: str = DEBIAN_SUITE, variant: str = DEBIAN_VARIANT,
                  include: tuple[str, ...] = DEBIAN_INCLUDE, mirror: str = DEBIAN_MIRROR, progress=print,
                  timeout: float = 1800) -> Path:
    """cache_dir/<key>/rootfs.tar: a Debian root filesystem made by debootstrap the first
    time (minutes: it downloads and unpacks every package), reused after that. The
    host's local CA certificates are added (update-ca-certificates in the rootfs). /dev,
    /proc and /sys stay empty (the container runtime mounts them); apt's downloaded
    packages and lists are dropped (a build runs apt-get update itself)."""
    import time

    key = rootfs_key(suite, variant, include, mirror)
    entry = cache_dir / key
    tarball = entry / "rootfs.tar"
    if tarball.exists():
        return tarball
    binary = debootstrap_binary()
    entry.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=entry))
    rootfs = work / "rootfs"
    cmd = [str(binary), f"--variant={variant}", *([f"--include={','.join(include)}"] if include else []),
           suite, str(rootfs), mirror]
    progress(f"debootstrap {suite} ({variant}) from {mirror} into {rootfs}: the first time takes minutes")
    start = last = time.monotonic()
    phases: set[str] = set()
    tail: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            word = line[3:].split(" ", 1)[0] if line.startswith("I: ") else ""
            now = time.monotonic()
            if (word and word not in phases) or now - last > 15:  # each new phase, and a heartbeat
                progress(f"  [{now - start:5.0f}s] {line}")
                phases.add(word)
                last = now
            if now - start > timeout:
                proc.kill()
                raise KitError(f"debootstrap did not finish within {timeout:.0f}s", f"check that {mirror} answers")
        if proc.wait():
            raise KitError(f"debootstrap {suite} failed (exit {proc.returncode}):\n" + "\n".join(tail),
                           f"check that this host reaches {mirror} (apt-get update works) and run again")
        certs = local_certificates()
        if certs:
            target = rootfs / LOCAL_CA_DIR.relative_to("/")
            target.mkdir(parents=True, exist_ok=True)
            for cert in certs:
                shutil.copy2(cert, target / cert.name)
            subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
            progress(f"  added {len(certs)} local CA certificate(s) from {LOCAL_CA_DIR}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        for special in ("dev", "proc", "sys"):
            for path in (rootfs / special).iterdir():
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        partial = entry / "rootfs.tar.partial"
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
                       check=True, capture_output=True)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"  [{time.monotonic() - start:5.0f}s] {tarball} ({tarball.stat().st_size >> 20} MiB)")
    return tarball


def push_debian_base(layout: Layout, registry_port: int, apply: bool = True, suite: str = DEBIAN_SUITE,
                     progress=print) -> Outcome:
    """The Debian base (FROM scratch + ADD a debootstrap rootfs) pushed to the local
    registry as 127.0.0.1:PORT/kit/debian:SUITE. When the registry already holds the
    image of this rootfs (its label says which), nothing runs; otherwise the rootfs is
    made (or taken from images/ under the state dir) and the image built and pushed."""
    if not registry_port:
        raise KitError("registry_port is 0: there is no local registry to push the Debian base image to",
                       "set registry_port (lab: 15000) and apply the install and configure runbooks")
    ref = debian_ref(registry_port, suite)
    key = rootfs_key(suite)
    if not registry.answers(registry_port):
        if not apply:
            return Outcome.changed(f"would build the Debian base ({key}) and push it as {ref}; the registry does not"
                                   f" answer on 127.0.0.1:{registry_port} now, and apply needs it", base_image=ref)
        raise RegistryError(f"the local registry does not answer on http://127.0.0.1:{registry_port}/v2/",
                                     "apply the configure runbook with registry_port set; read log/registry.log")
    present = registry.image_label(registry_port, DEBIAN_REPOSITORY, suite, ROOTFS_LABEL)
    if present == key:
        return Outcome.ok(f"{ref} is in the registry (rootfs {key})", base_image=ref)
    cached = (images_dir(layout) / key / "rootfs.tar").exists()
    if not apply:
        what = "from the cached rootfs" if cached else "after debootstrap (minutes)"
        was = f" (the registry holds rootfs {present})" if present else ""
        return Outcome.changed(f"would build the Debian base {what} and push it as {ref}{was}", base_image=ref)
    tarball = debian_rootfs(images_dir(layout), suite, progress=progress)
    (tarball.parent / "Dockerfile").write_text(DEBIAN_DOCKERFILE.format(label=ROOTFS_LABEL))
    result = Buildctl.for_layout(layout).build(
        tarball.parent, build_args={"SOURCE_DATE_EPOCH": BASE_EPOCH, "ROOTFS_KEY": key},
        output=f"type=image,name={ref},push=true,rewrite-timestamp=true", timeout=900)
    digest = result.metadata.get("containerimage.digest", "")
    return Outcome.changed(f"pushed {ref} {digest} (rootfs {key}, {'cached' if cached else 'new'})",
                           base_image=ref, base_digest=digest)


# --------------------------------------------------------------------------------------
# the bases a Dockerfile names, and how the kit makes each one
# --------------------------------------------------------------------------------------
# `FROM ${BASE_REGISTRY}/kit/NAME:TAG`: a base the kit builds and pushes to the local registry
BASE_FROM = re.compile(r"^FROM\s+\$\{?BASE_REGISTRY\}?/(?P<image>kit/[a-z0-9._-]+:[A-Za-z0-9._-]+)", re.M | re.I)


def bases_of(dockerfile: Path) -> list[str]:
    """The kit-made bases a Dockerfile starts FROM (kit/busybox:latest, kit/debian:bookworm)."""
    return sorted(set(BASE_FROM.findall(dockerfile.read_text())))


def seeders(layout: Layout, registry_port: int, apply: bool = True, progress=print) -> dict:
    """{base image: a call that makes sure it is in the local registry, returning an Outcome}."""
    return {f"{BASE_REPOSITORY}:{BASE_TAG}": lambda: push_busybox_base(layout, registry_port, apply),
            f"{DEBIAN_REPOSITORY}:{DEBIAN_SUITE}":
                lambda: push_debian_base(layout, registry_port, apply, progress=progress)}
