"""pytest-llmwb: record, replay and prove LLM agent runs.

The public API is re-exported here and loaded on first access, so that importing the
package (which pytest does for every suite, through the plugin entry point) stays
cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .dag import Dag
    from .exceptions import (
        BundleConflictError,
        BundleCorruptError,
        BundleError,
        BundleNotFoundError,
        BundleWriteError,
        ConfigError,
        DagDefinitionError,
        DagDriftError,
        DagError,
        DagFrozenError,
        LlmwbError,
        LlmwbWarning,
        MissingCallsError,
        NoActiveRunError,
        OrderDriftError,
        PayloadDriftError,
        RecordedCallError,
        ReplayDriftError,
        SchemaVersionError,
        UndeclaredNodeError,
        UnexpectedCallError,
        UnknownFactKindError,
    )
    from .recording import Run, artifact, current_run, declare, gate, model, step, tool
    from .replay import ReplayIndex
    from .schema import (
        ArtifactFact,
        Cost,
        DagSnapshot,
        ErrorFact,
        GateDecision,
        GateFact,
        Message,
        ModelIOFact,
        ModelRequest,
        ModelResponse,
        PolicyRef,
        Reviewer,
        StepFact,
        ToolCall,
        ToolCallFact,
        ToolSpec,
        Usage,
    )
    from .store import Bundle, load_bundle

_EXPORTS = {
    "Dag": "dag",
    "Run": "recording",
    "artifact": "recording",
    "current_run": "recording",
    "gate": "recording",
    "declare": "recording",
    "model": "recording",
    "step": "recording",
    "tool": "recording",
    "ReplayIndex": "replay",
    "Bundle": "store",
    "load_bundle": "store",
    **dict.fromkeys(
        [
            "ArtifactFact",
            "Cost",
            "DagSnapshot",
            "ErrorFact",
            "GateDecision",
            "GateFact",
            "Message",
            "ModelIOFact",
            "ModelRequest",
            "ModelResponse",
            "PolicyRef",
            "Reviewer",
            "StepFact",
            "ToolCall",
            "ToolCallFact",
            "ToolSpec",
            "Usage",
        ],
        "schema",
    ),
    **dict.fromkeys(
        [
            "BundleConflictError",
            "BundleCorruptError",
            "BundleError",
            "BundleNotFoundError",
            "BundleWriteError",
            "ConfigError",
            "DagDefinitionError",
            "DagDriftError",
            "DagError",
            "DagFrozenError",
            "LlmwbError",
            "LlmwbWarning",
            "MissingCallsError",
            "NoActiveRunError",
            "OrderDriftError",
            "PayloadDriftError",
            "RecordedCallError",
            "ReplayDriftError",
            "SchemaVersionError",
            "UndeclaredNodeError",
            "UnexpectedCallError",
            "UnknownFactKindError",
        ],
        "exceptions",
    ),
}

__all__ = [
    "__version__",
    "ArtifactFact",
    "Bundle",
    "BundleConflictError",
    "BundleCorruptError",
    "BundleError",
    "BundleNotFoundError",
    "BundleWriteError",
    "ConfigError",
    "Cost",
    "Dag",
    "DagDefinitionError",
    "DagDriftError",
    "DagError",
    "DagFrozenError",
    "DagSnapshot",
    "ErrorFact",
    "GateDecision",
    "GateFact",
    "LlmwbError",
    "LlmwbWarning",
    "Message",
    "MissingCallsError",
    "ModelIOFact",
    "ModelRequest",
    "ModelResponse",
    "NoActiveRunError",
    "OrderDriftError",
    "PayloadDriftError",
    "PolicyRef",
    "RecordedCallError",
    "ReplayDriftError",
    "ReplayIndex",
    "Reviewer",
    "Run",
    "SchemaVersionError",
    "StepFact",
    "ToolCall",
    "ToolCallFact",
    "ToolSpec",
    "UndeclaredNodeError",
    "UnexpectedCallError",
    "UnknownFactKindError",
    "Usage",
    "artifact",
    "current_run",
    "declare",
    "gate",
    "load_bundle",
    "model",
    "step",
    "tool",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_llmwb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
