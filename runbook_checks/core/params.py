"""What each runbook parameter means: one pydantic model (`Semantics`) that every runbook
shares, so `debug_port` is checked the same way wherever it appears. The runbook's own
parameters cell says which names it accepts (core.profiles); this says what they mean:
a size, a duration, a port, a path, one of a few words. Every refusal names the
parameter and says, in plain words, what it accepts."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import layout as layout_mod
from .errors import ParameterError, Refusal
from .fleetparams import FleetParams
from .plain import plain, where
from .paths import WORKLOADS_DIR
from .units import parse_duration, parse_size, prom_minutes

# An image reference with an explicit registry host (localhost, a dotted name, or any name
# with a port): HOST[:PORT]/PATH[:TAG], no digest; the kit never guesses docker.io. Cache
# refs (cache_ref) are checked against it.
IMAGE_REF = re.compile(r"^(?P<host>(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::\d{1,5})?"
                       r"|[A-Za-z0-9-]+:\d{1,5})/(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*"
                       r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$")

# The rate window of every recording rule (monitoring.rules): a scrape interval must
# leave at least 4 scrapes in it.
RULE_WINDOW = "5m"

# a trust level's name: it names units and a bridge (bk-LEVEL, 15 characters at most)
TRUST_LEVEL = r"[a-z][a-z0-9]{0,11}"
BUILDKIT_SUBNET = "10.10.0.0/16"  # the subnet of BuildKit's own bridge (buildkit0), when bridge_subnet is empty
PORT = dict(ge=0, le=65535, description="a TCP port from 1 to 65535 on 127.0.0.1, or 0")
NAME = dict(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="a name of letters, digits and . _ - (not first)")
# the maintenance jobs of a systemd host and when each runs by default (systemd OnCalendar;
# "off": not scheduled); daemon.schedule says what each one does
MAINTENANCE = {"prune": "*-*-* 03:30:00", "drift": "hourly", "certs": "*-*-* 04:00:00", "backup": "*-*-* 02:30:00",
               "plugins-audit": "Mon *-*-* 06:00:00", "version": "Mon *-*-* 06:30:00"}
CALENDAR = r"[A-Za-z0-9 :*,./~-]+"
# each benchmark's scenarios in the order they run (cache.benchmarks); the cache benchmark's
# fresh builders import what its edit scenario exported, so cold, warm and edit come first
BENCHMARK_SCENARIOS = {"cache": ("cold", "warm", "edit", "fresh-registry", "fresh-s3", "fresh-local"),
                       "peers": ("cold", "warm", "edit", "concurrent", "fresh-remote")}
BENCHMARK_TOOLS = ("buildkit-kit", "buildkit-defaults", "buildah")  # the peers benchmark's (cache.peers)
URL = dict(pattern=r"^(https?://[^\s,'\"]+)?$", description="an http:// or https:// URL, or empty")


class GcRule(BaseModel):
    """One [[worker.oci.gcpolicy]] entry (BuildKit ≥ 0.17 names; never keepBytes)."""

    model_config = ConfigDict(extra="forbid")

    filters: list[str] = Field(default_factory=list)
    all: bool = False
    keep_duration: Optional[int] = None
    reserved_space: Optional[int | str] = None
    max_used_space: Optional[int | str] = None
    min_free_space: Optional[int | str] = None

    @field_validator("keep_duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @field_validator("reserved_space", "max_used_space", "min_free_space", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        for f in v:
            if not re.match(r"^[a-z.]+(==|!=|~=)[\w.\-/:]+$", f):
                raise Refusal(f"the filter {f!r} is not key==value", "write it like type==exec.cachemount")
        return v


# list parameters whose every item must match: (pattern, what an item is)
LIST_ITEMS = {
    "required_plugins": (r"[a-z][a-z0-9]*", "a Docker CLI plugin name (lowercase letters and digits)"),
    "retention_repositories": (r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*",
                               "a repository path like kit/cache"),
    "allowed_frontends": (r"[a-z0-9.-]+(:\d{1,5})?(/[a-z0-9._-]+)+", "an image repository without a tag, like"
                          " docker.io/docker/dockerfile"),
    "frontdoor_targets": (r"[A-Za-z0-9.-]+:\d{1,5}", "HOST:PORT of a front door's metrics listener"),
    "frontdoor_names": (r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:]+",
                        "a DNS name or an IP address clients reach the build server by"),
    "pool": (TRUST_LEVEL, "a builder of this host named like a trust level (up to 12 lowercase letters and digits,"
             " a letter first), declared under trust_levels"),
    "canary_contexts": (r"[A-Za-z0-9._/-]+", "a build context directory (letters, digits, . _ / -)"),
    "workloads": (r"[a-z0-9][a-z0-9-]*", "a workload's folder name under workloads/ (small, go-app...)"),
    "scenarios": (r"[a-z][a-z0-9-]*", "a scenario name (cold, warm, edit, fresh-registry...)"),
    "lint_ignore": (r"[A-Za-z][A-Za-z0-9]*", "a lint code like DL3007 or a BuildKit check like StageNameCasing"),
    "warm_contexts": (r"[A-Za-z0-9._/-]+(#[A-Za-z0-9][A-Za-z0-9_.-]*)?",
                      "a build context DIR or DIR#STAGE (letters, digits, . _ / -)"),
}
# path parameters: (absolute only, what else it must not hold)
PATHS = ("state_dir", "archive_path", "s3_credentials_file", "cache_dir", "docker_config", "quarantine_dir",
         "dashboards_dir", "site_profile", "kubeconfig", "client_bundle")


def check_path(value: str, parameter: str) -> str:
    """An absolute path of plain characters (the kit writes paths into unit files,
    supervisord.conf and buildctl options, which split on spaces and commas)."""
    if value and not value.startswith("/"):
        raise Refusal(f"{value!r} is not an absolute path", f"give the full path, for example /srv/{parameter}")
    if value and not layout_mod.SAFE_PATH.fullmatch(value):
        raise Refusal(f"{value!r} holds a character the kit does not put in paths (spaces, commas, quotes, control"
                      " characters)", f"use {layout_mod.PATH_CHARACTERS} only")
    return value


class RegistryTls(BaseModel):
    """TLS files buildkitd uses for one registry host: a CA bundle to trust, and a client
    certificate + key (mutual TLS). Paths, never the material itself."""

    model_config = ConfigDict(extra="forbid")

    ca: str = ""
    cert: str = ""
    key: str = ""

    @model_validator(mode="after")
    def _files(self) -> "RegistryTls":
        for name in ("ca", "cert", "key"):
            check_path(getattr(self, name), name)
        if bool(self.cert) != bool(self.key):
            raise Refusal("cert and key go together (a client certificate needs its key)", "give both, or neither")
        if not (self.ca or self.cert):
            raise Refusal("the entry names no file", "give ca, or cert and key")
        return self


class Semantics(FleetParams):
    """Meaning and range of every parameter name a runbook may declare (the fleet's in
    core.fleetparams)."""

    model_config = ConfigDict(extra="allow")

    mode: Literal["check", "apply"] = "check"
    profile: Literal["lab", "ci", "production"] = "lab"
    state_dir: str = ""
    layout: Literal["", "flat", "fhs"] = ""
    trust_level: str = Field("", pattern=rf"^({TRUST_LEVEL})?$",
                             description="a trust level: up to 12 lowercase letters and digits, a letter first")
    service_manager: Literal["auto", "supervisor", "systemd"] = "auto"
    buildkit_version: str = ""
    source: Literal["auto", "release", "go", "archive"] = "auto"
    release_mirror: str = ""
    release_sha256: str = Field("", pattern=r"^([0-9a-fA-F]{64})?$", description="a sha256: 64 hexadecimal digits")
    archive_path: str = ""
    install_runc: bool = True
    tcp_address: str = ""
    debug_port: int = Field(0, **PORT)
    log_format: Literal["text", "json"] = "json"
    log_level: Literal["error", "warn", "info", "debug", "trace"] = "info"
    history_max_age: int = 172800
    history_max_entries: int = Field(50, ge=0)
    snapshotter: str = Field("auto", pattern=r"^[a-z0-9][a-z0-9_.-]*$",
                             description="a snapshotter name such as auto, overlayfs or native")
    max_parallelism: int = Field(4, ge=1, le=256)
    gc: bool = True
    gc_policy: list[GcRule] = Field(default_factory=list)
    insecure_entitlements: list[Literal["network.host", "security.insecure", "device"]] = Field(default_factory=list)
    network_mode: Literal["auto", "host", "bridge", "cni"] = "auto"
    bridge_subnet: str = Field("", pattern=r"^(\d{1,3}\.){3}\d{1,3}/\d{1,2}$|^$",
                               description="an IPv4 network like 10.12.0.0/16, or empty")
    build_bandwidth: str = Field("", pattern=r"^(\d+(kbit|mbit|gbit))?$",
                                 description="a rate like 100mbit (kbit, mbit, gbit: bits per second), or empty")
    allowed_frontends: list[str] = Field(default_factory=list)
    source_policy: str = Field("", pattern=r"^[A-Za-z0-9._/-]*$", description="a file's path (absolute, or relative"
                               " to the checkout) of letters, digits and . _ / -")
    registry_mirrors: dict[str, list[str]] = Field(default_factory=dict)
    registry_tls: dict[str, RegistryTls] = Field(default_factory=dict)
    cpu_quota: str = Field("", pattern=r"^([1-9]\d*%)?$", description="a percentage of one CPU such as 200%, or empty")
    memory_max: str = ""
    io_weight: int = Field(100, ge=1, le=10000)
    tasks_max: int = Field(4096, ge=1)
    ready_timeout: int = Field(60, ge=1)
    # the front door (runbook_checks.production): mutual TLS on all interfaces, 0: none
    frontdoor_port: int = Field(0, ge=0, le=65535, description="a TCP port from 1 to 65535, or 0 for no front door")
    frontdoor_metrics_port: int = Field(0, ge=0, le=65535, description="a TCP port from 1 to 65535, or 0")
    frontdoor_names: list[str] = Field(default_factory=list)
    audit_metrics_port: int = Field(0, **PORT)
    audit_keep: int = Field(10, ge=1, le=1000)
    audit_max_bytes: int = 50_000_000
    # the build queue in the front door's door tier (production.frontdoor.Queue)
    max_concurrent_builds: int = Field(0, ge=0, le=100000)
    team_priority: dict[str, Literal["high", "normal", "low"]] = Field(default_factory=dict)
    queue_timeout: str = "10m"
    # the builder pool behind the front door: more builders of this host (trust_levels names)
    pool: list[str] = Field(default_factory=list)
    # the upgrade runbook's canary: build contexts (empty: the kit's own)
    canary_contexts: list[str] = Field(default_factory=list)
    exporter_port: int = Field(0, **PORT)
    registry_port: int = Field(0, **PORT)
    s3_port: int = Field(0, **PORT)
    s3_credentials_file: str = ""
    s3_endpoint: str = Field("", pattern=r"^(https?://[A-Za-z0-9.\-\[\]:]+)?$",
                             description="an http:// or https:// address with a host and port only, or empty")
    s3_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]+$", description="a region name like us-east-1")
    # remote build cache (runbook_checks.cache.backends)
    cache_backend: Literal["local", "registry", "inline", "s3", "none"] = "registry"  # none: no remote cache
    cache_bucket: str = Field("buildkit-cache", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                              description="an S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens")
    cache_prefix: str = Field("", pattern=r"^[A-Za-z0-9._/-]*$", description="a key prefix of letters, digits, . _ / -")
    cache_ref: str = ""
    cache_dir: str = ""
    cache_mode: Literal["min", "max"] = "max"
    cache_compression: Literal["gzip", "zstd"] = "gzip"
    cache_ignore_error: bool = False
    # cleanup and retention (runbook_checks.cache.prune)
    prune_keep_duration: int = 172800
    prune_keep_storage: int = 10_000_000_000
    retention_repositories: list[str] = Field(default_factory=lambda: ["kit/cache"])
    retention_keep_tags: int = Field(10, ge=0)
    retention_max_age: int = 30 * 86400
    s3_max_age: int = 14 * 86400
    # recovery (runbook_checks.daemon.recovery): the reserve file beside the cache, the free
    # space an emergency prune makes
    disk_reserve: int = 64_000_000
    free_space_target: int = 1_000_000_000
    # the maintenance schedule of a systemd host (daemon.schedule): job -> OnCalendar or off
    maintenance_schedule: dict[str, str] = Field(default_factory=lambda: dict(MAINTENANCE))
    backup_keep: int = Field(14, ge=1, le=1000)
    # scanning (runbook_checks.scanning)
    scan_context: str = Field("workloads/small", pattern=r"^[A-Za-z0-9._/-]+$",
                              description="a build context directory, absolute or relative to the checkout")
    lint_fail_on: Literal["error", "warning", "info", "style", "none"] = "error"
    lint_ignore: list[str] = Field(default_factory=list)
    deny_list: str = Field("", pattern=r"^[A-Za-z0-9._/-]*$", description="a file's path (absolute, or relative to"
                           " the checkout) of letters, digits and . _ / -")
    sbom_scanner: str = ""
    push_image: str = ""
    # handover (runbook_checks.reports.handover)
    site_profile: str = ""
    handover_max_age: int = 7 * 86400
    cert_min_days: int = Field(30, ge=1, le=3650)
    docs_site: str = Field("site", pattern=r"^[A-Za-z0-9._/-]+$",
                           description="a directory, absolute or relative to the checkout")
    # cache warming and benchmark (runbook_checks.cache.warm, runbook_checks.cache.bench)
    benchmark: Literal["cache", "peers"] = "cache"
    tools: list[str] = Field(default_factory=list)
    workloads: list[str] = Field(default_factory=list)
    scenarios: list[str] = Field(default_factory=list)
    repetitions: int = Field(1, ge=1, le=20)
    publish: bool = False
    keep_caches: bool = False
    warm_contexts: list[str] = Field(default_factory=lambda: ["workloads/small", "workloads/go-app", "workloads/py-app"])
    # Docker CLI plugins (plugins-audit, plugins-clean, plugins-configure)
    docker_config: str = ""
    required_plugins: list[str] = Field(default_factory=lambda: ["buildx"])
    plugin_timeout: int = Field(5, ge=1, le=120)
    quarantine_dir: str = ""
    clean_not_required: bool = False
    buildx_version: str = ""
    buildx_source: Literal["auto", "go", "debian"] = "auto"
    buildx_builder: str = Field("buildkit-ops", **NAME)
    # monitoring and alerting (runbook_checks.monitoring)
    builder_name: str = Field("buildkit-ops", **NAME)
    probe_interval: int = 120  # seconds between the exporter's probe builds; 0: none
    prometheus_port: int = Field(0, **PORT)
    alertmanager_port: int = Field(0, **PORT)
    node_exporter_port: int = Field(0, **PORT)
    notify_sink_port: int = Field(0, **PORT)
    smtp_port: int = Field(0, **PORT)
    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    builder_down_for: str = "1m"
    alert_for: str = "5m"
    escalate_after: str = "30m"
    failure_ratio_max: float = Field(0.2, gt=0, lt=1)
    build_p95_max_seconds: float = Field(600.0, gt=0)
    cache_hit_ratio_min: float = Field(0.5, gt=0, le=1)
    cache_usage_max_ratio: float = Field(0.9, gt=0, lt=1)
    disk_fill_hours: float = Field(4.0, gt=0, le=8760)
    denied_per_minute_max: float = Field(5.0, gt=0)
    queue_wait_max_seconds: float = Field(120.0, gt=0)
    builder_memory_max_ratio: float = Field(0.9, gt=0, lt=1)
    cpu_throttled_ratio_max: float = Field(0.5, gt=0, lt=1)
    cert_expiry_warn_days: int = Field(14, ge=1, le=365)
    frontdoor_targets: list[str] = Field(default_factory=list)
    docs_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://[^\s,'\"]+$",
                          description="an http:// or https:// URL")
    webhook_url: str = Field("", **URL)
    escalation_webhook_url: str = Field("", **URL)
    chat_webhook_url: str = Field("", **URL)
    email_to: str = Field("buildkit-oncall@localhost", pattern=r"^([^@\s,'\"]+@[^@\s,'\"]+)?$",
                          description="one email address like oncall@example.org, or empty")
    smtp_smarthost: str = Field("", pattern=r"^([A-Za-z0-9.-]+:\d{1,5})?$",
                                description="HOST:PORT of an SMTP server, or empty")
    team_receivers: dict[str, str] = Field(default_factory=lambda: {"build": "chat", "platform": "email"})
    group_wait: str = "30s"
    group_interval: str = "5m"
    critical_repeat_interval: str = "30m"
    warning_repeat_interval: str = "4h"
    dashboards_dir: str = ""
    dashboard_range: str = "1h"

    @field_validator("scrape_interval", "evaluation_interval", "builder_down_for", "alert_for", "escalate_after",
                     "group_wait", "group_interval", "critical_repeat_interval", "warning_repeat_interval",
                     "dashboard_range", "queue_timeout")
    @classmethod
    def _prom_duration(cls, v: str, info: Any) -> str:
        zero = "|0s" if info.field_name == "group_wait" else ""  # only group_wait may be 0s
        if not re.fullmatch(r"[1-9]\d*(s|m|h|d|w)" + zero, str(v)):
            raise Refusal(f"{v!r} is not a duration above 0", "write it like 15s, 5m, 2h or 1d")
        return v

    @field_validator(*PATHS)
    @classmethod
    def _path(cls, v: str, info: Any) -> str:
        return check_path(v, info.field_name)

    @model_validator(mode="after")
    def _whole(self) -> "Semantics":
        """Rules between parameters: the state directory the profile may own, and a
        scrape interval that leaves 4 scrapes in the rules' rate window."""
        try:
            layout_mod.for_params({"profile": self.profile, "state_dir": self.state_dir, "layout": self.layout,
                                   "trust_level": self.trust_level})
        except ParameterError as exc:
            raise Refusal(exc.problem, exc.fix, "state_dir") from None
        longest = prom_minutes(RULE_WINDOW) * 60 / 4
        if prom_minutes(self.scrape_interval) * 60 > longest:
            raise Refusal(f"{self.scrape_interval!r} leaves fewer than 4 scrapes in the rules' {RULE_WINDOW} rate"
                          " window, so every rate would be empty", f"use at most {longest:g}s", "scrape_interval")
        return self

    @field_validator("required_plugins", "retention_repositories", "warm_contexts", "frontdoor_names",
                     "frontdoor_targets", "allowed_frontends", "lint_ignore", "pool", "canary_contexts", "workloads",
                     "scenarios")
    @classmethod
    def _each(cls, v: list[str], info: Any) -> list[str]:
        pattern, what = LIST_ITEMS[info.field_name]
        for item in v:
            if not re.fullmatch(pattern, item):
                raise Refusal(f"{item!r} is not {what}", f"give each item as {what}")
        return v

    @field_validator("team_priority")
    @classmethod
    def _teams(cls, v: dict[str, str]) -> dict[str, str]:
        for team in v:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", team):
                raise Refusal(f"{team!r} is not a team name (a client certificate's CN)",
                              "give teams as certs.issue names them: lowercase letters, digits and -")
        return v

    @field_validator("workloads")
    @classmethod
    def _workloads(cls, v: list[str]) -> list[str]:
        found = sorted(p.name for p in WORKLOADS_DIR.iterdir() if (p / "Dockerfile").is_file())
        unknown = [w for w in v if w not in found]
        if unknown:
            raise Refusal(f"{', '.join(unknown)} is not a workload under workloads/", f"choose from {', '.join(found)}")
        return v

    @field_validator("scenarios")
    @classmethod
    def _scenarios(cls, v: list[str], info: Any) -> list[str]:
        bench = info.data.get("benchmark", "cache")
        known = BENCHMARK_SCENARIOS[bench]
        unknown = [s for s in v if s not in known]
        if unknown:
            raise Refusal(f"{', '.join(unknown)} is not a scenario of the {bench} benchmark",
                          f"choose from {', '.join(known)} (empty: all)")
        if v and not {"cold", "warm", "edit"} <= set(v):
            raise Refusal(f"the {bench} benchmark's later scenarios build on cold, warm and edit on one builder (a"
                          " fresh builder imports what edit exported)", "list cold, warm and edit too, or no scenario"
                          " (all)")
        return v

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[str], info: Any) -> list[str]:
        unknown = [t for t in v if t not in BENCHMARK_TOOLS]
        if unknown:
            raise Refusal(f"{', '.join(unknown)} is not a tool the peers benchmark compares",
                          f"choose from {', '.join(BENCHMARK_TOOLS)} (empty: all)")
        if v and info.data.get("benchmark", "cache") != "peers":
            raise Refusal("only the peers benchmark compares tools", "set benchmark=peers, or leave tools empty")
        return v

    @field_validator("maintenance_schedule")
    @classmethod
    def _schedule(cls, v: dict[str, str]) -> dict[str, str]:
        for job, when in v.items():
            if job not in MAINTENANCE:
                raise Refusal(f"{job!r} is not a maintenance job", f"name one of {', '.join(MAINTENANCE)}")
            if not re.fullmatch(CALENDAR, when):
                raise Refusal(f"{when!r} (the {job} job) is not a systemd OnCalendar expression",
                              "write it like daily, hourly or Sun *-*-* 03:00:00, or off")
        return {**MAINTENANCE, **v}  # a profile names the jobs it moves; the others keep their time

    @field_validator("cache_ref", "sbom_scanner", "push_image")
    @classmethod
    def _image_ref(cls, v: str) -> str:
        if v and not IMAGE_REF.match(v):
            raise Refusal(f"{v!r} is not an image reference with a registry host",
                          "write it as HOST[:PORT]/PATH[:TAG], for example 127.0.0.1:15000/kit/cache:main")
        return v

    @field_validator("prune_keep_duration", "retention_max_age", "s3_max_age", "history_max_age", "probe_interval",
                     "handover_max_age", mode="before")
    @classmethod
    def _durations(cls, v: Any) -> int:
        return parse_duration(v)

    @field_validator("prune_keep_storage", "audit_max_bytes", "disk_reserve", "free_space_target", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> int:
        size = parse_size(v)
        if isinstance(size, str):
            raise Refusal(f"{v!r} is a share of the disk, and this parameter is a size in bytes",
                          "write a size, for example 10GB")
        return size

    @field_validator("buildkit_version", "buildx_version")
    @classmethod
    def _version(cls, v: str, info: Any) -> str:
        if v and not re.match(r"^v\d+\.\d+\.\d+(-rc\.?\d+)?$", v):
            raise Refusal(f"{v!r} is not a release tag", "write it like v0.34.2 (empty: the version the kit pins)")
        return v

    @field_validator("release_mirror")
    @classmethod
    def _mirror(cls, v: str) -> str:
        if v and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/+-]*)?", v):
            raise Refusal(f"{v!r} is not an http:// or https:// URL",
                          "give the base URL of a mirror of the release archives, for example"
                          " https://mirror.example.org/buildkit")
        return v

    @field_validator("tcp_address")
    @classmethod
    def _tcp(cls, v: str) -> str:
        # buildkitd's gRPC runs builds as root: it may listen on loopback only; other
        # hosts come in through the front door (mutual TLS, per-team certificates, audit)
        if v and not re.fullmatch(r"tcp://(127\.0\.0\.1|\[::1\]):\d{1,5}", v):
            raise Refusal(f"{v!r} is not a loopback address: buildkitd's gRPC stays on this host, and other hosts"
                          " come in through the front door", "write tcp://127.0.0.1:PORT or leave it empty, and"
                          " set frontdoor_port for the access runbook")
        return v

    @field_validator("memory_max", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> str:
        if v in ("", None, "infinity"):
            return v or ""
        return str(parse_size(v))


def _check(values: dict[str, Any], sources: dict[str, str] | None) -> tuple[Semantics | None, list[ParameterError]]:
    try:
        return Semantics.model_validate(values), []
    except ValidationError as exc:
        found = []
        for err in exc.errors():
            problem, fix = plain(err, Semantics)
            refusal = (err.get("ctx") or {}).get("error")
            loc = err["loc"] or ((refusal.parameter,) if isinstance(refusal, Refusal) and refusal.parameter else ())
            name = where(loc)
            origin = (sources or {}).get(str(loc[0])) if loc else None
            if name and problem.startswith(f"{name} "):  # "state_dir '/x' is ..." names it already
                problem = problem[len(name) + 1:]
            found.append(ParameterError((f"parameter {name!r}: " if name else "") + problem
                                        + (f" ({origin})" if origin else ""),
                                        f"{name}: {fix}" if name and not fix.startswith(name) else fix))
        return None, found


def problems(values: dict[str, Any], sources: dict[str, str] | None = None) -> list[ParameterError]:
    """Every refusal of these values (all of them, not only the first), each naming the
    parameter and, when known, where its value came from (`sources`: name -> where)."""
    return _check(values, sources)[1]


def validate(values: dict[str, Any], sources: dict[str, str] | None = None) -> Semantics:
    """The values' meaning, or the first refusal (problems() gives them all)."""
    semantics, found = _check(values, sources)
    if found:
        raise found[0]
    return semantics
