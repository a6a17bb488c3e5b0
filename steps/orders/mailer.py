"""The order confirmation email: its text, and sending it over SMTP when SMTP_HOST is set.

Sending is an outside effect: a delivery retried after the email left (its commit failed, the
worker died) sends it again. The outbox row, keyed by `order-confirmation:<id>`, is written once.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from app.settings import Settings

SMTP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Email:
    dedupe_key: str
    recipient: str
    subject: str
    body: str


def send_smtp(email: Email, settings: Settings) -> None:
    """Hand the email to the SMTP server of the settings (blocking: run it in a thread)."""
    assert settings.smtp_host, "send_smtp needs SMTP_HOST"
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = email.recipient
    message["Subject"] = email.subject
    message.set_content(email.body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            smtp.login(settings.smtp_username, password)
        smtp.send_message(message)
