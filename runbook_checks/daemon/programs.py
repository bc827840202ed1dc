"""The services that run beside buildkitd under the lab's supervisord (the kit's exporter,
the local OCI registry, the S3 server, the monitoring stack...), one general mechanism:
each service's module gives a `program(layout, params)` factory that returns a `Program`
(command, port, config files, readiness URL); supervisord.conf gets one section per
program whose port parameter is set (the catalogue is runbook_checks.session.PROGRAMS);
configure starts each one and waits until its readiness URL answers, or fails with the
program's own last error line."""

from __future__ import annotations

import re
import socket
import textwrap
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import KitError, ProgramError
from ..core.layout import Layout
from ..core.results import Outcome
from .supervisor import Supervisor


@dataclass(frozen=True)
class Program:
    """One supervisord program on 127.0.0.1:`port`. `files` are its config files (written
    with backups before it starts), `dirs` are created for it, `ready_url` answers 2xx
    when it serves, `error_patterns` pick its last error line out of `log`;
    `daemon_environment` is what buildkitd needs in its environment to use it."""

    name: str
    command: str
    port: int
    log: Path
    ready_url: str
    environment: dict[str, str] = field(default_factory=dict)
    files: dict[Path, str] = field(default_factory=dict)
    dirs: tuple[Path, ...] = ()
    directory: str = ""
    error_patterns: tuple[str, ...] = ("level=fatal", "level=error", "error", "address already in use")
    stop_signal: str = "TERM"
    daemon_environment: dict[str, str] = field(default_factory=dict)  # what buildkitd needs to use it
    extra_ports: tuple[tuple[str, int], ...] = ()  # (port parameter, port) it also listens on

    def section(self) -> str:
        env = ",".join(f'{k}="{v}"' for k, v in self.environment.items())
        lines = [f"[program:{self.name}]", f"; serves {self.ready_url}", f"command={self.command}"]
        if env:
            lines.append(f"environment={env}")
        if self.directory:
            lines.append(f"directory={self.directory}")
        lines += ["autostart=true", "autorestart=true", "startsecs=2", "startretries=1",
                  f"stopsignal={self.stop_signal}", "stopwaitsecs=20", "stopasgroup=true", "killasgroup=true",
                  "redirect_stderr=true", f"stdout_logfile={self.log}", "stdout_logfile_maxbytes=5MB",
                  "stdout_logfile_backups=2"]
        return "\n" + "\n".join(lines) + "\n"


def served_urls(conf_text: str) -> dict[str, str]:
    """{program: URL} from a written supervisord.conf (its `; serves URL` lines)."""
    return dict(re.findall(r"^\[program:([^\]]+)\]\n; serves (\S+)", conf_text, flags=re.M))


def answers(url: str, timeout: float = 2, cafile: str = "", also: tuple[int, ...] = ()) -> bool:
    """GET url answers 2xx (or one of the `also` codes, e.g. 401 from a registry that
    wants a login); https is verified against `cafile` when given."""
    import ssl

    context = ssl.create_default_context(cafile=cafile) if cafile and url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return 200 <= resp.status < 300 or resp.status in also
    except urllib.error.HTTPError as exc:
        return 200 <= exc.code < 300 or exc.code in also
    except (urllib.error.URLError, OSError, ValueError):
        return False


