"""The local cluster's own certificates and kubeconfigs: a cluster CA, a front-proxy CA for
the aggregation layer (metrics-server), the service-account signing key, and one client
identity per component, each with what Kubernetes' RBAC and Node authorizer expect of its
name. Made once per cluster directory by `invoke cluster.up`; never the kit's installation
CA (production.ca), which signs the fleet's builders and teams."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from ..core import files
from ..production import ca

NODE = "localhost"  # the node's name: its kubelet listens on loopback, reached by this name
SERVICE_IP = "10.96.0.1"  # the first address of the service range: the `kubernetes` Service

# kubeconfig name -> (common name, group): the component identities Kubernetes' default
# RBAC bindings (and the Node authorizer, for the kubelet) recognise
CLIENTS = {
    "admin": ("kubernetes-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kubelet": (f"system:node:{NODE}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
    "metrics-server": ("buildkit-ops:metrics-server", "system:masters"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}
DAYS = 365


def paths(root: Path) -> dict[str, Path]:
    pki = root / "pki"
    names = ["ca", "front-proxy-ca", "apiserver", "front-proxy-client", *CLIENTS]
    out = {f"{n}.pem": pki / f"{n}.pem" for n in names} | {f"{n}.key": pki / f"{n}.key" for n in names}
    return out | {"sa.key": pki / "sa.key", "sa.pub": pki / "sa.pub"}


def kubeconfig_path(root: Path, name: str = "admin") -> Path:
    return root / ("kubeconfig" if name == "admin" else f"kubeconfigs/{name}.kubeconfig")


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.atomic_write(path, data, mode=mode)


def ensure(root: Path, server: str) -> bool:
    """Certificates, keys and kubeconfigs for a cluster at `server` (https://HOST:PORT);
    True when they were made now (they are made once per cluster directory)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p = paths(root)
    if all(path.exists() for path in p.values()) and kubeconfig_path(root).exists():
        return False
    ca_cert, ca_key = ca.new_ca("buildkit-ops local cluster CA", DAYS)
    fp_cert, fp_key = ca.new_ca("buildkit-ops local cluster front-proxy CA", DAYS)
    made = {"ca": (ca_cert, ca_key), "front-proxy-ca": (fp_cert, fp_key),
            "apiserver": ca.sign(ca_cert, ca_key, "kube-apiserver", DAYS,
                                 ["127.0.0.1", SERVICE_IP, "localhost", "kubernetes", "kubernetes.default",
                                  "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]),
            "front-proxy-client": ca.sign(fp_cert, fp_key, "front-proxy-client", DAYS)}
    for name, (cn, group) in CLIENTS.items():
        made[name] = ca.sign(ca_cert, ca_key, cn, DAYS, organization=group)
    for name, (cert, key) in made.items():
        _write(p[f"{name}.key"], ca.pem_key(key), 0o600)
        _write(p[f"{name}.pem"], ca.pem(cert), 0o644)
    sa = ec.generate_private_key(ec.SECP256R1())
    _write(p["sa.key"], ca.pem_key(sa), 0o600)
    _write(p["sa.pub"], sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    for name in CLIENTS:
        if name != "apiserver-kubelet-client":
            _write(kubeconfig_path(root, name), kubeconfig(server, p["ca.pem"].read_bytes(),
                                                           p[f"{name}.pem"].read_bytes(),
                                                           p[f"{name}.key"].read_bytes()), 0o600)
    return True


def kubeconfig(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, name: str = "buildkit-ops") -> bytes:
    """A kubeconfig with its certificates inline (one file to hand over)."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": name,
           "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
           "users": [{"name": name, "user": {"client-certificate-data": b64(cert_pem),
                                              "client-key-data": b64(key_pem)}}],
           "contexts": [{"name": name, "context": {"cluster": name, "user": name}}]}
    return yaml.safe_dump(doc, sort_keys=False).encode()
