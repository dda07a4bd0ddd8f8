"""The data a viewer page shows, as plain JSON-ready dicts built from a run or a diff.

Everything the page needs is computed here — the DAG layout, costs per node, each
gate's path of facts (:func:`pytest_llmwb.explain.gate_path`), the diff markers — so the
page's script only draws, and the same bundle always gives the same data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from ..costs import Spend, money, summarize
from ..diff.engine import (
    FactAdded,
    FactChanged,
    FactRemoved,
    FactsMoved,
    NodeAdded,
    NodeConfigChanged,
    NodeKindChanged,
    NodeRemoved,
    RunDiff,
    RunLike,
    fact_label,
)
from ..diff.render import render_json
from ..schema import ArtifactFact, DagSnapshot, GateFact, ModelIOFact

__all__ = ["FORMAT", "diff_model", "drift_model", "run_model"]

#: Names the shape of the page data, so a page says which viewer wrote it.
FORMAT = "llmwb-view/1"

# Long strings in a fact's detail are clipped: a page stays small for runs with long
# prompts, and the bundle keeps the full text.
_DETAIL_CHARS = 2_000

# A gate card lists the facts on its path nearest to it; a long run's later gates
# would otherwise repeat most of the run each (a page quadratic in the run's length).
MAX_CAUSES = 25

# Layout grid of the DAG drawing (SVG user units).
NODE_WIDTH = 150
NODE_HEIGHT = 64
_COLUMN = NODE_WIDTH + 32
_ROW = NODE_HEIGHT + 24
_MARGIN = 12
# an edge that skips columns is drawn as an arc below its row, deeper the more it skips,
# so that it does not run behind the nodes it passes
_ARC = 18


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > _DETAIL_CHARS:
            return value[:_DETAIL_CHARS] + f"… ({len(value) - _DETAIL_CHARS} more characters)"
        return value
    if isinstance(value, dict):
        return {key: _clip(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clip(item) for item in value]
    return value


def _spend(spend: Spend | None) -> dict[str, Any]:
    spend = spend or Spend()
    return {
        "calls": spend.calls,
        "input_tokens": spend.tokens["input_tokens"],
        "output_tokens": spend.tokens["output_tokens"],
        "tokens": spend.total_tokens,
        "cost": ", ".join(f"{money(a)} {c}" for c, a in sorted(spend.cost.items())),
        "unpriced": spend.unpriced,
        "describe": spend.describe(),
    }


def layout(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """A layered left-to-right layout: ``(column, row)`` per node id, deterministic.

    A node's column is the length of the longest path to it from a source; nodes on a
    cycle (a DAG should have none) go one column past the rest. Within a column, nodes
    are ordered by the mean row of their parents, then by declaration order.
    """
    order = {node: index for index, node in enumerate(nodes)}
    parents: dict[str, list[str]] = {node: [] for node in nodes}
    children: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in edges:
        if source in order and target in order and source != target:
            parents[target].append(source)
            children[source].append(target)
    pending = {node: len(set(parents[node])) for node in nodes}
    column: dict[str, int] = {}
    ready = [node for node in nodes if pending[node] == 0]
    while ready:
        node = ready.pop(0)
        column[node] = max((column[p] + 1 for p in set(parents[node]) if p in column), default=0)
        for child in sorted(set(children[node]), key=order.__getitem__):
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    last = max(column.values(), default=-1)
    for node in nodes:
        column.setdefault(node, last + 1)
    by_column: dict[int, list[str]] = {}
    for node in nodes:
        by_column.setdefault(column[node], []).append(node)
    place: dict[str, tuple[int, int]] = {}
    for col in sorted(by_column):
        members = by_column[col]

        def rank(node: str) -> tuple[float, int]:
            rows = [place[p][1] for p in parents[node] if p in place]
            return (sum(rows) / len(rows) if rows else -1.0, order[node])

        for row, node in enumerate(sorted(members, key=rank)):
            place[node] = (col, row)
    return place


def _dag(
    dag: DagSnapshot,
    spend: Mapping[str, Spend],
    removed: Sequence[Any] = (),
    markers: Mapping[str, str] | None = None,
    removed_edges: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    kinds = {node.id: node.kind for node in dag.nodes}
    for node in removed:
        kinds.setdefault(node.id, node.kind)
    ids = list(kinds)
    edges = [(edge.source, edge.target) for edge in dag.edges]
    every_edge = edges + [edge for edge in removed_edges if edge not in edges]
    place = layout(ids, every_edge)
    markers = markers or {}
    nodes = []
    for node_id in ids:
        col, row = place[node_id]
        nodes.append(
            {
                "id": node_id,
                "kind": kinds[node_id],
                "x": _MARGIN + col * _COLUMN,
                "y": _MARGIN + row * _ROW,
                "marker": markers.get(node_id, ""),
                "spend": _spend(spend.get(node_id)),
            }
        )
    columns = max((c for c, _ in place.values()), default=-1) + 1
    rows = max((r for _, r in place.values()), default=-1) + 1
    skipped = max(
        (place[t][0] - place[s][0] - 1 for s, t in every_edge if s in place and t in place),
        default=0,
    )
    return {
        "name": dag.name,
        "declared": dag.declared,
        "digest": dag.digest,
        "width": 2 * _MARGIN + max(columns * _COLUMN - 32, 0),
        "height": 2 * _MARGIN + max(rows * _ROW - 24, 0) + _ARC * max(skipped, 0),
        "node_width": NODE_WIDTH,
        "column": _COLUMN,
        "arc": _ARC,
        "node_height": NODE_HEIGHT,
        "nodes": nodes,
        "edges": [
            {"source": s, "target": t, "marker": "removed" if (s, t) not in edges else ""}
            for s, t in every_edge
        ],
    }


def _fact(fact: Any) -> dict[str, Any]:
    from ..cli import describe_fact
    from ..store import fact_record

    return {
        "seq": fact.seq,
        "kind": str(fact.kind),
        "node": fact.node,
        "label": fact_label(fact),
        "text": describe_fact(fact),
        "detail": _clip(fact_record(fact)),
    }


def _path_spend(causes: Sequence[Any]) -> Spend:
    # only the total: summarize() would also roll up every artifact on the path, and
    # artifacts derived from all calls before them made that cubic over a long run
    spend = Spend()
    for fact in causes:
        if isinstance(fact, ModelIOFact):
            spend.add(fact)
    return spend


def _gate(run: RunLike, gate: GateFact, facts: Sequence[Any]) -> dict[str, Any]:
    from ..explain import cause_lines, gate_path

    path = gate_path(run, gate, facts)
    subject = gate.subject
    about = ""
    if subject is not None:
        about = subject.kind + (f" {subject.name}" if subject.name else "")
        if subject.revision is not None:
            about += f" revision {subject.revision}"
    return {
        "seq": gate.seq,
        "gate_id": gate.gate_id,
        "node": gate.node,
        "decision": str(gate.decision),
        "reviewer": f"{gate.reviewer.kind} {gate.reviewer.id}",
        "policy": f"{gate.policy.id} v{gate.policy.version}" if gate.policy else "",
        "subject": about,
        "digest": subject.digest if subject is not None else "",
        "reason": gate.reason or "",
        "reviewed": _clip(path.reviewed),
        "edit": _clip(gate.edit),
        "path_nodes": path.nodes,
        "causes": [
            {"seq": cause.seq, "lines": [line.strip() for line in cause_lines(cause)]}
            for cause in path.causes[-MAX_CAUSES:]
        ],
        "causes_total": len(path.causes),
        "spent": _path_spend(path.causes).describe(),
        "marker": "",
        "changes": [],
    }


def _artifact(fact: ArtifactFact) -> dict[str, Any]:
    return {
        "seq": fact.seq,
        "name": fact.name,
        "revision": fact.revision,
        "node": fact.node,
        "digest": fact.content_digest,
        "schema": fact.schema_ref or "",
        "supersedes": fact.supersedes,
        "derived_from": list(fact.derived_from),
        "content": _clip(fact.content),
        "marker": "",
    }


def run_model(run: RunLike, *, name: str, source: str) -> dict[str, Any]:
    """The page data of one run: DAG with spend per node, facts, gates, artifacts, costs.

    :param name: the run's name (a bundle's manifest name, a test id).
    :param source: where the run comes from, as the page should say it (a path).
    """
    facts = list(run.facts)
    summary = summarize(facts)
    return {
        "name": name,
        "source": source,
        "fact_count": len(facts),
        "dag": _dag(run.dag, summary.by_node),
        "facts": [_fact(fact) for fact in facts],
        "gates": [_gate(run, f, facts) for f in facts if isinstance(f, GateFact)],
        "artifacts": [_artifact(f) for f in facts if isinstance(f, ArtifactFact)],
        "costs": {
            "total": _spend(summary.total),
            "by_node": [
                {"node": node, **_spend(spend)}
                for node, spend in summary.top_nodes(len(summary.by_node))
            ],
            "by_artifact": [
                {"artifact": key, **_spend(spend)} for key, spend in summary.by_artifact.items()
            ],
        },
    }


# how a recorded fact the replayed run never got to is said, by its marker (the page's
# marker of each says why: the run stopped at the drift)
_STOPPED = {"unreached": "not reached", "drifted": "drifted"}


def drift_model(errors: Sequence[BaseException]) -> list[dict[str, Any]]:
    """The drift errors a replayed run raised, as the page's banner shows them.

    Each has the error's class (``kind``), its first line (``headline``), the rest of its
    message (``details``: for a DAG drift, each node or edge that changed), the node and
    call it happened at when the error names them, each changed JSON path with its
    recorded and its new value (request drift), and the ``fix``.
    """
    from ..replay import nth

    found = []
    for error in errors:
        message = str(getattr(error, "message", error))
        headline, _, rest = message.partition("\n")
        node = getattr(error, "node", None)
        ordinal = getattr(error, "ordinal", None)
        if node is None and hasattr(error, "target"):  # a DAG transition: the step to it
            node = error.target
        changes = [
            {"path": str(path), "old": _clip(old), "new": _clip(new)}
            for path, old, new in getattr(error, "changes", None) or ()
        ]
        found.append(
            {
                "kind": type(error).__name__,
                "headline": headline.rstrip(":"),
                # the changed paths are listed with their values; the rest is said as is
                "details": [
                    line.strip()
                    for line in rest.split("\n")
                    if line.strip()
                    and not (changes and line.startswith("    "))
                    and not (changes and line.strip().startswith("changed (recorded"))
                ],
                "node": node or "",
                "ordinal": ordinal,
                "call": nth(ordinal) if isinstance(ordinal, int) else "",
                "changes": changes,
                "fix": str(getattr(error, "fix", None) or ""),
            }
        )
    return found


def _stopped_summary(diff: RunDiff, stopped: Mapping[int, str]) -> str:
    """The diff in words when the run stopped at a drift: not reached, then real changes."""
    unreached = sum(1 for mark in stopped.values() if mark == "unreached")
    words = ["the run stopped at the drift"]
    if len(stopped) > unreached:
        words.append(f"{len(stopped) - unreached} drifted call(s)")
    if unreached:
        words.append(f"{unreached} recorded fact(s) not reached")
    others = [
        change
        for change in diff.changes
        if not (isinstance(change, FactRemoved) and change.fact.seq in stopped)
    ]
    said = ", ".join(words)
    if not others:
        return said
    top = sorted(others, key=lambda change: change.rank)[:3]
    more = f"; and {len(others) - len(top)} more" if len(others) > len(top) else ""
    return (
        f"{said}; {len(others)} other change{'s' if len(others) != 1 else ''}: "
        + "; ".join(change.headline for change in top)
        + more
    )


def _money_delta(old: Mapping[str, Decimal], new: Mapping[str, Decimal]) -> str:
    parts = []
    for currency in sorted({*old, *new}):
        delta = new.get(currency, Decimal(0)) - old.get(currency, Decimal(0))
        if delta:
            parts.append(f"{'+' if delta > 0 else ''}{money(delta)} {currency}")
    return ", ".join(parts)


def diff_model(
    old: RunLike,
    new: RunLike,
    diff: RunDiff,
    *,
    names: tuple[str, str],
    sources: tuple[str, str],
    drift: Sequence[BaseException] = (),
) -> dict[str, Any]:
    """The page data of two runs compared: the new run, marked with what ``diff`` found.

    Nodes, facts, gates and artifacts of the new run carry a ``marker`` (``added``,
    ``changed``, ``moved``); what only the old run had is kept with ``removed``.

    ``drift`` holds the drift errors that stopped ``new`` (a failed replay): they go to
    ``diff.drift`` (see :func:`drift_model`), and the old run's facts past the last one
    the new run reached are marked ``unreached`` instead of ``removed`` — the recorded
    call a request drift names is ``drifted`` — since the run never got to them.
    """
    model = run_model(new, name=names[1], source=sources[1])
    old_facts = list(old.facts)
    node_markers: dict[str, str] = {}
    removed_nodes = []
    for dag_change in diff.dag_changes:
        if isinstance(dag_change, NodeAdded):
            node_markers[dag_change.node] = "added"
        elif isinstance(dag_change, NodeRemoved):
            node_markers[dag_change.node] = "removed"
            old_node = old.dag.node(dag_change.node)
            if old_node is not None:
                removed_nodes.append(old_node)
        elif isinstance(dag_change, (NodeKindChanged, NodeConfigChanged)):
            node_markers.setdefault(dag_change.node, "changed")
    old_edges = [(e.source, e.target) for e in old.dag.edges]
    summary = summarize(new.facts)
    model["dag"] = _dag(new.dag, summary.by_node, removed_nodes, node_markers, old_edges)

    records = render_json(diff)
    gone = {c.fact.seq for c in diff.fact_changes if isinstance(c, FactRemoved)}
    stopped: dict[int, str] = {}
    if drift:
        # the run stopped at the drift: what it never got to was not removed from it
        reached = max((f.seq for f in old_facts if f.seq not in gone), default=0)
        stopped = {seq: "unreached" for seq in gone if seq > reached}
        for error in drift:
            node, ordinal = getattr(error, "node", None), getattr(error, "ordinal", None)
            if node is None or not isinstance(ordinal, int):
                continue
            for fact in old_facts:
                if (fact.node, getattr(fact, "ordinal", None)) == (node, ordinal) and (
                    fact.seq in gone
                ):
                    stopped[fact.seq] = "drifted"
    fact_markers: dict[int, dict[str, Any]] = {}
    removed: list[dict[str, Any]] = []
    removed_gates: list[GateFact] = []
    for change, record in zip(diff.fact_changes, records["fact_changes"], strict=True):
        if isinstance(change, FactAdded):
            fact_markers[change.fact.seq] = {"marker": "added", "changes": []}
        elif isinstance(change, FactChanged):
            fact_markers[change.new.seq] = {
                "marker": "changed",
                "summary": change.summary,
                "changes": record["changes"],
            }
        elif isinstance(change, FactsMoved):
            for seq in change.new_seqs:
                fact_markers.setdefault(seq, {"marker": "moved", "changes": []})
        elif isinstance(change, FactRemoved):
            mark = stopped.get(change.fact.seq, "removed")
            record["marker"] = mark
            if mark != "removed":
                said = f"{fact_label(change.fact)} {_STOPPED[mark]}"
                record["summary"] = said + change.summary[len(change.headline) :]
            removed.append({**_fact(change.fact), "marker": mark})
            if isinstance(change.fact, GateFact):
                removed_gates.append(change.fact)
    for fact in model["facts"]:
        found = fact_markers.get(fact["seq"])
        fact["marker"] = found["marker"] if found else ""
        fact["changes"] = found["changes"] if found else []
    for gate in model["gates"]:
        found = fact_markers.get(gate["seq"])
        if found:
            gate["marker"], gate["changes"] = found["marker"], found["changes"]
    for old_gate in removed_gates:
        card = _gate(old, old_gate, old_facts)
        card["marker"] = stopped.get(old_gate.seq, "removed")
        model["gates"].append(card)
    for artifact in model["artifacts"]:
        found = fact_markers.get(artifact["seq"])
        artifact["marker"] = found["marker"] if found else ""

    usage = []
    for delta in diff.usage:
        usage.append(
            {
                "node": delta.node,
                "old_tokens": delta.old.total_tokens,
                "new_tokens": delta.new.total_tokens,
                "tokens_delta": delta.tokens,
                "old_cost": ", ".join(f"{money(a)} {c}" for c, a in sorted(delta.old.cost.items())),
                "new_cost": ", ".join(f"{money(a)} {c}" for c, a in sorted(delta.new.cost.items())),
                "cost_delta": _money_delta(delta.old.cost, delta.new.cost),
            }
        )
    total = diff.total_usage
    stats = dict(records["stats"])
    stats["unreached"] = sum(1 for mark in stopped.values() if mark == "unreached")
    stats["drifted"] = len(stopped) - stats["unreached"]
    stats["removed"] -= len(stopped)
    model["diff"] = {
        "old": {"name": names[0], "source": sources[0], "fact_count": len(old_facts)},
        "verdict": diff.verdict,
        "summary": _stopped_summary(diff, stopped) if stopped else diff.summary,
        "stats": stats,
        "drift": drift_model(drift),
        "cut": diff.cut,
        "dag_changes": records["dag_changes"],
        "fact_changes": records["fact_changes"],
        "removed_facts": removed,
        "usage": usage,
        "total": {
            "old_tokens": total.old.total_tokens,
            "new_tokens": total.new.total_tokens,
            "tokens_delta": total.tokens,
            "cost_delta": _money_delta(total.old.cost, total.new.cost),
        },
    }
    return model
