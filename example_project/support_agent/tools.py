"""The agent's tools. In a real deployment these call the order and payment services."""

from __future__ import annotations

import pytest_llmwb as llmwb

from .models import Order, Refund

ORDERS: dict[str, Order] = {
    order.id: order
    for order in (
        Order(id="A-1001", customer="ana@example.com", amount=42.50, status="delivered"),
        Order(id="B-2002", customer="bo@example.com", amount=249.00, status="delivered"),
        Order(id="C-3003", customer="cy@example.com", amount=1890.00, status="delivered"),
    )
}


class OrderNotFoundError(LookupError):
    """The order service has no such order."""


@llmwb.tool
def lookup_order(order_id: str) -> Order:
    """Fetch an order from the order service."""
    try:
        return ORDERS[order_id]
    except KeyError:
        raise OrderNotFoundError(order_id) from None


@llmwb.tool
def issue_refund(order_id: str, amount: float) -> Refund:
    """Ask the payment service to refund ``amount`` on ``order_id``."""
    return Refund(order_id=order_id, amount=amount, reference=f"RF-{order_id}")
