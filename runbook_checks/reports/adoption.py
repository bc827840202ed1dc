"""Adoption after go-live (seed §10.1), from what the builder already keeps: the front
door's audit log (who built, when, through which builder) joined with BuildKit's build
history (how long, how cached, what failed). Per team: builds, success rate, median and
p95 duration, cache hit ratio (cached steps over all steps), first seen, and whether it
is new in the period; builds per team per day; the slowest and the most failing
Dockerfiles.

A Dockerfile is named by its frontend attributes when the client sends them (buildx
sends `vcs:source` and `filename`); plain buildctl sends none, so such a build is named
by the shape of the image it made (a digest of its instructions, from the image config's
history) and a failed one by its team alone."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

from ..core import figures
from ..core.errors import KitError
from ..core.units import p95

TOP = 5


def _epoch(stamp: dict | None) -> float:
    stamp = stamp or {}
    return float(stamp.get("seconds", 0)) + float(stamp.get("nanos", 0)) / 1e9


def dockerfile_of(team: str, record: dict[str, Any]) -> str:
    """The Dockerfile a build came from, as well as the record says (see the module's
    docstring)."""
    attrs = record.get("FrontendAttrs") or {}
    named = [attrs.get(k, "") for k in ("vcs:source", "filename", "target")]
    if any(named[:1]) or (named[1] and named[1] != "Dockerfile"):
        return " ".join(n for n in named if n)
    try:
        history = json.loads((record.get("ExporterResponse") or {})["containerimage.config"])["history"]
    except (KeyError, ValueError, TypeError):
        return f"{team}: a Dockerfile whose build made no image"
    shape = "\n".join(h.get("created_by", "") for h in history or [])
    return f"{team}: Dockerfile {hashlib.sha256(shape.encode()).hexdigest()[:12]} ({len(history or [])} instructions)"


def builds(entries: list[dict[str, Any]], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per build: each Control/Solve call of the audit log, with its history
    record when the join found one (access.join_history)."""
    rows = []
    for e in entries:
        if e.get("tier") != "call" or not e.get("method", "").endswith(".Control/Solve"):
            continue
        record = records.get(e.get("ref", ""), {})
        error = record.get("error") or record.get("Error")
        ok = (not error) if record else e.get("status") == "ok"
        began, ended = _epoch(record.get("CreatedAt")), _epoch(record.get("CompletedAt"))
        rows.append({"time": e["time"], "team": e.get("team", "-"), "builder": e.get("builder", ""),
                     "ref": e.get("ref", ""), "ok": ok,
                     "seconds": round(ended - began, 3) if record and ended >= began > 0
                     else e.get("duration_ms", 0) / 1000,
                     "cached_steps": int(record.get("numCachedSteps", 0)),
                     "total_steps": int(record.get("numTotalSteps", 0)),
                     "dockerfile": dockerfile_of(e.get("team", "-"), record) if record else
                     f"{e.get('team', '-')}: not in the builder's history",
                     "error": str((error or {}).get("message", error) if isinstance(error, dict) else error or "")[:300]})
    return rows


def report(rows: list[dict[str, Any]], since: float, first_seen: dict[str, str]) -> dict[str, Any]:
    """What the rows say: per team, per day, the Dockerfiles. `first_seen`: each team's
    first entry in the whole audit log (a team first seen after `since` is new)."""
    in_period = [r for r in rows if _dt.datetime.fromisoformat(r["time"]).timestamp() >= since]
    teams: dict[str, dict[str, Any]] = {}
    for team in sorted({r["team"] for r in in_period}):
        mine = [r for r in in_period if r["team"] == team]
        seconds = [r["seconds"] for r in mine if r["ok"]]
        total = sum(r["total_steps"] for r in mine)
        seen = first_seen.get(team, mine[0]["time"])
        teams[team] = {"builds": len(mine), "ok": sum(r["ok"] for r in mine), "failed": sum(not r["ok"] for r in mine),
                       "success_rate": round(sum(r["ok"] for r in mine) / len(mine), 3),
                       "median_s": round(statistics.median(seconds), 3) if seconds else 0.0,
                       "p95_s": round(p95(seconds), 3),
                       "cache_hit_ratio": round(sum(r["cached_steps"] for r in mine) / total, 3) if total else 0.0,
                       "first_seen": seen, "new": _dt.datetime.fromisoformat(seen).timestamp() >= since}
    days: dict[str, dict[str, int]] = {}
    for r in in_period:
        day = days.setdefault(r["time"][:10], {})
        day[r["team"]] = day.get(r["team"], 0) + 1
    by_file: dict[str, list[dict[str, Any]]] = {}
    for r in in_period:
        by_file.setdefault(r["dockerfile"], []).append(r)
    slow = sorted(((name, statistics.median([r["seconds"] for r in rs if r["ok"]]), len(rs))
                   for name, rs in by_file.items() if any(r["ok"] for r in rs)), key=lambda x: -x[1])[:TOP]
    failing = sorted(((name, sum(not r["ok"] for r in rs), len(rs),
                       next((r["error"] for r in rs if not r["ok"]), "")) for name, rs in by_file.items()
                      if any(not r["ok"] for r in rs)), key=lambda x: (-x[1], x[0]))[:TOP]
    joined = sum(1 for r in in_period if r["ref"])
    return {"since": _dt.datetime.fromtimestamp(since, _dt.timezone.utc).isoformat(timespec="seconds"),
            "builds": len(in_period), "joined_to_history": joined, "teams": teams, "per_day": days,
            "new_teams": [t for t, row in teams.items() if row["new"]],
            "slowest": [{"dockerfile": n, "median_s": round(s, 3), "builds": b} for n, s, b in slow],
            "failing": [{"dockerfile": n, "failed": f, "builds": b, "last_error": e} for n, f, b, e in failing]}


