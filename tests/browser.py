"""A real headless browser for page tests: Debian's ``chromium`` driven over the Chrome DevTools Protocol
(websocket-client, already in the lock), with no browser download and no driver binary.

:func:`open_page` starts Chromium with its own profile in a temporary folder, sets cookies (an Airflow
login), loads one URL, and returns what a person would check: the page's text, whether every image
rendered, every console error and uncaught exception, failed requests, the load time, and a screenshot.
Chromium is stopped by its PID, whatever happens; every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The Chromium binary on PATH, or ``None``."""
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


@dataclass
class Page:
    """What the browser saw of one page."""

    url: str
    status: int | None
    text: str
    images: int
    broken_images: list[str]
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    screenshot: bytes = b""


class _Session:
    def __init__(self, ws_url: str, timeout: float) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        wanted = self.next_id
        self.ws.send(json.dumps({"id": wanted, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)
        raise TimeoutError(f"no answer to {method} within {timeout} s")

    def wait_for(self, method: str, timeout: float) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise TimeoutError(f"no {method} within {timeout} s")


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before it listened")
        time.sleep(0.1)
    raise TimeoutError(f"chromium did not open its DevTools port within {timeout} s")


def open_page(url: str, *, cookies: list[dict[str, Any]] | None = None, timeout: float = 60.0,
              screenshot: Path | None = None, width: int = 1280, height: int = 900) -> Page:  # fmt: skip
    """Load ``url`` in headless Chromium and report what it showed.

    :param cookies: CDP cookie objects (``name``, ``value``, ``url``) set before loading.
    :param screenshot: where to keep the full-page PNG, if anywhere.
    """
    binary = chromium()
    if binary is None:
        raise RuntimeError(f"no Chromium on PATH (looked for {', '.join(BINARIES)}; apt-get install chromium)")
    profile = Path(tempfile.mkdtemp(prefix="modelwatch-chromium-"))
    argv = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-extensions", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port = _devtools_port(profile, proc, timeout=30)
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        target = next(t for t in targets if t.get("type") == "page")
        session = _Session(target["webSocketDebuggerUrl"], timeout)
        for domain in ("Page", "Runtime", "Log", "Network"):
            session.call(f"{domain}.enable")
        for cookie in cookies or []:
            session.call("Network.setCookie", **cookie)
        started = time.monotonic()
        session.call("Page.navigate", url=url)
        session.wait_for("Page.loadEventFired", timeout)
        load_seconds = time.monotonic() - started
        result = session.call("Runtime.evaluate", returnByValue=True, expression="""({
            text: document.body ? document.body.innerText : '',
            images: document.images.length,
            broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 80))
        })""")["result"]["value"]
        shot = base64.b64decode(session.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        session.ws.close()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    status, errors, failed = None, [], []
    for event in session.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.responseReceived" and params.get("type") == "Document" and status is None:
            status = params["response"]["status"]
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.loadingFailed":
            failed.append(params.get("errorText", ""))
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(shot)
    return Page(url, status, result["text"], result["images"], result["broken"], errors, failed, load_seconds, shot)
