"""The adoption report's arithmetic without a host: builds from audit entries joined to
history records, per team and per day, new teams, the Dockerfiles' names, the slowest and
the most failing, and the page it publishes (the rehearsal host's test compares it with
the real audit log and history)."""

from __future__ import annotations

import datetime as _dt
import json

import pytest

from runbook_checks.core.errors import KitError
from runbook_checks.reports import adoption

DAY1 = _dt.datetime(2026, 11, 2, 10, tzinfo=_dt.timezone.utc).timestamp()


def call(team: str, at: float, ref: str, builder: str = "buildkit") -> dict:
    return {"tier": "call", "team": team, "builder": builder, "method": "/moby.buildkit.v1.Control/Solve",
            "status": "ok", "ref": ref, "duration_ms": 999,
            "time": _dt.datetime.fromtimestamp(at, _dt.timezone.utc).isoformat(timespec="milliseconds")}


def record(ref: str, at: float, seconds: float, cached: int, total: int, error: str = "", attrs=None,
           shape=("COPY rootfs/ /", "RUN make")) -> dict:
    rec = {"Ref": ref, "CreatedAt": {"seconds": int(at), "nanos": 0},
           "CompletedAt": {"seconds": int(at + seconds), "nanos": 0}, "numCachedSteps": cached,
           "numTotalSteps": total}
    if error:
        rec["error"] = {"code": 2, "message": error}
    else:
        rec["ExporterResponse"] = {"containerimage.config": json.dumps(
            {"history": [{"created_by": c} for c in shape]})}
    if attrs:
        rec["FrontendAttrs"] = attrs
    return rec


def test_per_team_per_day_and_the_dockerfiles():
    entries = [call("web", DAY1, "r1"), call("web", DAY1 + 60, "r2"), call("web", DAY1 + 86400, "r3", "buildkit-b2"),
               call("api", DAY1 + 120, "r4"), call("api", DAY1 + 180, "r5"), call("ops", DAY1 + 200, "")]
    entries.append({"tier": "connection", "team": "web", "method": "-", "time": entries[0]["time"]})
    records = {"r1": record("r1", DAY1, 10, 0, 4), "r2": record("r2", DAY1 + 60, 2, 4, 4),
               "r3": record("r3", DAY1 + 86400, 4, 2, 4),
               "r4": record("r4", DAY1 + 120, 30, 1, 5, attrs={"vcs:source": "git@example.org:api.git",
                                                                "filename": "Dockerfile"}),
               "r5": record("r5", DAY1 + 180, 1, 0, 5, error="process \"/bin/sh -c make\" did not complete")}
    rows = adoption.builds(entries, records)
    assert len(rows) == 6  # Solve calls only; the one without a history record still counts
    result = adoption.report(rows, DAY1 - 3600, {"web": "2026-10-01T00:00:00+00:00", "api": rows[3]["time"]})
    web, api = result["teams"]["web"], result["teams"]["api"]
    assert (web["builds"], web["failed"], web["median_s"], web["cache_hit_ratio"]) == (3, 0, 4.0, 0.5)
    assert not web["new"] and api["new"] and result["new_teams"] == ["api", "ops"]
    assert (api["builds"], api["failed"], api["success_rate"], api["median_s"]) == (2, 1, 0.5, 30.0)
    assert result["teams"]["ops"]["builds"] == 1 and result["teams"]["ops"]["median_s"] == 0.999
    assert result["per_day"] == {"2026-11-02": {"web": 2, "api": 2, "ops": 1}, "2026-11-03": {"web": 1}}
    assert result["slowest"][0] == {"dockerfile": "git@example.org:api.git Dockerfile", "median_s": 30.0,
                                    "builds": 1}
    assert result["failing"][0]["dockerfile"] == "api: a Dockerfile whose build made no image"
    assert "did not complete" in result["failing"][0]["last_error"]
    assert rows[0]["dockerfile"].startswith("web: Dockerfile ") and rows[0]["dockerfile"] == rows[1]["dockerfile"]
    assert rows[5]["dockerfile"] == "ops: not in the builder's history"
    assert result["builds"] == 6 and result["joined_to_history"] == 5
    # a period that starts later leaves the first day out
    later = adoption.report(rows, DAY1 + 3600, {})
    assert later["builds"] == 1 and list(later["teams"]) == ["web"]


def test_first_seen_counts_verified_teams_only():
    entries = [{"team": "web", "time": "2026-11-02T10:00:00.000+00:00", "verified": True},
               {"team": "web", "time": "2026-11-01T10:00:00.000+00:00", "verified": True},
               {"team": "evil", "time": "2026-11-01T09:00:00.000+00:00", "verified": False},
               {"team": "-", "time": "2026-11-01T08:00:00.000+00:00"}]
    assert adoption.first_seen(entries) == {"web": "2026-11-01T10:00:00.000+00:00"}


def test_the_page_and_the_plot(tmp_path):
    rows = adoption.builds([call("web", DAY1, "r1")], {"r1": record("r1", DAY1, 3, 1, 2)})
    result = adoption.report(rows, DAY1 - 60, {})
    page = tmp_path / "adoption.md"
    page.write_text("# A\n\n<!-- report:adoption -->\n<!-- /report:adoption -->\nend\n")
    png = adoption.plot(result, tmp_path / "a.png", "since X")
    adoption.publish(result, png, page, "since X")
    text = page.read_text()
    assert "| web (new) | 1 | 0 | 100% | 3.0 |" in text and "No build failed in the period." in text
    assert (tmp_path / "img/adoption.png").stat().st_size > 10_000 and text.endswith("end\n")
    with pytest.raises(KitError) as err:
        adoption.plot(adoption.report([], DAY1, {}), tmp_path / "b.png", "x")
    assert "no builds in the period" in err.value.problem
