"""Provider adapters against realistic wire payloads (shapes from the SDKs' type definitions).

Every stream fixture says the same thing as its JSON sibling, so a streamed and a
non-streamed call normalize alike (``chunks`` aside). The SDK tests at the end send
the fixtures through the real SDKs over an in-memory transport, to check that the
payloads are ones the SDKs accept and that we read them as the SDKs do.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmwb.adapters import (
    ADAPTERS,
    AdapterError,
    AnthropicMessagesAdapter,
    OpenAIChatAdapter,
    OpenAIResponsesAdapter,
    ProviderAdapter,
    find_adapter,
)
from pytest_llmwb.schema import ErrorInfo, Message, ModelResponse, ToolCall, ToolSpec, Usage

CHAT = OpenAIChatAdapter()
RESPONSES = OpenAIResponsesAdapter()
ANTHROPIC = AnthropicMessagesAdapter()
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string"}},
    "required": ["location"],
    "additionalProperties": False,
}


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def sse(events: list[tuple[str | None, Any]]) -> bytes:
    """Event-stream bytes; ``None`` names give OpenAI's bare ``data:`` events."""
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {text}\n\n")
    return "".join(out).encode()


def without_chunks(response: ModelResponse | None) -> ModelResponse | None:
    return response.model_copy(update={"chunks": None}) if response is not None else None


# --- OpenAI Chat Completions -----------------------------------------------------------

CHAT_REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "You are a weather bot."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "18C and sunny"},
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "And here?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": WEATHER_SCHEMA,
                "strict": True,
            },
        }
    ],
    "tool_choice": "auto",
    "temperature": 0.2,
    "top_p": 0.9,
    "max_completion_tokens": 256,
    "seed": 7,
    "stop": "END",
    "frequency_penalty": 0.1,
    "presence_penalty": 0.0,
    "response_format": {"type": "json_object"},
    "reasoning_effort": "low",
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "u-1",
    "parallel_tool_calls": False,
    "logit_bias": None,
}

_CHAT_HEAD = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}
CHAT_USAGE = {
    "prompt_tokens": 1117,
    "completion_tokens": 46,
    "total_tokens": 1163,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 12,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CHAT_TEXT_JSON = {
    **_CHAT_HEAD,
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Paris is sunny, 18C.",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": CHAT_USAGE,
}
CHAT_TOOLS_JSON = {
    **_CHAT_HEAD,
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "call_paris",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "call_tokyo",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Tokyo"}'},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": CHAT_USAGE,
}


def _chat_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        **_CHAT_HEAD,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        "obfuscation": "x7Q",
        **extra,
    }


_CHAT_USAGE_CHUNK = {
    **_CHAT_HEAD,
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": CHAT_USAGE,
}
CHAT_TEXT_DELTAS = ["Paris", " is sunny", ", 18C."]
CHAT_TEXT_STREAM = sse(
    [
        (None, _chat_chunk({"role": "assistant", "content": "", "refusal": None})),
        *[(None, _chat_chunk({"content": text})) for text in CHAT_TEXT_DELTAS],
        (None, _chat_chunk({}, "stop")),
        (None, _CHAT_USAGE_CHUNK),
        (None, "[DONE]"),
    ]
)


def _chat_call_delta(index: int, arguments: str, **head: Any) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, **head, "function": {"arguments": arguments}}
    if "name" in head:
        fragment["function"]["name"] = fragment.pop("name")
    return {"tool_calls": [fragment]}


CHAT_TOOLS_STREAM = sse(
    [
        (None, _chat_chunk({"role": "assistant", "content": None, "refusal": None})),
        (
            None,
            _chat_chunk(
                _chat_call_delta(0, "", id="call_paris", type="function", name="get_weather")
            ),
        ),
        (None, _chat_chunk(_chat_call_delta(0, '{"loca'))),
        (None, _chat_chunk(_chat_call_delta(0, 'tion": "Paris"}'))),
        (
            None,
            _chat_chunk(
                _chat_call_delta(1, "", id="call_tokyo", type="function", name="get_weather")
            ),
        ),
        (None, _chat_chunk(_chat_call_delta(1, '{"location": "Tokyo"}'))),
        (None, _chat_chunk({}, "tool_calls")),
        (None, _CHAT_USAGE_CHUNK),
        (None, "[DONE]"),
    ]
)


def test_chat_request_normalization() -> None:
    request = CHAT.parse_request(CHAT_REQUEST)
    assert request.model == "gpt-4o"
    assert request.system is None
    assert request.messages == [
        Message(role="developer", content="You are a weather bot."),
        Message(role="user", content="Weather in Paris?"),
        Message(
            role="assistant",
            tool_calls=[
                ToolCall(id="call_abc", name="get_weather", arguments={"location": "Paris"})
            ],
        ),
        Message(role="tool", content="18C and sunny", tool_call_id="call_abc"),
        Message(role="user", name="ann", content=CHAT_REQUEST["messages"][4]["content"]),
    ]
    assert request.tools == [
        ToolSpec(name="get_weather", description="Current weather", parameters=WEATHER_SCHEMA)
    ]
    assert request.params == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 256,
        "seed": 7,
        "stop_sequences": ["END"],
        "frequency_penalty": 0.1,
        "presence_penalty": 0.0,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "reasoning": {"effort": "low"},
    }
    assert request.stream is True
    assert request.extra == {
        "stream_options": {"include_usage": True},
        "user": "u-1",
        "parallel_tool_calls": False,
        "tool_fields": {"0": {"strict": True}},
    }


