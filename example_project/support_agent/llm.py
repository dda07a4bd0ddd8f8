"""The agent's model interface: ``complete(ModelRequest) -> ModelResponse``.

The default provider is :class:`ScriptedModel`, a deterministic stand-in for an LLM,
so the example records on any machine without keys or network. A live provider is
used only when asked for explicitly::

    LLMWB_EXAMPLE_PROVIDER=openai OPENAI_API_KEY=... pytest example_project --llmwb-record

The mere presence of an API key in the environment never sends traffic out.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal

import pytest_llmwb as llmwb
from pytest_llmwb import Cost, ModelRequest, ModelResponse, Usage

PROVIDER = os.environ.get("LLMWB_EXAMPLE_PROVIDER", "scripted")
if PROVIDER not in ("scripted", "openai"):
    raise RuntimeError(
        f"LLMWB_EXAMPLE_PROVIDER={PROVIDER!r}: use 'scripted' (the default) or 'openai'"
    )
MODEL = os.environ.get(
    "LLMWB_EXAMPLE_MODEL", "scripted-support-1" if PROVIDER == "scripted" else "gpt-4.1-mini"
)

#: USD per million tokens (input, output). The source is recorded with every cost.
PRICES = {"scripted-support-1": ("0.50", "1.50"), "gpt-4.1-mini": ("0.40", "1.60")}
PRICE_SOURCE = "example_project prices 2026-11"


def price(request: ModelRequest, response: ModelResponse) -> Cost | None:
    """The cost of one call from :data:`PRICES`, or ``None`` for an unknown model."""
    rates = PRICES.get(request.model)
    if rates is None:
        return None
    per_million = Decimal(1_000_000)
    amount = (
        Decimal(response.usage.input_tokens) * Decimal(rates[0])
        + Decimal(response.usage.output_tokens) * Decimal(rates[1])
    ) / per_million
    return Cost(amount=str(amount.normalize()), currency="USD", source=PRICE_SOURCE)


def _words(text: str | None) -> int:
    return len((text or "").split())


class ScriptedModel:
    """A deterministic model: the same request always gets the same response.

    It understands the agent's two prompts: classification (answers JSON with the
    intent and the order id found in the ticket) and reply drafting (writes a reply
    from the facts it is given).
    """

    def __call__(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request``."""
        last = str(request.messages[-1].content if request.messages else "")
        if "Classify" in (request.system or ""):
            match = re.search(r"\b[A-Z]-\d{4}\b", last)
            intent = (
                "refund" if "refund" in last.lower() or "money back" in last.lower() else "question"
            )
            content = json.dumps({"intent": intent, "order_id": match.group(0) if match else None})
        else:
            content = self._draft(json.loads(last))
        prompt_words = _words(request.system) + sum(
            _words(str(m.content)) for m in request.messages
        )
        return ModelResponse(
            model=request.model,
            content=content,
            finish_reason="stop",
            usage=Usage(input_tokens=prompt_words, output_tokens=_words(content)),
        )

    @staticmethod
    def _draft(facts: dict[str, object]) -> str:
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


_scripted = ScriptedModel()


@llmwb.model(provider="scripted", cost=price)
def _complete_scripted(request: ModelRequest) -> ModelResponse:
    return _scripted(request)


@llmwb.model(provider="openai", cost=price)
def _complete_openai(request: ModelRequest) -> ModelResponse:
    from openai import OpenAI  # only when the live provider was chosen explicitly

    client = OpenAI()
    messages = [{"role": "system", "content": request.system or ""}]
    messages += [{"role": m.role, "content": str(m.content)} for m in request.messages]
    result = client.chat.completions.create(
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


def complete(request: ModelRequest) -> ModelResponse:
    """Send ``request`` to the configured provider (recorded when a run is active)."""
    if PROVIDER == "openai":
        return _complete_openai(request)
    return _complete_scripted(request)
