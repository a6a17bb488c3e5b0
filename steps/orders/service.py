"""The order workflow's logic: create and read orders, and each step's status transition.

Services take a session and never commit: the step's unit of work commits their writes with the
step's emits and the delivery's acknowledgement, or rolls everything back. Every transition locks
the order row first (`SELECT ... FOR UPDATE` on Postgres; SQLite's write transaction serialises
anyway) and does nothing when the order is no longer in the status it expects: a delivery handled
twice changes nothing the second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import NoUsersTableError, users_table
from app.fields import parse_uuid
from app.runtime import AppError, NotFound
from steps.orders import gateway
from steps.orders.mailer import Email
from steps.orders.models import EmailOutbox, Order, OrderHistory, OrderItem, Product
from steps.orders.schemas import CreateOrder, HistoryEntry, OrderItemOut, OrderOut

DELIVERY_DAYS = 3


class StockChangedError(RuntimeError):
    """A reservation found less stock than it had just read under lock (should never happen):
    the unit rolls back and the delivery is retried."""


# -- the signed-in user ---------------------------------------------------------------------------


def _user_field(user: Any, name: str) -> Any:
    return user.get(name) if isinstance(user, dict) else getattr(user, name, None)


def user_id_of(user: Any) -> str:
    return str(_user_field(user, "id"))


def is_admin(user: Any) -> bool:
    return bool(_user_field(user, "role") == "admin")


async def email_of(session: AsyncSession, user: Any) -> str | None:
    """The user's email: from the signed-in user, else from the accounts table (None if none)."""
    email = _user_field(user, "email")
    if email:
        return str(email)
    user_id = parse_uuid(_user_field(user, "id"))
    if user_id is None:
        return None
    try:
        table = users_table()
    except NoUsersTableError:
        return None
    found = await session.scalar(select(table.c.email).where(table.c.id == user_id))
    return str(found) if found else None


# -- creating and reading -------------------------------------------------------------------------


def order_not_found() -> NotFound:
    return NotFound(message_key="error.order_not_found")


def merge_items(data: CreateOrder) -> dict[str, int]:
    """sku -> quantity, in the order first named; the same sku twice adds up."""
    merged: dict[str, int] = {}
    for item in data.items:
        merged[item.sku] = merged.get(item.sku, 0) + item.quantity
    return merged


async def create_order(
    session: AsyncSession, user: Any, data: CreateOrder, *, trace_id: str, now: datetime
) -> Order:
    """A pending order priced from the catalogue, its items and its first history entry."""
    quantities = merge_items(data)
    rows = await session.scalars(select(Product).where(Product.sku.in_(list(quantities))))
    products = {p.sku: p for p in rows}
    unknown = [
        {"field": f"items.{n}.sku", "sku": item.sku}
        for n, item in enumerate(data.items)
        if item.sku not in products
    ]
    if unknown:
        raise AppError("unknown_sku", 400, details=unknown)
    order = Order(
        id=uuid.uuid4(),
        user_id=user_id_of(user),
        email=await email_of(session, user),
        status="pending",
        total_cents=sum(products[sku].price_cents * q for sku, q in quantities.items()),
        card_last4=data.card_number[-4:],
        payment_attempts=0,
        created_at=now,
        updated_at=now,
    )
    session.add(order)
    await session.flush()  # the order row first: items and history point at it
    session.add_all(
        OrderItem(
            order_id=order.id, sku=sku, quantity=q, unit_price_cents=products[sku].price_cents
        )
        for sku, q in quantities.items()
    )
    session.add(OrderHistory(order_id=order.id, status="pending", at=now, trace_id=trace_id))
    await session.flush()
    return order


async def get_order(session: AsyncSession, user: Any, order_id: Any) -> OrderOut:
    """The order with its items and history, for its owner or an admin; anyone else gets the
    same 404 as for an order that does not exist, so ids cannot be probed."""
    parsed = parse_uuid(order_id)
    order = await session.get(Order, parsed) if parsed is not None else None
    if order is None or (order.user_id != user_id_of(user) and not is_admin(user)):
        raise order_not_found()
    return await order_out(session, order)


