"""Declared DAG edges are checked: a run that steps where the DAG has no edge is drift."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pytest_llmwb import (
    Dag,
    DagTransitionError,
    ModelResponse,
    ReplayDriftError,
    Run,
)

CHAIN = Dag("chain").tool("a").tool("b").tool("c").chain("a", "b", "c")


def call(run: Run, node: str) -> None:
    run.tool_call(node, {"n": node}, lambda: {"ok": node}, node=node)


def test_the_declared_path_passes(tmp_path: Path) -> None:
    with Run("ok", dag=CHAIN) as run:
        for node in ("a", "b", "b", "c"):  # a node called again is no transition
            call(run, node)
    run.save(tmp_path / "b")
    with Run.replay(tmp_path / "b", dag=CHAIN) as run:
        for node in ("a", "b", "b", "c"):
            call(run, node)
        run.check_complete()


def test_an_undeclared_transition_is_drift() -> None:
    with Run("skip", dag=CHAIN) as run:
        call(run, "a")
        with pytest.raises(DagTransitionError) as info:
            call(run, "c")
    error = info.value
    assert isinstance(error, ReplayDriftError)
    assert (error.source, error.target) == ("a", "c")
    assert "node 'c' ran after 'a'" in str(error)
    assert "no edge 'a' -> 'c' (edges from 'a' lead to: 'b')" in str(error)
    assert "fix: declare the edge (Dag(...).edge('a', 'c'))" in str(error)


def test_a_run_may_start_at_any_node_but_not_step_back() -> None:
    with Run("late", dag=CHAIN) as run:
        call(run, "c")  # a test may drive one part of the workflow
        with pytest.raises(DagTransitionError, match="node 'a' ran after 'c'"):
            call(run, "a")


def test_replay_reports_the_transition_drift_of_changed_code(tmp_path: Path) -> None:
    with Run("rec", dag=CHAIN) as run:
        for node in ("a", "b", "c"):
            call(run, node)
    run.save(tmp_path / "b")
    with Run.replay(tmp_path / "b", dag=CHAIN) as run:
        call(run, "a")
        with pytest.raises(DagTransitionError):
            call(run, "c")
        assert [type(e) for e in run.raised_drift] == [DagTransitionError]


def test_lenient_replay_keeps_the_transition_drift(tmp_path: Path) -> None:
    with Run("rec", dag=CHAIN) as run:
        call(run, "a")
        call(run, "b")
    run.save(tmp_path / "b")
    loose = Dag("chain").tool("a").tool("b").tool("c").chain("a", "b", "c")
    with Run.replay(tmp_path / "b", dag=loose, lenient=True) as run:
        call(run, "b")
        call(run, "a")
    assert any(isinstance(d, DagTransitionError) for d in run.drifts)


def test_the_check_can_be_turned_off() -> None:
    with Run("off", dag=CHAIN, check_transitions=False) as run:
        call(run, "c")
        call(run, "a")
    assert [f.node for f in run.facts] == ["c", "a"]


def test_an_undeclared_dag_invents_no_edges_to_check(tmp_path: Path) -> None:
    with Run("free") as run:
        for node in ("a", "b", "c"):
            call(run, node)
    run.save(tmp_path / "b")
    with Run.replay(tmp_path / "b") as run:
        for node in ("a", "b", "c"):
            call(run, node)
    with Run("free") as run:  # any order is fine without declared edges
        for node in ("c", "a"):
            call(run, node)


def test_nodes_without_edges_are_free_and_transparent() -> None:
    dag = Dag("d").tool("a").tool("b").tool("log").chain("a", "b")
    with Run("free", dag=dag) as run:
        for node in ("log", "a", "log", "b", "log"):
            call(run, node)
    with Run("free", dag=dag) as run:
        for node in ("a", "b", "log"):
            call(run, node)
        with pytest.raises(DagTransitionError, match="node 'a' ran after 'b'"):
            call(run, "a")  # the node before it that edges name is b, not log


def test_a_container_step_encloses_its_nodes() -> None:
    dag = (
        Dag("agentic")
        .node("plan", kind="agent")
        .model("think")
        .tool("search")
        .tool("report")
        .chain("think", "search")
        .chain("plan", "report")
    )
    with Run("nested", dag=dag) as run:
        with run.step("plan"):
            run.model_io({"model": "m", "messages": []}, lambda r: ModelResponse(), node="think")
            call(run, "search")
        call(run, "report")  # after the step of plan: plan -> report
    with Run("inside", dag=dag) as run, run.step("plan"):
        call(run, "search")  # any node may come first inside its container
    with (
        pytest.raises(DagTransitionError, match="'think' ran after 'report'"),
        Run("tool-step", dag=dag) as run,
        run.step("plan"),
    ):
        call(run, "report")
        with run.step("report"):  # a tool node contains nothing
            run.model_io({"model": "m", "messages": []}, lambda r: ModelResponse(), node="think")


def test_concurrent_tasks_each_step_from_where_they_were_started() -> None:
    dag = Dag("fan").tool("plan").tool("search").tool("rank").chain("plan", "search", "rank")

    async def task(run: Run, q: str, order: tuple[str, ...]) -> None:
        for node in order:
            await run.atool_call(node, {"q": q}, _found)

    async def main(run: Run, order: tuple[str, ...]) -> None:
        await run.atool_call("plan", {}, _found)
        # each task starts after plan, whatever the others did in between
        await asyncio.gather(*(task(run, q, order) for q in "xyz"))
        await run.atool_call("rank", {}, _found)

    with Run("fan", dag=dag) as run:
        asyncio.run(main(run, ("search", "rank")))
    with Run("fan", dag=dag) as run, pytest.raises(DagTransitionError, match="ran after 'plan'"):
        asyncio.run(main(run, ("rank",)))


async def _found() -> dict[str, bool]:
    return {"found": True}


PLUGIN_TEST = """
import pytest
from pytest_llmwb import Dag

DAG = Dag("chain").tool("a").tool("b").tool("c").chain("a", "b", "c")


def call(run, node):
    run.tool_call(node, {{}}, dict, node=node)


@pytest.mark.llmwb(dag=DAG, mode="rewrite"{marker})
def test_skips_b(llmwb):
    call(llmwb, "a")
    call(llmwb, "c")
"""


@pytest.mark.parametrize(
    ("marker", "ini", "args", "outcome"),
    [
        ("", "", (), "failed"),
        (", check_transitions=False", "", (), "passed"),
        ("", "llmwb_check_transitions = false", (), "passed"),
        (", check_transitions=True", "llmwb_check_transitions = false", (), "failed"),
        (", check_transitions=True", "", ("--llmwb-no-check-transitions",), "passed"),
    ],
    ids=["default", "marker-off", "ini-off", "marker-over-ini", "option-over-marker"],
)
def test_plugin_checks_transitions_unless_turned_off(
    pytester: pytest.Pytester, marker: str, ini: str, args: tuple[str, ...], outcome: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_chain=PLUGIN_TEST.format(marker=marker))
    result = pytester.runpytest_inprocess("-p", "no:hypothesispytest", *args)
    result.assert_outcomes(**{outcome: 1})
    if outcome == "failed":
        result.stdout.fnmatch_lines(
            ["*DagTransitionError: DAG transition drift*'c' ran after 'a'*"]
        )
