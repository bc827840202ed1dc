"""The front door's audit log: HAProxy sends one line per connection (tier `door`) and one
per gRPC call (tier `calls`) to a unix datagram socket; this shipper turns each into one
JSON object per line in the audit log, rotated by size (Python's RotatingFileHandler).

An entry: `time` (ISO 8601, UTC), `tier` (connection | call), `team` (the client
certificate's CN, "-" when there was none), `verified` (the certificate is from this
installation's CA, in force, not revoked), `peer`, `method` (the gRPC method, "-" on a
connection), `builder` (the builder that served it, when one did: several share a front
door in a pool), `status` ("ok" or why it was refused), `http_status`, `bytes_in`,
`bytes_out`, `duration_ms`, `termination` (HAProxy's termination state). HAProxy's own
messages (a proxy started or stopped on reload) are entries of tier `event`.

`python -m runbook_checks.production.auditlog serve --socket S --file F` is the
buildkit-audit.service's command."""

from __future__ import annotations

import argparse
import datetime as _dt
import grp
import json
import logging
import os
import re
import signal
import socket
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Iterable

# X509 verification results HAProxy reports as ssl_c_verify, in plain words
REFUSALS = {
    2: "refused: certificate not from this installation's CA",
    9: "refused: certificate not valid yet",
    10: "refused: certificate expired",
    18: "refused: certificate not from this installation's CA",
    19: "refused: certificate not from this installation's CA",
    20: "refused: certificate not from this installation's CA",
    21: "refused: certificate not from this installation's CA",
    23: "refused: certificate revoked",
}
NO_CERTIFICATE = "refused: no client certificate, or the TLS handshake failed"
QUEUE_TIMEOUT = "refused: waited in the build queue longer than queue_timeout"
# the `reason` label of buildkit_frontdoor_refused_total, from an entry's status
REASONS = {NO_CERTIFICATE: "no-certificate", REFUSALS[20]: "other-ca", REFUSALS[10]: "expired", REFUSALS[23]: "revoked",
           REFUSALS[9]: "not-yet-valid", QUEUE_TIMEOUT: "queue-timeout"}
# what HAProxy writes instead of the log-format when a TLS handshake fails:
# "127.0.0.1:43682 [30/Nov/2026:04:36:55.249] door/1: SSL handshake failure"
LEGACY = re.compile(r"^(?P<peer>\S+) \[(?P<date>[^\]]+)\] (?P<frontend>[^/\s]+)/\S+: (?P<message>.*)$")


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat(timespec="milliseconds")


def normalize(raw: str) -> dict[str, Any]:
    """One audit entry from one line HAProxy sent."""
    raw = raw.strip()
    try:
        line = json.loads(raw)
    except ValueError:
        line = None
    if isinstance(line, dict):
        verify = int(line.get("ssl_verify", 0) or 0)
        call = line.get("tier") == "call"
        status = "ok"
        if verify:
            status = REFUSALS.get(verify, f"refused: certificate not accepted (X509 error {verify})")
        elif str(line.get("termination", "")).startswith("sQ"):  # HAProxy: expired in the queue
            status = QUEUE_TIMEOUT
        elif call and not 0 < int(line.get("http_status", -1)) < 400:
            status = f"failed: HTTP {line.get('http_status')} ({line.get('termination')})"
        return {"time": _iso(float(line.get("epoch", 0))), "tier": line.get("tier", "connection"),
                "team": line.get("team") or "-", "verified": not verify, "peer": line.get("peer", "-"),
                "method": (line.get("method") or "-") if call else "-", "status": status,
                **({"builder": line["builder"]} if line.get("builder", "<NOSRV>") not in ("<NOSRV>", "-", "") else {}),
                "http_status": line.get("http_status", 0), "bytes_in": line.get("bytes_in", 0),
                "bytes_out": line.get("bytes_out", 0), "duration_ms": line.get("duration_ms", 0),
                **({"queue_ms": max(int(line["queue_ms"]), 0)} if "queue_ms" in line else {}),
                "termination": line.get("termination", "")}
    match = LEGACY.match(raw)
    if match:
        when = _dt.datetime.strptime(match["date"], "%d/%b/%Y:%H:%M:%S.%f").replace(tzinfo=_dt.timezone.utc)
        handshake = "handshake" in match["message"]
        return {"time": when.isoformat(timespec="milliseconds"), "tier": "connection", "team": "-", "verified": False,
                "peer": match["peer"], "method": "-",
                "status": NO_CERTIFICATE if handshake else f"refused: {match['message']}",
                "http_status": 0, "bytes_in": 0, "bytes_out": 0, "duration_ms": 0, "termination": ""}
    # HAProxy's own messages ("Proxy door started.", a reload's "Proxy calls stopped (...)"),
    # and anything else: kept as it came, never dropped
    return {"time": _iso(_dt.datetime.now(_dt.timezone.utc).timestamp()), "tier": "event", "team": "-",
            "verified": False, "peer": "-", "method": "-", "status": raw[:2000]}


