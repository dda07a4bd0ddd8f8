"""What every provider adapter shares: the interface, the response pipeline, wire helpers.

An adapter turns one provider API's wire payloads into receipt types: the request
body into a :class:`~pytest_llmwb.schema.ModelRequest`, the HTTP response (a JSON body
or a server-sent event stream) into a :class:`~pytest_llmwb.schema.ModelResponse`
and/or an :class:`~pytest_llmwb.schema.ErrorInfo`. Adapters are pure: no I/O, no
SDK imports. The built-in ones are listed in :data:`pytest_llmwb.adapters.ADAPTERS`.

Normalization shared by all adapters:

- ``ModelRequest.params`` uses OpenTelemetry names without ``gen_ai.request.``
  (``temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``seed``,
  ``stop_sequences`` (always a list), ``frequency_penalty``, ``presence_penalty``)
  plus ``tool_choice``, ``response_format`` and ``reasoning``. Every other non-null
  top-level field goes to ``extra`` verbatim. Fields of messages and tools that the
  schema has no place for go to ``extra["message_fields"]`` and
  ``extra["tool_fields"]``, keyed by the index (as a string) of the normalized
  message or tool.
- Content that is a single plain text part becomes that text, so ``"hi"`` and
  ``[{"type": "text", "text": "hi"}]`` normalize alike; any other list of parts is
  kept verbatim.
- Tool-call arguments that are a JSON string holding an object become that object;
  anything else stays as sent.
- ``finish_reason`` takes the OpenTelemetry values ``stop``, ``length``,
  ``tool_call``, ``content_filter`` and ``error``; values with no counterpart pass
  through unchanged, and the provider's own value is kept in ``extra`` under the
  provider's field name (``finish_reason``, ``stop_reason`` or ``status``).
- ``Usage.input_tokens`` includes cached input; ``Usage.raw`` is the provider's
  usage object as sent.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import orjson
from pydantic import ValidationError

from pytest_llmwb.adapters.sse import AdapterError, SSEEvent, parse_sse
from pytest_llmwb.schema import ErrorInfo, ModelRequest, ModelResponse

__all__ = ["CHAT_OPERATION", "AdapterError", "ProviderAdapter", "WireAdapter"]

#: The ``gen_ai.operation.name`` of every call the built-in adapters match.
CHAT_OPERATION = "chat"

ParseResult = tuple[ModelResponse | None, ErrorInfo | None]

_SSE_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
#: Response fields that only echo the clock; kept out of ``ModelResponse.extra``.
VOLATILE_RESPONSE_FIELDS = frozenset({"created", "created_at", "completed_at", "obfuscation"})


@runtime_checkable
class ProviderAdapter(Protocol):
    """The interface of a provider adapter."""

    @property
    def name(self) -> str:
        """The provider, as ``gen_ai.provider.name`` (``openai``, ``anthropic``)."""
        ...

    @property
    def api(self) -> str:
        """The wire API this adapter reads, e.g. ``openai.chat_completions``."""
        ...

    def matches(self, method: str, host: str, path: str) -> str | None:
        """The operation (``gen_ai.operation.name``) of a matching request, else ``None``."""
        ...

    def parse_request(self, body: Mapping[str, Any]) -> ModelRequest:
        """The normalized request of a decoded JSON request body."""
        ...

    def parse_response(self, status: int, body: bytes, content_type: str) -> ParseResult:
        """The normalized response and/or error of an HTTP response."""
        ...


class WireAdapter(abc.ABC):
    """Base of the built-in adapters: matching by path, the JSON/SSE response pipeline.

    A subclass sets :attr:`name`, :attr:`api` and :attr:`path_suffixes` and implements
    :meth:`_request`, :meth:`_from_json` and :meth:`_from_events`. Matching looks at
    the method and the path only, so loopback servers, proxies and compatible
    gateways match too; ``host`` is accepted for adapters that need it.
    """

    name: str = ""
    api: str = ""
    path_suffixes: tuple[str, ...] = ()

    def matches(self, method: str, host: str, path: str) -> str | None:
        """``"chat"`` for a ``POST`` to one of :attr:`path_suffixes`, else ``None``."""
        if method.upper() != "POST":
            return None
        path = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        if any(path.endswith(suffix) for suffix in self.path_suffixes):
            return CHAT_OPERATION
        return None

    def parse_request(self, body: Mapping[str, Any]) -> ModelRequest:
        """The normalized request of a decoded JSON request body.

        Raises :class:`AdapterError` when the body does not have the API's shape.
        """
        where = f"{self.api} request body"
        if not isinstance(body, Mapping):
            raise AdapterError(f"{where} must be a JSON object, got {_kind(body)}")
        try:
            return self._request(body)
        except AdapterError as exc:
            raise AdapterError(f"{where}: {exc.message}", offset=exc.offset) from exc
        except (ValidationError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise AdapterError(f"{where} is malformed: {_reason(exc)}") from exc

    def parse_response(self, status: int, body: bytes, content_type: str) -> ParseResult:
        """The normalized response and/or error of an HTTP response.

        A 2xx JSON body gives a response (and an error when the body reports one); a
        2xx event stream is reassembled, its text deltas kept in ``chunks``; an error
        event in a stream gives the response so far (or ``None``) and the error. A
        non-2xx JSON body gives ``(None, ErrorInfo)``. Raises :class:`AdapterError`
        for a body that is neither JSON nor an event stream, a truncated stream, or a
        payload of the wrong shape.
        """
        where = f"{self.api} response (HTTP {status}, {content_type or 'no content type'})"
        try:
            if not 200 <= status < 300:
                return None, error_info(decode_json(body), status)
            if "event-stream" in content_type.lower() or (
                "json" not in content_type.lower() and _looks_like_sse(body)
            ):
                return self._from_events(parse_sse(body))
            return self._from_json(decode_json(body))
        except AdapterError as exc:
            raise AdapterError(f"{where}: {exc.message}", offset=exc.offset) from exc
        except (ValidationError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise AdapterError(f"{where} is malformed: {_reason(exc)}") from exc

    @abc.abstractmethod
    def _request(self, body: Mapping[str, Any]) -> ModelRequest:
        """Normalize a request body (a mapping)."""

    @abc.abstractmethod
    def _from_json(self, body: Any) -> ParseResult:
        """Normalize a decoded 2xx JSON body."""

    @abc.abstractmethod
    def _from_events(self, events: list[SSEEvent]) -> ParseResult:
        """Reassemble and normalize a 2xx event stream."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.api}>"


