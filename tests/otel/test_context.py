"""TRACEPARENT/TRACESTATE: validated per W3C Trace Context, taken when no span is active."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import pytest_llmwb
from pytest_llmwb import Run, TraceContextWarning
from pytest_llmwb.otel.context import from_environ, parse_traceparent, parse_tracestate

from .conftest import PARENT_ID, TRACE_ID, TRACEPARENT

CHILD = [
    sys.executable,
    "-c",
    "import json, os; print(json.dumps([os.environ.get('TRACEPARENT'), "
    "os.environ.get('TRACESTATE')]))",
]


def child_sees(env: dict[str, str]) -> list[str | None]:
    result = subprocess.run(CHILD, env=env, capture_output=True, text=True, check=True)
    seen: list[str | None] = json.loads(result.stdout)
    return seen


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("00-4bf92f3577b34da6a50c02b4cd3b0f11-00f067aa0ba902b7", "expected 00-"),
        ("00-4BF92F3577B34DA6A50C02B4CD3B0F11-00f067aa0ba902b7-01", "expected 00-"),
        ("ff-4bf92f3577b34da6a50c02b4cd3b0f11-00f067aa0ba902b7-01", "version ff"),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace id is all zeros"),
        ("00-4bf92f3577b34da6a50c02b4cd3b0f11-0000000000000000-01", "parent id is all zeros"),
        ("00-4bf92f3577b34da6a50c02b4cd3b0f11-00f067aa0ba902b7-01-xx", "exactly four fields"),
        ("00-4bf92f3577b34da6a50c02b4cd3b0f1-00f067aa0ba902b7-01", "expected 00-"),
        ("00-4bf92f3577b34da6a50c02b4cd3b0f11-00f067aa0ba902b7-1", "expected 00-"),
        ("00_4bf92f3577b34da6a50c02b4cd3b0f11_00f067aa0ba902b7_01", "expected 00-"),
    ],
)
def test_invalid_traceparent_values_are_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_traceparent(value)


def test_valid_traceparent_values() -> None:
    assert parse_traceparent(TRACEPARENT) == (TRACE_ID, PARENT_ID, "01")
    # a later version may append fields; its first four are read as version 00's
    later = f"01-{TRACE_ID}-{PARENT_ID}-00-what-comes-next"
    assert parse_traceparent(later) == (TRACE_ID, PARENT_ID, "00")


def test_tracestate_is_validated_per_member() -> None:
    assert parse_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,") == (
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert parse_tracestate("tenant@vendor=v") == "tenant@vendor=v"
    for bad in (
        "Rojo=1",
        "rojo",
        "rojo=a,rojo=b",
        "rojo=a=b",
        ",".join(f"k{i}=v" for i in range(33)),
    ):
        with pytest.raises(ValueError):
            parse_tracestate(bad)


def test_an_invalid_traceparent_is_ignored_with_a_warning_naming_it() -> None:
    with pytest.warns(TraceContextWarning, match="TRACEPARENT='00-nonsense' is not a W3C"):
        assert from_environ({"TRACEPARENT": "00-nonsense", "TRACESTATE": "a=b"}) is None


def test_an_invalid_tracestate_drops_only_the_state() -> None:
    with pytest.warns(TraceContextWarning, match="TRACESTATE='a b' is not a W3C tracestate"):
        context = from_environ({"TRACEPARENT": TRACEPARENT, "TRACESTATE": "a b"})
    assert context is not None
    assert (context.trace_id, context.span_id, context.tracestate) == (TRACE_ID, PARENT_ID, None)


def test_facts_outside_any_span_take_traceparent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    monkeypatch.setenv("TRACESTATE", "congo=t61rcWkgMzE")
    with Run("t") as run:
        fact = run.append(pytest_llmwb.StepFact, node="n", phase="start")
        run.tool_call("lookup", {}, lambda: 1)
    assert (fact.trace_id, fact.span_id) == (TRACE_ID, PARENT_ID)
    assert run.tool_calls[0].trace_id == TRACE_ID
    assert run.trace_context is not None
    assert run.trace_context.tracestate == "congo=t61rcWkgMzE"
    run.save(tmp_path / "b")
    volatile = json.loads((tmp_path / "b" / "volatile.json").read_text())
    assert (volatile["run"]["trace_id"], volatile["run"]["span_id"]) == (TRACE_ID, PARENT_ID)
    assert volatile["facts"]["2"]["trace_id"] == TRACE_ID
    assert TRACE_ID not in (tmp_path / "b" / "facts.jsonl").read_text()


def test_the_active_span_wins_over_traceparent(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    tracer = TracerProvider().get_tracer("host")
    with Run("t") as run:
        with tracer.start_as_current_span("agent") as span:
            run.tool_call("inside", {}, lambda: 1)
        run.tool_call("outside", {}, lambda: 2)
    inside, outside = run.tool_calls
    context = span.get_span_context()
    assert (inside.trace_id, inside.span_id) == (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
    )
    assert (outside.trace_id, outside.span_id) == (TRACE_ID, PARENT_ID)


def test_an_invalid_traceparent_never_breaks_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEPARENT", "garbage")
    with pytest.warns(TraceContextWarning, match="TRACEPARENT"), Run("t") as run:
        run.tool_call("lookup", {}, lambda: 1)
    assert run.tool_calls[0].trace_id is None
    assert run.trace_context is None


def test_subprocesses_get_the_current_span(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    monkeypatch.setenv("TRACESTATE", "congo=t61rcWkgMzE")
    tracer = TracerProvider().get_tracer("host")
    with Run("t") as run:
        assert child_sees(run.subprocess_env()) == [TRACEPARENT, "congo=t61rcWkgMzE"]
        with tracer.start_as_current_span("tool") as span:
            context = span.get_span_context()
            expected = (
                f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
            )
            assert pytest_llmwb.traceparent() == expected
            # the span carries no trace state, so the parent's is not passed on
            assert child_sees(run.subprocess_env({"PATH": "/usr/bin"})) == [expected, None]


def test_subprocess_env_leaves_os_environ_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    with Run("t") as run:
        env = run.subprocess_env({"HOME": "/tmp"})
    assert env == {"HOME": "/tmp", "TRACEPARENT": TRACEPARENT}
    assert os.environ["TRACEPARENT"] == TRACEPARENT
    assert "HOME" in os.environ


def test_traceparent_without_any_context_is_none() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pytest_llmwb.traceparent() is None
        with Run("t") as run:
            assert run.subprocess_env({}) == {}
