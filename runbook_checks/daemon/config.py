"""A typed model of buildkitd.toml: build it from validated parameters, render TOML,
diff it against the file on disk, write it atomically with a backup."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from ..core import files
from ..core.errors import ConfigError
from ..core.layout import Layout
from ..core.params import BUILDKIT_SUBNET, GcRule, Semantics
from ..core.results import Outcome
from ..core.units import parse_rate
from .systemd import choose_manager

HEADER = "# Managed by buildkit-ops (runbook: configure). Local edits are replaced on the next apply;\n" \
         "# the previous file is kept in the backup directory.\n"

# The kit's tiered GC policy when a profile gives none: short retention for cache mounts
# and local/git sources, bounded space for everything else.
# Tiered, and ordered from the most disposable records to the hard bound. A rule's
# keepDuration exempts every record used within that time from the rule, limits
# included: so the rule that bounds the cache's size carries no keepDuration (measured on
# v0.34: with keepDuration 1h, a 20MB maxUsedSpace let the cache grow to 45MB; without,
# GC brought it to 18MB about a minute after the builds).
DEFAULT_GC_POLICY = [
    # 1. context uploads, cache mounts and git checkouts unused for 48h
    {"filters": ["type==source.local", "type==exec.cachemount", "type==source.git.checkout"],
     "keep_duration": "48h"},
    # 2. anything unused for 30 days
    {"all": True, "keep_duration": "30d"},
    # 3. the hard bound: the oldest-used records go until the cache fits
    {"all": True, "reserved_space": "2GB", "max_used_space": "20GB", "min_free_space": "5GB"},
]

# TOML key for each GcRule field (BuildKit ≥ 0.17 names).
GC_KEYS = {"all": "all", "filters": "filters", "keep_duration": "keepDuration",
           "reserved_space": "reservedSpace", "max_used_space": "maxUsedSpace",
           "min_free_space": "minFreeSpace"}


CNI_BINARY_PATH = "/usr/lib/cni"  # Debian's containernetworking-plugins
DEFAULT_BRIDGE, DEFAULT_SUBNET = "buildkit0", BUILDKIT_SUBNET  # BuildKit's own, in bridge mode


def cni_config_path(layout: Layout) -> Path:
    """The CNI network list beside buildkitd.toml (written with a bandwidth limit)."""
    return layout.config_path.parent / "cni.conflist"


def bridge_for(trust_level: str) -> str:
    """The bridge of a trust level's builder (a network interface name: 15 characters)."""
    return f"bk-{trust_level}"


