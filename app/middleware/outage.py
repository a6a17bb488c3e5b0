"""Database outages as answers, not 500s: a database that cannot be reached (down, restarting,
every connection busy) is `503 database_unavailable`, a full disk is `507 insufficient_storage`;
both in the error envelope with `Retry-After`, so that clients and load balancers wait and retry.

Only failures of the database itself are mapped (app/runtime/_db.py `database_outage`): a bad
statement or a broken constraint is a bug and stays a 500.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Scope

from app.runtime._db import database_outage

# What a client should wait before trying again: about what a Postgres restart takes, and the
# interval at which /ready is commonly probed. Space on a disk comes back more slowly.
RETRY_AFTER_SECONDS = 5
STORAGE_RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Outage:
    status: int
    code: str
    message_key: str
    retry_after: int


DATABASE_UNAVAILABLE = Outage(
    503, "database_unavailable", "error.database_unavailable", RETRY_AFTER_SECONDS
)
INSUFFICIENT_STORAGE = Outage(
    507, "insufficient_storage", "error.insufficient_storage", STORAGE_RETRY_AFTER_SECONDS
)


def outage_of(exc: BaseException) -> Outage | None:
    """The answer for an exception that is the database's failure, or None."""
    kind = database_outage(exc)
    if kind is None:
        return None
    return INSUFFICIENT_STORAGE if kind == "storage" else DATABASE_UNAVAILABLE


def outage_response(scope: Scope, outage: Outage) -> Response:
    from app.middleware.errors import envelope  # errors.py imports this module

    headers = {"Retry-After": str(outage.retry_after)}
    return envelope(scope, outage.status, outage.code, outage.message_key, headers=headers)
