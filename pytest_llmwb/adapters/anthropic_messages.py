"""Anthropic Messages: ``POST /v1/messages``, JSON and streamed.

Request: the top-level ``system`` becomes ``ModelRequest.system`` (a list of text
blocks is joined with LF, and kept verbatim in ``extra["system"]`` unless it is a
single plain block). In a message, ``tool_use`` blocks become the message's
``tool_calls`` (``input`` as arguments) and the remaining blocks its content; each
``tool_result`` block becomes a ``tool`` message with ``tool_call_id`` =
``tool_use_id`` (``is_error`` and ``cache_control`` go to ``extra["message_fields"]``),
and the blocks around it stay ``user`` messages, in order. ``thinking`` becomes
``params["reasoning"]`` and ``output_config.format`` becomes
``params["response_format"]``.

Response: text blocks make the content; ``tool_use`` blocks make ``tool_calls``;
other blocks (``thinking``, server tool blocks, ...) are kept in
``extra["content"]`` and text citations in ``extra["citations"]``. A stream is folded
back into the message a non-streamed call returns (``message_start``, then
``content_block_*`` with text, ``input_json_delta``, thinking, signature and citation
deltas, then ``message_delta`` with the stop reason and cumulative usage);
``Usage.raw`` is then the ``message_start`` usage updated with the non-null fields of
the last ``message_delta`` usage.

Usage: Anthropic's ``input_tokens`` excludes cache reads and writes, so
``Usage.input_tokens`` = ``input_tokens`` + ``cache_read_input_tokens`` +
``cache_creation_input_tokens``; ``reasoning_output_tokens`` is
``output_tokens_details.thinking_tokens``.

``finish_reason`` from ``stop_reason``: ``end_turn`` and ``stop_sequence`` → ``stop``;
``max_tokens`` and ``model_context_window_exceeded`` → ``length``; ``tool_use`` →
``tool_call``; ``refusal`` → ``content_filter``; others (``pause_turn``) pass
through. The raw value is kept in ``extra["stop_reason"]``.
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

__all__ = ["STOP_REASONS", "AnthropicMessagesAdapter"]

#: Anthropic ``stop_reason`` → OpenTelemetry finish reason.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_call",
    "refusal": "content_filter",
}

_PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_tokens",
    "stop_sequences": "stop_sequences",
    "tool_choice": "tool_choice",
    "thinking": "reasoning",
}
#: Blocks whose input streams as ``input_json_delta`` fragments.
_INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use"})
_RESPONSE_KEYS = frozenset(
    {"id", "type", "role", "model", "content", "stop_reason", "usage", *VOLATILE_RESPONSE_FIELDS}
)


def _system(raw: Any) -> tuple[str | None, Any]:
    """The system text, and the verbatim value when the text alone would lose something."""
    if raw is None or isinstance(raw, str):
        return raw, None
    blocks = as_list(raw, "system")
    collapsed = content_value(blocks)
    if isinstance(collapsed, str):
        return collapsed, None
    texts = [block.get("text", "") for block in blocks if isinstance(block, dict)]
    return "\n".join(text for text in texts if isinstance(text, str)), blocks


def _messages(raw_messages: Any) -> tuple[list[Message], dict[int, dict[str, Any]]]:
    messages: list[Message] = []
    fields: dict[int, dict[str, Any]] = {}
    for i, raw in enumerate(as_list(raw_messages, "messages")):
        for message, message_fields in _split(as_object(raw, f"messages[{i}]"), f"messages[{i}]"):
            fields[len(messages)] = message_fields
            messages.append(message)
    return messages, fields


def _split(message: dict[str, Any], what: str) -> list[tuple[Message, dict[str, Any]]]:
    """One wire message as normalized messages: tool results split out, in order."""
    role = required_str(message, "role", what)
    rest = leftovers(message, ("role", "content"))
    content = message.get("content")
    if not isinstance(content, list):
        return [(Message(role=role, content=content), rest)]
    out: list[tuple[Message, dict[str, Any]]] = []
    pending: list[Any] = []
    calls: list[ToolCall] = []
    call_fields: list[dict[str, Any]] = []

    def flush() -> None:
        if pending or calls:
            fields = dict(rest)
            if any(call_fields):
                fields["tool_call_fields"] = list(call_fields)
            text = content_value(list(pending)) if pending else None
            out.append((Message(role=role, content=text, tool_calls=list(calls)), fields))
        pending.clear()
        calls.clear()
        call_fields.clear()

    for j, raw_block in enumerate(content):
        where = f"{what}.content[{j}]"
        block = as_object(raw_block, where)
        kind = block.get("type")
        if kind == "tool_use":
            calls.append(
                ToolCall(
                    id=optional_str(block.get("id"), f"{where}.id"),
                    name=required_str(block, "name", where),
                    arguments=block.get("input"),
                )
            )
            call_fields.append(leftovers(block, ("type", "id", "name", "input")))
        elif kind == "tool_result":
            flush()
            result = Message(
                role="tool",
                content=content_value(block.get("content")),
                tool_call_id=optional_str(block.get("tool_use_id"), f"{where}.tool_use_id"),
            )
            out.append((result, leftovers(block, ("type", "tool_use_id", "content"))))
        else:
            pending.append(block)
    flush()
    return out or [(Message(role=role, content=[]), rest)]


def _tool(raw: Any, what: str) -> tuple[ToolSpec, dict[str, Any]]:
    tool = as_object(raw, what)
    kind = tool.get("type")
    name = tool.get("name") if isinstance(tool.get("name"), str) else kind
    if not isinstance(name, str):
        raise AdapterError(f"{what} has neither a 'name' nor a 'type'")
    spec = ToolSpec(
        name=name,
        description=optional_str(tool.get("description"), f"{what}.description"),
        parameters=tool.get("input_schema"),
    )
    fields = leftovers(tool, ("name", "description", "input_schema"))
    if fields.get("type") == "custom":  # the default kind of a client tool
        del fields["type"]
    return spec, fields


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    cache_read = count(raw, "cache_read_input_tokens")
    cache_creation = count(raw, "cache_creation_input_tokens")
    return Usage(
        input_tokens=count(raw, "input_tokens") + cache_read + cache_creation,
        output_tokens=count(raw, "output_tokens"),
        cache_read_input_tokens=cache_read,
        cache_creation_input_tokens=cache_creation,
        reasoning_output_tokens=count(raw, "output_tokens_details", "thinking_tokens"),
        raw=raw,
    )


def _response(body: dict[str, Any], chunks: list[str] | None) -> ModelResponse:
    blocks = [
        as_object(block, f"content[{i}]")
        for i, block in enumerate(as_list(body.get("content"), "content"))
    ]
    calls: list[ToolCall] = []
    citations: list[Any] = []
    others: list[Any] = []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_use":
            calls.append(
                ToolCall(
                    id=optional_str(block.get("id"), f"content[{i}].id"),
                    name=required_str(block, "name", f"content[{i}]"),
                    arguments=block.get("input"),
                )
            )
        elif kind == "text":
            citations.extend(as_list(block.get("citations"), f"content[{i}].citations"))
        else:
            others.append(block)
    stop_reason = optional_str(body.get("stop_reason"), "stop_reason")
    extra = non_empty(
        {
            "stop_reason": stop_reason,
            **leftovers(body, _RESPONSE_KEYS),
            "content": others,
            "citations": citations,
        }
    )
    return ModelResponse(
        id=optional_str(body.get("id"), "id"),
        model=optional_str(body.get("model"), "model"),
        content=text_of(blocks, ("text",)),
        tool_calls=calls,
        finish_reason=STOP_REASONS.get(stop_reason, stop_reason) if stop_reason else None,
        usage=_usage(body.get("usage")),
        chunks=chunks,
        extra=extra,
    )


class AnthropicMessagesAdapter(WireAdapter):
    """Anthropic Messages API."""

    name = "anthropic"
    api = "anthropic.messages"
    path_suffixes = ("/v1/messages",)

    def _request(self, body: Mapping[str, Any]) -> ModelRequest:
        params, used = request_params(body, _PARAMS)
        extra_used = {"model", "messages", "system", "tools", "stream"}
        output_config = body.get("output_config")
        output_rest: dict[str, Any] = {}
        if isinstance(output_config, dict) and output_config.get("format") is not None:
            params["response_format"] = output_config["format"]
            output_rest = leftovers(output_config, ("format",))
            extra_used.add("output_config")
        system, system_blocks = _system(body.get("system"))
        messages, message_fields = _messages(body.get("messages"))
        tools: list[ToolSpec] = []
        tool_fields: dict[int, dict[str, Any]] = {}
        for i, raw in enumerate(as_list(body.get("tools"), "tools")):
            spec, fields = _tool(raw, f"tools[{i}]")
            tools.append(spec)
            tool_fields[i] = fields
        extra = extra_fields(body, {*used, *extra_used})
        if output_rest:
            extra["output_config"] = output_rest
        if system_blocks is not None:
            extra["system"] = system_blocks
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
        if body.get("type") == "error" or ("content" not in body and body.get("error")):
            return None, error_info(body)
        return _response(body, None), None

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
            if fold.stopped:
                break
        if fold.message is None:
            if fold.error is not None:
                return None, fold.error
            raise AdapterError("the event stream has no message_start event")
        if not fold.stopped and fold.error is None:
            raise AdapterError("the event stream ended without message_stop (truncated?)")
        return _response(fold.body(), fold.chunks), fold.error


class _StreamFold:
    """Messages stream events folded back into the message a non-streamed call returns."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.usage: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.pieces: dict[tuple[int, str], list[str]] = {}
        self.chunks: list[str] = []
        self.stopped = False
        self.error: ErrorInfo | None = None

    def add(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "message_start":
            self.message = dict(as_object(payload.get("message"), "message_start.message"))
            self.usage = dict(as_object(self.message.get("usage") or {}, "message_start.usage"))
            return
        if kind in ("ping",) or not kind.startswith(("message_", "content_block_")):
            return
        if self.message is None:
            raise AdapterError(f"{kind} event before message_start")
        if kind == "content_block_start":
            block = as_object(payload.get("content_block"), "content_block_start.content_block")
            self.blocks[self._index(payload)] = dict(block)
        elif kind == "content_block_delta":
            self._delta(self._block(payload), self._index(payload), payload)
        elif kind == "content_block_stop":
            self._finish(self._index(payload))
        elif kind == "message_delta":
            delta = as_object(payload.get("delta") or {}, "message_delta.delta")
            self.message.update({key: value for key, value in delta.items() if value is not None})
            usage = as_object(payload.get("usage") or {}, "message_delta.usage")
            self.usage.update({key: value for key, value in usage.items() if value is not None})
        elif kind == "message_stop":
            self.stopped = True

    @staticmethod
    def _index(payload: dict[str, Any]) -> int:
        index = payload.get("index")
        if not isinstance(index, int):
            raise AdapterError(f"{payload.get('type')} event has no integer 'index'")
        return index

    def _block(self, payload: dict[str, Any]) -> dict[str, Any]:
        index = self._index(payload)
        if index not in self.blocks:
            raise AdapterError(f"content_block_delta for block {index}, which was never started")
        return self.blocks[index]

    def _delta(self, block: dict[str, Any], index: int, payload: dict[str, Any]) -> None:
        delta = as_object(payload.get("delta"), "content_block_delta.delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = str(delta.get("text", ""))
            self.pieces.setdefault((index, "text"), []).append(text)
            if text:
                self.chunks.append(text)
        elif kind == "input_json_delta":
            piece = str(delta.get("partial_json", ""))
            self.pieces.setdefault((index, "partial_json"), []).append(piece)
        elif kind == "thinking_delta":
            piece = str(delta.get("thinking", ""))
            self.pieces.setdefault((index, "thinking"), []).append(piece)
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            citations = block.get("citations")
            if not isinstance(citations, list):
                citations = block["citations"] = []
            citations.append(delta.get("citation"))

    def _finish(self, index: int) -> None:
        """Join the fragments a block gathered into its fields."""
        block = self.blocks.get(index)
        if block is None:
            return
        for field in ("text", "thinking"):
            pieces = self.pieces.pop((index, field), None)
            if pieces is not None:
                block[field] = str(block.get(field) or "") + "".join(pieces)
        fragments = self.pieces.pop((index, "partial_json"), None)
        if fragments and block.get("type") in _INPUT_BLOCKS and "".join(fragments):
            block["input"] = tool_arguments("".join(fragments))

    def body(self) -> dict[str, Any]:
        for index in sorted({index for index, _ in self.pieces}):  # blocks an error cut short
            self._finish(index)
        assert self.message is not None
        return {
            **self.message,
            "content": [self.blocks[index] for index in sorted(self.blocks)],
            "usage": self.usage,
        }
