"""A scripted OpenAI- and Anthropic-compatible HTTP server on loopback.

:class:`ScriptedLLMServer` binds ``127.0.0.1`` on a free port and answers the real
``openai`` and ``anthropic`` SDKs from a script, so tests exercise the SDKs' own HTTP,
SSE and parsing code without any traffic leaving the machine::

    with ScriptedLLMServer([Reply(text="Hello!")]) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test-fake")
        client.chat.completions.create(model="gpt-4o", messages=[...])

Served endpoints: OpenAI Chat Completions (``POST /v1/chat/completions``), OpenAI
Responses (``POST /v1/responses``) and Anthropic Messages (``POST /v1/messages``), each
non-streaming and streaming, in the provider's own wire shape.

Output is deterministic: ids come from per-server counters (``chatcmpl-0001``,
``resp_0001``, ``msg_0001``, ``call_0001``, ``toolu_0001``), timestamps and the ``Date``
header are the constant :data:`CREATED_AT`, and JSON keys keep a fixed order. Two servers
given the same script and the same requests send identical bytes, which is what makes
recordings of them reproducible.

Standard library only, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypeAlias, cast
from urllib.parse import urlsplit

__all__ = [
    "CREATED_AT",
    "Api",
    "ErrorReply",
    "FinishReason",
    "ReceivedRequest",
    "Reply",
    "ReplyUsage",
    "Script",
    "ScriptStep",
    "ScriptedLLMServer",
    "ToolCallReply",
    "echo",
]

CREATED_AT = 1_700_000_000
"""The fixed Unix time reported as ``created`` / ``created_at`` and in the ``Date`` header."""

Api: TypeAlias = Literal["openai.chat", "openai.responses", "anthropic.messages"]
"""Which provider API a request was addressed to."""

FinishReason: TypeAlias = Literal["stop", "length", "tool_calls"]
"""Why a scripted reply ended, in neutral words that each API translates.

