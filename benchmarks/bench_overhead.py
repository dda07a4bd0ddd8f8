"""Benchmark 1: the cost of recording one small tool_call fact.

Subjects, each timed over a batch of calls, interleaved round by round:

- ``bare``: the undecorated function.
- ``llmwb``: the same function under ``@pytest_llmwb.tool``, inside an active
  ``Run`` in record mode (a fresh run per batch, so each batch appends to an empty run).
- ``otel``: the same function wrapped by a decorator that opens an OpenTelemetry span
  (``start_as_current_span`` with the GenAI ``execute_tool`` attributes) from a real
  SDK ``TracerProvider`` with a ``SimpleSpanProcessor`` to an ``InMemorySpanExporter``.
  That is the fair comparison: like a run, it keeps a record of every call in memory.
- ``otel_noop_export``: the same, from a ``TracerProvider`` with no span processor
  (the span is built and dropped): a lower bound for what the SDK costs.

The OTel spans carry only the tool name and operation, not the arguments and result a
fact records: the comparison is conservative for pytest-llmwb.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from bench_stats import BenchResult, Row, interleaved, median, paired_ratios, profile_top

import pytest_llmwb
from pytest_llmwb import Run

NAME = "record_overhead"


def tiny(x: int) -> int:
    return x + 1


def _otel_wrapper(tracer: Any, func: Callable[[int], int]) -> Callable[[int], int]:
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": func.__name__}

    @functools.wraps(func)
    def wrapper(x: int) -> int:
        with tracer.start_as_current_span(f"execute_tool {func.__name__}", attributes=attributes):
            return func(x)

    return wrapper


def _otel_subjects(batch: int) -> dict[str, Callable[[], float]]:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError:
        return {}
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with_export = _otel_wrapper(provider.get_tracer("bench"), tiny)
    no_export = _otel_wrapper(TracerProvider().get_tracer("bench"), tiny)

    def otel() -> float:
        exporter.clear()
        fn = with_export
        start = time.perf_counter()
        for i in range(batch):
            fn(i)
        elapsed = time.perf_counter() - start
        assert len(exporter.get_finished_spans()) == batch
        return elapsed

    def otel_noop_export() -> float:
        fn = no_export
        start = time.perf_counter()
        for i in range(batch):
            fn(i)
        return time.perf_counter() - start

    return {"otel": otel, "otel_noop_export": otel_noop_export}


def _components(batch: int) -> dict[str, Callable[[], float]]:
    """The steps of recording one tool_call fact, each timed alone (no profiler).

    They mirror what ``Run.tool_call`` does for ``traced(i)``; a step whose private
    helper is gone from ``pytest_llmwb.recording`` is left out.
    """
    import inspect

    from pydantic_core import to_jsonable_python

    from pytest_llmwb import recording
    from pytest_llmwb.codec import digest
    from pytest_llmwb.schema import ToolCallFact

    signature = inspect.signature(tiny)
    now: Callable[[], str] | None = getattr(recording, "_now", None)
    trace_ids: Callable[[], object] | None = getattr(recording, "_trace_ids", None)
    stamp = now() if now else "2025-01-01T00:00:00.000000+00:00"

    def bind() -> None:
        bound = signature.bind(1)
        bound.apply_defaults()
        dict(bound.arguments)

    steps: dict[str, Callable[[], object]] = {
        "signature.bind + apply_defaults": bind,
        "to_jsonable_python(arguments) + (result)": lambda: (
            to_jsonable_python({"x": 1}),
            to_jsonable_python(2),
        ),
        "digest(request)": lambda: digest({"tool": "tiny", "arguments": {"x": 1}}),
        "ToolCallFact(...) (pydantic validation)": lambda: ToolCallFact(
            seq=1,
            trace_id=None,
            span_id=None,
            node="tiny",
            ordinal=0,
            tool="tiny",
            arguments={"x": 1},
            request_digest="sha256:0",
            result=2,
            error=None,
            at=stamp,
            duration_ms=0.01,
        ),
    }
    if now is not None:
        steps["_now() (datetime isoformat)"] = now
    if trace_ids is not None:
        steps["_trace_ids() (OTel current span)"] = trace_ids

    def timer(step: Callable[[], object]) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            for _ in range(batch):
                step()
            return time.perf_counter() - start

        return timed

    return {name: timer(step) for name, step in steps.items()}


def run(quick: bool) -> BenchResult:
    batch = 200 if quick else 2000
    repeats = 3 if quick else 25
    traced = pytest_llmwb.tool(tiny)

    def bare() -> float:
        fn = tiny
        start = time.perf_counter()
        for i in range(batch):
            fn(i)
        return time.perf_counter() - start

    def llmwb() -> float:
        fn = traced
        with Run("bench-overhead") as recording:
            start = time.perf_counter()
            for i in range(batch):
                fn(i)
            elapsed = time.perf_counter() - start
        assert len(recording.tool_calls) == batch
        return elapsed

    subjects: dict[str, Callable[[], float]] = {"bare": bare, "llmwb": llmwb}
    subjects.update(_otel_subjects(batch))
    for subject in subjects.values():  # warm-up: imports, caches, first-use resolution
        subject()
    samples = interleaved(subjects, repeats, seed=1)
    per_call_us = {name: [s / batch * 1e6 for s in values] for name, values in samples.items()}

    # where the time goes, without a profiler's distortion: each step alone, interleaved
    # with the whole call so that the shares compare like with like
    steps = {"whole tool_call (llmwb)": llmwb, **_components(batch)}
    step_samples = interleaved(steps, max(3, repeats // 3), seed=4)
    whole = median(step_samples["whole tool_call (llmwb)"])
    components = {
        name: {
            "us_per_call": median(values) / batch * 1e6,
            "share_of_call": median(values) / whole,
        }
        for name, values in step_samples.items()
    }

    result = BenchResult(NAME)
    ours = median(per_call_us["llmwb"])
    otel_note = (
        "OTel SDK TracerProvider + SimpleSpanProcessor(InMemorySpanExporter), "
        "start_as_current_span with 2 attributes"
    )
    for baseline, goal, note in (
        ("otel", 2.0, otel_note),
        ("otel_noop_export", None, "OTel SDK TracerProvider with no span processor"),
        ("bare", None, "the undecorated function"),
    ):
        if baseline not in per_call_us:
            continue
        ratios = paired_ratios(samples["llmwb"], samples[baseline])
        result.rows.append(
            Row(
                bench=NAME,
                metric=f"tool_call fact vs {baseline}",
                figure=ours,
                unit="us/call",
                baseline_name=baseline,
                baseline=median(per_call_us[baseline]),
                baseline_unit="us/call",
                ratio=median(ratios),
                goal=goal,
                note=note,
            )
        )
    if "otel" not in per_call_us:
        result.details["otel"] = "opentelemetry-sdk is not installed: OTel rows skipped"

    profile_calls = 500 if quick else 20000

    def profiled() -> None:
        with Run("bench-overhead-profile"):
            for i in range(profile_calls):
                traced(i)

    result.details.update(
        {
            "batch": batch,
            "repeats": repeats,
            "per_call_us": {
                name: {"median": median(v), "min": min(v)} for name, v in per_call_us.items()
            },
            "ratio_of_min": {
                name: min(per_call_us["llmwb"]) / min(v)
                for name, v in per_call_us.items()
                if name != "llmwb"
            },
            "components": components,
            "profile": profile_top(profiled, per=profile_calls),
        }
    )
    return result
