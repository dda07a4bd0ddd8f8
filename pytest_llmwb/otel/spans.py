"""A run's facts as spans named by the OpenTelemetry GenAI semantic conventions.

One ``invoke_agent {run}`` root span; a span per step (``step {node}``) from its start
fact to its end fact; ``chat {model}`` (the call's ``gen_ai.operation.name``) per model
call, ``execute_tool {tool}`` per tool call, ``gate {id}`` per gate decision and
``artifact {name}`` per artifact revision, each under the innermost open step.

Ids: each fact keeps the trace id and the span id it was recorded under. When that
span is the run's own context (the span or ``TRACEPARENT`` the run started in), the
fact's span nests under the root span; when it is another span (the host opened one
around the call), the fact's span becomes its child, so it joins the production trace
where it happened. New span ids are derived from the bundle (same bundle, same ids).
A bundle recorded without any trace context gets a trace id derived the same way and
``llmwb.trace_ids_derived = true``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from ..schema import (
    OTEL_GENAI_SEMCONV_VERSION,
    ArtifactFact,
    ErrorFact,
    GateFact,
    ModelIOFact,
    StepFact,
    ToolCallFact,
)

__all__ = ["SCHEMA_URL", "SpanRecord", "SpanSet", "build_spans"]

#: The semantic conventions the span and attribute names follow.
SCHEMA_URL = f"https://opentelemetry.io/schemas/{OTEL_GENAI_SEMCONV_VERSION}"

SPAN_KIND_INTERNAL = 1
SPAN_KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_ERROR = 2

AttributeValue = str | bool | int | float | list[str] | list[int] | list[float] | list[bool]


@dataclass
class SpanEvent:
    """A span event (an exception that escaped a step)."""

    name: str
    time_ns: int
    attributes: dict[str, AttributeValue]


@dataclass
class SpanRecord:
    """One span, independent of how it is written (OTLP JSON) or sent (OpenTelemetry API)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    kind: int = SPAN_KIND_INTERNAL
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)
    status_code: int = STATUS_UNSET
    status_message: str = ""


@dataclass
class SpanSet:
    """The spans of one run (root first) and the attributes of the resource that made them."""

    spans: list[SpanRecord]
    resource: dict[str, AttributeValue]
    derived: bool


def _ns(at: str | None) -> int | None:
    if not at:
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return None
    # exact integer arithmetic: a float timestamp loses the microseconds
    seconds = int(moment.timestamp())
    return seconds * 1_000_000_000 + moment.microsecond * 1000


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class _Ids:
    """Span (and, when none was recorded, trace) ids derived from the bundle's digest."""

    def __init__(self, seed: str) -> None:
        self.seed = seed

    def _hex(self, label: str, size: int) -> str:
        value = hashlib.sha256(f"llmwb {label} {self.seed}".encode()).hexdigest()[: size * 2]
        return value if value.strip("0") else "1".rjust(size * 2, "0")  # all zeros is invalid

    def trace(self) -> str:
        return self._hex("trace", 16)

    def span(self, label: str) -> str:
        return self._hex(f"span {label}", 8)


def _model_attributes(fact: ModelIOFact) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": fact.operation,
        "gen_ai.provider.name": fact.provider,
        "gen_ai.request.model": fact.request.model,
    }
    for key, value in sorted(fact.request.params.items()):
        if isinstance(value, (str, bool, int, float)):
            attrs[f"gen_ai.request.{key}"] = value
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            attrs[f"gen_ai.request.{key}"] = [str(v) for v in value]
    if fact.request.stream:
        attrs["gen_ai.request.stream"] = True
    response = fact.response
    if response is not None:
        if response.model:
            attrs["gen_ai.response.model"] = response.model
        if response.id:
            attrs["gen_ai.response.id"] = response.id
        if response.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = [response.finish_reason]
        usage = response.usage
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cache_read_input_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_input_tokens
        if usage.cache_creation_input_tokens:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_creation_input_tokens
        if usage.reasoning_output_tokens:
            attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_output_tokens
    if fact.cost is not None:
        attrs["llmwb.cost.amount"] = fact.cost.amount
        attrs["llmwb.cost.currency"] = fact.cost.currency
        attrs["llmwb.cost.source"] = fact.cost.source
    attrs["llmwb.request_digest"] = fact.request_digest
    return attrs


