"""ProcessPayment: charge the order's card; a decline is retried, the last one is final."""

from app.runtime import Context, Event
from app.settings import get_settings
from steps.orders import service
from steps.orders.schemas import OrderEvent

MAX_ATTEMPTS = 3

config = {
    "name": "ProcessPayment",
    "type": "event",
    "subscribes": ["order.created"],
    "input": OrderEvent,
    "emits": ["payment.succeeded", "payment.failed"],
    # Short waits (0.1-0.2 s, then 0.2-0.4 s): the gateway is simulated.
    "retry": {"max_attempts": MAX_ATTEMPTS, "backoff": "exponential", "delay": 0.2},
    "flows": ["orders"],
    "description": "Simulated gateway: 4000 0000 0000 0002 is always declined, other cards fail "
    "at random at PAYMENT_FAILURE_RATE. A decline raises (the runtime retries) until the last "
    "attempt, which records payment_failed.",
}


async def handler(event: Event, ctx: Context) -> None:
    order_id = event.data.order_id
    outcome = await service.process_payment(
        await ctx.session(),
        order_id,
        attempt=ctx.attempt,
        max_attempts=MAX_ATTEMPTS,
        failure_rate=get_settings().payment_failure_rate,
        trace_id=ctx.trace_id,
        now=ctx.now(),
    )
    if outcome is None:
        ctx.logger.info("order no longer pending: nothing to charge", order_id=str(order_id))
        return
    if outcome.status == "paid":
        ctx.logger.info("payment succeeded", order_id=str(order_id), attempt=ctx.attempt)
        await ctx.emit({"topic": "payment.succeeded", "data": {"order_id": str(order_id)}})
    else:
        ctx.logger.warning("payment failed", order_id=str(order_id), reason=outcome.reason)
        data = {"order_id": str(order_id), "reason": outcome.reason}
        await ctx.emit({"topic": "payment.failed", "data": data})
