"""Alertmanager webhook receiver: stores every notification it gets, one JSON document per line.

``POST /alerts`` appends the JSON body to the output file and prints one line per alert to stdout,
``GET /alerts`` returns everything received as a JSON list, ``GET /health`` answers 200. Run with
``python -m devstack.webhook_receiver --port P --out FILE``.

Standard library only and self-contained: docker-compose.yaml mounts this very file into a
``python:3.11-slim`` container and runs ``python webhook_receiver.py --host 0.0.0.0 --port 9095 --out
/data/received.jsonl``. The SMTP sink (:mod:`devstack.smtp_sink`) borrows :func:`read_jsonl`,
:func:`service_parser` and :func:`serve_until_stopped` from here.

Why: Alertmanager ships no receiver that records what it sends, and the tests and the demo read back
exactly what it delivered. Written on ``http.server`` alone, it runs in the stock python:slim image.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file that a server appends to.

    :param path: the file.
    :returns: one document per line, oldest first; an empty list when the file does not exist yet.
    """
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        # A reader racing the writer may see a half-written last line; it shows up on the next read.
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def read_webhook(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read back the notifications stored by the receiver.

    :param path: the receiver's output file (``<state>/webhook/received.jsonl``).
    :returns: one dict per received POST, oldest first; an empty list when nothing arrived yet.
    """
    return read_jsonl(path)


def _alert_lines(doc: Any) -> list[str]:
    """One ``status alertname model=... severity=...`` line per alert of a notification."""
    alerts = doc.get("alerts") if isinstance(doc, dict) else None
    lines = []
    for alert in alerts if isinstance(alerts, list) else []:
        if not isinstance(alert, dict):
            continue
        labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
        lines.append(
            f"{alert.get('status', '?')} {labels.get('alertname', '?')} "
            f"model={labels.get('model', '-')} severity={labels.get('severity', '-')}"
        )
    return lines


def make_server(host: str, port: int, out: Path) -> ThreadingHTTPServer:
    """Build (but do not start) the receiver's HTTP server.

    :param host: address to bind, normally ``127.0.0.1``.
    :param port: TCP port to bind.
    :param out: JSON-lines file to append notifications to (its folder is created).
    :returns: a bound :class:`ThreadingHTTPServer`; call ``serve_forever()`` on it.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, b"ok\n", "text/plain")
            elif self.path == "/alerts":
                with lock:
                    items = read_jsonl(out)
                self._reply(200, json.dumps(items).encode())
            else:
                self._reply(404, b'{"error":"not found"}')

        def do_POST(self) -> None:
            if self.path != "/alerts":
                self._reply(404, b'{"error":"not found"}')
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as exc:
                self._reply(400, json.dumps({"error": f"invalid JSON: {exc}"}).encode())
                return
            line = json.dumps(doc, separators=(",", ":")) + "\n"
            with lock, out.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                # Tests read the file right after Alertmanager's POST returns: make the line durable first.
                os.fsync(fh.fileno())
            for summary in _alert_lines(doc):
                print(summary, flush=True)
            self._reply(200, b'{"status":"ok"}')

        def log_message(self, format: str, *args: Any) -> None:
            # No access log: the alert lines above are what `docker compose logs webhook` should show.
            pass

    return ThreadingHTTPServer((host, port), Handler)


def service_parser(description: str) -> argparse.ArgumentParser:
    """:param description: the program's description.
    :returns: a parser with the options every devstack server has: ``--host`` (default 127.0.0.1) and
        ``--port`` (required).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser


def serve_until_stopped(banner: str, stop: Callable[[], object]) -> int:
    """Wait in the main thread until SIGTERM (how the stack and ``docker stop`` stop a service) or Ctrl-C,
    while a server runs in other threads; then ``stop()`` it.

    :param banner: printed once the signal handlers are in place.
    :param stop: shuts the server down and closes its socket.
    :returns: the process exit code (0).
    """
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    print(banner, flush=True)
    try:
        # A timed wait keeps the main thread waking up, so signal handlers run promptly.
        while not stopping.wait(0.5):
            pass
    finally:
        stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """:returns: the command line of the receiver: ``--host``, ``--port``, ``--out``."""
    parser = service_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file to append to")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until SIGTERM or Ctrl-C.

    :param argv: arguments (default ``sys.argv[1:]``).
    :returns: the process exit code.
    """
    args = build_parser().parse_args(argv)
    server = make_server(args.host, args.port, args.out)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return serve_until_stopped(
        f"webhook receiver on http://{args.host}:{args.port}/alerts -> {args.out}", stop
    )


if __name__ == "__main__":
    sys.exit(main())
