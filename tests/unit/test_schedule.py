"""The maintenance schedule: which jobs a builder has, its timers (rendered into a
production tree and verified by systemd-analyze), a job's run recorded as JSON and as a
node-exporter textfile, the backup job, and what `maint.schedule` shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runbook_checks.core import layout as layout_mod
from runbook_checks.core import params
from runbook_checks.core.errors import ParameterError, ServiceError
from runbook_checks.core.paths import PROJECT_ROOT
from runbook_checks.daemon import schedule

ALL = dict(params.MAINTENANCE)


def test_a_profile_moves_the_jobs_it_names_and_refuses_unknown_jobs_and_times():
    got = params.validate({"maintenance_schedule": {"drift": "*:0/15", "version": "off"}}).maintenance_schedule
    assert got == {**ALL, "drift": "*:0/15", "version": "off"}
    with pytest.raises(ParameterError, match="(?s)'defrag' is not a maintenance job.*prune, drift, certs"):
        params.validate({"maintenance_schedule": {"defrag": "daily"}})
    with pytest.raises(ParameterError, match="not a systemd OnCalendar"):
        params.validate({"maintenance_schedule": {"backup": "daily; rm -rf /"}})


def test_each_builder_has_the_jobs_of_its_scope(tmp_path):
    host = layout_mod.production(tmp_path)
    assert list(schedule.jobs_for(host, ALL, 1234)) == ["prune", "drift", "certs", "backup", "plugins-audit", "version"]
    assert "certs" not in schedule.jobs_for(host, ALL, 0)  # no front door, no certificate to renew
    level = layout_mod.production(tmp_path, "b2")
    assert list(schedule.jobs_for(level, ALL, 1235)) == ["prune", "drift", "certs", "backup"]  # host-wide jobs once
    member = layout_mod.production(tmp_path, "b2", ["b2"])
    assert list(schedule.jobs_for(member, ALL, 1234)) == ["prune", "drift", "backup"]  # the host builder's door
    assert "version" not in schedule.jobs_for(host, {**ALL, "version": "off"}, 0)


def test_the_timers_verify_converge_and_go_when_switched_off(tmp_path):
    lay = layout_mod.production(tmp_path)
    check = schedule.write_timers(lay, "systemd", ALL, 1234, "production", apply=False)
    assert check.status == "changed" and not (lay.unit_dir / "buildkit-drift.timer").exists()
    assert schedule.write_timers(lay, "systemd", ALL, 1234, "production", apply=True).status == "changed"
    timer = (lay.unit_dir / "buildkit-prune.timer").read_text()
    assert "OnCalendar=*-*-* 03:30:00" in timer and "Persistent=true" in timer
    service = (lay.unit_dir / "buildkit-drift.service").read_text()
    assert f"-m runbook_checks.daemon.schedule run drift --profile production\n" in service
    assert f"WorkingDirectory={PROJECT_ROOT}" in service and "BUILDKIT_OPS_RUNS_DIR=" in service
    assert schedule.write_timers(lay, "systemd", ALL, 1234, "production", apply=True).status == "ok"

    off = {**ALL, "version": "off"}
    would = schedule.write_timers(lay, "systemd", off, 1234, "production", apply=False)
    assert would.status == "changed" and "remove buildkit-version.service" in would.message
    gone = schedule.write_timers(lay, "systemd", off, 1234, "production", apply=True)
    assert gone.status == "changed" and not (lay.unit_dir / "buildkit-version.timer").exists()
    assert any(p.name.startswith("buildkit-version.timer") for p in lay.backup_dir.iterdir())
    assert schedule.write_timers(lay, "systemd", off, 1234, "production", apply=True).status == "ok"
    # a unit of the operator's own beside them is left alone, and so are another builder's timers
    (lay.unit_dir / "buildkit-mine.service").write_text("[Service]\nExecStart=/bin/true\n")
    level = layout_mod.production(tmp_path, "b2")
    assert schedule.write_timers(level, "systemd", ALL, 1235, "production", apply=True).status == "changed"
    assert schedule.write_timers(lay, "systemd", off, 1234, "production", apply=True).status == "ok"
    assert (lay.unit_dir / "buildkit-b2-prune.timer").exists()


def test_a_trust_level_builder_runs_its_jobs_with_its_level_and_site_profile(tmp_path):
    lay = layout_mod.production(tmp_path, "b2")
    units = schedule.render(lay, schedule.jobs_for(lay, ALL, 1235), "/etc/buildkit-ops/site.yaml")
    assert set(units) == {f"buildkit-b2-{j}.{k}" for j in ("prune", "drift", "certs", "backup")
                          for k in ("service", "timer")}
    assert "run certs --profile /etc/buildkit-ops/site.yaml --trust-level b2\n" in units["buildkit-b2-certs.service"]


def test_a_time_systemd_refuses_is_refused_before_anything_is_written(tmp_path):
    lay = layout_mod.production(tmp_path)
    with pytest.raises(ServiceError, match="maintenance timers do not verify") as err:
        schedule.write_timers(lay, "systemd", {**ALL, "backup": "every tuesday-ish"}, 0, "production", apply=True)
    assert "maintenance_schedule" in err.value.fix
    assert not lay.unit_dir.exists() or not list(lay.unit_dir.iterdir())


def test_supervisord_has_no_timers_and_says_what_to_run(tmp_path):
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    out = schedule.write_timers(lay, "supervisor", ALL, 0, "ci", apply=True)
    assert out.status == "skipped" and "invoke maint.drift" in out.message and "invoke maint.certs" not in out.message


def test_a_run_is_recorded_as_json_and_as_a_textfile_the_node_exporter_reads(tmp_path):
    lay = layout_mod.production(tmp_path, "b2")
    entry = schedule.record(lay, "drift", 1000.0, 1012.5, 1, "drift: buildkitd.toml: would write it")
    assert entry["ok"] is False and entry["seconds"] == 12.5
    saved = json.loads((schedule.records_dir(lay) / "buildkit-b2-drift.json").read_text())
    assert saved == entry
    text = (schedule.textfile_dir(lay) / "buildkit_ops_maintenance_buildkit_b2_drift.prom").read_text()
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["buildkit_ops_maintenance_last_success"].value == 0
    assert samples["buildkit_ops_maintenance_last_success"].labels == {"maintenance": "drift",
                                                                        "unit": "buildkit-b2-drift.service"}
    assert samples["buildkit_ops_maintenance_last_run_timestamp_seconds"].value == 1012.5
    assert samples["buildkit_ops_maintenance_last_duration_seconds"].value == 12.5


def test_the_recorder_runs_the_job_and_records_its_failure_then_its_success(tmp_path):
    """The timers' command for real: the backup job of a ci builder's tree, which fails
    while there is nothing to back up and succeeds once there is."""
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    env = dict(os.environ, BUILDKIT_OPS_STATE_DIR=str(tmp_path), BUILDKIT_OPS_RUNS_DIR=str(tmp_path / "runs"))
    argv = [sys.executable, "-m", "runbook_checks.daemon.schedule", "run", "backup", "--profile", "ci"]
    first = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 2, first.stdout + first.stderr
    rows = {r["job"]: r for r in schedule.status(lay, ALL, 0, "supervisor")}
    assert rows["backup"]["ok"] is False and "nothing to back up" in rows["backup"]["message"]
    assert rows["backup"]["timer"].startswith("no timers") and rows["drift"]["ok"] is None
    lay.config_path.parent.mkdir(parents=True)
    lay.config_path.write_text("[worker.oci]\n")
    second = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    row = {r["job"]: r for r in schedule.status(lay, ALL, 0, "supervisor")}["backup"]
    assert row["ok"] is True and "backed up" in row["message"]


def test_the_backup_holds_the_configuration_and_ca_not_the_backups_and_keeps_the_newest(tmp_path):
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})  # backups live inside etc/ here
    (lay.config_path.parent / "access").mkdir(parents=True)
    lay.config_path.write_text("[worker.oci]\n")
    (lay.config_path.parent / "access" / "ca.key").write_text("KEY")
    firsts = [schedule.backup(lay, keep=2).facts["backup"] for _ in range(3)]
    kept = sorted((lay.backup_dir / "state").glob("buildkit-*.tar.gz"))
    assert [str(p) for p in kept] == firsts[1:]
    assert kept[-1].stat().st_mode & 0o777 == 0o600  # it holds the CA's key
    with tarfile.open(kept[-1]) as tar:
        names = tar.getnames()
    assert "etc/buildkitd.toml" in names and "etc/access/ca.key" in names
    assert not any(n.startswith("etc/backups") for n in names)
    fhs = layout_mod.production(tmp_path / "fhs")
    fhs.config_path.parent.mkdir(parents=True)
    fhs.config_path.write_text("[worker.oci]\n")
    schedule.write_timers(fhs, "systemd", ALL, 0, "production", apply=True)
    with tarfile.open(schedule.backup(fhs, keep=1).facts["backup"]) as tar:
        names = tar.getnames()
    assert "etc/buildkit/buildkitd.toml" in names and "etc/systemd/system/buildkit-drift.timer" in names


def test_an_unreachable_module_proxy_is_a_clear_failure(monkeypatch):
    monkeypatch.setenv("GOPROXY", "http://127.0.0.1:9")
    with pytest.raises(ServiceError, match="did not answer") as err:
        schedule.newest_version(timeout=5)
    assert "GOPROXY" in err.value.fix and "version: off" in err.value.fix
