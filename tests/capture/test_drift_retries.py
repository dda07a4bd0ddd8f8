"""Drift reaches the test at once through SDKs that retry, back off and wrap errors.

Each client runs with its default retries (or a retrying adapter): the changed request
must fail the first call with the drift itself, never a call at "ordinal 1/2" the user
did not make, never an ``APIConnectionError``, and without sleeping through back-offs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import anyio
import httpx
import openai
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pytest_llmwb import Run
from pytest_llmwb.capture import capture
from pytest_llmwb.exceptions import PayloadDriftError
from pytest_llmwb.testing import ScriptedLLMServer

from .conftest import API_KEY

Agent = Callable[[str, str], Any]


def _openai(base: str, prompt: str) -> Any:
    with openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY) as c:  # default retries
        return c.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}])


def _anthropic(base: str, prompt: str) -> Any:
    with anthropic.Anthropic(base_url=base, api_key=API_KEY) as c:  # default retries
        return c.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": prompt}]
        )


def _anthropic_stream(base: str, prompt: str) -> Any:
    messages: Any = [{"role": "user", "content": prompt}]
    with (
        anthropic.Anthropic(base_url=base, api_key=API_KEY, max_retries=5) as c,
        c.messages.stream(model="m", max_tokens=10, messages=messages) as stream,
    ):
        return stream.get_final_message()


def _anthropic_async(base: str, prompt: str) -> Any:
    async def main() -> Any:
        async with anthropic.AsyncAnthropic(base_url=base, api_key=API_KEY) as c:
            return await c.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": prompt}]
            )

    return asyncio.run(main())


def _openai_async(base: str, prompt: str) -> Any:
    async def main() -> Any:
        async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY) as c:
            return await c.chat.completions.create(
                model="m", messages=[{"role": "user", "content": prompt}]
            )

    return asyncio.run(main())


def _httpx(base: str, prompt: str) -> Any:
    transport = httpx.HTTPTransport(retries=3)
    with httpx.Client(transport=transport) as c:
        return c.post(f"{base}/v1/chat/completions", json={"model": "m", "input": prompt}).json()


def _requests(base: str, prompt: str) -> Any:
    with requests.Session() as s:
        retry = Retry(total=3, backoff_factor=1, allowed_methods=None)
        s.mount("http://", HTTPAdapter(max_retries=retry))
        return s.post(f"{base}/tools/ask", json={"prompt": prompt}, timeout=5).status_code


AGENTS: dict[str, Agent] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "anthropic-stream": _anthropic_stream,
    "anthropic-async": _anthropic_async,
    "openai-async": _openai_async,
    "httpx": _httpx,
    "requests": _requests,
}


@pytest.mark.parametrize("name", list(AGENTS))
def test_a_changed_request_fails_at_once_with_the_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    agent = AGENTS[name]
    with ScriptedLLMServer() as server:
        base = server.base_url
        run = Run("record")
        with run, capture(run):
            agent(base, "Where is A-1?")
        run.save(tmp_path / "bundle")
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    slept: list[float] = []  # the SDKs back off with time.sleep / anyio.sleep

    async def async_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.setattr(anyio, "sleep", async_sleep)
    with replay, capture(replay), pytest.raises(PayloadDriftError) as raised:
        agent(base, "Where is B-2?")
    monkeypatch.undo()
    assert slept == []  # no back-off
    error = raised.value
    assert type(error).__name__ == "PayloadDriftError"
    assert error.ordinal == 0  # the call the test made, not a retry of it
    first_path = error.changes[0][0]
    assert first_path.endswith(("/content", "/input", "/prompt"))
    assert "'Where is A-1?' -> 'Where is B-2?'" in str(error)
    assert replay.raised_drift == [error]  # one drift, the one the test saw


DRIFTING = """
import os

import anthropic
import pytest

from pytest_llmwb.testing import ScriptedLLMServer

PROMPT = "Where is A-1?"


@pytest.fixture
def base_url():
    if os.environ.get("SERVE") == "1":
        with ScriptedLLMServer() as server:
            yield server.base_url
    else:
        yield "http://127.0.0.1:9"


@pytest.mark.llmwb
def test_sdk(base_url):
    with anthropic.Anthropic(base_url=base_url, api_key="sk-x") as client:
        client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": PROMPT}]
        )


@pytest.mark.llmwb
def test_wrapped(base_url):
    try:
        with anthropic.Anthropic(base_url=base_url, api_key="sk-x", max_retries=0) as client:
            client.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": PROMPT}]
            )
    except Exception as exc:  # a framework that wraps every error in its own
        raise RuntimeError("the agent failed") from exc
"""


def test_the_short_summary_names_the_drift_node_and_path(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:randomly")
    monkeypatch.setenv("CI", "true")  # the summary line is not cut at the terminal width
    pytester.makepyfile(test_agent=DRIFTING)
    monkeypatch.setenv("SERVE", "1")
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=2)
    monkeypatch.setenv("SERVE", "0")
    pytester.makepyfile(test_agent=DRIFTING.replace("Where is A-1?", "Where is B-2?"))
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    line = (
        "FAILED test_agent.py::test_{} - PayloadDriftError: request drift at node "
        "'anthropic.chat', 1st call (ordinal 0)*; changed: /messages/0/content"
    )
    result.stdout.fnmatch_lines([line.format("sdk"), line.format("wrapped")])
    summary = result.stdout.str().split("short test summary info")[1]
    assert "APIConnectionError" not in summary and "RuntimeError" not in summary
    assert "ordinal 1" not in result.stdout.str() and "ordinal 2" not in result.stdout.str()
