"""The real openai SDK, recorded against a loopback server and replayed with it stopped."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from pytest_llmwb import ModelIOFact, Run
from pytest_llmwb.capture import CaptureConfig, capture
from pytest_llmwb.capture.exchange import Exchange
from pytest_llmwb.exceptions import (
    LiveCallBlockedError,
    PayloadDriftError,
    ReplayStreamError,
)
from pytest_llmwb.testing import ErrorReply, Reply, ReplyUsage, ScriptedLLMServer, ToolCallReply

from .conftest import API_KEY, RoundTrip

MODEL = "test-model-1"
USER: Any = [{"role": "user", "content": "Where is order A-1?"}]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]
LOOKUP = ToolCallReply("lookup_order", {"order_id": "A-1"})
USAGE = ReplyUsage(input_tokens=12, output_tokens=5)


def client(base: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, **kwargs)


def aclient(base: str, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, **kwargs)


def model_calls(run: Run) -> list[ModelIOFact]:
    return run.model_calls


def test_chat_sync_replays_equal_objects_and_records_typed_receipts(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            first = c.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS)
            second = c.chat.completions.create(
                model=MODEL, messages=[*USER, {"role": "assistant", "content": "Let me look."}]
            )
        return first, second

    trip: RoundTrip = roundtrip([Reply(tool_calls=[LOOKUP], usage=USAGE), "It shipped."], agent)

    assert trip.replayed == trip.recorded
    assert trip.replayed[0]._request_id == trip.recorded[0]._request_id == "req_0001"
    first, second = model_calls(trip.record_run)
    assert (first.node, first.ordinal, first.provider, first.operation) == (
        "openai.chat",
        0,
        "openai",
        "chat",
    )
    assert first.request.model == MODEL and first.request.tools[0].name == "lookup_order"
    assert first.response is not None
    assert first.response.tool_calls[0].arguments == {"order_id": "A-1"}
    assert first.response.finish_reason == "tool_call"
    assert (first.usage.input_tokens, first.usage.output_tokens) == (12, 5)
    assert second.ordinal == 1 and second.response and second.response.content == "It shipped."
    assert first.exchange is not None and first.timing and len(first.timing) == 2
    # the replayed run holds the recorded receipts
    assert [f.response for f in model_calls(trip.replay_run)] == [
        first.response,
        second.response,
    ]


def test_chat_stream_passes_chunks_through_and_replays_them_one_by_one(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            stream = c.chat.completions.create(
                model=MODEL,
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            )
            return list(stream)

    trip: RoundTrip = roundtrip([Reply(text="It shipped on Monday.", chunk_size=5)], agent)

    assert trip.replayed == trip.recorded
    assert "".join(c.choices[0].delta.content or "" for c in trip.replayed if c.choices) == (
        "It shipped on Monday."
    )
    [fact] = model_calls(trip.record_run)
    assert fact.request.stream is True
    assert fact.response is not None and fact.response.chunks == [
        "It sh",
        "ipped",
        " on M",
        "onday",
        ".",
    ]
    exchange = Exchange.from_blob(trip.record_run.blob(fact.exchange or ""))
    assert exchange.end == "closed" and exchange.complete  # openai stops reading at [DONE]
    assert all(chunk.endswith(b"\n\n") for chunk in exchange.chunks)
    assert exchange.chunks[-1] == b"data: [DONE]\n\n"
    assert fact.timing is not None and len(fact.timing) == len(exchange.chunks) + 1


def test_async_chat_and_stream(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        async def main() -> Any:
            async with aclient(base) as c:
                plain = await c.chat.completions.create(model=MODEL, messages=USER)
                stream = await c.chat.completions.create(model=MODEL, messages=USER, stream=True)
                chunks = [chunk async for chunk in stream]
                tools = await c.chat.completions.create(
                    model=MODEL, messages=USER, tools=TOOLS, stream=True
                )
                tool_chunks = [chunk async for chunk in tools]
            return plain, chunks, tool_chunks

        return asyncio.run(main())

    trip: RoundTrip = roundtrip(["It shipped.", "On Monday.", Reply(tool_calls=[LOOKUP])], agent)

    assert trip.replayed == trip.recorded
    facts = model_calls(trip.record_run)
    assert [f.ordinal for f in facts] == [0, 1, 2]
    assert facts[2].response is not None
    assert facts[2].response.tool_calls[0].name == "lookup_order"


def test_responses_api_sync_and_streamed(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            plain = c.responses.create(model=MODEL, input="Where is A-1?")
            events = list(c.responses.create(model=MODEL, input="And B-2?", stream=True))
        return plain, events

    trip: RoundTrip = roundtrip(["A-1 shipped.", "B-2 is late."], agent)

    assert trip.replayed == trip.recorded
    assert trip.replayed[0].output_text == "A-1 shipped."
    plain, streamed = model_calls(trip.record_run)
    assert plain.provider == "openai" and plain.node == "openai.chat"
    assert streamed.response is not None and streamed.response.content == "B-2 is late."


def test_calls_belong_to_the_enclosing_step(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        from pytest_llmwb.recording import current_run

        run = current_run()
        assert run is not None
        with client(base) as c:
            with run.step("classify"):
                a = c.chat.completions.create(model=MODEL, messages=USER)
            with run.step("draft_reply"):
                b = c.chat.completions.create(model=MODEL, messages=USER)
            c_ = c.chat.completions.create(model=MODEL, messages=USER)
        return a, b, c_

    trip: RoundTrip = roundtrip(["one", "two", "three"], agent)

    assert trip.replayed == trip.recorded
    assert [(f.node, f.ordinal) for f in model_calls(trip.record_run)] == [
        ("classify", 0),
        ("draft_reply", 0),
        ("openai.chat", 0),
    ]
    assert trip.record_run.dag.node_ids == ["classify", "draft_reply", "openai.chat"]


def test_a_stream_closed_early_is_recorded_and_replayed_as_such(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            stream = c.chat.completions.create(model=MODEL, messages=USER, stream=True)
            first = [next(stream), next(stream)]
            stream.close()
        return first

    trip: RoundTrip = roundtrip(
        [Reply(text="a long answer the caller does not wait for", chunk_size=3)],
        agent,
        chunk_delay=0.02,  # the events arrive one by one
    )

    assert trip.replayed == trip.recorded
    [fact] = model_calls(trip.record_run)
    exchange = Exchange.from_blob(trip.record_run.blob(fact.exchange or ""))
    assert exchange.end == "closed" and not exchange.complete
    assert len(exchange.chunks) < 6  # not the whole answer: the server was never drained
    assert fact.response is None and fact.error is not None
    assert fact.error.type == "stream_closed"
    assert "the caller stopped reading after" in fact.error.message

    # a replayed caller that reads on meets the end of the recording, not a silent EOF
    def greedy(base: str) -> Any:
        with client(base) as c:
            return list(c.chat.completions.create(model=MODEL, messages=USER, stream=True))

    replay = Run.replay(trip.bundle, record_command="pytest --llmwb-record")
    with replay, capture(replay), pytest.raises(ReplayStreamError) as raised:
        greedy("http://127.0.0.1:9")
    assert "the recorded caller stopped reading" in str(raised.value)
    assert "fix: pytest --llmwb-record" in str(raised.value)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (ErrorReply(429, "slow down", headers={"retry-after": "0"}), openai.RateLimitError),
        (ErrorReply(500, "the model is down"), openai.InternalServerError),
    ],
)
def test_provider_errors_replay_as_the_same_sdk_error(
    roundtrip: Any, reply: ErrorReply, error: type[Exception]
) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            try:
                c.chat.completions.create(model=MODEL, messages=USER)
            except openai.APIStatusError as exc:
                return type(exc), exc.status_code, exc.body, exc.request_id
        raise AssertionError("no error")

    trip: RoundTrip = roundtrip([reply], agent)

    assert trip.replayed == trip.recorded
    assert trip.replayed[0] is error
    [fact] = model_calls(trip.record_run)
    assert fact.response is None and fact.error is not None
    assert fact.error.message == reply.message


def test_a_request_changed_only_in_volatile_values_still_matches(roundtrip: Any) -> None:
    calls = iter(range(2))

    def agent(base: str) -> Any:
        n = next(calls)
        # different headers (retries, timeouts, a trace id) and a fresh UUID each run
        with client(base, default_headers={"x-trace-id": f"trace-{n}"}, timeout=10 + n) as c:
            return c.chat.completions.create(
                model=MODEL,
                messages=USER,
                metadata={"request_id": str(uuid.uuid4()), "session": f"s-{n}"},
            )

    trip: RoundTrip = roundtrip(
        ["It shipped."], agent, config=CaptureConfig(volatile=("/extra/metadata/session",))
    )

    assert trip.replayed == trip.recorded


def test_a_changed_prompt_is_drift_naming_the_field(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            return c.chat.completions.create(model=MODEL, messages=USER)

    def changed(base: str) -> Any:
        with client(base) as c:
            return c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Where is order B-2?"}]
            )

    with pytest.raises(PayloadDriftError) as raised:
        roundtrip(["It shipped."], agent, replay_agent=changed)
    message = str(raised.value)
    assert "request drift at node 'openai.chat', 1st call (ordinal 0)" in message
    assert "/messages/0/content: 'Where is order A-1?' -> 'Where is order B-2?'" in message
    assert "fix: pytest --llmwb-record" in message


def test_replay_blocks_the_network_with_the_server_stopped(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            return c.chat.completions.create(model=MODEL, messages=USER)

    def more(base: str) -> Any:
        agent(base)
        # a call the bundle does not have, to a real provider
        with openai.OpenAI(api_key=API_KEY, max_retries=0) as c:
            return c.chat.completions.create(model=MODEL, messages=USER)

    with pytest.raises(LiveCallBlockedError) as raised:
        roundtrip(["It shipped."], agent, replay_agent=more)
    message = str(raised.value)
    assert "POST https://api.openai.com/v1/chat/completions" in message
    assert "fix: pytest --llmwb-record" in message


def test_replay_timing_on_request(roundtrip: Any, tmp_path: Any) -> None:
    def agent(base: str) -> Any:
        with client(base) as c:
            stream = c.chat.completions.create(model=MODEL, messages=USER, stream=True)
            started = time.perf_counter()
            chunks = list(stream)
            return chunks, time.perf_counter() - started

    trip: RoundTrip = roundtrip([Reply(text="slow tokens", chunk_size=4)], agent, chunk_delay=0.05)
    assert trip.replayed[0] == trip.recorded[0]
    assert trip.recorded[1] > 0.15 and trip.replayed[1] < 0.05  # fast by default

    paced = Run.replay(trip.bundle)
    with paced, capture(paced, CaptureConfig(replay_timing=True)):
        chunks, took = agent("http://127.0.0.1:9")
    assert chunks == trip.recorded[0]
    assert took > 0.1


def test_a_legacy_httpx_client_and_the_aiohttp_client_are_captured(roundtrip: Any) -> None:
    def agent(base: str) -> Any:
        with client(base, http_client=httpx.Client()) as c:
            legacy = c.chat.completions.create(model=MODEL, messages=USER)

        async def main() -> Any:
            async with aclient(base, http_client=openai.DefaultAioHttpClient()) as c:
                stream = await c.chat.completions.create(model=MODEL, messages=USER, stream=True)
                return [chunk async for chunk in stream]

        return legacy, asyncio.run(main())

    trip: RoundTrip = roundtrip(["legacy", Reply(text="over aiohttp", chunk_size=4)], agent)

    assert trip.replayed == trip.recorded
    assert [f.ordinal for f in model_calls(trip.record_run)] == [0, 1]


def test_the_api_key_is_scrubbed_and_re_recording_gives_identical_files(
    tmp_path: Any,
) -> None:
    def record(path: Any) -> None:
        with ScriptedLLMServer(["It shipped.", Reply(text="streamed", chunk_size=3)]) as server:
            with Run("r") as run, capture(run), client(server.base_url) as c:
                c.chat.completions.create(model=MODEL, messages=USER)
                list(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
            run.save(path)

    record(tmp_path / "a")
    record(tmp_path / "b")
    for name in ("facts.jsonl", "dag.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the manifest differs only in the digest of volatile.json (wall times)
    manifests = [json.loads((tmp_path / side / "manifest.json").read_text()) for side in "ab"]
    for manifest in manifests:
        del manifest["files"]["volatile.json"]
    assert manifests[0] == manifests[1]
    blobs = sorted(p.name for p in (tmp_path / "a" / "blobs").iterdir())
    assert blobs == sorted(p.name for p in (tmp_path / "b" / "blobs").iterdir())
    everything = b"".join(p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert API_KEY.encode() not in everything
    assert b"authorization" not in everything.lower()
