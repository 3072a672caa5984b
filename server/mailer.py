"""Outgoing e-mail over SMTP when configured; otherwise the message goes to the log for the admin."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from server.config import SmtpSettings

log = logging.getLogger(__name__)


def smtp_enabled(settings: SmtpSettings) -> bool:
    """Whether e-mail can be sent."""
    return bool(settings.host)


def send_mail(settings: SmtpSettings, to: str, subject: str, body: str) -> bool:
    """Send one message; False (and a log line) when SMTP is off or fails."""
    if not smtp_enabled(settings):
        log.info("e-mail not configured; message for %s: %s", to, subject)
        return False
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = settings.sender, to, subject
    msg.set_content(body)
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=15) as smtp:
            if settings.starttls:
                smtp.starttls()
            if settings.username:
                smtp.login(settings.username, settings.password)
            smtp.send_message(msg)
        return True
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("could not send e-mail to %s: %s", to, exc)
        return False
