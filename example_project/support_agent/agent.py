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
from pytest_llmwb import (
    Dag,
    GateDecision,
    Message,
    ModelRequest,
    PolicyRef,
    PolicyReviewer,
    Reviewer,
)

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
REPLY_POLICY = PolicyRef(id="reply-style", version="3")
#: Phrases a reply must never contain: the reply-style policy rejects them.
FORBIDDEN_PHRASES = ("guarantee", "lawyer")

DAG = (
    Dag("support_agent")
    .model("classify", prompt=CLASSIFY_PROMPT, model=MODEL, temperature=0)
    .tool("lookup_order", returns=Order)
    .gate("approve_refund", policy=REFUND_POLICY.model_dump(), threshold=REFUND_GATE_THRESHOLD)
    .tool("issue_refund", returns=Refund)
    .model("draft_reply", prompt=DRAFT_PROMPT, model=MODEL, temperature=0)
    .gate("review_reply", policy=REPLY_POLICY.model_dump(), forbidden=list(FORBIDDEN_PHRASES))
    .chain("classify", "lookup_order", "approve_refund", "issue_refund", "draft_reply")
    # every path the agent takes is an edge: transitions are checked against them
    .edge("classify", "draft_reply")  # no order id: ask for it
    .edge("lookup_order", "issue_refund")  # small refunds need no approval
    .edge("lookup_order", "draft_reply")  # not a refund
    .edge("approve_refund", "draft_reply")  # rejected
    .edge("draft_reply", "review_reply")
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


def _reply_rule(reply: dict[str, Any]) -> tuple[str, str]:
    found = [p for p in FORBIDDEN_PHRASES if p in str(reply["message"]).lower()]
    if found:
        return "rejected", f"the reply contains {', '.join(found)}"
    return "approved", "no forbidden phrases"


#: Replies are checked by the reply-style policy; a host could use a CallbackReviewer
#: here to put a person in the loop through its own UI.
reply_style = PolicyReviewer(REPLY_POLICY, _reply_rule)

FALLBACK = "Thanks for your patience: a colleague will follow up on your ticket personally."


class SupportAgent:
    """Answers refund tickets.

    ``reviewer`` decides at the approve_refund gate, ``reply_reviewer`` at review_reply.
    """

    def __init__(
        self,
        reviewer: Callable[[Any], GateDecision] = refund_policy,
        reply_reviewer: Any = reply_style,
    ) -> None:
        self.reviewer = reviewer
        self.reply_reviewer = reply_reviewer

    def handle(self, ticket: Ticket) -> Reply:
        """Handle one ticket end to end and return the reply sent to the customer."""
        llmwb.declare(DAG)
        intent = self.classify(ticket)
        if intent.order_id is None:
            return self.review(self.draft(ticket, None, None, None))
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
        return self.review(self.draft(ticket, order, refund, decision))

    def review(self, reply: Reply) -> Reply:
        """Stop at the review_reply gate: the reviewer sees exactly the reply to be sent."""
        draft = llmwb.artifact("reply", reply, node="draft_reply")
        outcome = llmwb.gate(
            "review_reply",
            reviewer=self.reply_reviewer,
            subject=draft if draft is not None else reply.model_dump(mode="json"),
            policy=REPLY_POLICY,
        )
        if outcome.decision == "edited":
            return Reply.model_validate(outcome.edit)
        if outcome.decision != "approved":
            return reply.model_copy(update={"message": FALLBACK})
        return reply

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
        """Ask the model for the reply to send."""
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
        return Reply(
            ticket_id=ticket.id,
            order_id=order.id if order else None,
            message=response.content or "",
            refund_amount=refund.amount if refund else 0.0,
            refund_issued=refund is not None,
        )
