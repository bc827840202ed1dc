"""Throwaway daemons: a buildkitd started for one job (the upgrade runbook's canary, the
peers benchmark's builders) in a scratch directory of its own, beside the live daemon
and never touching it, stopped and removed after.

`scratch_config` turns a builder's own buildkitd.toml into one such a daemon can run:
its own root, socket, debug address and bridge, everything else as the builder has it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..core import files
from ..core.errors import BuildctlError, KitError
from .buildctl import Buildctl
from .install import RUNC_PATH

SCRATCH_SUBNET = "10.254.0.0/16"  # a throwaway daemon's own bridge (bk-canary), when RUN steps use one
SCRATCH_BRIDGE = "bk-canary"


def scratch_config(live: Path, scratch: Path, debug_port: int, cgroup_parent: str = "") -> Path:
    """`live` (a buildkitd.toml) for a throwaway daemon: its own root, socket, debug
    address and bridge (or CNI network list), no TLS, the cgroup parent given (none: the
    live one's is left out); everything else as it is."""
    import tomlkit

    doc = tomlkit.parse(live.read_text())
    socket, root = scratch / "buildkitd.sock", scratch / "root"
    doc["root"] = str(root)
    grpc = doc.setdefault("grpc", tomlkit.table())
    grpc["address"] = [f"unix://{socket}"]
    grpc["debugAddress"] = f"127.0.0.1:{debug_port}"
    grpc.pop("tls", None)
    oci = doc.get("worker", {}).get("oci")
    if oci is not None:
        oci.pop("defaultCgroupParent", None)
        if cgroup_parent:
            oci["defaultCgroupParent"] = cgroup_parent
        if "bridgeName" in oci or oci.get("networkMode") == "bridge":
            oci["bridgeName"], oci["bridgeSubnet"] = SCRATCH_BRIDGE, SCRATCH_SUBNET
        if "cniConfigPath" in oci:
            network = json.loads(Path(str(oci["cniConfigPath"])).read_text())
            for plugin in network.get("plugins", []):
                if plugin.get("type") == "bridge":
                    plugin["bridge"] = SCRATCH_BRIDGE
                    plugin["ipam"]["ranges"] = [[{"subnet": SCRATCH_SUBNET}]]
            files.atomic_write(scratch / "cni.conflist", json.dumps(network, indent=2) + "\n")
            oci["cniConfigPath"] = str(scratch / "cni.conflist")
    out = scratch / "buildkitd.toml"
    files.atomic_write(out, tomlkit.dumps(doc))
    return out


def defaults_config(scratch: Path, extra: str = "") -> Path:
    """A buildkitd.toml with BuildKit's upstream defaults but for a throwaway daemon's own
    root and socket (and `extra` TOML after them)."""
    out = scratch / "buildkitd.toml"
    files.atomic_write(out, f'root = "{scratch / "root"}"\n\n[grpc]\naddress = ["unix://{scratch}/buildkitd.sock"]\n'
                       + (f"\n{extra}" if extra else ""))
    return out


@contextmanager
def throwaway(bin_dir: Path, config: Path, scratch: Path, what: str, timeout: float = 60,
              preexec: Callable[[], None] | None = None) -> Iterator[Buildctl]:
    """buildkitd of `bin_dir` on `config` (whose socket is scratch/buildkitd.sock), until
    it answers; a client for it. Stopped, its mounts released and `scratch` removed after.
    A daemon that exits or does not answer in time is a KitError with its log's end."""
    log_path = scratch / "buildkitd.log"
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(bin_dir / "buildkitd"), "--config", str(config)], stdout=log,
                                    stderr=subprocess.STDOUT, env={**os.environ, "PATH": RUNC_PATH},
                                    start_new_session=True, preexec_fn=preexec)
        client = Buildctl(bin_dir / "buildctl", f"unix://{scratch / 'buildkitd.sock'}")
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise KitError(f"{what} did not start: {log_path.read_text()[-1500:]}", "")
            try:
                client.workers()
                break
            except BuildctlError:
                if time.monotonic() > deadline:
                    raise KitError(f"{what} did not answer within {timeout:.0f}s", "") from None
                time.sleep(0.3)
        yield client
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        subprocess.run(["umount", "-R", "-l", str(scratch)], capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
