"""Every error a user can cause, each with what happened, where, and how to fix it.

All exceptions derive from :class:`LlmwbError`; all warnings from :class:`LlmwbWarning`.
Messages follow one shape: a first line saying what happened, then the details
(bundle path, file and line, test id, DAG node, call ordinal), then a ``fix:`` line
with the exact flag or command that resolves it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ArtifactSchemaError",
    "BudgetExceededError",
    "BundleConflictError",
    "BundleCorruptError",
    "BundleError",
    "BundleIntegrityError",
    "BundleNotFoundError",
    "BundleRedactedError",
    "BundleWriteError",
    "CaptureWarning",
    "ConfigError",
    "DagDefinitionError",
    "DagDriftError",
    "DagError",
    "DagFrozenError",
    "ExportError",
    "DagTransitionError",
    "GateDecisionError",
    "GateSubjectError",
    "GoldenMismatchError",
    "LiveCallBlockedError",
    "LlmwbError",
    "LlmwbWarning",
    "MissingCallsError",
    "NoActiveRunError",
    "OrderDriftError",
    "PayloadDriftError",
    "PriceFileError",
    "ProofError",
    "RecordedCallError",
    "RedactionError",
    "ReplayDriftError",
    "ReplayStreamError",
    "ResponseDriftError",
    "ResultTypeError",
    "SchemaVersionError",
    "SealError",
    "SealVerificationError",
    "SecretFoundError",
    "TraceContextWarning",
    "TrustError",
    "UndeclaredNodeError",
    "UnexpectedCallError",
    "UnknownFactKindError",
    "ViewerWriteError",
]


class LlmwbError(Exception):
    """Base class of every error raised by pytest-llmwb.

    ``fix`` is the exact flag or command that resolves the error; it is printed
    on its own line after the message.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message)

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\nfix: {self.fix}"
        return self.message


class LlmwbWarning(UserWarning):
    """Base class of every warning issued by pytest-llmwb."""


class CaptureWarning(LlmwbWarning):
    """HTTP capture kept an exchange raw: an adapter could not read it, or it was cut short."""


class TraceContextWarning(LlmwbWarning):
    """``TRACEPARENT`` or ``TRACESTATE`` holds no valid W3C trace context; it was ignored."""


class ConfigError(LlmwbError):
    """A command-line option, ini key or ``llmwb`` marker argument is invalid."""


class NoActiveRunError(LlmwbError):
    """An operation needs a run, and no run is active in this context."""


class PriceFileError(ConfigError):
    """A price override file (``llmwb_price_file``, ``LLMWB_PRICE_FILE``) is invalid."""


class SecretFoundError(LlmwbError):
    """Strict secret scrubbing found a secret in something about to be recorded or written.

    ``where`` says what was being recorded (a call, or a bundle file), ``field`` is the
    JSON pointer inside it, ``rule`` the name of the rule that matched. The secret
    itself is never part of the message.
    """

    def __init__(
        self, message: str, *, where: str, field: str, rule: str, fix: str | None = None
    ) -> None:
        self.where = where
        self.field = field
        self.rule = rule
        super().__init__(message, fix=fix)


# --- bundles on disk -------------------------------------------------------------------


class BundleError(LlmwbError):
    """A bundle could not be read or written."""


class BundleNotFoundError(BundleError):
    """A bundle needed for replay does not exist."""


class BundleCorruptError(BundleError):
    """A bundle file is not valid: bad JSON, truncated, wrongly typed, or inconsistent.

    ``path`` is the file, ``line`` the 1-based line (``None`` when the whole file is
    concerned) and ``field`` the dotted path of the offending field, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str,
        line: int | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        where = path if line is None else f"{path}:{line}"
        if field:
            where += f" (field {field!r})"
        super().__init__(f"{message}\n  in {where}", fix=fix)


class BundleIntegrityError(BundleCorruptError):
    """A bundle file or blob does not match the digest its manifest holds for it.

    Also raised for a blob file the manifest does not list, and, by ``llmwb rehash``,
    for a fact that no longer says what the wire exchange it was recorded from says.
    """


class UnknownFactKindError(BundleCorruptError):
    """A fact record names a kind this version of pytest-llmwb does not know."""


class SchemaVersionError(BundleError):
    """A bundle was written with a schema version this version cannot read."""


class BundleWriteError(BundleError):
    """A bundle could not be written (unwritable directory, full disk, ...)."""


class BundleConflictError(BundleError):
    """Two tests would write the same bundle in one recording session."""


class ViewerWriteError(LlmwbError):
    """A viewer page (``llmwb view -o``, ``--llmwb-view-dir``) could not be written."""


class BundleRedactedError(BundleError):
    """A redacted bundle was asked to serve a replay: withheld values cannot be served."""


# --- evidence: seals, proofs, redaction ------------------------------------------------


class SealError(LlmwbError):
    """A bundle could not be sealed, or is not sealed (bad key file, missing seal)."""


class SealVerificationError(SealError):
    """A sealed bundle or envelope failed verification: the verdict is INVALID.

    The message names the first check that failed; ``where`` is the file (and line,
    which is the fact seq in ``facts.jsonl``) or blob.
    """

    def __init__(self, message: str, *, where: str, fix: str | None = None) -> None:
        self.where = where
        super().__init__(f"{message}\n  in {where}", fix=fix)


class TrustError(SealError):
    """No trusted public key was given, or a trusted key file cannot be used."""


class ProofError(SealVerificationError):
    """An inclusion proof is malformed or does not lead to the signed Merkle root."""


class RedactionError(SealError):
    """A redaction names a fact or field the bundle does not have, or an unsealed bundle."""


# --- the DAG ---------------------------------------------------------------------------


class DagError(LlmwbError):
    """A DAG snapshot is invalid or was used wrongly."""


class DagDefinitionError(DagError):
    """The declared DAG is malformed: a duplicate node, an edge to an undeclared node, ..."""


class DagFrozenError(DagError):
    """The DAG was changed after the run had started recording facts."""


class UndeclaredNodeError(DagError):
    """A fact was recorded on a node the run's DAG does not declare (DAG drift)."""


