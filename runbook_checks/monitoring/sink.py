"""The lab's notification sink: HTTP webhooks (Alertmanager's webhook and Slack-style
payloads) and an aiosmtpd SMTP server, writing one JSON line per notification, so a test
alert can be followed to its delivery. Run beside buildkitd as
`python -m runbook_checks.monitoring.sink --http 127.0.0.1:PORT [--smtp 127.0.0.1:PORT] --spool DIR`."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..core import files
from ..core.errors import AlertingError
from ..core.layout import Layout
from ..core.paths import PROJECT_ROOT
from ..daemon.programs import Program


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def spool(layout: Layout) -> Path:
    return layout.state_dir / "notifications"


def program(layout: Layout, params: dict):
    """The notification sink: webhooks on notify_sink_port, SMTP on smtp_port (if set),
    whose port is checked free with the sink's (Program.extra_ports)."""
    port = params["notify_sink_port"]
    smtp_port = params.get("smtp_port") or 0
    smtp = f" --smtp 127.0.0.1:{smtp_port}" if smtp_port else ""
    return Program("notify_sink", f"{sys.executable} -m runbook_checks.monitoring.sink --http 127.0.0.1:{port}{smtp}"
                   f" --spool {spool(layout)}", port, layout.log_dir / "notify_sink.log", f"{url(port)}/-/ready",
                   dirs=(spool(layout),), directory=str(PROJECT_ROOT),
                   error_patterns=("error", "traceback", "address already in use"),
                   extra_ports=(("smtp_port", smtp_port),) if smtp_port else ())


def messages(port: int) -> list[dict]:
    with urllib.request.urlopen(f"{url(port)}/messages", timeout=10) as resp:
        return json.loads(resp.read().decode())


class Spool:
    """Notifications as JSON lines, appended under a lock."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "notifications.jsonl"
        self.lock = threading.Lock()

    def add(self, channel: str, path: str, payload: Any) -> None:
        line = json.dumps({"channel": channel, "path": path, "received": files.stamp(), "payload": payload})
        with self.lock, open(self.path, "a") as fh:
            fh.write(line + "\n")

    def read(self) -> list[dict]:
        with self.lock:
            try:
                return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
            except FileNotFoundError:
                return []


def sink_server(host: str, port: int, store: Spool) -> ThreadingHTTPServer:
    """POST /hook/NAME (webhook), POST /chat (Slack-style payload), GET /messages."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # one line per request on stdout (the program's log)
            print(f"{self.address_string()} {fmt % args}", flush=True)

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/-/ready":
                return self._send(200, {"ready": True})
            if self.path == "/messages":
                return self._send(200, store.read())
            return self._send(404, {"error": "GET /-/ready or /messages"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode(errors="replace")
            try:
                payload = json.loads(raw)
            except ValueError:
                return self._send(400, {"error": "the body is not JSON"})
            if self.path.startswith("/hook/"):
                store.add("webhook", self.path, payload)
            elif self.path == "/chat":
                store.add("chat", self.path, payload)
            else:
                return self._send(404, {"error": "POST /hook/NAME or /chat"})
            return self._send(200, {"ok": True})

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise AlertingError(f"the notification sink listens on loopback only, not {host}", "use 127.0.0.1")
    return ThreadingHTTPServer((host, port), Handler)


def smtp_server(host: str, port: int, store: Spool):
    """aiosmtpd on host:port; each message is stored with its headers and body."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = message_from_bytes(envelope.content)
            body = ""
            for part in msg.walk():
                if part.get_content_type() == "text/plain":
                    body = part.get_payload(decode=True).decode(errors="replace")
                    break
                if part.get_content_type() == "text/html" and not body:
                    body = part.get_payload(decode=True).decode(errors="replace")
            store.add("email", "smtp", {"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                        "subject": msg.get("Subject", ""), "body": body})
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=host, port=port)
    controller.start()
    return controller


def main(argv: list[str]) -> None:
    import signal

    parser = argparse.ArgumentParser(prog="python -m runbook_checks.monitoring.sink")
    parser.add_argument("--http", required=True, help="HOST:PORT for webhooks")
    parser.add_argument("--smtp", default="", help="HOST:PORT for the SMTP server (none if empty)")
    parser.add_argument("--spool", required=True)
    args = parser.parse_args(argv)
    store = Spool(Path(args.spool))
    host, _, port = args.http.rpartition(":")
    server = sink_server(host, int(port), store)
    controller = None
    if args.smtp:
        shost, _, sport = args.smtp.rpartition(":")
        controller = smtp_server(shost, int(sport), store)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"notification sink: webhooks on http://{args.http}, SMTP on {args.smtp or '(off)'}", flush=True)
    stop.wait()
    server.shutdown()
    if controller:
        controller.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
