"""The bundle schema: manifest, DAG snapshot and every fact kind, as pydantic models.

Pure data, no I/O. Field names follow the OpenTelemetry GenAI semantic conventions
where one exists (``input_tokens``, ``cache_read_input_tokens``, ``finish_reason``,
``operation`` as ``gen_ai.operation.name``, ``provider`` as ``gen_ai.provider.name``).

Facts are a discriminated union on ``kind``; :data:`Fact` validates any of them.
Fields listed in :data:`VOLATILE_FIELDS` (wall times, durations, stream chunk timings,
trace and span ids) are kept out of ``facts.jsonl`` so that re-recording unchanged
behaviour gives byte-identical files.
"""

from __future__ import annotations

import decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, field_validator

__all__ = [
    "FACT_KINDS",
    "GATE_DECISIONS",
    "OTEL_GENAI_SEMCONV_VERSION",
    "SCHEMA_VERSION",
    "VOLATILE_FIELDS",
    "ArtifactFact",
    "Cost",
    "DagEdge",
    "DagNode",
    "DagSnapshot",
    "ErrorFact",
    "ErrorInfo",
    "Fact",
    "GateDecision",
    "GateFact",
    "Manifest",
    "Message",
    "ModelIOFact",
    "ModelRequest",
    "ModelResponse",
    "PolicyRef",
    "Reviewer",
    "StepFact",
    "SubjectRef",
    "ToolCall",
    "ToolCallFact",
    "ToolSpec",
    "Usage",
    "fact_adapter",
    "json_schema",
]

#: Version of the on-disk format. Bumped on any incompatible change.
SCHEMA_VERSION = 2
#: The OpenTelemetry GenAI semantic conventions the field names follow.
OTEL_GENAI_SEMCONV_VERSION = "1.37.0"

#: Per-fact values that differ between two recordings of identical behaviour.
VOLATILE_FIELDS = frozenset({"trace_id", "span_id", "at", "duration_ms", "timing"})

