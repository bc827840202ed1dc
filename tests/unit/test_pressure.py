"""The limits runbook's refusals to run a workload it cannot run safely, or that cannot
hit the limit on this machine; the workloads themselves run on a rehearsal host
(tests/production/test_host.py)."""

from __future__ import annotations

import os

from runbook_checks.core.layout import production
from runbook_checks.daemon import pressure


def test_no_slice_without_systemd(tmp_path):
    layout = production(tmp_path)
    for out in (pressure.memory_hit(layout, "supervisor", 1, "256MiB", True),
                pressure.cpu_throttled(layout, "supervisor", 1, "50%", True),
                pressure.tasks_hit(layout, "supervisor", 1, 256, True)):
        assert out.status == "skipped" and "without systemd" in out.message


def test_limits_this_machine_cannot_reach_safely_are_skipped_with_the_reason(tmp_path):
    layout = production(tmp_path)
    out = pressure.memory_hit(layout, "systemd", 1, "1000000GiB", True)
    assert out.status == "skipped" and "more than this machine can safely allocate" in out.message
    out = pressure.cpu_throttled(layout, "systemd", 1, f"{(os.cpu_count() or 1) * 100}%", True)
    assert out.status == "skipped" and "CPUs" in out.message
    assert "would start 320 processes" in pressure.tasks_hit(layout, "systemd", 1, 256, False).message
    assert pressure.tasks_hit(layout, "systemd", 1, 8192, True).status == "skipped"
    assert pressure.memory_hit(layout, "systemd", 1, "", True).message.startswith("memory_max is not set")
