"""SendConfirmationEmail: the confirmation goes to the email outbox (and to SMTP when set)."""

import asyncio

from app.runtime import Context, Event
from app.settings import get_settings
from steps.orders import mailer, service
from steps.orders.schemas import OrderEvent

config = {
    "name": "SendConfirmationEmail",
    "type": "event",
    "subscribes": ["inventory.reserved"],
    "input": OrderEvent,
    "emits": ["order.confirmed"],
    "virtual_emits": ["email.sent"],
    "retry": {"max_attempts": 5, "backoff": "exponential", "delay": 2, "timeout": 60},
    "flows": ["orders"],
    "description": "Writes the email to email_outbox once per order; with SMTP_HOST set, also "
    "sends it (a retry after a failed commit may send it again).",
}


async def handler(event: Event, ctx: Context) -> None:
    order_id = event.data.order_id
    # Composed and sent before the unit's transaction opens: no lock is held while SMTP talks.
    async with ctx.reader() as reader:
        email = await service.confirmation_email(reader, order_id)
    settings = get_settings()
    sent_at = None
    if email is not None and settings.smtp_host:
        await asyncio.to_thread(mailer.send_smtp, email, settings)
        sent_at = ctx.now()
    order = await service.confirm_order(
        await ctx.session(), order_id, email, sent_at=sent_at, trace_id=ctx.trace_id, now=ctx.now()
    )
    if order is None:
        ctx.logger.info("order not awaiting confirmation", order_id=str(order_id))
        return
    ctx.logger.info("order confirmed", order_id=str(order_id), emailed=email is not None)
    await ctx.emit({"topic": "order.confirmed", "data": {"order_id": str(order_id)}})
