"""POST /content: accept a text for moderation; the verdict comes later (GET /content/{id})."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.content import service
from steps.content.schemas import ContentAccepted, SubmitContent

config = {
    "name": "SubmitContent",
    "type": "api",
    "path": "/content",
    "method": "POST",
    "body": SubmitContent,
    "responses": {202: ContentAccepted, 400: ErrorEnvelope, 401: ErrorEnvelope},
    "emits": ["content.submitted"],
    "flows": ["content"],
    "description": "Text of 1-5,000 characters, stored as `pending` and moderated in the "
    "background; poll GET /content/{id} for the verdict.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    item = await service.submit(await ctx.session(), str(req.user.id), req.body.text, ctx.now())
    await ctx.emit(
        {
            "topic": "content.submitted",
            "data": {"id": str(item.id), "text": item.text, "author": item.author},
        }
    )
    ctx.logger.info("Content submitted", content_id=str(item.id), chars=len(item.text))
    return {"status": 202, "body": {"id": item.id, "status": "pending"}}
