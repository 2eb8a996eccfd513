"""Outgoing notifications (budget alerts, invitations): one pluggable sender.

``CIC_SMTP_HOST`` set → mail goes through SMTP (STARTTLS or implicit TLS when asked, login when a user
is set); unset → each message is written to the log instead, so a laptop install needs no mail server.
Tests point the SMTP settings at a local ``aiosmtpd`` server.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from cic.errors import CICError
from cic.settings import Settings

log = logging.getLogger("cic.notify")


class NotificationError(CICError):
    """A message could not be handed to the mail server."""

    status_code = 502
    error_type = "api_error"
    default_code = "notification_failed"


class EmailSender(Protocol):
    def send(self, *, to: Sequence[str], subject: str, text: str, html: str | None = None) -> str:
        """Send one message; returns its Message-ID."""
        ...


def build_message(sender: str, to: Sequence[str], subject: str, text: str, html: str | None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].strip("> ") or None)
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


class SmtpSender:
    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.user = settings.smtp_user
        self.password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        self.security = settings.smtp_security
        self.sender = settings.smtp_from
        self.timeout = settings.smtp_timeout_s

    def send(self, *, to: Sequence[str], subject: str, text: str, html: str | None = None) -> str:
        if not to:
            raise ValueError("a message needs at least one recipient")
        msg = build_message(self.sender, to, subject, text, html)
        try:
            smtp: smtplib.SMTP
            if self.security == "tls":
                ctx = ssl.create_default_context()
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=ctx)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password or "")
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotificationError(f"could not send mail through {self.host}:{self.port}: {exc}") from exc
        log.info("mail sent", extra={"to": list(to), "subject": subject})
        return str(msg["Message-ID"])


class LogSender:
    """No mail server configured: the message goes to the log, whole, so nothing is silently dropped."""

    def __init__(self, settings: Settings) -> None:
        self.sender = settings.smtp_from

    def send(self, *, to: Sequence[str], subject: str, text: str, html: str | None = None) -> str:
        msg = build_message(self.sender, to, subject, text, html)
        log.warning("CIC_SMTP_HOST is not set; mail not sent", extra={"to": list(to), "subject": subject, "body": text})
        return str(msg["Message-ID"])


def email_sender(settings: Settings) -> EmailSender:
    return SmtpSender(settings) if settings.smtp_host else LogSender(settings)
