"""DeliveryPartner: the carrier who receives each scheduled delivery."""

config = {
    "name": "DeliveryPartner",
    "type": "noop",
    "subscribes": ["delivery.scheduled"],
    "flows": ["orders"],
    "description": "Outside the system: a carrier would be booked with the order and its date.",
}
