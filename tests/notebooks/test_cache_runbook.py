"""The cache runbook executed by papermill (ci profile) against the ci daemon, with the
local registry of the session's registry builder: check runs no build, apply proves the
registry and local backends through a fresh builder, apply again changes nothing."""

from __future__ import annotations

from runbook_checks.core import runner


def run(mode, state, port, runs_base, *sets):
    return runner.run("cache", "ci", mode, (f"state_dir={state}", f"registry_port={port}", *sets), base=runs_base,
                      progress=False)


def test_check_validates_and_builds_nothing(ci_daemon, registry_builder, runs_base):
    _, port = registry_builder
    result = run("check", ci_daemon.state_dir, port, runs_base)
    steps = {s.name: s for s in result.report.steps}
    assert result.report.summary["failed"] == 0, result.report.to_json()
    assert f"type=registry,ref=127.0.0.1:{port}/kit/cache:registry,mode=max" in steps["cache backend"].message
    for name in ("export, then import into a fresh builder", "two fresh builders share the cache",
                 "cache mounts and their sharing modes"):
        assert steps[name].status == "skipped"


def test_apply_proves_registry_then_local_and_the_second_run_changes_nothing(ci_daemon, registry_builder, runs_base, tmp_path):
    _, port = registry_builder
    first = run("apply", ci_daemon.state_dir, port, runs_base)
    assert first.report.summary["failed"] == 0, first.report.to_json()
    assert first.report.facts["cached_steps"] == first.report.facts["total_steps"] == 4
    assert first.report.facts["shared_builders"] == 2  # both fresh builders rebuilt all CACHED at once
    mounts = first.report.facts["cache_mounts"]
    assert (mounts["cold"]["result"], mounts["warm"]["result"]) == ("miss", "hit")
    assert mounts["concurrent"]["locked"]["results"] == ["hit", "miss"]  # the second waited, then reused
    assert mounts["concurrent"]["shared"]["results"] == ["miss", "miss"]  # both worked at once
    local = run("apply", ci_daemon.state_dir, port, runs_base, "cache_backend=local", f"cache_dir={tmp_path}/c",
                "cache_compression=zstd")
    assert local.report.status == "ok", local.report.to_json()  # the base was pushed by the first run
    # the proof exports beside the operator's cache directory, never into it
    assert local.report.facts["cache_export"].startswith(f"type=local,dest={tmp_path}/c/kit-proof,mode=max,"
                                                         "compression=zstd")
    assert (tmp_path / "c/kit-proof/index.json").exists() and not (tmp_path / "c/index.json").exists()


def test_bad_cache_parameters_fail_before_any_build(ci_daemon, registry_builder, runs_base):
    _, port = registry_builder
    result = run("apply", ci_daemon.state_dir, port, runs_base, "cache_backend=inline")
    assert result.report.status == "failed"
    assert result.report.steps[-1].name == "cache backend"
    assert "max is not possible with the inline backend" in result.report.steps[-1].message


def test_s3_backend_through_the_runbook_and_a_wrong_credentials_file(registry_builder, s3_port, runs_base, tmp_path):
    layout, port = registry_builder  # its buildkitd has the S3 credentials file in its environment
    sets = (f"s3_port={s3_port}", "cache_backend=s3", "cache_bucket=runbook", "cache_prefix=ci")
    result = run("apply", layout.state_dir, port, runs_base, *sets)
    assert result.report.summary["failed"] == 0, result.report.to_json()
    assert result.report.facts["cached_steps"] == result.report.facts["total_steps"] == 4
    assert "created bucket runbook" in {s.name: s for s in result.report.steps}["backend answers (before any build)"].message
    wrong = tmp_path / "credentials"
    wrong.write_text("[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n")
    wrong.chmod(0o600)
    refused = run("apply", layout.state_dir, port, runs_base, *sets, f"s3_credentials_file={wrong}")
    last = refused.report.steps[-1]
    assert refused.report.status == "failed" and last.name == "backend answers (before any build)"
    assert f"refused the credentials in {wrong}" in last.message