# --- gates, artifacts, budgets ----------------------------------------------------------


class ExportError(LlmwbError):
    """``llmwb export`` could not write its output file."""


class GateDecisionError(LlmwbError):
    """A reviewer (or a scripted decision) gave something that is not a gate decision."""


class GateSubjectError(LlmwbError):
    """A gate was asked about a subject the run did not produce."""


class ArtifactSchemaError(LlmwbError):
    """An artifact (or an edit of one) does not match its schema."""


class BudgetExceededError(LlmwbError):
    """A test's run spent more tokens or money than its ``llmwb`` marker allows."""


# --- replay ----------------------------------------------------------------------------


class ReplayDriftError(LlmwbError):
    """The replayed run did something other than what its bundle recorded."""


class DagDriftError(ReplayDriftError):
    """The DAG declared by the replayed run differs from the recorded DAG snapshot."""


class DagTransitionError(ReplayDriftError):
    """The run stepped from one DAG node to another the declared DAG has no edge for."""

    def __init__(self, message: str, *, source: str, target: str, fix: str) -> None:
        self.source = source
        self.target = target
        super().__init__(message, fix=fix)


class PayloadDriftError(ReplayDriftError):
    """A call was made at the recorded place, but its request changed."""

    def __init__(
        self,
        message: str,
        *,
        node: str,
        ordinal: int,
        changes: Sequence[tuple[str, object, object]],
        fix: str | None = None,
    ) -> None:
        self.node = node
        self.ordinal = ordinal
        self.changes = list(changes)
        super().__init__(message, fix=fix)


class OrderDriftError(ReplayDriftError):
    """A recorded call was made, but at another position than recorded."""


class UnexpectedCallError(ReplayDriftError):
    """The replayed run made a call its bundle never recorded (an extra call)."""


class LiveCallBlockedError(UnexpectedCallError):
    """In replay, the run tried to reach the network: a request or connection nothing recorded.

    Raised by HTTP capture (naming the method and URL) for a request the bundle has no
    recording of, and by the network guard for any other connection or DNS lookup
    that is not loopback to a server the test started. ``attempt`` describes it.
    Deliberately not an ``OSError``, so HTTP clients and SDKs do not retry it.
    """

    def __init__(self, message: str, *, attempt: str = "", fix: str | None = None) -> None:
        self.attempt = attempt
        super().__init__(message, fix=fix)


class ResponseDriftError(ReplayDriftError):
    """In ``verify``, live responses or tool results differ from the recorded ones.

    The message lists every difference (node, ordinal, JSON pointer, recorded -> live);
    ``differences`` holds them as :class:`~pytest_llmwb.verify.VerifyDifference`. See
    :mod:`pytest_llmwb.verify` for what is compared, reported or ignored.
    """

    def __init__(
        self, message: str, *, differences: Sequence[object] = (), fix: str | None = None
    ) -> None:
        self.differences = list(differences)
        super().__init__(message, fix=fix)


class ReplayStreamError(ReplayDriftError):
    """A replayed stream was read past the point where its recording stopped.

    The recorded caller closed the stream early (or the recording ended in an error
    that cannot be raised again); the replayed caller read further.
    """


class ResultTypeError(ReplayDriftError):
    """A recorded tool result no longer fits the tool's return annotation."""


class MissingCallsError(ReplayDriftError):
    """Recorded calls were never made by the replayed run (missing calls)."""


class GoldenMismatchError(ReplayDriftError):
    """A replayed run differs from its golden bundle; the message holds the semantic diff.

    Raised after the test (or by ``assert run == llmwb_snapshot``) when the run served
    drifted calls under lenient replay, or when what the host computed from the served
    calls (artifacts, steps, gates, errors) is not what the bundle recorded.
    """


class RecordedCallError(LlmwbError):
    """Replay of a call that raised while it was recorded.

    Raised when the original exception type cannot be rebuilt; ``type_name`` is the
    recorded exception's qualified name.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        super().__init__(f"{type_name}: {message} (replayed from the bundle)")
