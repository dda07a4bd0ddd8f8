"""Provider adapters: pure parsers from wire payloads to model_io receipt types.

``find_adapter(method, host, path)`` picks the built-in adapter for an HTTP exchange;
its ``parse_request`` and ``parse_response`` give the normalized
:class:`~pytest_llmwb.schema.ModelRequest`, :class:`~pytest_llmwb.schema.ModelResponse`
and :class:`~pytest_llmwb.schema.ErrorInfo`. Every parse failure raises
:class:`AdapterError`.
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_llmwb.adapters.anthropic_messages import AnthropicMessagesAdapter
from pytest_llmwb.adapters.openai_chat import OpenAIChatAdapter
from pytest_llmwb.adapters.openai_responses import OpenAIResponsesAdapter
from pytest_llmwb.adapters.providers import ProviderAdapter, WireAdapter
from pytest_llmwb.adapters.sse import (
    AdapterError,
    SSEEvent,
    SSEParser,
    encode_event,
    parse_sse,
    serialize_sse,
)

__all__ = [
    "ADAPTERS",
    "AdapterError",
    "AnthropicMessagesAdapter",
    "OpenAIChatAdapter",
    "OpenAIResponsesAdapter",
    "ProviderAdapter",
    "SSEEvent",
    "SSEParser",
    "WireAdapter",
    "encode_event",
    "find_adapter",
    "parse_sse",
    "serialize_sse",
]

#: The built-in adapters, in matching order.
ADAPTERS: tuple[ProviderAdapter, ...] = (
    OpenAIChatAdapter(),
    OpenAIResponsesAdapter(),
    AnthropicMessagesAdapter(),
)


def find_adapter(
    method: str, host: str, path: str, adapters: Iterable[ProviderAdapter] = ADAPTERS
) -> tuple[ProviderAdapter, str] | None:
    """The first adapter matching a request and the operation it names, else ``None``."""
    for adapter in adapters:
        operation = adapter.matches(method, host, path)
        if operation is not None:
            return adapter, operation
    return None
