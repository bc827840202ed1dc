"""A cache past a small disk's budget, under a GC policy sized for a big machine: the
policy fixed in the profile, the cache brought within bounds."""

import uuid

import yaml

from runbook_checks.core import files
from runbook_checks.labs import checks
from runbook_checks.labs.catalogue import expect

AREA = 2
START_SECONDS = 11  # lab.start, measured on the kit's machine kind (2 cores, warm)
BUDGET = 100 * 10**6
FILL_MB = (40, 40, 40, 20)
POLICY = [{"filters": ["type==source.local", "type==exec.cachemount"], "keep_duration": "1h"},
          {"all": True, "max_used_space": "100MB"}]


def setup(box):
    """Builds of random layers until the cache holds about 150 MB (the ci profile's GC
    lets it grow to 2 GB)."""
    for size in FILL_MB:
        box.buildctl.build(box.context(nonce=uuid.uuid4().hex, payload_mb=size))


def used(box) -> int:
    return sum(int(r.get("size") or 0) for r in box.buildctl.disk_usage())


def mb(size: int) -> str:
    return f"{size / 10**6:.0f} MB"


def check(box):
    rules = box.buildctl.workers()[0].get("gcPolicy") or []
    caps = [r.get("maxUsedSpace") or 0 for r in rules if r.get("all") and r.get("maxUsedSpace")]
    yield expect(caps and min(caps) <= BUDGET, f"the daemon's GC caps the cache at {mb(min(caps or [0]))}",
                 f"the daemon's GC caps the cache at {mb(min(caps))}, not {mb(BUDGET)} or less" if caps else
                 "no GC rule of the daemon's caps the whole cache (all: true with max_used_space)")
    yield checks.converged(box, "configure", "the policy comes from the profile")
    total = used(box)
    yield expect(total <= BUDGET, f"the cache holds {mb(total)}, within {mb(BUDGET)}",
                 f"the cache holds {mb(total)}, over {mb(BUDGET)}")


def solve(box):
    profile = yaml.safe_load(box.profile_path.read_text())
    profile["gc_policy"] = POLICY
    files.atomic_write(box.profile_path, yaml.safe_dump(profile, sort_keys=False))
    box.must_pass("configure")
    box.must_pass("prune", "apply", f"prune_keep_storage={BUDGET // 10**6}MB")


def wrong_fix(box):
    """One prune down to the budget: within bounds today, 2 GB allowed tomorrow."""
    box.buildctl.run("prune", "--keep-storage", str(BUDGET // 10**6))
