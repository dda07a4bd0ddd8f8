"""OpenTelemetry beside bundles: W3C trace context, spans built from facts, OTLP JSON export.

``context`` reads the active span or the ``TRACEPARENT``/``TRACESTATE`` environment
variables (no OpenTelemetry import needed); ``spans`` turns a run's facts into spans
named by the GenAI semantic conventions; ``export`` writes them as OTLP JSON lines;
``emit`` sends them to the host's own ``TracerProvider`` (``opentelemetry-api``, the
``otel`` extra, imported only when spans are emitted).
"""
