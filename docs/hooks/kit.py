"""MkDocs hooks for the buildkit-ops site.

The site shows what the kit really does, so the facts come from the kit, at build time:

* every runbook notebook (notebooks/NN-NAME.ipynb) becomes the page notebooks/NN-NAME/,
  rendered by mkdocs-jupyter, never executed: its recorded run (docs/recorded/notebooks/NN-NAME.ipynb,
  sanitised, from `invoke docs.record`) when there is one, with its outputs; else the
  notebook as in the repository;
* markers in the Markdown are replaced with tables generated from the runbooks'
  parameters cells, the profile files and runbook_checks.config:

  <!-- kit:parameters NAME -->   NAME's parameters (name, type, default, help) and, in one
                                 content tab per profile, the values that profile passes
  <!-- kit:steps NAME -->        the steps NAME records in its report, in order
  <!-- kit:buildkitd-settings -->  each buildkitd.toml key the kit sets: parameter,
                                 value per profile, BuildKit's own default
  <!-- kit:buildkitd-toml -->    the buildkitd.toml each profile renders, one tab each
  <!-- kit:profiles -->          notebooks/profiles/*.yaml verbatim, one tab each
  <!-- kit:packages -->          runbook_checks' packages in layer order, each module with
                                 its docstring's summary
  <!-- kit:metrics SOURCE -->    the metrics of one source (buildkitd, exporter, node,
                                 prometheus) or the recording rules (rules), from
                                 runbook_checks.monitoring.metrics
  <!-- kit:labs -->              the practice labs: number, page, seed area, what it practises
  <!-- kit:slides -->            the classroom slide decks, one per recorded run, with the run it shows
  <!-- kit:ports -->             every port parameter of the runbooks: what listens there, the
                                 runbooks that take it, each profile's value

* every lab's task.md (labs/NN-NAME/task.md) becomes the page training/labs/NN-NAME/: its
  hints folded one by one, its solution folded, how to start and check it on top.

A marker naming an unknown runbook fails the build; a runbook without a page that
carries its parameters marker is a warning (so `mkdocs build --strict` fails).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import mkdocs.plugins
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.kit")

SLIDES = "training/slides"  # where the decks and their reveal.js go in the site
MARKER = re.compile(r"<!--\s*kit:([a-z-]+)(?:\s+([A-Za-z0-9_-]+))?\s*-->")
STEP_CALL = re.compile(r"""\breport\.(?:step|check)\(\s*(["'])(.+?)\1""")
PLACEHOLDER_STATE = "/STATE_DIR"
PLACEHOLDER_PORT = 1  # rendered as PORT: "0 picks a free port" has no fixed value to show

# BuildKit's own defaults for the keys the kit sets: what buildkitd does when the key is
# absent. Read from BuildKit v0.34.2: docs/buildkitd.toml.md and its source,
# cmd/buildkitd/main.go (setDefaultConfig, log format switch), cmd/buildkitd/config
# (gcpolicy.go DefaultGCPolicy/DetectDefaultGCCap, gcpolicy_unix.go), main_oci_worker.go
# (snapshotter "auto", max-parallelism semaphore only when > 0, worker enabled when runc
# is on PATH), main_containerd_worker.go (enabled when the containerd socket answers),
# util/appdefaults (root, address) and solver/llbsolver/history/buildhistory.go.
BUILDKIT_DEFAULTS = {
    "root": "`/var/lib/buildkit` (rootless: `~/.local/share/buildkit`)",
    "insecure-entitlements": "none allowed",
    "log.format": '`"text"`',
    "log.level": '`"info"`',
    "grpc.address": "`unix:///run/buildkit/buildkitd.sock`",
    "grpc.debugAddress": "none (no debug listener, no `/metrics`)",
    "history.maxAge": "`172800` (48h)",
    "history.maxEntries": "`50`",
    "worker.oci.enabled": "on when `runc` or `buildkit-runc` is on PATH",
    "worker.oci.snapshotter": '`"auto"`',
    "worker.oci.max-parallelism": "`0`: no limit",
    "worker.oci.gc": "`true`",
    "worker.oci.gcpolicy": "4 rules sized from the disk (below)",
    "worker.oci.networkMode": '`"auto"`: CNI when `/etc/buildkit/cni.json` exists, else the host\'s network',
    "worker.oci.cniBinaryPath": "`/opt/cni/bin`",
    "worker.oci.cniConfigPath": "`/etc/buildkit/cni.json` (a network list when it ends in `.conflist`)",
    "worker.oci.defaultCgroupParent": "none: each build container in `/buildkit/<id>` at each cgroup hierarchy's"
                                      " root",
    "worker.oci.bridgeName": "`buildkit0`",
    "worker.oci.bridgeSubnet": "`10.10.0.0/16`",
    'frontend."gateway.v0".allowedRepositories': "empty: every frontend image is allowed",
    "worker.containerd.enabled": "on when `/run/containerd/containerd.sock` answers",
    'registry."HOST".mirrors': "none",
    'registry."HOST".http': "unset: HTTPS, except that `localhost` and loopback addresses are reached over"
                            " plain HTTP (util/resolver/resolver.go, fillInsecureOpts)",
    'registry."HOST".ca': "none: the host's system CA bundle",
    'registry."HOST".keypair': "none: no client certificate",
}

# (TOML key, the kit parameter behind it, how the kit fills it in). check_settings() warns
# when config.BuildkitdConfig.to_toml() writes a key this list lacks, or stops writing one.
SETTINGS = [
    ("root", "`state_dir`", "`lib/buildkit` under the state directory (production: `/var/lib/buildkit`)"),
    ("insecure-entitlements", "`insecure_entitlements`", "written only when the list is not empty"),
    ("log.format", "`log_format`", ""),
    ("log.level", "`log_level`", ""),
    ("grpc.address", "`state_dir`, `tcp_address`", "the unix socket `run/buildkitd.sock`, plus `tcp_address` when set"),
    ("grpc.debugAddress", "`debug_port`", "always on 127.0.0.1; `0` keeps the port already on disk, or picks a free one"),
    ("history.maxAge", "`history_max_age`", "seconds; the parameter takes `48h`, `7d`, ..."),
    ("history.maxEntries", "`history_max_entries`", ""),
    ("worker.oci.enabled", "(fixed)", "the kit runs the OCI (runc) worker"),
    ("worker.oci.snapshotter", "`snapshotter`", ""),
    ("worker.oci.max-parallelism", "`max_parallelism`", ""),
    ("worker.oci.gc", "`gc`", ""),
    ("worker.oci.gcpolicy", "`gc_policy`", "empty: the kit's tiered default, `runbook_checks.daemon.config.DEFAULT_GC_POLICY`"),
    ("worker.oci.networkMode", "`network_mode`, `build_bandwidth`", "written unless `auto`; production: `bridge`,"
                                                                    " so that RUN steps get their own network namespace"
                                                                    " and cannot reach the build server's loopback;"
                                                                    " `cni` when `build_bandwidth` is set"),
    ("worker.oci.cniConfigPath", "`build_bandwidth`", "with `bridge` and a `build_bandwidth`: `cni.conflist` beside"
                                                      " `buildkitd.toml`, the same bridge as a CNI network list with"
                                                      " Debian's `bandwidth` plugin after it (a token bucket on each RUN"
                                                      " step's interface, in and out)"),
    ("worker.oci.cniBinaryPath", "`network_mode`", "`/usr/lib/cni` (Debian's `containernetworking-plugins`) with"
                                                   " `bridge`"),
    ("worker.oci.defaultCgroupParent", "`service_manager`, `trust_level`", "under systemd, the builder's slice"
                                                                          " (`buildkit.slice`), which carries its"
                                                                          " limits: build containers run in"
                                                                          " `SLICE/buildkit/<id>`, beside the daemon,"
                                                                          " inside the limits"),
    ("worker.oci.bridgeName", "`trust_level`", "`bk-LEVEL` with `bridge`, for a builder of a trust level (one"
                                               " bridge each, so the levels' RUN steps cannot reach each other)"),
    ("worker.oci.bridgeSubnet", "`bridge_subnet`", "with `bridge`, when set (required for a builder of a trust"
                                                   " level)"),
    ("worker.containerd.enabled", "(fixed)", "standalone BuildKit: no containerd worker"),
    ('frontend."gateway.v0".allowedRepositories', "`allowed_frontends`", "the frontend images a `# syntax=` line may"
                                                                       " name; written only when set"),
    ('registry."HOST".mirrors', "`registry_mirrors`", "one table per registry host; written only when set"),
    ('registry."HOST".http', "`registry_port`, `registry_tls`", "`true` for the lab's local registry"
                                                " `127.0.0.1:registry_port`, which serves plain HTTP; `false` for a"
                                                " host in `registry_tls` (BuildKit speaks plain HTTP to a loopback"
                                                " registry unless told otherwise)"),
    ('registry."HOST".ca', "`registry_tls`", "the CA file to trust for that host: a path, never the certificate;"
                                             " configure fails before writing when the file is missing"),
    ('registry."HOST".keypair', "`registry_tls`", "a client certificate and key (paths) for mutual TLS"),
]


# --------------------------------------------------------------------------------------
# facts from the kit
# --------------------------------------------------------------------------------------
class Kit:
    """Everything the generated pages need, read once per build."""

    def __init__(self, root: Path):
        self.root = root
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        from runbook_checks.core import profiles, runner
        from runbook_checks.labs import catalogue

        self.kit_profiles = profiles
        self.labs = catalogue.all_labs()
        self.described = runner.describe()  # {runbook: {parameter: {type, default, help}}}
        self.notebooks = {name: profiles.runbook_path(name) for name in self.described}
        self.profiles = {p: profiles.load_profile(p).values for p in profiles.PROFILES}

    def labs_table(self) -> str:
        rows = ["| # | lab | seed area | what you practise |", "|---|---|---|---|"]
        rows += [f"| {lab.number:02d} | [`{lab.name}`](labs/{lab.folder.name}.md) | {lab.area_name} | {lab.title} |"
                 for lab in self.labs]
        return "\n".join(rows) + "\n"

    def decks(self) -> list[tuple[Path, dict]]:
        """(recorded notebook, its report) of each runbook with a recorded run."""
        from runbook_checks.core import recorded

        return [found for name in self.described if (found := recorded.recorded(name))]

    def slides_table(self) -> str:
        rows = ["| deck | the run it shows |", "|---|---|"]
        for notebook, r in self.decks():
            where = f" on rehearsal host {r['host']}" if r.get("host") else ""
            rows.append(f"| [{notebook.stem}](slides/{notebook.stem}.html) | `{r['runbook']}`, profile {r['profile']},"
                        f" {r['mode']} → {r['status']}, {r['finished']}{where} |")
        return "\n".join(rows) + "\n"

    def ports_table(self) -> str:
        found: dict[str, dict] = {}
        for runbook, declared in self.described.items():
            for pname, p in declared.items():
                if pname.endswith("_port"):
                    found.setdefault(pname, {**p, "runbooks": []})["runbooks"].append(runbook)
        names = list(self.profiles)
        rows = [f"| parameter | {' | '.join(f'{n} profile' for n in names)} | what listens there | runbooks |",
                "|---|" + "---|" * len(names) + "---|---|"]
        for pname, p in sorted(found.items()):
            values = [str(self.profiles[n].get(pname, p["default"])) for n in names]
            rows.append(f"| `{pname}` | {' | '.join(values)} | {cell(p['help'])} | {', '.join(p['runbooks'])} |")
        return "\n".join(rows) + "\n"

    def check_runbook(self, name: str | None, marker: str, page: str) -> str:
        if name not in self.described:
            raise PluginError(f"{page}: <!-- kit:{marker} {name} --> names no runbook; "
                              f"runbooks: {', '.join(self.described)}")
        return name

    # -- per runbook ---------------------------------------------------------------------
    def parameters(self, name: str) -> str:
        declared = self.described[name]
        rows = ["| parameter | type | default | what it does |", "|---|---|---|---|"]
        for pname, p in declared.items():
            rows.append(f"| `{pname}` | {p['type']} | {code(p['default'])} | {cell(p['help'])} |")
        tabs = []
        for profile, data in self.profiles.items():
            passed = {k: v for k, v in data.items() if k in declared}
            body = dump_yaml(passed) if passed else "# this profile passes nothing to this runbook\n"
            tabs.append(tab(profile, f"```yaml title=\"notebooks/profiles/{profile}.yaml, the keys {name} takes\"\n"
                                     f"{body}```"))
        return ("\n".join(rows) + "\n\n"
                "What each profile passes (`--set` overrides it; a key absent here keeps the default above):\n\n"
                + "\n".join(tabs))

    def steps(self, name: str) -> str:
        import nbformat

        nb = nbformat.read(self.notebooks[name], as_version=4)
        found = [m.group(2) for c in nb.cells if c.cell_type == "code" for m in STEP_CALL.finditer(c.source)]
        if not found:
            raise PluginError(f"runbook {name}: no report.step(...) calls found in {self.notebooks[name]}")
        return ("In order, as the recap names them: " + " → ".join(f"**{step}**" for step in found) + "."
                + self.recorded_run(name))

    def recorded_run(self, name: str) -> str:
        """The recap of the runbook's recorded run (docs/recorded, `invoke docs.record`), folded."""
        from runbook_checks.core import recorded

        found = recorded.recorded(name)
        if found is None:
            return ""
        r = found[1]
        where = f" on rehearsal host {r['host']}" if r.get("host") else ""
        rows = ["| status | step | message |", "|---|---|---|"]
        rows += [f"| {s['status']} | {cell(s['name'])} | {cell(s['message'].splitlines()[0] if s['message'] else '')} |"
                 for s in r["steps"]]
        body = "\n".join(f"    {row}" for row in rows)
        return (f'\n\n??? example "A real run: `{r["runbook"]}`, profile {r["profile"]}, {r["mode"]} → {r["status"]},'
                f' {r["finished"]}{where}"\n\n{body}\n\n    Every cell\'s output of this run is on the rendered'
                " notebook's page (machine paths and secrets replaced: `invoke docs.record`).\n")

    # -- buildkitd.toml --------------------------------------------------------------------
    def configs(self) -> dict[str, Any]:
        """The BuildkitdConfig each profile renders: configure's parameters, resolved as
        `invoke runbook configure --profile P` resolves them, on a placeholder state dir."""
        if getattr(self, "_configs", None) is None:
            self._configs = self._render_configs()
        return self._configs

    def _render_configs(self) -> dict[str, Any]:
        from runbook_checks.core import layout
        from runbook_checks.daemon import config

        out = {}
        for profile in self.kit_profiles.PROFILES:
            values = self.kit_profiles.resolve("configure", profile, "check")
            state = values.get("state_dir") or PLACEHOLDER_STATE
            lay = layout.for_params({"profile": profile, "state_dir": state})
            port = values.get("debug_port") or PLACEHOLDER_PORT
            out[profile] = (values, config.BuildkitdConfig.from_params(values, lay, port))
        return out

    def check_settings(self) -> None:
        """Every key the kit can write is documented, and every documented key is written.
        The optional keys are switched on for this check."""
        import tomlkit

        from runbook_checks.core import layout
        from runbook_checks.daemon import config

        values = dict(self.kit_profiles.resolve("configure", "production", "check"),
                      insecure_entitlements=["network.host"], registry_mirrors={"docker.io": ["mirror:5000"]},
                      registry_port=15000, trust_level="untrusted", bridge_subnet="10.12.0.0/16",
                      registry_tls={"registry.example:443": {"ca": "/ca.pem", "cert": "/c.pem", "key": "/c.key"}})
        lay = layout.for_params({"profile": "production", "state_dir": PLACEHOLDER_STATE, "trust_level": "untrusted"})
        written = set()
        for bandwidth in ("", "100mbit"):  # one or the other: bridgeName and bridgeSubnet, or cniConfigPath
            cfg = config.BuildkitdConfig.from_params(dict(values, build_bandwidth=bandwidth), lay, 1)
            written |= set(flat_keys(tomlkit.parse(cfg.to_toml()).unwrap()))
        documented = {key for key, _, _ in SETTINGS}
        for key in sorted(written - documented):
            log.warning("buildkitd.toml key %r is written by the kit but missing from SETTINGS in docs/hooks/kit.py", key)
        for key in sorted(documented - written):
            log.warning("buildkitd.toml key %r is in SETTINGS (docs/hooks/kit.py) but the kit no longer writes it", key)

    def settings_table(self) -> str:
        self.check_settings()
        configs = self.configs()
        head = "| TOML key | kit parameter | " + " | ".join(configs) + " | BuildKit default |"
        rows = [head, "|" + "---|" * (4 + len(configs) - 1)]
        notes = []
        for key, parameter, note in SETTINGS:
            values = [cell(show_setting(key, values, cfg)) for values, cfg in configs.values()]
            rows.append(f"| `{key}` | {parameter} | " + " | ".join(values) + f" | {cell(BUILDKIT_DEFAULTS[key])} |")
            if note:
                notes.append(f"- `{key}`: {note}")
        return "\n".join(rows) + "\n\nHow the kit fills them in:\n\n" + "\n".join(notes)

    def toml_tabs(self) -> str:
        tabs = []
        for profile, (values, cfg) in self.configs().items():
            text = placeholders(cfg.to_toml())
            tabs.append(tab(profile, f"```toml title=\"buildkitd.toml ({profile})\"\n{text}```"))
        return "\n".join(tabs)

    def packages(self) -> str:
        """Each package of runbook_checks in layer order (pyproject.toml's contract), its
        docstring, and a table of its modules with their docstrings' first sentence."""
        import ast
        import tomllib

        config = tomllib.loads((self.root / "pyproject.toml").read_text())["tool"]["importlinter"]
        layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
        out = []
        for layer in layers:
            for name in (n.strip() for n in re.split(r"[|:]", layer)):
                path = self.root / "runbook_checks" / name
                init = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
                out += [f"### `{name}`", "", summary(ast.get_docstring(ast.parse(init.read_text())) or ""), ""]
                if not path.is_dir():
                    continue
                rows = ["| module | lines | job |", "|---|---:|---|"]
                for module in sorted(path.glob("*.py")):
                    if module.name == "__init__.py":
                        continue
                    text = module.read_text()
                    doc = summary(ast.get_docstring(ast.parse(text)) or "")
                    if not doc:
                        log.warning("runbook_checks/%s/%s has no docstring to show in the reference", name, module.name)
                    rows.append(f"| `{name}.{module.stem}` | {text.count(chr(10))} | {cell(doc)} |")
                out += rows + [""]
        return "\n".join(out)

    def metrics(self, source: str) -> str:
        from runbook_checks.monitoring import metrics

        if source not in metrics.TABLES:
            raise PluginError(f"<!-- kit:metrics {source} -->: use one of {', '.join(metrics.TABLES)}")
        return metrics.table(source)

    def profile_files(self) -> str:
        from runbook_checks.core.paths import PROFILES_DIR

        tabs = []
        for profile in self.kit_profiles.PROFILES:
            path = PROFILES_DIR / f"{profile}.yaml"
            tabs.append(tab(profile, f"```yaml title=\"notebooks/profiles/{path.name}\"\n{path.read_text()}```"))
        return "\n".join(tabs)


# --------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------
def summary(doc: str) -> str:
    """A docstring's first paragraph on one line."""
    return " ".join(doc.split("\n\n")[0].split())


def cell(text: str) -> str:
    """Text that is safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{text}`" if str(text) != "" else ""


def dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def tab(title: str, body: str) -> str:
    indented = "\n".join(("    " + line) if line else "" for line in body.splitlines())
    return f'=== "{title}"\n\n{indented}\n'


def placeholders(text: str) -> str:
    return (text.replace(PLACEHOLDER_STATE, "STATE_DIR")
                .replace(f"127.0.0.1:{PLACEHOLDER_PORT}\"", "127.0.0.1:PORT\""))


def flat_keys(table: dict, prefix: str = "") -> list[str]:
    """Dotted TOML keys, a key holding a dot quoted; registry hosts become "HOST" and
    arrays of tables stay one key."""
    keys = []
    for key, value in table.items():
        name = f'{prefix}"{key}"' if "." in key else f"{prefix}{key}"
        if prefix == "registry.":
            name = 'registry."HOST"'
        if isinstance(value, dict):
            keys += flat_keys(value, name + ".")
        else:
            keys.append(name)
    return keys


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def human_seconds(seconds: int) -> str:
    """172800 -> 48h, 604800 -> 7d: days from three days up, as the profiles write them."""
    if seconds >= 3 * 86400 and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    for unit, step in (("h", 3600), ("m", 60)):
        if seconds and seconds % step == 0:
            return f"{seconds // step}{unit}"
    return f"{seconds}s"


def gc_rule(rule) -> str:
    parts = []
    if rule.all:
        parts.append("all")
    if rule.filters:
        parts.append(", ".join(f.split("==", 1)[1] for f in rule.filters))
    if rule.keep_duration:
        parts.append(f"keep {human_seconds(rule.keep_duration)}")
    for name, label in (("reserved_space", "reserved"), ("max_used_space", "max used"), ("min_free_space", "min free")):
        value = getattr(rule, name)
        if value is not None:
            parts.append(f"{label} {value if isinstance(value, str) else size(value)}")
    return "; ".join(parts)


def size(n: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6)):
        if n >= factor and n % (factor // 10) == 0:
            return f"{n / factor:g}{unit}"
    return f"{n}B"


def show_setting(key: str, values: dict, cfg) -> str:
    """One profile's value for one key, as the kit writes it."""
    if key == "root":
        return code(placeholders(cfg.root))
    if key == "insecure-entitlements":
        return code(toml_value(cfg.insecure_entitlements)) if cfg.insecure_entitlements else "not written"
    if key == "log.format":
        return code(toml_value(cfg.log_format))
    if key == "log.level":
        return code(toml_value(cfg.log_level))
    if key == "grpc.address":
        return "<br>".join(code(placeholders(a)) for a in cfg.addresses)
    if key == "grpc.debugAddress":
        if not values.get("debug_port"):
            return "`127.0.0.1:PORT`: a free port, then kept"
        return code(cfg.debug_address)
    if key == "history.maxAge":
        return f"`{cfg.history_max_age}` ({human_seconds(cfg.history_max_age)})"
    if key == "history.maxEntries":
        return code(cfg.history_max_entries)
    if key == "worker.oci.enabled":
        return "`true`"
    if key == "worker.oci.snapshotter":
        return code(toml_value(cfg.snapshotter))
    if key == "worker.oci.max-parallelism":
        return code(cfg.max_parallelism)
    if key == "worker.oci.gc":
        return code(toml_value(cfg.gc))
    if key == "worker.oci.gcpolicy":
        source = "profile" if values.get("gc_policy") else "kit default"
        rules = "<br>".join(f"{i}. {gc_rule(r)}" for i, r in enumerate(cfg.gc_policy, 1))
        return f"{len(cfg.gc_policy)} rules ({source}):<br>{rules}"
    if key == "worker.oci.networkMode":
        if cfg.cni_config:
            return '`"cni"`'
        return code(toml_value(cfg.network_mode)) if cfg.network_mode != "auto" else "not written (`auto`)"
    if key == "worker.oci.cniConfigPath":
        return code(placeholders(cfg.cni_config)) if cfg.cni_config else "not written (no `build_bandwidth`)"
    if key == "worker.oci.cniBinaryPath":
        from runbook_checks.daemon.config import CNI_BINARY_PATH

        return code(toml_value(CNI_BINARY_PATH)) if cfg.network_mode == "bridge" else "not written"
    if key == "worker.oci.defaultCgroupParent":
        return code(toml_value(cfg.cgroup_parent)) if cfg.cgroup_parent else "not written (no systemd)"
    if key == "worker.oci.bridgeName":
        return code(toml_value(cfg.bridge_name)) if cfg.bridge_name else "not written (BuildKit's `buildkit0`)"
    if key == "worker.oci.bridgeSubnet":
        return code(toml_value(cfg.bridge_subnet)) if cfg.bridge_subnet else "not written (BuildKit's `10.10.0.0/16`)"
    if key == 'frontend."gateway.v0".allowedRepositories':
        return code(toml_value(cfg.allowed_frontends)) if cfg.allowed_frontends else "not written (any frontend)"
    if key == "worker.containerd.enabled":
        return "`false`"
    if key == 'registry."HOST".mirrors':
        if not cfg.registry_mirrors:
            return "not written"
        return "<br>".join(f"`{h}`: {code(toml_value(m))}" for h, m in cfg.registry_mirrors.items())
    if key == 'registry."HOST".http':
        shown = [f"`{h}`: `true`" for h in cfg.http_registries] + [f"`{h}`: `false`" for h in cfg.registry_tls]
        return "<br>".join(shown) or "not written"
    if key in ('registry."HOST".ca', 'registry."HOST".keypair'):
        field = "ca" if key.endswith("ca") else "cert"
        hosts = [h for h, tls in cfg.registry_tls.items() if tls.get(field)]
        return "<br>".join(f"`{h}`" for h in hosts) or "not written"
    raise PluginError(f"no formatter for buildkitd.toml key {key!r}")


# --------------------------------------------------------------------------------------
# MkDocs events
# --------------------------------------------------------------------------------------
_kit: Kit | None = None
_seen_parameters: set[str] = set()


def on_config(config, **kwargs):
    global _kit
    _kit = Kit(Path(config.config_file_path).resolve().parent)
    _seen_parameters.clear()
    return config


@mkdocs.plugins.event_priority(50)  # before mkdocs-jupyter wraps notebook files into pages
def on_files(files: Files, config, **kwargs) -> Files:
    """Each runbook notebook, read in place from notebooks/ (outside docs/), as the page
    notebooks/NN-NAME/: the same path as in the repository; each lab's page, made from
    its task.md."""
    from runbook_checks.core import recorded

    for name, path in _kit.notebooks.items():
        src_uri = path.relative_to(_kit.root).as_posix()
        # the recorded run (docs/recorded/notebooks/), outputs and all, in the notebook's place
        src_dir = recorded.RECORDED if recorded.recorded(name) else _kit.root
        files.append(File(src_uri, src_dir=str(src_dir), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    for lab in _kit.labs:
        files.append(File.generated(config, f"training/labs/{lab.folder.name}.md", content=lab_page(lab)))
    # the classroom decks (reveal.js, beside them), from the recorded runs
    from runbook_checks.core import slides

    for notebook, _ in _kit.decks():
        files.append(File.generated(config, f"{SLIDES}/{notebook.stem}.html", content=slides.deck(notebook)))
    for uri, path in slides.assets().items():
        files.append(File.generated(config, f"{SLIDES}/{uri}", abs_src_path=str(path)))
    return files


def lab_page(lab) -> str:
    """A lab's task.md for the site: how to start and check it first, each hint folded
    on its own (a trainee opens one at a time), the solution as task.md folds it."""
    text = lab.text
    hints = lab.sections.get("Hints", "")
    folded = []
    for i, part in enumerate(re.split(r"^(?=### )", hints, flags=re.M)):
        if not part.startswith("### "):
            continue
        title, _, body = part[4:].partition("\n")
        folded.append(f'??? tip "Hint {len(folded) + 1}: {title.strip()}"\n\n'
                      + "\n".join(f"    {line}" if line else "" for line in body.strip().splitlines()) + "\n")
    text = text.replace(hints, "\n".join(folded).strip(), 1)
    title, _, rest = text.partition("\n")
    timing = f" · `lab.start`: about {lab.module.START_SECONDS} s"
    if getattr(lab.module, "TRIAL", None):
        timing += (f" · passed in {lab.module.TRIAL} min in a trial from this page alone (a reader who knew the kit;"
                   " allow more the first time)")
    head = (f"*Lab {lab.number:02d} · seed area {lab.area_name} · files: `labs/{lab.folder.name}/`{timing}"
            " · runbooks: [how to run one](../../get-started/run-a-runbook.md)*\n\n"
            f"```sh\n. .venv/bin/activate             # in the checkout\n"
            f"invoke lab.start {lab.name}     # a sandbox builder of its own, in the starting state\n"
            f"source $HOME/.local/state/buildkit-ops/labs/{lab.name}/env   # the line lab.start prints"
            f" (LAB, LAB_PROFILE, BUILDKIT_HOST, ...)\n"
            f"invoke lab.check {lab.name}     # what is proven, what is still wrong\n"
            f"invoke lab.hint {lab.name} --level 1\ninvoke lab.reset {lab.name}     # start over\n```\n\n"
            "`lab.start` prints the `source` line to use: the labs live under `$BUILDKIT_OPS_LABS_DIR` when it is"
            " set. Each shell needs it once.\n\n")
    return f"{title}\n\n{head}{rest}"


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    where = page.file.src_uri

    def replace(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "parameters":
            _seen_parameters.add(_kit.check_runbook(arg, kind, where))
            return _kit.parameters(arg)
        if kind == "steps":
            return _kit.steps(_kit.check_runbook(arg, kind, where))
        if kind == "buildkitd-settings":
            return _kit.settings_table()
        if kind == "buildkitd-toml":
            return _kit.toml_tabs()
        if kind == "profiles":
            return _kit.profile_files()
        if kind == "packages":
            return _kit.packages()
        if kind == "metrics":
            return _kit.metrics(arg or "")
        if kind == "labs":
            return _kit.labs_table()
        if kind == "slides":
            return _kit.slides_table()
        if kind == "ports":
            return _kit.ports_table()
        raise PluginError(f"{where}: unknown marker <!-- kit:{kind} -->")

    return MARKER.sub(replace, markdown)


def on_env(env, config, files, **kwargs):
    """After every page's Markdown was read: each runbook has a documented parameter table."""
    for name in _kit.described:
        if name not in _seen_parameters:
            log.warning("runbook %r has no page with <!-- kit:parameters %s --> (add docs/runbooks/%s/index.md)",
                        name, name, name)
    return env