``stop`` is ``stop`` / ``end_turn`` / a completed response; ``length`` is ``length`` /
``max_tokens`` / an incomplete response (``max_output_tokens``); ``tool_calls`` is
``tool_calls`` / ``tool_use`` / a completed response.
"""

JSONObject: TypeAlias = dict[str, Any]

_ROUTES: dict[str, Api] = {
    "/v1/chat/completions": "openai.chat",
    "/v1/responses": "openai.responses",
    "/v1/messages": "anthropic.messages",
}
_ID_PREFIXES: dict[Api, str] = {
    "openai.chat": "chatcmpl-",
    "openai.responses": "resp_",
    "anthropic.messages": "msg_",
}
_REQUEST_ID_HEADERS: dict[Api, str] = {
    "openai.chat": "x-request-id",
    "openai.responses": "x-request-id",
    "anthropic.messages": "request-id",
}
_DEFAULT_MODEL = "scripted-model"
_POLL_INTERVAL = 0.05
_JOIN_TIMEOUT = 5.0


# --------------------------------------------------------------------------- script


@dataclass(frozen=True)
class ToolCallReply:
    """One tool (function) call in a scripted reply.

    ``id`` defaults to a counter-derived id in the provider's style (``call_0001`` for
    OpenAI, ``toolu_0001`` for Anthropic).
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class ReplyUsage:
    """Token usage of a scripted reply, in one provider-neutral form.

    ``input_tokens`` is every prompt token, cached or not (OpenAI's ``prompt_tokens``);
    ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` are parts of it.
    Anthropic's wire ``input_tokens`` excludes both, so the server subtracts them there.
    ``reasoning_tokens`` is part of ``output_tokens``, as in both providers' accounting.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        counts = (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.reasoning_tokens,
        )
        if any(count < 0 for count in counts):
            raise ValueError(f"token counts must not be negative: {self!r}")
        if self.cache_read_input_tokens + self.cache_creation_input_tokens > self.input_tokens:
            raise ValueError(
                "cache_read_input_tokens + cache_creation_input_tokens must not exceed"
                f" input_tokens (they are parts of it): {self!r}"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens must not exceed output_tokens (it is part of it): {self!r}"
            )


@dataclass(frozen=True)
class Reply:
    """A successful model answer: text, tool calls or both.

    ``usage`` defaults to a rough, deterministic word count of request and reply.
    ``finish_reason`` defaults to ``tool_calls`` when there are tool calls, else ``stop``.
    ``model`` defaults to the model named in the request. ``chunk_size`` is how many
    characters of text (or of tool-call arguments JSON) each streamed delta carries.
    ``chunk_delay`` overrides the server's pause before each streamed event, in seconds.
    """

    text: str = ""
    tool_calls: Sequence[ToolCallReply] = ()
    usage: ReplyUsage | None = None
    finish_reason: FinishReason | None = None
    model: str | None = None
    chunk_size: int = 8
    chunk_delay: float | None = None

    def __post_init__(self) -> None:
        # Freeze the caller's list so later mutation cannot change a served script.
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {self.chunk_size}")
        if self.chunk_delay is not None and self.chunk_delay < 0:
            raise ValueError(f"chunk_delay must not be negative, got {self.chunk_delay}")


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error answer, in the provider's error-body shape.

    ``type`` defaults to the provider's error type for ``status`` (for example
    ``rate_limit_error`` for Anthropic 429). ``headers`` are sent as given, e.g.
    ``{"retry-after": "0"}``.
    """

    status: int = 500
    message: str = "scripted error"
    headers: Mapping[str, str] = field(default_factory=dict)
    type: str | None = None

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"ErrorReply.status must be a 4xx or 5xx code, got {self.status}")


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request the server received, as the SDK sent it.

    ``headers`` has lower-cased names. ``json`` is the parsed body (``{}`` when the body
    is empty or not a JSON object; ``body`` keeps the raw bytes). ``api`` is ``None`` for
    a path the server does not serve.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    json: JSONObject
    body: bytes
    api: Api | None

    @property
    def model(self) -> str | None:
        """The ``model`` field of the body, if any."""
        model = self.json.get("model")
        return model if isinstance(model, str) else None

    @property
    def stream(self) -> bool:
        """Whether the body asked for a streamed answer."""
        return self.json.get("stream") is True

    @property
    def last_user_text(self) -> str:
        """Text of the last user message (``""`` when there is none)."""
        items = self.json.get("input" if self.api == "openai.responses" else "messages")
        if isinstance(items, str):
            return items
        if not isinstance(items, list):
            return ""
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role") == "user":
                return _text_of(item.get("content"))
        return ""


ScriptStep: TypeAlias = Reply | ErrorReply | str
"""One scripted answer; a plain ``str`` is shorthand for ``Reply(text=...)``."""

Script: TypeAlias = Sequence[ScriptStep] | Callable[[ReceivedRequest], ScriptStep]
"""Answers served in order (one per request, per server), or a function of the request."""


def echo(request: ReceivedRequest) -> Reply:
    """The default script: reply ``"echo: <last user text>"``."""
    return Reply(text=f"echo: {request.last_user_text}")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        )
    return ""


def _count_words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_count_words(item) for item in value.values())
    if isinstance(value, list):
        return sum(_count_words(item) for item in value)
    return 0


def _estimated_usage(request: ReceivedRequest, reply: Reply) -> ReplyUsage:
    prompt = sum(
        _count_words(request.json.get(key))
        for key in ("system", "instructions", "messages", "input")
    )
    completion = len(reply.text.split()) + sum(
        len(json.dumps(call.arguments).split()) for call in reply.tool_calls
    )
    return ReplyUsage(input_tokens=max(1, prompt), output_tokens=max(1, completion))


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Call:
    call_id: str
    item_id: str
    name: str
    arguments: str
    input: JSONObject


