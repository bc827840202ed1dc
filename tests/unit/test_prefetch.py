"""The background prefetch of what the kit builds once per version."""

from __future__ import annotations

import subprocess
import sys

from runbook_checks import prefetch
from runbook_checks.fleet import binaries


def test_the_background_yields_the_cpu_as_a_process_and_as_an_autogroup():
    probe = ("import os; from runbook_checks.prefetch import lowest_priority; lowest_priority(); print(os.nice(0));"
             " print(open('/proc/self/autogroup').read())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split("\n")
    assert out[0] == "19"
    assert out[1].endswith("nice 19"), out  # its own session's group, held back as a whole


def test_the_items_follow_the_run_kubernetes_only_with_the_cluster_layer():
    plain = [what for what, _ in prefetch.items()]
    assert plain[0].startswith("BuildKit ") and not any("Kubernetes" in what for what in plain)
    assert plain[-1] == "the rehearsal hosts' root filesystem"
    full = [what for what, _ in prefetch.items(("v0.34.1",), cluster=True)]
    assert "BuildKit v0.34.1" in full and full[-1].startswith(f"Kubernetes {binaries.KUBERNETES_VERSION}")


def test_one_failed_item_does_not_stop_the_next_and_the_exit_code_says_so(monkeypatch, capsys):
    made = []

    def broken():
        raise RuntimeError("no proxy")

    monkeypatch.setattr(prefetch, "items", lambda versions, cluster: [("broken", broken),
                                                                      ("fine", lambda: made.append(1))])
    assert prefetch.main([]) == 1
    assert made == [1]
    out = capsys.readouterr().out
    assert "prefetch: broken failed: no proxy" in out and "prefetch: fine ready" in out
    monkeypatch.setattr(prefetch, "items", lambda versions, cluster: [("fine", lambda: None)])
    assert prefetch.main([]) == 0
