"""Cleanup and retention of build cache, local and remote: the `prune` runbook's steps.

- the daemon's own cache: `buildctl prune --keep-duration --keep-storage` from the
  profile, reporting the bytes it freed (measured with `buildctl du` before and after);
- the local registry: cache tags beyond the newest N, or older than D, are deleted and
  the registry garbage-collected;
- the S3 bucket: objects older than D are removed (BuildKit never deletes there).

On a systemd host the prune job of the maintenance schedule runs it (daemon.schedule).
"""

from __future__ import annotations

import datetime as _dt

from ..core.errors import ParameterError, PruneError
from ..core.layout import Layout
from ..core.params import Semantics
from ..core.results import Outcome
from ..daemon.buildctl import Buildctl
from . import registry, s3

# BuildKit's s3 cache re-uploads ("touches") a blob a build still uses once it is older
# than touch_refresh (default 24h); expiring younger objects could break a live cache.
S3_TOUCH_REFRESH = 24 * 3600


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------------------
# the daemon's cache
# --------------------------------------------------------------------------------------
def _total(du: list[dict]) -> int:
    return sum(int(r.get("size") or 0) for r in du)


def when(stamp: str) -> _dt.datetime:
    """buildctl's RFC 3339 time with nanoseconds, as an aware datetime."""
    import re

    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", stamp)
    if not match:
        raise PruneError(f"buildctl reported a time this kit cannot read: {stamp!r}", "report it as a kit bug")
    frac = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return _dt.datetime.fromisoformat(match.group(1) + frac + zone)


def candidates(du: list[dict], keep_duration: int, now: _dt.datetime | None = None) -> list[dict]:
    """Records a prune with this keep-duration may remove: not in use, and unused for
    longer than keep_duration (every unused record when it is 0)."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    out = []
    for rec in du:
        if rec.get("inUse"):
            continue
        last = rec.get("lastUsedAt") or rec.get("createdAt")
        if keep_duration and last and (now - when(last)).total_seconds() < keep_duration:
            continue
        out.append(rec)
    return out


def would_prune(du: list[dict], keep_duration: int, keep_storage: int,
                now: _dt.datetime | None = None) -> list[dict]:
    """What `buildctl prune --keep-duration --keep-storage` would remove, as BuildKit
    decides it: among the eligible records (candidates), the least recently used first,
    until the cache fits keep_storage (all of them when keep_storage is 0)."""
    eligible = sorted(candidates(du, keep_duration, now), key=lambda r: r.get("lastUsedAt") or r.get("createdAt") or "")
    if not keep_storage:
        return eligible
    over = _total(du) - keep_storage
    chosen = []
    for rec in eligible:
        if over <= 0:
            break
        chosen.append(rec)
        over -= int(rec.get("size") or 0)
    return chosen


def prune_local(layout: Layout, keep_duration: int, keep_storage: int, apply: bool) -> Outcome:
    """`buildctl prune --keep-duration S --keep-storage MB`: the bytes freed are the sizes
    of the records buildctl reports it removed. Check mode prunes nothing and says what
    apply would remove."""
    import json

    client = Buildctl.for_layout(layout)
    before = client.disk_usage()
    what = f"keep-duration {keep_duration}s, keep-storage {_mb(keep_storage)}"
    if not apply:
        plan = would_prune(before, keep_duration, keep_storage)
        make = Outcome.changed if plan else Outcome.ok
        return make(f"would remove {len(plan)} records ({_mb(_total(plan))}) under {what}, of {_mb(_total(before))}",
                    cache_bytes=_total(before), eligible_bytes=_total(plan))
    args = ["prune", "--keep-duration", f"{keep_duration}s", "--format", "{{json .}}"]
    if keep_storage:
        args += ["--keep-storage", f"{keep_storage / 1e6:g}"]
    out = client.run(*args, timeout=600).stdout
    removed = [json.loads(line) for line in out.splitlines() if line.strip()]
    freed = _total(removed)
    make = Outcome.changed if removed else Outcome.ok
    return make(f"prune ({what}) removed {len(removed)} records, {_mb(freed)}; {_mb(_total(client.disk_usage()))}"
                " left", reclaimed_bytes=freed, cache_bytes=_total(before) - freed)


# --------------------------------------------------------------------------------------
# the local registry
# --------------------------------------------------------------------------------------
def tag_times(layout: Layout, repository: str) -> dict[str, float]:
    """{tag: when it was last pushed} from the registry's own storage (the kit's local
    registry keeps one `current/link` file per tag; a push rewrites it)."""
    root = registry.tag_dir(layout, repository, "x").parent
    if not root.is_dir():
        return {}
    return {p.name: (p / "current/link").stat().st_mtime for p in root.iterdir() if (p / "current/link").exists()}


def expired_tags(times: dict[str, float], keep_tags: int, max_age: int, now: float) -> list[str]:
    """Tags beyond the newest `keep_tags`, and tags older than `max_age` seconds (0: no limit)."""
    newest_first = sorted(times, key=lambda t: times[t], reverse=True)
    out = set(newest_first[keep_tags:]) if keep_tags else set()
    if max_age:
        out |= {t for t, when in times.items() if now - when > max_age}
    return sorted(out, key=lambda t: times[t])


def registry_retention(layout: Layout, manager, port: int, repositories: list[str], keep_tags: int, max_age: int,
                       apply: bool, now: float | None = None) -> Outcome:
    """Untag expired cache tags (only those: another tag of the same digest stays), then
    garbage-collect the registry, on every apply: blobs that earlier deletes or
    benchmarks left are reclaimed too."""
    import time

    if not port:
        return Outcome.skipped("registry_port is 0: no local registry")
    now = now or time.time()
    doomed = [(repo, tag) for repo in repositories for tag in expired_tags(tag_times(layout, repo), keep_tags,
                                                                          max_age, now)]
    listing = [f"{repo}:{tag}" for repo, tag in doomed]
    rule = f"keep the newest {keep_tags} tags" + (f", none older than {max_age}s" if max_age else "")
    if not apply:
        if not listing:
            return Outcome.ok(f"no tag of {', '.join(repositories) or '(no repository)'} breaks the rule ({rule});"
                              " apply still runs the registry's garbage collector", deleted_tags=[])
        return Outcome.changed(f"would untag {len(listing)} tags ({rule}) and garbage-collect", "\n".join(listing),
                               deleted_tags=listing)
    gc = registry.garbage_collect(layout, manager, port, untag=doomed)
    what = f"untagged {len(listing)} tags ({rule}); " if listing else f"no tag breaks the rule ({rule}); "
    return Outcome("changed" if gc.status == "changed" else "ok", what + gc.message, "\n".join(listing),
                   facts={"deleted_tags": listing,
                          "registry_reclaimed_bytes": gc.facts.get("registry_reclaimed_bytes", 0)})


# --------------------------------------------------------------------------------------
# the S3 bucket
# --------------------------------------------------------------------------------------
def s3_retention(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    store = s3.store_for(layout, params.model_dump())
    if store is None:
        return Outcome.skipped("neither s3_endpoint nor s3_port is set: no S3 cache to expire")
    if params.s3_max_age <= S3_TOUCH_REFRESH:
        raise ParameterError(f"s3_max_age: {params.s3_max_age}s is not longer than BuildKit's touch_refresh (24h)",
                             "an export that finds a blob younger than a day reuses it without re-uploading it:"
                             " keep objects longer, e.g. s3_max_age=14d")
    return store.expire(params.cache_bucket, params.cache_prefix, params.s3_max_age, apply)