def test_chat_request_keeps_both_max_tokens_and_odd_tool_calls() -> None:
    body = {
        "model": "gpt-4o",
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "stop": ["a", "b"],
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "f", "arguments": "not json"},
                    },
                ],
            }
        ],
        "tools": [{"type": "custom", "custom": {"name": "sql", "format": {"type": "text"}}}],
    }
    request = CHAT.parse_request(body)
    assert request.params == {"max_tokens": 20, "stop_sequences": ["a", "b"]}
    assert request.extra["max_tokens"] == 10
    assert request.messages[0].tool_calls == [
        ToolCall(id="c1", name="sql", arguments="SELECT 1"),
        ToolCall(id="c2", name="f", arguments="not json"),
    ]
    assert request.extra["message_fields"] == {"0": {"tool_call_fields": [{"type": "custom"}, {}]}}
    assert request.tools == [ToolSpec(name="sql")]
    assert request.extra["tool_fields"] == {"0": {"format": {"type": "text"}, "type": "custom"}}


def test_chat_text_response() -> None:
    response, error = CHAT.parse_response(200, dumps(CHAT_TEXT_JSON), JSON_TYPE)
    assert error is None
    assert response == ModelResponse(
        id="chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        model="gpt-4o-2024-08-06",
        content="Paris is sunny, 18C.",
        finish_reason="stop",
        usage=Usage(
            input_tokens=1117,
            output_tokens=46,
            cache_read_input_tokens=1024,
            reasoning_output_tokens=12,
            raw=CHAT_USAGE,
        ),
        extra={
            "finish_reason": "stop",
            "service_tier": "default",
            "system_fingerprint": "fp_fc9f1d7035",
        },
    )


def test_chat_tool_call_response() -> None:
    response, error = CHAT.parse_response(200, dumps(CHAT_TOOLS_JSON), JSON_TYPE)
    assert error is None and response is not None
    assert response.content is None
    assert response.finish_reason == "tool_call"
    assert response.extra["finish_reason"] == "tool_calls"
    assert response.tool_calls == [
        ToolCall(id="call_paris", name="get_weather", arguments={"location": "Paris"}),
        ToolCall(id="call_tokyo", name="get_weather", arguments={"location": "Tokyo"}),
    ]
    # arguments cut off (finish_reason "length") are kept as sent
    cut = json.loads(json.dumps(CHAT_TOOLS_JSON))
    cut["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] = '{"location": "Tok'
    cut["choices"][0]["finish_reason"] = "length"
    response, _ = CHAT.parse_response(200, dumps(cut), JSON_TYPE)
    assert response is not None
    assert response.finish_reason == "length"
    assert response.tool_calls[1].arguments == '{"location": "Tok'


@pytest.mark.parametrize(
    ("stream", "body"),
    [(CHAT_TEXT_STREAM, CHAT_TEXT_JSON), (CHAT_TOOLS_STREAM, CHAT_TOOLS_JSON)],
    ids=["text", "tools"],
)
def test_chat_stream_equals_the_json_response(stream: bytes, body: dict[str, Any]) -> None:
    streamed, error = CHAT.parse_response(200, stream, SSE_TYPE)
    assert error is None and streamed is not None
    plain, _ = CHAT.parse_response(200, dumps(body), JSON_TYPE)
    assert without_chunks(streamed) == plain
    expected_chunks = CHAT_TEXT_DELTAS if stream is CHAT_TEXT_STREAM else []
    assert streamed.chunks == expected_chunks


def test_chat_stream_with_several_choices() -> None:
    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c",
            "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }

    stream = sse(
        [
            (None, chunk(1, {"role": "assistant", "content": "B"})),
            (None, chunk(0, {"role": "assistant", "content": "A"})),
            (None, chunk(0, {"content": "a"}, "stop")),
            (None, chunk(1, {"content": "b"}, "length")),
            (None, "[DONE]"),
        ]
    )
    response, _ = CHAT.parse_response(200, stream, "text/event-stream")
    assert response is not None
    assert (response.content, response.chunks, response.finish_reason) == ("Aa", ["A", "a"], "stop")
    [other] = response.extra["choices"]
    assert other["message"]["content"] == "Bb"
    assert other["finish_reason"] == "length"


def test_chat_stream_error_chunk_keeps_the_partial_response() -> None:
    stream = sse(
        [
            (None, _chat_chunk({"role": "assistant", "content": "Par"})),
            (None, {"error": {"message": "The server had an error", "type": "server_error"}}),
        ]
    )
    response, error = CHAT.parse_response(200, stream, SSE_TYPE)
    assert error == ErrorInfo(type="server_error", message="The server had an error")
    assert response is not None and response.content == "Par"
    assert response.finish_reason is None


# --- OpenAI Responses ------------------------------------------------------------------

RESPONSES_REQUEST: dict[str, Any] = {
    "model": "gpt-5",
    "instructions": "You are a weather bot.",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB"},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"location":"Paris"}',
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "It is 18C.", "annotations": []}],
        },
        {"role": "user", "content": "Tomorrow?"},
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Current weather",
            "parameters": WEATHER_SCHEMA,
            "strict": True,
        },
        {"type": "web_search"},
    ],
    "tool_choice": "auto",
    "max_output_tokens": 500,
    "reasoning": {"effort": "low", "summary": "auto"},
    "text": {
        "format": {"type": "json_schema", "name": "weather", "schema": WEATHER_SCHEMA},
        "verbosity": "low",
    },
    "temperature": 1.0,
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "previous_response_id": None,
    "stream": True,
}

