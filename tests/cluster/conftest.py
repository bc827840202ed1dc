"""The local cluster for the cluster layer: one per session, in a directory of its own,
brought up by the same code as `invoke cluster.up` and removed after."""

from __future__ import annotations

import os

import pytest

from runbook_checks.fleet import cluster as cluster_mod

from ..conftest import short_tmpdir


@pytest.fixture(scope="session")
def local_cluster():
    root = short_tmpdir("bkcluster-")
    os.environ["BUILDKIT_OPS_CLUSTER_DIR"] = str(root)
    c = cluster_mod.Cluster(root)
    try:
        c.up(progress=lambda message: print(message, flush=True))
        yield c
    finally:
        c.down(purge=True, progress=lambda message: None)
        os.environ.pop("BUILDKIT_OPS_CLUSTER_DIR", None)
