"""GET /orders: the caller's own orders, newest first, paginated."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.orders import service
from steps.orders.schemas import ListOrdersQuery, OrderPage, OrderSummary

config = {
    "name": "ListOrders",
    "type": "api",
    "path": "/orders",
    "method": "GET",
    "query": ListOrdersQuery,
    "responses": {200: OrderPage, 400: ErrorEnvelope, 401: ErrorEnvelope},
    "flows": ["orders"],
    "description": "Your orders (admins too see only their own here), newest first, with "
    "`limit` (1-100, default 20) and `offset`.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        orders, total = await service.list_orders(
            session, req.user, req.query.limit, req.query.offset
        )
        items = [OrderSummary.model_validate(o) for o in orders]
    page = OrderPage(items=items, total=total, limit=req.query.limit, offset=req.query.offset)
    return {"status": 200, "body": page}
