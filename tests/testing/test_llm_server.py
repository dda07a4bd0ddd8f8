"""ScriptedLLMServer against the real openai and anthropic SDKs."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from typing import Any

import anthropic
import openai
import pytest

from pytest_llmwb.testing import (
    CREATED_AT,
    ErrorReply,
    ReceivedRequest,
    Reply,
    ReplyUsage,
    ScriptedLLMServer,
    ToolCallReply,
)

API_KEY = "sk-test-fake"
USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = ToolCallReply(name="get_weather", arguments={"city": "Paris", "unit": "C"})
USAGE = ReplyUsage(
    input_tokens=100,
    output_tokens=40,
    cache_read_input_tokens=60,
    cache_creation_input_tokens=10,
    reasoning_tokens=25,
)
OPENAI_TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
RESPONSES_TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    }
]
ANTHROPIC_TOOLS: Any = [
    {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def oai(server: ScriptedLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key=API_KEY, max_retries=0)


def aoai(server: ScriptedLLMServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key=API_KEY, max_retries=0)


def ant(server: ScriptedLLMServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.anthropic_base_url, api_key=API_KEY, max_retries=0)


def aant(server: ScriptedLLMServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key=API_KEY, max_retries=0
    )


# --------------------------------------------------------------------------- OpenAI chat


def test_chat_non_streaming_text_usage_and_recorded_request() -> None:
    with ScriptedLLMServer([Reply(text="Sunny.", usage=USAGE)]) as server, oai(server) as client:
        completion = client.chat.completions.create(model="gpt-4o", messages=USER)

    assert completion.id == "chatcmpl-0001"
    assert completion.created == CREATED_AT
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.message.content == "Sunny."
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 40, 140)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 60
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 25

    [request] = server.requests
    assert (request.method, request.path, request.api) == (
        "POST",
        "/v1/chat/completions",
        "openai.chat",
    )
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.json["messages"] == USER
    assert request.model == "gpt-4o"
    assert not request.stream


def test_chat_streaming_tool_calls_and_include_usage() -> None:
    reply = Reply(text="Checking.", tool_calls=[WEATHER], usage=USAGE, chunk_size=3)
    with ScriptedLLMServer([reply]) as server, oai(server) as client:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            tools=OPENAI_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)

    assert {chunk.id for chunk in chunks} == {"chatcmpl-0001"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Checking."
    fragments = [
        call
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
    ]
    assert fragments[0].id == "call_0001"
    assert fragments[0].function is not None
    assert fragments[0].function.name == "get_weather"
    assert len(fragments) > 2, "arguments should arrive in several fragments"
    arguments = "".join(f.function.arguments or "" for f in fragments if f.function)
    assert json.loads(arguments) == {"city": "Paris", "unit": "C"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens_details is not None
    assert usage_chunk.usage.prompt_tokens_details.cached_tokens == 60
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_chat_streaming_without_include_usage_sends_no_usage() -> None:
    with ScriptedLLMServer(["hi"]) as server, oai(server) as client:
        chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_async_streaming_and_non_streaming() -> None:
    async def main(server: ScriptedLLMServer) -> tuple[str, str | None]:
        async with aoai(server) as client:
            stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            completion = await client.chat.completions.create(model="m", messages=USER)
            return text, completion.choices[0].message.content

    with ScriptedLLMServer(["streamed text", "whole text"]) as server:
        assert asyncio.run(main(server)) == ("streamed text", "whole text")


def test_chat_tool_call_non_streaming() -> None:
    with ScriptedLLMServer([Reply(tool_calls=[WEATHER])]) as server, oai(server) as client:
        message = client.chat.completions.create(model="m", messages=USER, tools=OPENAI_TOOLS)
    choice = message.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name) == ("call_0001", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "C"}


# --------------------------------------------------------------------------- OpenAI responses


def test_responses_non_streaming_text_and_function_call() -> None:
    reply = Reply(text="Let me check.", tool_calls=[WEATHER], usage=USAGE)
    with ScriptedLLMServer([reply]) as server, oai(server) as client:
        response = client.responses.create(model="gpt-4.1", input="weather?", tools=RESPONSES_TOOLS)

    assert (response.id, response.status, response.created_at) == (
        "resp_0001",
        "completed",
        CREATED_AT,
    )
    assert response.output_text == "Let me check."
    message, call = response.output
    assert message.type == "message"
    assert call.type == "function_call"
    assert (call.call_id, call.id, call.name) == ("call_0001", "fc_0001", "get_weather")
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "C"}
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (100, 40, 140)
    assert usage.input_tokens_details.cached_tokens == 60
    assert usage.output_tokens_details.reasoning_tokens == 25
    assert server.requests[0].api == "openai.responses"


def test_responses_streaming_helper_sync() -> None:
    reply = Reply(text="Sunny and warm.", tool_calls=[WEATHER], usage=USAGE, chunk_size=4)
    with (
        ScriptedLLMServer([reply]) as server,
        oai(server) as client,
        client.responses.stream(model="gpt-4.1", input="weather?", tools=RESPONSES_TOOLS) as stream,
    ):
        events = list(stream)
        final = stream.get_final_response()

    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 4
    assert "response.function_call_arguments.done" in types
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert final.output_text == "Sunny and warm."
    assert final.usage is not None
    assert final.usage.input_tokens_details.cached_tokens == 60
    call = final.output[-1]
    assert call.type == "function_call"
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "C"}


def test_responses_streaming_async() -> None:
    async def main(server: ScriptedLLMServer) -> tuple[str, list[str]]:
        async with aoai(server) as client:
            stream = await client.responses.create(model="m", input="hi", stream=True)
            text, types = "", list[str]()
            async for event in stream:
                types.append(event.type)
                if event.type == "response.output_text.delta":
                    text += event.delta
            return text, types

    with ScriptedLLMServer(["async responses"]) as server:
        text, types = asyncio.run(main(server))
    assert text == "async responses"
    assert types[-1] == "response.completed"


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_non_streaming_tool_use_and_usage() -> None:
    reply = Reply(text="Let me check.", tool_calls=[WEATHER], usage=USAGE)
    with ScriptedLLMServer([reply]) as server, ant(server) as client:
        message = client.messages.create(
            model="claude-test-model", max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS
        )

    assert (message.id, message.model, message.stop_reason) == (
        "msg_0001",
        "claude-test-model",
        "tool_use",
    )
    text, tool = message.content
    assert text.type == "text"
    assert text.text == "Let me check."
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == (
        "toolu_0001",
        "get_weather",
        {"city": "Paris", "unit": "C"},
    )
    usage = message.usage
    # Anthropic's input_tokens exclude cached tokens: 100 - 60 read - 10 written.
    assert (usage.input_tokens, usage.output_tokens) == (30, 40)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (60, 10)
    [request] = server.requests
    assert request.api == "anthropic.messages"
    # Older SDKs send x-api-key; newer ones send a bearer token.
    assert API_KEY in (
        request.headers.get("x-api-key"),
        request.headers.get("authorization", "")[7:],
    )
    assert "anthropic-version" in request.headers


def test_anthropic_streaming_helper_sync() -> None:
    reply = Reply(text="Checking the weather.", tool_calls=[WEATHER], usage=USAGE, chunk_size=5)
    with (
        ScriptedLLMServer([reply]) as server,
        ant(server) as client,
        client.messages.stream(model="claude", max_tokens=100, messages=USER) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Checking the weather."
    assert final.stop_reason == "tool_use"
    tool = final.content[-1]
    assert tool.type == "tool_use"
    assert tool.input == {"city": "Paris", "unit": "C"}
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 40)
    assert final.usage.cache_read_input_tokens == 60


def test_anthropic_raw_stream_event_sequence_async() -> None:
    async def main(server: ScriptedLLMServer) -> list[Any]:
        async with aant(server) as client:
            stream = await client.messages.create(
                model="claude", max_tokens=100, messages=USER, stream=True
            )
            return [event async for event in stream]

    reply = Reply(text="ab", tool_calls=[WEATHER], chunk_size=1)
    with ScriptedLLMServer([reply]) as server:
        events = asyncio.run(main(server))

    assert [event.type for event in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * (1 + len(json.dumps(WEATHER.arguments))),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[2].delta.type == "text_delta"
    assert events[6].delta.type == "input_json_delta"
    assert events[-2].delta.stop_reason == "tool_use"
    assert events[-2].usage.output_tokens >= 1


def test_finish_reason_length_in_each_provider_shape() -> None:
    script = [Reply(text="cut", finish_reason="length")] * 3
    with ScriptedLLMServer(script) as server, oai(server) as client, ant(server) as claude:
        chat = client.chat.completions.create(model="m", messages=USER)
        response = client.responses.create(model="m", input="hi")
        message = claude.messages.create(model="m", max_tokens=1, messages=USER)
    assert chat.choices[0].finish_reason == "length"
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert message.stop_reason == "max_tokens"


# --------------------------------------------------------------------------- errors and script


@pytest.mark.parametrize(
    ("status", "openai_error", "anthropic_error"),
    [
        (429, openai.RateLimitError, anthropic.RateLimitError),
        (500, openai.InternalServerError, anthropic.InternalServerError),
    ],
)
def test_error_replies_surface_as_sdk_errors(
    status: int,
    openai_error: type[openai.APIStatusError],
    anthropic_error: type[anthropic.APIStatusError],
) -> None:
    error = ErrorReply(status=status, message="slow down", headers={"retry-after": "0"})
    with ScriptedLLMServer([error, error]) as server, oai(server) as client, ant(server) as claude:
        with pytest.raises(openai_error, match="slow down") as openai_info:
            client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises(anthropic_error, match="slow down") as anthropic_info:
            claude.messages.create(model="m", max_tokens=1, messages=USER)

    assert openai_info.value.status_code == status
    assert openai_info.value.response.headers["retry-after"] == "0"
    expected_type = "rate_limit_error" if status == 429 else "api_error"
    assert anthropic_info.value.body == {
        "type": "error",
        "error": {"type": expected_type, "message": "slow down"},
    }


def test_exhausted_script_answers_500_saying_so() -> None:
    with ScriptedLLMServer(["only one"]) as server, oai(server) as client:
        client.chat.completions.create(model="m", messages=USER)
        assert server.remaining == ()
        with pytest.raises(openai.InternalServerError, match="script ran out") as info:
            client.chat.completions.create(model="m", messages=USER)
    assert "the script had 1" in str(info.value)


def test_default_script_echoes_last_user_message() -> None:
    with ScriptedLLMServer() as server, oai(server) as client, ant(server) as claude:
        chat = client.chat.completions.create(model="m", messages=USER)
        response = client.responses.create(
            model="m", input=[{"role": "user", "content": [{"type": "input_text", "text": "ping"}]}]
        )
        message = claude.messages.create(
            model="m",
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": "text", "text": "pong"}]}],
        )
    assert chat.choices[0].message.content == "echo: What is the weather in Paris?"
    assert response.output_text == "echo: ping"
    assert message.content[0].type == "text"
    assert message.content[0].text == "echo: pong"
    assert message.usage.input_tokens >= 1


def test_callable_script_sees_the_request() -> None:
    seen: list[ReceivedRequest] = []

    def script(request: ReceivedRequest) -> Reply | ErrorReply:
        seen.append(request)
        if request.api == "anthropic.messages":
            return ErrorReply(status=400, message="no claude today")
        return Reply(text=f"{request.api} {request.model}")

    with ScriptedLLMServer(script) as server, oai(server) as client, ant(server) as claude:
        chat = client.chat.completions.create(model="gpt-x", messages=USER)
        with pytest.raises(anthropic.BadRequestError, match="no claude today"):
            claude.messages.create(model="m", max_tokens=1, messages=USER)
    assert chat.choices[0].message.content == "openai.chat gpt-x"
    assert [request.api for request in seen] == ["openai.chat", "anthropic.messages"]
    assert server.requests == seen


def test_script_that_raises_answers_500() -> None:
    def script(request: ReceivedRequest) -> Reply:
        raise KeyError("boom")

    with (
        ScriptedLLMServer(script) as server,
        oai(server) as client,
        pytest.raises(openai.InternalServerError, match="script raised KeyError"),
    ):
        client.chat.completions.create(model="m", messages=USER)


def test_same_script_gives_identical_bytes_on_two_servers() -> None:
    script = [Reply(text="Sunny.", tool_calls=[WEATHER], usage=USAGE)] * 3

    def record() -> list[tuple[bytes, list[tuple[str, str]]]]:
        with ScriptedLLMServer(script) as server, oai(server) as client, ant(server) as claude:
            raws: list[Any] = [
                client.chat.completions.with_raw_response.create(model="m", messages=USER),
                client.responses.with_raw_response.create(model="m", input="hi", stream=True),
                claude.messages.with_raw_response.create(model="m", max_tokens=5, messages=USER),
            ]
            return [
                (raw.http_response.read(), list(raw.http_response.headers.items())) for raw in raws
            ]

    first, second = record(), record()
    assert first == second
    assert json.loads(first[0][0])["id"] == "chatcmpl-0001"
    assert b'"id":"resp_0001"' in first[1][0]
    assert json.loads(first[2][0])["content"][1]["id"] == "toolu_0001"


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    with ScriptedLLMServer(["one", "two", "three"]) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            sockets = []
            for stream in (True, False, True):
                payload = json.dumps({"model": "m", "messages": USER, "stream": stream}).encode()
                connection.request("POST", "/v1/chat/completions", body=payload)
                response = connection.getresponse()
                assert response.status == 200
                assert response.read().endswith(b"data: [DONE]\n\n" if stream else b"}")
                assert not response.will_close
                sockets.append(connection.sock)
            assert sockets[0] is not None
            assert sockets[0] is sockets[1] is sockets[2]
        finally:
            connection.close()


def test_unknown_path_is_a_404_listing_what_is_served() -> None:
    with (
        ScriptedLLMServer() as server,
        oai(server) as client,
        pytest.raises(openai.NotFoundError, match="does not serve GET /v1/models"),
    ):
        client.models.list()
    assert server.requests[0].api is None


def test_chunk_delay_paces_stream_events() -> None:
    reply = Reply(text="abc", chunk_size=1, chunk_delay=0.05)
    with ScriptedLLMServer([reply]) as server, oai(server) as client:
        started = time.perf_counter()
        stream = client.chat.completions.create(model="m", messages=USER, stream=True)
        arrivals = [time.perf_counter() - started for _ in stream]
    # role chunk, 3 text chunks, finish chunk: each preceded by one delay.
    assert len(arrivals) == 5
    assert arrivals[0] >= 0.04
    assert arrivals[-1] >= 5 * 0.04


def test_stop_is_prompt_even_mid_stream() -> None:
    server = ScriptedLLMServer([Reply(text="never sent")], chunk_delay=30).start()
    with oai(server) as client:
        stream = client.chat.completions.create(model="m", messages=USER, stream=True)
        started = time.perf_counter()
        server.stop()
        assert time.perf_counter() - started < 2
        with pytest.raises(openai.APIConnectionError):
            list(stream)
        stream.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("ScriptedLLMServer")]


def test_lifecycle_and_validation() -> None:
    server = ScriptedLLMServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.openai_base_url == server.base_url + "/v1"
        assert server.anthropic_base_url == server.base_url
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    server.stop()  # idempotent
    with pytest.raises(ValueError, match="must not exceed input_tokens"):
        ReplyUsage(input_tokens=1, cache_read_input_tokens=2)
    with pytest.raises(ValueError, match="reasoning_tokens"):
        ReplyUsage(output_tokens=1, reasoning_tokens=2)
    with pytest.raises(ValueError, match="chunk_size"):
        Reply(chunk_size=0)
    with pytest.raises(ValueError, match="4xx or 5xx"):
        ErrorReply(status=200)
    with pytest.raises(TypeError, match="not a str"):
        ScriptedLLMServer("hello")
