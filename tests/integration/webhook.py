"""What the stack's webhook receiver got from Alertmanager, for the tests that wait on it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from polling import wait_until


def received(stack: Any, alertname: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Every alert of every notification the receiver got, optionally only those named ``alertname`` and in
    ``status`` (``firing`` or ``resolved``)."""
    with urllib.request.urlopen(f"{stack.config.webhook_url}/alerts", timeout=5) as resp:
        notifications = json.loads(resp.read())
    return [a for n in notifications for a in n.get("alerts", [])
            if (alertname is None or a["labels"].get("alertname") == alertname)
            and (status is None or a["status"] == status)]  # fmt: skip


def until_notified(stack: Any, alerts: list[dict[str, Any]], timeout: float = 30) -> None:
    """Wait until the receiver got each of ``alerts`` (a run's payload) firing.

    Days a day apart in production run seconds apart in a test: the next day's run could resolve an alert
    before Alertmanager's next group flush, and an alert resolved before it was ever sent is never sent.
    An alert by its name and model: one still firing from an earlier window, posted again, is not sent
    again (Alertmanager notifies changes of the firing set, not of annotations).
    """
    wanted = {(a["labels"]["alertname"], a["labels"]["model"]) for a in alerts}

    def firing() -> set[tuple[str, str]]:
        return {(a["labels"].get("alertname"), a["labels"].get("model")) for a in received(stack, status="firing")}

    wait_until(firing, until=lambda got: wanted <= got, timeout=timeout, interval=0.5,
               what=f"the webhook receiver to get {sorted(wanted)} firing")  # fmt: skip
