"""Why did a gate decide as it did? Answered from a bundle alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .assertions import describe_gate
from .costs import summarize
from .recording import upstream_nodes
from .replay import short
from .schema import ArtifactFact, GateFact, ModelIOFact, ToolCallFact

__all__ = ["GatePath", "cause_lines", "explain_gate", "gate_path"]


@dataclass(frozen=True)
class GatePath:
    """What led a gate to its decision, read from the run's DAG and facts.

    ``reviewed`` is what the reviewer saw (an artifact's content, a tool call, a value;
    ``None`` when the bundle does not say), ``nodes`` the DAG nodes upstream of the
    gate's node, in declaration order, and ``causes`` the model calls, tool calls, gates
    and artifacts before the gate on those nodes (or that the reviewed artifact was
    derived from).
    """

    reviewed: Any
    nodes: list[str]
    causes: list[Any]


def gate_path(run: Any, gate: GateFact, facts: Sequence[Any] | None = None) -> GatePath:
    """The :class:`GatePath` of ``gate`` in ``run`` (a bundle, or anything with dag and facts)."""
    facts = list(run.facts) if facts is None else facts
    subject = gate.subject
    reviewed: Any = None
    derived: set[int] = set()
    if subject is not None:
        if subject.kind == "value":
            reviewed = subject.value
        elif subject.seq is not None:
            source = next((f for f in facts if f.seq == subject.seq), None)
            if isinstance(source, ArtifactFact):
                reviewed = source.content
                derived = set(source.derived_from)
            elif isinstance(source, ToolCallFact):
                reviewed = {"tool": source.tool, "arguments": source.arguments}
    path = upstream_nodes(run.dag, gate.node)
    causes = [
        f
        for f in facts
        if f.seq < gate.seq
        and isinstance(f, (ModelIOFact, ToolCallFact, GateFact, ArtifactFact))
        and (f.seq in derived or path is None or f.node in path)
    ]
    nodes = [n for n in run.dag.node_ids if path is None or n in path]
    return GatePath(reviewed, nodes, causes)


def _text(value: Any, width: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cause_lines(fact: Any) -> list[str]:
    """The lines that say what one fact on a gate's path did (``llmwb explain``)."""
    if isinstance(fact, ModelIOFact):
        head = f"#{fact.seq} model_io on {fact.node}: {fact.provider}/{fact.request.model}"
        head += f", {fact.usage.input_tokens} in / {fact.usage.output_tokens} out tokens"
        if fact.cost is not None:
            head += f", {fact.cost.amount} {fact.cost.currency}"
        lines = [head]
        if fact.request.messages:
            lines.append(f"    asked:    {_text(fact.request.messages[-1].content)}")
        if fact.response is not None:
            answer = fact.response.content or ", ".join(c.name for c in fact.response.tool_calls)
            lines.append(f"    answered: {_text(answer)}")
        if fact.error is not None:
            lines.append(f"    failed:   {fact.error.type}: {_text(fact.error.message)}")
        return lines
    if isinstance(fact, ToolCallFact):
        outcome = f"raised {fact.error.type}" if fact.error else f"-> {short(fact.result, 90)}"
        return [
            f"#{fact.seq} tool_call on {fact.node}: {fact.tool}({short(fact.arguments, 70)})",
            f"    {outcome}",
        ]
    if isinstance(fact, GateFact):
        who = f"{fact.reviewer.kind} {fact.reviewer.id}"
        return [f"#{fact.seq} gate {fact.gate_id}: {fact.decision} by {who}"]
    if isinstance(fact, ArtifactFact):
        return [
            f"#{fact.seq} artifact {fact.name} revision {fact.revision} ({fact.content_digest})"
        ]
    return []


def explain_gate(bundle: Any, gate_id: str | None, out: TextIO, trust: Any = None) -> int:
    """Write, for each firing of ``gate_id`` (or of every gate), why it decided so.

    Each decision says whether it is signed, by which key, and, given a ``trust`` store
    (:class:`~pytest_llmwb.evidence.keys.TrustStore`), whether the signature verifies.
    Returns 0, or 2 when the gate never fired (the message lists the gates that did).
    """
    from .evidence.decisions import check_decision

    facts = list(bundle.facts)
    gates = [
        f for f in facts if isinstance(f, GateFact) and (gate_id is None or f.gate_id == gate_id)
    ]
    if not gates:
        from .exceptions import LlmwbError

        fired = sorted({f.gate_id for f in facts if isinstance(f, GateFact)})
        raise LlmwbError(
            f"gate {gate_id!r} never fired in {bundle.path} "
            f"(gates that fired: {', '.join(fired) or 'none'})",
            fix="pass one of those with --gate, or leave --gate out to explain every gate",
        )
    for index, gate in enumerate(gates):
        if index:
            out.write("\n")
        out.write("\n".join(describe_gate(gate)) + "\n")
        out.write(f"  signature: {check_decision(gate, trust, facts).describe()}\n")
        path = gate_path(bundle, gate, facts)
        if path.reviewed is not None:
            out.write(f"  reviewed: {_text(path.reviewed, 300)}\n")
        if gate.edit is not None:
            out.write(f"  edit:     {_text(gate.edit, 300)}\n")
        causes, nodes = path.causes, path.nodes
        out.write(f"\nwhat led to it ({len(causes)} facts on the path {' -> '.join(nodes)}):\n")
        for fact in causes:
            out.write("".join(f"  {line}\n" for line in cause_lines(fact)))
        spend = summarize(causes).total
        out.write(f"spent on that path: {spend.describe()}\n")
    return 0
