"""The sample catalogue of DESIGN.md: put back by `python -m app seed` (and by the tests after
they empty the tables). Migration 0004 inserted the same rows when it ran."""

from __future__ import annotations

from sqlalchemy import Connection, select

from steps.orders.models import Product

CATALOGUE = [
    {"sku": "BOOK-1", "name": "The Stepwise Book", "price_cents": 2500, "stock": 100},
    {"sku": "MUG-1", "name": "Stepwise Mug", "price_cents": 1200, "stock": 50},
    {"sku": "TSHIRT-M", "name": "Stepwise T-shirt (M)", "price_cents": 2000, "stock": 25},
]


def seed(conn: Connection) -> int:
    """Insert the catalogue rows that are missing (existing stock is left alone)."""
    present = set(conn.scalars(select(Product.sku)))
    missing = [row for row in CATALOGUE if row["sku"] not in present]
    if missing:
        conn.execute(Product.__table__.insert(), missing)
    return len(missing)
