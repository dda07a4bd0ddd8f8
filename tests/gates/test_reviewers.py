"""Reviewers decide at gates; none of them can fail into an approval."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from pytest_llmwb import (
    ArtifactSchemaError,
    CallbackReviewer,
    Dag,
    GateDecision,
    GateDecisionError,
    GateSubjectError,
    PolicyRef,
    PolicyReviewer,
    Reviewer,
    Run,
    ScriptedReviewer,
    TerminalReviewer,
)
from pytest_llmwb.reviewers import GateRequest


class Reply(BaseModel):
    text: str
    amount: float


DAG = Dag("agent").model("draft").gate("review").gate("approve").chain("draft", "review")


def _request(subject: Any = None) -> GateRequest:
    return GateRequest("review", subject, None, PolicyRef(id="p", version="2"), "run")


@pytest.mark.parametrize(
    ("answer", "decision", "reason"),
    [
        (True, "approved", None),
        (False, "rejected", None),
        ("escalated", "escalated", None),
        (("rejected", "too large"), "rejected", "too large"),
    ],
)
def test_policy_reviewer_turns_rule_answers_into_recorded_decisions(
    answer: Any, decision: str, reason: str | None
) -> None:
    reviewer = PolicyReviewer(PolicyRef(id="refunds", version="7"), lambda subject: answer)

    result = reviewer.review(_request({"amount": 1}))

    assert result.decision == decision
    assert result.reason == reason
    assert result.reviewer == Reviewer(id="refunds@7", kind="policy")


def test_policy_reviewer_rejects_garbage_with_a_named_error() -> None:
    reviewer = PolicyReviewer("refunds", lambda subject: "maybe")
    with pytest.raises(
        GateDecisionError, match=r"returned 'maybe', which is not a decision"
    ) as info:
        reviewer.review(_request())
    assert "approved, rejected, edited, escalated, timed_out" in str(info.value)


def test_invalid_decision_mapping_names_the_field() -> None:
    reviewer = CallbackReviewer("ann", lambda request: {"decision": "approve"})
    with pytest.raises(GateDecisionError, match=r"invalid decision \(decision: Input should be"):
        reviewer.review(_request())


def test_callback_reviewer_times_out_into_timed_out_never_approved() -> None:
    release = threading.Event()

    def slow(request: GateRequest) -> str:
        release.wait(5)
        return "approved"

    reviewer = CallbackReviewer("ann@example.com", slow, timeout=0.05)
    try:
        result = reviewer.review(_request())
    finally:
        release.set()
    assert result.decision == "timed_out"
    assert result.reviewer == Reviewer(id="ann@example.com", kind="human")
    assert result.reason == "no decision within 0.05 s"


def test_callback_reviewer_gets_the_whole_request() -> None:
    seen: list[GateRequest] = []
    reviewer = CallbackReviewer("ann", lambda request: seen.append(request) or "approved")
    reviewer.review(_request({"amount": 3}))
    assert seen[0].gate_id == "review" and seen[0].subject == {"amount": 3}
    assert seen[0].policy == PolicyRef(id="p", version="2")


def test_terminal_reviewer_reads_decision_reason_and_edit() -> None:
    out = io.StringIO()
    reviewer = TerminalReviewer(
        "me", stdin=io.StringIO('x\ne\n{"text": "better"}\nfriendlier\n'), stdout=out
    )

    result = reviewer.review(_request({"text": "draft"}))

    assert result.decision == "edited"
    assert result.edit == {"text": "better"}
    assert result.reason == "friendlier"
    assert '"text": "draft"' in out.getvalue() and "(policy p v2)" in out.getvalue()


def test_terminal_reviewer_without_input_times_out() -> None:
    reviewer = TerminalReviewer(stdin=io.StringIO(""), stdout=io.StringIO())
    assert reviewer.review(_request()).decision == "timed_out"


def test_scripted_reviewer_names_gates_it_does_not_know() -> None:
    reviewer = ScriptedReviewer({"approve": "approved"})
    assert reviewer.review(GateRequest("approve", None, None, None, "r")).reviewer.kind == "test"
    with pytest.raises(GateDecisionError, match=r"no decision for it \(it has: approve\)"):
        reviewer.review(_request())


def test_a_reviewer_that_raises_is_recorded_as_escalated_with_an_error_fact() -> None:
    def broken(subject: Any) -> GateDecision:
        raise ConnectionError("review service down")

    with Run("r", dag=DAG) as run:
        fact = run.gate("review", reviewer=broken, subject={"x": 1})

    assert fact.decision == "escalated"
    assert fact.reason == "the reviewer raised ConnectionError: review service down"
    errors = [f for f in run.facts if f.kind == "error"]
    assert errors and errors[0].node == "review" and errors[0].message == "review service down"


def test_gate_binds_the_decision_to_the_artifact_revision_and_digest() -> None:
    with Run("r", dag=DAG) as run:
        draft = run.artifact("reply", Reply(text="hi", amount=3), node="draft")
        fact = run.gate("review", reviewer=lambda s: "approved", subject=draft, policy="style")

    assert fact.subject is not None
    assert (fact.subject.kind, fact.subject.name, fact.subject.revision) == ("artifact", "reply", 1)
    assert fact.subject.digest == draft.content_digest and fact.subject.seq == draft.seq
    assert fact.policy == PolicyRef(id="style", version="1")


def test_reviewer_sees_the_artifact_content() -> None:
    seen: list[Any] = []
    with Run("r", dag=DAG) as run:
        draft = run.artifact("reply", Reply(text="hi", amount=3), node="draft")
        run.gate("review", reviewer=lambda s: seen.append(s) or True, subject=draft)
    assert seen == [{"text": "hi", "amount": 3.0}]


def test_an_edit_becomes_the_next_revision_linked_to_the_one_it_supersedes() -> None:
    edit = GateDecision(
        decision="edited",
        reviewer=Reviewer(id="ann", kind="human"),
        edit={"text": "hello", "amount": 3},
        reason="tone",
    )
    with Run("r", dag=DAG) as run:
        draft = run.artifact("reply", Reply(text="hi", amount=3), node="draft")
        gate = run.gate("review", reviewer=lambda s: edit, subject=draft)

    first, second = run.revisions("reply")
    assert second.revision == 2 and second.supersedes == first.seq
    assert gate.seq in second.derived_from
    assert second.content == {"text": "hello", "amount": 3.0}
    assert second.schema_ref == first.schema_ref == f"{__name__}:Reply"


def test_an_edit_that_breaks_the_artifact_schema_is_a_named_error() -> None:
    edit = {"decision": "edited", "edit": {"text": "hello"}}  # amount is missing
    with Run("r", dag=DAG) as run:
        draft = run.artifact("reply", Reply(text="hi", amount=3), node="draft")
        with pytest.raises(
            ArtifactSchemaError,
            match=r"artifact 'reply' does not match .*Reply: amount: Field required",
        ):
            run.gate("review", reviewer=lambda s: edit, subject=draft)


def test_a_gate_on_a_subject_the_run_did_not_produce_is_refused() -> None:
    with Run("other", dag=DAG) as other:
        foreign = other.artifact("reply", Reply(text="x", amount=1), node="draft")
    with Run("r", dag=DAG) as run, pytest.raises(GateSubjectError) as info:
        run.gate("review", reviewer=lambda s: True, subject=foreign)
    assert "artifact 'reply' revision 1, was not produced by run 'r'" in str(info.value)
    assert "fix: pass the ArtifactFact returned by run.artifact" in str(info.value)


def test_a_stale_revision_is_not_the_one_the_run_produced() -> None:
    with Run("r", dag=DAG) as run:
        draft = run.artifact("reply", Reply(text="x", amount=1), node="draft")
        forged = draft.model_copy(update={"content_digest": "sha256:" + "0" * 64})
        with pytest.raises(GateSubjectError):
            run.gate("review", reviewer=lambda s: True, subject=forged)


def test_json_artifacts_are_checked_against_a_json_schema() -> None:
    schema = {
        "title": "Reply",
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string"}},
    }
    with Run("r", dag=DAG) as run:
        ok = run.artifact("reply", {"text": "hi"}, node="draft", schema=schema)
        assert ok.schema_ref == "Reply" and ok.schema_digest is not None
        with pytest.raises(ArtifactSchemaError, match=r"at /text: 3 is not of type 'string'"):
            run.artifact("reply", {"text": 3}, node="draft", schema=schema)


def test_a_gate_on_an_undeclared_node_is_dag_drift() -> None:
    from pytest_llmwb import UndeclaredNodeError

    with Run("r", dag=DAG) as run, pytest.raises(UndeclaredNodeError, match="'approve_refund'"):
        run.gate("approve_refund", reviewer=lambda s: True)


def test_scripted_decision_with_an_unknown_value_is_a_named_error() -> None:
    scripted = Run("r", dag=DAG, gate_decisions={"review": "approve"})
    with scripted as run, pytest.raises(GateDecisionError, match="for gate 'review'"):
        run.gate("review", reviewer=lambda s: True)


def test_module_gate_outside_a_run_asks_reviewer_objects_the_same_way() -> None:
    import pytest_llmwb as llmwb

    policy = PolicyReviewer("limits", lambda subject: subject["amount"] < 10)
    assert llmwb.gate("g", reviewer=policy, subject={"amount": 3}).decision == "approved"
    assert llmwb.gate("g", reviewer=lambda s: ("rejected", "no"), subject=1).reason == "no"

    def broken(subject: Any) -> bool:
        raise RuntimeError("down")

    assert llmwb.gate("g", reviewer=broken).decision == "escalated"
    assert llmwb.artifact("reply", Reply(text="x", amount=1)) is None


def test_a_recorded_result_that_no_longer_fits_its_type_is_a_named_error(tmp_path: Any) -> None:
    from pytest_llmwb import ResultTypeError

    with Run("r") as run:
        run.tool_call("lookup", {}, lambda: {"text": "x"})
    run.save(tmp_path / "b")
    with (
        Run("r", mode="replay", replay=tmp_path / "b") as replay,
        pytest.raises(ResultTypeError) as info,
    ):
        replay.tool_call("lookup", {}, lambda: None, result_type=Reply)
    message = str(info.value)
    assert (
        "the recorded result of tool 'lookup' (node 'lookup', 1st call) no longer fits" in message
    )
    assert "amount: Field required" in message and "fix: record the run again" in message


def test_threads_without_context_find_the_only_run_but_never_a_wrong_one() -> None:
    import pytest_llmwb as llmwb
    from pytest_llmwb import LlmwbWarning

    found: list[Any] = []

    def in_thread() -> None:
        found.append(llmwb.current_run())

    with Run("one") as one:
        worker = threading.Thread(target=in_thread)
        worker.start()
        worker.join()
        assert found == [one]
        with Run("two"), pytest.warns(LlmwbWarning, match="2 runs are active"):
            worker = threading.Thread(target=in_thread)
            worker.start()
            worker.join()
            assert found[-1] is None
