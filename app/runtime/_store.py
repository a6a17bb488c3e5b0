"""The SQL of the runtime: state reads and writes, the outbox, claims, acks, retries."""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sqlalchemy import (
    Double,
    Integer,
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import ColumnElement, Select, Update

from . import _json
from ._db import own_errors, pg_rows
from ._schema import cron_marks, deliveries, events, state, step_runs
from ._sqlite import driver_connection
from ._wakeup import CHANNEL as WORK_CHANNEL

# ---------------------------------------------------------------------------------------------
# State


@dataclass(slots=True)
class StateOp:
    kind: str  # "set" | "delete" | "clear"
    group: str
    key: str | None = None
    value: str | None = None  # JSON text for "set"


# A state set's conflict clause, for `_UPSERT_STATE` and `_PG_ACK_AND_SET_SQL`.
_ON_STATE_CONFLICT = (
    "ON CONFLICT (group_id, key) DO UPDATE SET value = excluded.value, "
    "updated_at = excluded.updated_at"
)
_UPSERT_STATE = text(
    "INSERT INTO stepwise_state (group_id, key, value, updated_at) "  # noqa: S608 (constants)
    f"VALUES (:g, :k, :v, :t) {_ON_STATE_CONFLICT}"
)
_DELETE_STATE = text("DELETE FROM stepwise_state WHERE group_id = :g AND key = :k")
_CLEAR_STATE = text("DELETE FROM stepwise_state WHERE group_id = :g")


async def apply_state_ops(conn: AsyncConnection, ops: Sequence[StateOp], now: float) -> None:
    """Apply ops in order; consecutive ops of one kind go to the database as one executemany."""
    if not ops:
        return
    if conn.dialect.name == "sqlite":
        # Inside a transaction holding the write lock: straight to the driver, as the emits.
        apply_state_ops_sqlite(driver_connection(conn), ops, now)
        return
    for kind, run in _runs_of_one_kind(ops):
        if kind == "set":
            await conn.execute(
                _UPSERT_STATE, [{"g": o.group, "k": o.key, "v": o.value, "t": now} for o in run]
            )
        elif kind == "delete":
            await conn.execute(_DELETE_STATE, [{"g": o.group, "k": o.key} for o in run])
        else:
            await conn.execute(_CLEAR_STATE, [{"g": o.group} for o in run])


def _runs_of_one_kind(ops: Sequence[StateOp]) -> Iterator[tuple[str, Sequence[StateOp]]]:
    """Consecutive ops of one kind, in order."""
    for kind, run in itertools.groupby(ops, key=lambda op: op.kind):
        yield kind, list(run)


def apply_state_ops_sqlite(db: sqlite3.Connection, ops: Sequence[StateOp], now: float) -> None:
    """`apply_state_ops` on SQLite's driver, inside a transaction holding the write lock."""
    with own_errors():
        _apply_state_ops_sqlite(db, ops, now)


def _apply_state_ops_sqlite(db: sqlite3.Connection, ops: Sequence[StateOp], now: float) -> None:
    for kind, run in _runs_of_one_kind(ops):
        # The same statements; sqlite3 binds their :name placeholders from dicts.
        if kind == "set":
            db.executemany(
                _UPSERT_STATE.text,
                [{"g": o.group, "k": o.key, "v": o.value, "t": now} for o in run],
            )
        elif kind == "delete":
            db.executemany(_DELETE_STATE.text, [{"g": o.group, "k": o.key} for o in run])
        else:
            db.executemany(_CLEAR_STATE.text, [{"g": o.group} for o in run])


_GET = select(state.c.value).where(
    state.c.group_id == bindparam("g"), state.c.key == bindparam("k")
)
_GET_GROUP = select(state.c.key, state.c.value).where(state.c.group_id == bindparam("g"))


async def read_state(conn: AsyncConnection, group: str, key: str) -> str | None:
    return (await conn.execute(_GET, {"g": group, "k": key})).scalar_one_or_none()


async def read_state_group(conn: AsyncConnection, group: str) -> dict[str, str]:
    rows = (await conn.execute(_GET_GROUP, {"g": group})).all()
    return {key: value for key, value in rows}


async def lock_state(conn: AsyncConnection, group: str, key: str) -> str | None:
    """Read a value holding its row lock until the transaction ends (SQLite: the write lock)."""
    if conn.dialect.name == "postgresql":
        # Materialize the row first so that FOR UPDATE has something to lock even when absent.
        await conn.execute(
            text(
                "INSERT INTO stepwise_state (group_id, key, value, updated_at) "
                "VALUES (:g, :k, 'null', 0) ON CONFLICT (group_id, key) DO NOTHING"
            ),
            {"g": group, "k": key},
        )
        row = (await conn.execute(_GET.with_for_update(), {"g": group, "k": key})).first()
        if row is None or (row[0] == "null"):
            return None
        return str(row[0])
    return await read_state(conn, group, key)


# ---------------------------------------------------------------------------------------------
# The outbox: events and their deliveries


@dataclass(slots=True)
class NewEvent:
    id: str
    topic: str
    data: str  # JSON text
    trace_id: str
    emitted_by: str | None
    delay: float = 0.0
    message_group_id: str | None = None
    # (step name, max attempts) for each subscriber
    subscribers: list[tuple[str, int]] = field(default_factory=list)


# On Postgres an emit's events and deliveries go in as ONE statement, with the workers' NOTIFY
# folded in: one round trip instead of three (two INSERTs and a NOTIFY), still inside the
# caller's transaction. The rows travel as two JSON documents (orjson writes them in C, the
# server reads them in C), each event's data once: psycopg's text arrays escaped every element
# through a regular expression, which cost more than the server's work.
_PG_INSERT_EVENTS = text(
    """
    WITH batch AS (
        SELECT *
        FROM ROWS FROM (json_to_recordset(CAST(:events AS json))
                        AS (id text, topic text, data text, trace_id text, emitted_by text,
                            available_at double precision, message_group_id text))
             WITH ORDINALITY AS e(id, topic, data, trace_id, emitted_by, available_at,
                                  message_group_id, n)
    ), new_events AS (
        INSERT INTO stepwise_events (id, topic, data, trace_id, emitted_by, created_at)
        SELECT id, topic, data, trace_id, emitted_by, :now FROM batch ORDER BY n
    ), new_deliveries AS (
        INSERT INTO stepwise_deliveries (event_id, step, topic, data, status, attempts,
                                         max_attempts, available_at, message_group_id,
                                         trace_id, errors, created_at)
        SELECT e.id, d.step, e.topic, e.data, 'pending', 0, d.max_attempts, e.available_at,
               e.message_group_id, e.trace_id, '[]', :now
        FROM ROWS FROM (json_to_recordset(CAST(:deliveries AS json))
                        AS (event integer, step text, max_attempts integer))
             WITH ORDINALITY AS d(event, step, max_attempts, n)
        JOIN batch AS e ON e.n = d.event
        ORDER BY d.n
        RETURNING 1
    )
    SELECT count(*) AS deliveries,
           CASE WHEN :notify AND count(*) > 0 THEN pg_notify(:channel, '') END AS woke
    FROM new_deliveries
    """
)

_PG = PGDialect_psycopg()  # type: ignore[no-untyped-call]
# Compiled once for psycopg's own paramstyle: sent with `_db.pg_rows`, not through SQLAlchemy.
_PG_INSERT_EVENTS_SQL = str(_PG_INSERT_EVENTS.compile(dialect=_PG))

# SQLite's driver binds :name placeholders from a dict.
_SQLITE = SQLiteDialect_pysqlite(paramstyle="named")


def _in_json_array(column: Any, name: str) -> ColumnElement[bool]:
    """SQLite: `column` is one of the values of the JSON array bound as `name` (one parameter,
    so the SQL text is the same whatever their number)."""
    return column.in_(  # type: ignore[no-any-return]
        select(literal_column("value")).select_from(func.json_each(bindparam(name)))
    )


class LeaseOffer(Protocol):
    """A worker of this process offering to take new deliveries in the emit's own transaction."""

    owner: str
    expires_at: float

    def take(self, step: str, delay: float, message_group_id: str | None) -> str | None:
        """A lease token if the worker takes this delivery, else None."""

    def taken(self, claims: list[Claimed]) -> None:
        """The deliveries written leased to the worker (before the commit)."""

    def settle(self, committed: bool) -> None:
        """After the transaction: the worker runs what it took, or forgets it (rolled back)."""


@contextlib.contextmanager
def settling(offer: LeaseOffer | None) -> Iterator[None]:
    """Around an emit's transaction: settle `offer` by how the transaction ended."""
    try:
        yield
    except BaseException:
        if offer is not None:
            offer.settle(False)
        raise
    if offer is not None:
        offer.settle(True)


async def insert_events(
    conn: AsyncConnection,
    new: Sequence[NewEvent],
    now: float,
    *,
    notify: bool = False,
    offer: LeaseOffer | None = None,
) -> int:
    """Write events and one delivery per subscriber. Returns the number of deliveries.

    `notify`: wake the workers of every instance when this commits (Postgres NOTIFY), if any
    delivery was written. `offer` (SQLite): deliveries the offer takes are written already
    leased to its worker, as a claim would leave them, and handed to `offer.taken`."""
    if not new:
        return 0
    if conn.dialect.name == "postgresql":
        params = {
            "now": now,
            "notify": notify,
            "channel": WORK_CHANNEL,
            "events": _json.dumps(
                [
                    {
                        "id": e.id,
                        "topic": e.topic,
                        "data": e.data,
                        "trace_id": e.trace_id,
                        "emitted_by": e.emitted_by,
                        "available_at": now + e.delay,
                        "message_group_id": e.message_group_id,
                    }
                    for e in new
                ]
            ),
            "deliveries": _json.dumps(
                [
                    {"event": n, "step": step, "max_attempts": most}
                    for n, e in enumerate(new, 1)
                    for step, most in e.subscribers
                ]
            ),
        }
        return int((await pg_rows(conn, _PG_INSERT_EVENTS_SQL, params))[0][0])
    return await _insert_events_sqlite(conn, new, now, offer)


# On SQLite the rows go to the driver as tuples (SQLAlchemy's per-row parameter processing cost
# more than the INSERTs themselves); deliveries a worker takes come back with their ids.
_SQLITE_INSERT_EVENTS = (
    "INSERT INTO stepwise_events (id, topic, data, trace_id, emitted_by, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_DELIVERY_COLUMNS = (
    "event_id, step, topic, data, status, attempts, max_attempts, available_at, "
    "message_group_id, trace_id, errors, created_at, lease_token, lease_owner, lease_expires_at"
)
_ROWS_PER_INSERT = 500  # 15 parameters a row: well under SQLite's limit of 32,766


@functools.lru_cache(maxsize=64)
def _sqlite_insert_deliveries(rows: int, returning: bool) -> str:
    """An INSERT of `rows` deliveries, returning their ids and lease tokens if asked."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    tail = " RETURNING id, lease_token" if returning else ""
    # Only constants and placeholders are joined here: the values travel as parameters.
    return f"INSERT INTO stepwise_deliveries ({_DELIVERY_COLUMNS}) VALUES {values}{tail}"  # noqa: S608


async def _insert_events_sqlite(
    conn: AsyncConnection, new: Sequence[NewEvent], now: float, offer: LeaseOffer | None
) -> int:
    return insert_events_sqlite(driver_connection(conn), new, now, offer)


def insert_events_sqlite(
    db: sqlite3.Connection, new: Sequence[NewEvent], now: float, offer: LeaseOffer | None
) -> int:
    """`insert_events` on SQLite's driver, inside a transaction holding the write lock."""
    if not new:
        return 0
    with own_errors():
        return _insert_events_sqlite_rows(db, new, now, offer)


def _insert_events_sqlite_rows(
    db: sqlite3.Connection, new: Sequence[NewEvent], now: float, offer: LeaseOffer | None
) -> int:
    """Straight to the driver: the transaction holds the write lock, and SQLAlchemy's work for
    two statements cost more than SQLite's for the rows (0.4 ms of a 23-event emit's 1.3)."""
    db.executemany(
        _SQLITE_INSERT_EVENTS, [(e.id, e.topic, e.data, e.trace_id, e.emitted_by, now) for e in new]
    )
    rows: list[tuple[Any, ...]] = []
    leased: dict[str, Claimed] = {}  # by lease token; their ids are known after the INSERT
    for e in new:
        available = now + e.delay
        for step, most in e.subscribers:
            token = offer.take(step, e.delay, e.message_group_id) if offer is not None else None
            if offer is None or token is None:
                status, attempts, owner, expires = "pending", 0, None, None
            else:
                status, attempts, owner, expires = "running", 1, offer.owner, offer.expires_at
            rows.append(
                (
                    *(e.id, step, e.topic, e.data, status, attempts, most, available),
                    *(e.message_group_id, e.trace_id, "[]", now, token, owner, expires),
                )
            )
            if token is None:
                continue
            leased[token] = Claimed(
                0, step, e.topic, e.id, e.data, 1, most, e.trace_id, token, None, available
            )
    if offer is None or not leased:
        if rows:
            db.executemany(_sqlite_insert_deliveries(1, False), rows)
        return len(rows)
    # One statement per chunk, not executemany: the leased deliveries' ids come back with it.
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        sql = _sqlite_insert_deliveries(len(chunk), True)
        params = tuple(itertools.chain.from_iterable(chunk))
        for delivery_id, token in db.execute(sql, params):
            if token is not None:
                leased[token].id = delivery_id
    offer.taken(list(leased.values()))
    return len(rows)


async def insert_cron_firing(
    conn: AsyncConnection,
    *,
    step: str,
    fire_at: float,
    dedupe_key: str,
    trace_id: str,
    max_attempts: int,
    now: float,
) -> bool:
    """Enqueue one cron firing; False when another scheduler already did (unique dedupe key)."""
    inserted = await conn.execute(
        text(
            "INSERT INTO stepwise_deliveries (event_id, step, topic, status, attempts, "
            "max_attempts, available_at, dedupe_key, trace_id, errors, created_at) "
            "VALUES (NULL, :step, NULL, 'pending', 0, :max, :avail, :key, :trace, '[]', :now) "
            # The partial unique index's own predicate: how both databases find it.
            "ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING"
        ),
        {
            "step": step,
            "max": max_attempts,
            "avail": now,
            "key": dedupe_key,
            "trace": trace_id,
            "now": now,
        },
    )
    await conn.execute(
        text(
            "INSERT INTO stepwise_cron (step, last_fire_at) VALUES (:step, :at) "
            "ON CONFLICT (step) DO UPDATE SET last_fire_at = CASE "
            "WHEN excluded.last_fire_at > stepwise_cron.last_fire_at "
            "THEN excluded.last_fire_at ELSE stepwise_cron.last_fire_at END"
        ),
        {"step": step, "at": fire_at},
    )
    return bool(inserted.rowcount)


async def mark_cron_baseline(conn: AsyncConnection, step: str, at: float) -> None:
    """Remember when a cron step's schedule starts, without firing it."""
    await conn.execute(
        text(
            "INSERT INTO stepwise_cron (step, last_fire_at) VALUES (:s, :t) "
            "ON CONFLICT (step) DO NOTHING"
        ),
        {"s": step, "t": at},
    )


async def cron_last_fire(conn: AsyncConnection, step: str) -> float | None:
    return (
        await conn.execute(select(cron_marks.c.last_fire_at).where(cron_marks.c.step == step))
    ).scalar_one_or_none()


# ---------------------------------------------------------------------------------------------
# Claims, acks and retries


@dataclass(slots=True)
class Claimed:
    id: int
    step: str
    topic: str | None
    event_id: str | None
    data: str | None
    attempt: int
    max_attempts: int
    trace_id: str
    lease_token: str
    message_group_id: str | None
    available_at: float
    interruptions: int = 0  # earlier runs of this attempt cut short by their worker's death


def _status_is(table: Any, status: str) -> Any:
    """`status = 'pending'` with the status written into the SQL, not bound: a prepared
    statement's generic plan then still knows which part of the queue index it reads (with a
    parameter, Postgres may plan for any status and scan a whole status's entries, dead versions
    included). Statuses are the runtime's own constants, never input."""
    if status not in _STATUSES:
        raise ValueError(f"unknown delivery status {status!r}")
    return table.c.status == literal_column(f"'{status}'")


_STATUSES = ("pending", "running", "done", "dead")


def _claimable(table: Any) -> Any:
    """Due pending deliveries: the head of ix_stepwise_deliveries_queue. A running one whose
    lease expired is made pending again first (`rescue_expired`)."""
    return and_(_status_is(table, "pending"), table.c.available_at <= bindparam("now"))


def _fifo_head(table: Any) -> Any:
    """A delivery with a message group runs only when nothing earlier of its group is unfinished."""
    earlier = deliveries.alias("earlier")
    return or_(
        table.c.message_group_id.is_(None),
        ~select(earlier.c.id)
        .where(
            earlier.c.step == table.c.step,
            earlier.c.message_group_id == table.c.message_group_id,
            earlier.c.id < table.c.id,
            or_(_status_is(earlier, "pending"), _status_is(earlier, "running")),
        )
        .exists(),
    )


def _claim_statement(*, steps: Literal["array", "json"]) -> Any:
    """The claim, compiled once per database and sent to its driver. `steps`: how the steps
    are bound, "array" (Postgres: one array, `= ANY`) or "json" (SQLite: one JSON array,
    `json_each`); one parameter, so the SQL text is the same whatever their number."""
    candidate = deliveries.alias("candidate")
    if steps == "array":
        in_steps = candidate.c.step == func.any(bindparam("steps"))
    else:
        in_steps = _in_json_array(candidate.c.step, "steps")
    ids = (
        select(candidate.c.id)
        .where(
            in_steps,
            _claimable(candidate),
            _fifo_head(candidate),
        )
        # The queue index's own order: read in order, stopped at the limit, never sorted.
        .order_by(candidate.c.available_at, candidate.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        update(deliveries)
        .where(deliveries.c.id.in_(ids.scalar_subquery()))
        .values(
            # Constants written into the SQL: the only parameters are the claim's own.
            status=literal_column("'running'"),
            attempts=deliveries.c.attempts + literal_column("1"),
            lease_token=bindparam("token_prefix", type_=String) + cast(deliveries.c.id, String),
            lease_owner=bindparam("owner", type_=String),
            lease_expires_at=bindparam("expires_at", type_=Double),
        )
        .returning(
            deliveries.c.id,
            deliveries.c.step,
            deliveries.c.topic,
            deliveries.c.event_id,
            deliveries.c.data,
            deliveries.c.attempts,
            deliveries.c.max_attempts,
            deliveries.c.trace_id,
            deliveries.c.lease_token,
            deliveries.c.message_group_id,
            deliveries.c.available_at,
            deliveries.c.interruptions,
        )
    )


# Postgres: the claim's transaction commits without waiting for its WAL to reach the disk (set
# here, once per statement, to spare a round trip for a SET LOCAL). A claim lost to a server
# crash is a lease that never was: the delivery is pending again after recovery, and the
# worker that ran it cannot ack it (the ack matches the lease token, and its commit is durable
# and flushes every earlier one), so its effects roll back and the delivery runs again. Nothing
# is lost or applied twice; the disk sync between an emit and its handler is spared.
_CLAIM_PG_SQL = str(
    _claim_statement(steps="array")
    .where(text("(SELECT set_config('synchronous_commit', 'off', true)) = 'off'"))
    .compile(dialect=_PG)
)


# SQLite: compiled once for the driver's named parameters, sent to the driver inside a
# transaction holding the write lock (`driver_transaction`, or a limited step's claim): no loop
# turn while the claim holds the lock (through SQLAlchemy, the statement took one).
_CLAIM_SQLITE = _claim_statement(steps="json").compile(dialect=_SQLITE)
_CLAIM_SQLITE_SQL = str(_CLAIM_SQLITE)
# The constants SQLAlchemy binds itself (SQLite's LIMIT comes with an OFFSET 0).
_CLAIM_SQLITE_CONSTANTS = {k: v for k, v in _CLAIM_SQLITE.params.items() if v is not None}


def claim_params(
    *,
    steps: Iterable[str],
    limit: int,
    now: float,
    owner: str,
    token_prefix: str,
    lease_seconds: float,
) -> dict[str, Any] | None:
    """A claim of up to `limit` due deliveries of `steps` (None: nothing to claim), for `claim`
    or `claim_sqlite`. Each lease gets its own token (`token_prefix` + id): an ack or a retry
    only applies while the token still matches, so a delivery whose lease expired cannot be
    acked twice."""
    step_list = list(steps)
    if limit <= 0 or not step_list:
        return None
    return {
        "steps": step_list,
        "now": now,
        "limit": limit,
        "token_prefix": token_prefix,
        "owner": owner,
        "expires_at": now + lease_seconds,
    }


def claim_sqlite(db: sqlite3.Connection, params: dict[str, Any] | None) -> list[Claimed]:
    """`claim` on SQLite's driver, inside a transaction holding the write lock."""
    if params is None:
        return []
    bound = {**_CLAIM_SQLITE_CONSTANTS, **params, "steps": _json.dumps(params["steps"])}
    with own_errors():
        return _claimed(db.execute(_CLAIM_SQLITE_SQL, bound).fetchall())


async def claim(conn: AsyncConnection, params: dict[str, Any] | None) -> list[Claimed]:
    """Lease the deliveries `params` (`claim_params`) asks for, in one statement (SKIP LOCKED
    on Postgres)."""
    if params is None:
        return []
    if conn.dialect.name != "postgresql":
        return claim_sqlite(driver_connection(conn), params)
    return _claimed(await pg_rows(conn, _CLAIM_PG_SQL, params))


def _claimed(rows: Iterable[Sequence[Any]]) -> list[Claimed]:
    """Claimed deliveries from rows in _claim_statement's RETURNING order, by id."""
    return sorted(
        (
            Claimed(
                id=r[0],
                step=r[1],
                topic=r[2],
                event_id=r[3],
                data=r[4],
                attempt=r[5],
                max_attempts=r[6],
                trace_id=r[7],
                lease_token=r[8],
                message_group_id=r[9],
                available_at=r[10],
                interruptions=r[11],
            )
            for r in rows
        ),
        key=lambda c: c.id,
    )


async def running_count(conn: AsyncConnection, step: str, now: float) -> int:
    return int(
        (
            await conn.execute(
                select(func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.step == step,
                    _status_is(deliveries, "running"),
                    deliveries.c.lease_expires_at >= now,
                )
            )
        ).scalar_one()
    )


async def lock_step_claims(conn: AsyncConnection, step: str) -> None:
    """Serialize claims of one step across workers (for its global concurrency limit)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"stepwise:{step}"}
        )


async def ack(conn: AsyncConnection, tokens: Sequence[str], now: float) -> set[int]:
    """Mark leased deliveries done; returns the ids of those that still held their lease."""
    if not tokens:
        return set()
    if conn.dialect.name == "sqlite":
        return ack_sqlite(driver_connection(conn), tokens, now)
    result = await conn.execute(_ACK, {"tokens": list(tokens), "now": now})
    return {row[0] for row in result}


def ack_sqlite(db: sqlite3.Connection, tokens: Sequence[str], now: float) -> set[int]:
    """`ack` on SQLite's driver, inside a transaction holding the write lock."""
    if not tokens:
        return set()
    with own_errors():
        rows = db.execute(_ACK_SQLITE_SQL, {"tokens": _json.dumps(list(tokens)), "now": now})
        return {row[0] for row in rows}


# A delivery holds a lease token exactly while it runs (every way out of `running` clears it):
# the acks, renewals and give-backs below look their deliveries up by token alone, through
# ix_stepwise_deliveries_lease, never by the running status's index entries.
def _ack_statement(tokens: ColumnElement[bool]) -> Update:
    return (
        update(deliveries)
        .where(tokens)
        .values(
            # Constants written into the SQL: the only parameters are the ack's own.
            status=literal_column("'done'"),
            lease_token=null(),
            lease_expires_at=null(),
            finished_at=bindparam("now", type_=Double),
        )
        .returning(deliveries.c.id)
    )


_ACK = _ack_statement(deliveries.c.lease_token.in_(bindparam("tokens", expanding=True)))
# SQLite's driver: the tokens bound as one JSON array, so one statement for any number of them.
_ACK_SQLITE_SQL = str(
    _ack_statement(_in_json_array(deliveries.c.lease_token, "tokens")).compile(dialect=_SQLITE)
)


# Postgres: a group of deliveries whose only effects are state sets, done in one statement (in
# autocommit: one round trip instead of BEGIN, the ack, the sets and COMMIT). The sets of a
# delivery are written only if its ack went through (joined on the ids the ack returns), so a
# delivery whose lease was lost leaves nothing; of several sets of one key the last one wins,
# as applied in order.
_PG_ACK_AND_SET_SQL = f"""
    WITH acked AS (
        {
    _ack_statement(deliveries.c.lease_token == func.any(bindparam("tokens"))).compile(dialect=_PG)
}
    ), latest AS (
        SELECT DISTINCT ON (o.g, o.k) o.g, o.k, o.v
        FROM ROWS FROM (json_to_recordset(CAST(%(sets)s AS json))
                        AS (d bigint, g text, k text, v text))
             WITH ORDINALITY AS o(d, g, k, v, n)
        JOIN acked ON acked.id = o.d
        ORDER BY o.g, o.k, o.n DESC
    ), written AS (
        INSERT INTO stepwise_state (group_id, key, value, updated_at)
        SELECT g, k, v, %(now)s FROM latest
        {_ON_STATE_CONFLICT}
    )
    SELECT id FROM acked
"""  # noqa: S608 (compiled SQLAlchemy and constants only: the values travel as parameters)


async def ack_and_set(
    conn: AsyncConnection,
    tokens: Sequence[str],
    sets: Sequence[tuple[int, StateOp]],
    now: float,
) -> set[int]:
    """Postgres, in autocommit: `ack` the leases and apply the state `sets` (each tagged with
    its delivery's id, all of kind "set", in order) of the deliveries acked, atomically; returns
    the ids acked."""
    if not tokens:
        return set()
    params = {
        "tokens": list(tokens),
        "now": now,
        "sets": _json.dumps([{"d": d, "g": o.group, "k": o.key, "v": o.value} for d, o in sets]),
    }
    return {row[0] for row in await pg_rows(conn, _PG_ACK_AND_SET_SQL, params)}


@dataclass(slots=True)
class Failure:
    token: str
    delivery_id: int
    attempt: int
    error: str
    retry_at: float | None  # None: dead letter


async def record_failures(
    conn: AsyncConnection, failures: Sequence[Failure], now: float
) -> set[int]:
    """Record each failure whose lease still holds (retry or dead letter); returns their ids."""
    recorded: set[int] = set()
    for f in failures:
        row = (
            await conn.execute(
                select(deliveries.c.errors).where(
                    deliveries.c.id == f.delivery_id, deliveries.c.lease_token == f.token
                )
            )
        ).first()
        if row is None:
            continue  # the lease was lost: whoever holds it now decides
        errors = _json.loads(row[0])
        errors.append({"attempt": f.attempt, "error": f.error[:4000], "at": now})
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == f.delivery_id, deliveries.c.lease_token == f.token)
            .values(
                status="dead" if f.retry_at is None else "pending",
                available_at=f.retry_at if f.retry_at is not None else deliveries.c.available_at,
                lease_token=None,
                lease_owner=None,
                lease_expires_at=None,
                finished_at=now if f.retry_at is None else None,
                errors=_json.dumps(errors[-50:]),
            )
        )
        recorded.add(f.delivery_id)
    return recorded


