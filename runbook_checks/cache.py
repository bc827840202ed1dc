"""Remote build cache backends for buildctl: the `--export-cache` / `--import-cache`
options of the local-directory, registry and inline backends (mode, compression,
ignore-error), validated before any build; and the proof that a cache works: export
from one builder, import into a fresh one, every step CACHED."""

from __future__ import annotations

import re
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layout as layout_mod
from .buildctl import Buildctl, BuildResult
from .errors import KitError, ParameterError
from .layout import Layout
from .params import IMAGE_REF, Semantics
from .results import Outcome

BACKENDS = ("local", "registry", "inline", "s3")
MODES = ("min", "max")
COMPRESSIONS = ("gzip", "zstd")



class CacheError(KitError):
    """A cache export or import failed, or did not give the builds it should."""


@dataclass(frozen=True)
class CacheBackend:
    """Where a build's cache goes and how: `target` is a directory (local), an image
    reference (registry: the cache manifest's ref; inline: the image that carries it) or
    a bucket (s3, with `prefix` and the server's `endpoint`; the credentials come from
    buildkitd's environment, never from here)."""

    kind: str
    target: str
    mode: str = "max"
    compression: str = "gzip"
    ignore_error: bool = False
    prefix: str = ""
    endpoint: str = ""
    region: str = "us-east-1"

    def __post_init__(self) -> None:
        validate(self)

    def export_option(self) -> str:
        """The value of `buildctl build --export-cache`."""
        if self.kind == "inline":
            return "type=inline" + (",ignore-error=true" if self.ignore_error else "")
        where = {"local": f"dest={self.target}", "registry": f"ref={self.target}", "s3": self._s3_where()}[self.kind]
        attrs = [f"type={self.kind}", where, f"mode={self.mode}", f"compression={self.compression}"]
        if self.compression == "zstd":
            attrs.append("force-compression=true")  # layers already in gzip are recompressed too
        if self.ignore_error:
            attrs.append("ignore-error=true")
        return ",".join(attrs)

    def import_option(self) -> str:
        """The value of `buildctl build --import-cache` (inline cache is read from the image)."""
        if self.kind == "local":
            return f"type=local,src={self.target}"
        if self.kind == "s3":
            return f"type=s3,{self._s3_where()}"
        return f"type=registry,ref={self.target}"

    def _s3_where(self) -> str:
        attrs = [f"bucket={self.target}", f"region={self.region}", "name=kit"]
        if self.prefix:
            attrs.append(f"prefix={self.prefix.rstrip('/')}/")
        if self.endpoint:
            attrs += [f"endpoint_url={self.endpoint}", "use_path_style=true"]
        return ",".join(attrs)

    def output_option(self) -> str:
        """The build's `--output`: the inline backend needs the image pushed (its cache
        rides in the image config); the others discard the result."""
        if self.kind == "inline":
            return f"type=image,name={self.target},push=true,compression={self.compression}"
        return ""


def validate(backend: CacheBackend) -> None:
    """Clear errors, naming the parameter, before any build runs."""
    if backend.kind not in BACKENDS:
        raise ParameterError(f"cache_backend: {backend.kind!r} is not a cache backend",
                             f"use one of: {', '.join(BACKENDS)}")
    if backend.mode not in MODES:
        raise ParameterError(f"cache_mode: {backend.mode!r} is not a cache mode",
                             "use min (the final image's layers) or max (every intermediate step)")
    if backend.compression not in COMPRESSIONS:
        raise ParameterError(f"cache_compression: {backend.compression!r} is not a compression",
                             f"use one of: {', '.join(COMPRESSIONS)}")
    if backend.kind == "local":
        if not backend.target or not Path(backend.target).is_absolute():
            raise ParameterError(f"cache_dir: {backend.target!r} is not an absolute directory",
                                 "give the local cache an absolute path, e.g. /var/cache/buildkit-export")
        if "," in backend.target:
            raise ParameterError(f"cache_dir: {backend.target!r} contains a comma",
                                 "buildctl splits cache options on commas: choose a path without one")
        return
    if backend.kind == "s3":
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", backend.target or ""):
            raise ParameterError(f"cache_bucket: {backend.target!r} is not an S3 bucket name",
                                 "use 3-63 lowercase letters, digits, dots and hyphens, e.g. buildkit-cache")
        if not re.fullmatch(r"[A-Za-z0-9._/-]*", backend.prefix) or not re.fullmatch(r"(https?://[^,\s]+)?",
                                                                                      backend.endpoint):
            raise ParameterError(f"cache_prefix {backend.prefix!r} or the S3 endpoint {backend.endpoint!r} holds a"
                                 " character buildctl would split on", "use letters, digits, . _ / - only")
        return
    match = IMAGE_REF.match(backend.target or "")
    if not match:
        raise ParameterError(f"cache_ref: {backend.target!r} is not an image reference with a registry host",
                             "write it as HOST[:PORT]/PATH[:TAG], e.g. 127.0.0.1:15000/kit/cache:main")
    if backend.kind == "inline" and backend.mode == "max":
        raise ParameterError("cache_mode: max is not possible with the inline backend (the image carries only"
                             " the cache of its own layers)",
                             "use cache_mode=min with inline, or the registry backend for mode=max")