def http_text(target: str, service: str, port_param: str, *, data: bytes | None = None, method: str | None = None,
              headers: dict[str, str] | None = None, timeout: float = 10, error: type[KitError] | None = None) -> str:
    """One HTTP request to a service beside buildkitd; its body as text. A refusal or no
    answer raises `error` (ProgramError by default) naming the service and the fix."""
    error = error or ProgramError
    method = method or ("POST" if data is not None else "GET")
    req = urllib.request.Request(target, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise error(f"{service}: {method} {target}: HTTP {exc.code} {exc.read().decode(errors='replace').strip()[:500]}",
                    f"read the {service} log under the state directory's log/") from None
    except (urllib.error.URLError, OSError) as exc:
        raise error(f"{service} does not answer {target} ({exc})",
                    f"start it: apply the configure runbook with {port_param} set") from None


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def last_error(log: Path, patterns: tuple[str, ...]) -> str:
    """The newest line of `log` that matches one of `patterns` (a `msg="..."` field is
    taken alone), else its last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return f"(no log at {log})"
    for line in reversed(lines):
        if any(p in line.lower() for p in patterns):
            match = re.search(r'msg="([^"]*)"', line)
            return match.group(1) if match else line[-300:]
    return lines[-1][-300:] if lines else f"(the program wrote nothing to {log})"


def check_ports_free(programs: list[Program], manager) -> None:
    """Before anything is written: a program's port held by a process that is not that
    program, serving that same port, under this state directory's supervisord is an
    error naming the port (a running program moved to a taken port is refused too)."""
    from urllib.parse import urlparse

    ours: dict[str, int] = {}
    sections: dict[str, str] = {}
    if isinstance(manager, Supervisor) and manager.supervisord_up():
        try:
            running = {p["name"] for p in manager.rpc().getAllProcessInfo()
                       if p["statename"] in ("RUNNING", "STARTING")}
            conf = manager.layout.supervisor_conf.read_text()
            served = served_urls(conf)
            ours = {name: urlparse(url).port for name, url in served.items() if name in running}
            sections = dict(re.findall(r"^\[program:([^\]]+)\]\n(.*?)(?=^\[|\Z)", conf, flags=re.M | re.S))
        except (OSError, xmlrpc.client.Fault):
            ours = {}
    for prog in programs:
        running_here = ours.get(prog.name) == prog.port
        ports = [] if running_here else [(f"{prog.name}_port", prog.port)]
        ports += [(param, port) for param, port in prog.extra_ports  # its running command listens there already
                  if not (running_here and f"127.0.0.1:{port} " in sections.get(prog.name, "") + " ")]
        for param, port in ports:
            if port_taken(port):
                raise ProgramError(f"127.0.0.1:{port} is taken by another process, so {prog.name} cannot listen there",
                                   f"free the port or choose another: --set {param}=N"
                                   f" (see `ss -ltnp 'sport = :{port}'`)")


def converge(layout: Layout, manager, programs: list[Program], apply: bool, timeout: float = 30) -> Outcome:
    """Every program serves its ready URL: started if supervisord gave up on it (apply);
    a program that will not come up fails with its own last error line."""
    if not programs:
        return Outcome.skipped("no services beside buildkitd (every *_port parameter is 0)")
    if not isinstance(manager, Supervisor):
        return Outcome.skipped("services beside buildkitd run under supervisord only (the lab stack)")
    names = ", ".join(p.name for p in programs)
    if not manager.supervisord_up():
        if apply:
            raise ProgramError(f"supervisord is not running under {layout.state_dir}, so {names} are not either",
                               "apply the configure runbook (its daemon step starts supervisord)")
        return Outcome.changed(f"would start {names} with the daemon")
    rpc = manager.rpc()
    serving, started = {}, []
    for prog in programs:
        try:
            info = rpc.getProcessInfo(prog.name)
        except xmlrpc.client.Fault:
            if not apply:
                return Outcome.changed(f"would start {prog.name} (supervisord has no such program yet)")
            raise ProgramError(f"supervisord runs no {prog.name} program", "apply the configure runbook") from None
        if not apply:
            if info["statename"] in ("RUNNING", "STARTING") and answers(prog.ready_url):
                serving[prog.name] = prog.ready_url
                continue
            return Outcome.changed(f"would start {prog.name} (supervisord has it {info['statename']},"
                                   f" {prog.ready_url} does not answer)")
        if _wait_serving(rpc, prog, timeout):
            started.append(prog.name)
        serving[prog.name] = prog.ready_url
    facts = {"services": serving}
    listing = "; ".join(f"{n}: {u}" for n, u in serving.items())
    if started:
        return Outcome.changed(f"started {', '.join(started)} — {listing}", **facts)
    return Outcome.ok(f"serving — {listing}", **facts)


def _wait_serving(rpc, prog: Program, timeout: float) -> bool:
    """Wait until `prog` answers; start it once if supervisord gave up. True if started."""
    deadline = time.monotonic() + timeout
    started = False
    while True:
        info = rpc.getProcessInfo(prog.name)
        if info["statename"] in ("RUNNING", "STARTING") and answers(prog.ready_url):
            return started
        if info["statename"] in ("FATAL", "EXITED", "STOPPED"):
            if started:
                break
            started = True
            try:
                rpc.startProcess(prog.name, False)
            except xmlrpc.client.Fault:  # failed again at once: read why below
                break
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    raise ProgramError(f"{prog.name} does not serve {prog.ready_url}: {last_error(prog.log, prog.error_patterns)}",
                       f"if another process holds port {prog.port}, choose another: --set {prog.name}_port=N;"
                       f" read {prog.log}")


def restart(manager: Supervisor, name: str, ready_url: str, timeout: float = 30) -> None:
    """Stop and start one program (after its config changed) and wait until it answers."""
    manager.stop_program(name)
    manager.rpc().startProcess(name, True)
    deadline = time.monotonic() + timeout
    while not answers(ready_url):
        if time.monotonic() > deadline:
            raise ProgramError(f"{name} did not answer {ready_url} within {timeout:.0f}s after a restart",
                               "read its log under the state directory's log/")
        time.sleep(0.2)


def daemon_environment(programs: list[Program] | tuple) -> dict[str, str]:
    env: dict[str, str] = {}
    for prog in programs:
        env.update(prog.daemon_environment)
    return env


def render_sections(programs: list[Program]) -> str:
    return "".join(textwrap.dedent(p.section()) for p in programs)
