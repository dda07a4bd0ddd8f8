"""OpenAI Responses: ``POST /v1/responses``, JSON and streamed.

Request: ``instructions`` becomes ``ModelRequest.system``; ``input`` as a string
becomes one ``user`` message; input items map to messages: ``message`` items keep
their role, a ``function_call`` (or ``custom_tool_call``) item becomes an
``assistant`` message with one tool call whose id is the ``call_id``, a
``function_call_output`` (or ``custom_tool_call_output``) item becomes a ``tool``
message, and any other item (``reasoning``, ``item_reference``, built-in tool calls)
becomes a message whose role is the item type and whose content is the item
verbatim. ``max_output_tokens`` becomes ``params["max_tokens"]``, ``text.format``
becomes ``params["response_format"]`` and ``reasoning`` stays ``reasoning``.

Response: the ``output_text`` parts of ``message`` items make the content; function
and custom tool calls make ``tool_calls``; other output items are kept in
``extra["output"]``. A stream is reassembled from ``response.output_item.*``,
``response.content_part.added`` and the text and argument deltas; status, usage and
ids come from the final ``response.completed`` / ``response.incomplete`` /
``response.failed`` event.

``finish_reason`` from ``status``: ``completed`` → ``tool_call`` when the output has
tool calls, else ``stop``; ``incomplete`` → ``length`` for ``max_output_tokens``,
``content_filter`` for ``content_filter``, else the reason (or ``incomplete``);
``failed`` → ``error`` (and the response's ``error`` becomes the ``ErrorInfo``);
``in_progress`` and ``queued`` → ``None``; anything else passes through. The raw
values are kept in ``extra["status"]`` and ``extra["incomplete_details"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_llmwb.adapters.openai_chat import tool_spec
from pytest_llmwb.adapters.providers import (
    VOLATILE_RESPONSE_FIELDS,
    AdapterError,
    ParseResult,
    WireAdapter,
    as_list,
    as_object,
    content_value,
    count,
    error_info,
    event_json,
    extra_fields,
    indexed,
    leftovers,
    non_empty,
    optional_str,
    request_params,
    required_str,
    tool_arguments,
)
from pytest_llmwb.adapters.sse import SSEEvent
from pytest_llmwb.schema import (
    ErrorInfo,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = ["OpenAIResponsesAdapter", "finish_reason"]

_PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_output_tokens": "max_tokens",
    "tool_choice": "tool_choice",
    "reasoning": "reasoning",
}
_CALL_TYPES = {"function_call": "arguments", "custom_tool_call": "input"}
_OUTPUT_TYPES = {"function_call_output", "custom_tool_call_output"}
_TERMINAL_EVENTS = {"response.completed", "response.incomplete", "response.failed"}
_START_EVENTS = {"response.created", "response.in_progress", "response.queued"}
#: Fields of a response object that echo the request or the clock.
_ECHOED = frozenset(
    {
        "id",
        "object",
        "model",
        "output",
        "usage",
        "status",
        "incomplete_details",
        "error",
        "instructions",
        "input",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "top_logprobs",
        "max_output_tokens",
        "max_tool_calls",
        "parallel_tool_calls",
        "previous_response_id",
        "conversation",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning",
        "text",
        "truncation",
        "metadata",
        "store",
        "background",
        "user",
        "safety_identifier",
        "include",
        *VOLATILE_RESPONSE_FIELDS,
    }
)


def _item(raw: Any, what: str) -> tuple[Message, dict[str, Any]]:
    item = as_object(raw, what)
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        message = Message(
            role=required_str(item, "role", what), content=content_value(item.get("content"))
        )
        return message, leftovers(item, ("type", "role", "content"))
    if kind in _CALL_TYPES:
        key = _CALL_TYPES[kind]
        value = item.get(key)
        call = ToolCall(
            id=optional_str(item.get("call_id"), f"{what}.call_id"),
            name=required_str(item, "name", what),
            arguments=tool_arguments(value) if kind == "function_call" else value,
        )
        fields = leftovers(item, ("type", "call_id", "name", key))
        if kind != "function_call":
            fields["type"] = kind
        return Message(role="assistant", tool_calls=[call]), fields
    if kind in _OUTPUT_TYPES:
        message = Message(
            role="tool",
            content=content_value(item.get("output")),
            tool_call_id=optional_str(item.get("call_id"), f"{what}.call_id"),
        )
        fields = leftovers(item, ("type", "call_id", "output"))
        if kind != "function_call_output":
            fields["type"] = kind
        return message, fields
    if not isinstance(kind, str):
        raise AdapterError(f"{what} has neither a 'type' nor a 'role'")
    return Message(role=kind, content=item), {}


def finish_reason(status: Any, incomplete: Any, has_tool_calls: bool) -> str | None:
    """The OpenTelemetry finish reason of a response's status (see the module doc)."""
    if status == "completed":
        return "tool_call" if has_tool_calls else "stop"
    if status == "incomplete":
        reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
        if reason == "max_output_tokens":
            return "length"
        return str(reason) if reason else "incomplete"
    if status == "failed":
        return "error"
    if status in (None, "in_progress", "queued"):
        return None
    return str(status)


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(
        input_tokens=count(raw, "input_tokens"),
        output_tokens=count(raw, "output_tokens"),
        cache_read_input_tokens=count(raw, "input_tokens_details", "cached_tokens"),
        cache_creation_input_tokens=count(raw, "input_tokens_details", "cache_write_tokens"),
        reasoning_output_tokens=count(raw, "output_tokens_details", "reasoning_tokens"),
        raw=raw,
    )