RESPONSES_USAGE = {
    "input_tokens": 328,
    "input_tokens_details": {"cached_tokens": 256},
    "output_tokens": 52,
    "output_tokens_details": {"reasoning_tokens": 32},
    "total_tokens": 380,
}
_RESPONSE_HEAD = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "error": None,
    "incomplete_details": None,
    "instructions": "You are a weather bot.",
    "max_output_tokens": 500,
    "model": "gpt-5-2025-08-07",
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": "low", "summary": None},
    "store": False,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}
REASONING_ITEM = {"type": "reasoning", "id": "rs_2", "summary": []}
MESSAGE_ITEM = {
    "type": "message",
    "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
    "status": "completed",
    "role": "assistant",
    "content": [
        {"type": "output_text", "text": "Paris is sunny, 18C.", "annotations": [], "logprobs": []}
    ],
}
CALL_ITEM = {
    "type": "function_call",
    "id": "fc_67ca09c6bedc8190a7abfec07b1a1332",
    "call_id": "call_unLAR8MvFNptuiZK6K6HCy5k",
    "name": "get_weather",
    "arguments": '{"location":"Paris"}',
    "status": "completed",
}
RESPONSES_TEXT_JSON = {
    **_RESPONSE_HEAD,
    "status": "completed",
    "output": [REASONING_ITEM, MESSAGE_ITEM],
    "usage": RESPONSES_USAGE,
}
RESPONSES_TOOLS_JSON = {
    **_RESPONSE_HEAD,
    "status": "completed",
    "output": [REASONING_ITEM, CALL_ITEM],
    "usage": RESPONSES_USAGE,
}


def _responses_stream(final: dict[str, Any], *, keep_done: bool = True) -> bytes:
    """The events the Responses API sends for ``final``, item by item."""
    seq = iter(range(1000))
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str | None, Any]] = [
        (
            "response.created",
            {"type": "response.created", "sequence_number": next(seq), "response": start},
        ),
        (
            "response.in_progress",
            {"type": "response.in_progress", "sequence_number": next(seq), "response": start},
        ),
    ]

    def add(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(seq), **fields}))

    for index, item in enumerate(final["output"]):
        ids = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            add(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = item["content"][0]
            add("response.content_part.added", **ids, content_index=0, part={**part, "text": ""})
            text = part["text"]
            for piece in (text[:5], text[5:11], text[11:]):
                add("response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[])
            add("response.output_text.done", **ids, content_index=0, text=text, logprobs=[])
            add("response.content_part.done", **ids, content_index=0, part=part)
        elif item["type"] == "function_call":
            add(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            arguments = item["arguments"]
            for piece in (arguments[:4], arguments[4:9], arguments[9:]):
                add("response.function_call_arguments.delta", **ids, delta=piece)
            add("response.function_call_arguments.done", **ids, arguments=arguments)
        else:
            add("response.output_item.added", output_index=index, item=item)
        if keep_done:
            add("response.output_item.done", output_index=index, item=item)
    add(f"response.{final['status']}", response=final)
    return sse(events)


RESPONSES_TEXT_STREAM = _responses_stream(RESPONSES_TEXT_JSON)
RESPONSES_TOOLS_STREAM = _responses_stream(RESPONSES_TOOLS_JSON)


def test_responses_request_normalization() -> None:
    request = RESPONSES.parse_request(RESPONSES_REQUEST)
    assert request.model == "gpt-5"
    assert request.system == "You are a weather bot."
    assert request.messages == [
        Message(role="user", content="Weather in Paris?"),
        Message(role="reasoning", content=RESPONSES_REQUEST["input"][1]),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="call_1", name="get_weather", arguments={"location": "Paris"})],
        ),
        Message(role="tool", content="18C", tool_call_id="call_1"),
        Message(role="assistant", content="It is 18C."),
        Message(role="user", content="Tomorrow?"),
    ]
    assert request.tools == [
        ToolSpec(name="get_weather", description="Current weather", parameters=WEATHER_SCHEMA),
        ToolSpec(name="web_search"),
    ]
    assert request.params == {
        "temperature": 1.0,
        "max_tokens": 500,
        "tool_choice": "auto",
        "reasoning": {"effort": "low", "summary": "auto"},
        "response_format": RESPONSES_REQUEST["text"]["format"],
    }
    assert request.stream is True
    assert request.extra == {
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
        "message_fields": {
            "2": {"id": "fc_1", "status": "completed"},
            "4": {"id": "msg_1", "status": "completed"},
        },
        "tool_fields": {"0": {"strict": True}, "1": {"type": "web_search"}},
    }


def test_responses_string_input_is_one_user_message() -> None:
    request = RESPONSES.parse_request({"model": "gpt-5", "input": "hi"})
    assert request.messages == [Message(role="user", content="hi")]
    assert (request.params, request.extra, request.stream) == ({}, {}, False)
    # the same conversation as an item list normalizes alike
    items = {
        "model": "gpt-5",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
    }
    assert RESPONSES.parse_request(items) == request


def test_responses_text_response() -> None:
    response, error = RESPONSES.parse_response(200, dumps(RESPONSES_TEXT_JSON), JSON_TYPE)
    assert error is None
    assert response == ModelResponse(
        id=RESPONSES_TEXT_JSON["id"],
        model="gpt-5-2025-08-07",
        content="Paris is sunny, 18C.",
        finish_reason="stop",
        usage=Usage(
            input_tokens=328,
            output_tokens=52,
            cache_read_input_tokens=256,
            reasoning_output_tokens=32,
            raw=RESPONSES_USAGE,
        ),
        extra={"status": "completed", "output": [REASONING_ITEM]},
    )