# --------------------------------------------------------------------------------------
# the shipper (buildkit-audit.service)
# --------------------------------------------------------------------------------------
def _writer(path: Path, keep: int, max_bytes: int) -> logging.Logger:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=keep, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("buildkit-ops.audit")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log


def listen(path: Path, group: str) -> socket.socket:
    """The datagram socket HAProxy logs to: 0660, group `group` (HAProxy's workers)."""
    if path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    umask = os.umask(0o117)  # the socket appears 0660, never wider, even for a moment
    try:
        sock.bind(str(path))
    finally:
        os.umask(umask)
    try:
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    except (KeyError, PermissionError):
        pass  # no such group (or not root): the socket stays the owner's alone
    return sock


class Metrics:
    """What the shipper counts as it writes, served on 127.0.0.1 for the front door's
    metrics listener (`/audit/metrics`): calls and refusals per team, and the expiry of
    every certificate in force (read from the installation's CA at each scrape)."""

    # (name, help, labels) of the counters; prometheus-client adds _total
    COUNTERS = (("buildkit_frontdoor_calls", "gRPC calls through the front door by team, method and status (ok or"
                 " failed)", ("team", "method", "status")),
                ("buildkit_frontdoor_refused", "connections the front door refused, by the team the certificate"
                 " claims (- without one) and the reason", ("team", "reason")))

    def __init__(self, state_dir: Path | None = None, trust_level: str = ""):
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self.calls, self.refused = (Counter(name, doc, list(labels), registry=self.registry)
                                    for name, doc, labels in self.COUNTERS)
        if state_dir is not None:
            from ..core import layout as layout_mod
            from ..daemon.cgroups import SliceCollector

            self.registry.register(ExpiryCollector(state_dir, trust_level))
            # the builder's memory, CPU and tasks against its limits, from its slice
            self.registry.register(SliceCollector(layout_mod.production(state_dir, trust_level).slice))

    def count(self, entry: dict[str, Any]) -> None:
        status = entry.get("status", "")
        if status.startswith("refused"):
            self.refused.labels(entry.get("team", "-"), REASONS.get(status, "other")).inc()
        elif entry.get("tier") == "call":
            self.calls.labels(entry.get("team", "-"), entry.get("method", "-"),
                              "ok" if status == "ok" else "failed").inc()


class ExpiryCollector:
    """buildkit_ops_certificate_expiry_timestamp_seconds{certificate="ca" | "server" | "client:TEAM"}."""

    NAME = "buildkit_ops_certificate_expiry_timestamp_seconds"

    def __init__(self, state_dir: Path, trust_level: str = ""):
        self.state_dir = state_dir
        self.trust_level = trust_level

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from ..core import layout as layout_mod
        from . import ca

        family = GaugeMetricFamily(self.NAME, "when each certificate in force expires (the CA, the front door's,"
                                   " each team's soonest)", labels=["certificate"])
        layout = layout_mod.production(self.state_dir, self.trust_level)
        for name, when in sorted(ca.expiries(layout).items()):
            family.add_metric([name], when)
        yield family


