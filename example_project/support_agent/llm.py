"""The agent's model interface: ``complete(ModelRequest) -> ModelResponse``.

The agent calls an OpenAI-compatible chat API with the official ``openai`` SDK, as a
production agent would. pytest-llmwb captures that HTTP traffic: each call becomes a
model_io receipt (tokens, cost) on the enclosing step's node, and replay serves it
from the bundle. Nothing here is written for the tests.

By default the API is a scripted stand-in, :func:`scripted_answer` served by
:class:`~pytest_llmwb.testing.ScriptedLLMServer` on ``127.0.0.1``: a deterministic
model, so the example records on any machine without keys or network. OpenAI itself
is used only when asked for explicitly::

    LLMWB_EXAMPLE_PROVIDER=openai OPENAI_API_KEY=... pytest example_project --llmwb-record

The mere presence of an API key never sends traffic out. The SDK is handed
``OPENAI_API_KEY`` when it is set (a dummy key otherwise) even for the stand-in, so
every recording shows that no key reaches a bundle.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pytest_llmwb import ModelRequest, ModelResponse, Usage
from pytest_llmwb.testing import ReceivedRequest, Reply, ReplyUsage, ScriptedLLMServer

if TYPE_CHECKING:
    from openai import OpenAI

PROVIDER = os.environ.get("LLMWB_EXAMPLE_PROVIDER", "scripted")
if PROVIDER not in ("scripted", "openai"):
    raise RuntimeError(
        f"LLMWB_EXAMPLE_PROVIDER={PROVIDER!r}: use 'scripted' (the default) or 'openai'"
    )
MODEL = os.environ.get(
    "LLMWB_EXAMPLE_MODEL", "scripted-support-1" if PROVIDER == "scripted" else "gpt-4.1-mini"
)
#: What the SDK is given when OPENAI_API_KEY is not set: enough for the stand-in.
DUMMY_KEY = "sk-example-no-key-set"


def _words(text: str | None) -> int:
    return len((text or "").split())


def scripted_answer(request: ReceivedRequest) -> Reply:
    """The stand-in model: the same request always gets the same answer.

    It understands the agent's two prompts: classification (answers JSON with the
    intent and the order id found in the ticket) and reply drafting (writes a reply
    from the facts it is given).
    """
    messages = request.json.get("messages", [])
    system = " ".join(str(m["content"]) for m in messages if m.get("role") == "system")
    last = request.last_user_text
    if "Classify" in system:
        match = re.search(r"\b[A-Z]-\d{4}\b", last)
        lowered = last.lower()
        intent = "refund" if "refund" in lowered or "money back" in lowered else "question"
        text = json.dumps({"intent": intent, "order_id": match.group(0) if match else None})
    else:
        text = _draft(json.loads(last))
    prompt = sum(_words(str(m.get("content"))) for m in messages)
    return Reply(text=text, usage=ReplyUsage(input_tokens=prompt, output_tokens=_words(text)))


def _draft(facts: dict[str, Any]) -> str:
    name = str(facts["customer"]).split("@")[0].capitalize()
    order = facts.get("order_id")
    if order is None:
        return f"Hi {name}, thanks for writing in. Could you tell us your order number?"
    refund = facts.get("refund")
    if isinstance(refund, dict):
        return (
            f"Hi {name}, we have refunded {refund['amount']:.2f} on order {order} "
            f"(reference {refund['reference']}). It will reach your account in 3-5 days."
        )
    if facts.get("decision") == "rejected":
        return (
            f"Hi {name}, a refund on order {order} needs a closer look by our team. "
            "We will get back to you within two working days."
        )
    return f"Hi {name}, thanks for your message about order {order}. How can we help?"


_lock = threading.Lock()
_clients: dict[str | None, OpenAI] = {}
_scripted_url: str | None = None


@contextmanager
def scripted_model_api() -> Iterator[str]:
    """Serve the stand-in model on a fresh loopback server for the block; yield its URL.

    The tests use one per test (see ``tests/conftest.py``), so that the ids it gives
    (``chatcmpl-0001``, ...) start from 1 in every bundle. Outside such a block the
    stand-in is started once, on first use.
    """
    global _scripted_url
    with ScriptedLLMServer(scripted_answer) as server:
        previous, _scripted_url = _scripted_url, server.openai_base_url
        try:
            yield server.openai_base_url
        finally:
            _scripted_url = previous
            with _lock:
                client = _clients.pop(server.openai_base_url, None)
            if client is not None:
                client.close()


def _client() -> OpenAI:
    """The SDK client for the configured provider (one per base URL, kept)."""
    global _scripted_url
    from openai import OpenAI

    with _lock:
        if PROVIDER == "scripted" and _scripted_url is None:
            server = ScriptedLLMServer(scripted_answer).start()
            atexit.register(server.stop)
            _scripted_url = server.openai_base_url
        base_url = _scripted_url if PROVIDER == "scripted" else None  # None: OpenAI's API
        client = _clients.get(base_url)
        if client is None:
            api_key = os.environ.get("OPENAI_API_KEY") or DUMMY_KEY
            client = _clients[base_url] = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
            atexit.register(client.close)
        return client


def complete(request: ModelRequest) -> ModelResponse:
    """Send ``request`` to the configured provider and return its answer."""
    messages = [{"role": "system", "content": request.system or ""}]
    messages += [{"role": m.role, "content": str(m.content)} for m in request.messages]
    result = _client().chat.completions.create(
        model=request.model,
        messages=messages,  # type: ignore[arg-type]
        temperature=float(request.params.get("temperature", 0)),  # type: ignore[arg-type]
    )
    choice = result.choices[0]
    usage = result.usage
    return ModelResponse(
        id=result.id,
        model=result.model,
        content=choice.message.content,
        finish_reason=choice.finish_reason,
        usage=Usage(
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        ),
    )
