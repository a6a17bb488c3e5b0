"""Postgres LISTEN/NOTIFY: wakes the workers of every instance when new work is committed, and
carries stream changes between instances."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import URL

from ._logging import get_logger

CHANNEL = "stepwise_work"


def libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener:
    """Holds one LISTEN connection; reconnects by itself (and wakes once, to catch up).

    `on_notify(channel, payload)` gets each notification's payload; after every (re)connection
    it is called once per channel with payload None: notifications sent while we were not
    listening are lost, the receiver looks for what it missed.
    """

    def __init__(
        self, url: URL, on_notify: Callable[[str, str | None], None], channels: list[str]
    ) -> None:
        self.conninfo = libpq_url(url)
        self.on_notify = on_notify
        self.channels = channels
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(component="listener")
        self.connected = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stepwise-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, application_name="stepwise-listen"
                ) as conn:
                    for channel in self.channels:
                        await conn.execute(f'LISTEN "{channel}"')
                    self.connected.set()
                    backoff = 0.2
                    # Anything committed while we were not listening: look once.
                    for channel in self.channels:
                        self.on_notify(channel, None)
                    while True:
                        async for note in conn.notifies(timeout=30.0):
                            self.on_notify(note.channel, note.payload)
                        await conn.execute(
                            "SELECT 1"
                        )  # a quiet half hour must not hide a dead socket
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                self._log.warning(
                    "LISTEN connection lost; reconnecting", error=str(exc), retry_in=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
