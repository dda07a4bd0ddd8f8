"""The real anthropic SDK, recorded against a loopback server and replayed with it stopped."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest

from pytest_llmwb.testing import ErrorReply, Reply, ReplyUsage, ToolCallReply

from .conftest import API_KEY, RoundTrip

MODEL = "test-claude-1"
USER: Any = [{"role": "user", "content": "Refund order A-1, please."}]
TOOLS: Any = [
    {
        "name": "issue_refund",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    }
]
REFUND = ToolCallReply("issue_refund", {"order_id": "A-1"})
ANTHROPIC_KEY = "sk-ant-api03-" + "x" * 40


def client(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key=ANTHROPIC_KEY, max_retries=0)


def aclient(base: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base, api_key=ANTHROPIC_KEY, max_retries=0)


def test_messages_sync_with_tools(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            first = c.messages.create(model=MODEL, max_tokens=100, messages=USER, tools=TOOLS)
            second = c.messages.create(
                model=MODEL, max_tokens=100, messages=USER, system="Be kind."
            )
        return first, second

    usage = ReplyUsage(input_tokens=30, output_tokens=7, cache_read_input_tokens=20)
    trip: RoundTrip = roundtrip([Reply(tool_calls=[REFUND], usage=usage), "Done."], agent)

    assert trip.replayed == trip.recorded
    assert trip.replayed[0]._request_id == "req_0001"
    first, second = trip.record_run.model_calls
    assert (first.provider, first.node) == ("anthropic", "anthropic.chat")
    assert first.response is not None
    assert first.response.tool_calls[0].arguments == {"order_id": "A-1"}
    assert first.usage.input_tokens == 30 and first.usage.cache_read_input_tokens == 20
    assert second.request.system == "Be kind."
    everything = b"".join(p.read_bytes() for p in trip.bundle.rglob("*") if p.is_file())
    assert ANTHROPIC_KEY.encode() not in everything and API_KEY.encode() not in everything


def test_messages_stream_sync_and_async(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            events = list(
                c.messages.create(model=MODEL, max_tokens=100, messages=USER, stream=True)
            )
            with c.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()

        async def main() -> Any:
            async with aclient(base) as c:
                plain = await c.messages.create(model=MODEL, max_tokens=100, messages=USER)
                stream = await c.messages.create(
                    model=MODEL, max_tokens=100, messages=USER, tools=TOOLS, stream=True
                )
                return plain, [event async for event in stream]

        return events, text, final, asyncio.run(main())

    trip: RoundTrip = roundtrip(
        [
            Reply(text="Refund issued.", chunk_size=4),
            Reply(text="On its way.", chunk_size=3),
            "Async hello.",
            Reply(tool_calls=[REFUND]),
        ],
        agent,
    )

    assert trip.replayed == trip.recorded
    assert trip.replayed[1] == "On its way."
    facts = trip.record_run.model_calls
    assert [f.ordinal for f in facts] == [0, 1, 2, 3]
    assert facts[0].response is not None and facts[0].response.content == "Refund issued."
    assert facts[3].response is not None and facts[3].response.tool_calls[0].name == "issue_refund"


def test_overloaded_error_replays_as_the_same_sdk_error(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            try:
                c.messages.create(model=MODEL, max_tokens=10, messages=USER)
            except anthropic.APIStatusError as exc:
                return type(exc), exc.status_code, exc.body
        raise AssertionError("no error")

    trip: RoundTrip = roundtrip([ErrorReply(529, "Overloaded", type="overloaded_error")], agent)

    assert trip.replayed == trip.recorded
    assert trip.replayed[1] == 529
    [fact] = trip.record_run.model_calls
    assert fact.error is not None and fact.error.type == "overloaded_error"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_async_requests_are_separate_ordinals(roundtrip: Any, stream: bool) -> None:
    def agent(base: str) -> Any:
        async def main() -> Any:
            async with aclient(base) as c:
                answers = []
                for _ in range(3):
                    if stream:
                        s = await c.messages.create(
                            model=MODEL, max_tokens=10, messages=USER, stream=True
                        )
                        answers.append([event async for event in s])
                    else:
                        answers.append(
                            await c.messages.create(model=MODEL, max_tokens=10, messages=USER)
                        )
                return answers

        return asyncio.run(main())

    trip: RoundTrip = roundtrip(["one", "two", "three"], agent)

    assert trip.replayed == trip.recorded
    assert [f.response.content for f in trip.replay_run.model_calls if f.response] == [
        "one",
        "two",
        "three",
    ]
