"""llmwb explain and llmwb cost answer from the example project's committed bundles."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from pytest_llmwb import load_bundle
from pytest_llmwb.cli import main
from pytest_llmwb.costs import money, summarize

BUNDLES = Path(__file__).parents[2] / "example_project" / "tests" / "llmwb_bundles" / "test_refund"


def test_explain_answers_why_a_refund_was_approved(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "explain",
                str(BUNDLES / "test_large_refund_is_approved_by_policy"),
                "--gate",
                "approve_refund",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "  decision: approved\n" in out
    assert "  reviewer: policy refund-policy@2026-11\n" in out
    assert "  policy:   refund-policy v2026-11\n" in out
    assert (
        '  reviewed: {"amount": 249.0, "customer": "bo@example.com", "order_id": "B-2002"}' in out
    )
    assert "what led to it (2 facts on the path classify -> lookup_order -> approve_refund):" in out
    assert "asked:    I want my money back for B-2002." in out
    assert "lookup_order({'order_id': 'B-2002'})" in out
    # the draft that came after the gate is no cause of it
    assert "draft_reply" not in out.split("what led to it")[1]


def test_explain_answers_why_a_refund_was_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "explain",
            str(BUNDLES / "test_refund_over_the_limit_is_rejected_for_review"),
            "--gate",
            "approve_refund",
        ]
    )
    out = capsys.readouterr().out
    assert "  decision: rejected\n" in out
    assert "reason:   1890.00 exceeds the 500.00 auto-approval limit" in out


def test_explain_an_edit_shows_the_reviewed_revision_and_the_edit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(
        [
            "explain",
            str(BUNDLES / "test_reviewer_edits_the_reply_before_it_is_sent"),
            "--gate",
            "review_reply",
        ]
    )
    out = capsys.readouterr().out
    assert "subject:  artifact reply revision 1 (sha256:" in out
    assert '"message": "Hi Bo, we have refunded 249.00' in out
    assert '  edit:     {"message": "Hello Bo, your refund' in out


def test_explain_every_gate_without_gate_option(capsys: pytest.CaptureFixture[str]) -> None:
    main(["explain", str(BUNDLES / "test_large_refund_is_approved_by_policy")])
    out = capsys.readouterr().out
    assert "gate 'approve_refund'" in out and "gate 'review_reply'" in out


def test_explain_an_unknown_gate_lists_the_gates_that_fired(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(
            ["explain", str(BUNDLES / "test_large_refund_is_approved_by_policy"), "--gate", "nope"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "gate 'nope' never fired" in err
        and "(gates that fired: approve_refund, review_reply)" in err
    )
    assert "fix: pass one of those with --gate" in err


def test_cost_rolls_up_per_node_and_artifact_revision(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = load_bundle(BUNDLES / "test_large_refund_is_approved_by_policy")
    summary = summarize(bundle.facts)
    by_node = {node: spend.amount for node, spend in summary.by_node.items()}
    assert sum(by_node.values(), Decimal(0)) == summary.amount > 0
    assert summary.by_artifact["reply@1"].calls == 2

    assert main(["cost", str(BUNDLES / "test_large_refund_is_approved_by_policy")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"total    2 call(s), {summary.tokens} tokens, {money(summary.amount)} USD\n"
    )
    assert "\nby node\n  draft_reply" in out  # the biggest spender first
    assert "reply@1  2 call(s)" in out


def test_money_is_printed_without_exponent_or_trailing_zeros() -> None:
    assert money(Decimal("0.0000550")) == "0.000055"
    assert money(Decimal("1E+2")) == "100"
