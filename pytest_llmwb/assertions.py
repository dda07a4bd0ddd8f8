"""Assertions on gate decisions that explain themselves when they fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .schema import ArtifactFact, GateFact

__all__ = ["GateExpectation", "assert_gate", "describe_gate", "expect_gate"]


def describe_gate(gate: GateFact) -> list[str]:
    """The lines that say what a gate decided, by whom, under which policy, about what."""
    lines = [
        f"gate {gate.gate_id!r} (node {gate.node!r}, seq {gate.seq})",
        f"  decision: {gate.decision}",
        f"  reviewer: {gate.reviewer.kind} {gate.reviewer.id}",
    ]
    if gate.reason:
        lines.append(f"  reason:   {gate.reason}")
    if gate.policy is not None:
        lines.append(f"  policy:   {gate.policy.id} v{gate.policy.version}")
    if gate.subject is not None:
        subject = gate.subject
        what: str = subject.kind
        if subject.name:
            what += f" {subject.name}"
        if subject.revision is not None:
            what += f" revision {subject.revision}"
        lines.append(f"  subject:  {what} ({subject.digest})")
    return lines


@dataclass(frozen=True)
class GateExpectation:
    """What a gate decision should be; only the fields given are compared.

    ``reviewer`` matches the reviewer's id or kind; ``policy`` the policy id;
    ``subject`` an :class:`ArtifactFact` (revision and digest) or a revision number.
    """

    decision: str | None = None
    reviewer: str | None = None
    policy: str | None = None
    reason: str | None = None
    subject: Any = None

    def mismatches(self, gate: GateFact) -> list[str]:
        """Each expected field the gate does not meet, as ``field: expected X, got Y``."""
        out = []
        if self.decision is not None and gate.decision != self.decision:
            out.append(f"decision: expected {self.decision!r}, got {gate.decision!r}")
        if self.reviewer is not None and self.reviewer not in (
            gate.reviewer.id,
            gate.reviewer.kind,
        ):
            got = f"{gate.reviewer.kind} {gate.reviewer.id!r}"
            out.append(f"reviewer: expected {self.reviewer!r}, got {got}")
        if self.policy is not None and (gate.policy is None or gate.policy.id != self.policy):
            actual = gate.policy.id if gate.policy else None
            out.append(f"policy: expected {self.policy!r}, got {actual!r}")
        if self.reason is not None and gate.reason != self.reason:
            out.append(f"reason: expected {self.reason!r}, got {gate.reason!r}")
        if self.subject is not None:
            subject = gate.subject
            if isinstance(self.subject, ArtifactFact):
                ok = (
                    subject is not None
                    and subject.digest == self.subject.content_digest
                    and subject.revision == self.subject.revision
                )
                want = f"{self.subject.name} revision {self.subject.revision}"
            else:
                ok = subject is not None and subject.revision == self.subject
                want = f"revision {self.subject}"
            if not ok:
                seen = (
                    f"revision {subject.revision} ({subject.digest})" if subject else "no subject"
                )
                out.append(f"subject: expected {want}, got {seen}")
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GateFact):
            return not self.mismatches(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def expect_gate(
    decision: str | None = None,
    *,
    reviewer: str | None = None,
    policy: str | None = None,
    reason: str | None = None,
    subject: Any = None,
) -> GateExpectation:
    """An expectation to compare a gate fact with.

    ``assert run.gates["approve_refund"] == expect_gate("approved", reviewer="policy")``
    """
    return GateExpectation(decision, reviewer, policy, reason, subject)


def explain_mismatch(gate: GateFact, expected: GateExpectation) -> list[str]:
    """The failure text for a gate that does not meet an expectation."""
    return [
        f"gate {gate.gate_id!r} does not match the expectation:",
        *(f"  {line}" for line in expected.mismatches(gate)),
        "actual:",
        *describe_gate(gate),
    ]


def assert_gate(run: Any, gate_id: str, decision: str | None = None, **expected: Any) -> GateFact:
    """Assert that gate ``gate_id`` fired in ``run`` and decided as expected; return its fact."""
    __tracebackhide__ = True
    gates = run.gates
    if gate_id not in gates:
        fired = ", ".join(sorted(gates)) or "none"
        raise AssertionError(
            f"gate {gate_id!r} never fired in run {run.name!r} (gates that fired: {fired})"
        )
    gate: GateFact = gates[gate_id]
    expectation = expect_gate(decision, **expected)
    if expectation.mismatches(gate):
        raise AssertionError("\n".join(explain_mismatch(gate, expectation)))
    return gate