def test_responses_tool_call_response() -> None:
    response, error = RESPONSES.parse_response(200, dumps(RESPONSES_TOOLS_JSON), JSON_TYPE)
    assert error is None and response is not None
    assert response.content is None
    assert response.finish_reason == "tool_call"
    assert response.tool_calls == [
        ToolCall(
            id="call_unLAR8MvFNptuiZK6K6HCy5k", name="get_weather", arguments={"location": "Paris"}
        )
    ]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("max_output_tokens", "length"), ("content_filter", "content_filter"), (None, "incomplete")],
)
def test_responses_incomplete_finish_reasons(reason: str | None, expected: str) -> None:
    body = {**RESPONSES_TEXT_JSON, "status": "incomplete", "incomplete_details": {"reason": reason}}
    response, _ = RESPONSES.parse_response(200, dumps(body), JSON_TYPE)
    assert response is not None
    assert response.finish_reason == expected
    assert response.extra["status"] == "incomplete"


@pytest.mark.parametrize("keep_done", [True, False], ids=["done-items", "deltas-only"])
@pytest.mark.parametrize("body", [RESPONSES_TEXT_JSON, RESPONSES_TOOLS_JSON], ids=["text", "tools"])
def test_responses_stream_equals_the_json_response(body: dict[str, Any], keep_done: bool) -> None:
    streamed, error = RESPONSES.parse_response(
        200, _responses_stream(body, keep_done=keep_done), SSE_TYPE
    )
    assert error is None and streamed is not None
    plain, _ = RESPONSES.parse_response(200, dumps(body), JSON_TYPE)
    assert without_chunks(streamed) == plain
    expected = ["Paris", " is su", "nny, 18C."] if body is RESPONSES_TEXT_JSON else []
    assert streamed.chunks == expected


def test_responses_failed_stream_gives_response_and_error() -> None:
    failed = {
        **RESPONSES_TEXT_JSON,
        "status": "failed",
        "error": {"code": "server_error", "message": "The model failed."},
    }
    response, error = RESPONSES.parse_response(200, _responses_stream(failed), SSE_TYPE)
    assert error == ErrorInfo(type="server_error", message="The model failed.")
    assert response is not None and response.finish_reason == "error"


def test_responses_error_event_keeps_the_text_so_far() -> None:
    stream = RESPONSES_TEXT_STREAM.split(b"event: response.output_text.done")[0] + sse(
        [
            (
                "error",
                {
                    "type": "error",
                    "code": "server_error",
                    "message": "Oops",
                    "param": None,
                    "sequence_number": 9,
                },
            )
        ]
    )
    response, error = RESPONSES.parse_response(200, stream, SSE_TYPE)
    assert error == ErrorInfo(type="server_error", message="Oops")
    assert response is not None
    assert response.content == "Paris is sunny, 18C."
    assert response.finish_reason is None  # still in_progress when it failed


# --- Anthropic Messages ----------------------------------------------------------------

ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 1024,
    "system": [
        {"type": "text", "text": "You are a weather bot.", "cache_control": {"type": "ephemeral"}}
    ],
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCgIYAh"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "get_weather",
                    "input": {"location": "Oslo"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01",
                    "content": [{"type": "text", "text": "18C"}],
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": "timeout",
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks. Tomorrow?"},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": WEATHER_SCHEMA,
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "tool_choice": {"type": "auto"},
    "temperature": 0.5,
    "top_k": 40,
    "top_p": 0.95,
    "stop_sequences": ["END"],
    "thinking": {"type": "enabled", "budget_tokens": 512},
    "metadata": {"user_id": "u-1"},
    "stream": False,
}