def backend_from_params(p: dict, layout: Layout) -> CacheBackend:
    """The backend a runbook's parameters select. Empty cache_ref: the local registry's
    kit/cache:<backend> (needs registry_port); empty cache_dir: <state_dir>/cache-export;
    s3: cache_bucket/cache_prefix on s3_endpoint, or on the lab's S3 server (s3_port)."""
    kind = p.get("cache_backend", "registry")
    common = dict(mode=p.get("cache_mode", "max"), compression=p.get("cache_compression", "gzip"),
                  ignore_error=p.get("cache_ignore_error", False))
    if kind == "local":
        return CacheBackend(kind, p.get("cache_dir") or str(layout.state_dir / "cache-export"), **common)
    if kind == "s3":
        from .s3 import store_for

        store = store_for(layout, p)
        if store is None:
            raise ParameterError("cache_backend=s3 needs s3_endpoint (an organisation's object store) or s3_port"
                                 " (the lab's S3 server)",
                                 "set s3_port (lab: 19000, and apply install and configure so the server runs),"
                                 " or s3_endpoint=https://... with s3_credentials_file")
        return CacheBackend(kind, p.get("cache_bucket", "buildkit-cache"), prefix=p.get("cache_prefix", ""),
                            endpoint=store.url, region=store.region, **common)
    target = p.get("cache_ref") or ""
    if not target:
        if not p.get("registry_port"):
            raise ParameterError(f"cache_backend={kind} needs cache_ref, or registry_port for the local registry",
                                 "set cache_ref=HOST[:PORT]/PATH[:TAG], or registry_port (lab: 15000)")
        target = f"127.0.0.1:{p['registry_port']}/kit/cache:{kind}"
    return CacheBackend(kind, target, **common)


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
        raise CacheError(f"the build exporting its cache to {backend.kind} {backend.target} failed: {exc.problem}",
                         "check that the backend is reachable (registry: its /v2/ answers; local: the directory"
                         " is writable), or set cache_ignore_error=true to keep builds going") from None


