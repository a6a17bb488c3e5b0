"""What the orders API takes and returns, and the data its events carry."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt
from pydantic_core import PydanticCustomError

from app.fields import SingleLine

# Stripe's test card that always succeeds: the default when an order names no card.
DEFAULT_TEST_CARD = "4242424242424242"
MAX_QUANTITY = 100
MAX_ITEMS = 50


def luhn_valid(digits: str) -> bool:
    """The check digit card numbers carry (ISO/IEC 7812): catches most typing mistakes."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card_number(value: str) -> str:
    digits = value.replace(" ", "")
    if not (12 <= len(digits) <= 19 and digits.isascii() and digits.isdigit()):
        raise PydanticCustomError("card_number_invalid", "must be a card number of 12 to 19 digits")
    if not luhn_valid(digits):
        raise PydanticCustomError("card_number_invalid", "the card number's check digit is wrong")
    return digits


CardNumber = Annotated[str, AfterValidator(_card_number)]
"""12 to 19 digits (spaces allowed and dropped) with a valid check digit
(error type `card_number_invalid`)."""


# -- requests -------------------------------------------------------------------------------------


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: SingleLine = Field(min_length=1, max_length=32, examples=["BOOK-1"])
    quantity: StrictInt = Field(ge=1, le=MAX_QUANTITY)


class CreateOrder(BaseModel):
    """Items of the catalogue (the same sku twice is one line: quantities add up) and the card
    to charge. Only the card's last four digits are stored."""

    model_config = ConfigDict(extra="forbid")

    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    card_number: CardNumber = Field(
        DEFAULT_TEST_CARD,
        description="12-19 digits, spaces allowed. 4000 0000 0000 0002 is always declined.",
        examples=[DEFAULT_TEST_CARD],
    )


class ListOrdersQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1_000_000)


# -- responses ------------------------------------------------------------------------------------


class OrderItemOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price_cents: int


class HistoryEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: str
    at: datetime
    trace_id: str | None
    detail: str | None


class OrderOut(BaseModel):
    id: uuid.UUID
    status: str
    items: list[OrderItemOut]
    total_cents: int
    card_last4: str
    payment_attempts: int
    delivery_date: datetime | None
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry]


class OrderSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: str
    total_cents: int
    card_last4: str
    delivery_date: datetime | None
    created_at: datetime


class OrderPage(BaseModel):
    items: list[OrderSummary]
    total: int
    limit: int
    offset: int


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sku: str
    name: str
    price_cents: int
    stock: int


class ProductList(BaseModel):
    items: list[ProductOut]


# -- events ---------------------------------------------------------------------------------------


class OrderEvent(BaseModel):
    """Every topic of the flow names the order; its data lives in the database."""

    order_id: uuid.UUID