def _tool_attributes(fact: ToolCallFact, call_id: str | None) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": fact.tool,
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.arguments": _json(fact.arguments),
    }
    if call_id:
        attrs["gen_ai.tool.call.id"] = call_id
    if fact.error is None:
        attrs["gen_ai.tool.call.result"] = _json(fact.result)
    attrs["llmwb.request_digest"] = fact.request_digest
    return attrs


def _gate_attributes(fact: GateFact) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        "llmwb.gate.id": fact.gate_id,
        "llmwb.gate.decision": fact.decision,
        "llmwb.gate.reviewer.id": fact.reviewer.id,
        "llmwb.gate.reviewer.kind": fact.reviewer.kind,
    }
    if fact.policy is not None:
        attrs["llmwb.gate.policy.id"] = fact.policy.id
        attrs["llmwb.gate.policy.version"] = fact.policy.version
    if fact.subject is not None:
        attrs["llmwb.gate.subject.kind"] = fact.subject.kind
        attrs["llmwb.gate.subject.digest"] = fact.subject.digest
        if fact.subject.name:
            attrs["llmwb.gate.subject.name"] = fact.subject.name
    if fact.reason:
        attrs["llmwb.gate.reason"] = fact.reason
    return attrs


def _artifact_attributes(fact: ArtifactFact) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        "llmwb.artifact.name": fact.name,
        "llmwb.artifact.revision": fact.revision,
        "llmwb.artifact.content_digest": fact.content_digest,
    }
    if fact.schema_ref:
        attrs["llmwb.artifact.schema"] = fact.schema_ref
    if fact.supersedes is not None:
        attrs["llmwb.artifact.supersedes"] = fact.supersedes
    return attrs


