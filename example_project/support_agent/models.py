"""The agent's domain: tickets in, orders looked up, replies out."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Ticket(BaseModel):
    """A customer's support ticket."""

    id: str
    customer: str
    text: str


class Order(BaseModel):
    """An order as the order service returns it."""

    id: str
    customer: str
    amount: float = Field(ge=0)
    status: str


class Refund(BaseModel):
    """A refund the payment service issued."""

    order_id: str
    amount: float
    reference: str


class Reply(BaseModel):
    """The reply sent to the customer: the artifact the refund gate is about."""

    ticket_id: str
    order_id: str | None
    message: str
    refund_amount: float = 0.0
    refund_issued: bool = False
