"""SMTP sink: accepts every mail on 127.0.0.1 and stores it instead of delivering it.

Each message is saved as ``<dir>/<stamp>-<id>.eml`` and summarised as one JSON line (from, to, subject,
date, body, file) in ``<dir>/messages.jsonl``. Run with ``python -m devstack.smtp_sink --port P --dir DIR``.

Why: aiosmtpd (PyPI) speaks SMTP; its stock handlers print, relay or fill a Maildir. This handler adds the
one-line JSON summary (decoded subject, text body) the tests and the demo read back. Mailpit, which
docker-compose.yaml uses, is packaged in neither Debian nor PyPI.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import sys
import threading
import time
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from devstack.webhook_receiver import read_jsonl, serve_until_stopped, service_parser

MESSAGES_FILE = "messages.jsonl"


def read_messages(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read back the summaries of the mails the sink received.

    :param directory: the sink's folder (``<state>/mail``).
    :returns: one dict per mail (keys ``from``, ``to``, ``subject``, ``date``, ``body``, ``file``), oldest
        first; an empty list when nothing arrived yet.
    """
    return read_jsonl(Path(directory) / MESSAGES_FILE)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def body_text(msg: email.message.EmailMessage) -> str:
    """Return the readable text of a message.

    Alertmanager sends HTML-only mail by default, so an HTML part is reduced to its text when there is no
    plain-text part.

    :param msg: a message parsed with :data:`email.policy.default`.
    :returns: the body text, possibly empty.
    """
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = part.get_content()
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        parser = _TextExtractor()
        parser.feed(content)
        return "\n".join(parser.parts)
    return content


class SinkHandler:
    """aiosmtpd handler that writes each message to a folder."""

    def __init__(self, directory: Path) -> None:
        """:param directory: folder for the ``.eml`` files and ``messages.jsonl`` (created)."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Store one message; called by aiosmtpd after the DATA command.

        :returns: the SMTP reply.
        """
        raw: bytes = envelope.original_content or envelope.content
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}.eml"
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        summary = {
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "subject": str(msg.get("Subject", "")),
            "date": str(msg.get("Date", "")),
            "body": body_text(msg),
            "file": name,
        }
        with self._lock:
            (self.directory / name).write_bytes(raw)
            with (self.directory / MESSAGES_FILE).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(summary) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: run the sink until SIGTERM or Ctrl-C.

    :param argv: arguments (default ``sys.argv[1:]``).
    :returns: the process exit code.
    """
    from aiosmtpd.controller import Controller

    parser = service_parser(__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="folder to store mails in")
    args = parser.parse_args(argv)

    controller = Controller(SinkHandler(args.dir), hostname=args.host, port=args.port)
    controller.start()
    return serve_until_stopped(f"SMTP sink on {args.host}:{args.port} -> {args.dir}", controller.stop)


if __name__ == "__main__":
    sys.exit(main())