def _response(body: dict[str, Any], chunks: list[str] | None) -> ParseResult:
    texts: list[str] = []
    refusals: list[str] = []
    annotations: list[Any] = []
    calls: list[ToolCall] = []
    others: list[Any] = []
    for i, raw in enumerate(as_list(body.get("output"), "output")):
        item = as_object(raw, f"output[{i}]")
        kind = item.get("type")
        if kind == "message":
            for j, part_raw in enumerate(as_list(item.get("content"), f"output[{i}].content")):
                part = as_object(part_raw, f"output[{i}].content[{j}]")
                if part.get("type") == "output_text":
                    texts.append(required_str(part, "text", f"output[{i}].content[{j}]"))
                    annotations.extend(as_list(part.get("annotations"), "annotations"))
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal", "")))
                else:
                    others.append(part)
        elif kind in _CALL_TYPES:
            value = item.get(_CALL_TYPES[kind])
            calls.append(
                ToolCall(
                    id=optional_str(item.get("call_id"), f"output[{i}].call_id"),
                    name=required_str(item, "name", f"output[{i}]"),
                    arguments=tool_arguments(value) if kind == "function_call" else value,
                )
            )
        else:
            others.append(item)
    status = body.get("status")
    incomplete = body.get("incomplete_details")
    extra = non_empty(
        {
            "status": status,
            "incomplete_details": incomplete,
            "refusal": "".join(refusals) if refusals else None,
            "annotations": annotations,
            "output": others,
            **leftovers(body, _ECHOED),
        }
    )
    response = ModelResponse(
        id=optional_str(body.get("id"), "id"),
        model=optional_str(body.get("model"), "model"),
        content="".join(texts) if texts else None,
        tool_calls=calls,
        finish_reason=finish_reason(status, incomplete, bool(calls)),
        usage=_usage(body.get("usage")),
        chunks=chunks,
        extra=extra,
    )
    error = error_info({"error": body["error"]}) if body.get("error") else None
    return response, error


class OpenAIResponsesAdapter(WireAdapter):
    """OpenAI Responses API."""

    name = "openai"
    api = "openai.responses"
    path_suffixes = ("/responses",)

    def _request(self, body: Mapping[str, Any]) -> ModelRequest:
        params, used = request_params(body, _PARAMS)
        extra_used = {"model", "input", "tools", "stream"}
        text = body.get("text")
        text_rest: dict[str, Any] = {}
        if isinstance(text, dict) and text.get("format") is not None:
            # text.format is the Responses API's response_format; the rest of text stays
            params["response_format"] = text["format"]
            text_rest = leftovers(text, ("format",))
            extra_used.add("text")
        system = body.get("instructions")
        if isinstance(system, str):
            extra_used.add("instructions")
        else:
            system = None
        raw_input = body.get("input")
        messages: list[Message] = []
        message_fields: dict[int, dict[str, Any]] = {}
        if isinstance(raw_input, str):
            messages.append(Message(role="user", content=raw_input))
        else:
            for i, raw in enumerate(as_list(raw_input, "input")):
                message, fields = _item(raw, f"input[{i}]")
                messages.append(message)
                message_fields[i] = fields
        tools: list[ToolSpec] = []
        tool_fields: dict[int, dict[str, Any]] = {}
        for i, raw in enumerate(as_list(body.get("tools"), "tools")):
            spec, fields = tool_spec(raw, f"tools[{i}]")
            tools.append(spec)
            tool_fields[i] = fields
        extra = extra_fields(body, {*used, *extra_used})
        if text_rest:
            extra["text"] = text_rest
        if indexed(message_fields):
            extra["message_fields"] = indexed(message_fields)
        if indexed(tool_fields):
            extra["tool_fields"] = indexed(tool_fields)
        return ModelRequest(
            model=required_str(body, "model", "the body"),
            messages=messages,
            system=system,
            tools=tools,
            params=params,
            stream=body.get("stream") is True,
            extra=extra,
        )

    def _from_json(self, body: Any) -> ParseResult:
        body = as_object(body, "the body")
        if "output" not in body and "status" not in body and body.get("error"):
            return None, error_info(body)
        return _response(body, None)

    def _from_events(self, events: list[SSEEvent]) -> ParseResult:
        fold = _StreamFold()
        for event in events:
            if event.data == "[DONE]":  # not sent by this API, but by some gateways
                continue
            payload = as_object(event_json(event), f"event at byte {event.start}")
            kind = payload.get("type") or event.event
            if kind == "error":
                fold.error = error_info(payload)
                break
            fold.add(kind, payload)
            if kind in _TERMINAL_EVENTS:
                break
        if fold.final is None and fold.error is None:
            raise AdapterError(
                "the event stream ended without response.completed, response.incomplete or "
                "response.failed (truncated?)"
            )
        body = fold.body()
        if body is None:
            return None, fold.error
        response, error = _response(body, fold.chunks)
        return response, fold.error or error


