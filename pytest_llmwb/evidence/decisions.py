"""Gate decisions signed by the reviewer's own key.

The signed statement binds the decision to exactly what was decided::

    {"gate_id", "decision", "subject_digest", "policy": {"id", "version"} | null,
     "reviewer": {"id", "kind", "keyid"}, "reason", "edit_digest"}

as RFC 8785 canonical JSON, signed (Ed25519) over DSSE's PAE with the payload type
``application/vnd.llmwb.gate-decision+json``. Ed25519 signatures are deterministic,
so the same decision signed again gives the same bytes: bundles stay reproducible.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..codec import canonical_json, digest
from .keys import PublicKey, SigningKey, TrustStore, pae

__all__ = [
    "DECISION_PAYLOAD_TYPE",
    "DecisionCheck",
    "check_decision",
    "decision_statement",
    "subject_problem",
]

#: The DSSE payload type of a signed gate decision.
DECISION_PAYLOAD_TYPE = "application/vnd.llmwb.gate-decision+json"


def decision_statement(
    *,
    gate_id: str,
    decision: str,
    subject_digest: str | None,
    policy: Any,
    reviewer: Any,
    reason: str | None,
    edit: Any,
) -> bytes:
    """The canonical bytes a reviewer signs for one decision."""
    return canonical_json(
        {
            "gate_id": gate_id,
            "decision": decision,
            "subject_digest": subject_digest,
            "policy": None if policy is None else {"id": policy.id, "version": policy.version},
            "reviewer": {"id": reviewer.id, "kind": reviewer.kind, "keyid": reviewer.keyid},
            "reason": reason,
            "edit_digest": None if edit is None else digest(edit),
        }
    )


def sign_decision(key: SigningKey, **fields: Any) -> str:
    """The base64 signature by ``key`` of :func:`decision_statement` of ``fields``."""
    signed = pae(DECISION_PAYLOAD_TYPE, decision_statement(**fields))
    return base64.b64encode(key.sign(signed)).decode()


def _fields(fact: Any) -> dict[str, Any]:
    return {
        "gate_id": fact.gate_id,
        "decision": fact.decision,
        "subject_digest": None if fact.subject is None else fact.subject.digest,
        "policy": fact.policy,
        "reviewer": fact.reviewer,
        "reason": fact.reason,
        "edit": fact.edit,
    }


def subject_problem(fact: Any, facts: Sequence[Any]) -> str | None:
    """Why the subject a gate fact names does not match the digest it was decided on.

    A signature binds the decision to ``subject.digest``; this checks that the bundle
    still holds what has that digest: the value itself, the artifact revision or the
    tool call at ``subject.seq``. ``None`` when it does (or there is no subject).
    """
    from ..replay import call_request
    from ..schema import ArtifactFact, ToolCallFact

    subject = fact.subject
    if subject is None:
        return None
    if subject.kind == "value":
        held, what = subject.value, "its value"
    else:
        source = facts[subject.seq - 1] if subject.seq and 0 < subject.seq <= len(facts) else None
        if subject.kind == "artifact" and isinstance(source, ArtifactFact):
            if (source.name, source.revision) != (subject.name, subject.revision):
                return f"fact {subject.seq} is not artifact {subject.name!r} rev {subject.revision}"
            held, what = source.content, f"artifact {source.name!r} (fact {source.seq})"
        elif subject.kind == "tool_call" and isinstance(source, ToolCallFact):
            held, what = call_request(source), f"tool call {source.tool!r} (fact {source.seq})"
        else:
            return f"fact {subject.seq} is not the {subject.kind} the decision names"
    if digest(held) != subject.digest:
        return f"{what} does not have the digest the decision was made on"
    return None


@dataclass(frozen=True)
class DecisionCheck:
    """Whether a gate fact is signed, by whom, and whether the signature verifies."""

    signed: bool
    keyid: str | None
    #: ``True``/``False`` when checked against a trust store; ``None`` when not checked
    #: (no trust store given) or the key is not in it (then ``key`` is ``None``).
    verified: bool | None
    key: PublicKey | None = None
    #: Why what the bundle holds as the subject is not what was decided on, if it is not.
    subject_problem: str | None = None

    def describe(self) -> str:
        """One line for ``llmwb explain``."""
        if self.subject_problem is not None:
            state = "not signed" if not self.signed else f"signed by key {(self.keyid or '?')[:12]}"
            return f"{state}: DOES NOT VERIFY (the subject was changed: {self.subject_problem})"
        if not self.signed:
            return "not signed"
        who = f"key {(self.keyid or '?')[:12]}"
        if self.verified is True and self.key is not None:
            return f"signed by {who}: verifies against {self.key.source}"
        if self.verified is False and self.key is None:
            return f"signed by {who}, which is not in the trust store: NOT VERIFIED"
        if self.verified is False:
            return f"signed by {who}: DOES NOT VERIFY (the decision or signature was changed)"
        if self.key is None and self.verified is None:
            return f"signed by {who}: not checked (pass --trust KEYS to check it)"
        return f"signed by {who}"


def check_decision(
    fact: Any, trust: TrustStore | None = None, facts: Sequence[Any] | None = None
) -> DecisionCheck:
    """Check the signature of a gate fact against ``trust`` (if given).

    With the run's ``facts``, also check that the subject the bundle holds is the one
    the decision was made on (see :func:`subject_problem`): a signature over a digest
    proves nothing about a subject that was swapped under it.
    """
    keyid = fact.reviewer.keyid
    problem = subject_problem(fact, facts) if facts is not None else None
    if problem is not None:
        return DecisionCheck(fact.signature is not None, keyid, False, None, problem)
    if fact.signature is None:
        return DecisionCheck(False, keyid, None)
    if trust is None:
        return DecisionCheck(True, keyid, None)
    key = trust.keys.get(keyid or "")
    if key is None:
        return DecisionCheck(True, keyid, False)
    try:
        signature = base64.b64decode(fact.signature, validate=True)
    except (binascii.Error, ValueError):
        return DecisionCheck(True, keyid, False, key)
    signed = pae(DECISION_PAYLOAD_TYPE, decision_statement(**_fields(fact)))
    return DecisionCheck(True, keyid, key.verifies(signature, signed), key)
