"""The front door: HAProxy (Debian's) terminating mutual TLS in front of buildkitd's unix
socket, in two tiers from the start.

- `door` (mode tcp): TLS with a client certificate from the installation's CA, checked
  against its CRL; one audit line per connection, the team being the certificate's CN.
  Queueing and priorities belong here, per connection (never per gRPC method).
- `calls` (mode http, HTTP/2 over a unix socket, PROXY protocol v2 from `door` carrying
  the team as its unique id): one audit line per gRPC call, forwarded to buildkitd.

A pool: several builders of one host behind one front door (the host's builder and the
trust levels its `pool` names), one server each in the door tier's backend, which picks
one by consistent hashing on the team (a team keeps the builder that holds its cache),
each with its own `calls` tier. Draining one (production.pool) takes it off the hash
ring; HAProxy keeps that state across reloads in its server-state file.

HAProxy logs to the audit shipper (production.auditlog) over a unix datagram socket.
A `metrics` listener serves HAProxy's own Prometheus metrics and buildkitd's, read-only,
for the organisation's Prometheus. Units: NAME-frontdoor.service (HAProxy in master-worker
mode: a reload keeps the builds in flight) and NAME-audit.service, NAME being the
builder's (buildkit, or buildkit-LEVEL for one of several on a host)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import AccessError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT
from . import ca

HAPROXY = "/usr/sbin/haproxy"
# one JSON object per line (the audit shipper, production.auditlog, reads these fields);
# what a client controls goes through HAProxy's json converter
CONNECTION_FORMAT = ('{"tier":"connection","epoch":%Ts.%ms,"peer":"%ci:%cp","team":"%[ssl_c_s_dn(cn),json(utf8s)]",'
                     '"builder":"%s",'
                     '"ssl_verify":%[ssl_c_verify],"bytes_in":%U,"bytes_out":%B,"duration_ms":%Tt,"queue_ms":%Tw,'
                     '"termination":"%ts"}')
CALL_FORMAT = ('{"tier":"call","epoch":%Ts.%ms,"peer":"%ci:%cp","team":"%[fc_pp_unique_id,json(utf8s)]","builder":"%b",'
               '"method":"%[capture.req.uri,json(utf8s)]","http_status":%ST,"bytes_in":%U,"bytes_out":%B,'
               '"duration_ms":%Ta,"termination":"%ts"}')


# HAProxy's priority classes: a lower class leaves the queue first
PRIORITY_CLASSES = {"high": -10, "normal": 0, "low": 10}


@dataclass(frozen=True)
class Queue:
    """The build queue, in the door tier, per connection (a queued gRPC method breaks
    BuildKit's client: its Status stream finds no job): at most `slots` connections reach
    buildkitd at once (0: no queue), the others wait up to `timeout`, leaving the queue
    by their team's priority class (the client certificate's CN)."""

    slots: int = 0
    priorities: dict[str, str] = field(default_factory=dict)
    timeout: str = "10m"

    def door(self) -> str:
        """`tcp-request content set-priority-class` lines, one per class that has teams."""
        lines = []
        for name, value in PRIORITY_CLASSES.items():
            teams = sorted(t for t, c in self.priorities.items() if c == name)
            if teams and value:
                lines.append(f"    tcp-request content set-priority-class int({value}) if {{ ssl_c_s_dn(cn) -m str"
                             f" {' '.join(teams)} }}")
        return "\n".join(lines)

    def server(self) -> str:
        return f" maxconn {self.slots}" if self.slots else ""


def config_path(layout: Layout) -> Path:
    return ca.access_dir(layout) / "frontdoor.cfg"


def run_dir(layout: Layout) -> str:
    """The front door's runtime directory on the host (its units' RuntimeDirectory)."""
    return f"/run/{layout.name}-frontdoor"


def state_file(layout: Layout) -> str:
    """Where HAProxy reads its servers' state at start and reload (a drained builder stays
    drained): `show servers state calls`, written by production.pool."""
    return f"{run_dir(layout)}/servers.state"


def tiers(layout: Layout, members: list[Layout], queue: "Queue", where) -> tuple[str, str]:
    """(the door tier's servers, the calls tiers): one server, one `calls-NAME` frontend
    and one NAME backend per builder, hashed on the team when there are several."""
    run = run_dir(layout)
    ring = ("    balance hash ssl_c_s_dn(cn)\n    hash-type consistent\n    load-server-state-from-file global\n"
            if len(members) > 1 else "")
    servers = ring + "\n".join(f"    server {m.name} unix@{run}/calls-{m.name}.sock send-proxy-v2"
                                f" proxy-v2-options unique-id{queue.server()}" for m in members)
    calls = "\n".join(textwrap.dedent(f"""\
        frontend calls-{m.name}
            mode http
            bind unix@{run}/calls-{m.name}.sock accept-proxy proto h2 mode 600 user haproxy
            log-format '{CALL_FORMAT}'
            default_backend {m.name}

        backend {m.name}
            mode http
            server {m.name} unix@{where(m.socket_path)} proto h2
        """) for m in members)
    return servers, calls


def render_config(layout: Layout, port: int, metrics_port: int, debug_port: int, audit_metrics_port: int = 0,
                  paths_here: bool = False, queue: Queue = Queue(), pool: tuple[Layout, ...] = ()) -> str:
    """frontdoor.cfg for HAProxy 2.6, its paths as the host sees them (or, with
    `paths_here`, as this machine does: for `haproxy -c` on a tree rendered elsewhere);
    `pool`: the other builders behind it."""
    where = (lambda path: path) if paths_here else layout.on_host
    p = {k: where(v) for k, v in ca.paths(layout).items()}
    run = run_dir(layout)
    servers, calls = tiers(layout, [layout, *pool], queue, where)
    state = f"    server-state-file {state_file(layout)}\n" if pool else ""
    audit_route = (" || { path /audit/metrics }\n    use_backend audit_metrics if { path /audit/metrics }"
                   if audit_metrics_port else "")  # put in after dedent, at the section's indent
    audit = textwrap.dedent(f"""
        backend audit_metrics
            mode http
            http-request set-path /metrics
            server audit 127.0.0.1:{audit_metrics_port}
        """) if audit_metrics_port else ""
    metrics = textwrap.dedent(f"""
        # read-only metrics: HAProxy's own, buildkitd's and the audit log's counts; nothing else
        frontend metrics
            mode http
            bind :{metrics_port}
            http-request use-service prometheus-exporter if {{ path /metrics }}
            http-request deny unless {{ path /buildkitd/metrics }}AUDIT_ROUTE
            default_backend buildkitd_metrics

        backend buildkitd_metrics
            mode http
            http-request set-path /metrics
            server buildkitd 127.0.0.1:{debug_port}
        """).replace("AUDIT_ROUTE", audit_route) + audit if metrics_port else ""
    return textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: access). Changes here are overwritten.
        global
            user haproxy
            group {layout.group}
            log unix@{run}/audit.sock len 8192 format raw local0
            stats socket {run}/admin.sock mode 600 level admin
            ssl-default-bind-options ssl-min-ver TLSv1.2
        STATE
        defaults
            log global
            timeout connect 5s
            timeout client 1h
            timeout server 1h
            timeout tunnel 1h

        # tier 1: mutual TLS, a line per connection; queueing per connection goes here.
        # A client without a certificate fails the handshake. A certificate that does not
        # verify (another CA, expired, revoked) completes it, so that its line names the
        # team and the reason, and goes to `refused`, which has no server.
        frontend door
            mode tcp
            bind :{port} ssl crt {p['server']} ca-file {p['ca']} crl-file {p['crl']} verify required ca-ignore-err all crt-ignore-err all no-ca-names alpn h2
            unique-id-format %[ssl_c_s_dn(cn)]
            log-format '{CONNECTION_FORMAT}'
        PRIORITIES
            use_backend refused unless {{ ssl_c_verify 0 }}
            default_backend calls

        backend refused
            mode tcp

        # the build queue: at most max_concurrent_builds connections at once per builder
        # (no maxconn: none); a pool's builder is the one the team hashes to
        backend calls
            mode tcp
            timeout queue {queue.timeout}
        SERVERS
        # tier 2: a line per gRPC call, to buildkitd's socket (one per builder)
        """).replace("PRIORITIES\n", queue.door() + "\n" if queue.door() else "").replace(
        "STATE", state).replace("SERVERS", servers + "\n") + calls + metrics


