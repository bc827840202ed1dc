"""The fleet's pieces that need no cluster: its objects, its buildkitd.toml, its drain, the
local cluster's configuration and certificates, the parameters' refusals. The cluster
layer (tests/cluster) runs all of it against a real API server."""

from __future__ import annotations

import subprocess
import tomllib

import pytest
import yaml

from runbook_checks.core import params
from runbook_checks.core.errors import FleetError, ParameterError
from runbook_checks.fleet import cluster, deploy, manifests, pki

FLEET = manifests.Fleet("buildkitd", "buildkit", "localhost/buildkit-ops/builder:v0", 1, 3, "250m", "2", "256Mi",
                        "2Gi", 60, 30, 300, "ClusterIP", 4)
TLS = {"tls.crt": b"cert", "tls.key": b"key", "ca.crt": b"ca"}


def by_kind(objects):
    return {o.kind: o for o in objects}


def test_the_fleet_is_every_object_in_the_order_they_are_applied():
    objects = manifests.objects(FLEET, manifests.buildkitd_toml(FLEET), TLS)
    assert [o.kind for o in objects] == ["Namespace", "ConfigMap", "Secret", "Service", "Deployment",
                                         "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    kinds = by_kind(objects)
    box = kinds["Deployment"].spec.template.spec.containers[0]
    assert box.readinessProbe.exec.command[:3] == ["buildctl", "--addr", manifests.SOCKET]
    assert box.livenessProbe.exec.command == box.readinessProbe.exec.command
    assert box.lifecycle.preStop.exec.command == ["/bin/sh", "-c", manifests.DRAIN]
    assert box.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert kinds["Deployment"].spec.replicas is None  # the HPA owns the replica count
    assert kinds["Deployment"].spec.template.spec.terminationGracePeriodSeconds == 300
    hpa = kinds["HorizontalPodAutoscaler"].spec
    assert (hpa.minReplicas, hpa.maxReplicas) == (1, 3)
    assert hpa.metrics[0].resource.target.averageUtilization == 60
    assert hpa.behavior.scaleDown.stabilizationWindowSeconds == 30
    assert kinds["PodDisruptionBudget"].spec.maxUnavailable == 1
    assert set(kinds["Secret"].data) == {"tls.crt", "tls.key", "ca.crt"}
    assert kinds["Service"].spec.selector == {"app.kubernetes.io/instance": "buildkitd"}


def test_a_new_configuration_or_certificate_rolls_the_pods():
    base = manifests.objects(FLEET, "a", TLS)[4].spec.template.metadata.annotations
    assert manifests.objects(FLEET, "b", TLS)[4].spec.template.metadata.annotations != base
    assert manifests.objects(FLEET, "a", TLS | {"tls.crt": b"new"})[4].spec.template.metadata.annotations != base
    assert manifests.objects(FLEET, "a", TLS)[4].spec.template.metadata.annotations == base


def test_the_pods_buildkitd_toml_serves_mtls_on_the_service_port_and_keeps_the_kits_gc():
    doc = tomllib.loads(manifests.buildkitd_toml(FLEET))
    assert doc["grpc"]["address"] == [f"tcp://0.0.0.0:{manifests.PORT}", manifests.SOCKET]
    assert doc["grpc"]["tls"] == {"ca": "/etc/buildkit/tls/ca.crt", "cert": "/etc/buildkit/tls/tls.crt",
                                  "key": "/etc/buildkit/tls/tls.key"}
    assert len(doc["worker"]["oci"]["gcpolicy"]) == 3 and doc["worker"]["oci"]["max-parallelism"] == 4


@pytest.mark.parametrize("line, busy", [
    ("   1: 0A00F40A:04D2 0100F40A:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 1", True),
    ("   0: 00000000:04D2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1", False),
    ("   2: 0A00F40A:04D3 0100F40A:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 1", False),
    ("   3: 0A00F40A:04D2 0100F40A:A1B2 06 00000000:00000000 00:00000000 00000000     0        0 1", False),
])
def test_the_drain_waits_for_an_established_connection_to_the_grpc_port_only(tmp_path, line, busy):
    table = tmp_path / "tcp"
    table.write_text("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n" + line + "\n")
    script = manifests.DRAIN.replace("/proc/net/tcp /proc/net/tcp6", str(table)).replace("do sleep 1; done",
                                                                                         "do exit 7; done")
    assert script != manifests.DRAIN
    rc = subprocess.run(["/bin/busybox", "sh", "-c", script]).returncode
    assert rc == (7 if busy else 0)


def test_the_local_clusters_programs_listen_on_loopback_only(tmp_path):
    c = cluster.Cluster(tmp_path)
    bins = {name: tmp_path / name for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                               "kubelet", "kube-proxy", "metrics-server")}
    commands = " ".join(c.commands(bins).values())
    assert "0.0.0.0" not in commands
    assert f"--bind-address=127.0.0.1 --secure-port={cluster.PORTS['apiserver']}" in commands
    assert "--failCgroupV1" not in commands


