"""A local SMTP server (aiosmtpd) that keeps every message it receives, for tests of outgoing mail.

The ``smtp_server`` fixture yields a started ``SmtpServer``::

    settings.model_copy(update=smtp_server.settings())   # CIC_SMTP_HOST/PORT, plain SMTP
    ...code that sends mail...
    [mail] = smtp_server.wait_for(1, timeout=10)          # polls until 1 message arrived, or fails
    mail.to, mail.subject, mail.text, mail.html, mail.message (the parsed email.message.EmailMessage)
    smtp_server.refuse = "554 5.7.1 rejected"              # answer the next DATA commands with that
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.servers import free_port


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def _part(self, subtype: str) -> str | None:
        part = self.message.get_body(preferencelist=(subtype,))
        return None if part is None else str(part.get_content())

    @property
    def text(self) -> str:
        return self._part("plain") or ""

    @property
    def html(self) -> str | None:
        return self._part("html")


class SmtpServer:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.messages: list[ReceivedMail] = []
        self.refuse: str | None = None
        self._changed = threading.Condition()
        self._controller = Controller(self, hostname=self.host, port=self.port)

    # aiosmtpd handler hook
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse:
            return self.refuse
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from), rcpt_tos=[str(r) for r in envelope.rcpt_tos], message=msg
        )
        with self._changed:
            self.messages.append(mail)
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def settings(self) -> dict[str, Any]:
        """Settings overrides that send the platform's mail here (``Settings.model_copy(update=…)``)."""
        return {"smtp_host": self.host, "smtp_port": self.port, "smtp_security": "none", "smtp_user": None}

    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """The first ``n`` messages, once they have arrived; fails after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(f"expected {n} mail(s) within {timeout}s, got {len(self.messages)}")
            return list(self.messages[:n])

    def clear(self) -> None:
        with self._changed:
            self.messages.clear()

    @contextmanager
    def running(self) -> Iterator[SmtpServer]:
        self._controller.start()
        try:
            yield self
        finally:
            self._controller.stop()
