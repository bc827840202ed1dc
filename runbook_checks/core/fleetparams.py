"""The fleet runbook's parameters (runbook_checks.fleet): what each means and accepts.
core.params.Semantics takes them in; resource quantities are left to the API server,
whose server-side dry-run refuses a bad one with its own message before anything is
written."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from .errors import Refusal

# a Kubernetes object name that is also a DNS label (namespaces, Services)
DNS_LABEL = dict(pattern=r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
                 description="a DNS label: up to 63 lowercase letters, digits and -, a letter first")


class FleetParams(BaseModel):
    kubeconfig: str = ""
    namespace: str = Field("buildkit", **DNS_LABEL)
    fleet_name: str = Field("buildkitd", **DNS_LABEL)
    builder_image: str = Field("", pattern=r"^[^\s'\"]*$", description="an image reference, or empty")
    replicas_min: int = Field(1, ge=1, le=100)
    replicas_max: int = Field(4, ge=1, le=100)
    builder_cpu_request: str = "500m"
    builder_cpu_limit: str = "2"
    builder_memory_request: str = "512Mi"
    builder_memory_limit: str = "4Gi"
    target_cpu_percent: int = Field(60, ge=10, le=100)
    scale_down_seconds: int = Field(60, ge=0, le=3600)
    drain_seconds: int = Field(600, ge=10, le=86400)
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    client_bundle: str = ""

    @model_validator(mode="after")
    def _replicas(self) -> "FleetParams":
        if self.replicas_max < self.replicas_min:
            raise Refusal(f"replicas_max={self.replicas_max} is below replicas_min={self.replicas_min}",
                          "give replicas_max at least replicas_min")
        return self
