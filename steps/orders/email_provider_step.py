"""EmailProvider: where the confirmation email leaves the system (the SMTP server)."""

config = {
    "name": "EmailProvider",
    "type": "noop",
    "subscribes": ["email.sent"],
    "flows": ["orders"],
    "description": "Outside the system: the SMTP server of SMTP_HOST receives the confirmation "
    "emails that SendConfirmationEmail writes to email_outbox.",
}
