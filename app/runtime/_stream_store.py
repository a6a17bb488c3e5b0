"""The SQL of streams: versioned items, tombstones for resume, and NOTIFY payloads.

Every change of a group takes the next number of the group's version, under the group row's
lock, so versions are committed in order within a group: "everything newer than N" (a resume,
a catch-up after a lost notification) is one indexed query on `(stream, group_id, version)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

from . import _json

CHANNEL = "stepwise_streams"
# Postgres refuses NOTIFY payloads of 8000 bytes or more; keep a margin.
NOTIFY_LIMIT = 7900
SPILL_SECONDS = 60.0


@dataclass(slots=True)
class StreamOp:
    """One buffered stream write: `set`, `delete`, or an ephemeral `send`."""

    kind: str  # "set" | "delete" | "send"
    stream: str
    group: str
    id: str | None
    data: str | None  # JSON text (the item for set, the event for send)


@dataclass(slots=True)
class Change:
    """A committed change, as subscribers receive it. `data` is JSON text.

    A change that arrived by reference (`ref`) has no data yet: the receiver reads the row.
    """

    stream: str
    group: str
    id: str | None
    event: str  # "create" | "update" | "delete" | "custom"
    version: int | None
    data: str | None
    ref: bool = False
    spill: int | None = None
    _frame: str | None = field(default=None, repr=False)
    _sse: bytes | None = field(default=None, repr=False)
    _ws: dict[str, Any] | None = field(default=None, repr=False)

    def frame(self) -> str:
        """The JSON text sent to WebSocket clients (built once, shared by every subscriber)."""
        if self._frame is None:
            self._frame = (
                '{"stream":'
                + _json.dumps(self.stream)
                + ',"group_id":'
                + _json.dumps(self.group)
                + ',"id":'
                + (_json.dumps(self.id) if self.id is not None else "null")
                + ',"event":"'
                + self.event
                + '","data":'
                + (self.data if self.data is not None else "null")
                + ',"version":'
                + (str(self.version) if self.version is not None else "null")
                + "}"
            )
        return self._frame

    def ws_message(self) -> dict[str, Any]:
        """The ASGI message that sends `frame()`: one object shared by every connection (a
        dict per connection per change would be garbage the collector has to chase)."""
        if self._ws is None:
            self._ws = {"type": "websocket.send", "text": self.frame()}
        return self._ws

    def sse(self) -> bytes:
        """The Server-Sent Event: its `id:` is the version (custom events carry none)."""
        if self._sse is None:
            head = f"id: {self.version}\n" if self.version is not None else ""
            self._sse = (head + "data: " + self.frame() + "\n\n").encode()
        return self._sse


# ---------------------------------------------------------------------------------------------
# Writes

_BUMP_GROUP = text(
    "INSERT INTO stepwise_stream_groups (stream, group_id, version, pruned_version, updated_at) "
    "VALUES (:s, :g, :n, 0, :t) "
    "ON CONFLICT (stream, group_id) DO UPDATE SET "
    "version = stepwise_stream_groups.version + excluded.version, "
    "updated_at = excluded.updated_at "
    "RETURNING version"
)
_LIVE_IDS = text(
    "SELECT id FROM stepwise_stream_items "
    "WHERE stream = :s AND group_id = :g AND deleted = false AND id IN :ids"
).bindparams(bindparam("ids", expanding=True))
_UPSERT_ITEM = text(
    "INSERT INTO stepwise_stream_items (stream, group_id, id, data, version, updated_at, deleted) "
    "VALUES (:s, :g, :i, :d, :v, :t, :x) "
    "ON CONFLICT (stream, group_id, id) DO UPDATE SET data = excluded.data, "
    "version = excluded.version, updated_at = excluded.updated_at, deleted = excluded.deleted"
)
_PRUNED_MARK = text(
    "UPDATE stepwise_stream_groups SET pruned_version = COALESCE(("
    "SELECT MAX(version) FROM stepwise_stream_items "
    "WHERE stream = :s AND group_id = :g AND deleted = true AND updated_at < :cut"
    "), pruned_version) WHERE stream = :s AND group_id = :g"
)
_PRUNE = text(
    "DELETE FROM stepwise_stream_items "
    "WHERE stream = :s AND group_id = :g AND deleted = true AND updated_at < :cut"
)


async def apply_stream_ops(
    conn: AsyncConnection, ops: Sequence[StreamOp], now: float, tombstone_seconds: float
) -> list[Change]:
    """Apply buffered writes in order inside the caller's transaction; return the changes.

    Groups are locked in a fixed order (two transactions touching the same groups cannot
    deadlock); deletes leave tombstones and purge those older than `tombstone_seconds`.
    """
    if not ops:
        return []
    counts: dict[tuple[str, str], int] = {}
    setting: dict[tuple[str, str], set[str]] = {}
    for op in ops:
        if op.kind == "send":
            continue
        key = (op.stream, op.group)
        counts[key] = counts.get(key, 0) + 1
        if op.kind == "set":
            setting.setdefault(key, set()).add(op.id or "")
    next_version: dict[tuple[str, str], int] = {}
    for key in sorted(counts):
        top = (
            await conn.execute(_BUMP_GROUP, {"s": key[0], "g": key[1], "n": counts[key], "t": now})
        ).scalar_one()
        next_version[key] = int(top) - counts[key] + 1
    live: dict[tuple[str, str], set[str]] = {}
    for key, ids in setting.items():
        rows = await conn.execute(_LIVE_IDS, {"s": key[0], "g": key[1], "ids": sorted(ids)})
        live[key] = {r[0] for r in rows}
    rows_by_item: dict[tuple[str, str, str], dict[str, Any]] = {}
    pruning: set[tuple[str, str]] = set()
    changes: list[Change] = []
    for op in ops:
        if op.kind == "send":
            changes.append(Change(op.stream, op.group, None, "custom", None, op.data))
            continue
        key = (op.stream, op.group)
        version = next_version[key]
        next_version[key] = version + 1
        item = op.id or ""
        present = live.setdefault(key, set())
        if op.kind == "set":
            event = "update" if item in present else "create"
            present.add(item)
            data = op.data or "null"
        else:
            event = "delete"
            present.discard(item)
            data = "null"
            pruning.add(key)
        rows_by_item[(op.stream, op.group, item)] = {
            "s": op.stream,
            "g": op.group,
            "i": item,
            "d": data,
            "v": version,
            "t": now,
            "x": op.kind == "delete",
        }
        changes.append(
            Change(op.stream, op.group, item, event, version, None if event == "delete" else data)
        )
    if rows_by_item:
        await conn.execute(_UPSERT_ITEM, list(rows_by_item.values()))
    cut = now - tombstone_seconds
    for key in sorted(pruning):
        params = {"s": key[0], "g": key[1], "cut": cut}
        await conn.execute(_PRUNED_MARK, params)
        await conn.execute(_PRUNE, params)
    return changes


def custom_changes(ops: Sequence[StreamOp]) -> list[Change]:
    """The changes of ephemeral events alone (nothing to store)."""
    return [Change(op.stream, op.group, None, "custom", None, op.data) for op in ops]


# ---------------------------------------------------------------------------------------------
# NOTIFY (Postgres): changes travel to every instance in commit order


def _encode_change(change: Change, with_data: bool = True) -> str:
    parts = [
        _json.dumps(change.stream),
        _json.dumps(change.group),
        _json.dumps(change.id) if change.id is not None else "null",
        '"' + change.event + '"',
        str(change.version) if change.version is not None else "null",
    ]
    if change.spill is not None:
        parts += ["null", str(change.spill)]
    elif with_data:
        parts.append(change.data if change.data is not None else "null")
    return "[" + ",".join(parts) + "]"


async def notify_changes(conn: AsyncConnection, changes: Sequence[Change], now: float) -> None:
    """Queue NOTIFYs for `changes` in the caller's transaction (sent when it commits).

    Changes are packed into payloads under the size limit; an item too large travels by
    reference (the receiver reads the row); a large custom event is parked in the spill table.
    """
    if not changes or conn.dialect.name != "postgresql":
        return
    payloads: list[str] = []
    batch: list[str] = []
    size = 2
    spilled = False
    for change in changes:
        encoded = _encode_change(change)
        if len(encoded.encode()) > NOTIFY_LIMIT - 2:
            if change.event == "custom":
                change.spill = await _spill(conn, change.data or "null", now)
                spilled = True
            encoded = _encode_change(change, with_data=False)
        length = len(encoded.encode()) + 1
        if batch and size + length > NOTIFY_LIMIT:
            payloads.append("[" + ",".join(batch) + "]")
            batch, size = [], 2
        batch.append(encoded)
        size += length
    if batch:
        payloads.append("[" + ",".join(batch) + "]")
    if spilled:
        await conn.execute(
            text("DELETE FROM stepwise_stream_spill WHERE created_at < :t"),
            {"t": now - SPILL_SECONDS},
        )
    await conn.execute(text("SELECT pg_notify(:c, :p)"), [{"c": CHANNEL, "p": p} for p in payloads])


async def _spill(conn: AsyncConnection, payload: str, now: float) -> int:
    result = await conn.execute(
        text(
            "INSERT INTO stepwise_stream_spill (payload, created_at) VALUES (:p, :t) RETURNING id"
        ),
        {"p": payload, "t": now},
    )
    return int(result.scalar_one())


def decode_notification(payload: str) -> list[Change]:
    """The changes of one NOTIFY payload (see `notify_changes`)."""
    changes = []
    for entry in _json.loads(payload):
        stream, group, item, event, version = entry[:5]
        if len(entry) == 7:
            changes.append(Change(stream, group, item, event, version, None, spill=int(entry[6])))
        elif len(entry) == 5:
            changes.append(Change(stream, group, item, event, version, None, ref=event != "delete"))
        else:
            data = entry[5]
            changes.append(
                Change(
                    stream,
                    group,
                    item,
                    event,
                    version,
                    None if event == "delete" else _json.dumps(data),
                )
            )
    return changes


# ---------------------------------------------------------------------------------------------
# Reads

_ITEM = text(
    "SELECT data, version FROM stepwise_stream_items "
    "WHERE stream = :s AND group_id = :g AND id = :i AND deleted = false"
)
_ITEM_ANY = text(
    "SELECT data, version, deleted FROM stepwise_stream_items "
    "WHERE stream = :s AND group_id = :g AND id = :i"
)
_GROUP = text(
    "SELECT id, data, version FROM stepwise_stream_items "
    "WHERE stream = :s AND group_id = :g AND deleted = false ORDER BY version"
)
_SINCE = text(
    "SELECT id, data, version, deleted FROM stepwise_stream_items "
    "WHERE stream = :s AND group_id = :g AND version > :v ORDER BY version"
)
_GROUP_ROW = text(
    "SELECT version, pruned_version FROM stepwise_stream_groups WHERE stream = :s AND group_id = :g"
)


async def read_item(conn: AsyncConnection, stream: str, group: str, item: str) -> str | None:
    row = (await conn.execute(_ITEM, {"s": stream, "g": group, "i": item})).first()
    return None if row is None else str(row[0])


async def read_item_row(
    conn: AsyncConnection, stream: str, group: str, item: str
) -> tuple[str, int, bool] | None:
    """(data, version, deleted) of an item, tombstones included."""
    row = (await conn.execute(_ITEM_ANY, {"s": stream, "g": group, "i": item})).first()
    return None if row is None else (str(row[0]), int(row[1]), bool(row[2]))


async def read_group(conn: AsyncConnection, stream: str, group: str) -> list[tuple[str, str, int]]:
    """(id, data, version) of every item of the group, oldest change first."""
    rows = await conn.execute(_GROUP, {"s": stream, "g": group})
    return [(r[0], r[1], int(r[2])) for r in rows]


@dataclass(slots=True)
class Snapshot:
    """What a subscriber needs to catch up: the changes after `since`, as of `version`."""

    changes: list[Change]
    version: int
    reset: bool  # `since` could not be honoured: this is the whole group, start over


async def read_since(conn: AsyncConnection, stream: str, group: str, since: int | None) -> Snapshot:
    """The group's items changed after version `since` (all of them with None), in version order.

    With `since`, deletes come as `delete` changes (from tombstones). When the tombstones
    needed were purged, or `since` is ahead of the group (another database), the answer is the
    whole group with `reset` set.
    """
    after = since or 0
    rows = (await conn.execute(_SINCE, {"s": stream, "g": group, "v": after})).all()
    # Read after the items: a purge racing with us can only make this answer more cautious.
    group_row = (await conn.execute(_GROUP_ROW, {"s": stream, "g": group})).first()
    current, pruned = (int(group_row[0]), int(group_row[1])) if group_row else (0, 0)
    if since and (since < pruned or since > current):
        snapshot = await read_since(conn, stream, group, None)
        snapshot.reset = True
        return snapshot
    changes = []
    version = after
    for item, data, row_version, deleted in rows:
        version = max(version, int(row_version))
        if deleted:
            if since:
                changes.append(Change(stream, group, item, "delete", int(row_version), None))
            continue
        event = "update" if since else "create"
        changes.append(Change(stream, group, item, event, int(row_version), data))
    return Snapshot(changes, version, False)


async def read_spill(conn: AsyncConnection, spill_id: int) -> str | None:
    row = (
        await conn.execute(
            text("SELECT payload FROM stepwise_stream_spill WHERE id = :i"), {"i": spill_id}
        )
    ).first()
    return None if row is None else str(row[0])


async def list_groups(conn: AsyncConnection, stream: str, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.execute(
        text(
            "SELECT g.group_id, g.version, g.updated_at, "
            "(SELECT COUNT(*) FROM stepwise_stream_items i WHERE i.stream = g.stream "
            "AND i.group_id = g.group_id AND i.deleted = false) AS items "
            "FROM stepwise_stream_groups g WHERE g.stream = :s "
            "ORDER BY g.updated_at DESC LIMIT :n"
        ),
        {"s": stream, "n": limit},
    )
    return [
        {"group_id": r[0], "version": int(r[1]), "updated_at": r[2], "items": int(r[3])}
        for r in rows
    ]
