"""The fleet's Kubernetes objects as typed models (lightkube's, generated from Kubernetes'
own OpenAPI): a namespace, the kit's buildkitd.toml as a ConfigMap, the builders' mTLS
certificate as a Secret, a Deployment of buildkitd with requests and limits, buildctl
probes and a preStop drain, a Service, a PodDisruptionBudget and a HorizontalPodAutoscaler
on CPU (metrics-server).

Why a Deployment, not a StatefulSet: each builder's cache is an emptyDir that lives as
long as its pod, the HPA adds and removes replicas freely, and a team's builds reach any
ready builder through the Service; a StatefulSet would pay for persistent volumes and
ordered scaling that a cache the registry backs up does not need."""

from __future__ import annotations

from dataclasses import dataclass

from ..daemon.config import DEFAULT_GC_POLICY, BuildkitdConfig
from ..core.params import GcRule

PORT = 1234  # buildkitd's gRPC over mTLS in each pod
METRICS_PORT = 6060  # its debug address: /metrics for Prometheus
SOCKET = "unix:///run/buildkit/buildkitd.sock"  # the probes' way in, inside the pod
TLS_DIR = "/etc/buildkit/tls"
# the preStop hook: wait while any client holds a connection to the gRPC port (a build in
# flight), so a pod the HPA removes finishes its builds first (terminationGracePeriodSeconds
# bounds the wait); the pod left the Service's endpoints when it started terminating
DRAIN = (f"while grep -Eq ':{PORT:04X} [0-9A-F]+:[0-9A-F]+ 01 ' /proc/net/tcp /proc/net/tcp6 2>/dev/null;"
         " do sleep 1; done")


@dataclass(frozen=True)
class Fleet:
    name: str
    namespace: str
    image: str
    replicas_min: int
    replicas_max: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    target_cpu_percent: int
    scale_down_seconds: int
    drain_seconds: int
    service_type: str
    max_parallelism: int
    image_pull_policy: str = "IfNotPresent"

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "buildkitd", "app.kubernetes.io/instance": self.name,
                "app.kubernetes.io/managed-by": "buildkit-ops"}

    @property
    def server_names(self) -> list[str]:
        """The names its certificate carries: the Service's DNS names."""
        return [f"{self.name}.{self.namespace}.svc", f"{self.name}.{self.namespace}.svc.cluster.local", self.name]


def buildkitd_toml(fleet: Fleet, gc_policy: list[GcRule] | None = None) -> str:
    """The kit's buildkitd.toml for a pod: its defaults (GC tiers, history, JSON logs), mTLS
    on the Service's port, the unix socket for the probes, RUN steps in the pod's network."""
    rules = gc_policy or [GcRule.model_validate(r) for r in DEFAULT_GC_POLICY]
    return BuildkitdConfig(root="/var/lib/buildkit", addresses=[f"tcp://0.0.0.0:{PORT}", SOCKET],
                           debug_address=f"0.0.0.0:{METRICS_PORT}", snapshotter="overlayfs",
                           max_parallelism=fleet.max_parallelism, gc_policy=rules, network_mode="host",
                           tls={"cert": f"{TLS_DIR}/tls.crt", "key": f"{TLS_DIR}/tls.key",
                                "ca": f"{TLS_DIR}/ca.crt"}).to_toml()