def group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def check_config(text: str, group: str) -> str:
    """`haproxy -c` on a configuration rendered with `paths_here` (so that it reads the
    installation's certificate files where they are on this machine)."""
    haproxy = shutil.which("haproxy") or HAPROXY
    if not Path(haproxy).exists():
        raise AccessError("HAProxy is not installed, so there is no front door", "apt-get install haproxy")
    with tempfile.TemporaryDirectory(prefix="kit-frontdoor-") as tmp:
        cfg = Path(tmp) / "frontdoor.cfg"
        if not group_exists(group):  # a tree rendered for another host, whose group this one lacks
            text = text.replace(f"    group {group}\n", "    group root\n")
        cfg.write_text(text)
        proc = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise AccessError(f"haproxy -c refused the front door's configuration:\n{(proc.stdout + proc.stderr).strip()}",
                          "fix the parameter named above; nothing was written")
    return "haproxy -c: valid"


def render_units(layout: Layout, audit_log: Path, keep: int, max_bytes: int, metrics_port: int = 0) -> dict[str, str]:
    """NAME-audit.service (the shipper) and NAME-frontdoor.service (HAProxy)."""
    cfg, run = layout.on_host(config_path(layout)), run_dir(layout)
    level = layout.trust_level
    metrics = f" --metrics-port {metrics_port} --state-dir /" + (f" --trust-level {level}" if level else "") \
        if metrics_port else ""
    audit_unit, door_unit = layout.unit("audit"), layout.unit("frontdoor")
    audit = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: access).
        [Unit]
        Description=buildkit-ops: the front door's audit log ({layout.name})
        Before={door_unit}

        [Service]
        Type=simple
        RuntimeDirectory={run.removeprefix("/run/")}
        RuntimeDirectoryPreserve=yes
        WorkingDirectory={PROJECT_ROOT}
        ExecStart={sys.executable} -m runbook_checks.production.auditlog serve --socket {run}/audit.sock --file {layout.on_host(audit_log)} --keep {keep} --max-bytes {max_bytes} --group {layout.group}{metrics}
        Restart=on-failure

        [Install]
        WantedBy=multi-user.target
        """)
    door = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: access).
        [Unit]
        Description=buildkit-ops: the front door (HAProxy, mutual TLS to {layout.name})
        After=network-online.target {layout.unit(kind="socket")} {audit_unit}
        Wants=network-online.target {audit_unit}

        [Service]
        Type=notify
        RuntimeDirectory={run.removeprefix("/run/")}
        RuntimeDirectoryPreserve=yes
        ExecStartPre={HAPROXY} -c -q -f {cfg}
        ExecStart={HAPROXY} -Ws -f {cfg} -p {run}/haproxy.pid
        ExecReload={HAPROXY} -c -q -f {cfg}
        ExecReload=/bin/kill -USR2 $MAINPID
        KillMode=mixed
        Restart=on-failure

        [Install]
        WantedBy=multi-user.target
        """)
    return {audit_unit: audit, door_unit: door}
