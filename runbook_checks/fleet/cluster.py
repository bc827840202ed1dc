"""A real single-node Kubernetes on this machine, for the fleet runbook and its tests:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler, Debian's containerd,
kubelet, kube-proxy and metrics-server, each a program under the cluster directory's own
supervisord, every one of them on 127.0.0.1. Pods get addresses on a bridge of the kit's
(CNI from Debian's containernetworking-plugins); the node's address lives on a second
bridge with no route out, so the node reaches nothing but this machine. Images are
imported into containerd from OCI archives BuildKit made here (fleet.images): nothing is
pulled.

`invoke cluster.up|down|status` drive it; `python -m runbook_checks.fleet.cluster` too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core import files
from ..core.clock import wait_until
from ..core.errors import FleetError
from ..core.paths import PROJECT_ROOT
from ..daemon.install import RUNC_PATH
from . import binaries, host, images, pki

NODE_IP, POD_BRIDGE, POD_CIDR = host.NODE_IP, host.POD_BRIDGE, host.POD_CIDR
SERVICE_CIDR = "10.96.0.0/24"
CNI_BIN = "/usr/lib/cni"
# every port on 127.0.0.1, away from a real cluster's defaults so one on this machine is not hit
PORTS = {"etcd": 12379, "etcd-peer": 12380, "apiserver": 16443, "kubelet": 11250, "kubelet-healthz": 11248,
         "proxy-metrics": 11249, "proxy-healthz": 11256, "controller-manager": 11257, "scheduler": 11259,
         "metrics-server": 14443}
PROGRAMS = ("etcd", "kube-apiserver", "containerd", "kube-controller-manager", "kube-scheduler", "kubelet",
            "kube-proxy", "metrics-server")
HPA_SYNC = "5s"  # the HPA controller's period (upstream: 15s), so a scale-up shows within a lab's minute


def default_dir() -> Path:
    return Path(os.environ.get("BUILDKIT_OPS_CLUSTER_DIR") or PROJECT_ROOT / ".cluster")


@dataclass(frozen=True)
class Cluster:
    root: Path

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{PORTS['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return pki.kubeconfig_path(self.root)

    @property
    def containerd_socket(self) -> Path:
        return self.root / "run/containerd.sock"

    @property
    def supervisor_sock(self) -> Path:
        return self.root / "run/supervisor.sock"

    def log(self, program: str) -> Path:
        return self.root / f"log/{program}.log"

    # ---------------------------------------------------------------------------------
    # configuration
    # ---------------------------------------------------------------------------------
    def commands(self, bins: dict[str, Path]) -> dict[str, str]:
        r, p, k = self.root, pki.paths(self.root), lambda name: pki.kubeconfig_path(self.root, name)
        auth = lambda name: f"--kubeconfig={k(name)} --authentication-kubeconfig={k(name)} --authorization-kubeconfig={k(name)}"  # noqa: E501,E731
        return {
            "etcd": f"{bins['etcd']} --name=node --data-dir={r}/etcd --listen-client-urls=http://127.0.0.1:{PORTS['etcd']}"
                    f" --advertise-client-urls=http://127.0.0.1:{PORTS['etcd']}"
                    f" --listen-peer-urls=http://127.0.0.1:{PORTS['etcd-peer']}"
                    f" --initial-advertise-peer-urls=http://127.0.0.1:{PORTS['etcd-peer']}"
                    f" --initial-cluster=node=http://127.0.0.1:{PORTS['etcd-peer']} --listen-metrics-urls=",
            "kube-apiserver": f"{bins['kube-apiserver']} --etcd-servers=http://127.0.0.1:{PORTS['etcd']}"
                    f" --bind-address=127.0.0.1 --secure-port={PORTS['apiserver']} --advertise-address={NODE_IP}"
                    f" --service-cluster-ip-range={SERVICE_CIDR} --allow-privileged=true"
                    f" --tls-cert-file={p['apiserver.pem']} --tls-private-key-file={p['apiserver.key']}"
                    f" --client-ca-file={p['ca.pem']} --authorization-mode=Node,RBAC"
                    f" --kubelet-client-certificate={p['apiserver-kubelet-client.pem']}"
                    f" --kubelet-client-key={p['apiserver-kubelet-client.key']} --kubelet-preferred-address-types=Hostname"
                    f" --service-account-issuer=https://kubernetes.default.svc --service-account-key-file={p['sa.pub']}"
                    f" --service-account-signing-key-file={p['sa.key']}"
                    f" --requestheader-client-ca-file={p['front-proxy-ca.pem']}"
                    " --requestheader-allowed-names=front-proxy-client --requestheader-username-headers=X-Remote-User"
                    " --requestheader-group-headers=X-Remote-Group --requestheader-extra-headers-prefix=X-Remote-Extra-"
                    f" --proxy-client-cert-file={p['front-proxy-client.pem']}"
                    f" --proxy-client-key-file={p['front-proxy-client.key']} --profiling=false",
            "containerd": f"/usr/bin/containerd --config={r}/etc/containerd.toml",
            "kube-controller-manager": f"{bins['kube-controller-manager']} {auth('controller-manager')}"
                    f" --bind-address=127.0.0.1 --secure-port={PORTS['controller-manager']} --leader-elect=false"
                    f" --service-account-private-key-file={p['sa.key']} --root-ca-file={p['ca.pem']}"
                    f" --use-service-account-credentials=true --horizontal-pod-autoscaler-sync-period={HPA_SYNC}"
                    f" --service-cluster-ip-range={SERVICE_CIDR} --profiling=false",
            "kube-scheduler": f"{bins['kube-scheduler']} {auth('scheduler')} --bind-address=127.0.0.1"
                    f" --secure-port={PORTS['scheduler']} --leader-elect=false --profiling=false",
            "kubelet": f"{bins['kubelet']} --config={r}/etc/kubelet.yaml --kubeconfig={k('kubelet')}"
                    f" --root-dir={r}/kubelet --cert-dir={r}/kubelet/pki --hostname-override={pki.NODE}"
                    f" --node-ip={NODE_IP}",
            "kube-proxy": f"{bins['kube-proxy']} --config={r}/etc/kube-proxy.yaml",
            "metrics-server": f"{bins['metrics-server']} {auth('metrics-server')} --bind-address=127.0.0.1"
                    f" --secure-port={PORTS['metrics-server']} --cert-dir={r}/metrics-server --kubelet-insecure-tls"
                    " --kubelet-preferred-address-types=Hostname --kubelet-use-node-status-port --metric-resolution=10s --kubelet-request-timeout=5s",
        }

    def config_files(self) -> dict[Path, str]:
        r, p = self.root, pki.paths(self.root)
        containerd = textwrap.dedent(f"""\
            # Managed by buildkit-ops (invoke cluster.up): the local cluster's containerd
            version = 2
            root = "{r}/containerd"
            state = "{r}/run/containerd"
            disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                                "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
            [grpc]
              address = "{self.containerd_socket}"
            [ttrpc]
              address = "{r}/run/containerd-ttrpc.sock"
            [plugins."io.containerd.internal.v1.opt"]
              path = "{r}/containerd-opt"
            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "{images.SANDBOX_IMAGE}"
              restrict_oom_score_adj = true
              stream_server_address = "127.0.0.1"
              [plugins."io.containerd.grpc.v1.cri".containerd]
                snapshotter = "overlayfs"
                default_runtime_name = "runc"
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
                  runtime_type = "io.containerd.runc.v2"
                  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                    BinaryName = "{shutil.which('runc', path=RUNC_PATH) or '/usr/sbin/runc'}"
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "{CNI_BIN}"
                conf_dir = "{r}/etc/cni"
            """)
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": PORTS["kubelet"], "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": PORTS["kubelet-healthz"],
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(p["ca.pem"])}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": f"{r}/log/pods", "volumePluginDir": f"{r}/kubelet/volume-plugins",
            "resolvConf": "", "serializeImagePulls": False, "maxPods": 30,
            "evictionHard": {"memory.available": "200Mi", "nodefs.available": "5%", "imagefs.available": "5%"},
        }
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(pki.kubeconfig_path(r, "kube-proxy"))},
            "mode": "iptables", "clusterCIDR": POD_CIDR, "hostnameOverride": pki.NODE,
            "bindAddress": "127.0.0.1", "healthzBindAddress": f"127.0.0.1:{PORTS['proxy-healthz']}",
            "metricsBindAddress": f"127.0.0.1:{PORTS['proxy-metrics']}", "nodePortAddresses": [f"{NODE_IP}/32"],
            "iptables": {"localhostNodePorts": False}, "conntrack": {"maxPerCore": 0},
        }
        cni = {"cniVersion": "0.4.0", "name": "buildkit-ops", "plugins": [
            {"type": "bridge", "bridge": POD_BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "dataDir": f"{r}/cni-ipam"}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}
        supervisord = textwrap.dedent(f"""\
            ; Managed by buildkit-ops (invoke cluster.up): the local cluster's programs
            [unix_http_server]
            file={self.supervisor_sock}
            chmod=0700
            [supervisord]
            logfile={r}/log/supervisord.log
            pidfile={r}/run/supervisord.pid
            directory={r}
            childlogdir={r}/log
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [supervisorctl]
            serverurl=unix://{self.supervisor_sock}
            """)
        for name, command in self.commands(binaries.programs()).items():
            supervisord += textwrap.dedent(f"""\
                [program:{name}]
                command={command}
                environment=PATH="{RUNC_PATH}"
                autostart=true
                autorestart=true
                startsecs=1
                startretries=20
                stopsignal=TERM
                stopwaitsecs=30
                stopasgroup=true
                killasgroup=true
                redirect_stderr=true
                stdout_logfile={self.log(name)}
                stdout_logfile_maxbytes=20MB
                stdout_logfile_backups=1
                """)
        return {r / "etc/containerd.toml": containerd, r / "etc/kubelet.yaml": yaml.safe_dump(kubelet),
                r / "etc/kube-proxy.yaml": yaml.safe_dump(proxy),
                r / "etc/cni/10-buildkit-ops.conflist": json.dumps(cni, indent=2) + "\n",
                r / "etc/supervisord.conf": supervisord}

    # ---------------------------------------------------------------------------------
    # its programs
    # ---------------------------------------------------------------------------------
    def rpc(self):
        import xmlrpc.client

        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.supervisor_sock}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        try:
            return self.supervisor_sock.exists() and self.rpc().getState()["statename"] == "RUNNING"
        except OSError:
            return False

    def programs(self) -> dict[str, str]:
        """Each program's supervisord state; {} when the cluster is down."""
        if not self.running():
            return {}
        return {i["name"]: i["statename"] for i in self.rpc().getAllProcessInfo()}

    def client(self):
        return kube_client(self.kubeconfig)

    def _last_error(self, program: str) -> str:
        try:
            lines = self.log(program).read_text(errors="replace").splitlines()
        except OSError:
            return "no log yet"
        errors = [line for line in lines if " E" in line[:12] or "error" in line.lower()]
        return (errors or lines or ["an empty log"])[-1][-400:]

    def _wait(self, predicate, timeout: float, what: str, program: str) -> float:
        def check():
            try:
                return predicate()
            except Exception:  # noqa: BLE001 - the program is still coming up
                return False
        try:
            return wait_until(check, timeout, what, "", FleetError, 1.0)
        except FleetError:
            raise FleetError(f"{what}: not within {timeout:.0f}s; {program} says: {self._last_error(program)}",
                             f"read {self.log(program)} (invoke cluster.status shows every program)") from None

    # ---------------------------------------------------------------------------------
    # up, down, status
    # ---------------------------------------------------------------------------------
    def up(self, progress=print) -> dict:
        """Build what is missing (once per version), start every program, and wait until
        the node is Ready and the metrics API answers; a running cluster is only checked."""
        if self.running():
            progress(f"the local cluster in {self.root} is running: checking it")
        else:
            self._start(progress)
        self._wait(self.containerd_socket.exists, 60, "containerd serving", "containerd")
        if not images.has_image(self.containerd_socket, images.SANDBOX_IMAGE):
            progress("building the sandbox image with BuildKit and importing it into containerd")
            images.import_image(self.containerd_socket, images.archive(images.SANDBOX_IMAGE, images.sandbox_context))
        took = self._wait(lambda: raw_get(self.client(), "/readyz") == "ok", 180,
                          "the API server ready", "kube-apiserver")
        progress(f"the API server is ready ({took:.0f}s)")
        _apply_metrics_api(self.client())
        took = self._wait(self.node_ready, 180, f"node {pki.NODE} Ready", "kubelet")
        progress(f"node {pki.NODE} is Ready ({took:.0f}s)")
        took = self._wait(self.metrics_ready, 180, "the metrics API (metrics.k8s.io) serving node metrics",
                          "metrics-server")
        progress(f"the metrics API serves node metrics ({took:.0f}s)")
        return self.status()

    def _start(self, progress) -> None:
        host.refuse_busy_ports(PORTS)
        progress("the programs: Kubernetes, etcd, metrics-server (built once per version into the kit's cache)")
        binaries.programs()
        if pki.ensure(self.root, self.server):
            progress(f"made the cluster's certificates and kubeconfigs in {self.root}")
        for path, text in self.config_files().items():
            files.atomic_write(path, text)
        for folder in ("run", "log", "kubelet", "metrics-server"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        host.network_up()
        progress("starting etcd, kube-apiserver, containerd, controller-manager, scheduler, kubelet, kube-proxy,"
                 " metrics-server")
        proc = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c",
                               str(self.root / "etc/supervisord.conf")], capture_output=True, text=True, timeout=60)
        if proc.returncode:
            raise FleetError(f"supervisord did not start: {proc.stderr.strip() or proc.stdout.strip()}",
                             f"read {self.root}/log/supervisord.log")
        self._wait(self.running, 20, "supervisord answering", "supervisord")

    def node_ready(self) -> bool:
        from lightkube.resources.core_v1 import Node

        node = self.client().get(Node, pki.NODE)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    def metrics_ready(self) -> bool:
        return bool(raw_get(self.client(), f"/apis/metrics.k8s.io/v1beta1/nodes/{pki.NODE}"))

    def status(self) -> dict:
        """The programs' states, the node, the pods on it: what `invoke cluster.status` shows."""
        out = {"root": str(self.root), "server": self.server, "kubeconfig": str(self.kubeconfig),
               "programs": self.programs(), "node_ready": False, "pods": []}
        if not out["programs"]:
            return out
        try:
            from lightkube.resources.core_v1 import Pod

            out["node_ready"] = self.node_ready()
            out["pods"] = [{"namespace": p.metadata.namespace, "name": p.metadata.name, "phase": p.status.phase,
                            "ip": p.status.podIP or ""} for p in self.client().list(Pod, namespace="*")]
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            out["error"] = str(exc)[:300]
        return out

    def down(self, purge: bool = False, progress=print) -> None:
        """Stop the pods (their network and mounts released by the kubelet), then every
        program, then remove the bridges and kube-proxy's rules; `purge` also removes the
        cluster directory (etcd's data, images, certificates)."""
        if self.running():
            rpc = self.rpc()
            for name in ("kube-controller-manager", "kube-scheduler"):
                _stop(rpc, name)
            try:
                _delete_pods(self.client())
                self._wait(lambda: not _tasks(self.containerd_socket), 90, "the pods stopped", "kubelet")
            except Exception as exc:  # noqa: BLE001 - down goes on: the tasks are killed below
                progress(f"the pods did not stop through the kubelet ({exc}); killing their tasks")
            for name in ("kubelet", "kube-proxy", "metrics-server", "kube-apiserver", "etcd"):
                _stop(rpc, name)
            _kill_tasks(self.containerd_socket)
            pidfile = self.root / "run/supervisord.pid"
            pid = int(pidfile.read_text()) if pidfile.exists() else 0
            rpc.shutdown()
            if pid:
                wait_until(lambda: not Path(f"/proc/{pid}").exists(), 60, "supervisord exiting", "", FleetError, 0.2)
            progress("stopped the local cluster's programs")
        host.unmount_under(self.root)
        host.network_down(binaries.cached_path("kube-proxy"))
        if purge and self.root.exists():
            shutil.rmtree(self.root)
            progress(f"removed {self.root}")


