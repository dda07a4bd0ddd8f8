"""``llmwb export``: bundles as OTLP JSON, one ``TracesData`` per line.

The format is the OpenTelemetry file exporter's (OTLP JSON Lines): the protobuf JSON
mapping of ``opentelemetry.proto.trace.v1.TracesData`` with lowerCamelCase keys, trace
and span ids as hex strings, enums as integers and 64-bit integers (times, integer
attributes) as decimal strings. Same bundle, same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from .spans import SCHEMA_URL, AttributeValue, SpanRecord, SpanSet, build_spans, labels_attributes

__all__ = ["FORMATS", "bundle_spans", "export_bundles", "traces_data"]

FORMATS = ("otlp-json",)


def bundle_spans(bundle: Any) -> SpanSet:
    """The spans of a loaded bundle, with the run's timing and context from ``volatile.json``."""
    from .. import __version__
    from ..codec import digest
    from ..store import fact_record

    volatile_run = bundle.volatile.get("run") if isinstance(bundle.volatile, dict) else None
    run = volatile_run if isinstance(volatile_run, dict) else {}
    trace_id, span_id = run.get("trace_id"), run.get("span_id")
    context = None
    if isinstance(trace_id, str) and isinstance(span_id, str):
        context = (trace_id, span_id)
    manifest = bundle.manifest
    resource: dict[str, AttributeValue] = {
        "llmwb.bundle.name": manifest.name,
        "llmwb.producer": manifest.producer,
        "llmwb.schema_version": manifest.schema_version,
        "llmwb.exporter.version": __version__,
        **dict(labels_attributes(manifest.labels)),
    }
    root = {
        "llmwb.run.name": manifest.name,
        "llmwb.dag.name": bundle.dag.name,
        "llmwb.dag.digest": manifest.dag_digest,
        "llmwb.facts_digest": manifest.facts_digest,
        "llmwb.fact_count": manifest.fact_count,
    }
    mode = run.get("mode")
    if isinstance(mode, str):
        root["llmwb.run.mode"] = mode
    started = run.get("started_at")
    finished = run.get("finished_at")
    return build_spans(
        manifest.name,
        bundle.facts,
        # the manifest names the run and digests its DAG and facts: same bundle, same ids
        seed=digest(manifest.model_dump(mode="json")),
        started_at=started if isinstance(started, str) else None,
        finished_at=finished if isinstance(finished, str) else None,
        run_context=context,
        fact_digests={f.seq: digest(fact_record(f)) for f in bundle.facts},
        resource=resource,
        root_attributes=root,
    )


def _value(value: AttributeValue) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in the JSON mapping
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": value}


def _attributes(attrs: dict[str, AttributeValue]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in attrs.items()]


def _span(span: SpanRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id}
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id
    out["name"] = span.name
    out["kind"] = span.kind
    out["startTimeUnixNano"] = str(span.start_ns)
    out["endTimeUnixNano"] = str(span.end_ns)
    out["attributes"] = _attributes(span.attributes)
    if span.events:
        out["events"] = [
            {
                "timeUnixNano": str(event.time_ns),
                "name": event.name,
                "attributes": _attributes(event.attributes),
            }
            for event in span.events
        ]
    status: dict[str, Any] = {}
    if span.status_message:
        status["message"] = span.status_message
    if span.status_code:
        status["code"] = span.status_code
    out["status"] = status
    return out


def traces_data(spans: SpanSet) -> dict[str, Any]:
    """One OTLP ``TracesData`` (as JSON-ready dicts) holding the spans."""
    from .. import __version__

    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(spans.resource)},
                "scopeSpans": [
                    {
                        "scope": {"name": "pytest_llmwb", "version": __version__},
                        "spans": [_span(span) for span in spans.spans],
                        "schemaUrl": SCHEMA_URL,
                    }
                ],
                "schemaUrl": SCHEMA_URL,
            }
        ]
    }


def export_bundles(
    paths: Sequence[str], fmt: str, output: str | None, stdout: IO[str] = sys.stdout
) -> int:
    """Write each bundle at ``paths`` as one line of ``fmt`` to ``output`` (a file) or stdout.

    Notes (ids derived for a bundle recorded without trace context) go to stderr. A file
    is written atomically: all lines or, on an error, the file as it was.
    """
    from ..exceptions import ConfigError, ExportError
    from ..store import load_bundle

    if fmt not in FORMATS:
        raise ConfigError(
            f"llmwb export: unknown format {fmt!r} (known: {', '.join(FORMATS)})",
            fix="llmwb export BUNDLE --format otlp-json",
        )
    lines = []
    for path in paths:
        spans = bundle_spans(load_bundle(path))
        if spans.derived:
            sys.stderr.write(
                f"llmwb export: note: {path} was recorded without a trace context; its trace "
                "id is derived from the bundle (llmwb.trace_ids_derived = true)\n"
            )
        lines.append(orjson.dumps(traces_data(spans)) + b"\n")
    data = b"".join(lines)
    if output is None:
        stdout.write(data.decode())
        return 0
    from ..store import write_atomic

    try:
        write_atomic(Path(output), data)
    except OSError as exc:
        raise ExportError(
            f"llmwb export: cannot write {output}: {exc.strerror or exc}",
            fix="pass -o a path in an existing, writable directory, or leave -o out for stdout",
        ) from exc
    return 0
