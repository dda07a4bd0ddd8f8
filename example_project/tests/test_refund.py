"""The support agent's tests, replayed from the bundles in llmwb_bundles/.

Record them again with `pytest example_project --llmwb-record`.
"""

import pytest
from support_agent import REFUND_GATE_THRESHOLD, SupportAgent, Ticket
from support_agent.tools import ORDERS

from pytest_llmwb import assert_gate, expect_gate

EDITED = {
    "ticket_id": "T-2",
    "order_id": "B-2002",
    "message": "Hello Bo, your refund of 249.00 for order B-2002 is on its way (RF-B-2002).",
    "refund_amount": 249.0,
    "refund_issued": True,
}


def test_small_refund_is_issued_without_a_gate(llmwb):
    ticket = Ticket(
        id="T-1", customer="ana@example.com", text="Please refund order A-1001, it arrived broken."
    )

    reply = SupportAgent().handle(ticket)

    assert reply.refund_issued and reply.refund_amount == 42.50
    assert "RF-A-1001" in reply.message
    assert ORDERS["A-1001"].amount <= REFUND_GATE_THRESHOLD
    assert "approve_refund" not in llmwb.gates
    assert [call.tool for call in llmwb.tool_calls] == ["lookup_order", "issue_refund"]


def test_large_refund_is_approved_by_policy(llmwb):
    ticket = Ticket(id="T-2", customer="bo@example.com", text="I want my money back for B-2002.")

    reply = SupportAgent().handle(ticket)

    assert_gate(llmwb, "approve_refund", "approved", reviewer="policy", policy="refund-policy")
    assert llmwb.gates["approve_refund"].subject.value["amount"] == 249.0
    assert reply.refund_issued


def test_refund_over_the_limit_is_rejected_for_review(llmwb):
    ticket = Ticket(
        id="T-3", customer="cy@example.com", text="Refund C-3003 please, it is too big."
    )

    reply = SupportAgent().handle(ticket)

    assert llmwb.gates["approve_refund"].decision == "rejected"
    assert not reply.refund_issued
    assert [call.tool for call in llmwb.tool_calls] == ["lookup_order"]
    assert "closer look" in reply.message


@pytest.mark.llmwb(gates={"approve_refund": "rejected"})
def test_finance_can_reject_a_refund_the_policy_would_approve(llmwb):
    ticket = Ticket(id="T-2", customer="bo@example.com", text="I want my money back for B-2002.")

    reply = SupportAgent().handle(ticket)

    assert llmwb.gates["approve_refund"] == expect_gate("rejected", reviewer="test")
    assert not reply.refund_issued
    assert "issue_refund" not in [call.tool for call in llmwb.tool_calls]


@pytest.mark.llmwb(
    gates={"review_reply": {"decision": "edited", "edit": EDITED, "reason": "warmer tone"}}
)
def test_reviewer_edits_the_reply_before_it_is_sent(llmwb):
    ticket = Ticket(id="T-2", customer="bo@example.com", text="I want my money back for B-2002.")

    reply = SupportAgent().handle(ticket)

    assert reply.message == EDITED["message"]
    draft, edited = llmwb.revisions("reply")
    gate = assert_gate(llmwb, "review_reply", "edited", subject=draft)
    assert edited.revision == 2 and edited.supersedes == draft.seq
    assert gate.seq in edited.derived_from


def test_reply_review_binds_to_the_exact_reply_sent(llmwb):
    reply = SupportAgent().handle(
        Ticket(id="T-5", customer="ana@example.com", text="Refund A-1001 please")
    )

    review = llmwb.gates["review_reply"]
    assert review.subject.kind == "artifact" and review.subject.revision == 1
    assert review.subject.digest == llmwb.artifacts["reply"].content_digest
    assert review.reviewer.id == "reply-style@3"
    assert reply.message == llmwb.artifacts["reply"].content["message"]


def test_question_without_order_asks_for_it(llmwb):
    reply = SupportAgent().handle(
        Ticket(id="T-4", customer="di@example.com", text="Where is my parcel?")
    )

    assert reply.order_id is None
    assert "order number" in reply.message
    assert len(llmwb.model_calls) == 2


@pytest.mark.llmwb(max_cost="0.001", max_tokens=500)
def test_every_model_call_has_a_receipt_with_tokens_and_cost(llmwb):
    SupportAgent().handle(Ticket(id="T-5", customer="ana@example.com", text="Refund A-1001 please"))

    receipts = llmwb.model_calls
    assert [r.node for r in receipts] == ["classify", "draft_reply"]
    assert all(r.usage.input_tokens > 0 and r.usage.output_tokens > 0 for r in receipts)
    assert all(r.cost is not None and r.cost.currency == "USD" for r in receipts)
    assert llmwb.cost.amount > 0
    assert set(llmwb.cost.by_node) == {"classify", "draft_reply"}
    assert llmwb.artifacts["reply"].schema_ref == "support_agent.models:Reply"
