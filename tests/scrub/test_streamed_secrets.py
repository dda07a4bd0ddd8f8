"""A secret a model streams in pieces never reaches the bundle, and replay still parses.

The loopback server splits text and tool-call arguments into 7-character deltas, so
no single event holds a whole secret: only the text the SDK assembles does. Each case
records through the real SDK, searches every byte written under the bundle, then
replays with the server stopped and checks the SDK reads a valid stream holding the
placeholder where the secret was, and that sending that text back matches the
recording.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from pytest_llmwb import Run
from pytest_llmwb.capture import capture
from pytest_llmwb.exceptions import SecretFoundError
from pytest_llmwb.scrub import Scrubber, default_scrubber
from pytest_llmwb.testing import Reply, ScriptedLLMServer, ToolCallReply

from .conftest import FAKES

API_KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"
MODEL = "test-model-1"
TOOL = "save_note"

# what an agent saw: (text, tool-call arguments)
Seen = tuple[str, dict[str, Any]]


def _chat(base: str, history: list[dict[str, Any]]) -> Seen:
    with openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0) as c:
        stream = c.chat.completions.create(
            model=MODEL,
            messages=history,
            tools=[{"type": "function", "function": {"name": TOOL, "parameters": {}}}],
            stream=True,
        )
        text, arguments = "", ""
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            for call in delta.tool_calls or ():
                arguments += (call.function and call.function.arguments) or ""
    return text, json.loads(arguments or "{}")


def _responses(base: str, history: list[dict[str, Any]]) -> Seen:
    with openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0) as c:
        events = list(
            c.responses.create(
                model=MODEL,
                input=history,
                tools=[{"type": "function", "name": TOOL, "parameters": {}, "strict": False}],
                stream=True,
            )
        )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    [done] = [e for e in events if e.type == "response.completed"]
    assert done.response.output_text == text  # the final event agrees with the deltas
    return text, json.loads(arguments or "{}")


def _anthropic(base: str, history: list[dict[str, Any]]) -> Seen:
    with anthropic.Anthropic(base_url=base, api_key=API_KEY, max_retries=0) as c:
        tools: Any = [{"name": TOOL, "input_schema": {"type": "object"}}]
        with c.messages.stream(
            model=MODEL, max_tokens=100, messages=history, tools=tools
        ) as stream:
            deltas = [
                e.delta.text
                for e in stream
                if e.type == "content_block_delta" and e.delta.type == "text_delta"
            ]
            message = stream.get_final_message()
    text = "".join(b.text for b in message.content if b.type == "text")
    assert text == "".join(deltas)
    uses = [b.input for b in message.content if b.type == "tool_use"]
    assert all(isinstance(u, dict) for u in uses)
    return text, uses[0] if uses else {}


APIS: dict[str, Callable[[str, list[dict[str, Any]]], Seen]] = {
    "openai-chat": _chat,
    "openai-responses": _responses,
    "anthropic-messages": _anthropic,
}


def _agent(api: str) -> Callable[[str], list[Seen]]:
    """Two turns: the second sends the streamed text back, as agents do."""
    call = APIS[api]

    def agent(base: str) -> list[Seen]:
        history: list[dict[str, Any]] = [{"role": "user", "content": "Remember my key."}]
        first = call(base, history)
        history += [
            {"role": "assistant", "content": first[0]},
            {"role": "user", "content": "Thanks."},
        ]
        return [first, call(base, history)]

    return agent


def _pieces(secret: str) -> list[bytes]:
    """The secret and its halves, raw and as JSON string content."""
    half = len(secret) // 2
    out = []
    for text in (secret, secret[:half], secret[half:]):
        out += [text.encode(), json.dumps(text)[1:-1].encode()]
    return out


def _every_byte(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def _script(secret: str) -> list[Reply]:
    return [
        Reply(
            text=f"Your key is {secret} - keep it safe.",
            tool_calls=[ToolCallReply(TOOL, {"note": f"key {secret}", "id": 7})],
            chunk_size=7,
        ),
        Reply(text="Noted.", chunk_size=7),
    ]


@pytest.mark.parametrize("api", list(APIS))
@pytest.mark.parametrize("rule", list(FAKES))
def test_a_secret_streamed_in_pieces_is_scrubbed_whole_and_replays(
    tmp_path: Path, api: str, rule: str
) -> None:
    secret = FAKES[rule]
    agent = _agent(api)
    with ScriptedLLMServer(_script(secret)) as server:
        base = server.base_url
        run = Run("record", record_command="pytest --llmwb-record")
        with run, capture(run):
            recorded = agent(base)
        run.save(tmp_path / "bundle")
    assert secret in recorded[0][0]  # the live caller got the real text
    data = _every_byte(tmp_path / "bundle")
    for piece in _pieces(secret):
        assert piece not in data, (rule, api, piece)

    scrubber = default_scrubber()
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    with replay, capture(replay):
        replayed = agent(base)
    replay.check_complete()  # the text sent back matched: no drift
    (text, arguments), second = replayed
    assert text == scrubber.scrub_text(recorded[0][0])
    assert f"<secret:{rule}:" in text
    assert arguments == scrubber.scrub_value(recorded[0][1], where="test")
    assert second == recorded[1]
    # the receipt says what replay serves
    first_fact = replay.model_calls[0]
    assert first_fact.response is not None and first_fact.response.content == text


@pytest.mark.parametrize("api", list(APIS))
def test_strict_mode_refuses_a_secret_streamed_in_pieces(tmp_path: Path, api: str) -> None:
    secret = FAKES["github-token"]
    run = Run("record", scrubber=Scrubber(strict=True))
    # one turn: the secret is only ever in the streamed response
    history: list[dict[str, Any]] = [{"role": "user", "content": "Remember my key."}]
    with (
        ScriptedLLMServer(_script(secret)) as server,
        pytest.raises(SecretFoundError) as info,
        run,
        capture(run),
    ):
        APIS[api](server.base_url, history)
    assert "github-token" in str(info.value)
    assert secret not in str(info.value)
    assert secret[:12] not in str(info.value)


@pytest.mark.parametrize("size", [1, 2, 7, 20, 1000])
def test_pieces_scrub_as_their_joined_text(size: int) -> None:
    scrubber = default_scrubber()
    text = f"a {FAKES['openai-key']} b {FAKES['jwt']} c password='hunter2'"
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    clean = scrubber.scrub_pieces(pieces, where="test")
    assert len(clean) == len(pieces)
    assert "".join(clean) == scrubber.scrub_text(text)


def test_an_event_stream_keeps_the_bytes_of_events_without_a_secret() -> None:
    secret = FAKES["github-token"]
    events = [b": comment\r\n\r\n", b'data: {"id":"x",  "delta":"hello "}\r\n\r\n']
    events += [
        b"event: delta\r\ndata: "
        + json.dumps({"id": "x", "delta": secret[i : i + 5]}).encode()
        + b"\r\n\r\n"
        for i in range(0, len(secret), 5)
    ]
    events += [b"data: [DONE]\r\n\r\n"]
    data = b"".join(events)
    clean = default_scrubber().scrub_event_stream(data, where="test")
    assert secret[:10].encode() not in clean
    assert clean.startswith(b"".join(events[:2])) and clean.endswith(events[-1])
    assert b'event: delta\r\ndata: {"id":"x","delta":"<secret:github-token:' in clean