# --- wire helpers shared by the adapter modules ----------------------------------------


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        return f"{loc}: {first['msg']}" if loc else str(first["msg"])
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)


def _looks_like_sse(body: bytes) -> bool:
    return body.lstrip(b"\xef\xbb\xbf\r\n").startswith(_SSE_FIELDS)


def decode_json(body: bytes) -> Any:
    """``body`` decoded as JSON; :class:`AdapterError` when it is not."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        preview = repr(body[:80]) + ("..." if len(body) > 80 else "")
        raise AdapterError(f"the body is not JSON ({exc}): {preview}", offset=exc.pos) from None


def event_json(event: SSEEvent) -> Any:
    """The JSON ``data`` of a stream event; :class:`AdapterError` when it is not JSON."""
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise AdapterError(
            f"event {event.event!r} at byte {event.start} has data that is not "
            f"JSON ({exc}): {event.data[:80]!r}",
            offset=event.start,
        ) from None


def as_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, else :class:`AdapterError`."""
    if not isinstance(value, dict):
        raise AdapterError(f"{what} must be a JSON object, got {_kind(value)}")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    """``value`` when it is a JSON array (``None`` reads as empty), else :class:`AdapterError`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise AdapterError(f"{what} must be a JSON array, got {_kind(value)}")
    return value


def optional_str(value: Any, what: str) -> str | None:
    """``value`` when it is a string or ``None``, else :class:`AdapterError`."""
    if value is not None and not isinstance(value, str):
        raise AdapterError(f"{what} must be a string, got {_kind(value)}")
    return value


def required_str(body: Mapping[str, Any], key: str, what: str) -> str:
    """``body[key]`` when it is a non-empty string, else :class:`AdapterError`."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise AdapterError(f"{what} has no {key!r} string (got {_kind(value)})")
    return value


