"""The cache runbook's proofs that a backend works: export a new build's cache from one
builder, rebuild it on fresh builders (empty roots) importing it, every step CACHED; and
cache mounts (RUN --mount=type=cache) with their sharing modes, measured."""

from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path

from ..core.errors import CacheError, KitError
from ..core.layout import Layout
from ..core.params import Semantics
from ..core.results import Outcome
from ..daemon.buildctl import Buildctl, BuildResult
from ..daemon.fresh import fresh_builder
from .backends import CacheBackend, backend_for
from .images import base_ref


# --------------------------------------------------------------------------------------
# the proof: export from one builder, import into a fresh one
# --------------------------------------------------------------------------------------
PROOF_DOCKERFILE = """FROM {base}
ARG NONCE
RUN echo "$NONCE" > /nonce && echo "cache proof" > /etc/motd
RUN mkdir -p /app && for i in 1 2 3; do echo "line $i $(cat /nonce)" >> /app/data; done
COPY input.txt /app/input.txt
RUN wc -l /app/data /app/input.txt > /app/count && sha256sum /app/* > /app/sums
"""


def proof_context(dest: Path, base: str, nonce: str = "") -> tuple[Path, dict[str, str]]:
    """A small multi-step build FROM `base`; a new nonce makes every step new to any cache."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_text(PROOF_DOCKERFILE.format(base=base))
    (dest / "input.txt").write_text("cache proof input\n")
    return dest, {"NONCE": nonce or uuid.uuid4().hex}


# "[2/5] RUN ...", "[stage-1 3/4] COPY ...": the Dockerfile's own instructions.
DOCKERFILE_STEP = re.compile(r"^\[(?:[\w.-]+ )?\d+/\d+\] (?P<instruction>[A-Z]+)\b")


def work_steps(result: BuildResult) -> list[dict]:
    """The Dockerfile instructions that do work (RUN, COPY, ADD, ...). FROM is left out:
    a builder resolves the base image's metadata, and pulls its layers only for a step
    that has to run; the cache's vertices ("importing cache manifest ...") are not steps."""
    steps = []
    for v in result.vertices:
        match = DOCKERFILE_STEP.match(v["name"])
        if match and match.group("instruction") != "FROM":
            steps.append(v)
    return steps


def uncached(result: BuildResult) -> list[str]:
    return [v["name"] for v in work_steps(result) if not v.get("cached")]


def export_cache(layout: Layout, backend: CacheBackend, context: Path, build_args: dict[str, str]) -> BuildResult:
    """Build on `layout`'s daemon and export its cache to the backend."""
    try:
        return Buildctl.for_layout(layout).build(context, build_args=build_args, output=backend.output_option(),
                                                 export_cache=[backend.export_option()])
    except KitError as exc:
        raise CacheError(f"the build exporting its cache to {backend} failed: {exc.problem}",
                         "check that the backend is reachable (registry: its /v2/ answers; local: the directory"
                         " is writable), or set cache_ignore_error=true to keep builds going") from None


def import_and_rebuild(layout: Layout, backend: CacheBackend, context: Path, build_args: dict[str, str]) -> BuildResult:
    """Build on `layout`'s daemon importing the backend's cache; every step must be CACHED."""
    try:
        result = Buildctl.for_layout(layout).build(context, build_args=build_args,
                                                   import_cache=[backend.import_option()])
    except KitError as exc:
        raise CacheError(f"the build importing the cache from {backend} failed: {exc.problem}",
                         "check that the backend is reachable from this builder") from None
    missed = uncached(result)
    if missed:
        raise CacheError(f"the builder importing from {backend} re-ran {len(missed)} of"
                         f" {len(work_steps(result))} steps: {missed}",
                         "export with cache_mode=max (min keeps only the final image's layers), and check that"
                         " the export step reported no ignored error")
    return result


