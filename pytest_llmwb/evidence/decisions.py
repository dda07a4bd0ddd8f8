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
from dataclasses import dataclass
from typing import Any

from ..codec import canonical_json, digest
from .keys import PublicKey, SigningKey, TrustStore, pae

__all__ = ["DECISION_PAYLOAD_TYPE", "DecisionCheck", "check_decision", "decision_statement"]

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


@dataclass(frozen=True)
class DecisionCheck:
    """Whether a gate fact is signed, by whom, and whether the signature verifies."""

    signed: bool
    keyid: str | None
    #: ``True``/``False`` when checked against a trust store; ``None`` when not checked
    #: (no trust store given) or the key is not in it (then ``key`` is ``None``).
    verified: bool | None
    key: PublicKey | None = None

    def describe(self) -> str:
        """One line for ``llmwb explain``."""
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


def check_decision(fact: Any, trust: TrustStore | None = None) -> DecisionCheck:
    """Check the signature of a gate fact against ``trust`` (if given)."""
    keyid = fact.reviewer.keyid
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
