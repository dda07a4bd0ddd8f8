"""Test helpers shared by pytest-llmwb's own suite and its users.

:class:`ScriptedLLMServer` is an OpenAI- and Anthropic-compatible HTTP server on
loopback that answers the real SDKs from a script. Standard library only.
"""

from pytest_llmwb.testing.llm_server import (
    CREATED_AT,
    Api,
    ErrorReply,
    FinishReason,
    ReceivedRequest,
    Reply,
    ReplyUsage,
    Script,
    ScriptedLLMServer,
    ScriptStep,
    ToolCallReply,
    echo,
)

__all__ = [
    "CREATED_AT",
    "Api",
    "ErrorReply",
    "FinishReason",
    "ReceivedRequest",
    "Reply",
    "ReplyUsage",
    "Script",
    "ScriptStep",
    "ScriptedLLMServer",
    "ToolCallReply",
    "echo",
]
