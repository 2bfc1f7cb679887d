"""A small threaded HTTP reverse proxy on 127.0.0.1 that injects scripted faults in front of a REAL server.

Tests put it between modelwatch and one of the stack's servers (Prometheus, MLflow, Alertmanager, moto
S3) by pointing the Airflow connection at :attr:`FaultProxy.url`. Every request is forwarded unchanged
to the upstream server unless a scripted :class:`Fault` matches it first::

    with FaultProxy(stack.config.prometheus_url) as proxy:
        proxy.add(Fault.status_code(503, times=2))     # the next two requests get 503, then real answers
        proxy.add(Fault.reset(match="^PUT .*_manifest"))  # a connection reset instead of those requests
        ...
        assert proxy.count(status=503) == 2

Fault kinds: an HTTP status with a body (``status``), a 200 whose body is not JSON (``not_json``), a
delay before forwarding or answering (``delay``), a connection reset (``reset``), an error that echoes
the request's headers back (``echo``). Each fault applies to the next ``times`` matching requests
(``None``: every one), after skipping ``skip`` of them. The proxy can also insist on a header (``require_headers``) and answer 401 without it, so a test can prove that a
credential was actually sent.

Bounded: the proxy serves at most ``max_requests`` requests and stops itself after ``lifetime`` seconds;
delays end early when it stops. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


def airflow_conn(
    conn_type: str, url: str, *, login: str | None = None, password: str | None = None, **extra: Any
) -> str:
    """An Airflow connection to ``url`` (e.g. :attr:`FaultProxy.url`) in the JSON form of ``AIRFLOW_CONN_*``.

    :param extra: connection extras (``timeout``, ``auth``, ``max_retries``...).
    """
    parts = urlsplit(url)
    conn: dict[str, Any] = {"conn_type": conn_type, "host": parts.hostname, "port": parts.port, "schema": parts.scheme}
    if login is not None:
        conn["login"] = login
    if password is not None:
        conn["password"] = password
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade",
}  # fmt: skip


@dataclass
class Fault:
    """One scripted misbehaviour.

    :param kind: ``status`` | ``not_json`` | ``delay`` | ``reset``.
    :param match: which requests: a regex searched in ``"METHOD /path?query"``, a callable
        ``(method, path) -> bool``, or ``None`` for all.
    :param times: how many matching requests it applies to (``None``: all of them).
    :param skip: matching requests to let through untouched before it starts applying.
    :param status: HTTP status for ``status`` / ``not_json``.
    :param body: response body for ``status`` / ``not_json``.
    :param content_type: response Content-Type.
    :param headers: extra response headers (e.g. ``Retry-After``).
    :param seconds: delay for ``delay``.
    :param then: for ``delay``: ``forward`` the request after the delay, or ``drop`` it (close, no answer).
    :param prometheus: for ``echo``: wrap the echo in a Prometheus error document.
    """

    kind: str
    match: str | Callable[[str, str], bool] | None = None
    times: int | None = 1
    skip: int = 0
    status: int = 503
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    then: str = "forward"
    prometheus: bool = True
    seen: int = 0
    applied: int = 0

    # -- constructors -------------------------------------------------------------------------------
    @classmethod
    def status_code(cls, status: int, body: bytes | str = b"", *, content_type: str = "application/json",
                    **kw: Any) -> Fault:  # fmt: skip
        """Answer ``status`` with ``body`` instead of forwarding."""
        data = body.encode() if isinstance(body, str) else body
        return cls("status", status=status, body=data, content_type=content_type, **kw)

    @classmethod
    def not_json(cls, body: bytes | str = b"<html><body>502 Bad Gateway</body></html>", *, status: int = 200,
                 **kw: Any) -> Fault:  # fmt: skip
        """Answer with an HTML body (what a captive proxy or load balancer sends)."""
        data = body.encode() if isinstance(body, str) else body
        return cls("not_json", status=status, body=data, content_type="text/html", **kw)

    @classmethod
    def delay(cls, seconds: float, *, then: str = "forward", **kw: Any) -> Fault:
        """Hold the request ``seconds`` before forwarding it (or dropping it)."""
        return cls("delay", seconds=seconds, then=then, **kw)

    @classmethod
    def echo(cls, status: int = 400, *, prometheus: bool = True, **kw: Any) -> Fault:
        """Answer ``status`` with the request's own headers in the error text, as some misconfigured
        servers and debugging proxies do (a credential sent in a header comes back in the error)."""
        return cls("echo", status=status, prometheus=prometheus, **kw)

    @classmethod
    def reset(cls, **kw: Any) -> Fault:
        """Reset the TCP connection (RST) instead of answering."""
        return cls("reset", **kw)

    # -- matching ----------------------------------------------------------------------------------------
    def _matches(self, method: str, path: str) -> bool:
        if self.match is None:
            return True
        if callable(self.match):
            return bool(self.match(method, path))
        return re.search(self.match, f"{method} {path}") is not None

    def claim(self, method: str, path: str) -> bool:
        """Whether this fault applies to this request (and count it); called under the proxy's lock."""
        if not self._matches(method, path):
            return False
        self.seen += 1
        if self.seen <= self.skip:
            return False
        if self.times is not None and self.applied >= self.times:
            return False
        self.applied += 1
        return True


