"""The one clock of the runtime: real by default, movable by hand in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Clock:
    """Wall-clock time in epoch seconds. Every timestamp the runtime stores comes from here."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return time.time()

    def on_advance(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever time jumps (only a manual clock jumps)."""
        self._listeners.append(callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock(Clock):
    """A clock that only moves when told to: tests advance it instead of sleeping."""

    def __init__(self, start: float | None = None) -> None:
        super().__init__()
        self._now = time.time() if start is None else start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        for callback in list(self._listeners):
            callback()

    def set(self, when: float) -> None:
        self._now = when
        for callback in list(self._listeners):
            callback()

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + seconds
        woke = asyncio.Event()
        self.on_advance(woke.set)
        try:
            while self._now < deadline:
                woke.clear()
                await woke.wait()
        finally:
            self._listeners.remove(woke.set)
