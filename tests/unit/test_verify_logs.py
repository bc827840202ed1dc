import json

import pytest

from runbook_checks import verify
from runbook_checks.errors import KitError


def write(path, lines):
    path.write_text("ignored partial line\n" + "\n".join(lines) + "\n")
    return path


def j(level, msg="m"):
    return json.dumps({"level": level, "msg": msg, "time": "2026-01-01T00:00:00Z"})


def test_json_at_info(tmp_path):
    log = write(tmp_path / "l", [j("info"), j("warning"), j("error")])
    assert verify.log_format_and_level(log, "json", "info").status == "ok"


def test_debug_lines_when_info_configured(tmp_path):
    log = write(tmp_path / "l", [j("info"), j("debug", "chatty")])
    with pytest.raises(KitError, match="below level info"):
        verify.log_format_and_level(log, "json", "info")


def test_text_lines_when_json_configured(tmp_path):
    log = write(tmp_path / "l", [j("info"), 'time="x" level=info msg="text"'])
    with pytest.raises(KitError, match="not json"):
        verify.log_format_and_level(log, "json", "info")


def test_text_format(tmp_path):
    log = write(tmp_path / "l", ['time="x" level=info msg="a"', 'time="x" level=warning msg="b"'])
    with pytest.raises(KitError, match="below level warn"):
        verify.log_format_and_level(log, "text", "warn")
    assert verify.log_format_and_level(log, "text", "info").status == "ok"


def test_missing_or_empty_log(tmp_path):
    with pytest.raises(KitError, match="no log"):
        verify.log_format_and_level(tmp_path / "absent", "json", "info")
    with pytest.raises(KitError, match="no lines"):
        verify.log_format_and_level(write(tmp_path / "e", []), "json", "info")


def test_limits_skipped_without_systemd():
    out = verify.limits_in_force("supervisor", 1, {})
    assert out.status == "skipped" and "systemd is not PID 1" in out.message


def test_daemon_error_picks_the_daemons_words(tmp_path):
    from runbook_checks.service import daemon_error

    log = tmp_path / "log"
    log.write_text(j("info", "old") + "\n")
    offset = log.stat().st_size
    with open(log, "a") as fh:
        fh.write(j("info", "starting") + "\nbuildkitd: unknown snapshotter name: \"bogus\"\n")
    assert daemon_error(log, offset) == 'buildkitd: unknown snapshotter name: "bogus"'
    with open(log, "a") as fh:
        fh.write(j("fatal", "boom") + "\n")
    assert daemon_error(log, offset) == "boom"
    assert "no log" in daemon_error(tmp_path / "none", 0)


def test_only_the_running_daemons_lines_count(tmp_path):
    """buildkitd prints its shutdown error with a Go stack on stop: not the new daemon's log."""
    old = json.dumps({"level": "info", "msg": "old", "time": "2026-01-01T00:00:00Z"})
    new = json.dumps({"level": "info", "msg": "new", "time": "2026-01-01T00:01:00Z"})
    log = write(tmp_path / "l", [old, "buildkitd: got SIGTERM/SIGINT, forcing shutdown", "\truntime/asm_amd64.s:1771", new])
    import datetime as dt

    since = dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=dt.timezone.utc).timestamp()
    out = verify.log_format_and_level(log, "json", "info", since=since)
    assert out.status == "ok" and "1 lines" in out.message
    assert "1 lines" in verify.log_format_and_level(log, "json", "info", since=0).message
    with open(log, "a") as fh:
        fh.write('time="2026-01-01T00:02:00Z" level=info msg="text from the running daemon"\n')
    with pytest.raises(KitError, match="1 of 2 log lines are not json"):
        verify.log_format_and_level(log, "json", "info", since=since)
    with pytest.raises(KitError, match="no lines from the running daemon"):
        verify.log_format_and_level(log, "json", "info", since=since + 3600)
