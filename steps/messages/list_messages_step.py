"""GET /messages: one page of messages, newest first, with their sentiment when known."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.messages import service
from steps.messages.schemas import ListMessagesQuery, MessageOut, MessagePage

config = {
    "name": "ListMessages",
    "type": "api",
    "path": "/messages",
    "method": "GET",
    "query": ListMessagesQuery,
    "responses": {200: MessagePage, 400: ErrorEnvelope, 401: ErrorEnvelope},
    "flows": ["messages"],
    "description": "Messages, newest first, paginated with `limit` (1-100, default 20) and "
    "`offset`; `room` keeps one room's.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    query: ListMessagesQuery = req.query
    async with ctx.reader() as session:
        messages, total = await service.list_messages(
            session, limit=query.limit, offset=query.offset, room=query.room
        )
        items = [MessageOut.model_validate(m) for m in messages]
    page = MessagePage(items=items, total=total, limit=query.limit, offset=query.offset)
    return {"status": 200, "body": page}