ANTHROPIC_USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 2000,
    "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 90,
    "output_tokens_details": {"thinking_tokens": 40},
    "service_tier": "standard",
}
_MESSAGE_HEAD = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6-20260217",
    "stop_sequence": None,
}
THINKING_BLOCK = {
    "type": "thinking",
    "thinking": "Use the weather tool.",
    "signature": "EqQBCgIYAhIM",
}
ANTHROPIC_TEXT_JSON = {
    **_MESSAGE_HEAD,
    "content": [{"type": "text", "text": "Paris is sunny, 18C."}],
    "stop_reason": "end_turn",
    "usage": ANTHROPIC_USAGE,
}
ANTHROPIC_TOOLS_JSON = {
    **_MESSAGE_HEAD,
    "content": [
        THINKING_BLOCK,
        {"type": "text", "text": "Let me check."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
    ],
    "stop_reason": "tool_use",
    "usage": ANTHROPIC_USAGE,
}


def _anthropic_stream(final: dict[str, Any], *, stop: bool = True) -> bytes:
    """The events the Messages API sends for ``final``."""
    start_usage = {**final["usage"], "output_tokens": 1}
    start = {
        **final,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]

    def add(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, **fields}))

    for index, block in enumerate(final["content"]):
        if block["type"] == "text":
            add("content_block_start", index=index, content_block={"type": "text", "text": ""})
            add("ping")
            text = block["text"]
            for piece in (text[:5], text[5:11], text[11:]):
                add("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
        elif block["type"] == "thinking":
            add(
                "content_block_start",
                index=index,
                content_block={"type": "thinking", "thinking": "", "signature": ""},
            )
            thinking = block["thinking"]
            for piece in (thinking[:7], thinking[7:]):
                add(
                    "content_block_delta",
                    index=index,
                    delta={"type": "thinking_delta", "thinking": piece},
                )
            add(
                "content_block_delta",
                index=index,
                delta={"type": "signature_delta", "signature": block["signature"]},
            )
        elif block["type"] == "tool_use":
            add("content_block_start", index=index, content_block={**block, "input": {}})
            arguments = json.dumps(block["input"])
            for piece in ("", arguments[:6], arguments[6:]):
                add(
                    "content_block_delta",
                    index=index,
                    delta={"type": "input_json_delta", "partial_json": piece},
                )
        add("content_block_stop", index=index)
    add(
        "message_delta",
        delta={"stop_reason": final["stop_reason"], "stop_sequence": final["stop_sequence"]},
        usage={"output_tokens": final["usage"]["output_tokens"], "input_tokens": None},
    )
    if stop:
        add("message_stop")
    return sse(events)


ANTHROPIC_TEXT_STREAM = _anthropic_stream(ANTHROPIC_TEXT_JSON)
ANTHROPIC_TOOLS_STREAM = _anthropic_stream(ANTHROPIC_TOOLS_JSON)


def test_anthropic_request_normalization() -> None:
    request = ANTHROPIC.parse_request(ANTHROPIC_REQUEST)
    assert request.model == "claude-sonnet-4-6"
    assert request.system == "You are a weather bot."
    assistant = ANTHROPIC_REQUEST["messages"][1]["content"]
    assert request.messages == [
        Message(role="user", content="Weather in Paris?"),
        Message(
            role="assistant",
            content=assistant[:2],
            tool_calls=[
                ToolCall(id="toolu_01", name="get_weather", arguments={"location": "Paris"}),
                ToolCall(id="toolu_02", name="get_weather", arguments={"location": "Oslo"}),
            ],
        ),
        Message(role="tool", content="18C", tool_call_id="toolu_01"),
        Message(role="tool", content="timeout", tool_call_id="toolu_02"),
        Message(role="user", content="Thanks. Tomorrow?"),
    ]
    assert request.tools == [
        ToolSpec(name="get_weather", description="Current weather", parameters=WEATHER_SCHEMA),
        ToolSpec(name="web_search"),
    ]
    assert request.params == {
        "temperature": 0.5,
        "top_p": 0.95,
        "top_k": 40,
        "max_tokens": 1024,
        "stop_sequences": ["END"],
        "tool_choice": {"type": "auto"},
        "reasoning": {"type": "enabled", "budget_tokens": 512},
    }
    assert request.stream is False
    assert request.extra == {
        "metadata": {"user_id": "u-1"},
        "system": ANTHROPIC_REQUEST["system"],
        "message_fields": {"3": {"is_error": True}},
        "tool_fields": {
            "0": {"cache_control": {"type": "ephemeral"}},
            "1": {"type": "web_search_20250305", "max_uses": 3},
        },
    }


def test_anthropic_plain_system_and_structured_output() -> None:
    request = ANTHROPIC.parse_request(
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 5,
            "system": [{"type": "text", "text": "Be terse."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "output_config": {
                "format": {"type": "json_schema", "schema": WEATHER_SCHEMA},
                "effort": "low",
            },
        }
    )
    assert request.system == "Be terse."
    assert request.messages == [Message(role="user", content="hi")]
    assert request.params["response_format"] == {"type": "json_schema", "schema": WEATHER_SCHEMA}
    assert request.extra == {"output_config": {"effort": "low"}}


def test_anthropic_text_response() -> None:
    response, error = ANTHROPIC.parse_response(200, dumps(ANTHROPIC_TEXT_JSON), JSON_TYPE)
    assert error is None
    assert response == ModelResponse(
        id="msg_01XFDUDYJgAACzvnptvVoYEL",
        model="claude-sonnet-4-6-20260217",
        content="Paris is sunny, 18C.",
        finish_reason="stop",
        usage=Usage(
            input_tokens=2112,  # 12 uncached + 2000 read + 100 written
            output_tokens=90,
            cache_read_input_tokens=2000,
            cache_creation_input_tokens=100,
            reasoning_output_tokens=40,
            raw=ANTHROPIC_USAGE,
        ),
        extra={"stop_reason": "end_turn"},
    )


def test_anthropic_tool_use_response() -> None:
    response, error = ANTHROPIC.parse_response(200, dumps(ANTHROPIC_TOOLS_JSON), JSON_TYPE)
    assert error is None and response is not None
    assert response.content == "Let me check."
    assert response.finish_reason == "tool_call"
    assert response.tool_calls == [
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9", name="get_weather", arguments={"location": "Paris"}
        )
    ]
    assert response.extra == {"stop_reason": "tool_use", "content": [THINKING_BLOCK]}


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "pause_turn"),
    ],
)
def test_anthropic_stop_reasons(stop_reason: str, expected: str) -> None:
    body = {**ANTHROPIC_TEXT_JSON, "stop_reason": stop_reason}
    response, _ = ANTHROPIC.parse_response(200, dumps(body), JSON_TYPE)
    assert response is not None
    assert (response.finish_reason, response.extra["stop_reason"]) == (expected, stop_reason)


@pytest.mark.parametrize(
    ("stream", "body"),
    [(ANTHROPIC_TEXT_STREAM, ANTHROPIC_TEXT_JSON), (ANTHROPIC_TOOLS_STREAM, ANTHROPIC_TOOLS_JSON)],
    ids=["text", "tools"],
)
def test_anthropic_stream_equals_the_json_response(stream: bytes, body: dict[str, Any]) -> None:
    streamed, error = ANTHROPIC.parse_response(200, stream, SSE_TYPE)
    assert error is None and streamed is not None
    plain, _ = ANTHROPIC.parse_response(200, dumps(body), JSON_TYPE)
    assert without_chunks(streamed) == plain
    expected = (
        ["Paris", " is su", "nny, 18C."]
        if body is ANTHROPIC_TEXT_JSON
        else ["Let m", "e chec", "k."]
    )
    assert streamed.chunks == expected


