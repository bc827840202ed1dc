"""Resolve and install BuildKit (buildkitd, buildctl) and runc into a profile's prefix.

Sources: `release` (the upstream archive layout, sha256-verified, from GitHub or an
internal mirror), `go` (built from the Go module proxy), `archive` (a local tarball for
air-gapped hosts), `auto` (release if reachable within a short timeout, else go).
Binaries are staged and their versions checked before they replace anything."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..core import files
from ..core.errors import InstallError
from ..core.layout import Layout
from ..core.paths import cache_dir
from ..core.results import Outcome

BUILDKIT_VERSION = "v0.34.2"
"""The one place the BuildKit version is pinned: the newest stable release the Go module
proxy serves. Runbooks take `buildkit_version` to override it."""
RUNC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH buildkitd runs with, after its own bin directory: where it finds runc."""
UPSTREAM_RELEASES = "https://github.com/moby/buildkit/releases/download"
MODULE = "github.com/moby/buildkit"
BINARIES = ("buildkitd", "buildctl")
PROBE_TIMEOUT = 3.0

# runc carries the fix for CVE-2024-21626 (leaked fds, container breakout) upstream from
# 1.1.12; Debian backported it to these package versions.
RUNC_FIXED_UPSTREAM = (1, 1, 12)
RUNC_FIXED_DEBIAN = {"1.1.5": "1.1.5+ds1-1+deb12u1", "1.0.0~rc93": "1.0.0~rc93+ds1-5+deb11u3"}


def arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def release_url(version: str, mirror: str = "") -> str:
    base = (mirror or UPSTREAM_RELEASES).rstrip("/")
    return f"{base}/{version}/buildkit-{version}.linux-{arch()}.tar.gz"