def import_and_rebuild(layout: Layout, backend: CacheBackend, context: Path, build_args: dict[str, str]) -> BuildResult:
    """Build on `layout`'s daemon importing the backend's cache; every step must be CACHED."""
    try:
        result = Buildctl.for_layout(layout).build(context, build_args=build_args,
                                                   import_cache=[backend.import_option()])
    except KitError as exc:
        raise CacheError(f"the build importing the cache from {backend.kind} {backend.target} failed: {exc.problem}",
                         "check that the backend is reachable from this builder") from None
    missed = uncached(result)
    if missed:
        raise CacheError(f"the builder importing from {backend.kind} {backend.target} re-ran {len(missed)} of"
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
    return Outcome.ok(f"{len(builders)} fresh builders imported {backend.kind} {backend.target} at once:"
                      f" {total}/{total} steps CACHED on each ({times}; the exporting build took {first.seconds:.1f}s)",
                      shared_builders=len(builders), shared_import_seconds=[r.seconds for r in results])


def prove_sharing_with_fresh_builders(layout: Layout, params: Semantics, apply: bool, count: int = 2) -> Outcome:
    """Two fresh builders share this daemon's remote cache (check mode runs no build)."""
    from contextlib import ExitStack

    from .images import base_ref
    backend = proof_backend(backend_for(params, layout))
    if not apply:
        return Outcome.skipped(f"check mode runs no build; apply starts {count} fresh builders that import"
                               f" {backend.kind} {backend.target} at the same time")
    with ExitStack() as stack:
        builders = [stack.enter_context(fresh_builder(layout, params)) for _ in range(count)]
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
    from .images import base_ref

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
def proof_backend(backend: CacheBackend) -> CacheBackend:
    """Where the proofs export: beside the operator's cache, never over it (a tag
    `kit-proof` in the same repository, a `kit-proof` prefix or subdirectory), so proving
    a backend leaves the team's cache as it was."""
    from dataclasses import replace

    if backend.kind in ("registry", "inline"):
        match = IMAGE_REF.match(backend.target)
        repository = backend.target[:match.start("tag") - 1] if match and match.group("tag") else backend.target
        return replace(backend, target=f"{repository}:kit-proof")
    if backend.kind == "s3":
        return replace(backend, prefix=f"{backend.prefix.rstrip('/')}/kit-proof" if backend.prefix else "kit-proof")
    return replace(backend, target=str(Path(backend.target) / "kit-proof"))


def backend_for(params: Semantics, layout: Layout) -> CacheBackend:
    """The backend a runbook's validated parameters select."""
    return backend_from_params(params.model_dump(), layout)


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
    backend = backend_for(params, layout)
    if backend.kind == "s3":
        from .s3 import store_for

        return store_for(layout, params.model_dump()).ensure_bucket(backend.target, apply)
    if backend.kind == "local":
        from . import files

        files.writable_dir(Path(backend.target))
        return Outcome.ok(f"{backend.target} is writable")
    from . import programs

    host = backend.target.split("/", 1)[0]
    tls = params.registry_tls.get(host)
    # as buildkitd will: plain HTTP to the lab's registry and to loopback hosts without a
    # registry_tls entry, HTTPS (with that entry's CA) to the rest; 401 means "log in", so it answers
    plain = not tls and (host == f"127.0.0.1:{params.registry_port}" or host.split(":")[0] in ("127.0.0.1", "localhost"))
    url = f"{'http' if plain else 'https'}://{host}/v2/"
    if not programs.answers(url, timeout=5, cafile=tls.ca if tls else "", also=(401,)):
        raise CacheError(f"the registry {host} does not answer {url}",
                         "start it (the lab's: apply configure with registry_port set), fix cache_ref, or give"
                         " its CA in registry_tls")
    return Outcome.ok(f"the registry {host} answers {url}")


@contextmanager
def fresh_builder(source: Layout, params: Any = None, timeout: float = 60):
    """A new buildkitd with an empty root in a temporary state directory, on the source
    layout's binaries (linked, not copied), under its own supervisord; stopped and
    removed on exit. With the source's `params`, it gets the environment the services
    beside the source ask buildkitd to have (e.g. the S3 credentials file)."""
    from . import service, stack
    from .config import BuildkitdConfig, write_config
    from .programs import daemon_environment, wanted

    daemon_env = daemon_environment(wanted(source, params)) if params is not None else None

    state = Path(tempfile.mkdtemp(prefix="bkfresh-", dir="/tmp"))
    try:
        fresh = layout_mod.for_params({"profile": "ci", "state_dir": str(state)})
        fresh.bin_dir.mkdir(parents=True)
        for binary in sorted(source.bin_dir.iterdir()):
            if binary.is_file():
                (fresh.bin_dir / binary.name).symlink_to(binary.resolve())
        desired = BuildkitdConfig.from_params({"profile": "ci"}, fresh, service.free_port())
        write_config(fresh, desired, apply=True)
        service.write_service_definition(fresh, "supervisor", service.Limits(), "", apply=True, daemon_env=daemon_env)
        manager = service.Supervisor(fresh)
        manager.start()
        service.wait_ready(fresh, manager, timeout)
        yield fresh
    finally:
        stack.down(purge=True, state_dir=str(state), profile="ci")


def prove_with_fresh_builder(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    """Export a new build's cache from this daemon to the selected backend, start a fresh
    builder (empty root), import the cache there and rebuild: every step CACHED. The build
    is FROM the local registry's busybox base. Check mode runs no build."""
    from .images import base_ref

    backend = proof_backend(backend_for(params, layout))
    if not apply:
        return Outcome.skipped(f"check mode runs no build; apply exports to {backend.kind} {backend.target}"
                               f"{'/' + backend.prefix if backend.prefix else ''} and rebuilds on a fresh builder"
                               " importing it")
    with fresh_builder(layout, params) as fresh:
        return prove_fresh_import(layout, fresh, backend, base_ref(params.registry_port))
