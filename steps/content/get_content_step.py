"""GET /content: the welcome message in the client's language (Accept-Language)."""

from pydantic import BaseModel

from app.middleware.errors import ErrorEnvelope
from app.runtime import ApiRequest, Context


class LocalizedContent(BaseModel):
    message: str
    lang: str


config = {
    "name": "GetLocalizedContent",
    "type": "api",
    "path": "/content",
    "method": "GET",
    "responses": {200: LocalizedContent, 401: ErrorEnvelope},
    "flows": ["content"],
    "description": "`vi-VN,vi;q=0.9` gives Vietnamese; an unknown language gives English.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    return {"status": 200, "body": {"message": ctx.t("content.welcome"), "lang": ctx.locale}}
