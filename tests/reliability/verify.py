"""What must hold after a fault, read straight from the database with SQL: every accepted
request's effects exist exactly once, nothing is half-done, nothing is left in the queue."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from app.runtime._db import sync_url
from tests.reliability.harness import System, Tally
from tests.support import eventually

# The statuses each final status passed through: one history row each, no other.
CHAINS = {
    "delivery_scheduled": {
        "pending",
        "paid",
        "inventory_reserved",
        "confirmed",
        "delivery_scheduled",
    },
    "payment_failed": {"pending", "payment_failed"},
    "out_of_stock": {"pending", "paid", "out_of_stock"},
}
# The event each status's step emits when it makes the transition (exactly once per order).
TOPIC_OF_STATUS = {
    "pending": "order.created",
    "paid": "payment.succeeded",
    "payment_failed": "payment.failed",
    "inventory_reserved": "inventory.reserved",
    "confirmed": "order.confirmed",
    "delivery_scheduled": "delivery.scheduled",
}
MESSAGE_TOPICS = ("message.sent", "message.analyzed")


def engine_for(db_url: str) -> Engine:
    return create_engine(sync_url(db_url), poolclass=None, pool_pre_ping=True)


def norm(value: Any) -> str:
    return str(uuid.UUID(str(value)))


def _rows(db_url: str, sql: str, **params: Any) -> list[Any]:
    engine = engine_for(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def restock(db_url: str) -> dict[str, int]:
    """Plenty of books and mugs (most orders go all the way), the seeded 25 T-shirts (some run
    out: `out_of_stock` under contention); the stock now."""
    engine = engine_for(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE products SET stock = 100000 WHERE sku IN ('BOOK-1', 'MUG-1')")
            )
    finally:
        engine.dispose()
    return stock(db_url)


def stock(db_url: str) -> dict[str, int]:
    return {sku: int(n) for sku, n in _rows(db_url, "SELECT sku, stock FROM products")}


def unfinished(db_url: str) -> int:
    rows = _rows(
        db_url,
        "SELECT count(*) FROM stepwise_deliveries WHERE status IN ('pending', 'running')",
    )
    return int(rows[0][0])


# Shorter than the clusters' lease (harness.Cluster: 60 s).
DRAIN_TIMEOUT = 45.0


async def wait_drained(db_url: str, timeout: float = DRAIN_TIMEOUT) -> float:
    """Until no delivery is pending or running; how long that took (seconds)."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def empty() -> bool:
        try:
            return await asyncio.to_thread(unfinished, db_url) == 0
        except Exception:
            return False  # the database may still be coming back

    try:
        await eventually(empty, timeout=timeout, interval=0.25)
    except AssertionError:
        left = await asyncio.to_thread(
            _rows,
            db_url,
            "SELECT id, step, status, attempts, lease_owner, lease_expires_at, errors "
            "FROM stepwise_deliveries WHERE status IN ('pending', 'running') ORDER BY id",
        )
        raise AssertionError(
            f"{len(left)} deliveries unfinished after {timeout:g}s, e.g. {left[:5]}"
        ) from None
    return loop.time() - started


@dataclass
class Outcome:
    messages: int = 0
    orders: int = 0
    order_statuses: Counter[str] = field(default_factory=Counter)
    events: int = 0
    emails: int = 0
    dead: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(problem)

    def summary(self) -> str:
        statuses = ", ".join(f"{k} {n}" for k, n in sorted(self.order_statuses.items()))
        return (
            f"{self.messages} messages analysed, {self.orders} orders ({statuses}), "
            f"{self.events} events, {self.emails} emails, {len(self.dead)} dead letters"
        )


def check(
    db_url: str, tally: Tally, initial_stock: dict[str, int], *, dead_allowed: bool = False
) -> Outcome:
    """Every invariant of the sample flows after a fault; `problems` lists what broke."""
    out = Outcome()
    events = _events(db_url)
    out.events = sum(sum(c.values()) for c in events.values())
    _check_queue(db_url, out, dead_allowed)
    _check_messages(db_url, tally, events, out)
    _check_orders(db_url, tally, events, initial_stock, out)
    return out


