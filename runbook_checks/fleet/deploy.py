"""The fleet runbook's steps, for any cluster a kubeconfig reaches (the local one of
`invoke cluster.up` when none is given): the builder image, the builders' certificate from
the installation's CA, the plan (server-side dry-run of every object against the real API
server, diffed with what runs), apply (server-side apply: idempotent), the rollout, and a
build through the Service with a team's certificate."""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import FleetError
from ..core.layout import Layout
from ..core.results import Outcome
from ..production import ca
from . import autoscale, cluster as local, images, manifests

FIELD_MANAGER = "buildkit-ops"  # as local.kube_client applies
VOLATILE = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid")


@dataclass
class Target:
    """The cluster the runbook acts on."""

    kubeconfig: Path
    local: local.Cluster | None  # the kit's own cluster (images are imported, not pulled)

    def client(self):
        return local.kube_client(self.kubeconfig)


def target(kubeconfig: str) -> Target:
    if kubeconfig:
        path = Path(kubeconfig).expanduser()
        if not path.is_file():
            raise FleetError(f"kubeconfig {kubeconfig} does not exist", "give the path of a kubeconfig file, or leave"
                             " kubeconfig empty for the local cluster (invoke cluster.up)")
        return Target(path.absolute(), None)
    here = local.Cluster(local.default_dir())
    if not here.running():
        raise FleetError(f"no kubeconfig given and the local cluster ({here.root}) is not running",
                         "start it with `invoke cluster.up`, or give kubeconfig=PATH for another cluster")
    return Target(here.kubeconfig, here)


def connect(t: Target) -> Outcome:
    version = local.raw_get(t.client(), "/version")
    return Outcome.ok(f"{version['gitVersion']} at {t.client().config.cluster.server}", kubeconfig=str(t.kubeconfig),
                      kubernetes_version=version["gitVersion"])


def builder_image(t: Target, image: str, apply: bool) -> Outcome:
    """The image the pods run: `image` as given (pulled by the cluster), or the kit's own,
    built here by BuildKit and imported into the local cluster's containerd."""
    if image:
        return Outcome.ok(f"{image} (the cluster pulls it)", builder_image=image)
    ref = images.builder_ref()
    if t.local is None:
        raise FleetError("builder_image is empty and this cluster cannot see images built here",
                         f"push the kit's image ({ref}: invoke fleet.image --push REGISTRY/PATH) to a registry the"
                         " cluster pulls from, then give builder_image=REGISTRY/PATH:TAG")
    socket = t.local.containerd_socket
    if images.has_image(socket, ref):
        return Outcome.ok(f"{ref} in the local cluster's containerd", builder_image=ref)
    if not apply:
        return Outcome.changed(f"would build {ref} with BuildKit and import it into the local cluster",
                               builder_image=ref)
    images.import_image(socket, images.archive(ref, images.builder_context))
    return Outcome.changed(f"built {ref} with BuildKit and imported it into the local cluster", builder_image=ref)


