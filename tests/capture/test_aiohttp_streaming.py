"""aiohttp: bodies pass through while recorded, and replay one recorded event a read."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pytest_llmwb import Run
from pytest_llmwb.capture import capture
from pytest_llmwb.capture.exchange import Exchange
from pytest_llmwb.exceptions import ReplayStreamError

from .conftest import API_KEY
from .test_urllib3_streaming import EVENTS, REQUEST, GatedStream

Agent = Callable[[aiohttp.ClientSession, str, threading.Event], Awaitable[Any]]
OFFLINE = "http://127.0.0.1:9/v1/chat/completions"


def _run(agent: Agent, url: str, read_first: threading.Event) -> Any:
    async def main() -> Any:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            return await agent(session, url, read_first)

    return asyncio.run(main())


def _record(tmp_path: Path, agent: Agent, mode: str = "whole") -> tuple[Any, Run, GatedStream]:
    with GatedStream(mode) as server:
        run = Run("stream")
        with run, capture(run):
            recorded = _run(agent, server.url, server.read_first)
        run.save(tmp_path / "bundle")
    return recorded, run, server


def _replay(tmp_path: Path, agent: Agent) -> Any:
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    with replay, capture(replay) as session:
        assert session.guard is not None
        return _run(agent, OFFLINE, threading.Event())


def _exchange(run: Run) -> Exchange:
    (fact,) = run.model_calls
    assert fact.exchange is not None
    return Exchange.from_blob(run.blob(fact.exchange))


def test_an_aiohttp_body_reaches_the_caller_as_it_arrives(tmp_path: Path) -> None:
    async def agent(session: aiohttp.ClientSession, url: str, read_first: threading.Event) -> Any:
        async with session.post(url, json=REQUEST) as response:
            first = await response.content.readline()
            read_first.set()  # only now does the server send the rest
            return first, await response.content.read()

    recorded, run, server = _record(tmp_path, agent)
    assert server.waited == [True]
    assert recorded[0] + recorded[1] == b"".join(EVENTS)
    (fact,) = run.model_calls
    assert fact.response is not None and fact.response.content == "Hello world!"
    exchange = _exchange(run)
    assert exchange.chunks == EVENTS and exchange.end == "eof"

    assert _replay(tmp_path, agent) == recorded


def test_a_replayed_aiohttp_body_gives_one_event_a_read(tmp_path: Path) -> None:
    async def agent(
        session: aiohttp.ClientSession, url: str, read_first: threading.Event
    ) -> list[bytes]:
        read_first.set()
        async with session.post(url, json=REQUEST) as response:
            return [piece async for piece in response.content.iter_any()]

    recorded, _, _ = _record(tmp_path, agent)
    assert b"".join(recorded) == b"".join(EVENTS)
    assert _replay(tmp_path, agent) == EVENTS


def test_an_aiohttp_body_released_early_is_recorded_and_replayed_as_such(
    tmp_path: Path,
) -> None:
    async def agent(session: aiohttp.ClientSession, url: str, read_first: threading.Event) -> Any:
        async with session.post(url, json=REQUEST) as response:
            return await response.content.readline()  # and release the rest unread

    recorded, run, _ = _record(tmp_path, agent)
    exchange = _exchange(run)
    assert exchange.end == "closed" and exchange.chunks == EVENTS[:1]
    assert _replay(tmp_path, agent) == recorded

    async def greedy(session: aiohttp.ClientSession, url: str, read_first: Any) -> bytes:
        async with session.post(url, json=REQUEST) as response:
            return await response.read()

    with pytest.raises(ReplayStreamError, match="read past byte"):
        _replay(tmp_path, greedy)


@pytest.mark.parametrize("reader", ["read", "text", "json"])
def test_an_aiohttp_body_cut_by_the_server_replays_as_the_same_error(
    tmp_path: Path, reader: str
) -> None:
    async def agent(session: aiohttp.ClientSession, url: str, read_first: Any) -> Any:
        try:
            async with session.post(url, json=REQUEST) as response:
                await getattr(response, reader)()
        except aiohttp.ClientError as exc:
            return type(exc).__name__
        return "no error"

    recorded, run, _ = _record(tmp_path, agent, mode="cut")
    assert recorded == "ClientPayloadError"
    exchange = _exchange(run)
    assert exchange.end == "error" and exchange.error is not None
    assert exchange.error[0] == "aiohttp.client_exceptions.ClientPayloadError"
    assert _replay(tmp_path, agent) == recorded


def test_each_captured_call_carries_the_span_it_was_made_in(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("tests")

    async def agent(session: aiohttp.ClientSession, url: str, read_first: Any) -> list[str]:
        read_first.set()
        spans = []
        for name in ("first", "second"):  # one kept-alive connection, two requests
            with tracer.start_as_current_span(name) as span:
                spans.append(format(span.get_span_context().span_id, "016x"))
                async with session.post(url, json=REQUEST) as response:
                    await response.read()  # the body ends in the connection's callback
        return spans

    spans, run, _ = _record(tmp_path, agent)
    assert [f.span_id for f in run.model_calls] == spans
