"""POST /orders: a pending order priced from the catalogue; its payment runs in the background."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.orders import service
from steps.orders.schemas import CreateOrder, OrderOut

config = {
    "name": "CreateOrder",
    "type": "api",
    "path": "/orders",
    "method": "POST",
    "body": CreateOrder,
    "responses": {201: OrderOut, 400: ErrorEnvelope, 401: ErrorEnvelope},
    "emits": ["order.created"],
    "flows": ["orders"],
    "description": "Order 1-50 items of the catalogue (quantity 1-100; the same sku twice adds "
    "up). 400 `unknown_sku` names each sku not in the catalogue. The card (default: a test card "
    "that is accepted; 4000 0000 0000 0002 is always declined) is kept as its last four digits.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    session = await ctx.session()
    order = await service.create_order(
        session, req.user, req.body, trace_id=ctx.trace_id, now=ctx.now()
    )
    await ctx.emit({"topic": "order.created", "data": {"order_id": str(order.id)}})
    ctx.logger.info("order created", order_id=str(order.id), total_cents=order.total_cents)
    return {"status": 201, "body": await service.order_out(session, order)}
