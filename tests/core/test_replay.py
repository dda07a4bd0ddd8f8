"""Replay drift: every sort has its own exception, naming node, ordinal and what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_llmwb import (
    Dag,
    DagDriftError,
    MissingCallsError,
    ModelResponse,
    OrderDriftError,
    PayloadDriftError,
    ReplayIndex,
    Run,
    UnexpectedCallError,
    load_bundle,
)
from pytest_llmwb.verify import compare_run

FIX = "pytest --llmwb-record 'tests/test_x.py::test_y'"


def _ask(run: Run, content: str, *, model: str = "m-1", node: str = "answer") -> ModelResponse:
    return run.model_io(
        {"model": model, "messages": [{"role": "user", "content": content}]},
        lambda request: ModelResponse(content=f"re: {request.messages[0].content}"),
        node=node,
    )


def _lookup(run: Run, order_id: str, node: str = "lookup") -> Any:
    return run.tool_call("lookup", {"order_id": order_id}, lambda: {"id": order_id}, node=node)


def _never() -> Any:
    raise AssertionError("replay must not go live")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """Recorded: lookup A1, lookup B2, then one model call."""
    with Run("recorded") as run:
        _lookup(run, "A1")
        _lookup(run, "B2")
        _ask(run, "refund?")
    run.save(tmp_path / "b")
    return tmp_path / "b"


def _replay(bundle: Path, **kwargs: Any) -> Run:
    return Run.replay(bundle, record_command=FIX, **kwargs)


def test_exact_replay_serves_every_call(bundle: Path) -> None:
    with _replay(bundle) as run:
        assert run.tool_call("lookup", {"order_id": "A1"}, _never, node="lookup") == {"id": "A1"}
        assert run.tool_call("lookup", {"order_id": "B2"}, _never, node="lookup") == {"id": "B2"}
        reply = run.model_io(
            {"model": "m-1", "messages": [{"role": "user", "content": "refund?"}]},
            lambda request: _never(),
            node="answer",
        )
    assert reply.content == "re: refund?"
    run.check_complete()
    assert [f.kind for f in run.facts] == ["tool_call", "tool_call", "model_io"]


def test_payload_drift_lists_paths_old_to_new(bundle: Path) -> None:
    with _replay(bundle) as run:
        _lookup(run, "A1")
        _lookup(run, "B2")
        with pytest.raises(PayloadDriftError) as excinfo:
            _ask(run, "cancel?", model="m-2")
    error = excinfo.value
    assert type(error) is PayloadDriftError
    assert (error.node, error.ordinal) == ("answer", 0)
    assert error.changes == [
        ("/messages/0/content", "refund?", "cancel?"),
        ("/model", "m-1", "m-2"),
    ]
    message = str(error)
    assert "node 'answer', 1st call (ordinal 0)" in message
    assert "/messages/0/content: 'refund?' -> 'cancel?'" in message
    assert "/model: 'm-1' -> 'm-2'" in message
    assert str(bundle) in message
    assert f"fix: {FIX}" in message


def test_tool_argument_drift(bundle: Path) -> None:
    with _replay(bundle) as run, pytest.raises(PayloadDriftError) as excinfo:
        _lookup(run, "Z9")
    assert excinfo.value.changes == [("/arguments/order_id", "A1", "Z9")]
    assert "node 'lookup', 1st call (ordinal 0)" in str(excinfo.value)


def test_order_drift_when_two_calls_on_a_node_are_swapped(bundle: Path) -> None:
    with _replay(bundle) as run, pytest.raises(OrderDriftError) as excinfo:
        _lookup(run, "B2")
    assert type(excinfo.value) is OrderDriftError
    message = str(excinfo.value)
    assert "node 'lookup', 1st call (ordinal 0)" in message
    assert "recorded as the 2nd call (ordinal 1)" in message
    assert "'A1'" in message  # what the 1st call was recorded as
    assert f"fix: {FIX}" in message


def test_unexpected_extra_call_on_a_recorded_node(bundle: Path) -> None:
    with _replay(bundle) as run:
        _lookup(run, "A1")
        _lookup(run, "B2")
        with pytest.raises(UnexpectedCallError) as excinfo:
            _lookup(run, "C3")
    message = str(excinfo.value)
    assert "node 'lookup', 3rd call (ordinal 2)" in message
    assert "recorded 2 call(s) on node 'lookup'" in message
    assert "C3" in message


def test_unexpected_call_on_an_unrecorded_node_lists_recorded_nodes(bundle: Path) -> None:
    with _replay(bundle) as run, pytest.raises(UnexpectedCallError) as excinfo:
        _lookup(run, "A1", node="inventory")
    message = str(excinfo.value)
    assert "node 'inventory', 1st call (ordinal 0)" in message
    assert "answer, lookup" in message


def test_missing_calls_at_the_end(bundle: Path) -> None:
    with _replay(bundle) as run:
        _lookup(run, "A1")
    with pytest.raises(MissingCallsError) as excinfo:
        run.check_complete(opt_out="pass allow_unused=True")
    message = str(excinfo.value)
    assert "2 recorded call(s) were never made" in message
    assert "node 'lookup', 2nd call" in message
    assert "B2" in message
    assert "node 'answer', 1st call: model_io custom/m-1" in message
    assert message.index("'lookup', 2nd") < message.index("'answer'")  # recorded order
    assert "pass allow_unused=True" in message


def test_kind_mismatch_at_a_recorded_position(tmp_path: Path) -> None:
    with Run("r") as run:
        _lookup(run, "A1", node="step1")
    run.save(tmp_path / "b")
    with _replay(tmp_path / "b") as again, pytest.raises(PayloadDriftError) as excinfo:
        _ask(again, "hi", node="step1")
    assert excinfo.value.changes == [("/kind", "tool_call", "model_io")]
    assert "node 'step1', 1st call (ordinal 0)" in str(excinfo.value)


def test_dag_drift_names_node_and_config_key(tmp_path: Path) -> None:
    recorded = Dag("agent").model("answer", prompt="Be brief.", model="m-1").tool("lookup")
    with Run("r", dag=recorded) as run:
        _ask(run, "hi")
    run.save(tmp_path / "b")
    changed = (
        Dag("agent").model("answer", prompt="Be verbose.", model="m-1").tool("lookup").node("audit")
    )
    with pytest.raises(DagDriftError) as excinfo:
        _replay(tmp_path / "b", dag=changed)
    message = str(excinfo.value)
    assert "node 'answer': config 'prompt' changed: 'Be brief.' -> 'Be verbose.'" in message
    assert "node 'audit' added" in message
    assert "'model'" not in message  # unchanged keys are not reported
    assert f"fix: {FIX}" in message
    # the unchanged DAG replays
    with _replay(tmp_path / "b", dag=recorded) as again:
        _ask(again, "hi")
    again.check_complete()


def test_dag_drift_also_checked_when_declared_inside_the_run(tmp_path: Path) -> None:
    with Run("r", dag=Dag("agent").model("answer", prompt="v1")) as run:
        _ask(run, "hi")
    run.save(tmp_path / "b")
    with _replay(tmp_path / "b") as again, pytest.raises(DagDriftError, match="'v1' -> 'v2'"):
        again.declare(Dag("agent").model("answer", prompt="v2"))


def test_gate_path_drift_when_subject_changes(tmp_path: Path) -> None:
    def review(subject: Any) -> dict[str, Any]:
        return {"decision": "approved", "reviewer": {"id": "r", "kind": "policy"}}

    with Run("r") as run:
        run.gate("approve", subject={"amount": 10}, reviewer=review)
    run.save(tmp_path / "b")
    with _replay(tmp_path / "b") as again, pytest.raises(PayloadDriftError) as excinfo:
        again.gate("approve", subject={"amount": 99}, reviewer=review)
    changes = excinfo.value.changes
    assert [path for path, _, _ in changes if path != "/subject/digest"] == [
        "/subject/value/amount"
    ]
    assert ("/subject/value/amount", 10, 99) in changes
    assert "node 'approve', 1st call (ordinal 0)" in str(excinfo.value)


def test_new_mode_serves_matches_and_runs_the_rest_live(bundle: Path) -> None:
    live: list[str] = []
    with Run("r", mode="new", replay=bundle) as run:
        for order in ("A1", "B2", "C3"):
            run.tool_call(
                "lookup",
                {"order_id": order},
                lambda order=order: live.append(order) or {"id": order},
                node="lookup",
            )
    assert live == ["C3"]
    assert [f.arguments["order_id"] for f in run.tool_calls] == ["A1", "B2", "C3"]


def test_verify_mode_calls_live_and_reports_changed_responses(bundle: Path) -> None:
    live: list[str] = []
    with Run("r", mode="verify", replay=bundle) as run:
        run.tool_call("lookup", {"order_id": "A1"}, lambda: live.append("A1") or {}, node="lookup")
        run.tool_call("lookup", {"order_id": "B2"}, lambda: live.append("B2") or {}, node="lookup")
        run.model_io(
            {"model": "m-1", "messages": [{"role": "user", "content": "refund?"}]},
            lambda request: ModelResponse(content="something else"),
            node="answer",
        )
        with pytest.raises(UnexpectedCallError):
            _lookup(run, "C3")
    assert live == ["A1", "B2"]
    differences = compare_run(run)
    assert run.verify_report == [
        "node 'lookup' ordinal 0 (tool_call): /result/id: 'A1' -> '<absent>'",
        "node 'lookup' ordinal 1 (tool_call): /result/id: 'B2' -> '<absent>'",
        "node 'answer' ordinal 0 (model_io): /content: 're: refund?' -> 'something else'",
    ]
    assert all(d.fails for d in differences)


def test_verify_mode_fails_on_request_drift(bundle: Path) -> None:
    live: list[str] = []
    with Run("r", mode="verify", replay=bundle) as run, pytest.raises(PayloadDriftError):
        run.tool_call("lookup", {"order_id": "Q"}, lambda: live.append("Q"), node="lookup")
    assert live == []


def test_index_is_keyed_by_node_and_ordinal(bundle: Path) -> None:
    index = ReplayIndex.from_facts(load_bundle(bundle).facts)
    assert sorted(index.calls) == [("answer", 0), ("lookup", 0), ("lookup", 1)]
    assert len(index.unused()) == 3


def test_verify_mode_fails_on_missing_calls(bundle: Path) -> None:
    # verify checks the live run against the recording: an extra call is drift, and so
    # is a recorded call the live run no longer makes
    with Run("r", mode="verify", replay=bundle) as run:
        _lookup(run, "A1")
    with pytest.raises(MissingCallsError, match="node 'lookup', 2nd call"):
        run.check_complete()