def leftovers(obj: Mapping[str, Any], known: Collection[str]) -> dict[str, Any]:
    """The non-null fields of ``obj`` not in ``known``, in their original order."""
    return {key: value for key, value in obj.items() if key not in known and value is not None}


def tool_arguments(value: Any) -> Any:
    """Tool-call arguments: a JSON string holding an object becomes that object."""
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        if isinstance(parsed, dict):
            return parsed
    return value


def _plain_text_part(part: Any) -> bool:
    return (
        isinstance(part, dict)
        and part.get("type") in _TEXT_PART_TYPES
        and isinstance(part.get("text"), str)
        and all(key in ("type", "text") or value in (None, [], {}) for key, value in part.items())
    )


def content_value(content: Any) -> Any:
    """Message content: a list holding one plain text part becomes its text."""
    if isinstance(content, list) and len(content) == 1 and _plain_text_part(content[0]):
        return content[0]["text"]
    return content


def text_of(parts: Iterable[Any], types: Collection[str] = _TEXT_PART_TYPES) -> str | None:
    """The texts of the parts of the given types, joined; ``None`` when there is none."""
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, dict)
        and part.get("type") in types
        and isinstance(part.get("text"), str)
    ]
    return "".join(texts) if texts else None


def stop_sequences(value: Any) -> list[Any]:
    """``stop`` / ``stop_sequences`` as a list (a single string becomes a one-item list)."""
    return [value] if isinstance(value, str) else list(as_list(value, "stop sequences"))


def count(usage: Mapping[str, Any], *path: str) -> int:
    """The token count at ``path`` in a usage object; 0 when absent, null or not a count."""
    value: Any = usage
    for key in path:
        if not isinstance(value, Mapping):
            return 0
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def error_info(body: Any, status: int | None = None) -> ErrorInfo:
    """The error a JSON body reports: ``{"error": {"type", "message"}}`` or close to it.

    The type is the error's ``type``, else its ``code``, else ``http_<status>``.
    """
    fallback = f"http_{status}" if status is not None else "error"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        kind = err.get("type") or err.get("code") or fallback
        message = err.get("message")
        if not isinstance(message, str) or not message:
            message = orjson.dumps(err, option=orjson.OPT_SORT_KEYS).decode()
        return ErrorInfo(type=str(kind), message=message)
    if isinstance(err, str) and err:
        return ErrorInfo(type=fallback, message=err)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        kind = body.get("type") if body.get("type") not in (None, "error") else body.get("code")
        return ErrorInfo(type=str(kind or fallback), message=body["message"])
    return ErrorInfo(
        type=fallback, message=orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    )


def non_empty(values: Mapping[str, Any]) -> dict[str, Any]:
    """The items whose value is not ``None``, ``""`` or an empty array or object."""
    return {key: value for key, value in values.items() if value not in (None, [], {}, "")}


def request_params(
    body: Mapping[str, Any], renames: Mapping[str, str]
) -> tuple[dict[str, Any], set[str]]:
    """Parameters renamed to their normalized names, and the body keys they used.

    ``renames`` maps a body key to its normalized name; when two body keys map to one
    name (``max_tokens`` and ``max_completion_tokens``), the first listed wins and the
    other stays in ``extra``.
    """
    params: dict[str, Any] = {}
    used: set[str] = set()
    for key, name in renames.items():
        value = body.get(key)
        if value is None or name in params:
            continue
        params[name] = stop_sequences(value) if name == "stop_sequences" else value
        used.add(key)
    return params, used


def extra_fields(body: Mapping[str, Any], used: Collection[str]) -> dict[str, Any]:
    """Every non-null body field not consumed by the normalization."""
    return leftovers(body, used)


def indexed(fields: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """Per-item leftovers keyed by the item's index as a string (JSON keys)."""
    return {str(index): value for index, value in fields.items() if value}
