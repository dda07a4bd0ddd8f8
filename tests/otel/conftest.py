from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmwb import PolicyReviewer, Run

TRACE_ID = "4bf92f3577b34da6a50c02b4cd3b0f11"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(autouse=True)
def _clean_trace_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No TRACEPARENT from the machine running the tests."""
    monkeypatch.delenv("TRACEPARENT", raising=False)
    monkeypatch.delenv("TRACESTATE", raising=False)
    yield


def agent_run(run: Run) -> None:
    """A small agent: a model call that asks for a tool, the tool, an artifact, a gate."""
    with run.step("plan"):
        run.model_io(
            {"model": "gpt-test", "messages": [{"role": "user", "content": "refund A-1"}]},
            lambda req: {
                "id": "resp-1",
                "model": "gpt-test-2026",
                "tool_calls": [{"id": "call_1", "name": "lookup", "arguments": {"id": "A-1"}}],
                "finish_reason": "tool_calls",
                "usage": {
                    "input_tokens": 120,
                    "output_tokens": 30,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 7,
                    "reasoning_output_tokens": 12,
                },
            },
            provider="openai",
            cost=lambda req, resp: {"amount": "0.0042", "source": "test prices"},  # type: ignore[arg-type,return-value]
        )
        run.tool_call("lookup", {"id": "A-1"}, lambda: {"amount": 42})
    draft = run.artifact("reply", {"text": "refunded"}, node="answer")
    run.gate(
        "send",
        subject=draft,
        policy="small-refunds",
        reviewer=PolicyReviewer("small-refunds", lambda subject: True),
    )


def record(path: Path, name: str = "refund", **kwargs: Any) -> Path:
    with Run(name, **kwargs) as run:
        agent_run(run)
    run.save(path)
    return path
