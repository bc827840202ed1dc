"""buildkit-ops tasks: `invoke --list`. One explicit Collection of thin tasks; the logic
lives in runbook_checks. Every refusal exits 2 with the problem and the fix."""

from __future__ import annotations

from invoke import Collection

from . import access, bench, cluster, docs, drill, hosts, lab, maint, plugins, pool, profile, runbooks, scan, training
from .runbooks import LIST_WORDS, RUNBOOKS

__all__ = ["ns", "LIST_WORDS", "RUNBOOKS"]

ns = Collection(
    runbooks.runbook, lab.up, lab.down, lab.status,
    Collection("profile", profile.show, profile.check),
    Collection("docs", docs.build, docs.serve, docs.record),
    Collection("maint", maint.prune, maint.certs, maint.drift, maint.backup, maint.version, maint.schedule,
               plugins_audit=maint.plugins_audit),
    Collection("plugins", plugins.restore),
    Collection("bench", bench.cache, bench.peers, bench.overhead, bench.frontdoor, bench.scaling,
               fleet=cluster.autoscale),
    Collection("host", hosts.up, hosts.down, hosts.list_, hosts.shell),
    Collection("certs", access.issue, access.revoke, access.list_),
    Collection("pool", pool.status, pool.drain, pool.ready),
    Collection("cluster", cluster.up, cluster.down, cluster.status),
    Collection("fleet", cluster.image),
    Collection("report", access.audit, access.adoption, access.tuning),
    Collection("scan", scan.scanner),
    Collection("drill", drill.list_, drill.run),
    Collection("lab", training.list_, training.start, training.check, training.hint, training.solve, training.reset,
               training.stop, training.progress),
)
