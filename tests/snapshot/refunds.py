"""A small refund agent whose behaviour each test changes through ``REFUNDS_*`` variables.

Written as ``refunds.py`` into pytester directories (:data:`SOURCE`), or run in this
process by :func:`record` to make bundles for the CLI and git tests. Every kind of
change a reviewer meets has its knob:

- ``REFUNDS_PROMPT``: the ``answer`` node's prompt (DAG) and the system message (request);
- ``REFUNDS_LIMIT``: the approve gate's configured limit (DAG only);
- ``REFUNDS_QUESTION``: the user message (request);
- ``REFUNDS_REPLY``: the model's answer (response, tokens, cost);
- ``REFUNDS_AMOUNT``: the order amount, over the limit the gate rejects (gate path:
  no refund call);
- ``REFUNDS_SIGNATURE``: a field the host adds to the reply artifact (artifact only);
- ``REFUNDS_RATE``: the price per token (cost only);
- ``REFUNDS_LOOKUPS``: how many lookups the agent makes (an extra call).

``REFUNDS_OFFLINE=1`` makes every live call raise, as a blocked network would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SOURCE = """
import os
from decimal import Decimal

import pytest_llmwb as llmwb
from pytest_llmwb import Cost, Dag, GateDecision, ModelResponse, Reviewer, Usage


def env(name, default):
    return os.environ.get("REFUNDS_" + name, default)


def dag():
    return (
        Dag("refunds")
        .tool("lookup")
        .model("answer", prompt=env("PROMPT", "Answer in one sentence."), model="m-1")
        .gate("approve", limit=int(env("LIMIT", "100")))
        .tool("refund")
        .chain("lookup", "answer", "approve", "refund")
    )


def live(what):
    if env("OFFLINE", "0") == "1":
        raise RuntimeError(f"the network is off, yet the live {what} was called")


def price(request, response):
    tokens = response.usage.input_tokens + response.usage.output_tokens
    amount = Decimal(tokens) * Decimal(env("RATE", "0.000001"))
    return Cost(amount=str(amount.normalize()), source="test prices")


@llmwb.tool
def lookup(order_id: str) -> dict:
    live("lookup")
    return {"order_id": order_id, "amount": int(env("AMOUNT", "40"))}


@llmwb.tool
def refund(order_id: str) -> dict:
    live("refund")
    return {"refunded": order_id}


@llmwb.model(node="answer", cost=price)
def answer(request):
    live("answer")
    reply = env("REPLY", "Your refund is on its way.")
    words = len(str(request.messages[-1].content).split()) + len((request.system or "").split())
    return ModelResponse(
        content=reply,
        finish_reason="stop",
        usage=Usage(input_tokens=words, output_tokens=len(reply.split())),
    )


def policy(subject):
    ok = subject["amount"] <= int(env("LIMIT", "100"))
    reason = f"{subject['amount']} is {'within' if ok else 'over'} the limit"
    return GateDecision(
        decision="approved" if ok else "rejected",
        reviewer=Reviewer(id="limit-policy", kind="policy"),
        reason=reason,
    )


def handle(order_id="A1"):
    llmwb.declare(dag())
    for _ in range(int(env("LOOKUPS", "1"))):
        order = lookup(order_id)
    response = answer(
        {
            "model": "m-1",
            "system": env("PROMPT", "Answer in one sentence."),
            "messages": [{"role": "user", "content": env("QUESTION", "Where is my refund?")}],
        }
    )
    reply = llmwb.artifact(
        "reply",
        {"text": response.content, "signature": env("SIGNATURE", "The support team")},
        node="answer",
    )
    decision = llmwb.gate("approve", subject=order, reviewer=policy)
    if decision.decision == "approved":
        refund(order_id)
    return reply
"""

#: Defaults of the knobs, for tests that set them one by one.
KNOBS = ("PROMPT", "LIMIT", "QUESTION", "REPLY", "AMOUNT", "SIGNATURE", "RATE", "LOOKUPS")


def agent() -> dict[str, Any]:
    """The agent module's namespace, loaded in this process."""
    namespace: dict[str, Any] = {"__name__": "refunds"}
    exec(compile(SOURCE, "refunds.py", "exec"), namespace)
    return namespace


def record(path: Path, name: str = "refunds", **knobs: str) -> Path:
    """Record one run of the agent with ``knobs`` (``reply="..."``) as a bundle at ``path``."""
    from pytest_llmwb import Run

    saved = {k: os.environ.get(f"REFUNDS_{k}") for k in KNOBS}
    try:
        for key in KNOBS:
            os.environ.pop(f"REFUNDS_{key}", None)
        for key, value in knobs.items():
            os.environ[f"REFUNDS_{key.upper()}"] = value
        with Run(name, labels={"test": name}) as run:
            agent()["handle"]()
        run.save(path)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(f"REFUNDS_{key}", None)
            else:
                os.environ[f"REFUNDS_{key}"] = value
    return path
