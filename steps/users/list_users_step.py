"""GET /users: one page of users, oldest first, with the total."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.users import service
from steps.users.schemas import ListUsersQuery, UserOut, UserPage

config = {
    "name": "ListUsers",
    "type": "api",
    "path": "/users",
    "method": "GET",
    "query": ListUsersQuery,
    "responses": {200: UserPage, 400: ErrorEnvelope, 401: ErrorEnvelope},
    "flows": ["users"],
    "description": "Users, paginated with `limit` (1-100, default 20) and `offset`.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        users, total = await service.list_users(session, req.query.limit, req.query.offset)
        items = [UserOut.model_validate(u) for u in users]
    page = UserPage(items=items, total=total, limit=req.query.limit, offset=req.query.offset)
    return {"status": 200, "body": page}
