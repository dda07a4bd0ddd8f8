"""Reviewers: who decides at a gate.

A policy, a human through the host's callback, a terminal prompt, or a script in
tests. Any callable ``reviewer(subject) -> GateDecision`` works as a reviewer. The classes
here add what a demanding host needs: a recorded identity and kind, timeouts, and
the guarantee that a reviewer that fails never turns into a silent approval.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

from .schema import GATE_DECISIONS, GateDecision, PolicyRef, Reviewer, SubjectRef

__all__ = [
    "CallbackReviewer",
    "GateRequest",
    "PolicyReviewer",
    "ScriptedReviewer",
    "SignedReviewer",
    "TerminalReviewer",
]


@dataclass(frozen=True)
class GateRequest:
    """What a reviewer is asked about.

    ``subject`` is the reviewed value (an artifact's content, a tool call's arguments,
    or the value passed to the gate); ``subject_ref`` its digest and provenance.
    """

    gate_id: str
    subject: Any
    subject_ref: SubjectRef | None
    policy: PolicyRef | None
    run_name: str


def as_decision(raw: Any, reviewer: Reviewer, *, where: str) -> GateDecision:
    """Turn what a reviewer returned into a :class:`GateDecision`, or say what is wrong."""
    from pydantic import ValidationError

    from .exceptions import GateDecisionError

    if isinstance(raw, GateDecision):
        return raw
    if isinstance(raw, bool):
        return GateDecision(decision="approved" if raw else "rejected", reviewer=reviewer)
    if isinstance(raw, str) and raw in GATE_DECISIONS:
        return GateDecision(decision=raw, reviewer=reviewer)  # type: ignore[arg-type]
    if isinstance(raw, tuple) and len(raw) == 2 and raw[0] in GATE_DECISIONS:
        return GateDecision(decision=raw[0], reviewer=reviewer, reason=str(raw[1]))
    if isinstance(raw, Mapping):
        try:
            return GateDecision.model_validate({"reviewer": reviewer, **raw})
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            detail = f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
            raise GateDecisionError(
                f"{where}: the reviewer returned an invalid decision ({detail}): {raw!r}",
                fix=f"return a GateDecision, or one of {', '.join(GATE_DECISIONS)}",
            ) from None
    raise GateDecisionError(
        f"{where}: the reviewer returned {raw!r}, which is not a decision",
        fix=f"return a GateDecision, a bool, or one of {', '.join(GATE_DECISIONS)}",
    )


def ask(reviewer: Any, request: GateRequest) -> tuple[GateDecision, BaseException | None]:
    """Ask any reviewer (an object with ``review`` or a callable on the subject).

    Returns the decision and, when the reviewer raised, the exception: the decision is
    then ``escalated`` with the exception as its reason, never an approval. A reviewer
    that returns something that is not a decision raises :class:`GateDecisionError`.
    """
    from .exceptions import GateDecisionError

    identity = getattr(reviewer, "identity", None)
    if not isinstance(identity, Reviewer):
        name = getattr(reviewer, "__qualname__", type(reviewer).__qualname__)
        identity = Reviewer(id=str(name), kind="policy")
    try:
        raw = reviewer.review(request) if hasattr(reviewer, "review") else reviewer(request.subject)
    except GateDecisionError:
        raise
    except Exception as exc:
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        reason = f"the reviewer raised {name}: {exc}"
        return GateDecision(decision="escalated", reviewer=identity, reason=reason), exc
    return as_decision(raw, identity, where=f"gate {request.gate_id!r}"), None


class SignedReviewer:
    """Any reviewer whose decisions are signed with the reviewer's own Ed25519 key.

    ``key`` is a private key file (PEM, PKCS#8) or a loaded
    :class:`~pytest_llmwb.evidence.keys.SigningKey`; it is held in memory only. The
    recorded reviewer identity gains the key id, and each decision a signature over its
    gate id, decision, subject digest, policy, reviewer, reason and edit, which ``llmwb
    explain --trust KEYS`` checks::

        reviewer = SignedReviewer(CallbackReviewer(ask_finance, identity=ana), "ana.pem")

    A reviewer that raises is not signed for: its ``escalated`` decision is recorded
    unsigned, as for any reviewer.
    """

    def __init__(self, reviewer: Any, key: Any, identity: Reviewer | None = None) -> None:
        from .evidence.keys import SigningKey, load_signing_key

        self.reviewer = reviewer
        self.key = key if isinstance(key, SigningKey) else load_signing_key(key)
        inner = identity or getattr(reviewer, "identity", None)
        if not isinstance(inner, Reviewer):
            name = getattr(reviewer, "__qualname__", type(reviewer).__qualname__)
            inner = Reviewer(id=str(name), kind="human")
        self.identity = inner.model_copy(update={"keyid": self.key.keyid})

    def review(self, request: GateRequest) -> GateDecision:
        """Ask the wrapped reviewer, then sign its decision."""
        from .evidence.decisions import sign_decision

        inner = self.reviewer
        raw = inner.review(request) if hasattr(inner, "review") else inner(request.subject)
        decision = as_decision(raw, self.identity, where=f"gate {request.gate_id!r}")
        decision = decision.model_copy(update={"reviewer": self.identity})
        signature = sign_decision(
            self.key,
            gate_id=request.gate_id,
            decision=decision.decision,
            subject_digest=None if request.subject_ref is None else request.subject_ref.digest,
            policy=request.policy,
            reviewer=self.identity,
            reason=decision.reason,
            edit=decision.edit,
        )
        return decision.model_copy(update={"signature": signature})


class PolicyReviewer:
    """A rule that decides, recorded as reviewer kind ``policy``.

    ``rule(subject)`` returns ``True``/``False`` (approved/rejected), a decision name,
    a ``(decision, reason)`` pair or a :class:`GateDecision`::

        auto_refunds = PolicyReviewer(
            PolicyRef(id="refund-policy", version="2026-11"),
            lambda s: ("approved", "small") if s["amount"] <= 500 else ("rejected", "large"),
        )
    """

    def __init__(self, policy: PolicyRef | str, rule: Callable[[Any], Any]) -> None:
        self.policy = PolicyRef(id=policy) if isinstance(policy, str) else policy
        self.rule = rule
        self.identity = Reviewer(id=f"{self.policy.id}@{self.policy.version}", kind="policy")

    def review(self, request: GateRequest) -> GateDecision:
        """Apply the rule to the subject."""
        where = f"gate {request.gate_id!r} (policy {self.identity.id})"
        return as_decision(self.rule(request.subject), self.identity, where=where)


class CallbackReviewer:
    """A human decides through the host's own UI: ``callback(request)`` returns the decision.

    With ``timeout`` (seconds), a callback that has not answered in time yields a
    recorded ``timed_out`` decision. A callback that raises yields a recorded
    ``escalated`` decision whose reason names the exception: never an approval.
    """

    def __init__(
        self,
        reviewer_id: str,
        callback: Callable[[GateRequest], Any],
        *,
        kind: str = "human",
        timeout: float | None = None,
    ) -> None:
        self.identity = Reviewer.model_validate({"id": reviewer_id, "kind": kind})
        self.callback = callback
        self.timeout = timeout

    def review(self, request: GateRequest) -> GateDecision:
        """Ask the callback, within the timeout."""
        where = f"gate {request.gate_id!r} (reviewer {self.identity.id})"
        if self.timeout is None:
            raw = self.callback(request)
        else:
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            future = pool.submit(self.callback, request)
            try:
                raw = future.result(timeout=self.timeout)
            except concurrent.futures.TimeoutError:
                return GateDecision(
                    decision="timed_out",
                    reviewer=self.identity,
                    reason=f"no decision within {self.timeout:g} s",
                )
            finally:
                pool.shutdown(wait=False)
        return as_decision(raw, self.identity, where=where)


class TerminalReviewer:
    """Ask at the terminal, for local runs: shows the subject and reads a decision."""

    CHOICES: ClassVar[dict[str, str]] = {
        "a": "approved",
        "r": "rejected",
        "e": "edited",
        "s": "escalated",
    }

    def __init__(
        self,
        reviewer_id: str = "terminal",
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.identity = Reviewer(id=reviewer_id, kind="human")
        self.stdin = stdin
        self.stdout = stdout

    def review(self, request: GateRequest) -> GateDecision:
        """Print the subject, then read ``a``/``r``/``e``/``s``, a reason and any edit."""
        import json

        out = self.stdout or sys.stdout
        inp = self.stdin or sys.stdin
        out.write(f"\nGate {request.gate_id}")
        if request.policy is not None:
            out.write(f" (policy {request.policy.id} v{request.policy.version})")
        out.write("\n" + json.dumps(request.subject, indent=2, default=str) + "\n")
        while True:
            out.write("[a]pprove, [r]eject, [e]dit, e[s]calate? ")
            out.flush()
            answer = inp.readline()
            if not answer:  # end of input: nobody is there to decide
                return GateDecision(decision="timed_out", reviewer=self.identity, reason="no input")
            choice = self.CHOICES.get(answer.strip().lower()[:1])
            if choice is not None:
                break
        edit: Any = None
        if choice == "edited":
            out.write("edited subject as JSON: ")
            out.flush()
            edit = json.loads(inp.readline())
        out.write("reason: ")
        out.flush()
        reason = inp.readline().strip() or None
        return GateDecision.model_validate(
            {"decision": choice, "reviewer": self.identity, "reason": reason, "edit": edit}
        )


class ScriptedReviewer:
    """Decisions fixed in advance, by gate id, recorded as reviewer kind ``test``."""

    def __init__(self, decisions: Mapping[str, Any], *, reviewer_id: str = "scripted") -> None:
        self.decisions = dict(decisions)
        self.identity = Reviewer(id=reviewer_id, kind="test")

    def review(self, request: GateRequest) -> GateDecision:
        """The scripted decision for ``request.gate_id``."""
        from .exceptions import GateDecisionError

        if request.gate_id not in self.decisions:
            raise GateDecisionError(
                f"gate {request.gate_id!r}: the scripted reviewer has no decision for it "
                f"(it has: {', '.join(sorted(self.decisions)) or 'none'})",
                fix=f"add {request.gate_id!r} to the scripted decisions",
            )
        return as_decision(
            self.decisions[request.gate_id], self.identity, where=f"gate {request.gate_id!r}"
        )
