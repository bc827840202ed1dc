"""The local cluster's footprint on this machine, and how it is taken back: the node's
bridge and the pods' bridge, the kubelet's and kube-proxy's iptables chains, the mounts
under the cluster directory, the loopback ports it needs free."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..core.errors import FleetError

NODE_BRIDGE, NODE_IP = "bko-node0", "10.200.0.1"  # the node's address (kubelet's --node-ip): no route out
POD_BRIDGE, POD_CIDR = "bko-cni0", "10.244.0.0/24"


def unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def refuse_busy_ports(ports: dict[str, int]) -> None:
    import socket

    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise FleetError(f"port {port} on 127.0.0.1 ({name}) is taken: another local cluster (or a program"
                                 " of a real one) is running", "stop it first: invoke cluster.down (for a test"
                                 " cluster: BUILDKIT_OPS_CLUSTER_DIR=ITS_DIR invoke cluster.down)") from None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if proc.returncode:
        raise FleetError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}", "the local cluster needs root"
                         " (network bridges, iptables)")


def network_up() -> None:
    """The node's bridge and address; bridged pod traffic through iptables (kube-proxy's
    Service rules see it)."""
    if not Path(f"/sys/class/net/{NODE_BRIDGE}").exists():
        _ip("link", "add", NODE_BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
        _ip("link", "set", NODE_BRIDGE, "up")
    nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if nf.exists() and nf.read_text().strip() != "1":
        nf.write_text("1\n")


def network_down(kube_proxy: Path | None) -> None:
    for bridge in (POD_BRIDGE, NODE_BRIDGE):
        if Path(f"/sys/class/net/{bridge}").exists():
            _ip("link", "del", bridge)
    if kube_proxy and kube_proxy.exists():
        subprocess.run([str(kube_proxy), "--cleanup"], capture_output=True, timeout=60)
    for family in ("iptables", "ip6tables"):
        _drop_chains(family, KUBELET_CHAINS)


KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")  # the kubelet's own, left by it


def _drop_chains(family: str, chains: tuple[str, ...]) -> None:
    """The rules that jump to `chains`, then the chains themselves, in every table."""
    import shlex

    saved = subprocess.run([f"{family}-save"], capture_output=True, text=True).stdout.splitlines()
    table, jumps, present = "", [], []
    for line in saved:
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line[1:].split()[0] in chains:
            present.append((table, line[1:].split()[0]))
        elif line.startswith("-A ") and any(f"-j {c}" in line for c in chains) \
                and not any(line.startswith(f"-A {c} ") for c in chains):
            jumps.append((table, shlex.split(line[3:])))
    for table, rule in jumps:
        subprocess.run([family, "-t", table, "-D", *rule], capture_output=True)
    for table, chain in present:
        subprocess.run([family, "-t", table, "-F", chain], capture_output=True)
        subprocess.run([family, "-t", table, "-X", chain], capture_output=True)