@dataclass
class BuildkitdConfig:
    root: str
    addresses: list[str]
    debug_address: str
    log_format: str = "json"
    log_level: str = "info"
    history_max_age: int = 172800
    history_max_entries: int = 50
    snapshotter: str = "auto"
    max_parallelism: int = 4
    gc: bool = True
    gc_policy: list[GcRule] = field(default_factory=list)
    insecure_entitlements: list[str] = field(default_factory=list)
    registry_mirrors: dict[str, list[str]] = field(default_factory=dict)
    http_registries: list[str] = field(default_factory=list)
    registry_tls: dict[str, dict[str, str]] = field(default_factory=dict)  # host -> {ca, cert, key} paths
    network_mode: str = "auto"
    bridge_name: str = ""  # BuildKit's default buildkit0 when empty
    bridge_subnet: str = ""  # BuildKit's default 10.10.0.0/16 when empty
    cgroup_parent: str = ""  # under systemd: the builder's slice, which carries its limits
    allowed_frontends: list[str] = field(default_factory=list)
    bandwidth: int = 0  # bits per second in and out of each RUN step's network; 0: none
    cni_config: str = ""  # with a bandwidth: the CNI network list BuildKit runs (cni mode)
    tls: dict[str, str] = field(default_factory=dict)  # {cert, key, ca}: mTLS on the TCP address (a fleet's pods)

    @classmethod
    def from_params(cls, params: dict[str, Any], layout: Layout, debug_port: int) -> "BuildkitdConfig":
        sem = Semantics.model_validate(params)
        rules = sem.gc_policy or [GcRule.model_validate(r) for r in DEFAULT_GC_POLICY]
        addresses = [layout.address] + ([sem.tcp_address] if sem.tcp_address else [])
        bridge_name = ""
        if sem.network_mode == "bridge" and layout.trust_level:  # one bridge per builder: no traffic between levels
            if not sem.bridge_subnet:
                raise ConfigError(f"the {layout.name} builder would share BuildKit's default bridge and subnet with"
                                  " the host's other builders, so their RUN steps could reach each other",
                                  "set bridge_subnet for this trust level (for example 10.12.0.0/16), different"
                                  " for each level")
            bridge_name = bridge_for(layout.trust_level)
        bandwidth = parse_rate(sem.build_bandwidth)
        if bandwidth and sem.network_mode != "bridge":
            raise ConfigError(f"build_bandwidth={sem.build_bandwidth} limits each RUN step's own network, and with"
                              f" network_mode={sem.network_mode} RUN steps have none",
                              "set network_mode: bridge (the production profile's), or leave build_bandwidth empty")
        return cls(
            root=str(layout.root_dir), addresses=addresses, debug_address=f"127.0.0.1:{debug_port}",
            log_format=sem.log_format, log_level=sem.log_level,
            history_max_age=sem.history_max_age, history_max_entries=sem.history_max_entries,
            snapshotter=sem.snapshotter, max_parallelism=sem.max_parallelism, gc=sem.gc,
            gc_policy=rules, insecure_entitlements=list(sem.insecure_entitlements),
            registry_mirrors=dict(sem.registry_mirrors),
            http_registries=[f"127.0.0.1:{sem.registry_port}"] if sem.registry_port else [],
            registry_tls={host: tls.model_dump() for host, tls in sem.registry_tls.items()},
            network_mode=sem.network_mode, allowed_frontends=list(sem.allowed_frontends),
            bridge_name=bridge_name, bridge_subnet=sem.bridge_subnet if sem.network_mode == "bridge" else "",
            cgroup_parent=layout.slice if choose_manager(sem.service_manager) == "systemd" else "",
            bandwidth=bandwidth, cni_config=str(cni_config_path(layout)) if bandwidth else "",
        )

    def cni_conflist(self) -> str:
        """BuildKit's bridge network as a CNI network list (bridge, host-local addresses,
        firewall), with Debian's bandwidth plugin after them: a token bucket on each RUN
        step's interface, both ways, bursts of an eighth of a second."""
        plugins = [{"type": "bridge", "bridge": self.bridge_name or DEFAULT_BRIDGE, "isDefaultGateway": True,
                    "ipMasq": True, "ipam": {"type": "host-local",
                                             "ranges": [[{"subnet": self.bridge_subnet or DEFAULT_SUBNET}]]}},
                   {"type": "firewall"},
                   {"type": "bandwidth", "ingressRate": self.bandwidth, "ingressBurst": self.bandwidth // 8,
                    "egressRate": self.bandwidth, "egressBurst": self.bandwidth // 8}]
        # named after its bridge: two builders' networks on one host do not share a name
        return json.dumps({"cniVersion": "1.0.0", "name": self.bridge_name or DEFAULT_BRIDGE, "plugins": plugins},
                          indent=2) + "\n"

    def to_toml(self) -> str:
        doc = tomlkit.document()
        doc.add("root", self.root)
        if self.insecure_entitlements:
            doc.add("insecure-entitlements", self.insecure_entitlements)
        log = tomlkit.table()
        log.add("format", self.log_format)
        log.add("level", self.log_level)
        doc.add("log", log)
        grpc = tomlkit.table()
        grpc.add("address", self.addresses)
        grpc.add("debugAddress", self.debug_address)
        if self.tls:
            grpc.add("tls", tomlkit.item(dict(sorted(self.tls.items()))))
        doc.add("grpc", grpc)
        history = tomlkit.table()
        history.add("maxAge", self.history_max_age)
        history.add("maxEntries", self.history_max_entries)
        doc.add("history", history)
        oci = tomlkit.table()
        oci.add("enabled", True)
        oci.add("snapshotter", self.snapshotter)
        oci.add("max-parallelism", self.max_parallelism)
        oci.add("gc", self.gc)
        if self.cgroup_parent:  # build containers in NAME.slice/buildkit/<id>, under the slice's limits
            oci.add("defaultCgroupParent", self.cgroup_parent)
        if self.cni_config:  # the same bridge as a CNI network list, with a bandwidth limit
            oci.add("networkMode", "cni")
            oci.add("cniConfigPath", self.cni_config)
            oci.add("cniBinaryPath", CNI_BINARY_PATH)
        elif self.network_mode != "auto":
            oci.add("networkMode", self.network_mode)
        if self.network_mode == "bridge" and not self.cni_config:  # BuildKit's own bridge, with Debian's CNI plugins
            oci.add("cniBinaryPath", CNI_BINARY_PATH)
            if self.bridge_name:
                oci.add("bridgeName", self.bridge_name)
            if self.bridge_subnet:
                oci.add("bridgeSubnet", self.bridge_subnet)
        policy = tomlkit.aot()
        for rule in self.gc_policy:
            entry = tomlkit.table()
            for name, key in GC_KEYS.items():
                value = getattr(rule, name)
                if value not in (None, False, []):
                    entry.add(key, value)
            policy.append(entry)
        oci.add("gcpolicy", policy)
        worker = tomlkit.table(is_super_table=True)
        worker.add("oci", oci)
        containerd = tomlkit.table()
        containerd.add("enabled", False)
        worker.add("containerd", containerd)
        doc.add("worker", worker)
        if self.allowed_frontends:
            gateway = tomlkit.table()
            gateway.add("allowedRepositories", self.allowed_frontends)
            frontend = tomlkit.table(is_super_table=True)
            frontend.add("gateway.v0", gateway)
            doc.add("frontend", frontend)
        hosts = sorted(set(self.registry_mirrors) | set(self.http_registries) | set(self.registry_tls))
        if hosts:
            registry = tomlkit.table(is_super_table=True)
            for host in hosts:
                entry = tomlkit.table()
                if host in self.registry_mirrors:
                    entry.add("mirrors", self.registry_mirrors[host])
                if host in self.http_registries:  # the lab's local registry speaks plain HTTP
                    entry.add("http", True)
                tls = self.registry_tls.get(host) or {}
                if tls and host not in self.http_registries:
                    # BuildKit speaks plain HTTP to a loopback registry unless told otherwise
                    entry.add("http", False)
                if tls.get("ca"):
                    entry.add("ca", [tls["ca"]])
                if tls.get("cert"):
                    pair = tomlkit.aot()
                    pair.append(tomlkit.item({"key": tls["key"], "cert": tls["cert"]}))
                    entry.add("keypair", pair)
                registry.add(host, entry)
            doc.add("registry", registry)
        return HEADER + tomlkit.dumps(doc)


def read_debug_port(path: Path) -> int | None:
    """The debug port of the config on disk, so that `debug_port = 0` (pick one) stays
    stable across runs without keeping any state of our own."""
    text = files.read_text(path)
    if not text:
        return None
    try:
        address = tomlkit.parse(text).get("grpc", {}).get("debugAddress", "")
        return int(str(address).rsplit(":", 1)[1])
    except (Exception,):  # an unreadable file is reported by the config step, not here
        return None


def write_config(layout: Layout, config: BuildkitdConfig, apply: bool) -> Outcome:
    """Converge buildkitd.toml: ok if equal, else a diff (check) or a backup + atomic
    write (apply). Restarting the daemon is the service step's job."""
    for host, tls in config.registry_tls.items():
        for name, path in tls.items():
            if path and not Path(path).is_file():
                raise ConfigError(f"registry_tls.{host}.{name}: {path} does not exist, and buildkitd would fail to"
                                  f" reach {host} with it", "put the file there first (the kit never writes"
                                  " certificates or keys), or fix the path")
    path = layout.config_path
    wanted = {path: config.to_toml()}
    if config.cni_config:
        wanted[Path(config.cni_config)] = config.cni_conflist()
    outcome = files.converge(wanted, apply, layout.backup_dir, config_path=str(path))
    saved = outcome.backups.get(str(path), "")
    if saved:
        outcome.message += f"; previous file kept as {saved}"
    if apply and outcome.status == "changed":
        outcome.facts["config_backup"] = saved
    return outcome


def latest_backup(layout: Layout) -> Path | None:
    backups = sorted(layout.backup_dir.glob(f"{layout.config_path.name}.*"))
    return backups[-1] if backups else None