def binary_version(path: Path, flag: str = "--version") -> str | None:
    """The vX.Y.Z a binary reports (`buildkitd --version`, `docker-buildx version`), or None."""
    if not path.exists():
        return None
    try:
        out = subprocess.run([str(path), flag], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\s(v\d+\.\d+\.\d+\S*)", out)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------
# source
# --------------------------------------------------------------------------------------
def _reachable(url: str, timeout: float) -> bool:
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def go_has_version(module: str, version: str, timeout: float = 60) -> bool:
    """The Go module proxy serves module@version (`go list -m`, outside any module)."""
    go = shutil.which("go")
    if not go:
        return False
    with tempfile.TemporaryDirectory(prefix="bk-golist-") as tmp:
        proc = subprocess.run([go, "list", "-m", "-json", f"{module}@{version}"], cwd=tmp, capture_output=True,
                              text=True, timeout=timeout, env=dict(os.environ, GOFLAGS="-mod=mod", GO111MODULE="on"))
    return proc.returncode == 0


def resolve_source(source: str, version: str, mirror: str = "", archive_path: str = "",
                   timeout: float = PROBE_TIMEOUT, layout: Layout | None = None) -> Outcome:
    """Which source this run uses, checked in check mode as in apply: an archive_path must
    be a file; a version that is not installed must exist on the chosen source (release:
    its archive answers; go: the module proxy serves it). `auto` probes the release
    host, then the Go toolchain. Nothing is probed when `layout` already holds both
    binaries at `version`."""
    if (source == "archive" or archive_path) and not (archive_path and Path(archive_path).is_file()):
        raise InstallError(f"archive_path {archive_path!r} is not a file" if archive_path else
                           "source=archive needs archive_path",
                           "set archive_path to a buildkit-vX.linux-ARCH.tar.gz you copied onto this host")
    if layout is not None and all(binary_version(layout.bin_dir / name) == version for name in BINARIES):
        return Outcome.ok(f"none needed: BuildKit {version} is already in {layout.bin_dir}", source_used="installed")
    if source == "archive":
        return Outcome.ok(f"archive {archive_path}", source_used="archive")
    url = release_url(version, mirror)
    if source in ("release", "auto") and _reachable(url, timeout):
        return Outcome.ok(f"release: {url} answered", source_used="release")
    if source == "release":
        raise InstallError(f"BuildKit {version} is not at {url} (no answer within {timeout:.0f}s)",
                           "check buildkit_version and release_mirror, or use source=go or source=archive")
    if not shutil.which("go"):
        if source == "go":
            raise InstallError("source=go but no Go toolchain is on PATH",
                               "install Go 1.21 or newer, or use source=release / source=archive")
        raise InstallError(
            f"no source for BuildKit {version}: {url} did not answer within {timeout:.0f}s and no Go toolchain is on"
            " PATH", "choose one: --set source=release --set release_mirror=URL (an internal mirror of the release"
            " archives), --set source=go (install Go, reach the Go module proxy), or --set source=archive"
            " --set archive_path=FILE")
    if not go_has_version(MODULE, version):
        raise InstallError(f"the Go module proxy has no {MODULE}@{version}",
                           "check buildkit_version (a release tag like v0.34.2; empty: the version the kit pins)")
    why = "as requested" if source == "go" else f"{url} did not answer within {timeout:.0f}s"
    return Outcome.ok(f"go: {why}; the Go module proxy serves {version}", source_used="go")


# --------------------------------------------------------------------------------------
# fetching into a staging directory
# --------------------------------------------------------------------------------------
def _expected_sha256(url: str, given: str) -> str:
    if given:
        return given.strip().lower()
    name = url.rsplit("/", 1)[1]
    for candidate in (url + ".sha256", url.rsplit("/", 1)[0] + "/checksums.txt"):
        try:
            with urllib.request.urlopen(candidate, timeout=30) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            continue
        for line in text.splitlines():
            parts = line.split()
            if parts and (len(parts) == 1 or parts[-1].lstrip("*") == name):
                return parts[0].lower()
    raise InstallError(f"no sha256 published for {url} ({name}.sha256 or checksums.txt beside it)",
                       "pass the archive's sha256 with --set release_sha256=HEX, taken from a trusted copy")


def _extract(archive: Path, staging: Path) -> None:
    with tarfile.open(archive) as tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers()}
        for name in BINARIES:
            member = members.get(f"bin/{name}")
            if member is None or not member.isfile():
                raise InstallError(f"{archive} has no bin/{name} (not a BuildKit release archive)",
                                   "use the buildkit-vX.linux-ARCH.tar.gz archive of a BuildKit release")
            with tar.extractfile(member) as src, open(staging / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.chmod(staging / name, 0o755)


def fetch_release(url: str, sha256: str, staging: Path) -> None:
    expected = _expected_sha256(url, sha256)
    archive = staging / url.rsplit("/", 1)[1]
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(archive, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as exc:
        raise InstallError(f"could not download {url}: {exc}",
                           "check the mirror URL (release_mirror) or use source=go / source=archive") from None
    actual = files.sha256(archive)
    if actual != expected:
        raise InstallError(f"sha256 mismatch for {url}: expected {expected}, got {actual}",
                           "the download is corrupt or was tampered with; nothing was installed. Re-fetch from a trusted mirror")
    _extract(archive, staging)


def go_install(package: str, gobin: Path, ldflags: str = "", timeout: float = 1800) -> None:
    """`go install PACKAGE@VERSION` into `gobin` (static: CGO off), or a clear error."""
    go = shutil.which("go")
    if not go:
        raise InstallError(f"installing {package} needs a Go toolchain, and none is on PATH",
                           "install Go 1.21 or newer (./kit checks it), or turn this component off")
    env = dict(os.environ, GOBIN=str(gobin), CGO_ENABLED="0")
    gobin.mkdir(parents=True, exist_ok=True)
    cmd = [go, "install"] + (["-ldflags", ldflags] if ldflags else []) + [package]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode:
        raise InstallError(f"go install {package} failed: {proc.stderr.strip()[-1500:]}",
                           "check that the Go module proxy is reachable (go env GOPROXY) and the version exists")


def cached_build(name: str, version: str, files: tuple[str, ...], build: Callable[[Path], None],
                 minutes: int = 1, valid: Callable[[Path], bool] | None = None) -> Path:
    """cache_dir()/NAME/VERSION holding `files` (and passing `valid`, if given), made by
    `build(staging_dir)` once per version, outside the checkout; the folder appears whole or
    not at all (os.replace), so a half-built one never takes its place."""
    import fcntl

    folder = cache_dir() / name / version
    done = lambda: all((folder / f).is_file() for f in files) and (valid is None or valid(folder))  # noqa: E731
    if done():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one build at a time per version: a second caller (a test beside `invoke cluster.up`,
    # the suite's background prefetch) waits for the first and finds its result
    with open(folder.parent / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done():
            return folder
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=folder.parent))
        print(f"building {name} {version} into {folder} (once per version, about"
              f" {minutes} minute{'s' if minutes > 1 else ''})", flush=True)
        try:
            build(staging)
            missing = [f for f in files if not (staging / f).is_file()]
            if missing:
                raise InstallError(f"building {name} {version} made no {', '.join(missing)}",
                                   "read the build output above")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return folder


def cached_go_binary(module: str, command: str, version: str, minutes: int = 1, ldflags: str = "-s -w") -> Path:
    """cache_dir()/NAME/VERSION/NAME (NAME: the last part of `command`), built with `go
    install MODULE/COMMAND@VERSION` from the Go module proxy (cached_build)."""
    name = command.rsplit("/", 1)[-1]
    return cached_build(name, version, (name,), lambda staging: go_install(f"{module}/{command}@{version}", staging,
                                                                           ldflags=ldflags), minutes) / name


def go_module_version(binary: Path, module: str) -> str:
    """The version of `module` a Go binary was built from (`go version -m`), or ""."""
    go = shutil.which("go")
    if not go or not binary.exists():
        return ""
    out = subprocess.run([go, "version", "-m", str(binary)], capture_output=True, text=True).stdout
    match = re.search(rf"^\s*mod\s+{re.escape(module)}\s+(\S+)", out, flags=re.M)
    return match.group(1) if match else ""


def build_with_go(version: str, staging: Path) -> None:
    """Build buildkitd and buildctl from the Go module proxy.

    `go install MODULE/cmd/buildkitd@vX` is refused (BuildKit's go.mod has exclude
    directives), so download the module and build inside it, stamping the version."""
    go = shutil.which("go")
    if not go:
        raise InstallError("source=go but no Go toolchain is on PATH",
                           "install Go 1.21 or newer (it fetches the newer toolchain BuildKit's go.mod asks for through the"
                           " module proxy), or use source=release / source=archive")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    dl = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{version}"], capture_output=True, text=True,
                        env=env, timeout=900)
    if dl.returncode:
        raise InstallError(f"go mod download {MODULE}@{version} failed: {dl.stdout.strip() or dl.stderr.strip()}",
                           "check that the Go module proxy is reachable (go env GOPROXY) and the version exists")
    import json

    module_dir = json.loads(dl.stdout)["Dir"]
    ldflags = f"-s -w -X {MODULE}/version.Version={version}"
    build = subprocess.run([go, "build", "-trimpath", "-o", str(staging) + "/", "-ldflags", ldflags,
                            "./cmd/buildkitd", "./cmd/buildctl"], cwd=module_dir, capture_output=True, text=True,
                           env=env, timeout=1800)
    if build.returncode:
        raise InstallError(f"go build of BuildKit {version} failed:\n{build.stderr.strip()[-2000:]}",
                           "read the compiler output above; a newer Go toolchain may be needed")


def built_with_go(version: str) -> Path:
    """cache_dir()/buildkit/VERSION: buildkitd and buildctl built from the Go module proxy
    once per version (about 90 s cold), kept outside the checkout for every later install,
    test and rehearsal host."""
    return cached_build("buildkit", version, BINARIES, lambda staging: build_with_go(version, staging), minutes=2,
                        valid=lambda folder: all(binary_version(folder / name) == version for name in BINARIES))


def release_archive(version: str) -> Path:
    """The release layout (bin/buildkitd, bin/buildctl) as a tar.gz beside the cached
    binaries: what an air-gapped build server installs with source=archive."""
    folder = built_with_go(version)
    archive = folder / release_url(version).rsplit("/", 1)[1]
    if not archive.exists():
        partial = archive.with_name(archive.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for name in BINARIES:
                tar.add(folder / name, arcname=f"bin/{name}")
        os.replace(partial, archive)
    return archive


def unpack_archive(archive_path: str, staging: Path) -> None:
    _extract(Path(archive_path), staging)


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------
def check_prefix(layout: Layout) -> Outcome:
    files.writable_dir(layout.bin_dir)
    return Outcome.ok(f"{layout.bin_dir} is writable")


def ensure_binaries(layout: Layout, version: str, source_used: str, apply: bool, mirror: str = "",
                    sha256: str = "", archive_path: str = "") -> Outcome:
    have = {name: binary_version(layout.bin_dir / name) for name in BINARIES}
    facts = {"buildkit_version": version, "source": source_used, "bin_dir": str(layout.bin_dir)}
    if all(v == version for v in have.values()):
        return Outcome.ok(f"buildkitd and buildctl {version} already in {layout.bin_dir}", **facts)
    diff = "".join(f"-{name} {have[name] or '(absent)'}\n+{name} {version}\n" for name in BINARIES if have[name] != version)
    if not apply:
        return Outcome.changed(f"would install BuildKit {version} from {source_used} into {layout.bin_dir}", diff, **facts)
    layout.bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=layout.bin_dir) as tmp:
        staging = Path(tmp)
        if source_used == "release":
            fetch_release(release_url(version, mirror), sha256, staging)
        elif source_used == "go":
            for name in BINARIES:
                shutil.copy2(built_with_go(version) / name, staging / name)
        else:
            unpack_archive(archive_path, staging)
        for name in BINARIES:
            got = binary_version(staging / name)
            if got != version:
                raise InstallError(f"the {source_used} source gave {name} {got or '(no version)'}, not {version}",
                                   "nothing was replaced; check the source (mirror or archive) holds the requested version")
        for name in BINARIES:
            files.atomic_copy(staging / name, layout.bin_dir / name)
    return Outcome.changed(f"installed BuildKit {version} from {source_used} into {layout.bin_dir}", diff, **facts)


def runc_fixed(upstream: str, debian: str | None) -> bool:
    """True if this runc carries the CVE-2024-21626 fix."""
    if debian:
        base = debian.split("+")[0]
        fixed = RUNC_FIXED_DEBIAN.get(base)
        if fixed:
            return subprocess.run(["dpkg", "--compare-versions", debian, "ge", fixed]).returncode == 0
    nums = tuple(int(x) for x in re.findall(r"\d+", upstream.split("+")[0].split("~")[0])[:3])
    return nums >= RUNC_FIXED_UPSTREAM


def _runc_versions(path: str) -> tuple[str, str | None]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    upstream = re.search(r"runc version (\S+)", out)
    debian = None
    if shutil.which("dpkg-query"):
        q = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "runc"], capture_output=True, text=True)
        if q.returncode == 0 and q.stdout.strip() and Path(path).resolve() == Path("/usr/sbin/runc").resolve():
            debian = q.stdout.strip()
    return (upstream.group(1) if upstream else "unknown"), debian