def first_seen(entries: list[dict[str, Any]]) -> dict[str, str]:
    """Each team's first verified entry in the audit log."""
    seen: dict[str, str] = {}
    for e in entries:
        team = e.get("team", "-")
        if team != "-" and e.get("verified", True) and e.get("time") and e["time"] < seen.get(team, "~"):
            seen[team] = e["time"]
    return seen


def plot(result: dict[str, Any], dest: Path, caption: str) -> Path:
    """Builds per day stacked by team; success rate and cache hit ratio per team."""
    plt = figures.pyplot()

    if not result["teams"]:
        raise KitError("there were no builds in the period, so there is nothing to plot",
                       "choose a longer period (--since 30d)")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    days = sorted(result["per_day"])
    bottom = [0] * len(days)
    for team in result["teams"]:
        counts = [result["per_day"][d].get(team, 0) for d in days]
        left.bar(days, counts, bottom=bottom, label=team)
        bottom = [b + c for b, c in zip(bottom, counts)]
    left.set_ylabel("builds")
    left.set_title("builds per day, by team", fontsize=9)
    left.legend(fontsize=7)
    left.tick_params(axis="x", labelrotation=45, labelsize=7)
    names = list(result["teams"])
    xs = range(len(names))
    right.bar([x - 0.2 for x in xs], [result["teams"][t]["success_rate"] for t in names], 0.4, label="success rate")
    right.bar([x + 0.2 for x in xs], [result["teams"][t]["cache_hit_ratio"] for t in names], 0.4,
              label="cache hit ratio")
    right.set_xticks(list(xs), names, fontsize=7)
    right.set_ylim(0, 1.05)
    right.set_title("per team", fontsize=9)
    right.legend(fontsize=7)
    return figures.save(fig, dest, caption)


def markdown(result: dict[str, Any]) -> str:
    rows = ["| team | builds | failed | success | median s | p95 s | cache hit | first seen |",
            "|---|---|---|---|---|---|---|---|"]
    for team, r in result["teams"].items():
        rows.append(f"| {team}{' (new)' if r['new'] else ''} | {r['builds']} | {r['failed']} |"
                    f" {r['success_rate']:.0%} | {r['median_s']} | {r['p95_s']} | {r['cache_hit_ratio']:.0%} |"
                    f" {r['first_seen'][:10]} |")
    slow = ["| slowest Dockerfiles | median s | builds |", "|---|---|---|"] + [
        f"| {d['dockerfile']} | {d['median_s']} | {d['builds']} |" for d in result["slowest"]]
    failing = ["| most failing Dockerfiles | failed | builds | last error |", "|---|---|---|---|"] + [
        f"| {d['dockerfile']} | {d['failed']} | {d['builds']} | {d['last_error'][:120].replace('|', '/')} |"
        for d in result["failing"]]
    return "\n\n".join(["\n".join(rows), "\n".join(slow), "\n".join(failing) if result["failing"] else
                        "No build failed in the period."])


def publish(result: dict[str, Any], png: Path, page: Path, caption: str) -> None:
    """The plot, the numbers and the tables into the page's report:adoption block."""
    figures.publish(page, "report:adoption", png, "adoption.png", caption, markdown(result), KitError)
