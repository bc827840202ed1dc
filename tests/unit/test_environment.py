"""The environment buildkitd runs with, read back from its service definition on disk (what a
fresh builder copies): supervisord.conf with the programs' daemon environment, or the
systemd unit; and one file-convergence helper for every file the kit renders."""

from __future__ import annotations

from runbook_checks import session
from runbook_checks.core import files, layout as layout_mod
from runbook_checks.daemon import install, service, systemd


def test_the_environment_of_a_supervised_daemon_comes_back_from_supervisord_conf(tmp_path):
    lay = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    assert service.environment_on_disk(lay) == {}
    # free ports: a lab running on this machine holds the default ones
    programs = session.programs(lay, {"s3_port": service.free_port(), "registry_port": service.free_port()})
    service.write_service_definition(lay, "supervisor", systemd.Limits(), "", apply=True, programs=programs)
    env = service.environment_on_disk(lay)
    assert env["PATH"] == f"{lay.bin_dir}:{install.RUNC_PATH}"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == str(lay.config_path.parent / "s3" / "credentials")
    assert set(env) == {"PATH", "AWS_SHARED_CREDENTIALS_FILE"}  # the registry asks buildkitd for nothing


def test_the_environment_of_a_systemd_unit_comes_back_from_the_unit(tmp_path):
    lay = layout_mod.for_params({"profile": "production", "state_dir": str(tmp_path)})
    units = systemd.render_units(lay, systemd.Limits(cpu_quota="200%"), "", lay.on_host(lay.bin_dir))
    for name, text in units.items():
        files.atomic_write(lay.unit_dir / name, text)
    assert service.environment_on_disk(lay) == {"PATH": install.RUNC_PATH}


def test_converge_shows_a_diff_in_check_mode_and_writes_with_a_backup_in_apply(tmp_path):
    path, backups = tmp_path / "etc" / "a.conf", tmp_path / "backups"
    first = files.converge({path: "one\n"}, apply=False, backup_dir=backups, config_path=str(path))
    assert first.status == "changed" and first.message == f"would write {path}" and "+one" in first.diff
    assert not path.exists() and first.facts == {"config_path": str(path)}
    written = files.converge({path: "one\n"}, apply=True, backup_dir=backups)
    assert written.status == "changed" and path.read_text() == "one\n" and written.backups == {}
    assert files.converge({path: "one\n"}, apply=True, backup_dir=backups).status == "ok"
    again = files.converge({path: "two\n"}, apply=True, backup_dir=backups)
    saved = again.backups[str(path)]
    assert path.read_text() == "two\n" and open(saved).read() == "one\n" and saved.startswith(str(backups))
    assert "-one" in again.diff and "+two" in again.diff
