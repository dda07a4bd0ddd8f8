"""Shared fixtures: a small recorded run for the core layers, an instrumented agent for pytester."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_llmwb import Dag, GateDecision, ModelResponse, Reviewer, Run

SAMPLE_DAG = (
    Dag("sample")
    .model("answer", prompt="Answer: {question}", model="m-1")
    .tool("lookup", description="find an order")
    .gate("approve", policy="refunds")
    .chain("lookup", "answer", "approve")
)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose inner sessions are plain ones, also when this suite runs under ``-n``.

    pytest-xdist sets ``PYTEST_XDIST_*`` in each worker's environment; an inner session
    that inherits them takes itself for a worker (syrupy then reports nothing, pytest-llmwb
    leaves the unused-bundle check to a controller that does not exist).
    """
    for name in [n for n in os.environ if n.startswith("PYTEST_XDIST_")]:
        monkeypatch.delenv(name)
    return pytester


def run_sample(run: Run, *, question: str = "where is A1?", reply: str = "shipped") -> None:
    """A short workflow touching every fact kind: tool, model, artifact, gate."""
    order = run.tool_call("lookup", {"order_id": "A1"}, lambda: {"status": "shipped"})
    run.model_io(
        {"model": "m-1", "messages": [{"role": "user", "content": f"{question} {order}"}]},
        lambda request: ModelResponse(content=reply, finish_reason="stop"),
        node="answer",
    )
    draft = run.artifact("reply", {"text": reply}, node="answer")
    run.gate(
        "approve",
        subject=draft,
        policy="refunds",
        reviewer=lambda subject: GateDecision(
            decision="approved", reviewer=Reviewer(id="bot", kind="policy")
        ),
    )


@pytest.fixture
def record_sample() -> Callable[..., Run]:
    """Record the sample workflow in a fresh run and return the run (not yet saved)."""

    def record(**kwargs: Any) -> Run:
        with Run("sample", dag=SAMPLE_DAG) as run:
            run_sample(run, **kwargs)
        return run

    return record


@pytest.fixture
def sample_bundle(tmp_path: Path, record_sample: Callable[..., Run]) -> Path:
    """A bundle of the sample workflow on disk."""
    path = tmp_path / "bundles" / "sample"
    record_sample().save(path)
    return path


AGENT_SOURCE = """
import os

from pytest_llmwb import ModelRequest, ModelResponse, model, tool


def _live(what):
    if os.environ.get("AGENT_OFFLINE") == "1":
        raise RuntimeError(f"network is off, yet the live {what} was called")
    with open(os.environ["AGENT_LOG"], "a") as log:
        log.write(what + "\\n")


@tool
def lookup(order_id: str) -> dict:
    _live(f"lookup {order_id}")
    return {"order_id": order_id, "status": "shipped"}


@model(node="answer")
def answer(request: ModelRequest) -> ModelResponse:
    _live("answer")
    return ModelResponse(content="done: " + str(request.messages[-1].content))


def run_agent(question, orders=("A1",)):
    found = [lookup(order) for order in orders]
    message = {"role": "user", "content": f"{question} {found}"}
    return answer({"model": "m-1", "messages": [message]})
"""


@dataclass
class Agent:
    """The instrumented ``agent`` module written into a pytester directory."""

    log: Path
    monkeypatch: pytest.MonkeyPatch

    def live_calls(self) -> list[str]:
        """Live calls made since the last :meth:`reset`."""
        return self.log.read_text().splitlines() if self.log.exists() else []

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)

    def offline(self) -> None:
        """Make every live call raise, as a blocked network would."""
        self.monkeypatch.setenv("AGENT_OFFLINE", "1")


@pytest.fixture
def agent(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Agent:
    pytester.makepyfile(agent=AGENT_SOURCE)
    log = pytester.path / "live.log"
    monkeypatch.setenv("AGENT_LOG", str(log))
    monkeypatch.delenv("AGENT_OFFLINE", raising=False)
    # pytester drops modules first imported by an inner run, so hypothesis's plugin
    # would re-import hypothesis (~0.7 s) in every inner session; it is not needed there
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    return Agent(log, monkeypatch)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path, to prove a directory unchanged."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def snapshot_tree() -> Callable[[Path], dict[str, bytes]]:
    return tree_bytes
