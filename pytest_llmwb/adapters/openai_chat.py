"""OpenAI Chat Completions: ``POST /v1/chat/completions``, JSON and streamed.

Request: ``messages`` map one to one (``system`` and ``developer`` messages stay
messages; ``tool`` messages keep their ``tool_call_id``); ``max_completion_tokens``
(else ``max_tokens``) becomes ``params["max_tokens"]``, ``stop`` becomes
``stop_sequences`` and ``reasoning_effort`` becomes ``params["reasoning"] =
{"effort": ...}``, the shape the Responses API uses.

Response: the choice with index 0 is the response; further choices (``n > 1``) are
kept in ``extra["choices"]``. A stream (``data: {chunk}`` events ending with
``data: [DONE]``) is folded back into the body a non-streamed call returns, so both
normalize alike; ``chunks`` holds the content deltas of choice 0. Usage arrives in
the last chunk when ``stream_options.include_usage`` was set.

``finish_reason``: ``stop`` → ``stop``, ``length`` → ``length``, ``tool_calls`` and
``function_call`` → ``tool_call``, ``content_filter`` → ``content_filter``; the raw
value is kept in ``extra["finish_reason"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    text_of,
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

__all__ = ["FINISH_REASONS", "OpenAIChatAdapter"]

#: OpenAI ``finish_reason`` → OpenTelemetry finish reason.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_call",
    "function_call": "tool_call",
    "content_filter": "content_filter",
}

_PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_completion_tokens": "max_tokens",
    "max_tokens": "max_tokens",
    "seed": "seed",
    "stop": "stop_sequences",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "tool_choice": "tool_choice",
    "response_format": "response_format",
}
_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "function_call"}
)
_RESPONSE_KEYS = frozenset({"id", "object", "model", "choices", "usage", *VOLATILE_RESPONSE_FIELDS})


def tool_call(raw: Any, what: str) -> tuple[ToolCall, dict[str, Any]]:
    """A wire tool call (``function`` or ``custom``) and its fields the schema lacks."""
    call = as_object(raw, what)
    kind = call.get("type") or "function"
    spec = as_object(call.get("custom" if kind == "custom" else "function"), f"{what}.{kind}")
    if kind == "custom":
        arguments = spec.get("input")
        fields = leftovers(spec, ("name", "input"))
    else:
        arguments = tool_arguments(spec.get("arguments"))
        fields = leftovers(spec, ("name", "arguments"))
    fields.update(leftovers(call, ("id", "type", "function", "custom")))
    if kind != "function":
        fields["type"] = kind
    name = required_str(spec, "name", what)
    return ToolCall(
        id=optional_str(call.get("id"), f"{what}.id"), name=name, arguments=arguments
    ), fields


def _legacy_call(raw: Any, what: str) -> ToolCall:
    spec = as_object(raw, what)
    return ToolCall(
        name=required_str(spec, "name", what), arguments=tool_arguments(spec.get("arguments"))
    )


def _message(raw: Any, what: str) -> tuple[Message, dict[str, Any]]:
    message = as_object(raw, what)
    calls: list[ToolCall] = []
    call_fields: list[dict[str, Any]] = []
    for i, item in enumerate(as_list(message.get("tool_calls"), f"{what}.tool_calls")):
        call, fields = tool_call(item, f"{what}.tool_calls[{i}]")
        calls.append(call)
        call_fields.append(fields)
    if message.get("function_call") is not None:
        calls.append(_legacy_call(message["function_call"], f"{what}.function_call"))
    fields = leftovers(message, _MESSAGE_KEYS)
    if any(call_fields):
        fields["tool_call_fields"] = call_fields
    normalized = Message(
        role=required_str(message, "role", what),
        content=content_value(message.get("content")),
        name=optional_str(message.get("name"), f"{what}.name"),
        tool_calls=calls,
        tool_call_id=optional_str(message.get("tool_call_id"), f"{what}.tool_call_id"),
    )
    return normalized, fields


def tool_spec(raw: Any, what: str) -> tuple[ToolSpec, dict[str, Any]]:
    """A tool definition, nested (``{"type", "function": {...}}``) or flat, and its extras."""
    tool = as_object(raw, what)
    kind = tool.get("type") or "function"
    nested = tool.get(kind)
    spec = nested if isinstance(nested, dict) else tool
    fields = leftovers(spec, ("name", "description", "parameters"))
    if spec is not tool:
        fields.update(leftovers(tool, ("type", kind)))
    fields["type"] = kind
    if kind == "function":
        del fields["type"]
    name = spec.get("name")
    if not isinstance(name, str):
        name = str(kind)
    description = optional_str(spec.get("description"), f"{what}.description")
    return ToolSpec(name=name, description=description, parameters=spec.get("parameters")), fields


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(
        input_tokens=count(raw, "prompt_tokens"),
        output_tokens=count(raw, "completion_tokens"),
        cache_read_input_tokens=count(raw, "prompt_tokens_details", "cached_tokens"),
        cache_creation_input_tokens=count(raw, "prompt_tokens_details", "cache_write_tokens"),
        reasoning_output_tokens=count(raw, "completion_tokens_details", "reasoning_tokens"),
        raw=raw,
    )


class OpenAIChatAdapter(WireAdapter):
    """OpenAI Chat Completions (and compatible servers: Azure OpenAI, vLLM, Ollama, ...)."""

    name = "openai"
    api = "openai.chat_completions"
    path_suffixes = ("/chat/completions",)

    def _request(self, body: Mapping[str, Any]) -> ModelRequest:
        params, used = request_params(body, _PARAMS)
        if body.get("reasoning_effort") is not None:
            params["reasoning"] = {"effort": body["reasoning_effort"]}
            used.add("reasoning_effort")
        messages: list[Message] = []
        message_fields: dict[int, dict[str, Any]] = {}
        for i, raw in enumerate(as_list(body.get("messages"), "messages")):
            message, fields = _message(raw, f"messages[{i}]")
            messages.append(message)
            message_fields[i] = fields
        tools: list[ToolSpec] = []
        tool_fields: dict[int, dict[str, Any]] = {}
        for i, raw in enumerate(as_list(body.get("tools"), "tools")):
            spec, fields = tool_spec(raw, f"tools[{i}]")
            tools.append(spec)
            tool_fields[i] = fields
        extra = extra_fields(body, {*used, "model", "messages", "tools", "stream"})
        if indexed(message_fields):
            extra["message_fields"] = indexed(message_fields)
        if indexed(tool_fields):
            extra["tool_fields"] = indexed(tool_fields)
        return ModelRequest(
            model=required_str(body, "model", "the body"),
            messages=messages,
            tools=tools,
            params=params,
            stream=body.get("stream") is True,
            extra=extra,
        )

    def _from_json(self, body: Any) -> ParseResult:
        body = as_object(body, "the body")
        if "choices" not in body and body.get("error"):
            return None, error_info(body)
        return _response(body, None), None

    def _from_events(self, events: list[SSEEvent]) -> ParseResult:
        fold = _StreamFold()
        for event in events:
            if event.data == "[DONE]":
                fold.done = True
                break
            chunk = as_object(event_json(event), f"event at byte {event.start}")
            if chunk.get("error"):
                fold.error = error_info(chunk)
                break
            fold.add(chunk)
        if fold.error is None and not fold.done:
            raise AdapterError("the event stream ended without `data: [DONE]` (truncated?)")
        if not fold.seen:
            if fold.error is not None:
                return None, fold.error
            raise AdapterError("the event stream has no chunk")
        return _response(fold.body(), fold.chunks), fold.error


def _response(body: dict[str, Any], chunks: list[str] | None) -> ModelResponse:
    choices = [
        as_object(c, f"choices[{i}]") for i, c in enumerate(as_list(body.get("choices"), "choices"))
    ]
    primary = next((c for c in choices if c.get("index", 0) == 0), choices[0] if choices else {})
    message = as_object(primary.get("message") or {}, "choices[0].message")
    content = message.get("content")
    if isinstance(content, list):  # some compatible servers answer with parts
        content = text_of(content)
    calls = [
        tool_call(raw, f"choices[0].message.tool_calls[{i}]")[0]
        for i, raw in enumerate(as_list(message.get("tool_calls"), "tool_calls"))
    ]
    if message.get("function_call") is not None:
        calls.append(_legacy_call(message["function_call"], "choices[0].message.function_call"))
    raw_finish = optional_str(primary.get("finish_reason"), "finish_reason")
    extra = non_empty(
        {
            "finish_reason": raw_finish,
            **leftovers(message, ("role", "content", "tool_calls", "function_call")),
            "logprobs": primary.get("logprobs"),
            **leftovers(body, _RESPONSE_KEYS),
            "choices": [c for c in choices if c is not primary],
        }
    )
    return ModelResponse(
        id=optional_str(body.get("id"), "id"),
        model=optional_str(body.get("model"), "model"),
        content=optional_str(content, "choices[0].message.content"),
        tool_calls=calls,
        finish_reason=FINISH_REASONS.get(raw_finish, raw_finish) if raw_finish else None,
        usage=_usage(body.get("usage")),
        chunks=chunks,
        extra=extra,
    )


class _Choice:
    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.content: list[str] | None = None
        self.refusal: list[str] | None = None
        self.calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any]] = {}

    def add(self, choice: dict[str, Any], chunks: list[str] | None) -> None:
        delta = as_object(choice.get("delta") or {}, "delta")
        self.role = self.role or delta.get("role")
        content = delta.get("content")
        if content is not None:
            if self.content is None:
                self.content = []
            self.content.append(content)
            if chunks is not None and content:
                chunks.append(content)
        if delta.get("refusal") is not None:
            if self.refusal is None:
                self.refusal = []
            self.refusal.append(delta["refusal"])
        for raw in as_list(delta.get("tool_calls"), "delta.tool_calls"):
            fragment = as_object(raw, "delta.tool_calls[]")
            slot = self.calls.setdefault(
                fragment.get("index", len(self.calls)),
                {"id": None, "type": "function", "name": None, "arguments": []},
            )
            slot["id"] = slot["id"] or fragment.get("id")
            if fragment.get("type"):
                slot["type"] = fragment["type"]
            function = fragment.get("function") or fragment.get("custom") or {}
            slot["name"] = slot["name"] or function.get("name")
            piece = function.get("arguments", function.get("input"))
            if piece:
                slot["arguments"].append(piece)
        if delta.get("function_call") is not None:
            function = as_object(delta["function_call"], "delta.function_call")
            slot = self.function_call = self.function_call or {"name": None, "arguments": []}
            slot["name"] = slot["name"] or function.get("name")
            if function.get("arguments"):
                slot["arguments"].append(function["arguments"])
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            for key, value in logprobs.items():
                if isinstance(value, list):
                    self.logprobs.setdefault(key, []).extend(value)

    def body(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": "".join(self.content) if self.content is not None else None,
        }
        if self.refusal is not None:
            message["refusal"] = "".join(self.refusal)
        if self.calls:
            message["tool_calls"] = [
                _call_body(slot) for _, slot in sorted(self.calls.items(), key=lambda kv: kv[0])
            ]
        if self.function_call is not None:
            message["function_call"] = {
                "name": self.function_call["name"],
                "arguments": "".join(self.function_call["arguments"]),
            }
        return {
            "index": self.index,
            "message": message,
            "finish_reason": self.finish_reason,
            "logprobs": self.logprobs or None,
        }


def _call_body(slot: dict[str, Any]) -> dict[str, Any]:
    arguments = "".join(slot["arguments"])
    if slot["type"] == "custom":
        return {
            "id": slot["id"],
            "type": "custom",
            "custom": {"name": slot["name"], "input": arguments},
        }
    return {
        "id": slot["id"],
        "type": "function",
        "function": {"name": slot["name"], "arguments": arguments},
    }


class _StreamFold:
    """Chat completion chunks folded into the body of the equivalent non-streamed call."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.usage: Any = None
        self.chunks: list[str] = []
        self.done = False
        self.seen = False
        self.error: ErrorInfo | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        self.seen = True
        for key, value in chunk.items():
            if key not in ("choices", "usage") and value is not None:
                self.head.setdefault(key, value)
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        for i, raw in enumerate(as_list(chunk.get("choices"), "choices")):
            choice = as_object(raw, f"choices[{i}]")
            index = choice.get("index", 0)
            state = self.choices.setdefault(index, _Choice(index))
            state.add(choice, self.chunks if index == 0 else None)

    def body(self) -> dict[str, Any]:
        return {
            **self.head,
            "choices": [
                state.body() for _, state in sorted(self.choices.items(), key=lambda kv: kv[0])
            ],
            "usage": self.usage,
        }
