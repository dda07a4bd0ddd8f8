"""The DAG declaration (errors, digests, JSON Schema config) and the fact schema."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from pydantic import BaseModel, ValidationError

from pytest_llmwb import Dag, DagDefinitionError
from pytest_llmwb.codec import digest
from pytest_llmwb.schema import (
    FACT_KINDS,
    Cost,
    DagSnapshot,
    GateFact,
    ModelIOFact,
    StepFact,
    fact_adapter,
    json_schema,
)


class LookupOrder(BaseModel):
    order_id: str


class LookupOrderV2(BaseModel):
    order_id: str
    include_history: bool = False


def _agent_dag(prompt: str = "Classify: {ticket}") -> Dag:
    return (
        Dag("support")
        .model("classify", prompt=prompt, model="small-1", temperature=0)
        .tool("lookup_order", schema=LookupOrder)
        .gate("approve", policy="refunds")
        .chain("classify", "lookup_order", "approve")
    )


# --- builder errors ----------------------------------------------------------------------


def test_duplicate_node_names_the_node() -> None:
    dag = Dag("d").model("classify")
    with pytest.raises(DagDefinitionError, match=r"'classify' is declared twice"):
        dag.tool("classify")


def test_unknown_kind_names_node_and_kind() -> None:
    with pytest.raises(DagDefinitionError) as excinfo:
        Dag("d").node("planner", "brain")  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "'planner'" in message
    assert "'brain'" in message
    assert "model" in message  # the fix lists the valid kinds


@pytest.mark.parametrize(
    ("source", "target", "missing"), [("a", "ghost", "ghost"), ("b", "a", "b")]
)
def test_edge_to_undeclared_node_names_it(source: str, target: str, missing: str) -> None:
    dag = Dag("d").node("a").edge(source, target)
    with pytest.raises(DagDefinitionError, match=rf"undeclared node '{missing}'"):
        dag.freeze()


def test_empty_node_id_is_rejected() -> None:
    with pytest.raises(DagDefinitionError):
        Dag("d").node("")


def test_non_json_config_value_names_node_and_key() -> None:
    with pytest.raises(DagDefinitionError, match=r"node 'm'.*'client'"):
        Dag("d").model("m", client=object())


# --- digests -------------------------------------------------------------------------------


def test_same_declaration_gives_same_digests() -> None:
    one, two = _agent_dag().freeze(), _agent_dag().freeze()
    assert one.digest == two.digest
    assert [n.digest for n in one.nodes] == [n.digest for n in two.nodes]
    assert one == two


def test_config_key_order_does_not_change_digest() -> None:
    a = Dag("d").model("m", prompt="p", model="x").freeze()
    b = Dag("d").model("m", model="x", prompt="p").freeze()
    assert a.digest == b.digest


def test_digest_is_stable_across_processes() -> None:
    # dict/set iteration or hash randomisation must not leak into digests
    code = textwrap.dedent(
        """
        from pytest_llmwb import Dag
        d = (Dag("support").model("classify", prompt="p", model="small-1", tags={"b": 1, "a": 2})
             .tool("t", allowed=["x", "y"]).chain("classify", "t"))
        print(d.freeze().digest)
        """
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    local = (
        Dag("support")
        .model("classify", prompt="p", model="small-1", tags={"a": 2, "b": 1})
        .tool("t", allowed=["x", "y"])
        .chain("classify", "t")
        .freeze()
        .digest
    )
    assert digests == {local}


def test_prompt_change_changes_node_and_dag_digest_only_where_it_should() -> None:
    old = _agent_dag("Classify: {ticket}").freeze()
    new = _agent_dag("Classify politely: {ticket}").freeze()
    assert new.digest != old.digest
    old_nodes = {n.id: n for n in old.nodes}
    new_nodes = {n.id: n for n in new.nodes}
    assert new_nodes["classify"].digest != old_nodes["classify"].digest
    assert new_nodes["classify"].digests["prompt"] != old_nodes["classify"].digests["prompt"]
    assert new_nodes["classify"].digests["model"] == old_nodes["classify"].digests["model"]
    for unchanged in ("lookup_order", "approve"):
        assert new_nodes[unchanged].digest == old_nodes[unchanged].digest


def test_edges_and_name_are_part_of_the_dag_digest() -> None:
    base = Dag("d").node("a").node("b")
    chained = Dag("d").node("a").node("b").edge("a", "b").freeze()
    renamed = Dag("e").node("a").node("b").freeze()
    plain = base.freeze()
    assert len({plain.digest, chained.digest, renamed.digest}) == 3
    assert [n.digest for n in chained.nodes] == [n.digest for n in plain.nodes]


def test_node_kind_is_part_of_node_digest() -> None:
    as_tool = Dag("d").tool("x").freeze()
    as_model = Dag("d").model("x").freeze()
    assert as_tool.nodes[0].digest != as_model.nodes[0].digest


def test_each_config_key_digest_is_the_digest_of_its_value() -> None:
    node = _agent_dag().freeze().node("classify")
    assert node is not None
    assert node.digests == {key: digest(value) for key, value in node.config.items()}


def test_pydantic_model_class_config_becomes_its_json_schema() -> None:
    snapshot = _agent_dag().freeze()
    node = snapshot.node("lookup_order")
    assert node is not None
    assert node.config["schema"] == LookupOrder.model_json_schema()
    changed = (
        Dag("support")
        .model("classify", prompt="Classify: {ticket}", model="small-1", temperature=0)
        .tool("lookup_order", schema=LookupOrderV2)
        .gate("approve", policy="refunds")
        .chain("classify", "lookup_order", "approve")
        .freeze()
    )
    changed_node = changed.node("lookup_order")
    assert changed_node is not None
    assert changed_node.digests["schema"] != node.digests["schema"]
    assert changed.digest != snapshot.digest


def test_snapshot_round_trips_through_json() -> None:
    snapshot = _agent_dag().freeze()
    again = DagSnapshot.model_validate_json(snapshot.model_dump_json())
    assert again == snapshot
    assert again.node_ids == ["classify", "lookup_order", "approve"]
    assert [(e.source, e.target) for e in again.edges] == [
        ("classify", "lookup_order"),
        ("lookup_order", "approve"),
    ]


def test_snapshot_is_frozen() -> None:
    snapshot = _agent_dag().freeze()
    with pytest.raises(ValidationError):
        snapshot.name = "other"  # type: ignore[misc]


# --- facts -----------------------------------------------------------------------------------


def test_fact_union_dispatches_on_kind() -> None:
    step = fact_adapter().validate_python({"kind": "step", "seq": 1, "node": "a", "phase": "start"})
    assert isinstance(step, StepFact)
    gate = fact_adapter().validate_python(
        {
            "kind": "gate",
            "seq": 2,
            "node": "g",
            "ordinal": 0,
            "gate_id": "g",
            "decision": "approved",
            "reviewer": {"id": "r", "kind": "human"},
        }
    )
    assert isinstance(gate, GateFact)


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "step", "seq": 1, "node": "a", "phase": "start", "surprise": 1},
        {"kind": "step", "seq": 0, "node": "a", "phase": "start"},
        {"kind": "step", "seq": 1, "node": "a", "phase": "middle"},
        {"kind": "step", "seq": 1, "node": "a", "phase": "start", "trace_id": "XYZ"},
        {"kind": "step", "seq": 1, "node": "a", "phase": "start", "span_id": "0" * 32},
        {"kind": "gate", "seq": 1, "node": "g", "ordinal": 0, "gate_id": "g",
         "decision": "maybe", "reviewer": {"id": "r", "kind": "human"}},
    ],
    ids=["extra-field", "seq-0", "bad-phase", "bad-trace-id", "bad-span-id", "bad-decision"],
)  # fmt: skip
def test_fact_validation_is_strict(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        fact_adapter().validate_python(bad)


@pytest.mark.parametrize("amount", ["0.0031", "12", "-1.5"])
def test_cost_accepts_decimal_strings(amount: str) -> None:
    assert str(Cost(amount=amount, source="price-table").decimal) == amount


@pytest.mark.parametrize("amount", ["abc", "NaN", "Infinity", ""])
def test_cost_rejects_non_finite_or_non_decimal(amount: str) -> None:
    with pytest.raises(ValidationError, match="cost amount"):
        Cost(amount=amount, source="price-table")


def test_model_io_usage_is_zero_when_call_failed() -> None:
    fact = ModelIOFact(
        seq=1,
        node="m",
        ordinal=0,
        provider="p",
        request={"model": "x"},  # type: ignore[arg-type]
        request_digest="sha256:0",
        error={"type": "TimeoutError", "message": "slow"},  # type: ignore[arg-type]
    )
    assert fact.usage.total_tokens == 0


def test_json_schema_exports_every_part() -> None:
    bundle = json_schema()
    assert set(bundle["properties"]) == {"manifest.json", "dag.json", "facts.jsonl"}
    fact_schema = json_schema("fact")
    mapping = fact_schema["discriminator"]["mapping"]
    assert set(mapping) == set(FACT_KINDS)
    assert "schema_version" in json_schema("manifest")["properties"]
    assert "digest" in json_schema("dag")["properties"]