def kube_client(kubeconfig: Path):
    """A lightkube client for a kubeconfig, applying as the kit's field manager."""
    from lightkube import Client, KubeConfig

    return Client(config=KubeConfig.from_file(kubeconfig), field_manager="buildkit-ops", timeout=30)


def raw_get(client, path: str):
    """GET a path of the API server that has no typed resource (/readyz, /version, the
    metrics API) with the lightkube client's own connection and credentials: JSON or text."""
    response = client._client._client.get(path)  # lightkube's httpx client: base URL, TLS, credentials
    response.raise_for_status()
    return response.json() if response.headers.get("content-type", "").startswith("application/json") \
        else response.text


def _stop(rpc, name: str) -> None:
    import xmlrpc.client

    try:
        rpc.stopProcess(name)
    except xmlrpc.client.Fault:
        pass


def _delete_pods(client) -> None:
    from lightkube.resources.core_v1 import Pod

    for pod in client.list(Pod, namespace="*"):
        client.delete(Pod, pod.metadata.name, namespace=pod.metadata.namespace, grace_period=0)


def _tasks(socket: Path) -> list[str]:
    out = subprocess.run(["ctr", "-a", str(socket), "-n", "k8s.io", "tasks", "ls", "-q"], capture_output=True,
                         text=True, timeout=30)
    return out.stdout.split()