async def order_out(session: AsyncSession, order: Order) -> OrderOut:
    items = await session.execute(
        select(OrderItem, Product.name)
        .join(Product, Product.sku == OrderItem.sku)
        .where(OrderItem.order_id == order.id)
        .order_by(OrderItem.sku)
    )
    history = await session.scalars(
        select(OrderHistory).where(OrderHistory.order_id == order.id).order_by(OrderHistory.id)
    )
    return OrderOut(
        id=order.id,
        status=order.status,
        items=[
            OrderItemOut(
                sku=item.sku,
                name=name,
                quantity=item.quantity,
                unit_price_cents=item.unit_price_cents,
            )
            for item, name in items
        ],
        total_cents=order.total_cents,
        card_last4=order.card_last4,
        payment_attempts=order.payment_attempts,
        delivery_date=order.delivery_date,
        created_at=order.created_at,
        updated_at=order.updated_at,
        history=[HistoryEntry.model_validate(h) for h in history],
    )


async def list_orders(
    session: AsyncSession, user: Any, limit: int, offset: int
) -> tuple[list[Order], int]:
    """The caller's own orders, newest first, and how many there are."""
    mine = Order.user_id == user_id_of(user)
    total = await session.scalar(select(func.count()).select_from(Order).where(mine)) or 0
    rows = await session.scalars(
        select(Order)
        .where(mine)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total


async def list_products(session: AsyncSession) -> list[Product]:
    return list(await session.scalars(select(Product).order_by(Product.sku)))


# -- transitions ----------------------------------------------------------------------------------


# Row locks are `FOR NO KEY UPDATE` on Postgres: they serialise the writers of a row but, unlike
# `FOR UPDATE`, do not conflict with the `KEY SHARE` locks that foreign-key checks take (a new
# order's items point at products), so placing orders never waits on, or deadlocks with, a
# reservation. SQLite has no row locks: its write transactions run one at a time.


async def lock_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """The order, its row locked until the unit ends, read fresh from the database."""
    return await session.scalar(
        select(Order)
        .where(Order.id == order_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )


async def advance(
    session: AsyncSession,
    order: Order,
    to_status: str,
    *,
    trace_id: str,
    now: datetime,
    detail: str | None = None,
) -> Order:
    """Record a transition of a locked order: its status and one history row."""
    order.status = to_status
    order.updated_at = now
    session.add(
        OrderHistory(order_id=order.id, status=to_status, at=now, trace_id=trace_id, detail=detail)
    )
    await session.flush()
    return order


async def transition(
    session: AsyncSession,
    order_id: uuid.UUID,
    from_statuses: Collection[str],
    to_status: str,
    *,
    trace_id: str,
    now: datetime,
    detail: str | None = None,
    changes: dict[str, Any] | None = None,
) -> Order | None:
    """Move the order from one of `from_statuses` to `to_status` (with `changes` to its
    columns); None, and nothing written, when it is elsewhere (already past, or gone)."""
    order = await lock_order(session, order_id)
    if order is None or order.status not in from_statuses:
        return None
    for name, value in (changes or {}).items():
        setattr(order, name, value)
    return await advance(session, order, to_status, trace_id=trace_id, now=now, detail=detail)


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    status: str  # paid | payment_failed
    reason: str | None = None


async def process_payment(
    session: AsyncSession,
    order_id: uuid.UUID,
    *,
    attempt: int,
    max_attempts: int,
    failure_rate: float,
    trace_id: str,
    now: datetime,
) -> PaymentOutcome | None:
    """Charge a pending order. A decline raises PaymentDeclined (the runtime retries) except on
    the last attempt, which records `payment_failed`. None: the order is not pending."""
    order = await lock_order(session, order_id)
    if order is None or order.status != "pending":
        return None
    try:
        reference = gateway.charge(
            card_last4=order.card_last4,
            amount_cents=order.total_cents,
            idempotency_key=f"order-payment:{order.id}",
            failure_rate=failure_rate,
        )
    except gateway.PaymentDeclined as declined:
        if attempt < max_attempts:
            raise
        order.payment_attempts = attempt
        detail = f"declined after {attempt} attempts ({declined.reason})"
        await advance(session, order, "payment_failed", trace_id=trace_id, now=now, detail=detail)
        return PaymentOutcome("payment_failed", declined.reason)
    order.payment_attempts = attempt
    detail = f"charged on attempt {attempt} (reference {reference})"
    await advance(session, order, "paid", trace_id=trace_id, now=now, detail=detail)
    return PaymentOutcome("paid")


async def reserve_inventory(
    session: AsyncSession, order_id: uuid.UUID, *, trace_id: str, now: datetime
) -> Order | None:
    """Take every item of a paid order out of stock, or none: `inventory_reserved`, or
    `out_of_stock` naming the skus short. None: the order is not `paid`.

    The products' rows are locked in sku order (two reservations never wait on each other in a
    circle), so the stock read is the stock decremented; the CHECK (stock >= 0) and the
    conditional UPDATE are the last guard."""
    order = await lock_order(session, order_id)
    if order is None or order.status != "paid":
        return None
    items: Sequence[OrderItem] = (
        await session.scalars(
            select(OrderItem).where(OrderItem.order_id == order.id).order_by(OrderItem.sku)
        )
    ).all()
    locked = await session.execute(
        select(Product.sku, Product.stock)
        .where(Product.sku.in_([i.sku for i in items]))
        .order_by(Product.sku)
        .with_for_update(key_share=True)
    )
    stock = {sku: count for sku, count in locked}
    short = [i.sku for i in items if stock.get(i.sku, 0) < i.quantity]
    if short:
        detail = f"not enough stock of {', '.join(short)}"
        return await advance(
            session, order, "out_of_stock", trace_id=trace_id, now=now, detail=detail
        )
    for item in items:
        result = await session.execute(
            update(Product)
            .where(Product.sku == item.sku, Product.stock >= item.quantity)
            .values(stock=Product.stock - item.quantity)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise StockChangedError(f"stock of {item.sku} changed under its lock")
    detail = "reserved " + ", ".join(f"{i.quantity} x {i.sku}" for i in items)
    return await advance(
        session, order, "inventory_reserved", trace_id=trace_id, now=now, detail=detail
    )


async def confirmation_email(session: AsyncSession, order_id: uuid.UUID) -> Email | None:
    """The email to send for an order whose inventory is reserved (None otherwise, or when the
    order has no email address)."""
    order = await session.get(Order, order_id)
    if order is None or order.status != "inventory_reserved" or not order.email:
        return None
    details = await order_out(session, order)
    lines = [
        f"{i.quantity} x {i.name} ({i.sku})  {_money(i.unit_price_cents)}" for i in details.items
    ]
    body = "\n".join(
        [
            "Thank you for your order.",
            "",
            f"Order {order.id}",
            *lines,
            f"Total: {_money(order.total_cents)}",
            f"Paid with the card ending in {order.card_last4}.",
            "",
            "We will tell you when the delivery is scheduled.",
        ]
    )
    return Email(
        dedupe_key=f"order-confirmation:{order.id}",
        recipient=order.email,
        subject=f"Your order {str(order.id)[:8]} is confirmed",
        body=body,
    )


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


async def confirm_order(
    session: AsyncSession,
    order_id: uuid.UUID,
    email: Email | None,
    *,
    sent_at: datetime | None,
    trace_id: str,
    now: datetime,
) -> Order | None:
    """Write the confirmation email to the outbox (once per order) and mark the order
    `confirmed`. None: the order is not `inventory_reserved`."""
    order = await lock_order(session, order_id)
    if order is None or order.status != "inventory_reserved":
        return None
    if email is None:
        detail = "no email address: nothing written to the outbox"
    else:
        await write_outbox(session, email, created_at=now, sent_at=sent_at)
        detail = f"email {'sent' if sent_at else 'written to the outbox'} for {email.recipient}"
    return await advance(session, order, "confirmed", trace_id=trace_id, now=now, detail=detail)


async def write_outbox(
    session: AsyncSession, email: Email, *, created_at: datetime, sent_at: datetime | None
) -> None:
    """Insert the email unless one with its dedupe key exists."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(EmailOutbox)
        .values(
            id=uuid.uuid4(),
            dedupe_key=email.dedupe_key,
            recipient=email.recipient,
            subject=email.subject,
            body=email.body,
            created_at=created_at,
            sent_at=sent_at,
        )
        .on_conflict_do_nothing(index_elements=[EmailOutbox.dedupe_key])
    )


async def schedule_delivery(
    session: AsyncSession, order_id: uuid.UUID, *, trace_id: str, now: datetime
) -> Order | None:
    """Book the delivery DELIVERY_DAYS from now: `delivery_scheduled`. None: not `confirmed`."""
    delivery_date = now + timedelta(days=DELIVERY_DAYS)
    return await transition(
        session,
        order_id,
        {"confirmed"},
        "delivery_scheduled",
        trace_id=trace_id,
        now=now,
        detail=f"delivery on {delivery_date.date().isoformat()}",
        changes={"delivery_date": delivery_date},
    )
