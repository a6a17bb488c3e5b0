"""GET /orders/{id}: an order, its items and the history of its statuses (owner or admin)."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.orders import service
from steps.orders.schemas import OrderOut

config = {
    "name": "GetOrder",
    "type": "api",
    "path": "/orders/{id}",
    "method": "GET",
    "responses": {200: OrderOut, 401: ErrorEnvelope, 404: ErrorEnvelope},
    "flows": ["orders"],
    "description": "The order's owner or an admin; for anyone else it does not exist (404).",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        order = await service.get_order(session, req.user, req.params["id"])
    return {"status": 200, "body": order}
