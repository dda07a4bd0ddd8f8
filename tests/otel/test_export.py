"""``llmwb export``: OTLP JSON accepted by opentelemetry-proto, with the GenAI semantics."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData

from pytest_llmwb.cli import main

from .conftest import PARENT_ID, TRACE_ID, TRACEPARENT, record


def export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[str], str]:
    assert main(["export", *args]) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), err


def parse(line: str) -> TracesData:
    return json_format.Parse(line, TracesData())


def hexid(value: bytes) -> str:
    """The id as exported. OTLP JSON writes ids as hex where protobuf's own JSON mapping
    expects base64, so ``json_format`` reads the hex text as base64: encoding the bytes
    again gives the text back (hex digits are base64 digits, and the lengths are
    multiples of 4)."""
    return base64.b64encode(value).decode()


def spans_of(data: TracesData) -> list[Span]:
    (resource,) = data.resource_spans
    (scope,) = resource.scope_spans
    return list(scope.spans)


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        value = getattr(kv.value, which)
        if which == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        out[kv.key] = value
    return out


def by_name(spans: list[Span]) -> dict[str, Span]:
    return {span.name: span for span in spans}


def test_export_is_otlp_json_with_genai_spans_in_the_recorded_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    bundle = record(tmp_path / "b")
    lines, err = export(capsys, str(bundle), "--format", "otlp-json")
    assert err == ""
    assert len(lines) == 1
    data = parse(lines[0])  # opentelemetry-proto's JSON mapping accepts it
    (resource_spans,) = data.resource_spans
    assert resource_spans.schema_url == "https://opentelemetry.io/schemas/1.37.0"
    assert resource_spans.scope_spans[0].scope.name == "pytest_llmwb"
    resource = attrs(resource_spans.resource)
    assert resource["llmwb.semconv.version"] == "1.37.0"
    assert resource["llmwb.bundle.name"] == "refund"
    assert "llmwb.trace_ids_derived" not in resource

    spans = by_name(spans_of(data))
    assert set(spans) == {
        "invoke_agent refund",
        "step plan",
        "chat gpt-test",
        "execute_tool lookup",
        "artifact reply",
        "gate send",
    }
    assert {hexid(span.trace_id) for span in spans.values()} == {TRACE_ID}
    root = spans["invoke_agent refund"]
    # the root joins the trace the run started in, under the span TRACEPARENT named
    assert hexid(root.parent_span_id) == PARENT_ID
    assert spans["step plan"].parent_span_id == root.span_id
    assert spans["chat gpt-test"].parent_span_id == spans["step plan"].span_id
    assert spans["execute_tool lookup"].parent_span_id == spans["step plan"].span_id
    assert spans["gate send"].parent_span_id == root.span_id
    assert len({span.span_id for span in spans.values()}) == 6

    chat = spans["chat gpt-test"]
    assert chat.kind == Span.SPAN_KIND_CLIENT
    assert attrs(chat) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.response.model": "gpt-test-2026",
        "gen_ai.response.id": "resp-1",
        "gen_ai.response.finish_reasons": ["tool_calls"],
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.cache_creation.input_tokens": 7,
        "gen_ai.usage.reasoning.output_tokens": 12,
        "llmwb.cost.amount": "0.0042",
        "llmwb.cost.currency": "USD",
        "llmwb.cost.source": "test prices",
        "llmwb.request_digest": attrs(chat)["llmwb.request_digest"],
        "llmwb.node": "plan",
        "llmwb.fact.seq": 2,
        "llmwb.fact.kind": "model_io",
        "llmwb.fact.digest": attrs(chat)["llmwb.fact.digest"],
        "llmwb.ordinal": 0,
    }
    assert attrs(chat)["llmwb.fact.digest"].startswith("sha256:")
    tool = attrs(spans["execute_tool lookup"])
    assert tool["gen_ai.operation.name"] == "execute_tool"
    assert tool["gen_ai.tool.name"] == "lookup"
    assert tool["gen_ai.tool.call.id"] == "call_1"  # the id the model asked for it under
    assert json.loads(tool["gen_ai.tool.call.arguments"]) == {"id": "A-1"}
    assert json.loads(tool["gen_ai.tool.call.result"]) == {"amount": 42}
    gate = attrs(spans["gate send"])
    assert gate["llmwb.gate.decision"] == "approved"
    assert gate["llmwb.gate.reviewer.kind"] == "policy"
    assert gate["llmwb.gate.policy.id"] == "small-refunds"
    assert gate["llmwb.gate.subject.kind"] == "artifact"
    artifact = attrs(spans["artifact reply"])
    assert artifact["llmwb.artifact.revision"] == 1
    assert gate["llmwb.gate.subject.digest"] == artifact["llmwb.artifact.content_digest"]
    root_attrs = attrs(root)
    assert root_attrs["gen_ai.operation.name"] == "invoke_agent"
    assert root_attrs["llmwb.cost.total"] == "0.0042"
    assert root_attrs["gen_ai.usage.input_tokens"] == 120


def test_times_come_from_volatile_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime

    bundle = record(tmp_path / "b")
    volatile = json.loads((bundle / "volatile.json").read_text())
    (line,), _ = export(capsys, str(bundle))
    raw = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    # int64 values are strings in the JSON mapping, enums integers
    assert all(isinstance(span["startTimeUnixNano"], str) for span in raw)
    assert all(isinstance(span["kind"], int) for span in raw)
    ints = [
        a["value"]["intValue"] for s in raw for a in s["attributes"] if "intValue" in a["value"]
    ]
    assert ints
    assert all(isinstance(value, str) for value in ints)
    spans = by_name(spans_of(parse(line)))

    def ns(at: str) -> int:
        moment = datetime.fromisoformat(at)
        return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000

    chat_fact = volatile["facts"]["2"]
    chat = spans["chat gpt-test"]
    assert chat.start_time_unix_nano == ns(chat_fact["at"])
    assert chat.end_time_unix_nano == ns(chat_fact["at"]) + int(chat_fact["duration_ms"] * 1e6)
    root = spans["invoke_agent refund"]
    assert root.start_time_unix_nano == ns(volatile["run"]["started_at"])
    assert root.end_time_unix_nano == ns(volatile["run"]["finished_at"])
    assert spans["step plan"].end_time_unix_nano == ns(volatile["facts"]["4"]["at"])


def test_a_bundle_without_trace_ids_gets_stable_derived_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = record(tmp_path / "b")
    assert "trace_id" not in (bundle / "volatile.json").read_text()
    first, err = export(capsys, str(bundle))
    assert "recorded without a trace context" in err
    again, _ = export(capsys, str(bundle))
    assert first == again  # same bundle, same bytes
    data = parse(first[0])
    assert attrs(data.resource_spans[0].resource)["llmwb.trace_ids_derived"] is True
    spans = spans_of(data)
    assert attrs(spans[0])["llmwb.trace_ids_derived"] is True
    assert len({span.trace_id for span in spans}) == 1
    assert spans[0].parent_span_id == b""
    assert all(len(hexid(span.trace_id)) == 32 for span in spans)
    assert all(len(hexid(span.span_id)) == 16 for span in spans)

    other, _ = export(capsys, str(record(tmp_path / "other", name="other")))
    assert spans_of(parse(other[0]))[0].trace_id != spans[0].trace_id


def test_a_span_the_host_opened_around_a_call_is_its_parent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from pytest_llmwb import Run

    tracer = TracerProvider().get_tracer("host")
    with tracer.start_as_current_span("handle_ticket") as outer, Run("t") as run:
        run.tool_call("first", {}, lambda: 1)
        with tracer.start_as_current_span("host lookup") as inner:
            run.tool_call("lookup", {}, lambda: 2)
    run.save(tmp_path / "b")
    (line,), err = export(capsys, str(tmp_path / "b"))
    assert err == ""
    spans = by_name(spans_of(parse(line)))
    trace_id = format(outer.get_span_context().trace_id, "032x")
    root = spans["invoke_agent t"]
    assert hexid(root.parent_span_id) == format(outer.get_span_context().span_id, "016x")
    assert spans["execute_tool first"].parent_span_id == root.span_id
    inner_id = format(inner.get_span_context().span_id, "016x")
    assert hexid(spans["execute_tool lookup"].parent_span_id) == inner_id
    assert {hexid(span.trace_id) for span in spans.values()} == {trace_id}


def test_errors_become_span_status_and_exception_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_llmwb import Run

    def broken() -> None:
        raise ValueError("no such order")

    with Run("t") as run, pytest.raises(ValueError), run.step("work"):
        run.tool_call("lookup", {}, broken)
    run.save(tmp_path / "b")
    (line,), _ = export(capsys, str(tmp_path / "b"))
    spans = by_name(spans_of(parse(line)))
    tool = spans["execute_tool lookup"]
    assert tool.status.code == Status.STATUS_CODE_ERROR
    assert attrs(tool)["error.type"] == "ValueError"
    assert "gen_ai.tool.call.result" not in attrs(tool)
    step = spans["step work"]
    assert step.status.code == Status.STATUS_CODE_ERROR
    (event,) = step.events
    assert event.name == "exception"
    assert attrs(event)["exception.message"] == "no such order"


def test_several_bundles_one_line_each_and_output_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = record(tmp_path / "a", name="a"), record(tmp_path / "b", name="b")
    out = tmp_path / "run.jsonl"
    lines, _ = export(capsys, str(a), str(b), "-o", str(out))
    assert lines == []
    written = out.read_text().splitlines()
    assert [spans_of(parse(line))[0].name for line in written] == [
        "invoke_agent a",
        "invoke_agent b",
    ]


def test_unknown_format_and_missing_bundle_are_named_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = record(tmp_path / "b")
    assert main(["export", str(bundle), "--format", "zipkin"]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'zipkin' (known: otlp-json)" in err
    assert "fix: llmwb export BUNDLE --format otlp-json" in err

    assert main(["export", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "llmwb: error:" in err
    assert "missing" in err

    assert main(["export", str(bundle), "-o", str(tmp_path / "no-dir" / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err
    assert "fix:" in err


def test_the_example_projects_captured_bundles_export(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2] / "example_project" / "tests" / "llmwb_bundles"
    bundles = sorted(p.parent for p in root.glob("*/*/manifest.json"))
    assert bundles
    lines, err = export(capsys, *map(str, bundles))
    assert len(lines) == len(bundles)
    assert err.count("recorded without a trace context") == len(bundles)
    gates = 0
    for line in lines:
        spans = spans_of(parse(line))
        assert spans[0].name.startswith("invoke_agent example_project/tests/")
        chats = [attrs(s) for s in spans if s.name.startswith("chat ")]
        assert chats
        # receipts captured from the openai SDK over HTTP
        assert {c["gen_ai.provider.name"] for c in chats} == {"openai"}
        assert all(c["gen_ai.usage.input_tokens"] > 0 for c in chats)
        assert all(s.start_time_unix_nano <= s.end_time_unix_nano for s in spans)
        assert all(spans[0].start_time_unix_nano <= s.start_time_unix_nano for s in spans)
        gates += sum(1 for s in spans if s.name.startswith("gate "))
    assert gates
