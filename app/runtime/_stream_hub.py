"""The fan-out of stream changes to the clients connected to this process.

Changes reach the hub after their transaction commits: directly on SQLite (one process), through
Postgres NOTIFY otherwise (every instance, in commit order). Per group, the hub delivers changes
in version order, once: a gap (a notification lost while the LISTEN connection was down, a
write by a process that cannot notify us) is filled from the database. Each client has a
bounded queue: publishing never waits for a client, and a client whose queue overflows is cut
off with a reason instead of slowing anyone else down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import _json, _stream_store
from ._logging import get_logger
from ._stream_store import Change, Snapshot

if TYPE_CHECKING:
    from ._runtime import Runtime

GroupKey = tuple[str, str]
# How long an out-of-order change waits for the one before it before the database is asked.
GAP_SECONDS = 0.05


class ConnectionRefused(Exception):
    """A new client may not connect: `code` says why (`too_many_connections`, `shutting_down`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def user_key(user: Any) -> str:
    """What the per-user connection limit counts by: the user's id."""
    value = user.get("id") if isinstance(user, dict) else getattr(user, "id", None)
    return str(value) if value is not None else str(user)


def control(kind: str, type_: str, fields: dict[str, Any], event_id: int | None = None) -> Any:
    """A protocol frame that is not a change: `{"type": ..., ...}` (the ASGI message of a
    WebSocket text frame) or a named Server-Sent Event (bytes)."""
    if kind == "ws":
        return {"type": "websocket.send", "text": _json.dumps({"type": type_, **fields})}
    head = f"event: {type_}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return (head + "data: " + _json.dumps(fields) + "\n\n").encode()


HEARTBEATS: dict[str, Any] = {
    "ws": control("ws", "ping", {}),
    "sse": b": ping\n\n",
}


class Connection:
    """One client (a WebSocket, or an SSE response) and its bounded queue of encoded frames."""

    def __init__(self, hub: StreamHub, user: Any, kind: str, limit: int) -> None:
        self.hub = hub
        self.user = user
        self.user_key = user_key(user)
        self.kind = kind  # "ws" | "sse"
        self.limit = limit
        # What the writer sends: ASGI messages (WebSocket) or encoded events (SSE).
        self.frames: deque[Any] = deque()
        # Frames of initial syncs (snapshots) in the queue: they do not count against `limit`,
        # since a snapshot is as large as its group, not as slow as its reader.
        self.exempt = 0
        # The writer waits on a bare future (no timer per message: the hub's watchdog sends
        # heartbeats and cuts off stuck writers; per-message timers and events would churn
        # garbage through the old generation with 1,000 connections).
        self._waiter: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self.last_sent = loop.time()
        self.sending_since = 0.0  # when the writer started on a batch (0: not sending)
        self.ended = asyncio.Event()
        self.closed: tuple[str, str] | None = None  # (code, message) when the server ends it
        self.subscriptions: dict[GroupKey, Subscription] = {}

    def push(self, frame: Any, exempt: bool = False) -> None:
        if self.closed is not None:
            return
        if exempt:
            self.exempt += 1
        elif len(self.frames) - self.exempt >= self.limit:
            self.hub.drop(
                self,
                "slow_consumer",
                f"more than {self.limit} messages were waiting for this client; "
                "reconnect (and resume from the last version seen)",
            )
            return
        self.frames.append(frame)
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """A future the writer awaits until there is something to send (or the end)."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
        if self.frames or self.closed is not None or self.ended.is_set():
            waiter.set_result(None)
        return waiter

    def take(self) -> list[Any]:
        """Every queued frame, oldest first (the writer sends them; the queue starts over)."""
        frames = list(self.frames)
        self.frames.clear()
        self.exempt = 0
        return frames

    def encode(self, change: Change) -> Any:
        return change.sse() if self.kind == "sse" else change.ws_message()


class Subscription:
    """One (stream, group) followed by one connection. Until its snapshot is sent, live changes
    wait in `pending`; afterwards anything not newer than what it has seen is skipped."""

    __slots__ = ("conn", "key", "last", "pending")

    def __init__(self, conn: Connection, key: GroupKey) -> None:
        self.conn = conn
        self.key = key
        self.last = 0
        self.pending: list[Change] | None = []

    def offer(self, change: Change) -> None:
        if self.pending is not None:
            self.pending.append(change)
            return
        version = change.version
        if version is not None:
            if version <= self.last:
                return
            self.last = version
        self.conn.push(self.conn.encode(change))

    def synced(self, version: int) -> None:
        pending, self.pending = self.pending or [], None
        self.last = max(self.last, version)
        for change in pending:
            self.offer(change)


class Feed:
    """The changes of one group, put in version order for the subscriptions of this process."""

    def __init__(self, hub: StreamHub, key: GroupKey) -> None:
        self.hub = hub
        self.key = key
        self.subs: dict[Subscription, None] = {}
        self.last: int | None = None  # the newest version delivered (None: no baseline yet)
        self.held: dict[int, Change] = {}  # arrived early, waiting for the gap before them
        self.inbox: deque[Change | None] = deque()  # None: catch up from the database
        self.busy = False  # reading the database: what arrives meanwhile waits in the inbox
        self.gap_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    # -- intake ---------------------------------------------------------------------------------

    def receive(self, change: Change) -> None:
        self.inbox.append(change)
        if not self.busy:
            self._drain()

    def catch_up(self) -> None:
        """Read what changed since the last version delivered (a notification may be lost)."""
        if self.last is None or None in self.inbox:
            return
        self.inbox.appendleft(None)
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        while self.inbox and not self.busy and not self.closed:
            head = self.inbox[0]
            if head is None:
                self.inbox.popleft()
                self._run(self._read_since())
                return
            if head.ref or head.spill is not None:
                self._run(self._resolve(head))
                return
            self.inbox.popleft()
            self._accept(head)

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        self.busy = True
        self.task = asyncio.create_task(self._guarded(work))

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:
            self.hub.log.warning(
                "stream catch-up failed; retrying", stream=self.key[0], error=str(exc)
            )
            self._arm_gap_timer()
        finally:
            self.busy = False
            self.task = None
            if not self.closed:
                self._drain()

    async def _resolve(self, change: Change) -> None:
        """A change too large for a notification: read its data (it stays first in the inbox)."""
        async with self.hub.runtime.read_connection() as conn:
            if change.spill is not None:
                change.data = await _stream_store.read_spill(conn, change.spill)
                change.spill = None
                if change.data is None:  # expired before we got to it
                    self.inbox.remove(change)
                return
            row = await _stream_store.read_item_row(conn, self.key[0], self.key[1], change.id or "")
        change.ref = False
        if row is not None and row[1] == change.version and not row[2]:
            change.data = row[0]
        else:
            # Changed again (or purged) since: the newer change follows; keep the order only.
            change.event = "superseded"

    async def _read_since(self) -> None:
        if self.last is None:
            return
        async with self.hub.runtime.read_connection() as conn:
            snapshot = await _stream_store.read_since(conn, self.key[0], self.key[1], self.last)
        if snapshot.reset:
            for sub in list(self.subs):
                sub.conn.push(control(sub.conn.kind, "reset", self._names()))
                sub.last = 0
        for change in snapshot.changes:
            if snapshot.reset or (change.version or 0) > self.last:
                self._deliver(change)
        self.last = max(self.last, snapshot.version)
        self._release()

    # -- ordering -------------------------------------------------------------------------------

    def _accept(self, change: Change) -> None:
        version = change.version
        if version is None:  # an ephemeral event: no order to keep
            self._deliver(change)
            return
        if self.last is None:
            self.held[version] = change
            return
        if version <= self.last:
            return  # seen already (a catch-up got there first, or a duplicate notification)
        self.held[version] = change
        self._release()

    def _release(self) -> None:
        assert self.last is not None
        while (change := self.held.pop(self.last + 1, None)) is not None:
            self.last += 1
            self._deliver(change)
        for version in [v for v in self.held if v <= self.last]:
            del self.held[version]
        if self.held:
            self._arm_gap_timer()
        elif self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    def _arm_gap_timer(self) -> None:
        if self.gap_timer is None and not self.closed:
            loop = asyncio.get_running_loop()
            self.gap_timer = loop.call_later(GAP_SECONDS, self._gap_expired)

    def _gap_expired(self) -> None:
        self.gap_timer = None
        if self.held and not self.closed:
            self.catch_up()

    def baseline(self, version: int) -> None:
        """The first subscriber's snapshot was read at `version`: order from there on."""
        if self.last is not None:
            return
        self.last = version
        self._release()

    def _deliver(self, change: Change) -> None:
        if change.event == "superseded":
            return
        self.hub.delivered += len(self.subs)
        # A copy: a subscriber cut off while we offer (its queue overflowed) leaves the dict.
        for sub in tuple(self.subs):
            sub.offer(change)

    def _names(self) -> dict[str, Any]:
        return {"stream": self.key[0], "group_id": self.key[1]}

    def close(self) -> None:
        self.closed = True
        if self.gap_timer is not None:
            self.gap_timer.cancel()
        if self.task is not None:
            self.task.cancel()


class StreamHub:
    """The subscriptions and client connections of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.feeds: dict[GroupKey, Feed] = {}
        self.connections: set[Connection] = set()
        self.per_user: dict[str, int] = {}
        self.shutting_down = False
        self.watchdog: asyncio.Task[None] | None = None
        self.log = get_logger(component="streams")
        # Counters for the Workbench and the benchmark.
        self.delivered = 0
        self.dropped = 0

    @property
    def tombstone_seconds(self) -> float:
        return self.settings.stream_tombstone_seconds

    # -- changes in -----------------------------------------------------------------------------

    def committed(self, changes: list[Change]) -> None:
        """This process committed `changes`. On Postgres they come back through NOTIFY, in
        commit order with everyone else's; on SQLite there is no one else to hear them."""
        if self.runtime.is_sqlite:
            self.publish(changes)

    def on_notify(self, payload: str | None) -> None:
        if payload is None:  # (re)connected: whatever was sent meanwhile is lost
            for feed in self.feeds.values():
                feed.catch_up()
            return
        if not self.feeds:
            return  # nobody follows anything here (a worker process): nothing to decode
        try:
            changes = _stream_store.decode_notification(payload)
        except Exception as exc:
            self.log.warning("unreadable stream notification", error=str(exc))
            return
        self.publish(changes)

    def publish(self, changes: list[Change]) -> None:
        """Hand committed changes to the groups followed here. Never raises: the writer's
        transaction is already committed, a fan-out problem must not turn it into an error."""
        feeds = self.feeds
        for change in changes:
            feed = feeds.get((change.stream, change.group))
            if feed is None:
                continue
            try:
                feed.receive(change)
            except Exception as exc:
                self.log.error(
                    "stream fan-out failed",
                    stream=change.stream,
                    error=f"{type(exc).__name__}: {exc}",
                )

    # -- connections ----------------------------------------------------------------------------

    def open(self, user: Any, kind: str) -> Connection:
        if self.shutting_down:
            raise ConnectionRefused("shutting_down", "the server is shutting down")
        key = user_key(user)
        limit = self.settings.stream_max_connections_per_user
        if self.per_user.get(key, 0) >= limit:
            raise ConnectionRefused(
                "too_many_connections",
                f"this user already has {limit} stream connections open here (the limit)",
            )
        conn = Connection(self, user, kind, self.settings.stream_queue_size)
        self.per_user[key] = self.per_user.get(key, 0) + 1
        self.connections.add(conn)
        if self.watchdog is None or self.watchdog.done():
            self.watchdog = asyncio.create_task(self._watch(), name="stepwise-streams-watchdog")
        return conn

    async def _watch(self) -> None:
        """Heartbeats for quiet connections; a cut-off for writers stuck on a client."""
        heartbeat = self.settings.stream_heartbeat_seconds
        send_timeout = self.settings.stream_send_timeout_seconds
        tick = max(0.02, min(1.0, heartbeat / 2, send_timeout / 4))
        loop = asyncio.get_running_loop()
        while self.connections:
            await asyncio.sleep(tick)
            now = loop.time()
            for conn in list(self.connections):
                if conn.closed is not None:
                    continue
                if conn.sending_since and now - conn.sending_since > send_timeout:
                    self.drop(
                        conn, "slow_consumer", f"the client took nothing for {send_timeout:g}s"
                    )
                elif (
                    not conn.frames and not conn.sending_since and now - conn.last_sent >= heartbeat
                ):
                    conn.push(HEARTBEATS[conn.kind])

    def close(self, conn: Connection) -> None:
        """The client is gone: forget it (idempotent)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        count = self.per_user.get(conn.user_key, 1) - 1
        if count > 0:
            self.per_user[conn.user_key] = count
        else:
            self.per_user.pop(conn.user_key, None)
        for sub in list(conn.subscriptions.values()):
            self.unsubscribe(sub)
        conn.ended.set()
        conn.wake()

    def drop(self, conn: Connection, code: str, message: str) -> None:
        """End a connection from the server's side, with a reason its handler sends."""
        if conn.closed is not None:
            return
        conn.closed = (code, message)
        if code == "slow_consumer":
            self.dropped += 1
            self.log.warning("stream client cut off", reason=message, user=conn.user_key)
        for sub in list(conn.subscriptions.values()):
            self.unsubscribe(sub)
        conn.frames.clear()
        conn.exempt = 0
        conn.ended.set()
        conn.wake()

    async def shutdown(self, reason: str = "the server is shutting down") -> None:
        """Refuse new clients and end every connection (they are told why)."""
        self.shutting_down = True
        if self.watchdog is not None:
            await cancel_quietly(self.watchdog)
            self.watchdog = None
        for conn in list(self.connections):
            self.drop(conn, "shutting_down", reason)
        for feed in list(self.feeds.values()):
            feed.close()
        self.feeds.clear()

    # -- subscriptions --------------------------------------------------------------------------

    async def subscribe(
        self, conn: Connection, stream: str, group: str, since: int | None
    ) -> Subscription:
        """Follow a group: queue its items (or what changed after `since`), then live changes.

        The subscription listens before the snapshot is read, so nothing committed in between
        is missed; what the snapshot already holds is skipped by version.
        """
        key = (stream, group)
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(self, key)
        sub = Subscription(conn, key)
        feed.subs[sub] = None
        conn.subscriptions[key] = sub
        try:
            async with self.runtime.read_connection() as db:
                snapshot = await _stream_store.read_since(db, stream, group, since)
        except BaseException:
            self.unsubscribe(sub)
            raise
        if conn.closed is not None or conn.subscriptions.get(key) is not sub:
            return sub
        self._send_snapshot(sub, snapshot)
        sub.synced(snapshot.version)
        feed.baseline(snapshot.version)
        return sub

    def _send_snapshot(self, sub: Subscription, snapshot: Snapshot) -> None:
        conn = sub.conn
        names = {"stream": sub.key[0], "group_id": sub.key[1]}
        if snapshot.reset:
            conn.push(control(conn.kind, "reset", names), exempt=True)
        for change in snapshot.changes:
            conn.push(conn.encode(change), exempt=True)
        conn.push(
            control(
                conn.kind,
                "subscribed",
                {**names, "version": snapshot.version, "items": len(snapshot.changes)},
                event_id=snapshot.version,
            ),
            exempt=True,
        )

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.conn.subscriptions.get(sub.key) is sub:
            del sub.conn.subscriptions[sub.key]
        feed = self.feeds.get(sub.key)
        if feed is None:
            return
        feed.subs.pop(sub, None)
        if not feed.subs:
            feed.close()
            del self.feeds[sub.key]

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "groups": len(self.feeds),
            "subscriptions": sum(len(f.subs) for f in self.feeds.values()),
            "delivered": self.delivered,
            "cut_off": self.dropped,
        }


async def cancel_quietly(task: asyncio.Task[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
