"""The tuning advisor's rules without a builder: each proposal from the evidence that
asks for it, none from evidence that does not (the rehearsal host's test gathers real
evidence from a builder that hit its limits, and passes the proposal to check mode)."""

from __future__ import annotations

import pytest

from runbook_checks.reports import tuning

CURRENT = {"memory_max": "4GiB", "cpu_quota": "100%", "max_parallelism": 8, "max_concurrent_builds": 4,
           "prune_keep_storage": "10GB", "prune_keep_duration": "7d"}


def evidence(**over) -> dict:
    base = {"cores": 2, "usage": {"memory_bytes": 1 << 30, "cpu_periods": 1000, "cpu_throttled_periods": 10,
                                  "cpu_throttled_seconds": 0.5},
            "memory_limit_hits": 0, "du": {"records": 10, "total_bytes": 1 << 30, "reclaimable_bytes": 1 << 28},
            "disk": {"total_bytes": 100 << 30, "free_bytes": 50 << 30},
            "history": {"builds": 50, "failed": 1, "cached_steps": 400, "total_steps": 500},
            "queue": {"connections": 50, "waited": 0, "p95_wait_ms": 0}, "max_parallelism": 8}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


def test_a_quiet_healthy_builder_gets_no_proposal():
    assert tuning.advise(evidence(), CURRENT) == ([], [])


@pytest.mark.parametrize("over, parameter, proposed, runbook, said", [
    ({"memory_limit_hits": 3}, "memory_max", "6GiB", "install", "hit its memory limit 3 time(s)"),
    ({"usage": {"cpu_throttled_periods": 600}}, "cpu_quota", "150%", "install", "throttled the slice in 60%"),
    ({"usage": {"cpu_throttled_periods": 600}, "cores": 1}, "max_parallelism", "1", "configure",
     "the quota is all 1 cores already"),
    ({"queue": {"waited": 20, "p95_wait_ms": 45_000}}, "max_concurrent_builds", "8", "access",
     "40% of 50 builds waited in the queue (p95 45 s)"),
    ({"history": {"cached_steps": 50}, "du": {"total_bytes": 9_000_000_000}}, "prune_keep_storage", "19GiB", "prune",
     "10% of 500 steps came from the cache"),
    ({"disk": {"free_bytes": 10 << 30}, "du": {"reclaimable_bytes": 1 << 29}}, "prune_keep_duration", "84h", "prune",
     "the disk is 10% free and 50% of the cache"),
])
def test_each_rule_proposes_a_set_with_its_evidence(over, parameter, proposed, runbook, said):
    proposals, _ = tuning.advise(evidence(**over), CURRENT)
    assert [p.parameter for p in proposals] == [parameter], proposals
    p = proposals[0]
    assert (p.proposed, p.runbook, p.set) == (proposed, runbook, f"{parameter}={proposed}") and said in p.evidence


def test_what_no_parameter_fixes_is_a_note():
    proposals, notes = tuning.advise(evidence(usage={"cpu_throttled_periods": 600}, cores=1, max_parallelism=1,
                                              queue={"waited": 20, "p95_wait_ms": 45_000},
                                              history={"failed": 20}), {**CURRENT, "max_parallelism": 1})
    assert proposals == []
    assert any("CPU is saturated" in n for n in notes) and any("20 of 50 builds" in n for n in notes)
    # nothing to compare with: no proposal
    assert tuning.advise(evidence(memory_limit_hits=2), {**CURRENT, "memory_max": ""}) == ([], [])


def test_the_current_values_come_from_the_profile_for_the_builder_asked_about():
    assert tuning.current("production") == {"memory_max": "16GiB", "cpu_quota": "400%", "max_parallelism": 8,
                                            "max_concurrent_builds": 16, "prune_keep_storage": "50GB",
                                            "prune_keep_duration": "7d"}
    level = tuning.current("docs/examples/trust-levels.yaml", "untrusted")
    assert (level["memory_max"], level["cpu_quota"], level["max_parallelism"]) == ("4GiB", "100%", 2)
