"""POST /messages: accept a message for a room (202); ProcessMessage and AnalyzeSentiment follow."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.messages import service
from steps.messages.schemas import MessageAccepted, SendMessageIn

config = {
    "name": "SendMessage",
    "type": "api",
    "path": "/messages",
    "method": "POST",
    "body": SendMessageIn,
    "responses": {202: MessageAccepted, 400: ErrorEnvelope, 401: ErrorEnvelope},
    "emits": ["message.sent"],
    "flows": ["messages"],
    "description": "Send `text` (1-2,000 characters) to a `room` (default `general`). The "
    "message appears on the `chat` stream at once; its sentiment follows.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    body: SendMessageIn = req.body
    message = service.new_message(body.text, body.room, service.author_of(req.user), ctx.now())
    await ctx.emit({"topic": "message.sent", "data": message.model_dump(mode="json")})
    await ctx.streams.chat.set(message.room, str(message.id), service.chat_item(message))
    ctx.logger.info("message sent", id=str(message.id), room=message.room)
    return {"status": 202, "body": MessageAccepted(id=message.id)}
