"""Declaring the workflow a run is about to execute, and freezing it into a snapshot."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .codec import digest
from .exceptions import DagDefinitionError
from .schema import DagEdge, DagNode, DagSnapshot, NodeKind

__all__ = ["Dag", "DagTransitions", "config_value", "snapshot_from_nodes"]

_NODE_KINDS = ("model", "tool", "gate", "function", "agent", "subgraph")
#: Kinds of node that run others inside them (a step of theirs encloses their calls).
CONTAINER_KINDS = ("function", "agent", "subgraph")


def config_value(value: Any, *, where: str) -> Any:
    """A node config value as JSON: pydantic model classes become their JSON Schema."""
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError:
        raise DagDefinitionError(
            f"{where}: config value of type {type(value).__name__} is not JSON",
            fix="pass strings, numbers, lists, dicts or a pydantic model class",
        ) from None


def _node(node_id: str, kind: str, config: dict[str, Any]) -> DagNode:
    digests = {key: digest(value) for key, value in sorted(config.items())}
    node_digest = digest({"id": node_id, "kind": kind, "config": digests})
    return DagNode.model_validate(
        {"id": node_id, "kind": kind, "config": config, "digests": digests, "digest": node_digest}
    )


def _snapshot(name: str, declared: bool, nodes: list[DagNode], edges: list[DagEdge]) -> DagSnapshot:
    dag_digest = digest(
        {
            "name": name,
            "declared": declared,
            "nodes": [node.digest for node in nodes],
            "edges": [[edge.source, edge.target] for edge in edges],
        }
    )
    return DagSnapshot(name=name, declared=declared, nodes=nodes, edges=edges, digest=dag_digest)


class Dag:
    """A workflow declaration: nodes with their config, and edges.

    Config values are what defines a node's behaviour (prompt template, model id,
    tool schema, gate policy); each gets a digest in the snapshot, so a changed
    prompt shows up as a changed node. Methods chain::

        dag = (
            Dag("support_agent")
            .model("classify", prompt=CLASSIFY_PROMPT, model="small-1")
            .tool("lookup_order", schema=LookupOrder)
            .chain("classify", "lookup_order")
        )
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: dict[str, tuple[str, dict[str, Any]]] = {}
        self._edges: list[tuple[str, str]] = []

    def node(self, node_id: str, kind: NodeKind = "function", **config: Any) -> Dag:
        """Declare a node of any kind."""
        if not node_id:
            raise DagDefinitionError(f"DAG {self.name!r}: a node id must not be empty")
        if kind not in _NODE_KINDS:
            raise DagDefinitionError(
                f"DAG {self.name!r}: node {node_id!r} has unknown kind {kind!r}",
                fix=f"use one of {', '.join(_NODE_KINDS)}",
            )
        if node_id in self._nodes:
            raise DagDefinitionError(
                f"DAG {self.name!r}: node {node_id!r} is declared twice",
                fix="give each node a unique id",
            )
        where = f"DAG {self.name!r}, node {node_id!r}, key"
        self._nodes[node_id] = (
            kind,
            {key: config_value(value, where=f"{where} {key!r}") for key, value in config.items()},
        )
        return self

    def model(self, node_id: str, **config: Any) -> Dag:
        """Declare a model node (config: ``prompt``, ``model``, sampling parameters, ...)."""
        return self.node(node_id, "model", **config)

    def tool(self, node_id: str, **config: Any) -> Dag:
        """Declare a tool node (config: ``schema``, ``description``, ...)."""
        return self.node(node_id, "tool", **config)

    def gate(self, node_id: str, **config: Any) -> Dag:
        """Declare a gate node (config: ``policy``, thresholds, ...)."""
        return self.node(node_id, "gate", **config)

    def edge(self, source: str, target: str) -> Dag:
        """Declare an edge ``source -> target``."""
        self._edges.append((source, target))
        return self

    def chain(self, *node_ids: str) -> Dag:
        """Declare edges between consecutive nodes."""
        for source, target in itertools.pairwise(node_ids):
            self.edge(source, target)
        return self

    def freeze(self) -> DagSnapshot:
        """The immutable snapshot, with the digest of every node config and of the whole."""
        for source, target in self._edges:
            for end in (source, target):
                if end not in self._nodes:
                    raise DagDefinitionError(
                        f"DAG {self.name!r}: edge {source!r} -> {target!r} names "
                        f"undeclared node {end!r}",
                        fix=f"declare it first, e.g. dag.node({end!r}, kind=...)",
                    )
        nodes = [_node(nid, kind, config) for nid, (kind, config) in self._nodes.items()]
        edges = [DagEdge(source=s, target=t) for s, t in self._edges]
        return _snapshot(self.name, True, nodes, edges)


def snapshot_from_nodes(name: str, used: Iterable[tuple[str, str]]) -> DagSnapshot:
    """A DAG derived from the ``(node, kind)`` pairs a run used, in order of first use.

    Consecutive nodes are joined by an edge, so a host that declares nothing still gets
    the path its run took.
    """
    nodes = [_node(node_id, kind, {}) for node_id, kind in used]
    edges = [DagEdge(source=a.id, target=b.id) for a, b in itertools.pairwise(nodes)]
    return _snapshot(name, False, nodes, edges)


class DagTransitions:
    """The steps from node to node that a declared DAG allows.

    A *transition* is a step, within one thread or task, from the node that last ran
    to the next one. Only nodes that some edge names are checked: a node without edges
    is free to run anywhere and is transparent (the step around it is checked as if it
    were not there). A transition ``a -> b`` is allowed when the DAG has that edge, when
    ``a`` and ``b`` are the same node (a node called again), or when ``a`` is a
    function, agent or subgraph node whose step encloses ``b``. The first node a run
    reaches has no transition into it: any node may start a run (a test may drive one
    part of a workflow, a service may resume one).
    """

    def __init__(self, dag: DagSnapshot) -> None:
        self.name = dag.name
        self.edges = {(edge.source, edge.target) for edge in dag.edges}
        self.checked = {node for edge in self.edges for node in edge}
        self.kinds = {node.id: node.kind for node in dag.nodes}
        self._out: dict[str, list[str]] = {}
        for source, target in sorted(self.edges):
            self._out.setdefault(source, []).append(target)

    def problem(self, previous: str | None, node: str, container: str | None) -> str | None:
        """What is wrong with running ``node`` after ``previous`` (inside ``container``)."""
        if node not in self.checked or previous is None or previous == node:
            return None
        if (previous, node) in self.edges:
            return None
        if previous == container and self.kinds.get(previous) in CONTAINER_KINDS:
            return None
        allowed = ", ".join(repr(t) for t in self._out.get(previous, [])) or "none"
        return (
            f"node {node!r} ran after {previous!r}, but DAG {self.name!r} declares no edge "
            f"{previous!r} -> {node!r} (edges from {previous!r} lead to: {allowed})"
        )