@dataclass(frozen=True)
class _Turn:
    """A reply with every id, default and derived value resolved."""

    id: str
    text_item_id: str
    model: str
    text: str
    calls: tuple[_Call, ...]
    usage: ReplyUsage
    finish: FinishReason
    chunk_size: int
    request: ReceivedRequest

    def pieces(self, text: str) -> list[str]:
        return [text[i : i + self.chunk_size] for i in range(0, len(text), self.chunk_size)]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(data: JSONObject, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + _dumps(data) + b"\n\n"


# OpenAI Chat Completions


def _chat_usage(usage: ReplyUsage) -> JSONObject:
    prompt_details: JSONObject = {"cached_tokens": usage.cache_read_input_tokens}
    if usage.cache_creation_input_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_creation_input_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _chat_body(turn: _Turn) -> JSONObject:
    message: JSONObject = {
        "role": "assistant",
        "content": turn.text if turn.text or not turn.calls else None,
        "refusal": None,
    }
    if turn.calls:
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in turn.calls
        ]
    return {
        "id": turn.id,
        "object": "chat.completion",
        "created": CREATED_AT,
        "model": turn.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": turn.finish}
        ],
        "usage": _chat_usage(turn.usage),
    }


def _chat_events(turn: _Turn) -> list[bytes]:
    options = turn.request.json.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    def chunk(delta: JSONObject, finish: str | None = None) -> bytes:
        data: JSONObject = {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": CREATED_AT,
            "model": turn.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            # The real API marks every chunk this way when usage was asked for.
            data["usage"] = None
        return _sse(data)

    events = [chunk({"role": "assistant", "content": "" if turn.text or not turn.calls else None})]
    events += [chunk({"content": piece}) for piece in turn.pieces(turn.text)]
    for index, call in enumerate(turn.calls):
        function = {"name": call.name, "arguments": ""}
        opening = {"index": index, "id": call.call_id, "type": "function", "function": function}
        events.append(chunk({"tool_calls": [opening]}))
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in turn.pieces(call.arguments)
        ]
    events.append(chunk({}, turn.finish))
    if include_usage:
        usage_chunk: JSONObject = {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": CREATED_AT,
            "model": turn.model,
            "choices": [],
            "usage": _chat_usage(turn.usage),
        }
        events.append(_sse(usage_chunk))
    events.append(b"data: [DONE]\n\n")
    return events


# OpenAI Responses


def _responses_usage(usage: ReplyUsage) -> JSONObject:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens,
            "cache_write_tokens": usage.cache_creation_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _responses_item_status(turn: _Turn) -> str:
    return "incomplete" if turn.finish == "length" else "completed"


def _responses_text_part(text: str) -> JSONObject:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _responses_message(turn: _Turn, *, done: bool) -> JSONObject:
    return {
        "id": turn.text_item_id,
        "type": "message",
        "role": "assistant",
        "status": _responses_item_status(turn) if done else "in_progress",
        "content": [_responses_text_part(turn.text)] if done else [],
    }


def _responses_call(turn: _Turn, call: _Call, *, done: bool) -> JSONObject:
    return {
        "id": call.item_id,
        "type": "function_call",
        "status": _responses_item_status(turn) if done else "in_progress",
        "arguments": call.arguments if done else "",
        "call_id": call.call_id,
        "name": call.name,
    }


def _responses_has_message(turn: _Turn) -> bool:
    return bool(turn.text) or not turn.calls


def _responses_body(turn: _Turn, *, done: bool = True) -> JSONObject:
    request = turn.request.json
    output: list[JSONObject] = []
    if done:
        if _responses_has_message(turn):
            output.append(_responses_message(turn, done=True))
        output += [_responses_call(turn, call, done=True) for call in turn.calls]
    status = ("incomplete" if turn.finish == "length" else "completed") if done else "in_progress"
    incomplete = {"reason": "max_output_tokens"} if done and turn.finish == "length" else None
    return {
        "id": turn.id,
        "object": "response",
        "created_at": CREATED_AT,
        "status": status,
        "completed_at": CREATED_AT if status == "completed" else None,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": turn.model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text", {"format": {"type": "text"}}),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_p": request.get("top_p", 1.0),
        "metadata": request.get("metadata", {}),
        "usage": _responses_usage(turn.usage) if done else None,
    }


