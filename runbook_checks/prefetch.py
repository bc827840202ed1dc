"""Everything the kit builds once per version into its cache outside the checkout
(daemon.install.cached_build), made ahead of need: BuildKit, the S3 server, bbolt, syft,
buildx, the rehearsal hosts' root filesystem and, with --cluster, the local Kubernetes.

`python -m runbook_checks.prefetch --background [--cluster] [--buildkit VERSION ...]` is
what the test suite starts while its first layers run; each item waits for (or finds) what
another process is making, so a test that needs it first simply waits its turn."""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

from .cache import s3
from .daemon import install, recovery
from .fleet import binaries
from .plugins import buildx
from .production import hosts
from .scanning import sbom


def items(buildkit_versions: tuple[str, ...] = (), cluster: bool = False) -> list[tuple[str, Callable[[], object]]]:
    """(what, make) in the order a test run first needs them."""
    found: list[tuple[str, Callable[[], object]]] = [
        (f"BuildKit {install.BUILDKIT_VERSION}", lambda: install.built_with_go(install.BUILDKIT_VERSION)),
        (f"versitygw {s3.VERSITYGW_VERSION}", s3.built_binary),
        (f"bbolt {recovery.BBOLT_VERSION}", recovery.bbolt),
        (f"syft {sbom.SYFT_VERSION}", sbom.syft_binary),
        (f"buildx {buildx.BUILDX_VERSION}", buildx.from_go),
        *[(f"BuildKit {v}", lambda v=v: install.built_with_go(v)) for v in buildkit_versions],
        ("the rehearsal hosts' root filesystem", lambda: hosts.base_tarball(progress=lambda m: None)),
    ]
    if cluster:
        found.append((f"Kubernetes {binaries.KUBERNETES_VERSION}, etcd and metrics-server", binaries.programs))
    return found


def lowest_priority() -> None:
    """Yield the CPU to everything else: nice 19 for this process, and for its autogroup
    (with the kernel's autogroup scheduling on, a process in its own session competes as a
    group, and only the group's nice value holds it back)."""
    os.nice(19)
    try:
        with open("/proc/self/autogroup", "w") as group:
            group.write("19")
    except OSError:
        pass  # no autogroup scheduling on this kernel: the process's own nice value is enough


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--background", action="store_true", help="run at the lowest CPU priority")
    parser.add_argument("--cluster", action="store_true", help="the local Kubernetes too (about 15 minutes cold)")
    parser.add_argument("--buildkit", action="append", default=[], help="another BuildKit version to build")
    args = parser.parse_args(argv)
    if args.background:
        lowest_priority()
    failed = 0
    for what, make in items(tuple(args.buildkit), args.cluster):
        start = time.monotonic()
        try:
            make()
        except Exception as error:  # noqa: BLE001 - the next item is still worth making; whoever needs this one retries
            failed += 1
            print(f"prefetch: {what} failed: {error}", flush=True)
            continue
        print(f"prefetch: {what} ready ({time.monotonic() - start:.0f}s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
