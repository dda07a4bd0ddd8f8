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
    from .assertions import (
        assert_gate,
        expect_gate,
    )
    from .costs import (
        CostSummary,
    )
    from .dag import (
        Dag,
    )
    from .exceptions import (
        ArtifactSchemaError,
        BudgetExceededError,
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
        GateDecisionError,
        GateSubjectError,
        GoldenMismatchError,
        LlmwbError,
        LlmwbWarning,
        MissingCallsError,
        NoActiveRunError,
        OrderDriftError,
        PayloadDriftError,
        PriceFileError,
        RecordedCallError,
        ReplayDriftError,
        ResultTypeError,
        SchemaVersionError,
        SecretFoundError,
        UndeclaredNodeError,
        UnexpectedCallError,
        UnknownFactKindError,
    )
    from .recording import (
        Run,
        artifact,
        current_run,
        declare,
        gate,
        model,
        require_run,
        step,
        tool,
    )
    from .replay import (
        ReplayIndex,
    )
    from .reviewers import (
        CallbackReviewer,
        GateRequest,
        PolicyReviewer,
        ScriptedReviewer,
        TerminalReviewer,
    )
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
        SubjectRef,
        ToolCall,
        ToolCallFact,
        ToolSpec,
        Usage,
    )
    from .scrub import (
        Scrubber,
        SecretRule,
    )
    from .store import (
        Bundle,
        load_bundle,
    )

_EXPORTS: dict[str, str] = {
    "Dag": "dag",
    "Run": "recording",
    "artifact": "recording",
    "current_run": "recording",
    "declare": "recording",
    "gate": "recording",
    "require_run": "recording",
    "model": "recording",
    "step": "recording",
    "tool": "recording",
    "ReplayIndex": "replay",
    "Bundle": "store",
    "load_bundle": "store",
    "CallbackReviewer": "reviewers",
    "GateRequest": "reviewers",
    "PolicyReviewer": "reviewers",
    "ScriptedReviewer": "reviewers",
    "TerminalReviewer": "reviewers",
    "assert_gate": "assertions",
    "expect_gate": "assertions",
    "CostSummary": "costs",
    "ArtifactFact": "schema",
    "Cost": "schema",
    "DagSnapshot": "schema",
    "ErrorFact": "schema",
    "GateDecision": "schema",
    "GateFact": "schema",
    "Message": "schema",
    "ModelIOFact": "schema",
    "ModelRequest": "schema",
    "ModelResponse": "schema",
    "PolicyRef": "schema",
    "Reviewer": "schema",
    "StepFact": "schema",
    "SubjectRef": "schema",
    "ToolCall": "schema",
    "ToolCallFact": "schema",
    "ToolSpec": "schema",
    "Usage": "schema",
    "ArtifactSchemaError": "exceptions",
    "BudgetExceededError": "exceptions",
    "BundleConflictError": "exceptions",
    "BundleCorruptError": "exceptions",
    "BundleError": "exceptions",
    "BundleNotFoundError": "exceptions",
    "BundleWriteError": "exceptions",
    "ConfigError": "exceptions",
    "DagDefinitionError": "exceptions",
    "DagDriftError": "exceptions",
    "DagError": "exceptions",
    "DagFrozenError": "exceptions",
    "GateDecisionError": "exceptions",
    "GateSubjectError": "exceptions",
    "GoldenMismatchError": "exceptions",
    "LlmwbError": "exceptions",
    "LlmwbWarning": "exceptions",
    "MissingCallsError": "exceptions",
    "NoActiveRunError": "exceptions",
    "OrderDriftError": "exceptions",
    "PayloadDriftError": "exceptions",
    "PriceFileError": "exceptions",
    "SecretFoundError": "exceptions",
    "Scrubber": "scrub",
    "SecretRule": "scrub",
    "RecordedCallError": "exceptions",
    "ReplayDriftError": "exceptions",
    "ResultTypeError": "exceptions",
    "SchemaVersionError": "exceptions",
    "UndeclaredNodeError": "exceptions",
    "UnexpectedCallError": "exceptions",
    "UnknownFactKindError": "exceptions",
}

__all__ = [
    "__version__",
    "ArtifactFact",
    "ArtifactSchemaError",
    "BudgetExceededError",
    "Bundle",
    "BundleConflictError",
    "BundleCorruptError",
    "BundleError",
    "BundleNotFoundError",
    "BundleWriteError",
    "CallbackReviewer",
    "ConfigError",
    "Cost",
    "CostSummary",
    "Dag",
    "DagDefinitionError",
    "DagDriftError",
    "DagError",
    "DagFrozenError",
    "DagSnapshot",
    "ErrorFact",
    "GateDecision",
    "GateDecisionError",
    "GateFact",
    "GateRequest",
    "GateSubjectError",
    "GoldenMismatchError",
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
    "PriceFileError",
    "PolicyRef",
    "PolicyReviewer",
    "RecordedCallError",
    "ReplayDriftError",
    "ResultTypeError",
    "ReplayIndex",
    "Reviewer",
    "Run",
    "SchemaVersionError",
    "Scrubber",
    "SecretFoundError",
    "SecretRule",
    "ScriptedReviewer",
    "StepFact",
    "SubjectRef",
    "TerminalReviewer",
    "ToolCall",
    "ToolCallFact",
    "ToolSpec",
    "UndeclaredNodeError",
    "UnexpectedCallError",
    "UnknownFactKindError",
    "Usage",
    "artifact",
    "assert_gate",
    "current_run",
    "declare",
    "expect_gate",
    "gate",
    "load_bundle",
    "require_run",
    "model",
    "step",
    "tool",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_llmwb' has no attribute {name!r}")
    # Not cached in globals(): resolving through sys.modules keeps one class per name
    # even when a test harness unloads and re-imports the implementation modules.
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return __all__