def test_anthropic_stream_error_event_keeps_the_partial_message() -> None:
    stream = ANTHROPIC_TEXT_STREAM.split(b"event: content_block_stop")[0] + sse(
        [
            (
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
        ]
    )
    response, error = ANTHROPIC.parse_response(200, stream, SSE_TYPE)
    assert error == ErrorInfo(type="overloaded_error", message="Overloaded")
    assert response is not None
    assert (response.content, response.finish_reason) == ("Paris is sunny, 18C.", None)
    assert response.usage.output_tokens == 1


def test_anthropic_stream_with_invalid_tool_json_keeps_the_string() -> None:
    stream = ANTHROPIC_TOOLS_STREAM.replace(
        b'"partial_json": "tion\\": \\"Paris\\"}"', b'"partial_json": "tion\\": \\"Par"'
    )
    assert stream != ANTHROPIC_TOOLS_STREAM
    response, _ = ANTHROPIC.parse_response(200, stream, SSE_TYPE)
    assert response is not None
    assert response.tool_calls[0].arguments == '{"location": "Par'


def test_anthropic_stream_with_server_tools_and_citations() -> None:
    citation = {
        "type": "web_search_result_location",
        "url": "https://example.com",
        "cited_text": "18C",
    }
    server_call = {
        "type": "server_tool_use",
        "id": "srvtoolu_01",
        "name": "web_search",
        "input": {},
    }
    start = {**ANTHROPIC_TEXT_JSON, "content": [], "stop_reason": None}

    def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, **fields}

    stream = sse(
        [
            event("message_start", message=start),
            event("content_block_start", index=0, content_block=server_call),
            event(
                "content_block_delta",
                index=0,
                delta={"type": "input_json_delta", "partial_json": '{"query": "paris"}'},
            ),
            event("content_block_stop", index=0),
            event(
                "content_block_start",
                index=1,
                content_block={"type": "text", "text": "", "citations": None},
            ),
            event(
                "content_block_delta",
                index=1,
                delta={"type": "citations_delta", "citation": citation},
            ),
            event("content_block_delta", index=1, delta={"type": "text_delta", "text": "18C"}),
            event("content_block_stop", index=1),
            event(
                "message_delta",
                delta={"stop_reason": "end_turn", "stop_sequence": None},
                usage={"output_tokens": 9},
            ),
            event("message_stop"),
            (None, "[DONE]"),
        ]
    )
    response, error = ANTHROPIC.parse_response(200, stream, SSE_TYPE)
    assert error is None and response is not None
    assert (response.content, response.tool_calls) == ("18C", [])
    assert response.extra["content"] == [{**server_call, "input": {"query": "paris"}}]
    assert response.extra["citations"] == [citation]


def test_anthropic_message_with_empty_content_is_kept() -> None:
    request = ANTHROPIC.parse_request({"model": "m", "messages": [{"role": "user", "content": []}]})
    assert request.messages == [Message(role="user", content=[])]


def test_chat_legacy_function_call() -> None:
    body = {
        "id": "c",
        "model": "gpt-3.5-turbo",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": "{}"},
                },
                "finish_reason": "function_call",
            }
        ],
    }
    response, _ = CHAT.parse_response(200, dumps(body), JSON_TYPE)
    assert response is not None
    assert (response.tool_calls, response.finish_reason) == (
        [ToolCall(name="f", arguments={})],
        "tool_call",
    )


# --- errors and malformed payloads -----------------------------------------------------

OPENAI_401 = {
    "error": {
        "message": "Incorrect API key provided: sk-abc. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
OPENAI_404 = {
    "error": {
        "message": "The model `gpt-9` does not exist",
        "type": None,
        "param": None,
        "code": "model_not_found",
    }
}
ANTHROPIC_529 = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "Overloaded"},
    "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
}


@pytest.mark.parametrize(
    ("adapter", "status", "body", "expected"),
    [
        (
            CHAT,
            401,
            OPENAI_401,
            ErrorInfo(type="invalid_request_error", message=OPENAI_401["error"]["message"]),
        ),
        (
            RESPONSES,
            404,
            OPENAI_404,
            ErrorInfo(type="model_not_found", message="The model `gpt-9` does not exist"),
        ),
        (ANTHROPIC, 529, ANTHROPIC_529, ErrorInfo(type="overloaded_error", message="Overloaded")),
        (ANTHROPIC, 400, {"detail": "bad"}, ErrorInfo(type="http_400", message='{"detail":"bad"}')),
    ],
)
def test_error_bodies(
    adapter: ProviderAdapter, status: int, body: Any, expected: ErrorInfo
) -> None:
    assert adapter.parse_response(status, dumps(body), JSON_TYPE) == (None, expected)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.api)
@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, b"<html><body>502 Bad Gateway</body></html>", "text/html"),
        (200, b"", JSON_TYPE),
        (200, b"OK", "text/plain"),
        (200, b"data: {not json}\n\n", SSE_TYPE),
        (200, b"[1, 2]", JSON_TYPE),
    ],
)
def test_unparseable_bodies_raise_adapter_error(
    adapter: ProviderAdapter, status: int, body: bytes, content_type: str
) -> None:
    with pytest.raises(AdapterError, match=rf"{adapter.api} response \(HTTP {status}") as excinfo:
        adapter.parse_response(status, body, content_type)
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(
    ("adapter", "stream"),
    [
        (CHAT, CHAT_TOOLS_STREAM),
        (RESPONSES, RESPONSES_TOOLS_STREAM),
        (ANTHROPIC, ANTHROPIC_TOOLS_STREAM),
    ],
    ids=["chat", "responses", "anthropic"],
)
def test_truncated_streams_raise_adapter_error(adapter: ProviderAdapter, stream: bytes) -> None:
    ends = [i + 2 for i in range(len(stream)) if stream.startswith(b"\n\n", i)]
    assert ends[-1] == len(stream)
    for cut in range(1, len(stream), 7):
        message = "truncated" if cut not in ends else "ended without"
        with pytest.raises(AdapterError, match=message):
            adapter.parse_response(200, stream[:cut], SSE_TYPE)
    for cut in ends[:-1]:  # whole events, but the terminal one is missing
        with pytest.raises(AdapterError, match=r"ended without|has no"):
            adapter.parse_response(200, stream[:cut], SSE_TYPE)


