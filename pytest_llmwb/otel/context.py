"""W3C Trace Context: the active OpenTelemetry span, else ``TRACEPARENT``/``TRACESTATE``.

Facts take the trace and span ids of the span active when they are recorded. A process
started by a CI pipeline or a parent service often has no OpenTelemetry SDK but gets
its parent's context in the ``TRACEPARENT`` and ``TRACESTATE`` environment variables
(the W3C Trace Context header formats); a run falls back to that context so its facts
join the pipeline's trace. ``opentelemetry`` is never imported here.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TraceContext",
    "active_ids",
    "active_span_context",
    "from_environ",
    "parse_traceparent",
    "parse_tracestate",
]

TRACEPARENT = "TRACEPARENT"
TRACESTATE = "TRACESTATE"

# version-traceid-parentid-flags, lowercase hex (https://www.w3.org/TR/trace-context/)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# list-member = key "=" value; key: simple or multi-tenant (tenant@system)
_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"{_KEY}={_VALUE}")
_MAX_MEMBERS = 32


@dataclass(frozen=True)
class TraceContext:
    """A W3C trace context: trace id, parent span id, flags and the vendor trace state."""

    trace_id: str
    span_id: str
    flags: str = "01"
    tracestate: str | None = None

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header value (version 00)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(value: str) -> tuple[str, str, str]:
    """``(trace_id, span_id, flags)`` of a ``traceparent`` value; ``ValueError`` says why not.

    Follows the W3C rules: lowercase hex, version ``ff`` forbidden, version ``00``
    exactly 55 characters, a higher version may append fields after a dash, and an
    all-zero trace id or parent id is invalid.
    """
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        raise ValueError("expected 00-<32 lowercase hex>-<16 lowercase hex>-<2 hex flags>")
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff":
        raise ValueError("version ff is forbidden")
    if version == "00" and rest is not None:
        raise ValueError("version 00 has exactly four fields")
    if trace_id == "0" * 32:
        raise ValueError("the trace id is all zeros")
    if span_id == "0" * 16:
        raise ValueError("the parent id is all zeros")
    return trace_id, span_id, flags


def parse_tracestate(value: str) -> str:
    """The ``tracestate`` value with empty members dropped; ``ValueError`` says why not."""
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if len(members) > _MAX_MEMBERS:
        raise ValueError(f"{len(members)} list members (at most {_MAX_MEMBERS})")
    keys: set[str] = set()
    for member in members:
        if _MEMBER.fullmatch(member) is None:
            raise ValueError(f"list member {member[:40]!r} is not key=value in the W3C format")
        key = member.partition("=")[0]
        if key in keys:
            raise ValueError(f"key {key!r} appears twice")
        keys.add(key)
    return ",".join(members)


def from_environ(environ: Mapping[str, str] | None = None) -> TraceContext | None:
    """The context in ``TRACEPARENT``/``TRACESTATE``, or ``None``.

    An invalid value is ignored with a :class:`~pytest_llmwb.TraceContextWarning` naming
    the variable (a malformed ``TRACESTATE`` alone drops only the trace state): a bad
    variable set by a CI system must not break the run.
    """
    env = os.environ if environ is None else environ
    raw = env.get(TRACEPARENT)
    if raw is None or not raw.strip():
        return None
    try:
        trace_id, span_id, flags = parse_traceparent(raw.strip())
    except ValueError as exc:
        _warn(f"{TRACEPARENT}={raw[:80]!r} is not a W3C traceparent ({exc}); it is ignored")
        return None
    state = env.get(TRACESTATE)
    tracestate = None
    if state is not None and state.strip():
        try:
            tracestate = parse_tracestate(state) or None
        except ValueError as exc:
            _warn(f"{TRACESTATE}={state[:80]!r} is not a W3C tracestate ({exc}); it is ignored")
    return TraceContext(trace_id, span_id, flags, tracestate)


def _warn(message: str) -> None:
    from ..exceptions import TraceContextWarning

    warnings.warn(
        message + "; fix: set it as https://www.w3.org/TR/trace-context/ describes, or unset it",
        TraceContextWarning,
        stacklevel=4,
    )


def _active() -> Any:
    """The active span's ``SpanContext`` when valid, else ``None``.

    No import: a span can only be active once the host imported ``opentelemetry.trace``,
    and looking the module up each time follows a host (or test harness) that unloads
    and imports it again.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def active_ids() -> tuple[str, str] | None:
    """Trace and span id of the active OpenTelemetry span, or ``None`` (called per fact)."""
    ctx = _active()
    if ctx is None:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def active_span_context() -> TraceContext | None:
    """The context of the active OpenTelemetry span, or ``None`` (none, or no OpenTelemetry)."""
    ctx = _active()
    if ctx is None:
        return None
    state = ctx.trace_state.to_header() if ctx.trace_state else None
    return TraceContext(
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(int(ctx.trace_flags), "02x"),
        state or None,
    )
