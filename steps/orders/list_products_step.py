"""GET /products: the catalogue, with the stock left of each product."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.orders import service
from steps.orders.schemas import ProductList, ProductOut

config = {
    "name": "ListProducts",
    "type": "api",
    "path": "/products",
    "method": "GET",
    "responses": {200: ProductList, 401: ErrorEnvelope},
    "flows": ["orders"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        products = await service.list_products(session)
        items = [ProductOut.model_validate(p) for p in products]
    return {"status": 200, "body": ProductList(items=items)}