def ensure_runc(layout: Layout, apply: bool, install: bool = True) -> Outcome:
    """Debian's runc where apt exists, linked into the prefix; refuse a vulnerable one."""
    system = shutil.which("runc", path="/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin")
    changes = []
    if not system:
        if not install or not shutil.which("apt-get"):
            why = "install_runc is false" if not install else "apt-get is not available"
            raise InstallError(f"runc is not installed and {why}",
                               "install runc ≥ 1.1.12 (or your distribution's patched package) and run again")
        if not apply:
            return Outcome.changed("would apt-get install runc and link it into " + str(layout.bin_dir))
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "runc"], capture_output=True, text=True,
                              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=600)
        if proc.returncode:
            raise InstallError(f"apt-get install runc failed: {proc.stderr.strip()[-500:]}",
                               "run apt-get update, then apply again")
        system = shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin")
        changes.append("installed Debian's runc")
    upstream, debian = _runc_versions(system)
    if not runc_fixed(upstream, debian):
        raise InstallError(f"runc {debian or upstream} at {system} lacks the fix for CVE-2024-21626",
                           "upgrade runc (apt-get install --only-upgrade runc) to ≥ 1.1.12 or a patched distribution build")
    link = layout.bin_dir / "runc"
    if not (link.is_symlink() and os.readlink(link) == system):
        if not apply:
            return Outcome.changed(f"would link {link} -> {system}")
        layout.bin_dir.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(".runc.tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(system)
        os.replace(tmp, link)
        changes.append(f"linked {link} -> {system}")
    facts = {"runc_version": debian or upstream}
    if changes:
        return Outcome.changed("; ".join(changes) + f" (runc {debian or upstream}, CVE-2024-21626 fixed)", **facts)
    return Outcome.ok(f"runc {debian or upstream} (CVE-2024-21626 fixed) at {link}", **facts)


def check_path(layout: Layout, version: str, path_env: str | None = None) -> Outcome:
    """A different buildkitd earlier on PATH than ours would take the operator's commands."""
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    dirs = [d for d in path_env.split(os.pathsep) if d]
    found = shutil.which("buildkitd", path=path_env)
    if str(layout.bin_dir) not in dirs:
        note = f"; {found} on PATH is not used by this install" if found else ""
        return Outcome.ok(f"{layout.bin_dir} is called by absolute path (not on PATH){note}")
    if found and Path(found).resolve() != layout.buildkitd.resolve():
        other = binary_version(Path(found))
        if other != version:
            raise InstallError(f"{found} ({other or 'unknown version'}) comes before {layout.bin_dir} on PATH",
                               f"remove it (or its package), or put {layout.bin_dir} first on PATH")
        return Outcome.ok(f"{found} comes before {layout.bin_dir} on PATH but is the same {version};"
                          " remove it to keep one copy")
    return Outcome.ok(f"buildkitd on PATH is {layout.buildkitd}")
