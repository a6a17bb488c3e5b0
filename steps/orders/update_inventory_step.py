"""UpdateInventory: reserve the stock of every item of a paid order, all or nothing."""

from app.runtime import Context, Event
from steps.orders import service
from steps.orders.schemas import OrderEvent

config = {
    "name": "UpdateInventory",
    "type": "event",
    "subscribes": ["payment.succeeded"],
    "input": OrderEvent,
    "emits": ["inventory.reserved", "order.failed"],
    "flows": ["orders"],
    "description": "Stock is decremented under row locks in one transaction; an item short of "
    "stock reserves nothing and the order becomes out_of_stock.",
}


async def handler(event: Event, ctx: Context) -> None:
    order_id = event.data.order_id
    order = await service.reserve_inventory(
        await ctx.session(), order_id, trace_id=ctx.trace_id, now=ctx.now()
    )
    if order is None:
        ctx.logger.info("order not paid or already handled", order_id=str(order_id))
    elif order.status == "inventory_reserved":
        ctx.logger.info("inventory reserved", order_id=str(order_id))
        await ctx.emit({"topic": "inventory.reserved", "data": {"order_id": str(order_id)}})
    else:
        ctx.logger.warning("out of stock", order_id=str(order_id))
        data = {"order_id": str(order_id), "reason": "out_of_stock"}
        await ctx.emit({"topic": "order.failed", "data": data})