@dataclass
class Seen:
    """A request the proxy received, and what it did with it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    action: str  # "forwarded" or the fault kind or "unauthorized"
    status: int | None  # status sent back (None for a reset or a drop)
    at: float  # time.monotonic()
    wall: float  # time.time(), to compare with file modification times


class FaultProxy:
    """Reverse proxy to ``upstream`` with scriptable faults (see the module docstring).

    :param upstream: base URL of the real server (``http://127.0.0.1:PORT``).
    :param lifetime: seconds after which the proxy stops itself.
    :param max_requests: requests served before it answers 503 to everything (a runaway client guard).
    :param require_headers: header -> exact value every request must carry, else 401.
    :param upstream_timeout: seconds to wait for the upstream server.
    """

    def __init__(
        self,
        upstream: str,
        *,
        lifetime: float = 180.0,
        max_requests: int = 5000,
        require_headers: Mapping[str, str] | None = None,
        upstream_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.lifetime = lifetime
        self.max_requests = max_requests
        self.require_headers = dict(require_headers or {})
        self.upstream_timeout = upstream_timeout
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        #: requests received so far (counted on arrival; :attr:`seen` records them once answered)
        self.received = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); pending delays end at once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -----------------------------------------------------------------------------------------
    def add(self, *faults: Fault) -> FaultProxy:
        """Append faults; the first matching one with uses left applies to a request."""
        with self._lock:
            self.faults.extend(faults)
        return self

    def clear(self) -> None:
        """Remove every fault: from now on the proxy forwards everything."""
        with self._lock:
            self.faults.clear()

    def count(self, *, action: str | None = None, status: int | None = None, match: str | None = None) -> int:
        """How many requests were seen with that action/status/``"METHOD path"`` regex."""
        with self._lock:
            seen = list(self.seen)
        return sum(
            1
            for s in seen
            if (action is None or s.action == action)
            and (status is None or s.status == status)
            and (match is None or re.search(match, f"{s.method} {s.path}"))
        )

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.claim(method, path):
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False when the proxy stopped meanwhile."""
        return not self._stopped.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        length = str(len(body))
        for name, value in headers.items():
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # a HEAD answer has no body but tells the object's size
            elif name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST: the client sees "connection reset".
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _handle(self) -> None:
        proxy = self.owner
        method, path = self.command, self.path
        with proxy._lock:
            proxy.received += 1
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items()}

        def record(action: str, status: int | None) -> None:
            proxy._record(Seen(method, path, headers, body, action, status, time.monotonic(), time.time()))

        if len(proxy.seen) >= proxy.max_requests:
            record("limit", 503)
            self._send(503, b'{"error":"fault proxy request limit reached"}', {"Content-Type": "application/json"})
            return
        for name, value in proxy.require_headers.items():
            if self.headers.get(name) != value:
                record("unauthorized", 401)
                self._send(401, b'{"error":"unauthorized"}', {"Content-Type": "application/json"})
                return
        fault = proxy._pick(method, path)
        if fault is not None and fault.kind in ("status", "not_json"):
            record(fault.kind, fault.status)
            self._send(fault.status, fault.body, {"Content-Type": fault.content_type, **fault.headers})
            return
        if fault is not None and fault.kind == "echo":
            echoed = f"bad request {method} {path} with headers {headers}"
            doc = {"status": "error", "errorType": "bad_data", "error": echoed} if fault.prometheus else {"error": echoed}
            record("echo", fault.status)
            self._send(fault.status, json.dumps(doc).encode(), {"Content-Type": "application/json"})
            return
        if fault is not None and fault.kind == "reset":
            record("reset", None)
            self._reset()
            return
        if fault is not None and fault.kind == "delay":
            if not proxy._wait(fault.seconds) or fault.then == "drop":
                record("drop", None)
                self._reset()
                return
        status, resp_headers, resp_body = self._forward(method, path, body)
        record("forwarded" if fault is None else f"{fault.kind}+forwarded", status)
        self._send(status, resp_body, resp_headers)

    def _forward(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        proxy = self.owner
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.upstream_timeout)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
            headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body if body or method not in ("GET", "HEAD") else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k: v for k, v in resp.getheaders()}, data
        except OSError as exc:
            # The upstream itself is down: say so the way a real reverse proxy does.
            return 502, {"Content-Type": "text/plain"}, f"fault proxy: upstream unreachable: {exc}".encode()
        finally:
            conn.close()

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, OSError, ValueError):
            # the client went away (timed out) or the connection was reset on purpose
            self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass
