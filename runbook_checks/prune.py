"""Cleanup and retention of build cache, local and remote: the `prune` runbook's steps.

- the daemon's own cache: `buildctl prune --keep-duration --keep-storage` from the
  profile, reporting the bytes it freed (measured with `buildctl du` before and after);
- the local registry: cache tags beyond the newest N, or older than D, are deleted and
  the registry garbage-collected;
- the S3 bucket: objects older than D are removed (BuildKit never deletes there);
- production: a systemd timer that runs the prune runbook on a schedule.
"""

from __future__ import annotations

import datetime as _dt
import sys
import textwrap
from pathlib import Path

from . import registry, s3
from .buildctl import Buildctl
from .errors import KitError, ParameterError
from .layout import Layout
from .params import PROJECT_ROOT, Semantics
from .results import Outcome

# BuildKit's s3 cache re-uploads ("touches") a blob a build still uses once it is older
# than touch_refresh (default 24h); expiring younger objects could break a live cache.
S3_TOUCH_REFRESH = 24 * 3600


class PruneError(KitError):
    """A prune or retention step could not run."""


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


def prune_local(layout: Layout, keep_duration: int, keep_storage: int, apply: bool) -> Outcome:
    """`buildctl prune --keep-duration S --keep-storage MB`: the bytes freed are what
    `buildctl du` shows before minus after. Check mode prunes nothing and names what is
    eligible."""
    client = Buildctl.for_layout(layout)
    before = client.disk_usage()
    what = f"keep-duration {keep_duration}s, keep-storage {_mb(keep_storage)}"
    if not apply:
        eligible = candidates(before, keep_duration)
        return Outcome.ok(f"check mode prunes nothing; {len(eligible)} records ({_mb(_total(eligible))}) are"
                          f" eligible under {what}, of {_mb(_total(before))} in use",
                          cache_bytes=_total(before), eligible_bytes=_total(eligible))
    args = ["prune", "--keep-duration", f"{keep_duration}s"]
    if keep_storage:
        args += ["--keep-storage", f"{keep_storage / 1e6:g}"]
    client.run(*args, timeout=600)
    after = _total(client.disk_usage())
    freed = _total(before) - after
    make = Outcome.changed if freed > 0 else Outcome.ok
    return make(f"prune ({what}) freed {_mb(freed)}: {_mb(_total(before))} → {_mb(after)}",
                reclaimed_bytes=max(freed, 0), cache_bytes=after)


# --------------------------------------------------------------------------------------
# the local registry
# --------------------------------------------------------------------------------------
def tag_times(layout: Layout, repository: str) -> dict[str, float]:
    """{tag: when it was last pushed} from the registry's own storage (the kit's local
    registry keeps one `current/link` file per tag; a push rewrites it)."""
    root = registry.storage_dir(layout) / "docker/registry/v2/repositories" / repository / "_manifests/tags"
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
    """Delete expired cache tags, then garbage-collect the registry so their blobs go."""
    import time

    if not port:
        return Outcome.skipped("registry_port is 0: no local registry")
    now = now or time.time()
    doomed = {repo: expired_tags(tag_times(layout, repo), keep_tags, max_age, now) for repo in repositories}
    listing = [f"{repo}:{tag}" for repo, tags in doomed.items() for tag in tags]
    rule = f"keep the newest {keep_tags} tags" + (f", none older than {max_age}s" if max_age else "")
    if not listing:
        return Outcome.ok(f"no tag of {', '.join(repositories)} breaks the rule ({rule})", deleted_tags=[])
    if not apply:
        return Outcome.changed(f"would delete {len(listing)} tags ({rule}) and garbage-collect", "\n".join(listing),
                               deleted_tags=listing)
    for repo, tags in doomed.items():
        for tag in tags:
            registry.delete_tag(port, repo, tag)
    gc = registry.garbage_collect(layout, manager, port)
    return Outcome.changed(f"deleted {len(listing)} tags ({rule}); {gc.message}", "\n".join(listing),
                           deleted_tags=listing, registry_reclaimed_bytes=gc.facts.get("registry_reclaimed_bytes", 0))


