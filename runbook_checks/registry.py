"""The lab's local OCI registry (Debian's docker-registry, distribution 2.x): its config
file, its supervisord program beside buildkitd, and whether it answers. It listens on
127.0.0.1 only, keeps its blobs under `<state_dir>/registry` and allows deletes (so
retention can remove tags and the garbage collector can reclaim their blobs)."""

from __future__ import annotations

import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import KitError
from .layout import Layout

# Where Debian's docker-registry package puts the binary (`dpkg -L docker-registry`);
# it runs as `docker-registry serve CONFIG.yml`.
BINARY = Path("/usr/bin/docker-registry")


class RegistryError(KitError):
    """The local registry is missing, not configured or does not answer."""


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


def supervisor_program(layout: Layout, port: int) -> str:
    """The [program:registry] section. The listen address is repeated in the environment
    (distribution reads REGISTRY_HTTP_ADDR over the file) so that a port change changes
    the program's definition and supervisord restarts it."""
    return textwrap.dedent(f"""
        [program:registry]
        command={binary()} serve {config_path(layout)}
        environment=REGISTRY_HTTP_ADDR="127.0.0.1:{port}"
        directory={layout.state_dir}
        autostart=true
        autorestart=true
        startsecs=2
        stopsignal=TERM
        stopwaitsecs=20
        redirect_stderr=true
        stdout_logfile={log_path(layout)}
        stdout_logfile_maxbytes=5MB
        stdout_logfile_backups=2
        """)


def address(port: int) -> str:
    return f"127.0.0.1:{port}"


def answers(port: int, timeout: float = 2) -> bool:
    """GET /v2/ is 200: the registry API (version 2) is served."""
    try:
        with urllib.request.urlopen(f"http://{address(port)}/v2/", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(port: int, timeout: float = 30, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(port):
            return
        time.sleep(0.2)
    raise RegistryError(f"the registry did not answer on http://{address(port)}/v2/ within {timeout:.0f}s",
                        f"read {log}" if log else "check that the port is free and docker-registry is installed")


def tags(port: int, repository: str) -> list[str]:
    """The tags of one repository, from the registry's own API."""
    import json

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
