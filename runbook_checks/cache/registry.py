"""The lab's local OCI registry (Debian's docker-registry, distribution 2.x): its config
file, its supervisord program beside buildkitd, and whether it answers. It listens on
127.0.0.1 only, keeps its blobs under `<state_dir>/registry` and allows deletes (so
retention can remove tags and the garbage collector can reclaim their blobs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from ..core import files
from ..core.clock import wait_until
from ..core.errors import RegistryError
from ..core.layout import Layout
from ..core.params import IMAGE_REF
from ..core.results import Outcome
from ..daemon.programs import Program
from ..daemon.programs import answers as url_answers
from ..daemon.supervisor import Supervisor

# Where Debian's docker-registry package puts the binary (`dpkg -L docker-registry`);
# it runs as `docker-registry serve CONFIG.yml`.
BINARY = Path("/usr/bin/docker-registry")


def binary() -> Path:
    if not BINARY.exists():
        raise RegistryError(f"{BINARY} is not installed, so the local registry cannot run",
                            "apt-get install docker-registry (./kit installs it), or set registry_port=0")
    return BINARY


def config_path(layout: Layout) -> Path:
    return layout.config_path.parent / "registry.yml"


def storage_dir(layout: Layout) -> Path:
    return layout.state_dir / "registry"


def log_path(layout: Layout) -> Path:
    return layout.log_dir / "registry.log"


def render_config(storage: Path, port: int) -> str:
    """distribution's config.yml: filesystem storage, deletes on, 127.0.0.1 only."""
    return textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbooks: install, configure). The lab's local OCI registry.
        version: 0.1
        log:
          level: info
          formatter: text
          accesslog:
            disabled: true
        storage:
          filesystem:
            rootdirectory: {storage}
          delete:
            enabled: true
          cache:
            blobdescriptor: inmemory
        http:
          addr: 127.0.0.1:{port}
        health:
          storagedriver:
            enabled: true
            interval: 10s
            threshold: 3
        """)


def program(layout: Layout, params: dict) -> Program:
    """The registry beside buildkitd (daemon.programs). The listen address is repeated in
    the environment (distribution reads REGISTRY_HTTP_ADDR over the file)."""
    port = params["registry_port"]
    return Program("registry", f"{binary()} serve {config_path(layout)}", port, log_path(layout),
                   f"http://{address(port)}/v2/", environment={"REGISTRY_HTTP_ADDR": address(port)},
                   files={config_path(layout): render_config(storage_dir(layout), port)},
                   dirs=(storage_dir(layout),), directory=str(layout.state_dir))


def address(port: int) -> str:
    return f"127.0.0.1:{port}"


LOOPBACK_HOST = re.compile(r"^(?:127\.0\.0\.1|localhost):(?P<port>\d+)$")


@dataclass(frozen=True)
class Ref:
    """An image reference HOST[:PORT]/REPOSITORY[:TAG] (core.params.IMAGE_REF), parsed once."""

    host: str
    repository: str
    tag: str = ""

    @classmethod
    def parse(cls, text: str) -> "Ref":
        match = IMAGE_REF.match(text)
        if not match:
            raise RegistryError(f"{text!r} is not an image reference with a registry host",
                                "write it as HOST[:PORT]/PATH[:TAG], e.g. 127.0.0.1:15000/kit/cache:main")
        return cls(match.group("host"), match.group("path"), match.group("tag") or "")

    def with_tag(self, tag: str) -> "Ref":
        return replace(self, tag=tag)

    @property
    def local_port(self) -> int | None:
        """The port of a registry on this host's loopback (the lab's), else None."""
        match = LOOPBACK_HOST.match(self.host)
        return int(match.group("port")) if match else None

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}" + (f":{self.tag}" if self.tag else "")


def answers(port: int, timeout: float = 2) -> bool:
    """GET /v2/ is 200: the registry API (version 2) is served."""
    return url_answers(f"http://{address(port)}/v2/", timeout)


def wait_ready(port: int, timeout: float = 30, log: Path | None = None) -> None:
    wait_until(lambda: answers(port), timeout, f"the registry answering on http://{address(port)}/v2/",
               f"read {log}" if log else "check that the port is free and docker-registry is installed",
               RegistryError, 0.2)


def tags(port: int, repository: str) -> list[str]:
    """The tags of one repository, from the registry's own API."""
    try:
        with urllib.request.urlopen(f"http://{address(port)}/v2/{repository}/tags/list", timeout=10) as resp:
            return json.loads(resp.read()).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise RegistryError(f"the registry at {address(port)} refused the tag list of {repository}: {exc}",
                            "read the registry's log") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"the registry at {address(port)} did not answer: {exc}",
                            "start it: apply the configure runbook with registry_port set") from None


MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"))


def manifest_digest(port: int, repository: str, tag: str) -> str:
    """The digest the registry serves for repository:tag, or "" when the tag is absent."""
    req = urllib.request.Request(f"http://{address(port)}/v2/{repository}/manifests/{tag}", method="HEAD",
                                 headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.headers.get("Docker-Content-Digest", "")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        raise RegistryError(f"the registry at {address(port)} refused {repository}:{tag}: {exc}",
                            "read the registry's log") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"the registry at {address(port)} did not answer: {exc}",
                            "start it: apply the configure runbook with registry_port set") from None


