"""GET /ready: the database answers and its migrations are at head (else 503, with the reason)."""

from pydantic import BaseModel

from app.runtime import ApiRequest, Context
from steps.system.service import readiness


class Readiness(BaseModel):
    ready: bool
    database: str
    migrations: str


config = {
    "name": "Ready",
    "type": "api",
    "path": "/ready",
    "method": "GET",
    "auth": "public",
    "responses": {200: Readiness, 503: Readiness},
    "flows": ["system"],
    "description": "Readiness: 503 while the database is unreachable, its disk is full (SQLite) "
    "or migrations are pending.",
}


async def handler(req: ApiRequest, ctx: Context) -> dict[str, object]:
    report = await readiness(ctx)
    return {"status": 200 if report.ready else 503, "body": report}