def _kill_tasks(socket: Path) -> None:
    if not socket.exists():
        return
    for task in _tasks(socket):
        subprocess.run(["ctr", "-a", str(socket), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task],
                       capture_output=True, timeout=30)
        subprocess.run(["ctr", "-a", str(socket), "-n", "k8s.io", "tasks", "delete", "-f", task],
                       capture_output=True, timeout=30)


def _apply_metrics_api(client) -> None:
    """metrics-server serves the metrics API from 127.0.0.1: an ExternalName Service names it
    for the aggregation layer (its own self-signed certificate, on loopback)."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.models.core_v1 import ServicePort, ServiceSpec
    from lightkube.models.apiregistration_v1 import APIServiceSpec, ServiceReference
    from lightkube.resources.apiregistration_v1 import APIService
    from lightkube.resources.core_v1 import Service

    client.apply(Service(metadata=ObjectMeta(name="metrics-server", namespace="kube-system"),
                         spec=ServiceSpec(type="ExternalName", externalName="localhost",
                                          ports=[ServicePort(port=PORTS["metrics-server"])])), force=True)
    client.apply(APIService(metadata=ObjectMeta(name="v1beta1.metrics.k8s.io"),
                            spec=APIServiceSpec(group="metrics.k8s.io", version="v1beta1", groupPriorityMinimum=100,
                                                versionPriority=100, insecureSkipTLSVerify=True,
                                                service=ServiceReference(name="metrics-server", namespace="kube-system",
                                                                         port=PORTS["metrics-server"]))), force=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runbook_checks.fleet.cluster")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--purge", action="store_true")
    args = parser.parse_args(argv)
    cluster = Cluster(default_dir())
    if args.action == "up":
        cluster.up()
    elif args.action == "down":
        cluster.down(purge=args.purge)
    print(json.dumps(cluster.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
