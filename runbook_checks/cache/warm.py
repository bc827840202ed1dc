"""Cache warming (the cache-warm runbook): build a list of contexts (or stages of them)
and export their cache with mode=max to the selected backend, after seeding the base
images they start from into the local registry; then prove it with a fresh builder (a
new buildkitd with an empty root) that imports the cache and rebuilds every step CACHED.

Each target gets a cache of its own in the backend (a registry tag, an S3 cache name, a
directory), named after the context and stage, so warming several never overwrites one
with another. A second warming reports ok when the backend's cache manifest is the same."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import CacheError, KitError, ParameterError, WarmError
from ..core.layout import Layout
from ..core.params import Semantics
from ..core.paths import PROJECT_ROOT
from ..core.results import Outcome
from ..daemon.buildctl import Buildctl, BuildResult
from ..daemon.fresh import fresh_builder
from . import images
from .backends import CacheBackend, backend_for
from .proof import uncached, work_steps

STAGE = re.compile(r"^FROM\s+\S+\s+AS\s+(?P<stage>[A-Za-z0-9][A-Za-z0-9_.-]*)\s*$", re.M | re.I)


@dataclass(frozen=True)
class WarmTarget:
    """One build to warm: a context directory with a Dockerfile, and optionally a stage."""

    spec: str
    context: Path
    stage: str = ""

    @property
    def name(self) -> str:
        """The cache's name in the backend: context directory and stage, tag-safe."""
        raw = self.context.name + (f"-{self.stage}" if self.stage else "")
        return re.sub(r"[^a-z0-9_.-]+", "-", raw.lower()).strip(".-")[:100] or "context"

    @property
    def dockerfile(self) -> Path:
        return self.context / "Dockerfile"

    @property
    def opts(self) -> dict[str, str]:
        """The frontend options of its build: the stage to stop at, if any."""
        return {"target": self.stage} if self.stage else {}

    def bases(self) -> list[str]:
        return images.bases_of(self.dockerfile)


def parse_target(spec: str, root: Path = PROJECT_ROOT) -> WarmTarget:
    """DIR or DIR#STAGE; DIR relative to the checkout or absolute. Errors name the entry."""
    path_part, _, stage = spec.partition("#")
    context = Path(path_part) if Path(path_part).is_absolute() else root / path_part
    if not path_part or not context.is_dir():
        raise ParameterError(f"warm_contexts: {spec!r} is not a directory", "give a build context's directory, relative"
                             " to the checkout (e.g. workloads/small) or absolute, optionally #STAGE")
    target = WarmTarget(spec, context, stage)
    if not target.dockerfile.is_file():
        raise ParameterError(f"warm_contexts: {context} has no Dockerfile", "point the entry at a build context")
    if stage and stage not in STAGE.findall(target.dockerfile.read_text()):
        raise ParameterError(f"warm_contexts: {spec!r}: the Dockerfile has no stage {stage!r}",
                             f"use one of its stages: {', '.join(STAGE.findall(target.dockerfile.read_text())) or 'none'}")
    return target


def targets(params: Semantics) -> list[WarmTarget]:
    specs = list(params.warm_contexts)
    if not specs:
        raise ParameterError("warm_contexts is empty: there is nothing to warm",
                             "list build contexts, e.g. warm_contexts=workloads/small,workloads/go-app")
    return [parse_target(spec) for spec in specs]


def warm_backend(params: Semantics, layout: Layout) -> CacheBackend:
    backend = backend_for(params, layout)
    if backend.mode != "max":  # inline cannot carry mode=max at all
        raise ParameterError(f"cache_backend={backend.kind} with cache_mode={backend.mode}: warming exports every"
                             " intermediate step (mode=max)",
                             "use cache_mode=max with the registry, s3 or local backend")
    return backend


# --------------------------------------------------------------------------------------
# the runbook's steps
# --------------------------------------------------------------------------------------
def select_targets(params: Semantics, layout: Layout) -> Outcome:
    """Validate the targets and the backend; show where each one's cache goes."""
    base = warm_backend(params, layout)
    lines = [f"{t.spec}: --export-cache {base.for_context(t.name).export_option()}" for t in targets(params)]
    return Outcome("ok", f"{len(lines)} target(s) to {base.kind}", "\n".join(lines),
                   facts={"warm_targets": len(lines), "cache_backend": base.kind})


def seed_bases(layout: Layout, params: Semantics, apply: bool, progress=print) -> Outcome:
    """Every base image the targets start FROM ${BASE_REGISTRY}/kit/..., in the local
    registry: busybox-static and the debootstrap Debian base (made once, then kept)."""
    seeders = images.seeders(layout, params.registry_port, apply, progress)
    needed = sorted({b for t in targets(params) for b in t.bases()})
    unknown = [b for b in needed if b not in seeders]
    if unknown:
        raise WarmError(f"the targets start FROM {', '.join(unknown)}, which the kit does not make",
                        f"start them FROM one of: {', '.join('${BASE_REGISTRY}/' + s for s in seeders)}")
    if not needed:
        return Outcome.ok("the targets need no base image from the local registry")
    outcomes = [seeders[b]() for b in needed]
    text = "; ".join(o.message for o in outcomes)
    if any(o.status == "changed" for o in outcomes):
        return Outcome.changed(text, bases=needed)
    return Outcome.ok(text, bases=needed)