def _events(db_url: str) -> dict[str, Counter[str]]:
    """topic -> {key (the order or message id) -> how many such events}."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for topic, data in _rows(db_url, "SELECT topic, data FROM stepwise_events"):
        if topic in MESSAGE_TOPICS or topic in TOPIC_OF_STATUS.values():
            body = json.loads(data)
            found[topic][norm(body.get("order_id") or body.get("id"))] += 1
    return found


def _check_queue(db_url: str, out: Outcome, dead_allowed: bool) -> None:
    left = _rows(
        db_url,
        "SELECT step, status, count(*) FROM stepwise_deliveries "
        "WHERE status IN ('pending', 'running') GROUP BY step, status",
    )
    for step, status, n in left:
        out.fail(f"{n} deliveries of {step} still {status}")
    for delivery_id, step, attempts, errors in _rows(
        db_url,
        "SELECT id, step, attempts, errors FROM stepwise_deliveries WHERE status = 'dead'",
    ):
        out.dead.append({"id": delivery_id, "step": step, "attempts": attempts, "errors": errors})
        if not dead_allowed:
            out.fail(f"delivery {delivery_id} of {step} dead after {attempts}: {errors[-600:]}")


def _check_messages(
    db_url: str, tally: Tally, events: dict[str, Counter[str]], out: Outcome
) -> None:
    rows = {
        norm(message_id): (body, sentiment)
        for message_id, body, sentiment in _rows(
            db_url, "SELECT id, text, sentiment FROM messages WHERE text LIKE '%[load %'"
        )
    }
    for message_id, body in tally.accepted_messages.items():
        if message_id not in rows:
            out.fail(f"accepted message {message_id} was never stored")
        elif rows[message_id][0] != body:
            out.fail(f"message {message_id} stored with another text: {rows[message_id][0]!r}")
    for message_id, (body, sentiment) in rows.items():
        if message_id not in tally.accepted_messages and body not in tally.unanswered_messages:
            out.fail(f"message {message_id} stored but its request was refused: {body!r}")
        if sentiment is None:
            out.fail(f"message {message_id} has no sentiment: its analysis is missing")
        for topic in MESSAGE_TOPICS:
            if (n := events[topic][message_id]) != 1:
                out.fail(f"message {message_id}: {n} {topic} events (expected 1)")
    for key in set(events["message.sent"]) - set(rows):
        out.fail(f"message.sent event {key} but no message stored: an event was lost")
    out.messages = sum(1 for _, sentiment in rows.values() if sentiment is not None)


def _check_orders(
    db_url: str,
    tally: Tally,
    events: dict[str, Counter[str]],
    initial_stock: dict[str, int],
    out: Outcome,
) -> None:
    orders = {
        norm(order_id): (str(user_id), status)
        for order_id, user_id, status in _rows(db_url, "SELECT id, user_id, status FROM orders")
    }
    history: dict[str, Counter[str]] = defaultdict(Counter)
    for order_id, status in _rows(db_url, "SELECT order_id, status FROM order_history"):
        history[norm(order_id)][status] += 1
    emails = Counter(key for (key,) in _rows(db_url, "SELECT dedupe_key FROM email_outbox"))
    out.emails = sum(emails.values())
    for order_id in tally.accepted_orders:
        if order_id not in orders:
            out.fail(f"accepted order {order_id} was never stored")
    extra: Counter[str] = Counter(
        user for order_id, (user, _) in orders.items() if order_id not in tally.accepted_orders
    )
    for user, n in extra.items():
        if n > tally.unanswered_orders[user]:
            out.fail(
                f"user {user} has {n} orders nobody was told about, but only "
                f"{tally.unanswered_orders[user]} requests went unanswered"
            )
    reserved: Counter[str] = Counter()
    items = defaultdict(list)
    for order_id, sku, quantity in _rows(db_url, "SELECT order_id, sku, quantity FROM order_items"):
        items[norm(order_id)].append((sku, int(quantity)))
    for order_id, (_, status) in orders.items():
        out.order_statuses[status] += 1
        chain = CHAINS.get(status)
        if chain is None:
            out.fail(f"order {order_id} stopped at {status!r}: not a final status")
            continue
        seen = history[order_id]
        if set(seen) != chain or any(n != 1 for n in seen.values()):
            out.fail(f"order {order_id} ({status}): history {dict(seen)}, expected {sorted(chain)}")
        for step_status in chain:
            topic = TOPIC_OF_STATUS.get(step_status)
            if topic and (n := events[topic][order_id]) != 1:
                out.fail(f"order {order_id}: {n} {topic} events (expected 1)")
        if "inventory_reserved" in chain:
            for sku, quantity in items[order_id]:
                reserved[sku] += quantity
        confirmation = emails[f"order-confirmation:{order_id}"]
        if confirmation != (1 if "confirmed" in chain else 0):
            out.fail(f"order {order_id} ({status}) has {confirmation} confirmation emails")
    for topic in TOPIC_OF_STATUS.values():
        for key in set(events[topic]) - set(orders):
            out.fail(f"{topic} event for an order that does not exist: {key}")
    now = stock(db_url)
    for sku, before in initial_stock.items():
        if before - now[sku] != reserved[sku]:
            out.fail(
                f"stock of {sku} went {before} -> {now[sku]} but orders reserved {reserved[sku]}"
            )
    out.orders = len(orders)


async def settle(system: System, *, dead_allowed: bool = False) -> tuple[Outcome, float]:
    """Wait for the queue to drain, then check everything; (the outcome, the drain time)."""
    try:
        drain = await wait_drained(system.db_url)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{system.cluster.logs()}") from None
    outcome = await asyncio.to_thread(
        check, system.db_url, system.tally, system.initial_stock, dead_allowed=dead_allowed
    )
    print(
        f"\n{system.name}: {system.tally.summary()}\n{outcome.summary()}; drained in {drain:.1f}s"
    )
    assert not system.tally.bad, (system.tally.bad[:10], system.cluster.logs())
    assert not outcome.problems, (outcome.problems, system.cluster.logs())
    return outcome, drain
