"""A small support agent that answers refund tickets, instrumented with pytest-llmwb."""

from .agent import DAG, REFUND_GATE_THRESHOLD, SupportAgent
from .models import Order, Reply, Ticket

__all__ = ["DAG", "REFUND_GATE_THRESHOLD", "Order", "Reply", "SupportAgent", "Ticket"]
