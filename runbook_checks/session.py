"""What a runbook's second cell builds from its parameters: the validated parameters,
the layout, the report, and the service manager. Keeps notebook cells to one call each."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import BUILDKIT_VERSION, layout as layout_mod, service
from .config import BuildkitdConfig, read_debug_port
from .layout import Layout
from .params import Semantics, validate
from .results import Report


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
        from .buildx import BUILDX_VERSION

        return self.params.buildx_version or BUILDX_VERSION

    @property
    def manager_name(self) -> str:
        return service.choose_manager(self.params.service_manager)

    def manager(self):
        """The daemon's manager; None for systemd units rendered into a tree other than /
        (the host's systemd does not see them, so there is no daemon to run here)."""
        if self.manager_name == "systemd" and str(self.layout.state_dir) != "/":
            return None
        return service.manager_for(self.layout, self.params.service_manager)

    def programs(self) -> list:
        """The services beside buildkitd its parameters ask for (runbook_checks.programs)."""
        from .programs import wanted

        return wanted(self.layout, self.params)

    def limits(self) -> service.Limits:
        p = self.params
        return service.Limits(p.cpu_quota, p.memory_max, p.io_weight, p.tasks_max)

    @property
    def log_where(self) -> str:
        return "the journal (buildkit.service)" if self.manager_name == "systemd" else str(self.layout.log_path)

    def expected_cgroup(self) -> dict[str, str]:
        return self.limits().cgroup()

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