def manifest(port: int, repository: str, reference: str) -> dict | None:
    """The manifest (or index) repository:reference, or None when the registry has none."""
    req = urllib.request.Request(f"http://{address(port)}/v2/{repository}/manifests/{reference}",
                                 headers={"Accept": MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise RegistryError(f"the registry at {address(port)} refused {repository}:{reference}: {exc}",
                            "read the registry's log") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"the registry at {address(port)} did not answer: {exc}",
                            "start it: apply the configure runbook with registry_port set") from None


def blob_exists(port: int, repository: str, digest: str) -> bool:
    req = urllib.request.Request(f"http://{address(port)}/v2/{repository}/blobs/{digest}", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise RegistryError(f"the registry at {address(port)} refused blob {digest} of {repository}: {exc}",
                            "read the registry's log") from None


def image_label(registry_port: int, repository: str, tag: str, label: str) -> str:
    """A label of the image repository:tag in the local registry ("" if absent)."""
    base = f"http://{address(registry_port)}/v2/{repository}"

    def get(path: str, accept: str) -> dict:
        req = urllib.request.Request(f"{base}/{path}", headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    try:
        manifest = get(f"manifests/{tag}", MANIFEST_TYPES)
        if "manifests" in manifest:  # an index: its first image
            manifest = get(f"manifests/{manifest['manifests'][0]['digest']}", MANIFEST_TYPES)
        config = get(f"blobs/{manifest['config']['digest']}", "*/*")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        raise
    return (config.get("config") or {}).get("Labels", {}).get(label, "") or ""


# --------------------------------------------------------------------------------------
# cleanup: delete tags, then let the registry's garbage collector reclaim their blobs
# --------------------------------------------------------------------------------------
def delete_tag(port: int, repository: str, tag: str) -> str:
    """Delete the manifest repository:tag points at (deletes are enabled in the kit's
    config); returns its digest, or "" when the tag was not there. Other tags of the same
    digest go with it: that is how the registry API deletes."""
    digest = manifest_digest(port, repository, tag)
    if not digest:
        return ""
    req = urllib.request.Request(f"http://{address(port)}/v2/{repository}/manifests/{digest}", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=10):
            return digest
    except urllib.error.HTTPError as exc:
        raise RegistryError(f"the registry refused to delete {repository}:{tag} ({digest}): {exc}",
                            "check storage.delete.enabled in the registry's config (the kit sets it)") from None


def storage_bytes(layout: Layout) -> int:
    return files.tree_bytes(storage_dir(layout))


def tag_dir(layout: Layout, repository: str, tag: str) -> Path:
    """Where the kit's registry keeps one tag (filesystem storage driver layout)."""
    return storage_dir(layout) / "docker/registry/v2/repositories" / repository / "_manifests/tags" / tag


def garbage_collect(layout: Layout, manager, port: int, untag: list[tuple[str, str]] | tuple = (),
                    timeout: float = 120) -> Outcome:
    """With the registry stopped (the collector must not race with pushes): remove the
    `untag` tags — only those tags: deleting through the API would delete the manifest and
    with it every other tag of the same digest — then `docker-registry garbage-collect
    --delete-untagged`, then start the registry again. Reports the bytes its storage
    shrank by."""
    if not port:
        return Outcome.skipped("registry_port is 0: no local registry")
    if not isinstance(manager, Supervisor) or not manager.supervisord_up():
        raise RegistryError("the registry's supervisord is not running", "apply the configure runbook first")
    if not (storage_dir(layout) / "docker/registry/v2/repositories").is_dir():
        # nothing was ever pushed (the collector itself fails on an empty store: "Path not found")
        return Outcome.ok("the registry holds no repository: nothing to collect", registry_reclaimed_bytes=0)
    before = storage_bytes(layout)
    manager.stop_program("registry")
    try:
        for repository, tag in untag:
            shutil.rmtree(tag_dir(layout, repository, tag), ignore_errors=True)
        proc = subprocess.run([str(binary()), "garbage-collect", "--delete-untagged", str(config_path(layout))],
                              capture_output=True, text=True, timeout=timeout)
    finally:
        manager.rpc().startProcess("registry", False)
    if proc.returncode:
        raise RegistryError(f"garbage-collect failed: {(proc.stderr or proc.stdout).strip()[-500:]}",
                            f"read {log_path(layout)}; the registry was started again")
    wait_ready(port, log=log_path(layout))
    freed = before - storage_bytes(layout)
    if freed > 0 or untag:
        return Outcome.changed(f"garbage-collect reclaimed {freed} bytes of {before}", registry_reclaimed_bytes=freed)
    return Outcome.ok(f"garbage-collect found nothing to reclaim ({before} bytes in use)", registry_reclaimed_bytes=0)
