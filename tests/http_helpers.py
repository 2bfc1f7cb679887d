"""HTTP for the tests that look at a server's answer whatever its status: no proxy, no raise on 4xx/5xx."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_get(url: str, token: str = "", timeout: float = 60.0) -> tuple[int, str]:
    """(status, body) of ``GET url``, with ``Authorization: Bearer <token>`` when a token is given; any
    status is an answer (a 401 or 403 is what a permission test checks), the proxy settings are ignored
    (every server here is on 127.0.0.1)."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