def _responses_events(turn: _Turn) -> list[bytes]:
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(_sse({"type": kind, "sequence_number": len(events), **fields}, kind))

    emit("response.created", response=_responses_body(turn, done=False))
    emit("response.in_progress", response=_responses_body(turn, done=False))
    index = 0
    if _responses_has_message(turn):
        item_id = turn.text_item_id
        part = {"item_id": item_id, "output_index": index, "content_index": 0}
        emit(
            "response.output_item.added",
            output_index=index,
            item=_responses_message(turn, done=False),
        )
        emit("response.content_part.added", **part, part=_responses_text_part(""))
        for piece in turn.pieces(turn.text):
            emit("response.output_text.delta", **part, delta=piece, logprobs=[])
        emit("response.output_text.done", **part, text=turn.text, logprobs=[])
        emit("response.content_part.done", **part, part=_responses_text_part(turn.text))
        emit(
            "response.output_item.done",
            output_index=index,
            item=_responses_message(turn, done=True),
        )
        index += 1
    for call in turn.calls:
        where = {"item_id": call.item_id, "output_index": index}
        emit(
            "response.output_item.added",
            output_index=index,
            item=_responses_call(turn, call, done=False),
        )
        for piece in turn.pieces(call.arguments):
            emit("response.function_call_arguments.delta", **where, delta=piece)
        emit(
            "response.function_call_arguments.done",
            **where,
            name=call.name,
            arguments=call.arguments,
        )
        emit(
            "response.output_item.done",
            output_index=index,
            item=_responses_call(turn, call, done=True),
        )
        index += 1
    final = "response.incomplete" if turn.finish == "length" else "response.completed"
    emit(final, response=_responses_body(turn))
    return events


# Anthropic Messages

_ANTHROPIC_STOP: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
}


def _anthropic_usage(usage: ReplyUsage, *, output_tokens: int | None = None) -> JSONObject:
    uncached = (
        usage.input_tokens - usage.cache_read_input_tokens - usage.cache_creation_input_tokens
    )
    wire: JSONObject = {
        "input_tokens": uncached,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
    }
    if usage.reasoning_tokens:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return wire


def _anthropic_has_text(turn: _Turn) -> bool:
    return bool(turn.text) or not turn.calls


