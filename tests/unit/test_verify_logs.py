import datetime as dt
import json

import pytest

from runbook_checks.core.errors import KitError, ServiceError
from runbook_checks.daemon import service, supervisor, verify


def j(level, msg="m", time="2026-01-01T00:00:00Z"):
    return json.dumps({"level": level, "msg": msg, "time": time})


def check(lines, fmt="json", level="info"):
    return verify.log_format_and_level(lambda: lines, fmt, level, "test log")


def test_json_at_info():
    assert check([j("info"), j("warning"), j("error")]).status == "ok"


def test_debug_lines_when_info_configured():
    with pytest.raises(KitError, match="below level info"):
        check([j("info"), j("debug", "chatty")])


def test_text_lines_when_json_configured():
    with pytest.raises(KitError, match="1 of 2 log lines are not json"):
        check([j("info"), 'time="x" level=info msg="text"'])


def test_text_format():
    lines = ['time="x" level=info msg="a"', 'time="x" level=warning msg="b"']
    with pytest.raises(KitError, match="below level warn"):
        check(lines, "text", "warn")
    assert check(lines, "text", "info").status == "ok"
    with pytest.raises(KitError, match="not text"):
        check([j("info")], "text", "info")


def test_no_lines():
    with pytest.raises(KitError, match="no lines from the running daemon"):
        check([])


def test_only_the_running_daemons_lines_count(tmp_path):
    """buildkitd prints its shutdown error with a Go stack on stop: not the new daemon's log."""
    log = tmp_path / "buildkitd.log"
    log.write_text("\n".join(["partial line cut by the tail", j("info", "old"), j("info", "stopping server", "2026-01-01T00:00:30Z"),
                              "buildkitd: got SIGTERM/SIGINT, forcing shutdown", "\truntime/asm_amd64.s:1771",
                              j("info", "new", "2026-01-01T00:00:30Z"), j("info", "newer", "2026-01-01T00:01:00Z")]) + "\n")
    lines = supervisor.read_log_tail(log)
    since = dt.datetime(2026, 1, 1, 0, 0, 30, 400000, tzinfo=dt.timezone.utc).timestamp()
    current = supervisor.current_process_lines(lines, since)
    assert [json.loads(x)["msg"] for x in current] == ["new", "newer"]
    assert check(current).status == "ok"
    assert supervisor.current_process_lines(lines, since + 3600) == []
    # a crashed first start with no exit message: only the time cut applies
    plain = [j("info", "a"), j("info", "b", "2026-01-01T00:02:00Z")]
    assert supervisor.current_process_lines(plain, since) == plain[1:]


def test_missing_log():
    with pytest.raises(ServiceError, match="no log"):
        supervisor.read_log_tail(__import__("pathlib").Path("/nonexistent/log"))


def test_limits_skipped_without_systemd():
    from runbook_checks.daemon.systemd import Limits

    out = verify.limits_in_force("supervisor", 1, Limits(), __import__("pathlib").Path("/"))
    assert out.status == "skipped" and "systemd is not PID 1" in out.message


def test_daemon_error_picks_the_daemons_words(tmp_path):
    log = tmp_path / "log"
    log.write_text(j("info", "old") + "\n")
    offset = log.stat().st_size
    with open(log, "a") as fh:
        fh.write(j("info", "starting") + "\nbuildkitd: unknown snapshotter name: \"bogus\"\n")
    assert service.daemon_error(log, offset) == 'buildkitd: unknown snapshotter name: "bogus"'
    with open(log, "a") as fh:
        fh.write(j("fatal", "boom") + "\n")
    assert service.daemon_error(log, offset) == "boom"
    assert "no log" in service.daemon_error(tmp_path / "none", 0)