def test_the_local_clusters_configuration_parses_and_keeps_off_the_hosts_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster.binaries, "programs", lambda: {n: tmp_path / n for n in cluster.PROGRAMS
                                                               + ("kube-proxy",) if n != "containerd"})
    written = cluster.Cluster(tmp_path).config_files()
    containerd = tomllib.loads(written[tmp_path / "etc/containerd.toml"])
    cri = containerd["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True and cri["stream_server_address"] == "127.0.0.1"
    assert containerd["root"].startswith(str(tmp_path)) and containerd["state"].startswith(str(tmp_path))
    kubelet = yaml.safe_load(written[tmp_path / "etc/kubelet.yaml"])
    assert kubelet["failCgroupV1"] is False and kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["address"] == "127.0.0.1" and kubelet["readOnlyPort"] == 0
    assert kubelet["podLogsDir"].startswith(str(tmp_path))
    proxy = yaml.safe_load(written[tmp_path / "etc/kube-proxy.yaml"])
    assert proxy["nodePortAddresses"] == [f"{cluster.NODE_IP}/32"] and proxy["iptables"]["localhostNodePorts"] is False
    assert "[program:kubelet]" in written[tmp_path / "etc/supervisord.conf"]


def test_the_cluster_certificates_carry_the_identities_kubernetes_expects(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert pki.ensure(tmp_path, "https://127.0.0.1:1") is True
    assert pki.ensure(tmp_path, "https://127.0.0.1:1") is False  # made once
    p = pki.paths(tmp_path)
    kubelet = x509.load_pem_x509_certificate(p["kubelet.pem"].read_bytes()).subject
    assert kubelet.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:localhost"
    assert kubelet.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    assert (p["ca.key"].stat().st_mode & 0o777) == 0o600
    config = yaml.safe_load(pki.kubeconfig_path(tmp_path).read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"
    assert (pki.kubeconfig_path(tmp_path).stat().st_mode & 0o777) == 0o600


def test_a_secret_never_reaches_a_report_only_its_digest():
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Secret

    plain = deploy._plain(Secret(metadata=ObjectMeta(name="s", namespace="n", resourceVersion="9"),
                                 data={"tls.key": "c2VjcmV0"}))
    assert plain["data"]["tls.key"].startswith("sha256:") and "c2VjcmV0" not in str(plain)
    assert "resourceVersion" not in plain["metadata"]


def test_the_fleets_parameters_are_refused_in_plain_words():
    assert params.validate({"replicas_min": 2, "replicas_max": 2}).replicas_max == 2
    with pytest.raises(ParameterError, match="replicas_max=1 is below replicas_min=2"):
        params.validate({"replicas_min": 2, "replicas_max": 1})
    with pytest.raises(ParameterError, match="namespace"):
        params.validate({"namespace": "Build_Kit"})
    with pytest.raises(ParameterError, match="service_type"):
        params.validate({"service_type": "Ingress"})
    with pytest.raises(ParameterError, match="absolute path"):
        params.validate({"kubeconfig": "kube/config"})


def test_a_missing_kubeconfig_or_a_stopped_local_cluster_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FleetError, match="does not exist"):
        deploy.target(str(tmp_path / "nope"))
    monkeypatch.setenv("BUILDKIT_OPS_CLUSTER_DIR", str(tmp_path))
    with pytest.raises(FleetError, match="invoke cluster.up"):
        deploy.target("")


def test_the_builder_image_holds_buildkit_runc_with_its_libraries_and_a_shell(tmp_path):
    from runbook_checks.fleet import images

    images.builder_context(tmp_path)
    rootfs = tmp_path / "rootfs"
    for name in ("buildkitd", "buildctl", "runc"):
        assert (rootfs / "usr/bin" / name).stat().st_mode & 0o111
    ldd = subprocess.run(["ldd", "/usr/sbin/runc"], capture_output=True, text=True).stdout
    libs = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if "=>" in line and "/" in line]
    assert libs and all((rootfs / lib.lstrip("/")).exists() for lib in libs)
    assert (rootfs / "bin/sh").readlink().name == "busybox"
    assert 'ENTRYPOINT ["/usr/bin/buildkitd"]' in (tmp_path / "Dockerfile").read_text()
    # the tag names what is inside: the same context, the same tag; another runc, another tag
    ref = images.builder_ref()
    assert ref == f"localhost/buildkit-ops/builder:{images.BUILDKIT_VERSION}-{images._digest(tmp_path)[:12]}"
    (rootfs / "usr/bin/runc").write_bytes(b"another runc")
    assert not ref.endswith(images._digest(tmp_path)[:12])


def test_down_removes_the_chains_the_kubelet_leaves_and_the_jumps_to_them():
    from runbook_checks.fleet import host

    chain = "BKO-TEST-CHAIN"
    subprocess.run(["iptables", "-N", chain], check=True)
    subprocess.run(["iptables", "-A", "OUTPUT", "-d", "192.0.2.254/32", "-j", chain], check=True)
    try:
        host._drop_chains("iptables", (chain,))
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        assert chain not in saved
    finally:
        subprocess.run(["iptables", "-D", "OUTPUT", "-d", "192.0.2.254/32", "-j", chain], capture_output=True)
        subprocess.run(["iptables", "-X", chain], capture_output=True)