def prove_fresh_import(source: Layout, fresh: Layout, backend: CacheBackend, base: str) -> Outcome:
    """Export a new build's cache from `source`, then rebuild it on `fresh` (a builder that
    never ran it) importing the cache: every step CACHED."""
    with tempfile.TemporaryDirectory(prefix="bk-cache-") as tmp:
        ctx, args = proof_context(Path(tmp), base)
        first = export_cache(source, backend, ctx, args)
        if not uncached(first):
            raise CacheError("the exporting build was already all CACHED, so it proves nothing",
                             "this is a kit bug (the nonce should make it new): report it")
        second = import_and_rebuild(fresh, backend, ctx, args)
    total = len(work_steps(second))
    if total < 4:
        raise CacheError(f"the proof build has {total} steps, expected 4", "this is a kit bug: report it")
    return Outcome.ok(f"{backend.kind} cache: built {len(work_steps(first))} steps in {first.seconds:.1f}s on"
                      f" {source.state_dir}; fresh builder {fresh.state_dir} rebuilt {total}/{total} CACHED"
                      f" in {second.seconds:.1f}s",
                      cache_backend=backend.kind, cache_export=backend.export_option(),
                      export_seconds=first.seconds, import_seconds=second.seconds,
                      cached_steps=total, total_steps=total)


# --------------------------------------------------------------------------------------
# sharing: several builders import one remote cache at once
# --------------------------------------------------------------------------------------
def prove_shared(source: Layout, builders: list[Layout], backend: CacheBackend, base: str) -> Outcome:
    """Export a new build's cache from `source`; every builder in `builders` (fresh, empty
    roots) imports it at the same time and rebuilds with every step CACHED."""
    from concurrent.futures import ThreadPoolExecutor

    with tempfile.TemporaryDirectory(prefix="bk-share-") as tmp:
        ctx, args = proof_context(Path(tmp), base)
        first = export_cache(source, backend, ctx, args)
        with ThreadPoolExecutor(len(builders)) as pool:
            results = list(pool.map(lambda b: import_and_rebuild(b, backend, ctx, args), builders))
    total = len(work_steps(results[0]))
    times = ", ".join(f"{r.seconds:.1f}s" for r in results)
    return Outcome.ok(f"{len(builders)} fresh builders imported {backend} at once:"
                      f" {total}/{total} steps CACHED on each ({times}; the exporting build took {first.seconds:.1f}s)",
                      shared_builders=len(builders), shared_import_seconds=[r.seconds for r in results])


def prove_sharing_with_fresh_builders(layout: Layout, params: Semantics, apply: bool, count: int = 2) -> Outcome:
    """Two fresh builders share this daemon's remote cache (check mode runs no build)."""
    from contextlib import ExitStack

    backend = backend_for(params, layout).proof()
    if not apply:
        return Outcome.skipped(f"check mode runs no build; apply starts {count} fresh builders that import"
                               f" {backend} at the same time")
    with ExitStack() as stack:
        builders = [stack.enter_context(fresh_builder(layout)) for _ in range(count)]
        return prove_shared(layout, builders, backend, base_ref(params.registry_port))


# --------------------------------------------------------------------------------------
# cache mounts: RUN --mount=type=cache and its sharing modes, measured
# --------------------------------------------------------------------------------------
CACHE_MOUNT_DOCKERFILE = """FROM {base}
ARG NONCE
RUN --mount=type=cache,id={mount_id},target=/var/cache/kit,sharing={sharing} \
    echo "$NONCE" > /nonce && \
    if [ -f /var/cache/kit/package ]; then echo hit > /result; \
    else sleep {work}; head -c 1000000 /dev/urandom > /var/cache/kit/package; echo miss > /result; fi
"""


