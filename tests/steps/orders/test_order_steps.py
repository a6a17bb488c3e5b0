"""Each step of the order flow on its own (StepTester on the run's database): the same event
delivered twice changes nothing the second time; payment retries; the email over SMTP."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine
from app.runtime.testing import StepTester
from steps.orders import gateway
from steps.orders.gateway import PaymentDeclined
from steps.orders.models import EmailOutbox, Order, OrderHistory
from tests.conftest import ROOT, make_settings
from tests.steps.orders.support import reading, set_stock, stock_of

STEPS = ROOT / "steps"
ADA = {"id": "user-ada", "role": "user", "email": "ada@example.com"}
FLOW = [
    ("ProcessPayment", "payment.succeeded", "paid"),
    ("UpdateInventory", "inventory.reserved", "inventory_reserved"),
    ("SendConfirmationEmail", "order.confirmed", "confirmed"),
    ("ScheduleDelivery", "delivery.scheduled", "delivery_scheduled"),
]


@pytest.fixture
async def engine(any_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(make_settings(any_db_url))
    yield engine
    await engine.dispose()


@dataclass(frozen=True)
class Snapshot:
    status: str
    history: list[str]
    payment_attempts: int
    delivery_date: Any
    mugs: int
    emails: int


async def snapshot(engine: AsyncEngine, order_id: str) -> Snapshot:
    async with reading(engine) as conn:
        order = (await conn.execute(select(Order).where(Order.id == uuid.UUID(order_id)))).one()
        history = await conn.scalars(
            select(OrderHistory.status)
            .where(OrderHistory.order_id == order.id)
            .order_by(OrderHistory.id)
        )
        emails = len((await conn.execute(select(EmailOutbox.id))).all())
        return Snapshot(
            order.status,
            list(history),
            order.payment_attempts,
            order.delivery_date,
            await stock_of(engine, "MUG-1"),
            emails,
        )


async def create_order(engine: AsyncEngine, **body: Any) -> str:
    async with StepTester("CreateOrder", steps_dir=STEPS, engine=engine) as tester:
        result = await tester.call_api(
            body={"items": [{"sku": "MUG-1", "quantity": 2}], **body}, user=ADA
        )
    assert result.status == 201, result.body
    assert [e["topic"] for e in tester.emitted] == ["order.created"]
    order_id: str = result.body["id"]
    assert tester.emitted[0]["data"] == {"order_id": order_id}
    return order_id


async def deliver_twice(
    engine: AsyncEngine, step: str, order_id: str, **kwargs: Any
) -> tuple[Snapshot, Snapshot, list[dict[str, Any]]]:
    """Deliver `{"order_id"}` to the step twice; the snapshots after each, and what it emitted."""
    async with StepTester(step, steps_dir=STEPS, engine=engine) as tester:
        await tester.call_event({"order_id": order_id}, **kwargs)
        first = await snapshot(engine, order_id)
        await tester.call_event({"order_id": order_id}, **kwargs)
        second = await snapshot(engine, order_id)
    return first, second, tester.emitted


async def test_every_step_of_the_flow_delivered_twice_acts_once(engine: AsyncEngine) -> None:
    mugs = await stock_of(engine, "MUG-1")
    order_id = await create_order(engine)
    for step, topic, status in FLOW:
        first, second, emitted = await deliver_twice(engine, step, order_id)
        assert first == second, step
        assert first.status == status
        assert [e["topic"] for e in emitted] == [topic], step
    final = await snapshot(engine, order_id)
    assert final.history == ["pending", *[status for _, _, status in FLOW]]
    assert final.mugs == mugs - 2
    assert final.emails == 1
    assert final.payment_attempts == 1
    # Late redeliveries of any step, once the order is past it, change nothing either.
    for step, _, _ in FLOW:
        _, again, emitted = await deliver_twice(engine, step, order_id)
        assert again == final and emitted == [], step


async def test_a_declined_payment_is_retried_and_the_last_attempt_records_it(
    engine: AsyncEngine,
) -> None:
    order_id = await create_order(engine, card_number="4000000000000002")
    async with StepTester("ProcessPayment", steps_dir=STEPS, engine=engine) as tester:
        for attempt in (1, 2):
            with pytest.raises(PaymentDeclined, match="card_declined"):
                await tester.call_event({"order_id": order_id}, attempt=attempt)
            assert (await snapshot(engine, order_id)).status == "pending"
        await tester.call_event({"order_id": order_id}, attempt=3)
        failed = await snapshot(engine, order_id)
        await tester.call_event({"order_id": order_id}, attempt=3)  # delivered again
        again = await snapshot(engine, order_id)
    assert failed == again
    assert (failed.status, failed.payment_attempts) == ("payment_failed", 3)
    assert failed.history == ["pending", "payment_failed"]
    assert tester.emitted == [
        {
            "topic": "payment.failed",
            "data": {"order_id": order_id, "reason": "card_declined"},
            "delay": 0.0,
            "message_group_id": None,
        }
    ]


async def test_the_failure_rate_fails_good_cards_at_random(
    engine: AsyncEngine, any_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.settings._current", make_settings(any_db_url, payment_failure_rate=1))
    order_id = await create_order(engine)
    async with StepTester("ProcessPayment", steps_dir=STEPS, engine=engine) as tester:
        with pytest.raises(PaymentDeclined, match="gateway_unavailable"):
            await tester.call_event({"order_id": order_id}, attempt=1)
        await tester.call_event({"order_id": order_id}, attempt=3)
    assert (await snapshot(engine, order_id)).status == "payment_failed"
    assert tester.emitted[0]["data"]["reason"] == "gateway_unavailable"


def test_the_simulated_gateway() -> None:
    def charge(last4: str, rate: float, rand: float) -> str:
        return gateway.charge(
            card_last4=last4,
            amount_cents=100,
            idempotency_key="k",
            failure_rate=rate,
            rand=lambda: rand,
        )

    assert charge("4242", 0.0, 0.0).startswith("sim_")
    assert charge("4242", 0.3, 0.5) == charge("4242", 0.3, 0.9)
    with pytest.raises(PaymentDeclined, match="gateway_unavailable"):
        charge("4242", 0.3, 0.29)
    with pytest.raises(PaymentDeclined, match="card_declined"):
        charge("0002", 0.0, 0.99)


async def test_an_order_short_of_stock_fails_once_and_keeps_the_stock(
    engine: AsyncEngine,
) -> None:
    order_id = await create_order(engine)
    await set_stock(engine, "MUG-1", 1)
    await deliver_twice(engine, "ProcessPayment", order_id)
    first, second, emitted = await deliver_twice(engine, "UpdateInventory", order_id)
    assert first == second
    assert first.status == "out_of_stock" and first.mugs == 1
    assert first.history == ["pending", "paid", "out_of_stock"]
    assert emitted == [
        {
            "topic": "order.failed",
            "data": {"order_id": order_id, "reason": "out_of_stock"},
            "delay": 0.0,
            "message_group_id": None,
        }
    ]


class FakeSMTP:
    """Stands in for smtplib.SMTP: records what the mailer asked of the server."""

    sessions: list[FakeSMTP] = []

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.address = (host, port)
        self.calls: list[str] = []
        self.messages: list[EmailMessage] = []
        FakeSMTP.sessions.append(self)

    def __enter__(self) -> FakeSMTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.calls.append("quit")

    def starttls(self, context: Any = None) -> None:
        self.calls.append("starttls")

    def login(self, user: str, password: str) -> None:
        self.calls.append(f"login {user} {password}")

    def send_message(self, message: EmailMessage) -> None:
        self.calls.append("send")
        self.messages.append(message)


async def test_with_smtp_host_set_the_email_is_sent_and_marked_sent(
    engine: AsyncEngine, any_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        any_db_url,
        smtp_host="smtp.example.com",
        smtp_port=2525,
        smtp_username="mailer",
        smtp_password="s3cret",
        email_from="shop@example.com",
    )
    monkeypatch.setattr("app.settings._current", settings)
    monkeypatch.setattr(smtplib, "SMTP", FakeSMTP)
    FakeSMTP.sessions = []
    order_id = await create_order(engine)
    for step, _, _ in FLOW[:2]:
        await deliver_twice(engine, step, order_id)
    first, second, emitted = await deliver_twice(engine, "SendConfirmationEmail", order_id)
    async with reading(engine) as conn:
        email = (await conn.execute(select(EmailOutbox))).one()

    assert first == second and first.status == "confirmed" and first.emails == 1
    assert [e["topic"] for e in emitted] == ["order.confirmed"]
    # The second delivery found the order confirmed: nothing was sent again.
    assert len(FakeSMTP.sessions) == 1
    smtp = FakeSMTP.sessions[0]
    assert smtp.address == ("smtp.example.com", 2525)
    assert smtp.calls == ["starttls", "login mailer s3cret", "send", "quit"]
    message = smtp.messages[0]
    assert (message["From"], message["To"]) == ("shop@example.com", "ada@example.com")
    assert message["Subject"] == email.subject
    assert email.sent_at is not None
