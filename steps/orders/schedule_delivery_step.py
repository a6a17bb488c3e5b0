"""ScheduleDelivery: book the delivery of a confirmed order."""

from app.runtime import Context, Event
from steps.orders import service
from steps.orders.schemas import OrderEvent

config = {
    "name": "ScheduleDelivery",
    "type": "event",
    "subscribes": ["order.confirmed"],
    "input": OrderEvent,
    "emits": ["delivery.scheduled"],
    "flows": ["orders"],
}


async def handler(event: Event, ctx: Context) -> None:
    order_id = event.data.order_id
    order = await service.schedule_delivery(
        await ctx.session(), order_id, trace_id=ctx.trace_id, now=ctx.now()
    )
    if order is None:
        ctx.logger.info("order not confirmed or already scheduled", order_id=str(order_id))
        return
    assert order.delivery_date is not None
    ctx.logger.info("delivery scheduled", order_id=str(order_id), date=order.delivery_date)
    data = {"order_id": str(order_id), "delivery_date": order.delivery_date.isoformat()}
    await ctx.emit({"topic": "delivery.scheduled", "data": data})