# --------------------------------------------------------------------------------------
# the S3 bucket
# --------------------------------------------------------------------------------------
def s3_retention(layout: Layout, params: Semantics, apply: bool) -> Outcome:
    if not params.s3_port:
        return Outcome.skipped("s3_port is 0: no S3 server")
    if params.s3_max_age <= S3_TOUCH_REFRESH:
        raise ParameterError(f"s3_max_age: {params.s3_max_age}s is not longer than BuildKit's touch_refresh (24h)",
                             "blobs a live cache still uses are refreshed only once a day: keep objects longer,"
                             " e.g. s3_max_age=14d")
    from botocore.exceptions import BotoCoreError, ClientError

    creds = s3.credentials_file(layout, params.model_dump())
    try:
        s3.objects(params.s3_port, creds, params.cache_bucket, params.cache_prefix)
    except (BotoCoreError, ClientError) as exc:  # a missing bucket, refused credentials, no server
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            return Outcome.ok(f"bucket {params.cache_bucket} does not exist yet: nothing to expire")
        if code in s3.AUTH_ERRORS:
            raise PruneError(f"the S3 server on port {params.s3_port} refused the credentials in {creds} ({code})",
                             "point s3_credentials_file at the server's credentials (the lab's: etc/s3/credentials)")\
                from None
        raise PruneError(f"listing s3://{params.cache_bucket}/{params.cache_prefix} failed: {code or exc}",
                         "check the S3 server (s3_port) and s3_credentials_file") from None
    return s3.expire(params.s3_port, creds, params.cache_bucket, params.cache_prefix, params.s3_max_age, apply)


# --------------------------------------------------------------------------------------
# production: a systemd timer
# --------------------------------------------------------------------------------------
def render_timer(schedule: str) -> dict[str, str]:
    """buildkit-prune.service (oneshot: the prune runbook, production profile, apply)
    and buildkit-prune.timer."""
    service = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: prune).
        [Unit]
        Description=buildkit-ops: prune the build cache and expire remote cache
        After=buildkit.service
        Requires=buildkit.service

        [Service]
        Type=oneshot
        WorkingDirectory={PROJECT_ROOT}
        ExecStart={sys.executable} -m invoke maint.prune --profile production
        Nice=10
        IOSchedulingClass=idle
        """)
    timer = textwrap.dedent(f"""\
        # Managed by buildkit-ops (runbook: prune).
        [Unit]
        Description=buildkit-ops: scheduled build cache prune

        [Timer]
        OnCalendar={schedule}
        RandomizedDelaySec=15m
        Persistent=true

        [Install]
        WantedBy=timers.target
        """)
    return {"buildkit-prune.service": service, "buildkit-prune.timer": timer}


def write_timer(layout: Layout, manager_name: str, schedule: str, apply: bool) -> Outcome:
    """The timer units, verified by systemd-analyze before they are written (systemd
    hosts); the lab has no scheduler: `invoke maint.prune` runs the same runbook."""
    from . import files
    from .service import verify_units

    if manager_name != "systemd":
        return Outcome.skipped("supervisord has no timers: run `invoke maint.prune` (or cron it) on this host")
    import tempfile

    units = render_timer(schedule)
    with tempfile.TemporaryDirectory() as scratch:
        for name, text in units.items():
            (Path(scratch) / name).write_text(text.replace(f"ExecStart={sys.executable} ", "ExecStart=/bin/true "))
        # systemd-analyze checks Requires= against loaded units; buildkit.service is ours
        (Path(scratch) / "buildkit.service").write_text("[Service]\nExecStart=/bin/true\n")
        try:
            verify_units(Path(scratch), list(units))
        except KitError as exc:
            raise PruneError(f"the prune timer does not verify: {exc.problem}",
                             "fix prune_schedule: a systemd OnCalendar expression such as daily or Sun 03:00")\
                from None
    wanted = {layout.unit_dir / n: t for n, t in units.items()}
    stale = {p: t for p, t in wanted.items() if files.read_text(p) != t}
    if not stale:
        return Outcome.ok(f"{', '.join(str(p) for p in wanted)} up to date ({schedule})")
    diff = "".join(files.unified_diff(files.read_text(p), t, p) for p, t in stale.items())
    if not apply:
        files.writable_dir(layout.unit_dir)
        return Outcome.changed(f"would write {', '.join(str(p) for p in stale)}", diff)
    for path, text in stale.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        files.backup(path, layout.backup_dir)
        files.atomic_write(path, text)
    return Outcome.changed(f"wrote {', '.join(str(p) for p in stale)} ({schedule}); enable it with"
                           " `systemctl enable --now buildkit-prune.timer`", diff)
