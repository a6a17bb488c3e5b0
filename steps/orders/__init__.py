"""Orders: POST /orders -> order.created -> ProcessPayment -> UpdateInventory ->
SendConfirmationEmail -> ScheduleDelivery; GET /orders and GET /orders/{id}."""