def serve(socket_path: Path, file: Path, keep: int, max_bytes: int, group: str = "buildkit",
          metrics_port: int = 0, state_dir: Path | None = None, trust_level: str = "") -> None:
    log = _writer(file, keep, max_bytes)
    sock = listen(socket_path, group)
    metrics = Metrics(state_dir, trust_level)
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    print(f"audit: {socket_path} -> {file} (rotated at {max_bytes} bytes, {keep} kept)"
          + (f"; metrics on 127.0.0.1:{metrics_port}" if metrics_port else ""), flush=True)
    while True:
        data = sock.recv(65536)
        for raw in data.decode("utf-8", "replace").splitlines():
            if raw.strip():
                entry = normalize(raw)
                log.info(json.dumps(entry, separators=(",", ":")))
                metrics.count(entry)


# --------------------------------------------------------------------------------------
# reading it (report.audit)
# --------------------------------------------------------------------------------------
def log_files(path: Path) -> list[Path]:
    """The audit log and its rotated files, oldest first."""
    rotated = sorted((p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
                     key=lambda p: -int(p.suffix[1:]))
    return [*rotated, path] if path.exists() else rotated


def read(path: Path, since: float = 0.0) -> list[dict[str, Any]]:
    """Every entry at or after `since` (epoch seconds), oldest first."""
    out = []
    for part in log_files(path):
        for line in part.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"time": "", "tier": "event", "team": "-", "status": line}
            when = entry.get("time") or ""
            if since and (not when or _dt.datetime.fromisoformat(when).timestamp() < since):
                continue
            out.append(entry)
    return out


def join_refs(entries: list[dict[str, Any]], records: list[dict[str, Any]], slack: float = 2.0) -> int:
    """Mark each Control/Solve call with the build BuildKit's history holds for it
    (`ref`, and `build`: "ok" or its error): the record created closest to the call's
    start, within `slack` seconds. The number of calls joined."""
    def created(rec: dict[str, Any]) -> float:
        at = rec.get("CreatedAt") or {}
        return float(at.get("seconds", 0)) + float(at.get("nanos", 0)) / 1e9

    builds = [(created(r), r) for r in (x.get("record", x) for x in records) if r.get("Ref")]
    joined = 0
    for e in entries:
        if not e.get("method", "").endswith(".Control/Solve") or not e.get("time"):
            continue
        at = _dt.datetime.fromisoformat(e["time"]).timestamp()
        near = min(builds, key=lambda b: abs(b[0] - at), default=None)
        if near and abs(near[0] - at) <= slack:
            e["ref"] = near[1]["Ref"]
            error = near[1].get("error") or {}
            e["build"] = "ok" if not error else str(error.get("message", error))[:500]
            joined += 1
    return joined


def summary(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per team: gRPC calls, refused connections, builds (Control/Solve calls), bytes, the
    last seen; events are not a team's."""
    teams: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = teams.setdefault(e.get("team", "-"), {"calls": 0, "builds": 0, "refused": 0, "failed": 0,
                                                     "bytes_in": 0, "bytes_out": 0, "last": ""})
        if e.get("tier") == "event":
            continue
        if e.get("status", "").startswith("refused"):
            row["refused"] += 1
        elif e.get("tier") == "call":
            row["calls"] += 1
            row["builds"] += e.get("method", "").endswith(".Control/Solve")
            row["failed"] += e.get("status") != "ok"
            row["bytes_in"] += int(e.get("bytes_in") or 0)
            row["bytes_out"] += int(e.get("bytes_out") or 0)
        row["last"] = max(row["last"], e.get("time", ""))
    return teams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runbook_checks.production.auditlog")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="receive HAProxy's lines on a datagram socket, write the audit log")
    s.add_argument("--socket", required=True, type=Path)
    s.add_argument("--file", required=True, type=Path)
    s.add_argument("--keep", type=int, default=10)
    s.add_argument("--max-bytes", type=int, default=50_000_000)
    s.add_argument("--group", default="buildkit")
    s.add_argument("--metrics-port", type=int, default=0, help="serve the counts on 127.0.0.1:PORT; 0: none")
    s.add_argument("--state-dir", type=Path, help="the installation whose certificates' expiry to serve")
    s.add_argument("--trust-level", default="", help="its builder, when the host has one per trust level")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.socket, args.file, args.keep, args.max_bytes, args.group, args.metrics_port, args.state_dir,
          args.trust_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