NodeKind = Literal["model", "tool", "gate", "function", "agent", "subgraph"]
GateDecisionValue = Literal["approved", "rejected", "edited", "escalated", "timed_out"]
GATE_DECISIONS: tuple[str, ...] = ("approved", "rejected", "edited", "escalated", "timed_out")
ReviewerKind = Literal["human", "policy", "test"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- DAG snapshot ----------------------------------------------------------------------


class DagNode(_Model):
    """One node of the workflow: its kind, its config and the digest of each config key."""

    id: str = Field(min_length=1)
    kind: NodeKind
    config: dict[str, JsonValue] = Field(default_factory=dict)
    digests: dict[str, str] = Field(default_factory=dict)
    digest: str


class DagEdge(_Model):
    """A directed edge ``source -> target`` between two declared nodes."""

    source: str
    target: str


class DagSnapshot(_Model):
    """The workflow the host declared as live for a run, frozen at run start.

    ``declared`` is false when the host declared no DAG and the snapshot was derived
    from the nodes the run's facts used.
    """

    name: str
    declared: bool = True
    nodes: list[DagNode]
    edges: list[DagEdge] = Field(default_factory=list)
    digest: str

    def node(self, node_id: str) -> DagNode | None:
        """The node called ``node_id``, or ``None``."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None

    @property
    def node_ids(self) -> list[str]:
        """Ids of all nodes, in declaration order."""
        return [node.id for node in self.nodes]


# --- model_io receipts -----------------------------------------------------------------


class ToolCall(_Model):
    """A tool call requested by a model (``gen_ai.tool.call.*``)."""

    id: str | None = None
    name: str
    arguments: JsonValue = None


class Message(_Model):
    """One message of a chat request: role, content (text or provider parts), tool calls."""

    role: str
    content: JsonValue = None
    name: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None


class ToolSpec(_Model):
    """A tool offered to the model (``gen_ai.tool.definitions``)."""

    name: str
    description: str | None = None
    parameters: JsonValue = None


class ModelRequest(_Model):
    """A normalized model request: what the request digest is computed over.

    ``params`` holds sampling parameters under their OpenTelemetry names without the
    ``gen_ai.request.`` prefix (``temperature``, ``top_p``, ``max_tokens``, ``seed``,
    ``stop_sequences``, ...). ``extra`` keeps provider-specific fields.
    """

    model: str
    messages: list[Message] = Field(default_factory=list)
    system: str | None = None
    tools: list[ToolSpec] = Field(default_factory=list)
    params: dict[str, JsonValue] = Field(default_factory=dict)
    stream: bool = False
    extra: dict[str, JsonValue] = Field(default_factory=dict)


class Usage(_Model):
    """Tokens by category. ``input_tokens`` includes cached input, as in OpenTelemetry.

    ``raw`` keeps the provider's own usage object, since providers disagree on
    categories.
    """

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    reasoning_output_tokens: int = Field(default=0, ge=0)
    raw: dict[str, JsonValue] = Field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class ModelResponse(_Model):
    """A normalized model response: text, tool calls, finish reason, usage, stream chunks."""

    id: str | None = None
    model: str | None = None
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    chunks: list[str] | None = None
    extra: dict[str, JsonValue] = Field(default_factory=dict)


class Cost(_Model):
    """Money spent on one call, as a decimal string, with the price source that priced it."""

    amount: str
    currency: str = "USD"
    source: str

    @field_validator("amount")
    @classmethod
    def _decimal_string(cls, value: str) -> str:
        try:
            number = decimal.Decimal(value)
        except decimal.InvalidOperation:
            raise ValueError(f"cost amount must be a decimal string, got {value!r}") from None
        if not number.is_finite():
            raise ValueError(f"cost amount must be finite, got {value!r}")
        return value

    @property
    def decimal(self) -> decimal.Decimal:
        """The amount as a :class:`decimal.Decimal`."""
        return decimal.Decimal(self.amount)


class ErrorInfo(_Model):
    """An exception raised by a call: its qualified type name and message."""

    type: str
    message: str


# --- gates -----------------------------------------------------------------------------


class PolicyRef(_Model):
    """The policy a gate decision was made under."""

    id: str
    version: str = "1"


class _Unsigned:
    """Leave the signature fields out of the repr while they are unset.

    Most decisions are not signed; their repr stays as short as it was before
    signatures existed.
    """

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            if not (name in ("keyid", "signature") and value is None):
                yield name, value


class Reviewer(_Unsigned, _Model):
    """Who decided: an id and a kind (``human``, ``policy`` or ``test``).

    ``keyid`` is set when the reviewer signs decisions with an Ed25519 key (see
    :class:`~pytest_llmwb.reviewers.SignedReviewer`): the key id names the key; the
    key that verifies it always comes from the verifier's trust store.
    """

    id: str
    kind: ReviewerKind
    keyid: str | None = None


class SubjectRef(_Model):
    """Exactly what a gate reviewed: the digest of the subject and where it came from.

    ``kind`` is ``artifact`` (with ``name`` and ``revision``), ``tool_call`` (with the
    ``seq`` of the fact) or ``value`` (any JSON shown to the reviewer, kept in
    ``value`` so that the bundle alone says what was reviewed).
    """

    kind: Literal["artifact", "tool_call", "value"]
    digest: str
    name: str | None = None
    revision: int | None = None
    seq: int | None = None
    value: JsonValue = None


class GateDecision(_Unsigned, _Model):
    """The outcome of a gate as returned by a reviewer."""

    decision: GateDecisionValue
    reviewer: Reviewer
    reason: str | None = None
    edit: JsonValue = None
    #: The reviewer's Ed25519 signature (base64) of the decision statement.
    signature: str | None = None


# --- facts -----------------------------------------------------------------------------


class _FactBase(_Model):
    seq: int = Field(ge=1)
    node: str
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    span_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    at: str | None = None
    duration_ms: float | None = None
    #: Calls captured over HTTP: seconds from the request to its response headers, then
    #: to each recorded chunk of the body (replayed with ``--llmwb-replay-timing``).
    timing: list[float] | None = None


class StepFact(_FactBase):
    """A node's execution started or ended."""

    kind: Literal["step"] = "step"
    phase: Literal["start", "end"]
    status: Literal["ok", "error"] | None = None


class ModelIOFact(_FactBase):
    """The receipt of one model call.

    ``exchange``, for calls captured at the HTTP layer, is the digest of the blob that
    holds the scrubbed wire exchange, which replay serves byte for byte.
    """

    kind: Literal["model_io"] = "model_io"
    ordinal: int = Field(ge=0)
    provider: str
    operation: str = "chat"
    request: ModelRequest
    request_digest: str
    response: ModelResponse | None = None
    error: ErrorInfo | None = None
    cost: Cost | None = None
    exchange: str | None = None
    #: Made concurrently with other calls (threads or tasks of the run): replay pairs
    #: it with a live call by request digest, not by ordinal (see docs/concepts.md).
    concurrent: bool = False

    @property
    def usage(self) -> Usage:
        """Usage of the response (zero when the call failed)."""
        return self.response.usage if self.response is not None else Usage()


class ToolCallFact(_FactBase):
    """One tool call: its arguments and result (or error)."""

    kind: Literal["tool_call"] = "tool_call"
    ordinal: int = Field(ge=0)
    tool: str
    arguments: dict[str, JsonValue]
    request_digest: str
    result: JsonValue = None
    error: ErrorInfo | None = None
    exchange: str | None = None
    #: Made concurrently with other calls (threads or tasks of the run): replay pairs
    #: it with a live call by request digest, not by ordinal (see docs/concepts.md).
    concurrent: bool = False


class GateFact(_Unsigned, _FactBase):
    """A gate decision, bound to the digest of what was reviewed."""

    kind: Literal["gate"] = "gate"
    ordinal: int = Field(ge=0)
    gate_id: str
    policy: PolicyRef | None = None
    subject: SubjectRef | None = None
    decision: GateDecisionValue
    reviewer: Reviewer
    reason: str | None = None
    edit: JsonValue = None
    #: Made concurrently with other calls (threads or tasks of the run): replay pairs
    #: it with a live call by request digest, not by ordinal (see docs/concepts.md).
    concurrent: bool = False
    #: The reviewer's Ed25519 signature (base64) of the decision statement: gate id,
    #: decision, subject digest, policy, reviewer, reason and edit (see docs/evidence.md).
    signature: str | None = None


class ArtifactFact(_FactBase):
    """A structured output with a revision, a content digest and its schema.

    ``derived_from`` lists the seqs of the facts it was made from; ``supersedes`` is
    the seq of the revision it replaces (set when a gate edits an artifact).
    """

    kind: Literal["artifact"] = "artifact"
    name: str
    revision: int = Field(ge=1)
    content: JsonValue
    content_digest: str
    schema_ref: str | None = None
    schema_digest: str | None = None
    derived_from: list[int] = Field(default_factory=list)
    supersedes: int | None = None


class ErrorFact(_FactBase):
    """An exception that escaped a node."""

    kind: Literal["error"] = "error"
    type: str
    message: str


Fact = Annotated[
    StepFact | ModelIOFact | ToolCallFact | GateFact | ArtifactFact | ErrorFact,
    Field(discriminator="kind"),
]
FACT_KINDS: tuple[str, ...] = ("step", "model_io", "tool_call", "gate", "artifact", "error")
CallFact = ModelIOFact | ToolCallFact | GateFact

_fact_adapter: TypeAdapter[Any] | None = None


def fact_adapter() -> TypeAdapter[Any]:
    """The (cached) adapter that validates any fact."""
    global _fact_adapter
    if _fact_adapter is None:
        _fact_adapter = TypeAdapter(Fact)
    return _fact_adapter


# --- manifest --------------------------------------------------------------------------


class Manifest(_Model):
    """The bundle's table of contents and consistency checks.

    ``facts_digest`` is the sha256 of ``facts.jsonl`` as stored and ``fact_count`` its
    number of records, so that a truncated or edited file is detected on load.
    ``files`` holds the sha256 of each other file as stored (``dag.json``,
    ``facts.jsonl``, ``volatile.json``) and ``blobs`` names every file of ``blobs/`` by
    the sha256 of its bytes: together they cover every file of the bundle.
    """

    schema_version: int
    name: str
    producer: str
    dag_digest: str
    fact_count: int = Field(ge=0)
    facts_digest: str
    files: dict[str, str] = Field(default_factory=dict)
    blobs: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)


def json_schema(which: Literal["bundle", "manifest", "dag", "fact"] = "bundle") -> dict[str, Any]:
    """JSON Schema of one part of a bundle, or of all three under ``bundle``."""
    if which == "manifest":
        return Manifest.model_json_schema()
    if which == "dag":
        return DagSnapshot.model_json_schema()
    if which == "fact":
        return fact_adapter().json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pytest-llmwb bundle",
        "description": (
            f"schema_version {SCHEMA_VERSION}: manifest.json, dag.json and one fact per line "
            "of facts.jsonl"
        ),
        "type": "object",
        "properties": {
            "manifest.json": Manifest.model_json_schema(),
            "dag.json": DagSnapshot.model_json_schema(),
            "facts.jsonl": {"type": "array", "items": fact_adapter().json_schema()},
        },
    }
