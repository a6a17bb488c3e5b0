"""A simulated payment gateway: declines one test card always, and others at a configurable rate.

A real integration would tokenise the card at checkout (the token, not the number, is what the
order keeps) and pass an idempotency key so that a charge retried after a crash is made once.
The simulation keys on the card's last four digits and keeps no memory of charges.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

# 4000 0000 0000 0002, like Stripe's test card: every attempt is declined.
DECLINED_CARD_LAST4 = "0002"


class PaymentDeclined(Exception):
    """The gateway refused the charge; `reason` is a machine code."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"payment declined: {reason}")


def charge(
    *,
    card_last4: str,
    amount_cents: int,
    idempotency_key: str,
    failure_rate: float,
    rand: Callable[[], float] = random.random,
) -> str:
    """Charge the card; returns the gateway's reference, or raises PaymentDeclined."""
    if card_last4 == DECLINED_CARD_LAST4:
        raise PaymentDeclined("card_declined")
    if failure_rate > 0 and rand() < failure_rate:
        raise PaymentDeclined("gateway_unavailable")
    digest = hashlib.sha256(f"{idempotency_key}:{amount_cents}".encode()).hexdigest()
    return f"sim_{digest[:16]}"
