"""The local registry's config, supervisord program and buildkitd.toml entry, rendered
(the registry itself runs in tests/integration/test_cache.py)."""

import socket

import pytest
import yaml

from runbook_checks import session
from runbook_checks.cache import registry
from runbook_checks.core import layout as layout_mod
from runbook_checks.core.errors import ProgramError, ServiceError
from runbook_checks.daemon import programs, service, supervisor, systemd

from .test_config import render


def lay(tmp_path, profile="ci"):
    return layout_mod.for_params({"profile": profile, "state_dir": str(tmp_path)})


def test_config_listens_on_loopback_with_deletes_on(tmp_path):
    doc = yaml.safe_load(registry.render_config(tmp_path / "registry", 15000))
    assert doc["http"]["addr"] == "127.0.0.1:15000"
    assert doc["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "registry")
    assert doc["storage"]["delete"] == {"enabled": True}


def test_supervisor_program_only_when_a_port_is_set(tmp_path):
    layout = lay(tmp_path)
    assert "[program:registry]" not in service.render_supervisor_conf(layout, session.programs(layout, {}))
    text = service.render_supervisor_conf(layout, session.programs(layout, {"registry_port": 15000}))
    assert f"command=/usr/bin/docker-registry serve {tmp_path}/etc/registry.yml" in text
    assert 'REGISTRY_HTTP_ADDR="127.0.0.1:15000"' in text
    assert programs.served_urls(text) == {"registry": "http://127.0.0.1:15000/v2/"}


def test_service_definition_writes_the_registry_config(tmp_path):
    layout = lay(tmp_path)
    progs = session.programs(layout, {"registry_port": service.free_port()})
    out = service.write_service_definition(layout, "supervisor", systemd.Limits(), "", True, progs)
    assert out.status == "changed" and "registry.yml" in out.message
    assert (tmp_path / "registry").is_dir()
    assert f"127.0.0.1:{progs[0].port}" in registry.config_path(layout).read_text()
    again = service.write_service_definition(layout, "supervisor", systemd.Limits(), "", True, progs)
    assert again.status == "ok"


def test_systemd_has_no_registry_program(tmp_path):
    layout = lay(tmp_path, "production")
    with pytest.raises(ServiceError, match="supervisord only"):
        service.write_service_definition(layout, "systemd", systemd.Limits(), "", False,
                                         session.programs(layout, {"registry_port": 15000}))


def test_buildkitd_reaches_the_local_registry_over_http(tmp_path):
    cfg, doc = render(tmp_path, "lab")
    assert doc["registry"]["127.0.0.1:15000"] == {"http": True}
    _, doc = render(tmp_path, "ci")
    assert "registry" not in doc
    _, doc = render(tmp_path, "ci", registry_port=15002, registry_mirrors={"127.0.0.1:15002": ["127.0.0.1:15003"]})
    assert doc["registry"]["127.0.0.1:15002"] == {"mirrors": ["127.0.0.1:15003"], "http": True}


def test_last_error_quotes_the_program(tmp_path):
    log = tmp_path / "registry.log"
    log.write_text('time="2026-11-27T12:00:00Z" level=info msg="listening on 127.0.0.1:1"\n'
                   'time="2026-11-27T12:00:01Z" level=fatal msg="listen tcp 127.0.0.1:1: bind: address already in use"\n')
    prog = session.programs(lay(tmp_path), {"registry_port": 1})[0]
    assert programs.last_error(log, prog.error_patterns) == "listen tcp 127.0.0.1:1: bind: address already in use"
    assert programs.last_error(tmp_path / "none.log", ()).startswith("(no log at")


def test_a_taken_port_is_refused_before_anything_is_written(tmp_path):
    layout = lay(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ProgramError, match=f"(?s)127.0.0.1:{port} is taken.*registry_port=N"):
            service.write_service_definition(layout, "supervisor", systemd.Limits(), "", True,
                                             session.programs(layout, {"registry_port": port}))
    assert not layout.supervisor_conf.exists() and not registry.config_path(layout).exists()


def test_converge_skips_without_programs(tmp_path):
    out = programs.converge(lay(tmp_path), supervisor.Supervisor(lay(tmp_path)), [], apply=True)
    assert out.status == "skipped"