class _StreamFold:
    """Responses stream events folded back into the final response object."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.items: dict[int, dict[str, Any]] = {}
        self.done: set[int] = set()
        self.parts: dict[tuple[int, int], dict[str, Any]] = {}
        self.texts: dict[tuple[int, int], list[str]] = {}
        self.arguments: dict[int, list[str]] = {}
        self.chunks: list[str] = []
        self.error: ErrorInfo | None = None

    def add(self, kind: str, payload: dict[str, Any]) -> None:
        index = payload.get("output_index")
        if kind in _START_EVENTS:
            self.snapshot = as_object(payload.get("response"), f"{kind}.response")
        elif kind in _TERMINAL_EVENTS:
            self.final = as_object(payload.get("response"), f"{kind}.response")
        elif kind in ("response.output_item.added", "response.output_item.done"):
            if not isinstance(index, int):
                raise AdapterError(f"{kind} has no integer 'output_index'")
            self.items[index] = dict(as_object(payload.get("item"), f"{kind}.item"))
            if kind.endswith(".done"):
                self.done.add(index)
        elif kind == "response.content_part.added":
            key = (_int(index, kind), _int(payload.get("content_index"), kind))
            self.parts[key] = dict(as_object(payload.get("part"), f"{kind}.part"))
        elif kind in ("response.output_text.delta", "response.refusal.delta"):
            key = (_int(index, kind), _int(payload.get("content_index"), kind))
            delta = str(payload.get("delta", ""))
            self.texts.setdefault(key, []).append(delta)
            if kind == "response.output_text.delta" and delta:
                self.chunks.append(delta)
        elif kind in (
            "response.function_call_arguments.delta",
            "response.custom_tool_call_input.delta",
        ):
            self.arguments.setdefault(_int(index, kind), []).append(str(payload.get("delta", "")))

    def _item(self, index: int) -> dict[str, Any]:
        item = dict(self.items[index])
        if index in self.done:
            return item
        kind = item.get("type")
        if kind in _CALL_TYPES and index in self.arguments:
            item[_CALL_TYPES[kind]] = "".join(self.arguments[index])
        elif kind == "message":
            content = {
                j: dict(part) for j, part in enumerate(as_list(item.get("content"), "content"))
            }
            for (i, j), part in self.parts.items():
                if i == index:
                    content.setdefault(j, part)
            for (i, j), texts in self.texts.items():
                if i == index:
                    part = content.setdefault(j, {"type": "output_text", "text": ""})
                    field = "refusal" if part.get("type") == "refusal" else "text"
                    part[field] = "".join(texts)
            item["content"] = [content[j] for j in sorted(content)]
        return item

    def body(self) -> dict[str, Any] | None:
        base = self.final if self.final is not None else self.snapshot
        if base is None and not self.items:
            return None
        body = dict(base or {})
        if self.items:
            body["output"] = [self._item(index) for index in sorted(self.items)]
        return body


def _int(value: Any, kind: str) -> int:
    if not isinstance(value, int):
        raise AdapterError(f"{kind} has no integer index")
    return value