def _anthropic_message(turn: _Turn, *, done: bool = True) -> JSONObject:
    content: list[JSONObject] = []
    if done:
        if _anthropic_has_text(turn):
            content.append({"type": "text", "text": turn.text})
        content += [
            {"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.input}
            for call in turn.calls
        ]
    return {
        "id": turn.id,
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": content,
        "stop_reason": _ANTHROPIC_STOP[turn.finish] if done else None,
        "stop_sequence": None,
        # message_start carries a token of output so far, as the real API's does.
        "usage": _anthropic_usage(
            turn.usage, output_tokens=None if done else min(1, turn.usage.output_tokens)
        ),
    }


def _anthropic_events(turn: _Turn) -> list[bytes]:
    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append(_sse({"type": kind, **fields}, kind))

    emit("message_start", message=_anthropic_message(turn, done=False))
    emit("ping")
    index = 0
    if _anthropic_has_text(turn):
        emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
        for piece in turn.pieces(turn.text):
            emit("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        emit("content_block_stop", index=index)
        index += 1
    for call in turn.calls:
        block = {"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}}
        emit("content_block_start", index=index, content_block=block)
        for piece in ["", *turn.pieces(call.arguments)]:
            emit(
                "content_block_delta",
                index=index,
                delta={"type": "input_json_delta", "partial_json": piece},
            )
        emit("content_block_stop", index=index)
        index += 1
    emit(
        "message_delta",
        delta={"stop_reason": _ANTHROPIC_STOP[turn.finish], "stop_sequence": None},
        usage=_anthropic_usage(turn.usage),
    )
    emit("message_stop")
    return events


_RENDERERS: dict[Api, tuple[Callable[[_Turn], JSONObject], Callable[[_Turn], list[bytes]]]] = {
    "openai.chat": (_chat_body, _chat_events),
    "openai.responses": (_responses_body, _responses_events),
    "anthropic.messages": (_anthropic_message, _anthropic_events),
}


# Errors

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_body(api: Api | None, status: int, message: str, type_: str | None) -> JSONObject:
    if api == "anthropic.messages":
        default = _ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": type_ or default, "message": message}}
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
    default = (
        "server_error"
        if status >= 500
        else ("requests" if status == 429 else "invalid_request_error")
    )
    return {"error": {"message": message, "type": type_ or default, "param": None, "code": code}}


# --------------------------------------------------------------------------- HTTP


class _LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: ScriptedLLMServer) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall
        # for seconds on machines without reverse DNS; loopback needs no name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn does not keep daemon threads; keep them so stop() can join them.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"ScriptedLLMServer-conn-{client_address[1]}",
            daemon=True,
        )
        with self._lock:
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            self._handler_threads.append(thread)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal for a test server, not an error.
        pass

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Hang up on kept-alive clients so their handler threads end, then join them."""
        with self._lock:
            connections = list(self._connections)
            threads = list(self._handler_threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(_JOIN_TIMEOUT)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ScriptedLLMServer"
    sys_version = ""
    # Each SSE event is written and flushed on its own; do not let Nagle batch them.
    disable_nagle_algorithm = True

    @property
    def _http(self) -> _LoopbackHTTPServer:
        return cast(_LoopbackHTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        self._http.track(self.connection, open_=True)

    def finish(self) -> None:
        self._http.track(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            # Reset, broken pipe or our own shutdown during stop().
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        return email.utils.formatdate(CREATED_AT, usegmt=True)

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section ends at an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        owner = self._http.owner
        body = self._read_body()
        path = urlsplit(self.path).path
        api = _ROUTES.get(path) if self.command == "POST" else None
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = None
        request = ReceivedRequest(
            method=self.command,
            path=path,
            headers={name.lower(): value for name, value in self.headers.items()},
            json=parsed if isinstance(parsed, dict) else {},
            body=body,
            api=api,
        )
        owner._record(request)
        if api is None:
            served = ", ".join(f"POST {route}" for route in _ROUTES)
            message = f"ScriptedLLMServer does not serve {self.command} {path}; it serves {served}"
            self._send_json(404, _error_body(None, 404, message, None), {})
            return
        if not isinstance(parsed, dict):
            message = f"ScriptedLLMServer: the body of POST {path} is not a JSON object"
            self._send_json(400, _error_body(api, 400, message, None), {})
            return
        answer, request_id = owner._answer(request)
        id_header = {_REQUEST_ID_HEADERS[api]: request_id}
        if isinstance(answer, ErrorReply):
            body_json = _error_body(api, answer.status, answer.message, answer.type)
            self._send_json(answer.status, body_json, {**id_header, **answer.headers})
            return
        turn, delay = answer
        render_body, render_events = _RENDERERS[api]
        if request.stream:
            self._send_events(render_events(turn), id_header, delay, owner._stopping)
        else:
            self._send_json(200, render_body(turn), id_header)

    def _send_json(self, status: int, payload: JSONObject, headers: Mapping[str, str]) -> None:
        data = _dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_events(
        self,
        events: list[bytes],
        headers: Mapping[str, str],
        delay: float,
        stopping: threading.Event,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event in events:
            if delay and stopping.wait(delay):
                # stop() was called mid-stream: end at once, leaving the stream truncated.
                self.close_connection = True
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


# --------------------------------------------------------------------------- server


class ScriptedLLMServer:
    """An OpenAI- and Anthropic-compatible HTTP server on ``127.0.0.1`` that answers from a script.

    ``script`` is a sequence of answers served in order, one per request, or a function
    of the :class:`ReceivedRequest`; the default :func:`echo` answers ``"echo: <last
    user message>"``. A sequence that runs out answers HTTP 500 saying so.
    ``chunk_delay`` is the pause before each streamed event, in seconds, for
    time-to-first-token tests.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, script: Script | None = None, *, chunk_delay: float = 0.0) -> None:
        if chunk_delay < 0:
            raise ValueError(f"chunk_delay must not be negative, got {chunk_delay}")
        script = echo if script is None else script
        self._respond: Callable[[ReceivedRequest], ScriptStep] | None = None
        self._steps: tuple[ScriptStep, ...] = ()
        if callable(script):
            self._respond = script
        elif isinstance(script, (str, bytes)):
            raise TypeError("script must be a sequence of replies or a callable, not a str")
        else:
            self._steps = tuple(script)
        self.chunk_delay = chunk_delay
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._served = 0
        self._counters: dict[str, int] = {}
        self._stopping = threading.Event()
        self._httpd: _LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> ScriptedLLMServer:
        """Bind a free loopback port and serve in a background thread."""
        if self._httpd is not None:
            raise RuntimeError("ScriptedLLMServer is already running")
        self._stopping.clear()
        self._httpd = _LoopbackHTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"ScriptedLLMServer-{self._httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, hang up on open connections and join all threads. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(_JOIN_TIMEOUT)
        self._httpd = self._thread = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # addresses

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; only while running."""
        if self._httpd is None:
            raise RuntimeError(
                "ScriptedLLMServer is not running: use `with ScriptedLLMServer(...) as server:`"
                " or call start() first"
            )
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI`` (ends in ``/v1``)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The ``base_url`` for ``anthropic.Anthropic``."""
        return self.base_url

    # inspection

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def remaining(self) -> tuple[ScriptStep, ...]:
        """Scripted answers not served yet (always empty for a callable script)."""
        with self._lock:
            return self._steps[self._served :]

    # called by request handlers

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_id(self, prefix: str) -> str:
        self._counters[prefix] = count = self._counters.get(prefix, 0) + 1
        return f"{prefix}{count:04d}"

    def _answer(self, request: ReceivedRequest) -> tuple[ErrorReply | tuple[_Turn, float], str]:
        """The answer to a routed request and its request id.

        Ids are drawn under the lock so that a given sequence of requests always gets the
        same ids.
        """
        step = self._next_step(request)
        if isinstance(step, str):
            step = Reply(text=step)
        if not isinstance(step, (Reply, ErrorReply)):
            step = ErrorReply(
                500,
                "ScriptedLLMServer: a script step must be Reply, ErrorReply or str,"
                f" got {type(step).__name__}",
            )
        with self._lock:
            request_id = self._next_id("req_")
            if isinstance(step, ErrorReply):
                return step, request_id
            turn = self._resolve(step, request)
        delay = self.chunk_delay if step.chunk_delay is None else step.chunk_delay
        return (turn, delay), request_id

    def _next_step(self, request: ReceivedRequest) -> object:
        if self._respond is not None:
            try:
                return self._respond(request)
            except Exception as exc:
                return ErrorReply(
                    500, f"ScriptedLLMServer: the script raised {type(exc).__name__}: {exc}"
                )
        with self._lock:
            index = self._served
            if index >= len(self._steps):
                return ErrorReply(
                    500,
                    f"ScriptedLLMServer script ran out: request #{len(self._requests)}"
                    f" ({request.method} {request.path}) found no scripted reply left;"
                    f" the script had {len(self._steps)}. Add replies to the script.",
                )
            self._served += 1
            return self._steps[index]

    def _resolve(self, reply: Reply, request: ReceivedRequest) -> _Turn:
        api = cast(Api, request.api)
        calls = []
        for call in reply.tool_calls:
            call_id = call.id or self._next_id("toolu_" if api == "anthropic.messages" else "call_")
            item_id = self._next_id("fc_") if api == "openai.responses" else ""
            arguments = dict(call.arguments)
            calls.append(_Call(call_id, item_id, call.name, json.dumps(arguments), arguments))
        turn_id = self._next_id(_ID_PREFIXES[api])
        text_item_id = self._next_id("msg_") if api == "openai.responses" else ""
        return _Turn(
            id=turn_id,
            text_item_id=text_item_id,
            model=reply.model or request.model or _DEFAULT_MODEL,
            text=reply.text,
            calls=tuple(calls),
            usage=reply.usage or _estimated_usage(request, reply),
            finish=reply.finish_reason or ("tool_calls" if calls else "stop"),
            chunk_size=reply.chunk_size,
            request=request,
        )
