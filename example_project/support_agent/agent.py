"""The support agent: classify the ticket, look up the order, gate large refunds, reply.

The DAG below is what the agent declares as live at the start of every run. Its node
configs (prompts, model id, tool schemas, gate policy) are digested into the bundle,
so changing a prompt is reported as drift until the bundle is recorded again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

import pytest_llmwb as llmwb
from pytest_llmwb import Dag, GateDecision, Message, ModelRequest, PolicyRef, Reviewer

from .llm import MODEL, complete
from .models import Order, Refund, Reply, Ticket
from .tools import issue_refund, lookup_order

CLASSIFY_PROMPT = (
    "Classify the customer's support ticket. Answer with JSON only: "
    '{"intent": "refund" or "question", "order_id": the order id or null}.'
)
DRAFT_PROMPT = (
    "You write short, friendly replies to customers of an online shop. Use only the "
    "facts you are given as JSON; never promise a refund that was not issued."
)
#: Refunds above this amount stop at the approve_refund gate.
REFUND_GATE_THRESHOLD = 100.0
#: Refunds up to this amount are approved by policy; larger ones are rejected for review.
AUTO_APPROVE_LIMIT = 500.0
REFUND_POLICY = PolicyRef(id="refund-policy", version="2026-11")

DAG = (
    Dag("support_agent")
    .model("classify", prompt=CLASSIFY_PROMPT, model=MODEL, temperature=0)
    .tool("lookup_order", returns=Order)
    .gate("approve_refund", policy=REFUND_POLICY.model_dump(), threshold=REFUND_GATE_THRESHOLD)
    .tool("issue_refund", returns=Refund)
    .model("draft_reply", prompt=DRAFT_PROMPT, model=MODEL, temperature=0)
    .chain("classify", "lookup_order", "approve_refund", "issue_refund", "draft_reply")
    .edge("lookup_order", "draft_reply")
)


class Intent(BaseModel):
    """What the classifier found in the ticket."""

    intent: str
    order_id: str | None = None


def refund_policy(subject: dict[str, Any]) -> GateDecision:
    """The refund policy as a reviewer: approve up to the limit, else reject for review."""
    amount = float(subject["amount"])
    reviewer = Reviewer(id=f"{REFUND_POLICY.id}@{REFUND_POLICY.version}", kind="policy")
    if amount <= AUTO_APPROVE_LIMIT:
        return GateDecision(
            decision="approved",
            reviewer=reviewer,
            reason=f"{amount:.2f} is within the {AUTO_APPROVE_LIMIT:.2f} auto-approval limit",
        )
    return GateDecision(
        decision="rejected",
        reviewer=reviewer,
        reason=f"{amount:.2f} exceeds the {AUTO_APPROVE_LIMIT:.2f} auto-approval limit",
    )


class SupportAgent:
    """Answers refund tickets. ``reviewer`` decides at the approve_refund gate."""

    def __init__(self, reviewer: Callable[[Any], GateDecision] = refund_policy) -> None:
        self.reviewer = reviewer

    def handle(self, ticket: Ticket) -> Reply:
        """Handle one ticket end to end and return the reply sent to the customer."""
        llmwb.declare(DAG)
        intent = self.classify(ticket)
        if intent.order_id is None:
            return self.draft(ticket, None, None, None)
        order = lookup_order(intent.order_id)
        refund: Refund | None = None
        decision: str | None = None
        if intent.intent == "refund":
            approved = True
            if order.amount > REFUND_GATE_THRESHOLD:
                outcome = llmwb.gate(
                    "approve_refund",
                    reviewer=self.reviewer,
                    subject={
                        "order_id": order.id,
                        "amount": order.amount,
                        "customer": order.customer,
                    },
                    policy=REFUND_POLICY,
                )
                decision = outcome.decision
                approved = decision == "approved"
            if approved:
                refund = issue_refund(order.id, order.amount)
        return self.draft(ticket, order, refund, decision)

    @llmwb.step("classify")
    def classify(self, ticket: Ticket) -> Intent:
        """Ask the model what the ticket wants."""
        response = complete(
            ModelRequest(
                model=MODEL,
                system=CLASSIFY_PROMPT,
                messages=[Message(role="user", content=ticket.text)],
                params={"temperature": 0},
            )
        )
        return Intent.model_validate_json(response.content or "{}")

    @llmwb.step("draft_reply")
    def draft(
        self, ticket: Ticket, order: Order | None, refund: Refund | None, decision: str | None
    ) -> Reply:
        """Ask the model for the reply, and record it as the ``reply`` artifact."""
        facts = {
            "customer": ticket.customer,
            "order_id": order.id if order else None,
            "refund": refund.model_dump() if refund else None,
            "decision": decision,
        }
        response = complete(
            ModelRequest(
                model=MODEL,
                system=DRAFT_PROMPT,
                messages=[Message(role="user", content=json.dumps(facts, sort_keys=True))],
                params={"temperature": 0},
            )
        )
        reply = Reply(
            ticket_id=ticket.id,
            order_id=order.id if order else None,
            message=response.content or "",
            refund_amount=refund.amount if refund else 0.0,
            refund_issued=refund is not None,
        )
        llmwb.artifact("reply", reply)
        return reply