def objects(fleet: Fleet, config_toml: str, tls: dict[str, bytes]) -> list:
    """Every object of the fleet, in the order they are applied."""
    from lightkube.models.apps_v1 import DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment
    from lightkube.models.autoscaling_v2 import (CrossVersionObjectReference, HorizontalPodAutoscalerBehavior,
                                                 HorizontalPodAutoscalerSpec, HPAScalingPolicy, HPAScalingRules,
                                                 MetricSpec, MetricTarget, ResourceMetricSource)
    from lightkube.models.core_v1 import (ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
                                          ExecAction, Lifecycle, LifecycleHandler, PodSpec, PodTemplateSpec, Probe,
                                          ResourceRequirements, SecretVolumeSource, SecurityContext, ServicePort,
                                          ServiceSpec, Volume, VolumeMount)
    from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
    from lightkube.models.policy_v1 import PodDisruptionBudgetSpec
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
    from lightkube.resources.core_v1 import ConfigMap, Namespace, Secret, Service
    from lightkube.resources.policy_v1 import PodDisruptionBudget

    meta = lambda name=fleet.name: ObjectMeta(name=name, namespace=fleet.namespace, labels=fleet.labels)  # noqa: E731
    selector = LabelSelector(matchLabels={"app.kubernetes.io/instance": fleet.name})
    buildctl = ExecAction(command=["buildctl", "--addr", SOCKET, "debug", "workers"])
    container = Container(
        name="buildkitd", image=fleet.image, imagePullPolicy=fleet.image_pull_policy,
        args=["--config", "/etc/buildkit/buildkitd.toml"],
        ports=[ContainerPort(name="grpc", containerPort=PORT), ContainerPort(name="metrics", containerPort=METRICS_PORT)],
        securityContext=SecurityContext(privileged=True),  # runc inside: namespaces, mounts, cgroups of its own
        resources=ResourceRequirements(requests={"cpu": fleet.cpu_request, "memory": fleet.memory_request},
                                       limits={"cpu": fleet.cpu_limit, "memory": fleet.memory_limit}),
        readinessProbe=Probe(exec=buildctl, periodSeconds=5, timeoutSeconds=5, failureThreshold=2),
        livenessProbe=Probe(exec=buildctl, initialDelaySeconds=10, periodSeconds=20, timeoutSeconds=10,
                            failureThreshold=3),
        lifecycle=Lifecycle(preStop=LifecycleHandler(exec=ExecAction(command=["/bin/sh", "-c", DRAIN]))),
        volumeMounts=[VolumeMount(name="config", mountPath="/etc/buildkit/buildkitd.toml", subPath="buildkitd.toml",
                                  readOnly=True),
                      VolumeMount(name="tls", mountPath=TLS_DIR, readOnly=True),
                      VolumeMount(name="cache", mountPath="/var/lib/buildkit")])
    pod = PodTemplateSpec(
        metadata=ObjectMeta(labels=fleet.labels,
                            # a changed configuration or certificate rolls the pods
                            annotations={"buildkit-ops/config-sha256": _sha(config_toml.encode()),
                                         "buildkit-ops/tls-sha256": _sha(tls["tls.crt"])}),
        spec=PodSpec(containers=[container], terminationGracePeriodSeconds=fleet.drain_seconds,
                     volumes=[Volume(name="config", configMap=ConfigMapVolumeSource(name=fleet.name)),
                              Volume(name="tls", secret=SecretVolumeSource(secretName=f"{fleet.name}-tls",
                                                                           defaultMode=0o400)),
                              Volume(name="cache", emptyDir=EmptyDirVolumeSource())]))
    hpa_behavior = HorizontalPodAutoscalerBehavior(
        scaleUp=HPAScalingRules(stabilizationWindowSeconds=0,
                                policies=[HPAScalingPolicy(type="Pods", value=2, periodSeconds=15)]),
        scaleDown=HPAScalingRules(stabilizationWindowSeconds=fleet.scale_down_seconds,
                                  policies=[HPAScalingPolicy(type="Pods", value=1, periodSeconds=15)]))
    return [
        Namespace(metadata=ObjectMeta(name=fleet.namespace, labels=fleet.labels)),
        ConfigMap(metadata=meta(), data={"buildkitd.toml": config_toml}),
        Secret(metadata=meta(f"{fleet.name}-tls"), type="kubernetes.io/tls",
               data={k: _b64(v) for k, v in sorted(tls.items())}),
        Service(metadata=meta(), spec=ServiceSpec(type=fleet.service_type, selector=selector.matchLabels,
                                                  ports=[ServicePort(name="grpc", port=PORT, targetPort="grpc")])),
        Deployment(metadata=meta(), spec=DeploymentSpec(
            selector=selector, template=pod,
            strategy=DeploymentStrategy(type="RollingUpdate",
                                        rollingUpdate=RollingUpdateDeployment(maxUnavailable=0, maxSurge=1)))),
        PodDisruptionBudget(metadata=meta(), spec=PodDisruptionBudgetSpec(selector=selector, maxUnavailable=1)),
        HorizontalPodAutoscaler(metadata=meta(), spec=HorizontalPodAutoscalerSpec(
            scaleTargetRef=CrossVersionObjectReference(apiVersion="apps/v1", kind="Deployment", name=fleet.name),
            minReplicas=fleet.replicas_min, maxReplicas=fleet.replicas_max, behavior=hpa_behavior,
            metrics=[MetricSpec(type="Resource", resource=ResourceMetricSource(
                name="cpu", target=MetricTarget(type="Utilization", averageUtilization=fleet.target_cpu_percent)))])),
    ]


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
