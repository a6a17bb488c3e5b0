"""GET /content/{id}: a submission and its verdict, for its author or an admin."""

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context
from steps.content import service
from steps.content.schemas import ContentOut

config = {
    "name": "GetContent",
    "type": "api",
    "path": "/content/{id}",
    "method": "GET",
    "responses": {200: ContentOut, 401: ErrorEnvelope, 404: ErrorEnvelope},
    "flows": ["content"],
    "description": "`status` is `pending` until the moderator is done, then `approved` or "
    "`flagged` (with `reason`). Someone else's content is a 404, as an unknown id.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    async with ctx.reader() as session:
        item = await service.get_for(session, req.user, req.params["id"])
        return {"status": 200, "body": ContentOut.model_validate(item)}