def test_sse_body_without_an_event_stream_content_type_is_sniffed() -> None:
    response, _ = ANTHROPIC.parse_response(200, ANTHROPIC_TEXT_STREAM, "")
    assert response is not None and response.chunks is not None


@pytest.mark.parametrize(
    ("adapter", "body", "match"),
    [
        (CHAT, [], "must be a JSON object"),
        (CHAT, {"messages": []}, "no 'model'"),
        (CHAT, {"model": "m", "messages": {"role": "user"}}, "messages must be a JSON array"),
        (CHAT, {"model": "m", "messages": [{"content": "x"}]}, r"messages\[0\] has no 'role'"),
        (RESPONSES, {"model": "m", "input": [{"content": "x"}]}, "neither a 'type' nor a 'role'"),
        (
            ANTHROPIC,
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_use"}]}]},
            "no 'name'",
        ),
        (ANTHROPIC, {"model": "m", "messages": [{"role": 3, "content": "x"}]}, "no 'role'"),
    ],
)
def test_malformed_requests_raise_adapter_error(
    adapter: ProviderAdapter, body: Any, match: str
) -> None:
    with pytest.raises(AdapterError, match=match):
        adapter.parse_request(body)


# --- registry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "host", "path", "expected"),
    [
        ("POST", "api.openai.com", "/v1/chat/completions", CHAT),
        ("post", "127.0.0.1:8765", "/v1/responses?stream=true", RESPONSES),
        ("POST", "api.anthropic.com", "/v1/messages", ANTHROPIC),
        (
            "POST",
            "x.openai.azure.com",
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            CHAT,
        ),
        ("GET", "api.openai.com", "/v1/responses/resp_1", None),
        ("POST", "api.openai.com", "/v1/responses/resp_1/cancel", None),
        ("POST", "api.anthropic.com", "/v1/messages/count_tokens", None),
        ("POST", "api.openai.com", "/v1/embeddings", None),
        ("GET", "api.anthropic.com", "/v1/messages", None),
    ],
)
def test_find_adapter(method: str, host: str, path: str, expected: ProviderAdapter | None) -> None:
    found = find_adapter(method, host, path)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert (type(found[0]), found[1]) == (type(expected), "chat")


def test_registry() -> None:
    assert [adapter.api for adapter in ADAPTERS] == [
        "openai.chat_completions",
        "openai.responses",
        "anthropic.messages",
    ]
    assert [adapter.name for adapter in ADAPTERS] == ["openai", "openai", "anthropic"]
    assert all(isinstance(adapter, ProviderAdapter) for adapter in ADAPTERS)


# --- the real SDKs read our fixtures as we do ------------------------------------------
# The SDKs are part of the test extra, so these checks always run; the capture tests
# import them anyway. LLMWB_SKIP_SDKS=1 skips them for a quick local loop.

sdk_check = pytest.mark.skipif(
    bool(os.environ.get("LLMWB_SKIP_SDKS")),
    reason="LLMWB_SKIP_SDKS is set",
)


class Wire:
    """An in-memory transport answering every request with one canned response."""

    def __init__(self, httpx: Any, status: int, body: bytes, content_type: str) -> None:
        self.httpx = httpx
        self.requests: list[dict[str, Any]] = []
        self.transport = httpx.MockTransport(self._handle)
        self._answer = (status, body, content_type)

    def _handle(self, request: Any) -> Any:
        status, body, content_type = self._answer
        self.requests.append(json.loads(request.content))
        return self.httpx.Response(status, content=body, headers={"content-type": content_type})

    def openai(self) -> Any:
        openai = pytest.importorskip("openai")
        return openai.OpenAI(
            api_key="sk-test",
            base_url="http://127.0.0.1/v1",
            max_retries=0,
            http_client=self.httpx.Client(transport=self.transport),
        )

    def anthropic(self) -> Any:
        anthropic = pytest.importorskip("anthropic")
        return anthropic.Anthropic(
            api_key="sk-ant-test",
            base_url="http://127.0.0.1",
            max_retries=0,
            http_client=self.httpx.Client(transport=self.transport),
        )


def _wire(sdk: str, status: int, body: bytes, content_type: str) -> Wire:
    base = pytest.importorskip(f"{sdk}._base_client")
    # newer SDKs run on httpx2, older ones on httpx; the transport must match
    httpx = base.httpx2 if hasattr(base, "httpx2") else base.httpx
    return Wire(httpx, status, body, content_type)


def openai_wire(status: int, body: bytes, content_type: str) -> Wire:
    return _wire("openai", status, body, content_type)


def anthropic_wire(status: int, body: bytes, content_type: str) -> Wire:
    return _wire("anthropic", status, body, content_type)


