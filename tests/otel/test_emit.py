"""emit_spans: the run's spans in the host's own TracerProvider (real opentelemetry-sdk)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pytest_llmwb import Run

from .conftest import PARENT_ID, TRACE_ID, TRACEPARENT, agent_run


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_emitted_spans_nest_under_traceparent_and_carry_the_genai_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    with Run("refund", emit_spans=provider) as run:
        agent_run(run)
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['TRACEPARENT'])"],
            env=run.subprocess_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {
        "invoke_agent refund",
        "step plan",
        "chat gpt-test",
        "execute_tool lookup",
        "artifact reply",
        "gate send",
    }
    root = spans["invoke_agent refund"]
    root_ctx = root.get_span_context()
    assert format(root_ctx.trace_id, "032x") == TRACE_ID
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == PARENT_ID
    assert root.parent.is_remote
    # the root span is current while the run is active: facts and subprocesses get it
    assert child == f"00-{TRACE_ID}-{root_ctx.span_id:016x}-{root_ctx.trace_flags:02x}"
    assert {f.span_id for f in run.facts} == {format(root_ctx.span_id, "016x")}
    step = spans["step plan"]
    assert step.parent is not None
    assert step.parent.span_id == root_ctx.span_id
    chat = spans["chat gpt-test"]
    assert chat.parent is not None
    assert chat.parent.span_id == step.get_span_context().span_id
    assert chat.kind == SpanKind.CLIENT
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    fact = run.model_calls[0]
    assert chat.start_time is not None
    assert chat.end_time is not None
    assert abs(chat.end_time - chat.start_time - fact.duration_ms * 1e6) < 1000
    tool = spans["execute_tool lookup"]
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.call.id"] == "call_1"
    assert root.attributes is not None
    assert root.attributes["llmwb.cost.total"] == "0.0042"
    assert root.instrumentation_scope is not None
    assert root.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.37.0"


def test_an_exception_out_of_the_run_marks_the_root_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(KeyError), Run("t", emit_spans=provider):
        raise KeyError("order")
    (root,) = exporter.get_finished_spans()
    assert root.status.status_code == StatusCode.ERROR
    assert root.parent is None
    assert [event.name for event in root.events] == ["exception"]


def test_no_spans_without_emit_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with Run("t") as run:
        agent_run(run)
    assert exporter.get_finished_spans() == ()


def test_plugin_ini_emits_into_the_sessions_tracer_provider(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        llmwb_mode = rewrite
        llmwb_emit_spans = true
        """
    )
    pytester.makeconftest(
        """
        import json, os
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        EXPORTER = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)

        def pytest_sessionfinish(session):
            names = sorted(s.name for s in EXPORTER.get_finished_spans())
            with open(os.path.join(str(session.config.rootpath), "spans.json"), "w") as f:
                json.dump(names, f)
        """
    )
    pytester.makepyfile(
        """
        def test_agent(llmwb):
            with llmwb.step("plan"):
                llmwb.tool_call("lookup", {"id": 1}, lambda: {"ok": True})
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    names = json.loads((pytester.path / "spans.json").read_text())
    assert names == [
        "execute_tool lookup",
        "invoke_agent test_plugin_ini_emits_into_the_sessions_tracer_provider.py::test_agent",
        "step plan",
    ]


def test_a_replayed_run_emits_the_spans_of_the_calls_it_served(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with Run("refund") as recorded:
        agent_run(recorded)
    recorded.save(tmp_path / "b")
    with Run.replay(tmp_path / "b", name="refund", emit_spans=provider) as replayed:
        agent_run(replayed)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    chat = spans["chat gpt-test"]
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.usage.input_tokens"] == 120  # the recorded receipt
    assert chat.parent is not None
    assert chat.parent.span_id == spans["step plan"].get_span_context().span_id
    assert len(spans) == 6


def test_processes_a_test_starts_join_its_run_and_the_environment_is_put_back(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACEPARENT", raising=False)
    monkeypatch.setenv("TRACESTATE", "stale=1")
    pytester.makeini(
        """
        [pytest]
        llmwb_mode = rewrite
        llmwb_emit_spans = true
        """
    )
    pytester.makeconftest(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
        """
    )
    pytester.makepyfile(
        """
        import os, subprocess, sys
        from opentelemetry import trace

        CHILD = "import os; print(os.environ.get('TRACEPARENT'), os.environ.get('TRACESTATE'))"

        def test_agent(llmwb):
            root = trace.get_current_span().get_span_context()
            child = subprocess.run(
                [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
            )
            parent, state = child.stdout.split()
            assert parent.startswith(f"00-{root.trace_id:032x}-{root.span_id:016x}-")
            assert state == "None"  # another parent's trace state would be wrong

        def test_after():
            assert "TRACEPARENT" not in os.environ
            assert os.environ["TRACESTATE"] == "stale=1"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)