def _mount_build(layout: Layout, base: str, mount_id: str, sharing: str, work: float, out: Path) -> tuple[str, float]:
    """One build whose RUN step finds its 'package' in the cache mount (hit) or makes it
    (miss, `work` seconds); returns (hit|miss, seconds)."""
    ctx = out / "ctx"
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(CACHE_MOUNT_DOCKERFILE.format(base=base, mount_id=mount_id, sharing=sharing,
                                                                   work=work))
    result = Buildctl.for_layout(layout).build(ctx, build_args={"NONCE": uuid.uuid4().hex},
                                               output=f"type=local,dest={out / 'rootfs'}")
    return (out / "rootfs" / "result").read_text().strip(), result.seconds


def measure_cache_mounts(layout: Layout, base: str, work: float = 2.0) -> dict:
    """What a cache mount saves, and what each sharing mode does with two builds at once.
    Every build's RUN step is new to the layer cache (a nonce), so only the mount helps."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bk-mount-") as tmp:
        root = Path(tmp)
        cold = _mount_build(layout, base, f"kit-{run}-seq", "locked", work, root / "cold")
        warm = _mount_build(layout, base, f"kit-{run}-seq", "locked", work, root / "warm")
        modes = {}
        for sharing in ("shared", "private", "locked"):
            start = time.monotonic()
            with ThreadPoolExecutor(2) as pool:
                pair = list(pool.map(lambda i: _mount_build(layout, base, f"kit-{run}-{sharing}", sharing, work,
                                                            root / f"{sharing}{i}"), range(2)))
            modes[sharing] = {"results": sorted(r for r, _ in pair), "wall_seconds": round(time.monotonic() - start, 2)}
    return {"cold": {"result": cold[0], "seconds": cold[1]}, "warm": {"result": warm[0], "seconds": warm[1]},
            "concurrent": modes, "work_seconds": work}


def show_cache_mounts(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    """The cache-mount demonstration as a runbook step (check mode runs no build)."""
    if not apply:
        return Outcome.skipped("check mode runs no build; apply measures RUN --mount=type=cache with each sharing mode")
    m = measure_cache_mounts(layout, base_ref(params.registry_port))
    if m["cold"]["result"] != "miss" or m["warm"]["result"] != "hit":
        raise CacheError(f"the cache mount did not keep its content between builds: {m}",
                         "look for a GC rule that prunes exec.cachemount records at once")
    lines = [f"{mode}: two builds at once → {', '.join(v['results'])} in {v['wall_seconds']:.1f}s"
             for mode, v in m["concurrent"].items()]
    return Outcome.ok(f"cache mount: cold {m['cold']['seconds']:.1f}s (miss), next build {m['warm']['seconds']:.1f}s"
                      f" (hit, its layer cache missed); " + "; ".join(lines), cache_mounts=m)


# --------------------------------------------------------------------------------------
# the cache runbook's steps
# --------------------------------------------------------------------------------------
def select_backend(params: Semantics, layout: Layout) -> Outcome:
    """Validate the cache parameters and show the options buildctl will get."""
    backend = backend_for(params, layout)
    shown = f"--export-cache {backend.export_option()} --import-cache {backend.import_option()}"
    if backend.output_option():
        shown += f" --output {backend.output_option()}"
    return Outcome.ok(shown, cache_backend=backend.kind, cache_target=backend.target,
                      cache_export=backend.export_option(), cache_import=backend.import_option())


def ensure_backend(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    """Before any build: the backend answers. s3: the bucket exists (created on apply)
    and the credentials file is accepted; registry: /v2/ answers; local: the directory
    can be written."""
    return backend_for(params, layout).ensure(params, apply)


def prove_with_fresh_builder(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    """Export a new build's cache from this daemon to the selected backend, start a fresh
    builder (empty root), import the cache there and rebuild: every step CACHED. The build
    is FROM the local registry's busybox base. Check mode runs no build."""
    backend = backend_for(params, layout).proof()
    if not apply:
        return Outcome.skipped(f"check mode runs no build; apply exports to {backend} and rebuilds on a fresh builder"
                               " importing it")
    with fresh_builder(layout) as fresh:
        return prove_fresh_import(layout, fresh, backend, base_ref(params.registry_port))