@sdk_check
def test_sdk_chat() -> None:
    wire = openai_wire(200, CHAT_TOOLS_STREAM, SSE_TYPE)
    request = {
        key: value for key, value in CHAT_REQUEST.items() if key not in ("stream", "logit_bias")
    }
    with wire.openai().chat.completions.stream(**request) as stream:
        final = stream.get_final_completion()
    [sent] = wire.requests
    assert CHAT.parse_request(sent) == CHAT.parse_request({**CHAT_REQUEST, "logit_bias": None})
    ours, _ = CHAT.parse_response(200, CHAT_TOOLS_STREAM, SSE_TYPE)
    assert ours is not None
    message = final.choices[0].message
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        (c.id, c.name, json.dumps(c.arguments) if isinstance(c.arguments, dict) else c.arguments)
        for c in ours.tool_calls
    ]
    assert final.choices[0].finish_reason == ours.extra["finish_reason"]
    assert final.usage.model_dump(exclude_none=True) == ours.usage.raw

    wire = openai_wire(200, dumps(CHAT_TEXT_JSON), JSON_TYPE)
    completion = wire.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    ours, _ = CHAT.parse_response(200, dumps(CHAT_TEXT_JSON), JSON_TYPE)
    assert ours is not None and completion.choices[0].message.content == ours.content


@sdk_check
def test_sdk_responses() -> None:
    for stream_bytes in (RESPONSES_TEXT_STREAM, RESPONSES_TOOLS_STREAM):
        wire = openai_wire(200, stream_bytes, SSE_TYPE)
        request = {
            key: value
            for key, value in RESPONSES_REQUEST.items()
            if key not in ("stream", "previous_response_id")
        }
        with wire.openai().responses.stream(**request) as stream:
            final = stream.get_final_response()
        [sent] = wire.requests
        assert RESPONSES.parse_request(sent) == RESPONSES.parse_request(RESPONSES_REQUEST)
        ours, _ = RESPONSES.parse_response(200, stream_bytes, SSE_TYPE)
        assert ours is not None
        assert (final.output_text or None) == ours.content
        calls = [
            (item.call_id, item.name, json.loads(item.arguments))
            for item in final.output
            if item.type == "function_call"
        ]
        assert calls == [(c.id, c.name, c.arguments) for c in ours.tool_calls]
        assert final.usage.model_dump(exclude_none=True) == ours.usage.raw


@sdk_check
def test_sdk_anthropic() -> None:
    for stream_bytes in (ANTHROPIC_TEXT_STREAM, ANTHROPIC_TOOLS_STREAM):
        wire = anthropic_wire(200, stream_bytes, SSE_TYPE)
        request = {key: value for key, value in ANTHROPIC_REQUEST.items() if key != "stream"}
        # this SDK version has dropped the sampling parameters; the wire still takes them
        sampling = ("temperature", "top_k", "top_p")
        request["extra_body"] = {key: request.pop(key) for key in sampling}
        with wire.anthropic().messages.stream(**request) as stream:
            final = stream.get_final_message()
        [sent] = wire.requests
        assert ANTHROPIC.parse_request(sent) == ANTHROPIC.parse_request(
            {**ANTHROPIC_REQUEST, "stream": True}
        )
        ours, _ = ANTHROPIC.parse_response(200, stream_bytes, SSE_TYPE)
        assert ours is not None
        texts = [block.text for block in final.content if block.type == "text"]
        assert ("".join(texts) or None) == ours.content
        calls = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
        assert calls == [(c.id, c.name, c.arguments) for c in ours.tool_calls]
        assert final.stop_reason == ours.extra["stop_reason"]
        assert final.usage.output_tokens == ours.usage.output_tokens

    anthropic = pytest.importorskip("anthropic")
    wire = anthropic_wire(529, dumps(ANTHROPIC_529), JSON_TYPE)
    with pytest.raises(anthropic.APIStatusError) as excinfo:
        wire.anthropic().messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "hi"}]
        )
    assert excinfo.value.status_code == 529


# --- robustness: any payload either parses or raises AdapterError ----------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _paths(item, (*prefix, index))
    return paths


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copy


_FUZZ_CASES = [
    (CHAT, CHAT_REQUEST, CHAT_TOOLS_JSON),
    (RESPONSES, RESPONSES_REQUEST, RESPONSES_TOOLS_JSON),
    (ANTHROPIC, ANTHROPIC_REQUEST, ANTHROPIC_TOOLS_JSON),
]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_FUZZ_CASES), st.data())
def test_mutated_payloads_parse_or_raise_adapter_error(case: Any, data: st.DataObject) -> None:
    adapter, request, response = case
    for payload in (request, response):
        path = data.draw(st.sampled_from(_paths(payload)))
        mutated = _replace(payload, path, data.draw(_json))
        with contextlib.suppress(AdapterError):
            if payload is request:
                adapter.parse_request(mutated)
            else:
                adapter.parse_response(200, dumps(mutated), JSON_TYPE)


EVENT_NAMES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
    "response.created",
    "response.output_item.added",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.completed",
]


def _as_fields(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {
        "message": value,
        "content_block": value,
        "delta": value,
        "response": value,
        "item": value,
    }


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(ADAPTERS), st.lists(st.tuples(st.sampled_from(EVENT_NAMES), _json), max_size=5)
)
def test_random_event_streams_parse_or_raise_adapter_error(
    adapter: ProviderAdapter, events: list[tuple[str, Any]]
) -> None:
    stream = sse(
        [
            (name, {"type": name, "index": 0, "output_index": 0, **_as_fields(value)})
            for name, value in events
        ]
    )
    with contextlib.suppress(AdapterError):
        adapter.parse_response(200, stream, SSE_TYPE)
