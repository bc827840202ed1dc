"""What a runbook's second cell builds from its parameters: the validated parameters, the
layout, the report, the daemon's manager and the services beside it. This is where the
domains meet for a runbook (the top layer: it may import every package), so notebook
cells stay one call each.

`PROGRAMS` is the catalogue of those services: a new one adds a line here, its port
parameter to the install and configure runbooks, and to core.params.Semantics."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

from .cache import registry, s3
from .core import layout as layout_mod
from .core.layout import Layout
from .core.params import Semantics, validate
from .core.results import Report
from .daemon import service
from .daemon.config import BuildkitdConfig, read_debug_port
from .daemon.install import BUILDKIT_VERSION
from .daemon.programs import Program
from .daemon.systemd import Limits
from .monitoring import alertmanager, exporter, prometheus, sink
from .plugins.buildx import BUILDX_VERSION

# (port parameter, factory): a program runs beside buildkitd when its port parameter is not 0
PROGRAMS: tuple[tuple[str, Callable[[Layout, dict], Program]], ...] = (
    ("exporter_port", exporter.program),
    ("registry_port", registry.program),
    ("s3_port", s3.program),
    ("prometheus_port", prometheus.program),
    ("node_exporter_port", prometheus.node_exporter_program),
    ("alertmanager_port", alertmanager.program),
    ("notify_sink_port", sink.program),
)


def programs(layout: Layout, params: Semantics | dict) -> list[Program]:
    """The services beside buildkitd the parameters ask for."""
    values = params if isinstance(params, dict) else params.model_dump()
    return [factory(layout, values) for key, factory in PROGRAMS if values.get(key)]


@dataclass
class Session:
    name: str
    params: Semantics
    layout: Layout
    report: Report

    @property
    def apply(self) -> bool:
        return self.params.mode == "apply"

    @property
    def version(self) -> str:
        return self.params.buildkit_version or BUILDKIT_VERSION

    @property
    def buildx_version(self) -> str:
        return self.params.buildx_version or BUILDX_VERSION

    @property
    def manager_name(self) -> str:
        return service.choose_manager(self.params.service_manager)

    @property
    def daemon_here(self) -> bool:
        """Whether the daemon runs on this machine: not for systemd units rendered into a
        tree other than / (the host's systemd does not see them; the build server does)."""
        return not (self.manager_name == "systemd" and str(self.layout.state_dir) != "/")

    def manager(self):
        """The daemon's manager; None when the daemon does not run here (daemon_here)."""
        return service.manager_for(self.layout, self.params.service_manager) if self.daemon_here else None

    def programs(self) -> list[Program]:
        """The services beside buildkitd its parameters ask for (PROGRAMS)."""
        return programs(self.layout, self.params)

    def limits(self) -> Limits:
        p = self.params
        return Limits(p.cpu_quota, p.memory_max, p.io_weight, p.tasks_max)

    @property
    def log_where(self) -> str:
        return f"the journal ({self.layout.unit()})" if self.manager_name == "systemd" else str(self.layout.log_path)

    @cached_property
    def debug_port(self) -> int:
        """The configured port; 0 keeps the port of the config on disk, or picks a free one."""
        return self.params.debug_port or read_debug_port(self.layout.config_path) or service.free_port()

    def desired_config(self) -> BuildkitdConfig:
        return BuildkitdConfig.from_params(self.params.model_dump(), self.layout, self.debug_port)


def start(name: str, namespace: dict[str, Any]) -> Session:
    """Build the session from the notebook's globals (its parameters cell)."""
    values = {k: namespace[k] for k in Semantics.model_fields if k in namespace}
    params = validate(values)
    layout = layout_mod.for_params(params.model_dump())
    report = Report(name, params.profile, params.mode)
    report.facts.update({"state_dir": str(layout.state_dir), "address": layout.address})
    return Session(name, params, layout, report)
