"""What each runbook parameter means: one pydantic model (`Semantics`) that every runbook
shares, so `debug_port` is checked the same way wherever it appears. The runbook's own
parameters cell says which names it accepts (core.profiles); this says what they mean:
a size, a duration, a port, one of a few words. Errors name the parameter and the fix."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ParameterError
from .units import parse_duration, parse_size, prom_minutes

# An image reference with an explicit registry host (localhost, a dotted name, or any name
# with a port): HOST[:PORT]/PATH[:TAG], no digest; the kit never guesses docker.io. Cache refs (cache_ref) are checked against it.
IMAGE_REF = re.compile(r"^(?P<host>(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::\d{1,5})?"
                       r"|[A-Za-z0-9-]+:\d{1,5})/(?P<path>[a-z0-9]+(?:[._-][a-z0-9]+)*"
                       r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$")

# The rate window of every recording rule (monitoring.rules): a scrape interval must
# leave at least 4 scrapes in it.
RULE_WINDOW = "5m"

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
        return None if v is None else parse_duration(v, "gc_policy.keep_duration")

    @field_validator("reserved_space", "max_used_space", "min_free_space", mode="before")
    @classmethod
    def _size(cls, v: Any, info: Any) -> Any:
        return None if v is None else parse_size(v, f"gc_policy.{info.field_name}")

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        for f in v:
            if not re.match(r"^[a-z.]+(==|!=|~=)[\w.\-/:]+$", f):
                raise ValueError(f"filter {f!r} is not key==value (e.g. type==exec.cachemount)")
        return v


# list parameters whose every item must match: (pattern, what an item is)
LIST_ITEMS = {
    "required_plugins": (r"[a-z][a-z0-9]*", "a Docker CLI plugin name (lowercase letters and digits)"),
    "retention_repositories": (r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*",
                               "a repository path like kit/cache"),
    "warm_contexts": (r"[A-Za-z0-9._/-]+(#[A-Za-z0-9][A-Za-z0-9_.-]*)?",
                      "a build context DIR or DIR#STAGE (letters, digits, . _ / -)"),
}


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
            value = getattr(self, name)
            if value and not value.startswith("/"):
                raise ValueError(f"{name}: {value!r} is not an absolute path")
        if bool(self.cert) != bool(self.key):
            raise ValueError("cert and key go together (a client certificate needs its key)")
        if not (self.ca or self.cert):
            raise ValueError("give ca, or cert and key")
        return self


class Semantics(BaseModel):
    """Meaning and range of every parameter name a runbook may declare."""

    model_config = ConfigDict(extra="allow")

    mode: Literal["check", "apply"] = "check"
    profile: Literal["lab", "ci", "production"] = "lab"
    state_dir: str = ""
    layout: Literal["", "flat", "fhs"] = ""
    service_manager: Literal["auto", "supervisor", "systemd"] = "auto"
    buildkit_version: str = ""
    source: Literal["auto", "release", "go", "archive"] = "auto"
    release_mirror: str = ""
    release_sha256: str = ""
    archive_path: str = ""
    install_runc: bool = True
    tcp_address: str = ""
    debug_port: int = Field(0, ge=0, le=65535)
    log_format: Literal["text", "json"] = "json"
    log_level: Literal["error", "warn", "info", "debug", "trace"] = "info"
    history_max_age: int = 172800
    history_max_entries: int = Field(50, ge=0)
    snapshotter: str = Field("auto", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    max_parallelism: int = Field(4, ge=1, le=256)
    gc: bool = True
    gc_policy: list[GcRule] = Field(default_factory=list)
    insecure_entitlements: list[Literal["network.host", "security.insecure", "device"]] = Field(default_factory=list)
    registry_mirrors: dict[str, list[str]] = Field(default_factory=dict)
    registry_tls: dict[str, RegistryTls] = Field(default_factory=dict)
    cpu_quota: str = Field("", pattern=r"^(\d+%)?$")
    memory_max: str = ""
    io_weight: int = Field(100, ge=1, le=10000)
    tasks_max: int = Field(4096, ge=1)
    ready_timeout: int = Field(60, ge=1)
    exporter_port: int = Field(0, ge=0, le=65535)
    registry_port: int = Field(0, ge=0, le=65535)
    s3_port: int = Field(0, ge=0, le=65535)
    s3_credentials_file: str = ""
    s3_endpoint: str = Field("", pattern=r"^(https?://[A-Za-z0-9.\-\[\]:]+)?$")
    s3_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]+$")
    # remote build cache (runbook_checks.cache.backends)
    cache_backend: Literal["local", "registry", "inline", "s3"] = "registry"
    cache_bucket: str = Field("buildkit-cache", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    cache_prefix: str = Field("", pattern=r"^[A-Za-z0-9._/-]*$")
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
    prune_schedule: str = Field("daily", pattern=r"^[A-Za-z0-9 :*,./~-]+$")
    # cache warming and benchmark (runbook_checks.cache.warm, runbook_checks.cache.bench)
    warm_contexts: list[str] = Field(default_factory=lambda: ["workloads/small", "workloads/go-app", "workloads/py-app"])
    # Docker CLI plugins (plugins-audit, plugins-clean, plugins-configure)
    docker_config: str = ""
    required_plugins: list[str] = Field(default_factory=lambda: ["buildx"])
    plugin_timeout: int = Field(5, ge=1, le=120)
    quarantine_dir: str = ""
    clean_not_required: bool = False
    buildx_version: str = ""
    buildx_source: Literal["auto", "go", "debian"] = "auto"
    buildx_builder: str = Field("buildkit-ops", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # monitoring and alerting (runbook_checks.monitoring)
    builder_name: str = Field("buildkit-ops", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    prometheus_port: int = Field(0, ge=0, le=65535)
    alertmanager_port: int = Field(0, ge=0, le=65535)
    node_exporter_port: int = Field(0, ge=0, le=65535)
    notify_sink_port: int = Field(0, ge=0, le=65535)
    smtp_port: int = Field(0, ge=0, le=65535)
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
    docs_url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://\S+$")
    webhook_url: str = Field("", pattern=r"^(https?://\S+)?$")
    escalation_webhook_url: str = Field("", pattern=r"^(https?://\S+)?$")
    chat_webhook_url: str = Field("", pattern=r"^(https?://\S+)?$")
    email_to: str = Field("buildkit-oncall@localhost", pattern=r"^([^@\s,]+@[^@\s,]+)?$")
    smtp_smarthost: str = Field("", pattern=r"^([A-Za-z0-9.-]+:\d{1,5})?$")
    team_receivers: dict[str, str] = Field(default_factory=lambda: {"build": "chat", "platform": "email"})
    group_wait: str = "30s"
    group_interval: str = "5m"
    critical_repeat_interval: str = "30m"
    warning_repeat_interval: str = "4h"
    dashboards_dir: str = ""
    dashboard_range: str = "1h"

    @field_validator("scrape_interval", "evaluation_interval", "builder_down_for", "alert_for", "escalate_after",
                     "group_wait", "group_interval", "critical_repeat_interval", "warning_repeat_interval",
                     "dashboard_range")
    @classmethod
    def _prom_duration(cls, v: str, info: Any) -> str:
        zero = "|0s" if info.field_name == "group_wait" else ""  # only group_wait may be 0s
        if not re.fullmatch(r"[1-9]\d*(s|m|h|d|w)" + zero, str(v)):
            raise ValueError(f"{info.field_name}: {v!r} is not a Prometheus duration above 0 like 15s, 5m, 2h or 1d")
        return v

    @model_validator(mode="after")
    def _scrape_fits_the_rate_window(self) -> "Semantics":
        """Every rate() of the rules spans RULE_WINDOW; it needs at least 4 scrapes in it
        (a 5m scrape would leave every rate empty)."""
        longest = prom_minutes(RULE_WINDOW) * 60 / 4
        if prom_minutes(self.scrape_interval) * 60 > longest:
            raise ParameterError(f"parameter 'scrape_interval': {self.scrape_interval} leaves fewer than 4 scrapes"
                                 f" in the rules' {RULE_WINDOW} rate window, so every rate would be empty",
                                 f"set scrape_interval to at most {longest:g}s")
        return self

    @field_validator("required_plugins", "retention_repositories", "warm_contexts")
    @classmethod
    def _each(cls, v: list[str], info: Any) -> list[str]:
        pattern, what = LIST_ITEMS[info.field_name]
        for item in v:
            if not re.fullmatch(pattern, item):
                raise ValueError(f"{item!r} is not {what}")
        return v

    @field_validator("cache_ref")
    @classmethod
    def _cache_ref(cls, v: str) -> str:
        if v and not IMAGE_REF.match(v):
            raise ValueError(f"{v!r} is not an image reference HOST[:PORT]/PATH[:TAG], e.g. 127.0.0.1:15000/kit/cache:main")
        return v

    @field_validator("prune_keep_duration", "retention_max_age", "s3_max_age", mode="before")
    @classmethod
    def _durations(cls, v: Any, info: Any) -> int:
        return parse_duration(v, info.field_name)

    @field_validator("prune_keep_storage", mode="before")
    @classmethod
    def _keep_storage(cls, v: Any) -> int:
        size = parse_size(v, "prune_keep_storage")
        if isinstance(size, str):
            raise ValueError("buildctl prune takes bytes here, not a share of the disk: write e.g. 10GB")
        return size

    @field_validator("dashboards_dir", "s3_credentials_file")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if v and not v.startswith("/"):
            raise ValueError(f"{v!r} is not an absolute path")
        return v

    @field_validator("cache_dir")
    @classmethod
    def _cache_dir(cls, v: str) -> str:
        if v and (not v.startswith("/") or "," in v):
            raise ValueError(f"{v!r} is not an absolute directory without commas (buildctl splits options on commas)")
        return v

    @field_validator("buildkit_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v and not re.match(r"^v\d+\.\d+\.\d+(-rc\.?\d+)?$", v):
            raise ValueError(f"{v!r} is not a BuildKit release tag like v0.34.2")
        return v

    @field_validator("tcp_address")
    @classmethod
    def _tcp(cls, v: str) -> str:
        # buildkitd's gRPC runs builds as root: without mutual TLS (which the kit does not
        # render yet) it may listen on loopback only
        if v and not re.fullmatch(r"tcp://(127\.0\.0\.1|\[::1\]):\d{1,5}", v):
            raise ValueError(f"{v!r} is not tcp://127.0.0.1:PORT; without mutual TLS buildkitd's gRPC"
                             " must stay on loopback")
        return v

    @field_validator("history_max_age", mode="before")
    @classmethod
    def _age(cls, v: Any) -> int:
        return parse_duration(v, "history_max_age")

    @field_validator("memory_max", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> str:
        if v in ("", None, "infinity"):
            return v or ""
        return str(parse_size(v, "memory_max"))


def validate(values: dict[str, Any]) -> Semantics:
    """Check meaning and range; the error names the parameter and what it accepts."""
    try:
        return Semantics.model_validate(values)
    except ParameterError:
        raise
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        accepted = ""
        if err["type"] == "literal_error":
            accepted = "accepted values: " + err["ctx"]["expected"]
        elif err["type"] == "value_error":  # the kit's own validators say what is wanted
            accepted = str(err["ctx"]["error"])
        elif err.get("ctx"):
            accepted = "accepted: " + ", ".join(f"{k} {v}" for k, v in err["ctx"].items())
        raise ParameterError(
            f"parameter {where!r}: {err['input']!r} is invalid ({err['msg']})",
            accepted or "see the parameter's help: invoke runbook --list",
        ) from None
