"""NotifyCustomer: how a customer would hear that their order failed."""

config = {
    "name": "NotifyCustomer",
    "type": "noop",
    "subscribes": ["payment.failed", "order.failed"],
    "flows": ["orders"],
    "description": "Outside the system: a failed payment or an order out of stock ends the "
    "flow; the customer sees it in GET /orders/{id} (a refund or a message would start here).",
}
