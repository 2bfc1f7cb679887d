"""Alertmanager webhook receiver: stores every notification it gets, one JSON document per line.

``POST /alerts`` appends the JSON body to the output file, ``GET /alerts`` returns everything received as a
JSON list, ``GET /health`` answers 200. Run with ``python -m devstack.webhook_receiver --port P --out FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def read_webhook(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read back the notifications stored by the receiver.

    :param path: the receiver's output file (``<state>/webhook/received.jsonl``).
    :returns: one dict per received POST, oldest first; an empty list when nothing arrived yet.
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
                    items = read_webhook(out)
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
            self._reply(200, b'{"status":"ok"}')

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until SIGTERM or Ctrl-C.

    :param argv: arguments (default ``sys.argv[1:]``).
    :returns: the process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file to append to")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.out)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # The stack stops services with SIGTERM; turn it into a clean shutdown that closes the socket.
    signal.signal(signal.SIGTERM, _stop)
    print(f"webhook receiver on http://{args.host}:{args.port}/alerts -> {args.out}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
