"""Spans of a run sent to the host's own OpenTelemetry ``TracerProvider`` (``emit_spans``).

The root ``invoke_agent`` span starts when the run is entered and is the current span
while it is active, so facts, subprocesses (``run.subprocess_env()``) and the host's
own instrumentation nest under it. When the run exits, a span per step and per call is
sent with the times its facts recorded (the same spans ``llmwb export`` writes), then
the root span ends. Needs ``opentelemetry-api`` (the ``otel`` extra); it is imported
here, when a run with ``emit_spans`` starts, never at plugin import.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from .context import TraceContext
from .spans import SCHEMA_URL, SPAN_KIND_CLIENT, STATUS_ERROR, SpanRecord, build_spans

__all__ = ["SpanEmitter"]


def _api() -> tuple[Any, Any]:
    from ..exceptions import ConfigError

    try:
        return (
            importlib.import_module("opentelemetry.trace"),
            importlib.import_module("opentelemetry.context"),
        )
    except ImportError as exc:
        raise ConfigError(
            "emit_spans needs the OpenTelemetry API, which is not installed",
            fix="pip install 'pytest-llmwb[otel]' (and configure a TracerProvider), "
            "or turn emit_spans / llmwb_emit_spans off",
        ) from exc


class SpanEmitter:
    """Starts a run's root span now; :meth:`finish` sends the other spans and ends it."""

    def __init__(self, name: str, parent: TraceContext | None, provider: Any = None) -> None:
        from .. import __version__

        trace, context = _api()
        self._trace = trace
        self._context = context
        get_tracer = trace.get_tracer if provider is None else provider.get_tracer
        self._tracer = get_tracer("pytest_llmwb", __version__, schema_url=SCHEMA_URL)
        self._parent = parent
        parent_ctx = None
        if parent is not None and not trace.get_current_span().get_span_context().is_valid:
            parent_ctx = trace.set_span_in_context(self._remote(parent.trace_id, parent.span_id))
        self.root = self._tracer.start_span(
            f"invoke_agent {name}",
            context=parent_ctx,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name},
        )
        self._token = context.attach(trace.set_span_in_context(self.root))
        self.name = name

    def _remote(self, trace_id: str, span_id: str) -> Any:
        trace = self._trace
        parent = self._parent
        # the trace state travels with the context it came with, not with other spans
        state = parent.tracestate if parent is not None and parent.span_id == span_id else None
        return trace.NonRecordingSpan(
            trace.SpanContext(
                int(trace_id, 16),
                int(span_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                trace_state=trace.TraceState.from_header([state]) if state else None,
            )
        )

    def finish(self, run: Any, error: BaseException | None = None) -> None:
        """Send a span per step and call of ``run``, then end the root span."""
        self._context.detach(self._token)
        root_ctx = self.root.get_span_context()
        root_ids = (format(root_ctx.trace_id, "032x"), format(root_ctx.span_id, "016x"))
        parent = self._parent
        spans = build_spans(
            self.name,
            run.facts,
            seed=root_ids[1],
            started_at=run.started_at,
            run_context=(parent.trace_id, parent.span_id) if parent is not None else None,
            root=root_ids,
        )
        live: dict[str, Any] = {root_ids[1]: self.root}
        for record in spans.spans[1:]:
            live[record.span_id] = self._send(record, live)
        for key, value in spans.spans[0].attributes.items():
            self.root.set_attribute(key, value)
        if error is not None:
            self.root.record_exception(error)
            self.root.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        self.root.end(end_time=max(time.time_ns(), spans.spans[0].end_ns))

    def _send(self, record: SpanRecord, live: dict[str, Any]) -> Any:
        trace = self._trace
        parent_span = live.get(record.parent_span_id or "")
        if parent_span is None and record.parent_span_id:
            parent_span = self._remote(record.trace_id, record.parent_span_id)
        span = self._tracer.start_span(
            record.name,
            context=trace.set_span_in_context(parent_span) if parent_span is not None else None,
            kind=trace.SpanKind.CLIENT
            if record.kind == SPAN_KIND_CLIENT
            else trace.SpanKind.INTERNAL,
            attributes=record.attributes,
            start_time=record.start_ns,
        )
        for event in record.events:
            span.add_event(event.name, event.attributes, timestamp=event.time_ns)
        if record.status_code == STATUS_ERROR:
            span.set_status(trace.Status(trace.StatusCode.ERROR, record.status_message or None))
        span.end(end_time=record.end_ns)
        return span
