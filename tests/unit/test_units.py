import shutil

import pytest

from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import ServiceError
from runbook_checks.daemon import service, systemd

pytestmark = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")


def prod(tmp_path):
    return layout_mod.for_params({"profile": "production", "state_dir": str(tmp_path)})


def test_units_render_and_verify(tmp_path):
    layout = prod(tmp_path)
    limits = systemd.Limits("400%", "17179869184", 200, 8192)
    out = service.write_service_definition(layout, "systemd", limits, "tcp://127.0.0.1:1234", apply=False)
    assert out.status == "changed" and not (tmp_path / "etc").exists()
    out = service.write_service_definition(layout, "systemd", limits, "tcp://127.0.0.1:1234", apply=True)
    unit = (layout.unit_dir / "buildkit.service").read_text()
    for line in ("Slice=buildkit.slice", "Type=notify", "Delegate=yes",
                 "ExecStart=/usr/local/bin/buildkitd --config /etc/buildkit/buildkitd.toml --addr fd:// --addr tcp://127.0.0.1:1234"):
        assert line in unit
    # the limits are the slice's: it holds the daemon and the build containers (defaultCgroupParent)
    builds = (layout.unit_dir / "buildkit.slice").read_text()
    for line in ("[Slice]", "CPUQuota=400%", "MemoryMax=17179869184", "IOWeight=200", "TasksMax=8192"):
        assert line in builds and line not in unit.replace("[Slice]", "")
    sock = (layout.unit_dir / "buildkit.socket").read_text()
    assert "ListenStream=/run/buildkit/buildkitd.sock" in sock
    assert service.write_service_definition(layout, "systemd", limits, "tcp://127.0.0.1:1234", apply=True).status == "ok"


@pytest.mark.parametrize("limits", [systemd.Limits(cpu_quota="abc%"), systemd.Limits(memory_max="lots"),
                                    systemd.Limits(io_weight=0)])
def test_systemd_analyze_warnings_are_failures(tmp_path, limits):
    """systemd-analyze verify exits 0 on 'Invalid CPU quota ..., ignoring': we fail anyway,
    and nothing is written."""
    layout = prod(tmp_path)
    with pytest.raises(ServiceError, match="systemd-analyze verify rejected"):
        service.write_service_definition(layout, "systemd", limits, "", apply=True)
    assert not layout.unit_dir.exists()


def test_configured_limits_as_the_cgroups_read_them_back():
    assert systemd.Limits("200%", "1073741824", 50, 100).configured() == {
        "cpu_quota": "200%", "memory_max": "1073741824", "io_weight": "50", "tasks_max": "100"}
    assert systemd.Limits().configured() == {"io_weight": "100", "tasks_max": "4096"}


def test_supervisor_conf(tmp_path):
    layout = layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)})
    text = service.render_supervisor_conf(layout)
    assert f"command={layout.buildkitd} --config {layout.config_path}" in text
    assert "autorestart=true" in text and f"pidfile={layout.run_dir}/supervisord.pid" in text
    assert f"stdout_logfile={layout.log_path}" in text


def test_systemd_manager_refuses_without_systemd(tmp_path):
    if systemd.systemd_is_pid1():
        pytest.skip("systemd is PID 1 here")
    with pytest.raises(ServiceError, match="service_manager=supervisor"):
        service.manager_for(layout_mod.for_params({"profile": "ci", "state_dir": str(tmp_path)}), "systemd").info()
    assert service.choose_manager("auto") == "supervisor"

