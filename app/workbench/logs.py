"""The Workbench's log buffer: the newest N structlog records of this process, pushed live."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import threading
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from app.runtime import _json

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_SECRET = re.compile(r"pass(word)?|secret|token|authorization|api[_-]?key|cookie", re.I)
_RESERVED = {"event", "level", "timestamp", "trace_id", "step", "log_level"}
_MAX_TEXT = 2000
_MAX_RECORD = 16_384  # bytes of JSON before long strings are cut to _MAX_TEXT


@functools.lru_cache(maxsize=4096)
def is_secret(key: str) -> bool:
    """Field names whose values never reach the Workbench (passwords, tokens, keys...)."""
    return _SECRET.search(key) is not None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of a log field (anything else becomes its repr, cut to a sane size)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if depth < 4 and isinstance(value, dict):
        return {
            str(k): "***" if is_secret(str(k)) else _jsonable(v, depth + 1)
            for k, v in list(value.items())[:100]
        }
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in list(value)[:100]]
    text = repr(value)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"


# One kept record: (seq, numeric level, step, trace id, the record as JSON). A tuple of atomic
# values is untracked by the garbage collector, so 10,000 of them cost a collection nothing.
_Entry = tuple[int, int, str | None, str | None, bytes]


class LogHub:
    """Keeps the newest `capacity` records; live readers wait for new ones by sequence number.

    The sink runs in whatever thread logged (sync handlers run in a thread pool), so it only
    appends to a deque and, when someone is listening, wakes the loop thread-safely.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self.records: deque[_Entry] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._listeners = 0
        self.closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._wake()

    # -- the sink -------------------------------------------------------------------------------

    def sink(self, record: dict[str, Any]) -> None:
        level = record.get("level") or record.get("log_level") or "info"
        level = level if level in LEVELS else str(level).lower()
        timestamp = record.get("timestamp")
        if not isinstance(timestamp, str):
            timestamp = datetime.now(UTC).isoformat()
        # The fast path: plain values go to orjson as they are; containers are copied (nested
        # secrets masked, sizes bounded); anything else becomes its repr.
        fields: dict[str, Any] = {}
        for key, value in record.items():
            if key in _RESERVED or not isinstance(key, str) or key[:1] == "_":
                continue
            if is_secret(key):
                value = "***"
            elif not isinstance(value, str | int | float | bool | None):
                value = _jsonable(value)
            fields[key] = value
        step = record.get("step")
        trace_id = record.get("trace_id")
        step = step if step is None or isinstance(step, str) else str(step)
        trace_id = trace_id if trace_id is None or isinstance(trace_id, str) else str(trace_id)
        entry = {
            "seq": 0,
            "timestamp": timestamp,
            "level": level,
            "message": str(record.get("event", "")),
            "step": step,
            "trace_id": trace_id,
            "fields": fields,
        }
        with self._lock:
            entry["seq"] = seq = next(self._seq)
            data = _json.dumps_bytes(entry)
            if len(data) > _MAX_RECORD:  # long strings: cut them down
                entry["message"] = _jsonable(entry["message"])
                entry["fields"] = {k: _jsonable(v) for k, v in fields.items()}
                data = _json.dumps_bytes(entry)
            self.records.append((seq, LEVELS.get(level, 20), step, trace_id, data))
        if self._listeners:
            self._wake()

    def _wake(self) -> None:
        loop, changed = self._loop, self._changed
        if loop is None or changed is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            changed.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                loop.call_soon_threadsafe(changed.set)

    # -- reading --------------------------------------------------------------------------------

    def since(self, after: int) -> list[_Entry]:
        """Entries newer than sequence number `after`, oldest first (walks from the newest end)."""
        out: list[_Entry] = []
        with self._lock:
            for entry in reversed(self.records):
                if entry[0] <= after:
                    break
                out.append(entry)
        out.reverse()
        return out

    def query(
        self,
        *,
        level: str | None = None,
        step: str | None = None,
        trace_id: str | None = None,
        text: str | None = None,
        after: int = 0,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Matching records, oldest first: the newest `limit` of them."""
        found = [
            e
            for e in self.since(after)
            if matches_filter(e, level=level, step=step, trace_id=trace_id, text=text)
        ]
        return [_json.loads(e[4]) for e in found[-limit:]] if limit > 0 else []

    async def follow(
        self, *, after: int, max_seconds: float, keepalive: float = 10.0, **filters: Any
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield batches of new matching records (an empty batch is a keep-alive) until
        `max_seconds` have passed or the hub closes."""
        assert self._changed is not None, "LogHub.start() was not called"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds
        self._listeners += 1
        try:
            while not self.closed:
                self._changed.clear()
                fresh = self.since(after)
                if fresh:
                    after = fresh[-1][0]
                    batch = [_json.loads(e[4]) for e in fresh if matches_filter(e, **filters)]
                    if batch:
                        yield batch
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    # asyncio.timeout, not wait_for, which on Python 3.11 may swallow the
                    # cancel of a client that goes away just as a record arrives.
                    async with asyncio.timeout(min(remaining, keepalive)):
                        await self._changed.wait()
                except TimeoutError:
                    if loop.time() < deadline:
                        yield []
        finally:
            self._listeners -= 1

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self.records[-1][0] if self.records else 0


def matches_filter(
    entry: _Entry,
    *,
    level: str | None = None,
    step: str | None = None,
    trace_id: str | None = None,
    text: str | None = None,
) -> bool:
    if level and entry[1] < LEVELS.get(level.lower(), 0):
        return False
    if step and entry[2] != step:
        return False
    if trace_id and entry[3] != trace_id:
        return False
    if not text:
        return True
    needle = text.lower()
    if needle.encode() not in entry[4].lower():  # cheap rejection on the stored JSON
        return False
    # then only the message and the fields (names and values), not the timestamp or level
    record = _json.loads(entry[4])
    return needle in record["message"].lower() or needle in _json.dumps(record["fields"]).lower()
