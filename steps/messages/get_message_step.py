"""GET /messages/{id}: one message with its sentiment once analysed, or 404."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.messages import service
from steps.messages.schemas import MessageOut

config = {
    "name": "GetMessage",
    "type": "api",
    "path": "/messages/{id}",
    "method": "GET",
    "responses": {200: MessageOut, 401: ErrorEnvelope, 404: ErrorEnvelope},
    "flows": ["messages"],
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        message = await service.get_message(session, req.params["id"])
        return {"status": 200, "body": MessageOut.model_validate(message)}