def build_args(params: Semantics) -> dict[str, str]:
    return {"BASE_REGISTRY": f"127.0.0.1:{params.registry_port}"} if params.registry_port else {}


def warm(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    """Build each target on this daemon and export its cache (mode=max); ok when every
    backend's cache is what it was (nothing new), changed otherwise. Check mode builds
    nothing and says which targets have no cache yet."""
    base = warm_backend(params, layout)
    chosen = targets(params)
    if not apply:
        found = {t.spec: base.for_context(t.name).fingerprint() for t in chosen}
        missing = [spec for spec, mark in found.items() if mark == ""]
        unknown = [spec for spec, mark in found.items() if mark is None]
        if missing or unknown:
            return Outcome.changed(f"would build and export {len(chosen)} target(s)"
                                   + (f"; no cache yet for: {', '.join(missing)}" if missing else "")
                                   + (f"; cannot read the cache of: {', '.join(unknown)} (not a registry on"
                                      " 127.0.0.1)" if unknown else ""))
        return Outcome.ok(f"every target has a cache in {base.kind}; whether each holds every step (mode=max) is"
                          " not read here: apply exports mode=max again (ok when nothing changed) and proves it on"
                          " a fresh builder")
    lines, changed, facts = [], 0, {"warm_steps": 0, "warm_ran": 0, "warm_seconds": 0.0}
    for t in chosen:
        backend = base.for_context(t.name)
        before = backend.fingerprint()
        try:
            result = Buildctl.for_layout(layout).build(t.context, build_args=build_args(params), opts=t.opts,
                                                       export_cache=[backend.export_option()], timeout=1800)
        except KitError as exc:
            raise WarmError(f"warming {t.spec} failed: {exc.problem}", exc.fix) from None
        after = backend.fingerprint()
        if after == "":
            raise WarmError(f"{t.spec} built, but {backend} holds no cache after the export",
                            "check the backend (and that cache_ignore_error is false, so an export error shows)")
        ran = len(uncached(result))
        changed += after is None or after != before  # a cache the kit cannot read counts as changed
        facts["warm_steps"] += len(work_steps(result))
        facts["warm_ran"] += ran
        facts["warm_seconds"] += result.seconds
        lines.append(f"{t.spec}: {len(work_steps(result))} steps ({ran} ran) in {result.seconds:.1f}s →"
                     f" {backend}"
                     f" {'unchanged' if after is not None and after == before else 'updated'}")
    if changed:
        return Outcome.changed(f"exported {changed} of {len(chosen)} cache(s)", "\n".join(lines), **facts)
    return Outcome("ok", f"{len(chosen)} cache(s) already warm", "\n".join(lines), facts=facts)


def rebuild_all_cached(fresh: Layout, params: Semantics, backend: CacheBackend, target: WarmTarget) -> BuildResult:
    try:
        result = Buildctl.for_layout(fresh).build(target.context, build_args=build_args(params), opts=target.opts,
                                                  import_cache=[backend.import_option()], timeout=1800)
    except KitError as exc:
        raise CacheError(f"the fresh builder's build of {target.spec} importing {backend.kind} failed: {exc.problem}",
                         "check that the backend is reachable from this builder") from None
    missed = uncached(result)
    if missed or not work_steps(result):
        raise CacheError(f"the fresh builder re-ran {len(missed)} of {len(work_steps(result))} steps of {target.spec}:"
                         f" {missed}", "warm again (apply), and check that the export step reported no error")
    return result


def verify_fresh(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    """A fresh builder (new buildkitd, empty root, removed after) imports each target's
    cache and rebuilds it: every step CACHED. Check mode runs no build. The fresh
    builder's state is its own, so this step changes nothing that stays."""
    base = warm_backend(params, layout)
    chosen = targets(params)
    if not apply:
        return Outcome.skipped(f"check mode runs no build; apply rebuilds {len(chosen)} target(s) on a fresh builder"
                               f" importing {base.kind}")
    lines, total, seconds = [], 0, 0.0
    with fresh_builder(layout) as fresh:
        for t in chosen:
            result = rebuild_all_cached(fresh, params, base.for_context(t.name), t)
            n = len(work_steps(result))
            total += n
            seconds += result.seconds
            lines.append(f"{t.spec}: {n}/{n} CACHED in {result.seconds:.1f}s")
    return Outcome("ok", f"a fresh builder rebuilt {len(chosen)} target(s), {total}/{total} steps CACHED",
                   "\n".join(lines), facts={"fresh_cached_steps": total, "fresh_total_steps": total,
                                            "fresh_seconds": round(seconds, 3)})
