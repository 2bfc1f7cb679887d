"""Alertmanager webhook receiver of docker-compose.yaml (standard library only; runs in python:3.11-slim).

``POST /alerts`` appends the notification to a JSON-lines file and prints one line per alert to stdout
(``docker compose logs webhook``); ``GET /alerts`` returns every notification received, as a JSON list;
``GET /health`` answers 200.

    python webhook_receiver.py --host 0.0.0.0 --port 9095 --out /data/received.jsonl
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _read(out: Path) -> list[Any]:
    if not out.exists():
        return []
    items = []
    for line in out.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return items


def make_server(host: str, port: int, out: Path) -> ThreadingHTTPServer:
    """Bind the receiver (call ``serve_forever()`` on the result)."""
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
                    items = _read(out)
                self._reply(200, json.dumps(items).encode())
            else:
                self._reply(404, b'{"error":"not found"}')

        def do_POST(self) -> None:
            if self.path != "/alerts":
                self._reply(404, b'{"error":"not found"}')
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as exc:
                self._reply(400, json.dumps({"error": f"invalid JSON: {exc}"}).encode())
                return
            with lock, out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
            alerts = doc.get("alerts", []) if isinstance(doc, dict) else []
            for alert in alerts if isinstance(alerts, list) else []:
                labels = alert.get("labels", {}) if isinstance(alert, dict) else {}
                print(
                    f"{alert.get('status', '?')} {labels.get('alertname', '?')} "
                    f"model={labels.get('model', '-')} severity={labels.get('severity', '-')}",
                    flush=True,
                )
            self._reply(200, b'{"status":"ok"}')

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--out", type=Path, default=Path("/data/received.jsonl"))
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.out)
    # docker stop sends SIGTERM: leave serve_forever() so the container stops at once.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"webhook receiver on {args.host}:{args.port}, writing {args.out}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
