"""The runtime's own tables: state, the event outbox, deliveries, cron marks, step runs, streams."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a BIGINT identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

state = Table(
    "stepwise_state",
    metadata,
    Column("group_id", String(255), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),  # JSON text
    Column("updated_at", Double, nullable=False),
)

events = Table(
    "stepwise_events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("topic", String(200), nullable=False),
    Column("data", Text, nullable=False),  # JSON text
    Column("trace_id", String(64), nullable=False),
    Column("emitted_by", String(100), nullable=True),
    Column("created_at", Double, nullable=False),
    Index("ix_stepwise_events_trace_id", "trace_id"),
)

# The longest message group id an emit may carry (checked when emitting).
MAX_GROUP_ID = 200

deliveries = Table(
    "stepwise_deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=True),  # None for cron firings
    Column("step", String(100), nullable=False),
    Column("topic", String(200), nullable=True),
    # A copy of the event's data, so that a claim is one UPDATE ... RETURNING.
    Column("data", Text, nullable=True),
    # pending -> running -> done | pending (retry) | dead
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # Runs cut short by their worker's death (the lease expired without an outcome): run again
    # as the same attempt, and dead-lettered only after MAX_INTERRUPTIONS of them.
    Column("interruptions", Integer, nullable=False, default=0, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("available_at", Double, nullable=False),
    Column("lease_token", String(64), nullable=True),
    Column("lease_owner", String(120), nullable=True),
    Column("lease_expires_at", Double, nullable=True),
    Column("message_group_id", String(MAX_GROUP_ID), nullable=True),
    # Cron firings only: one delivery per step and firing time (see the partial index below).
    Column("dedupe_key", String(255), nullable=True),
    Column("trace_id", String(64), nullable=False),
    Column("errors", Text, nullable=False, default="[]"),  # JSON list, one entry per failure
    Column("created_at", Double, nullable=False),
    Column("finished_at", Double, nullable=True),
    # The queue: a claim reads the due pending deliveries in exactly this order and stops at
    # its limit, however long the backlog (no sort, whatever the planner's statistics say);
    # running ones (leases), dead letters and done history are found by their status too.
    Index("ix_stepwise_deliveries_queue", "status", "available_at", "id"),
    # Only deliveries of a message group: the FIFO check looks for an earlier one of its group.
    Index(
        "ix_stepwise_deliveries_group",
        "step",
        "message_group_id",
        "id",
        sqlite_where=text("message_group_id IS NOT NULL"),
        postgresql_where=text("message_group_id IS NOT NULL"),
    ),
    Index("ix_stepwise_deliveries_trace_id", "trace_id"),
    # Only the rows that have a key: every other delivery's NULL would cost an index entry on
    # every emit.
    Index(
        "uq_stepwise_deliveries_dedupe_key",
        "dedupe_key",
        unique=True,
        sqlite_where=text("dedupe_key IS NOT NULL"),
        postgresql_where=text("dedupe_key IS NOT NULL"),
    ),
    # Acks, renewals and give-backs find their deliveries by lease token, never by scanning the
    # running ones (on Postgres a status's index entries include every dead version).
    Index(
        "ix_stepwise_deliveries_lease",
        "lease_token",
        sqlite_where=text("lease_token IS NOT NULL"),
        postgresql_where=text("lease_token IS NOT NULL"),
    ),
    implicit_returning=False,  # inserts never need the new ids back: skip RETURNING
)

cron_marks = Table(
    "stepwise_cron",
    metadata,
    Column("step", String(100), primary_key=True),
    Column("last_fire_at", Double, nullable=False),
)

step_runs = Table(
    "stepwise_runs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("trace_id", String(64), nullable=False),
    Column("step", String(100), nullable=False),
    Column("kind", String(8), nullable=False),  # api | event | cron
    Column("delivery_id", BigInteger, nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("duration_ms", Double, nullable=False),
    Column("outcome", String(16), nullable=False),  # ok | error | timeout | lost | dead
    Column("error", Text, nullable=True),
    Column("detail", Text, nullable=True),  # e.g. "POST /messages 202" or the topic
    Index("ix_stepwise_runs_trace_id", "trace_id"),
    Index("ix_stepwise_runs_step_started", "step", "started_at"),
)

stream_items = Table(
    "stepwise_stream_items",
    metadata,
    Column("stream", String(100), primary_key=True),
    Column("group_id", String(255), primary_key=True),
    Column("id", String(255), primary_key=True),
    Column("data", Text, nullable=False),  # JSON text ("null" for a tombstone)
    # The group's version when this item last changed: resume sends what is newer.
    Column("version", BigInteger, nullable=False),
    Column("updated_at", Double, nullable=False),
    # A deleted item stays a while as a tombstone, so that a client resuming sees the delete.
    Column("deleted", Boolean, nullable=False, server_default=false()),
    Index("ix_stepwise_stream_items_version", "stream", "group_id", "version"),
)

stream_groups = Table(
    "stepwise_stream_groups",
    metadata,
    Column("stream", String(100), primary_key=True),
    Column("group_id", String(255), primary_key=True),
    # Bumped by every change of the group, under the row lock: versions follow commit order.
    Column("version", BigInteger, nullable=False),
    # The newest version among the tombstones already purged: resuming from before it is a reset.
    Column("pruned_version", BigInteger, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# Ephemeral stream events too large for a NOTIFY payload wait here a minute, read by reference.
stream_spill = Table(
    "stepwise_stream_spill",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("payload", Text, nullable=False),
    Column("created_at", Double, nullable=False),
)
