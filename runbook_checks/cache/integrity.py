"""Is a remote cache whole? A cache manifest that names blobs its backend no longer holds
(blobs removed by hand or by a collector, a store restored from an old backup) makes
every build that imports it fail or fall back to building cold. An interrupted export
leaves no such manifest: BuildKit writes the blobs first and the manifest last, so the
cache is complete or cleanly absent (the drills check exactly that)."""

from __future__ import annotations

import json

from ..core import files
from ..core.errors import ParameterError
from ..core.layout import Layout
from ..core.params import Semantics
from ..core.results import Outcome
from .backends import backend_for, referenced_blobs


def remote_cache_sound(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    """The configured cache's manifest names only blobs the backend holds; else (apply)
    copy the manifest into the backup directory and remove it, so the next export (the
    cache-warm runbook) writes a whole one."""
    if params.cache_backend == "none":
        return Outcome.skipped("cache_backend is none: no remote cache to check")
    try:
        backend = backend_for(params, layout)
    except ParameterError as exc:  # e.g. production without cache_ref: no cache is configured
        return Outcome.skipped(f"no remote cache to check: {exc.problem}")
    manifest = backend.manifest()
    if manifest is None:
        return Outcome.ok(f"{backend} has no cache manifest: nothing to check (the next export writes one)")
    named = referenced_blobs(manifest)
    missing = backend.missing_blobs(manifest)
    if not missing:
        return Outcome.ok(f"{backend}: its manifest names {len(named)} blobs and the backend holds each one",
                          cache_blobs=len(named))
    said = f"{backend}: its manifest names {len(missing)} of {len(named)} blobs the backend does not hold" \
           f" ({', '.join(d[:19] for d in missing[:3])}{'...' if len(missing) > 3 else ''})"
    if not apply:
        return Outcome.changed(f"{said}; would copy the manifest into {layout.backup_dir} and remove it (then re-warm:"
                               " the cache-warm runbook)", missing_blobs=missing)
    copy = layout.backup_dir / f"cache-manifest-{backend.kind}-{files.stamp()}.json"
    files.atomic_write(copy, json.dumps(manifest, indent=2) + "\n")
    backend.drop_manifest()
    return Outcome.changed(f"{said}; copied the manifest to {copy} and removed it: builds stop failing on it, and the"
                           " next export (invoke runbook cache-warm --mode apply) writes a whole cache",
                           missing_blobs=missing, manifest_copy=str(copy))
