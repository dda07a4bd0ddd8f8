"""The host-facing recording API: Run, decorators, DAG rules, threads, artifacts, gates, OTel."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from pytest_llmwb import (
    ArtifactFact,
    Dag,
    DagFrozenError,
    GateDecision,
    ModelRequest,
    ModelResponse,
    RecordedCallError,
    Reviewer,
    Run,
    UndeclaredNodeError,
    current_run,
    load_bundle,
    model,
    step,
    tool,
)
from pytest_llmwb.codec import digest


class Order(BaseModel):
    order_id: str
    total_cents: int


class Reply(BaseModel):
    text: str


class TwoArgError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


LIVE: list[str] = []


@tool
def lookup(order_id: str, *, verbose: bool = False) -> Order:
    LIVE.append(f"lookup {order_id}")
    return Order(order_id=order_id, total_cents=1250)


@tool
def untyped(order_id: str):  # type: ignore[no-untyped-def]
    LIVE.append(f"untyped {order_id}")
    return {"order_id": order_id}


@tool(name="refund", node="payments")
def refund(order_id: str) -> str:
    LIVE.append(f"refund {order_id}")
    if order_id == "bad":
        raise ValueError(f"cannot refund {order_id}")
    if order_id == "odd":
        raise TwoArgError(402, "payment required")
    return "ok"


@model(node="answer", provider="acme")
def answer(request: ModelRequest) -> ModelResponse:
    LIVE.append("answer")
    text = str(request.messages[-1].content) if request.messages else ""
    if text == "explode":
        raise TimeoutError("model timed out")
    return ModelResponse(content=f"re: {text}", finish_reason="stop")


@step("agent")
def agent(question: str) -> tuple[ModelResponse, Order]:
    order = lookup("A1")
    reply = answer({"model": "m-1", "messages": [{"role": "user", "content": question}]})
    return reply, order


@tool
async def alookup(order_id: str) -> Order:
    await asyncio.sleep(0)
    LIVE.append(f"alookup {order_id}")
    return Order(order_id=order_id, total_cents=99)


@model(node="answer")
async def aanswer(request: ModelRequest) -> ModelResponse:
    await asyncio.sleep(0)
    LIVE.append("aanswer")
    return ModelResponse(content="async reply")


@step("aagent")
async def aagent() -> tuple[ModelResponse, Order]:
    order = await alookup("B2")
    reply = await aanswer({"model": "m-1", "messages": [{"role": "user", "content": "hi"}]})
    return reply, order


@pytest.fixture(autouse=True)
def _clear_live() -> None:
    LIVE.clear()


def _replay(path: Path, **kwargs: Any) -> Run:
    return Run.replay(path, **kwargs)


# --- decorators ---------------------------------------------------------------------------


def test_decorators_record_then_replay_without_live_calls(tmp_path: Path) -> None:
    with Run("t") as run:
        live_reply, live_order = agent("refund?")
    assert LIVE == ["lookup A1", "answer"]
    assert [(f.kind, f.node) for f in run.facts] == [
        ("step", "agent"),
        ("tool_call", "lookup"),
        ("model_io", "answer"),
        ("step", "agent"),
    ]
    tool_fact = run.tool_calls[0]
    assert tool_fact.arguments == {"order_id": "A1", "verbose": False}
    assert tool_fact.result == {"order_id": "A1", "total_cents": 1250}
    assert run.model_calls[0].provider == "acme"
    run.save(tmp_path / "b")

    LIVE.clear()
    with _replay(tmp_path / "b") as again:
        reply, order = agent("refund?")
    assert LIVE == []
    assert reply == live_reply
    assert order == live_order
    assert isinstance(order, Order)  # rebuilt from the return annotation
    again.check_complete()


def test_a_run_says_whether_calls_can_go_live(tmp_path: Path) -> None:
    with Run("t") as run:
        agent("refund?")
    run.save(tmp_path / "b")
    modes = {
        mode: Run("t", mode=mode, replay=tmp_path / "b").live
        for mode in ("replay", "new", "verify")
    }
    assert (run.live, modes) == (True, {"replay": False, "new": True, "verify": True})


def test_async_decorators_record_then_replay(tmp_path: Path) -> None:
    async def main() -> tuple[ModelResponse, Order]:
        return await aagent()

    with Run("t") as run:
        live = asyncio.run(main())
    assert LIVE == ["alookup B2", "aanswer"]
    assert [f.kind for f in run.facts] == ["step", "tool_call", "model_io", "step"]
    run.save(tmp_path / "b")
    LIVE.clear()
    with _replay(tmp_path / "b") as again:
        replayed = asyncio.run(main())
    assert LIVE == []
    assert replayed == live
    assert isinstance(replayed[1], Order)
    again.check_complete()


def test_outside_any_run_functions_just_run() -> None:
    assert current_run() is None
    order = lookup("A1")
    reply = answer(ModelRequest(model="m", messages=[{"role": "user", "content": "hello"}]))
    assert reply.content == "re: hello"
    assert order == Order(order_id="A1", total_cents=1250)
    assert asyncio.run(alookup("B2")).total_cents == 99
    assert LIVE == ["lookup A1", "answer", "alookup B2"]
    with pytest.raises(ValueError, match="cannot refund bad"):
        refund("bad")


def test_model_function_gets_the_same_request_type_inside_and_outside_a_run() -> None:
    # host code that passes a dict works inside a run (normalized to ModelRequest);
    # it must not break in production, where no run is active
    request = {"model": "m-1", "messages": [{"role": "user", "content": "hello"}]}
    with Run("t"):
        inside = answer(request)
    outside = answer(request)
    assert outside == inside


def test_unannotated_tool_replays_plain_json(tmp_path: Path) -> None:
    with Run("t") as run:
        untyped("A1")
    run.save(tmp_path / "b")
    with _replay(tmp_path / "b"):
        assert untyped("A1") == {"order_id": "A1"}


def test_tool_name_and_node_options(tmp_path: Path) -> None:
    with Run("t") as run:
        assert refund("A1") == "ok"
    (fact,) = run.tool_calls
    assert (fact.tool, fact.node) == ("refund", "payments")


def test_current_run_is_the_entered_run() -> None:
    with Run("outer") as run:
        assert current_run() is run
    assert current_run() is None


# --- recorded errors ---------------------------------------------------------------------


def test_recorded_exceptions_are_raised_again_in_replay(tmp_path: Path) -> None:
    with Run("t") as run:
        with pytest.raises(ValueError, match="cannot refund bad"):
            refund("bad")
        with pytest.raises(TimeoutError):
            answer({"model": "m", "messages": [{"role": "user", "content": "explode"}]})
    error = run.tool_calls[0].error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "cannot refund bad")
    run.save(tmp_path / "b")
    LIVE.clear()
    with _replay(tmp_path / "b") as again:
        with pytest.raises(ValueError, match="cannot refund bad"):
            refund("bad")
        with pytest.raises(TimeoutError, match="model timed out"):
            answer({"model": "m", "messages": [{"role": "user", "content": "explode"}]})
    assert LIVE == []
    again.check_complete()


def test_exception_that_cannot_be_rebuilt_becomes_recorded_call_error(tmp_path: Path) -> None:
    with Run("t") as run, pytest.raises(TwoArgError):
        refund("odd")
    run.save(tmp_path / "b")
    with _replay(tmp_path / "b"), pytest.raises(RecordedCallError) as excinfo:
        refund("odd")
    assert excinfo.value.type_name.endswith("TwoArgError")
    assert "402: payment required" in str(excinfo.value)


def test_error_in_step_records_error_fact_and_failed_end() -> None:
    @step("risky")
    def risky() -> None:
        raise KeyError("nope")

    with Run("t") as run, pytest.raises(KeyError):
        risky()
    kinds = [(f.kind, getattr(f, "phase", None), getattr(f, "status", None)) for f in run.facts]
    assert kinds == [("step", "start", None), ("error", None, None), ("step", "end", "error")]
    assert run.facts[1].type == "KeyError"


# --- the DAG -------------------------------------------------------------------------------


DAG = Dag("agent").node("agent").model("answer", prompt="p").chain("agent", "answer")


def test_fact_on_undeclared_node_raises_and_names_it() -> None:
    with Run("t", dag=DAG), pytest.raises(UndeclaredNodeError) as excinfo:
        agent("x")  # the lookup tool's node is not declared
    message = str(excinfo.value)
    assert "'lookup'" in message
    assert "agent, answer" in message  # what was declared
    assert LIVE == []  # refused before going live


def test_dag_is_frozen_after_first_fact() -> None:
    with Run("t", dag=DAG) as run:
        run.declare(DAG)  # the same DAG again is fine
        answer({"model": "m", "messages": []})
        run.declare(Dag("agent").node("agent").model("answer", prompt="p").chain("agent", "answer"))
        with pytest.raises(DagFrozenError):
            run.declare(Dag("other").model("answer"))


def test_declaring_a_second_dag_before_facts_is_refused() -> None:
    run = Run("t", dag=DAG)
    with pytest.raises(DagFrozenError):
        run.declare(Dag("other").model("answer"))


def test_implicit_dag_follows_first_use() -> None:
    with Run("t") as run:
        lookup("A1")
        answer({"model": "m", "messages": []})
        lookup("A2")
        run.gate(
            "ok",
            reviewer=lambda s: {"decision": "approved", "reviewer": {"id": "r", "kind": "test"}},
        )
    dag = run.dag
    assert dag.declared is False
    assert [(n.id, n.kind) for n in dag.nodes] == [
        ("lookup", "tool"),
        ("answer", "model"),
        ("ok", "gate"),
    ]
    assert [(e.source, e.target) for e in dag.edges] == [("lookup", "answer"), ("answer", "ok")]


def test_declared_dag_is_saved(tmp_path: Path) -> None:
    with Run("t", dag=DAG) as run:
        answer({"model": "m", "messages": []})
    run.save(tmp_path / "b")
    assert load_bundle(tmp_path / "b").dag == DAG.freeze()


# --- threads ----------------------------------------------------------------------------------


def test_threads_started_by_host_code_find_the_run() -> None:
    with Run("t") as run:
        workers = [threading.Thread(target=lookup, args=(f"T{i}",)) for i in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lookup, ["P1", "P2"]))
    calls = run.tool_calls
    assert sorted(f.arguments["order_id"] for f in calls) == ["P1", "P2", "T0", "T1", "T2", "T3"]
    assert sorted(f.ordinal for f in calls) == list(range(6))
    assert [f.seq for f in run.facts] == list(range(1, 7))


# --- artifacts ------------------------------------------------------------------------------


def test_artifact_revisions_digests_and_schema() -> None:
    with Run("t") as run:
        answer({"model": "m", "messages": []})
        first = run.artifact("reply", Reply(text="draft"), node="answer")
        second = run.artifact("reply", Reply(text="final"), node="answer")
        other = run.artifact("summary", {"n": 1}, node="answer")
    assert (first.revision, second.revision, other.revision) == (1, 2, 1)
    assert first.content == {"text": "draft"}
    assert first.content_digest == digest({"text": "draft"})
    assert second.content_digest != first.content_digest
    assert first.schema_ref == f"{Reply.__module__}:Reply"
    assert first.schema_digest == digest(Reply.model_json_schema())
    assert other.schema_ref is None
    assert first.derived_from == [1]  # the model call before it
    assert run.artifacts["reply"] is second


# --- gates ---------------------------------------------------------------------------------


def _approve(calls: list[Any]) -> Any:
    def reviewer(subject: Any) -> GateDecision:
        calls.append(subject)
        return GateDecision(
            decision="edited",
            reviewer=Reviewer(id="alice", kind="human"),
            reason="tone",
            edit={"text": "kinder"},
        )

    return reviewer


def _never(subject: Any) -> GateDecision:
    raise AssertionError("the reviewer must not be asked in replay")


def _gated(run: Run, reviewer: Any) -> tuple[ArtifactFact, Any]:
    draft = run.artifact("reply", Reply(text="draft"), node="answer")
    return draft, run.gate("approve", subject=draft, policy="tone-v1", reviewer=reviewer)


def test_gate_asks_reviewer_in_record_and_serves_decision_in_replay(tmp_path: Path) -> None:
    asked: list[Any] = []
    with Run("t") as run:
        draft, fact = _gated(run, _approve(asked))
    assert asked == [{"text": "draft"}]  # the reviewer sees the artifact's content
    assert fact.decision == "edited"
    assert fact.edit == {"text": "kinder"}
    assert fact.reviewer == Reviewer(id="alice", kind="human")
    assert fact.subject is not None
    assert (fact.subject.kind, fact.subject.digest) == ("artifact", draft.content_digest)
    assert (fact.subject.revision, fact.subject.seq) == (1, draft.seq)
    assert fact.policy is not None
    assert fact.policy.id == "tone-v1"
    edited = run.artifacts["reply"]  # the edit is the artifact's next revision
    assert (edited.revision, edited.content) == (2, {"text": "kinder"})
    run.save(tmp_path / "b")

    with _replay(tmp_path / "b") as again:
        _, replayed = _gated(again, _never)
    assert replayed.decision == "edited"
    assert replayed.reason == "tone"
    assert replayed.reviewer == Reviewer(id="alice", kind="human")
    assert again.artifacts["reply"].content == {"text": "kinder"}
    again.check_complete()


def test_scripted_gate_decision_overrides_reviewer_and_recording(tmp_path: Path) -> None:
    with Run("t") as run:
        _gated(run, _approve([]))
    run.save(tmp_path / "b")
    with Run("t", gate_decisions={"approve": "rejected"}) as scripted_record:
        _, fact = _gated(scripted_record, _never)
    assert fact.decision == "rejected"
    assert fact.reviewer.kind == "test"
    with _replay(tmp_path / "b", gate_decisions={"approve": "rejected"}) as scripted_replay:
        _, fact = _gated(scripted_replay, _never)
    assert fact.decision == "rejected"
    assert scripted_replay.unused_scripted_gates == []


def test_unused_scripted_gates_are_listed() -> None:
    with Run("t", gate_decisions={"approve": "approved", "typo": "rejected"}) as run:
        _gated(run, _never)
    assert run.unused_scripted_gates == ["typo"]


# --- OpenTelemetry ids -----------------------------------------------------------------------


def test_trace_ids_recorded_when_span_active_and_kept_out_of_facts_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.delenv("TRACEPARENT", raising=False)  # outside any span: no ids at all
    tracer = TracerProvider().get_tracer("tests")
    with Run("t") as run:
        lookup("outside")
        with tracer.start_as_current_span("agent") as span:
            lookup("inside")
    context = span.get_span_context()
    trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
    outside, inside = run.tool_calls
    assert (outside.trace_id, outside.span_id) == (None, None)
    assert (inside.trace_id, inside.span_id) == (trace_id, span_id)

    run.save(tmp_path / "b")
    facts = (tmp_path / "b/facts.jsonl").read_text()
    assert trace_id not in facts
    assert span_id not in facts
    assert "trace_id" not in facts
    volatile = orjson.loads((tmp_path / "b/volatile.json").read_bytes())
    assert volatile["facts"]["2"]["trace_id"] == trace_id
    assert volatile["facts"]["2"]["span_id"] == span_id
    assert "trace_id" not in volatile["facts"]["1"]
    loaded = load_bundle(tmp_path / "b")
    assert loaded.tool_calls()[1].trace_id == trace_id
