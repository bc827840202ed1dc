"""Retention rules, prune candidates and the production timer, without a daemon."""

import datetime as dt

import pytest

from runbook_checks.cache import prune
from runbook_checks.core import layout as layout_mod, params
from runbook_checks.core.errors import ParameterError, PruneError


def test_tags_beyond_the_newest_n_or_older_than_d_expire():
    now = 1_000_000.0
    times = {"a": now - 10, "b": now - 20, "c": now - 30, "old": now - 90_000}
    assert prune.expired_tags(times, keep_tags=2, max_age=0, now=now) == ["old", "c"]
    assert prune.expired_tags(times, keep_tags=10, max_age=86400, now=now) == ["old"]
    assert prune.expired_tags(times, keep_tags=0, max_age=0, now=now) == []


def test_prune_candidates_are_unused_and_old_enough():
    now = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)
    du = [{"inUse": True, "lastUsedAt": "2026-11-20T00:00:00Z", "size": 1},
          {"inUse": False, "lastUsedAt": "2026-11-27T11:59:00.123456789Z", "size": 2},
          {"inUse": False, "lastUsedAt": "2026-11-25T00:00:00.5+00:00", "size": 4}]
    assert [r["size"] for r in prune.candidates(du, 3600, now)] == [4]
    assert [r["size"] for r in prune.candidates(du, 0, now)] == [2, 4]
    with pytest.raises(PruneError, match="cannot read"):
        prune.when("yesterday")


def test_would_prune_models_keep_storage_least_recently_used_first():
    du = [{"inUse": False, "lastUsedAt": f"2026-11-2{d}T00:00:00Z", "size": 10} for d in (3, 1, 2)] + \
         [{"inUse": True, "lastUsedAt": "2026-11-20T00:00:00Z", "size": 10}]
    assert [r["lastUsedAt"][:10] for r in prune.would_prune(du, 0, 25)] == ["2026-11-21", "2026-11-22"]
    assert len(prune.would_prune(du, 0, 0)) == 3  # everything not in use
    assert prune.would_prune(du, 0, 100) == []  # under the limit: nothing goes


def test_prune_parameters_are_checked():
    p = params.validate({"prune_keep_duration": "2d", "prune_keep_storage": "5GB", "s3_max_age": "3d"})
    assert (p.prune_keep_duration, p.prune_keep_storage, p.s3_max_age) == (172800, 5 * 10**9, 259200)
    for bad in ({"prune_keep_storage": "10%"}, {"retention_repositories": ["Kit Cache"]},
                {"retention_max_age": "soon"}, {"maintenance_schedule": {"prune": "daily; rm -rf /"}}):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            params.validate(bad)


def test_s3_retention_refuses_an_age_shorter_than_touch_refresh(tmp_path):
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    p = params.validate({"s3_port": 19000, "s3_max_age": "12h"})
    with pytest.raises(ParameterError, match="touch_refresh"):
        prune.s3_retention(lay, p, apply=False)
    assert prune.s3_retention(lay, params.validate({}), apply=True).status == "skipped"
