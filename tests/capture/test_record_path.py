"""Record mode keeps the call path to copying bytes; the receipt is built when read.

The facts a test reads while capture is on are complete and in order, a strict
scrubber still refuses a secret (when the receipt is built, never from the SDK call),
and nothing of the call is lost when its receipt is built late.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from pytest_llmwb import ModelIOFact, Run, ToolCallFact
from pytest_llmwb.capture import capture
from pytest_llmwb.exceptions import SecretFoundError
from pytest_llmwb.scrub import Scrubber
from pytest_llmwb.testing import Reply, ScriptedLLMServer

from .conftest import API_KEY

MODEL = "test-model-1"
USER: Any = [{"role": "user", "content": "Where is order A-1?"}]
#: A GitHub token shape: what a strict scrubber refuses.
LEAKED = "ghp_" + "A1b2C3d4" * 5


def _client(server: ScriptedLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)


def test_facts_read_during_capture_are_complete_and_in_call_order() -> None:
    with ScriptedLLMServer(["It shipped.", "On Monday."]) as server, _client(server) as client:
        run = Run("r")
        with run, capture(run):
            client.chat.completions.create(model=MODEL, messages=USER)
            first = run.model_calls  # read while capture is on: built now
            run.tool_call("lookup_order", {"order_id": "A-1"}, lambda: {"status": "shipped"})
            client.chat.completions.create(model=MODEL, messages=USER)
            facts = run.facts
    assert len(first) == 1 and first[0].response is not None
    assert first[0].response.content == "It shipped."
    assert [(f.seq, f.kind) for f in facts] == [
        (1, "model_io"),
        (2, "tool_call"),
        (3, "model_io"),
    ]
    second = facts[2]
    assert isinstance(second, ModelIOFact) and second.ordinal == 1
    assert second.response is not None and second.usage.input_tokens > 0
    assert second.exchange is not None and run.blob(second.exchange)
    assert first[0] is facts[0]  # built once, then kept


def test_a_stream_still_open_has_no_fact_until_it_ends() -> None:
    script = [Reply(text="one two three", chunk_size=4)]
    with ScriptedLLMServer(script) as server, _client(server) as client:
        run = Run("r")
        with run, capture(run):
            stream = client.chat.completions.create(model=MODEL, messages=USER, stream=True)
            next(iter(stream))
            assert run.model_calls == []  # in flight: no receipt yet
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            (fact,) = run.model_calls
    assert text.endswith("three")
    assert fact.response is not None and fact.response.content == "one two three"


def test_strict_secrets_refuse_a_captured_response_when_its_receipt_is_built(
    tmp_path: Path,
) -> None:
    reply = Reply(text=f"the deploy token is {LEAKED}")
    with ScriptedLLMServer([reply]) as server, _client(server) as client:
        run = Run("r", scrubber=Scrubber(strict=True))
        with run, pytest.raises(SecretFoundError) as info, capture(run):
            live = client.chat.completions.create(model=MODEL, messages=USER)
            # the caller got the live answer untouched: the check is on what is recorded
            assert live.choices[0].message.content == f"the deploy token is {LEAKED}"
    error = info.value
    assert error.rule == "github-token"
    assert "the response body of POST http://127.0.0.1:*/v1/chat/completions" in str(error)
    assert LEAKED not in str(error)
    with pytest.raises(SecretFoundError):  # the receipt is still refused when read again
        run.save(tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_a_captured_call_of_a_non_strict_run_is_scrubbed_when_built(tmp_path: Path) -> None:
    reply = Reply(text=f"the deploy token is {LEAKED}")
    with ScriptedLLMServer([reply]) as server, _client(server) as client:
        run = Run("r")
        with run, capture(run):
            client.chat.completions.create(model=MODEL, messages=USER)
        run.save(tmp_path / "bundle")
    (fact,) = run.model_calls
    assert fact.response is not None
    assert "<secret:github-token:" in fact.response.content
    stored = b"".join(p.read_bytes() for p in (tmp_path / "bundle").rglob("*") if p.is_file())
    assert LEAKED.encode() not in stored and API_KEY.encode() not in stored
    assert not any(isinstance(f, ToolCallFact) for f in run.facts)