async def renew_leases(conn: AsyncConnection, tokens: Sequence[str], expires_at: float) -> int:
    if not tokens:
        return 0
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.lease_token.in_(list(tokens)))
        .values(lease_expires_at=expires_at)
    )
    return int(result.rowcount)


async def release_leases(
    conn: AsyncConnection,
    tokens: Sequence[str],
    *,
    prefixes: Sequence[str] = (),
    available_at: float | None = None,
) -> int:
    """Give deliveries back untouched (shutdown, or the database failed under the handler): the
    attempt they were claimed for is undone; with `available_at`, not claimable before then.
    `prefixes`: also every delivery leased by the claims whose tokens start so (claims whose
    answer was lost)."""
    if not tokens and not prefixes:
        return 0
    values: dict[str, Any] = {
        "status": "pending",
        "attempts": deliveries.c.attempts - 1,
        "lease_token": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if available_at is not None:
        values["available_at"] = available_at
    result = await conn.execute(
        update(deliveries)
        .where(
            or_(
                deliveries.c.lease_token.in_(list(tokens)),
                *(deliveries.c.lease_token.startswith(p, autoescape=True) for p in prefixes),
            ),
        )
        .values(**values)
    )
    return int(result.rowcount)


async def rescue_expired(
    conn: AsyncConnection, now: float, *, owners: Sequence[str] | None = None
) -> int:
    """Deliveries whose worker stopped without an outcome (the lease expired, or `owners`: dead
    worker processes) become pending again, first in line (their `available_at` is kept). The
    run had no outcome, so its attempt is undone, and the interruption is counted on its own
    (a delivery that keeps taking its workers down is dead-lettered, see MAX_INTERRUPTIONS)."""
    if owners is not None and not owners:
        return 0
    whose = (
        deliveries.c.lease_expires_at < now
        if owners is None
        else deliveries.c.lease_owner.in_(list(owners))
    )
    result = await conn.execute(
        update(deliveries)
        .where(_status_is(deliveries, "running"), whose)
        .values(
            status="pending",
            attempts=deliveries.c.attempts - 1,
            interruptions=deliveries.c.interruptions + 1,
            lease_token=None,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return int(result.rowcount)


async def vacuum_queue(conn: AsyncConnection) -> None:
    """Postgres, in autocommit: clear the queue table's dead row versions now. Every claim and
    ack writes a new version of its row and new index entries; until a vacuum, a claim walks the
    dead `pending` entries, which sort before the live ones. SKIP_LOCKED: if another worker is
    vacuuming it already, this one does nothing."""
    await conn.execute(text("VACUUM (SKIP_LOCKED) stepwise_deliveries"))


async def lease_owners(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(
        select(deliveries.c.lease_owner)
        .where(_status_is(deliveries, "running"), deliveries.c.lease_owner.is_not(None))
        .distinct()
    )
    return [r[0] for r in rows]


@dataclass(slots=True)
class Due:
    """When the earliest pending delivery becomes due, and the earliest lease expires."""

    pending: float | None
    lease: float | None

    @property
    def earliest(self) -> float | None:
        values = [v for v in (self.pending, self.lease) if v is not None]
        return min(values) if values else None


def _due_statement(in_steps: Callable[[Any], ColumnElement[bool]]) -> Select[Any]:
    """The earliest pending delivery's due time and the earliest lease's end, of some steps."""
    pending = (
        select(func.min(deliveries.c.available_at))
        .where(_status_is(deliveries, "pending"), in_steps(deliveries.c.step))
        .scalar_subquery()
    )
    leased = (
        select(func.min(deliveries.c.lease_expires_at))
        .where(_status_is(deliveries, "running"), in_steps(deliveries.c.step))
        .scalar_subquery()
    )
    return select(pending.label("pending"), leased.label("lease"))


async def next_due(conn: AsyncConnection, steps: Iterable[str]) -> Due:
    step_list = list(steps)
    if not step_list:
        return Due(None, None)
    row = (await conn.execute(_due_statement(lambda step: step.in_(step_list)))).first()
    return Due(None, None) if row is None else Due(row[0], row[1])


# Postgres: a claim that finds nothing answers `next_due` too, in the same round trip (a worker
# that was woken for work another worker took, or that drained the queue, goes idle with the
# timers it needs instead of asking for them). The two extra columns are NULL on claimed rows;
# the last row, only when nothing was claimed, is NULLs then the two times.
_CLAIM_OR_DUE_PG_SQL = f"""
    WITH claimed AS ({_CLAIM_PG_SQL})
    SELECT claimed.*, NULL, NULL FROM claimed
    UNION ALL
    SELECT {", ".join(["NULL"] * 12)}, due.pending, due.lease
    FROM ({
    _due_statement(lambda step: step == func.any(bindparam("all_steps"))).compile(dialect=_PG)
}) AS due
    WHERE NOT EXISTS (SELECT 1 FROM claimed)
"""  # noqa: S608 (compiled SQLAlchemy and constants only: the values travel as parameters)


async def claim_or_due(
    conn: AsyncConnection, params: dict[str, Any] | None, all_steps: Sequence[str]
) -> tuple[list[Claimed], Due | None]:
    """Postgres, in autocommit: `claim`; when it leases nothing, also `next_due(all_steps)`."""
    if params is None:
        return [], None
    rows = await pg_rows(conn, _CLAIM_OR_DUE_PG_SQL, {**params, "all_steps": list(all_steps)})
    if len(rows) == 1 and rows[0][0] is None:
        return [], Due(rows[0][12], rows[0][13])
    return _claimed(rows), None


# ---------------------------------------------------------------------------------------------
# Dead letters


async def list_dead(conn: AsyncConnection, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            deliveries.c.id,
            deliveries.c.step,
            deliveries.c.topic,
            deliveries.c.event_id,
            deliveries.c.attempts,
            deliveries.c.trace_id,
            deliveries.c.errors,
            deliveries.c.finished_at,
            deliveries.c.created_at,
            deliveries.c.data,
        )
        .where(_status_is(deliveries, "dead"))
        .order_by(deliveries.c.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": r.id,
            "step": r.step,
            "topic": r.topic,
            "event_id": r.event_id,
            "attempts": r.attempts,
            "trace_id": r.trace_id,
            "errors": _json.loads(r.errors),
            "data": _json.loads(r.data) if r.data is not None else None,
            "created_at": r.created_at,
            "dead_at": r.finished_at,
        }
        for r in rows
    ]


async def replay_dead(conn: AsyncConnection, ids: Sequence[int] | None, now: float) -> list[int]:
    """Put dead letters back in the queue with fresh attempts. Replaying twice is a no-op."""
    stmt = (
        update(deliveries)
        .where(_status_is(deliveries, "dead"))
        .values(status="pending", attempts=0, interruptions=0, available_at=now, finished_at=None)
        .returning(deliveries.c.id)
    )
    if ids is not None:
        stmt = stmt.where(deliveries.c.id.in_(list(ids)))
    return sorted(r[0] for r in await conn.execute(stmt))


async def purge_history(conn: AsyncConnection, before: float) -> dict[str, int]:
    """Forget finished work older than `before`: done deliveries, their events, step runs.

    Dead letters and anything unfinished are kept whatever their age.
    """
    done = await conn.execute(
        delete(deliveries).where(_status_is(deliveries, "done"), deliveries.c.finished_at < before)
    )
    unfinished = select(deliveries.c.event_id).where(
        deliveries.c.event_id.is_not(None), deliveries.c.status != "done"
    )
    old_events = await conn.execute(
        delete(events).where(events.c.created_at < before, events.c.id.not_in(unfinished))
    )
    old_runs = await conn.execute(delete(step_runs).where(step_runs.c.started_at < before))
    return {
        "deliveries": int(done.rowcount),
        "events": int(old_events.rowcount),
        "runs": int(old_runs.rowcount),
    }