def _secret_cert(client, fleet: manifests.Fleet) -> dict[str, bytes] | None:
    import base64

    from lightkube import ApiError
    from lightkube.resources.core_v1 import Secret

    try:
        secret = client.get(Secret, f"{fleet.name}-tls", namespace=fleet.namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def certificate(layout: Layout, client, fleet: manifests.Fleet, now: _dt.datetime | None = None
                ) -> tuple[dict[str, bytes], str]:
    """The builders' server certificate (the Service's names) from the installation's CA:
    the one the cluster holds while it is valid for those names, from this CA, and further
    than ca.RENEW_BEFORE_DAYS from expiry; else a new one. (files, why)."""
    from cryptography import x509

    ca_cert, ca_key = ca.load_ca(layout)
    ca_pem = ca.pem(ca_cert)
    have = _secret_cert(client, fleet)
    why = "the cluster holds none"
    if have and {"tls.crt", "tls.key", "ca.crt"} <= set(have):
        cert = x509.load_pem_x509_certificate(have["tls.crt"])
        names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
        left = cert.not_valid_after_utc - (now or _dt.datetime.now(_dt.timezone.utc))
        if have["ca.crt"] != ca_pem:
            why = "the one it holds is from another CA"
        elif names != set(fleet.server_names):
            why = f"the one it holds names {', '.join(sorted(names))}"
        elif left <= _dt.timedelta(days=ca.RENEW_BEFORE_DAYS):
            why = f"the one it holds expires in {left.days} days"
        else:
            return have, ""
    cert, key = ca.sign(ca_cert, ca_key, fleet.server_names[0], ca.SERVER_DAYS, fleet.server_names)
    return {"tls.crt": ca.pem(cert), "tls.key": ca.pem_key(key), "ca.crt": ca_pem}, why


def _plain(obj) -> dict[str, Any]:
    doc = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    doc.pop("status", None)
    meta = doc.get("metadata", {})
    for key in VOLATILE:
        meta.pop(key, None)
    if doc.get("kind") == "Secret":  # never a key in a report: a digest says whether it changed
        doc["data"] = {k: "sha256:" + hashlib.sha256(v.encode()).hexdigest()[:12] for k, v in (doc.get("data") or {}).items()}
    return doc


def _name(obj) -> str:
    return f"{obj.kind}/{obj.metadata.name}"


def _refused(exc, obj) -> FleetError:
    status = exc.status
    fix = ("check that the kubeconfig's user may apply these kinds in this namespace (kubectl auth can-i)"
           if status.code in (401, 403) else
           "fix the parameter behind the value the message names, then run again; nothing was changed")
    return FleetError(f"the API server refused {_name(obj)}: {status.message}", fix)


def converge(client, objects: list, apply: bool) -> Outcome:
    """Server-side dry-run of every object first (the real API server validates each one,
    admission included), diffed against what runs; then, with apply, the same objects
    applied for real. One refusal stops it before anything is written."""
    from lightkube import ApiError

    diffs, changed = [], []
    # a namespace that does not exist yet: its objects are checked in `default` (the
    # server validates them all the same), so nothing is written before every one passes
    new_namespace = any(o.kind == "Namespace" and _live(client, o) is None for o in objects)
    for obj in objects:
        elsewhere = new_namespace and obj.kind != "Namespace"
        live = None if elsewhere else _live(client, obj)
        probe = type(obj).from_dict(obj.to_dict()) if elsewhere else obj
        if elsewhere:
            probe.metadata.namespace = "default"
        try:
            dry = client.apply(probe, field_manager=FIELD_MANAGER, force=True, dry_run=True)
        except ApiError as exc:
            raise _refused(exc, obj) from None
        before, after = (_plain(live) if live else None), _plain(dry)
        if elsewhere:
            after["metadata"]["namespace"] = obj.metadata.namespace
        if before != after:
            changed.append(_name(obj) + ("" if live else " (new)"))
            diffs.append(_diff(before, after, obj))
    if not changed:
        return Outcome.ok(f"{len(objects)} objects as planned, nothing to change")
    if not apply:
        return Outcome.changed(f"would change {len(changed)} of {len(objects)} objects: {', '.join(changed)}",
                               "\n".join(diffs))
    for obj in objects:
        try:
            client.apply(obj, field_manager=FIELD_MANAGER, force=True)
        except ApiError as exc:
            raise _refused(exc, obj) from None
    return Outcome.changed(f"applied {len(changed)} of {len(objects)} objects: {', '.join(changed)}", "\n".join(diffs))


def _live(client, obj):
    from lightkube import ApiError

    try:
        namespace = getattr(obj.metadata, "namespace", None)
        return client.get(type(obj), obj.metadata.name, **({"namespace": namespace} if namespace else {}))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise


def _diff(before: dict | None, after: dict, obj) -> str:
    dump = lambda d: yaml.safe_dump(d, sort_keys=True).splitlines() if d else []  # noqa: E731
    return "\n".join(difflib.unified_diff(dump(before), dump(after), f"{_name(obj)} (running)",
                                          f"{_name(obj)} (planned)", lineterm=""))


def rollout(client, fleet: manifests.Fleet, timeout: float = 300) -> Outcome:
    """Wait until the Deployment's pods run the planned template and are ready; the address
    teams build at (the Service's load balancer, else its cluster IP)."""
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.core_v1 import Service

    deadline = time.monotonic() + timeout
    while True:
        dep = client.get(Deployment, fleet.name, namespace=fleet.namespace)
        s = dep.status
        want = dep.spec.replicas or 1
        if s and s.observedGeneration == dep.metadata.generation and (s.updatedReplicas or 0) == want \
                and (s.readyReplicas or 0) >= want and (s.replicas or 0) == want:
            break
        if time.monotonic() > deadline:
            raise FleetError(f"deployment {fleet.name} is not ready after {timeout:.0f}s: "
                             f"{s.readyReplicas if s else 0} of {want} ready",
                             f"look at its pods: kubectl -n {fleet.namespace} describe pods"
                             f" -l app.kubernetes.io/instance={fleet.name}")
        time.sleep(2)
    svc = client.get(Service, fleet.name, namespace=fleet.namespace)
    ingress = (svc.status.loadBalancer.ingress or []) if svc.status and svc.status.loadBalancer else []
    host = (ingress[0].ip or ingress[0].hostname) if ingress else svc.spec.clusterIP
    return Outcome.ok(f"{want} builder(s) ready at tcp://{host}:{manifests.PORT}",
                      remote_address=f"tcp://{host}:{manifests.PORT}", tls_server_name=fleet.server_names[0],
                      replicas=want)


def remote_build(address: str, server_name: str, bundle: Path, context: Path) -> Outcome:
    """A build through the fleet's Service with a team's client certificate (a bundle of
    `invoke certs.issue`): the proof that teams can use the fleet."""
    result = autoscale.team_client(address, bundle, server_name).build(context, build_args={"NONCE": str(time.time())}, timeout=300)
    return Outcome.ok(f"a build of {len(result.steps)} steps ({result.cached_steps} cached) through {address} with"
                      f" {bundle.name}'s certificate in {result.seconds:.1f}s")


def fleet_of(p, image: str) -> manifests.Fleet:
    """The fleet the runbook's parameters describe."""
    return manifests.Fleet(
        name=p.fleet_name, namespace=p.namespace, image=image, replicas_min=p.replicas_min,
        replicas_max=p.replicas_max, cpu_request=p.builder_cpu_request, cpu_limit=p.builder_cpu_limit,
        memory_request=p.builder_memory_request, memory_limit=p.builder_memory_limit,
        target_cpu_percent=p.target_cpu_percent, scale_down_seconds=p.scale_down_seconds,
        drain_seconds=p.drain_seconds, service_type=p.service_type, max_parallelism=p.max_parallelism)


@dataclass
class Plan:
    """The fleet on one cluster, step by step: its objects (render), the server-side plan
    and apply (converge), the rollout and the proof build; each step an Outcome."""

    layout: Layout
    client: Any
    fleet: manifests.Fleet
    gc_policy: list
    apply: bool
    objects: list = field(default_factory=list)

    def render(self) -> Outcome:
        """The objects, with the builders' certificate from the installation's CA (in check
        mode, before the CA exists, one from a CA made in memory for the dry-run only)."""
        fleet = self.fleet
        if not self.apply and not ca.paths(self.layout)["ca"].exists():
            cert, key = ca.new_ca("buildkit-ops CA (check mode: not kept)")
            pair = ca.sign(cert, key, fleet.server_names[0], ca.SERVER_DAYS, fleet.server_names)
            tls, why = {"tls.crt": ca.pem(pair[0]), "tls.key": ca.pem_key(pair[1]), "ca.crt": ca.pem(cert)}, "no CA yet"
        else:
            tls, why = certificate(self.layout, self.client, fleet)
        self.objects = manifests.objects(fleet, manifests.buildkitd_toml(fleet, self.gc_policy), tls)
        kinds = ", ".join(o.kind for o in self.objects)
        if why:
            return Outcome.changed(f"{'issued' if self.apply else 'would issue'} the builders' certificate for"
                                   f" {', '.join(fleet.server_names)} ({why}); objects: {kinds}")
        return Outcome.ok(f"the builders' certificate in the cluster is current; objects: {kinds}")

    def converge(self) -> Outcome:
        return converge(self.client, self.objects, self.apply)

    def rollout(self) -> Outcome:
        return rollout(self.client, self.fleet) if self.apply else Outcome.skipped("check mode: nothing was applied")

    def proof(self, address: str, bundle: str) -> Outcome:
        if not self.apply:
            return Outcome.skipped("check mode")
        with tempfile.TemporaryDirectory(prefix="bko-proof-") as tmp:
            ctx = autoscale.context(Path(tmp))
            return remote_build(address, self.fleet.server_names[0], probe_bundle(self.layout, bundle), ctx)


def probe_bundle(layout: Layout, given: str) -> Path:
    """A team's client bundle for the proof build: `given`, else the kit's own `fleet-probe`
    team's, issued once by the installation's CA and kept beside it."""
    if given:
        missing = [name for name in ca.BUNDLE if not Path(given, name).is_file()]
        if missing:
            raise FleetError(f"client_bundle {given} holds no {', '.join(missing)}",
                             "give the directory `invoke certs.issue TEAM --out DIR` wrote")
        return Path(given)
    out = ca.access_dir(layout) / "fleet-probe"
    if not (out / "cert.pem").exists():
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca.write_bundle(ca.issue(layout, "fleet-probe"), out)
    return out


def live_fleet(client, namespace: str, name: str) -> manifests.Fleet:
    """The fleet the runbook deployed, read back from the cluster (its Deployment and HPA)."""
    from lightkube import ApiError
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
    from lightkube.resources.core_v1 import Service

    try:
        dep = client.get(Deployment, name, namespace=namespace)
        hpa = client.get(HorizontalPodAutoscaler, name, namespace=namespace)
        svc = client.get(Service, name, namespace=namespace)
    except ApiError as exc:
        raise FleetError(f"no fleet {name} in namespace {namespace}: {exc.status.message}",
                         "deploy it first: invoke runbook fleet --mode apply") from None
    pod = dep.spec.template.spec
    box = pod.containers[0]
    res = box.resources
    return manifests.Fleet(
        name=name, namespace=namespace, image=box.image, replicas_min=hpa.spec.minReplicas or 1,
        replicas_max=hpa.spec.maxReplicas, cpu_request=res.requests["cpu"], cpu_limit=res.limits["cpu"],
        memory_request=res.requests["memory"], memory_limit=res.limits["memory"],
        target_cpu_percent=hpa.spec.metrics[0].resource.target.averageUtilization,
        scale_down_seconds=hpa.spec.behavior.scaleDown.stabilizationWindowSeconds,
        drain_seconds=pod.terminationGracePeriodSeconds, service_type=svc.spec.type, max_parallelism=0)