def build_spans(
    name: str,
    facts: Sequence[Any],
    *,
    seed: str,
    started_at: str | None = None,
    finished_at: str | None = None,
    run_context: tuple[str, str] | None = None,
    root: tuple[str, str] | None = None,
    fact_digests: Mapping[int, str] | None = None,
    resource: Mapping[str, AttributeValue] | None = None,
    root_attributes: Mapping[str, AttributeValue] | None = None,
) -> SpanSet:
    """The spans of a run whose facts are ``facts``.

    ``seed`` (the facts digest of a bundle) derives the new ids; ``run_context`` is the
    ``(trace_id, span_id)`` the run started in, the root span's parent; ``root`` gives
    the root span's own ids when it exists already (a span emitted live).
    ``fact_digests`` maps a fact's seq to the digest of its stored record.
    """
    ids = _Ids(seed)
    derived = False
    if root is not None:
        trace_id, root_id = root
        parent = run_context[1] if run_context is not None else None
    else:
        recorded = run_context or next(
            ((f.trace_id, f.span_id) for f in facts if f.trace_id and f.span_id), None
        )
        if recorded is not None:
            trace_id = recorded[0]
            parent = run_context[1] if run_context is not None else None
        else:
            trace_id, parent, derived = ids.trace(), None, True
        root_id = ids.span("root")
    own_spans = {root_id, *(run_context[1:] if run_context else ())}

    times = [t for f in facts if (t := _ns(f.at)) is not None]
    start = _ns(started_at) or min(times, default=0)
    end = max(_ns(finished_at) or 0, *(_end(f) for f in facts), start)
    root_span = SpanRecord(
        name=f"invoke_agent {name}",
        trace_id=trace_id,
        span_id=root_id,
        parent_span_id=parent,
        start_ns=start,
        end_ns=end,
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": name,
            **(root_attributes or {}),
        },
    )
    if derived:
        root_span.attributes["llmwb.trace_ids_derived"] = True
    spans = [root_span]
    open_steps: list[SpanRecord] = []
    step_nodes: list[str] = []
    call_ids: dict[str, list[str]] = {}  # tool name -> ids of calls the models asked for
    cost = Decimal(0)
    currencies: set[str] = set()
    tokens = {"input": 0, "output": 0}

    for fact in facts:
        container = open_steps[-1] if open_steps else root_span
        if fact.span_id and fact.span_id not in own_spans and fact.trace_id:
            span_trace, span_parent = fact.trace_id, fact.span_id
        else:
            span_trace, span_parent = container.trace_id, container.span_id
        at = _ns(fact.at) or container.start_ns
        if isinstance(fact, StepFact):
            if fact.phase == "start":
                step = SpanRecord(
                    name=f"step {fact.node}",
                    trace_id=span_trace,
                    span_id=ids.span(f"step {fact.seq}"),
                    parent_span_id=span_parent,
                    start_ns=at,
                    end_ns=at,
                    attributes={"llmwb.node": fact.node, "llmwb.fact.seq": fact.seq},
                )
                spans.append(step)
                open_steps.append(step)
                step_nodes.append(fact.node)
            elif fact.node in step_nodes:
                while step_nodes:  # close inner steps left open, then this one
                    step, node = open_steps.pop(), step_nodes.pop()
                    step.end_ns = max(at, step.start_ns)
                    if node == fact.node:
                        if fact.status == "error":
                            step.status_code = STATUS_ERROR
                        break
            continue
        if isinstance(fact, ErrorFact):
            container.events.append(
                SpanEvent(
                    "exception",
                    at,
                    {"exception.type": fact.type, "exception.message": fact.message},
                )
            )
            container.status_code = STATUS_ERROR
            container.status_message = f"{fact.type}: {fact.message}"
            continue
        kind = SPAN_KIND_INTERNAL
        error = None
        if isinstance(fact, ModelIOFact):
            span_name = f"{fact.operation} {fact.request.model}"
            kind = SPAN_KIND_CLIENT
            attrs = _model_attributes(fact)
            error = fact.error
            if fact.response is not None:
                for call in fact.response.tool_calls:
                    if call.id:
                        call_ids.setdefault(call.name, []).append(call.id)
                tokens["input"] += fact.response.usage.input_tokens
                tokens["output"] += fact.response.usage.output_tokens
            if fact.cost is not None:
                cost += fact.cost.decimal
                currencies.add(fact.cost.currency)
        elif isinstance(fact, ToolCallFact):
            span_name = f"execute_tool {fact.tool}"
            waiting = call_ids.get(fact.tool)
            attrs = _tool_attributes(fact, waiting.pop(0) if waiting else None)
            error = fact.error
        elif isinstance(fact, GateFact):
            span_name = f"gate {fact.gate_id}"
            attrs = _gate_attributes(fact)
        elif isinstance(fact, ArtifactFact):
            span_name = f"artifact {fact.name}"
            attrs = _artifact_attributes(fact)
        else:  # a user-registered kind: a span that says what it is
            span_name = f"{fact.kind} {fact.node}"
            attrs = {}
        attrs["llmwb.node"] = fact.node
        attrs["llmwb.fact.seq"] = fact.seq
        attrs["llmwb.fact.kind"] = fact.kind
        if fact_digests and fact.seq in fact_digests:
            attrs["llmwb.fact.digest"] = fact_digests[fact.seq]
        if hasattr(fact, "ordinal"):
            attrs["llmwb.ordinal"] = fact.ordinal
        span = SpanRecord(
            name=span_name,
            trace_id=span_trace,
            span_id=ids.span(f"fact {fact.seq}"),
            parent_span_id=span_parent,
            start_ns=at,
            end_ns=max(_end(fact), at),
            kind=kind,
            attributes=attrs,
        )
        if error is not None:
            span.status_code = STATUS_ERROR
            span.status_message = f"{error.type}: {error.message}"
            span.attributes["error.type"] = error.type
        spans.append(span)
    for step in open_steps:  # a step still open when the run ended
        step.end_ns = end
    root_span.attributes["gen_ai.usage.input_tokens"] = tokens["input"]
    root_span.attributes["gen_ai.usage.output_tokens"] = tokens["output"]
    if currencies:
        root_span.attributes["llmwb.cost.total"] = str(cost)
        root_span.attributes["llmwb.cost.currency"] = ",".join(sorted(currencies))
    resource_attrs: dict[str, AttributeValue] = {
        "service.name": "llmwb",
        "llmwb.semconv.version": OTEL_GENAI_SEMCONV_VERSION,
        **(resource or {}),
    }
    if derived:
        resource_attrs["llmwb.trace_ids_derived"] = True
    return SpanSet(spans, resource_attrs, derived)


def _end(fact: Any) -> int:
    at = _ns(getattr(fact, "at", None)) or 0
    duration = getattr(fact, "duration_ms", None)
    if duration is None or isinstance(fact, StepFact):  # a step end's ``at`` is its end
        return at
    return at + int(duration * 1_000_000)


def labels_attributes(labels: Mapping[str, str]) -> Iterable[tuple[str, AttributeValue]]:
    """Bundle labels as ``llmwb.label.<key>`` attributes."""
    return ((f"llmwb.label.{key}", value) for key, value in sorted(labels.items()))
