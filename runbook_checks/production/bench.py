"""What the front door costs, measured on a rehearsal host (`invoke bench.frontdoor`):

- the same warm, all-cached build, alternately on buildkitd's unix socket and through the
  front door (mutual TLS, both tiers, the audit log) at remote_address, both from inside
  the host, so the difference is the front door's alone; the median of each;
- from `certs.issue` to that team's first successful build from this side.

Targets: the front door within 10% or 50 ms of the socket (whichever is larger); from a new
certificate to the first build under 60 s."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..core.errors import KitError
from ..core.layout import Layout
from ..daemon.buildctl import Buildctl
from ..daemon.contexts import context_with_base
from . import access, ca

ROUNDS = 10
DOCKERFILE = "RUN echo measured > /m\nRUN wc -c /m > /n\n"
BENCH_TEAM = "kit-bench"
OVERHEAD_SHARE, OVERHEAD_FLOOR_MS, FIRST_BUILD_S = 0.10, 50.0, 60.0


def cached_build(client: Buildctl, ctx: Path) -> float:
    result = client.build(ctx, timeout=300)
    if result.cached_steps != len(result.steps):
        raise KitError(f"a warm build through {client.address} ran {len(result.steps) - result.cached_steps} steps",
                       "the cache is not kept between builds: check the GC policy")
    return result.seconds


def frontdoor_cost(layout: Layout, rounds: int = ROUNDS) -> dict[str, Any]:
    """On the host: `rounds` warm builds on each path, alternating (so drift hits both)."""
    socket = Buildctl.for_layout(layout)
    door = access.client(access.remote(layout), access.probe_paths(layout), layout.buildctl)
    times: dict[str, list[float]] = {"socket": [], "frontdoor": []}
    with tempfile.TemporaryDirectory(prefix="bk-bench-") as tmp:
        ctx = context_with_base(Path(tmp), DOCKERFILE)
        socket.build(ctx, timeout=300)  # warm: every step cached from here on
        for _ in range(rounds):
            times["socket"].append(cached_build(socket, ctx))
            times["frontdoor"].append(cached_build(door, ctx))
    return {"rounds": rounds, "seconds": times,
            "median_s": {k: statistics.median(v) for k, v in times.items()}}


def first_build(layout: Layout, binary: Path, host=None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """From this side: issue a bundle, build with it at once; then revoke it (it was the
    benchmark's, and a day-long certificate in force would set off CertificateExpiresSoon)."""
    remote = access.remote(layout)
    with tempfile.TemporaryDirectory(prefix="bk-first-") as tmp:
        start = time.monotonic()
        bundle_dir = ca.write_bundle(ca.issue(layout, BENCH_TEAM, days=1), Path(tmp) / "bundle")
        issued = time.monotonic() - start
        ctx = context_with_base(Path(tmp) / "ctx", DOCKERFILE)
        client = access.client(remote, bundle_dir, binary)
        try:
            client.build(ctx, timeout=300)
            total = time.monotonic() - start
        finally:
            ca.revoke(layout, BENCH_TEAM)
            access.reload_after_revocation(layout, host)
    say(f"certs.issue to the first build: {total:.2f}s (issue {issued:.2f}s)")
    return {"issue_s": round(issued, 3), "issue_to_first_build_s": round(total, 3)}


def verdict(cost: dict[str, Any], first: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    socket, door = cost["median_s"]["socket"], cost["median_s"]["frontdoor"]
    allowed_ms = max(OVERHEAD_SHARE * socket * 1000, OVERHEAD_FLOOR_MS)
    overhead_ms = (door - socket) * 1000
    summary = {"median_socket_s": round(socket, 4), "median_frontdoor_s": round(door, 4),
               "overhead_ms": round(overhead_ms, 1), "allowed_ms": round(allowed_ms, 1),
               "issue_to_first_build_s": first["issue_to_first_build_s"]}
    misses = []
    if overhead_ms > allowed_ms:
        misses.append(f"the front door adds {overhead_ms:.0f} ms to a warm build, more than {allowed_ms:.0f} ms")
    if first["issue_to_first_build_s"] > FIRST_BUILD_S:
        misses.append(f"from certs.issue to the first build took {first['issue_to_first_build_s']:.0f}s,"
                      f" more than {FIRST_BUILD_S:.0f}s")
    return summary, misses


def main(argv: list[str]) -> int:
    """`python -m runbook_checks.production.bench frontdoor [ROUNDS]`, on the host: JSON."""
    from ..core import layout as layout_mod

    if not argv or argv[0] != "frontdoor":
        print("usage: python -m runbook_checks.production.bench frontdoor [ROUNDS]", file=sys.stderr)
        return 2
    layout = layout_mod.production()
    print(json.dumps(frontdoor_cost(layout, int(argv[1]) if len(argv) > 1 else ROUNDS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
