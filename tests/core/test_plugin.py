"""The pytest plugin end to end, through pytester: modes, paths, errors, hooks."""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_llmwb import load_bundle

if TYPE_CHECKING:
    from conftest import Agent

Tree = Callable[[Path], dict[str, bytes]]

TEST_FLOW = """
import agent

def test_refund(llmwb):
    reply = agent.run_agent("refund?")
    assert reply.content.startswith("done: refund?")
"""


def _bundles(pytester: pytest.Pytester, base: str = "llmwb_bundles") -> list[str]:
    root = pytester.path / base
    return (
        sorted(str(p.parent.relative_to(root)) for p in root.rglob("manifest.json"))
        if root.exists()
        else []
    )


def _record_flow(pytester: pytest.Pytester, agent: Agent, source: str = TEST_FLOW) -> Path:
    pytester.makepyfile(test_flow=source)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=source.count("def test_"))
    agent.reset()
    return pytester.path / "llmwb_bundles" / "test_flow"


def test_missing_bundle_fails_with_the_record_command(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.makepyfile(
        test_flow=TEST_FLOW
        + """
import pytest

@pytest.mark.parametrize("who", ["a b"])
def test_param(llmwb, who):
    agent.run_agent(who)
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "BundleNotFoundError" in out
    assert "fix: pytest --llmwb-record test_flow.py::test_refund\n" in out
    assert f"fix: pytest --llmwb-record {shlex.quote('test_flow.py::test_param[a b]')}" in out
    assert "'test_flow.py::test_param[a b]'" in out
    assert agent.live_calls() == []
    assert not (pytester.path / "llmwb_bundles").exists()


def test_record_writes_bundle_next_to_the_test_file(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.mkpydir("sub")
    (pytester.path / "sub" / "test_flow.py").write_text(TEST_FLOW)
    result = pytester.runpytest("--llmwb-record")
    result.assert_outcomes(passed=1)
    assert agent.live_calls() == ["lookup A1", "answer"]
    path = pytester.path / "sub" / "llmwb_bundles" / "test_flow" / "test_refund"
    bundle = load_bundle(path)
    assert bundle.name == "sub/test_flow.py::test_refund"
    assert [f.kind for f in bundle.facts] == ["tool_call", "model_io"]
    assert not (pytester.path / "llmwb_bundles").exists()
    result.stdout.fnmatch_lines(["*1 bundle(s) written:*", "*test_flow*test_refund*"])


def test_replay_passes_without_calling_live_functions(
    pytester: pytest.Pytester, agent: Agent, snapshot_tree: Tree
) -> None:
    bundles = _record_flow(pytester, agent)
    before = snapshot_tree(bundles)
    agent.offline()
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert agent.live_calls() == []
    assert snapshot_tree(bundles) == before  # replay writes nothing


def test_replay_drift_fails_the_test_with_paths(pytester: pytest.Pytester, agent: Agent) -> None:
    _record_flow(pytester, agent)
    agent.offline()
    pytester.makepyfile(test_flow=TEST_FLOW.replace('run_agent("refund?")', 'run_agent("cancel")'))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*PayloadDriftError: request drift at node 'answer', 1st call (ordinal 0)*",
            '*/messages/0/content: "refund? *" -> "cancel *"*',
            "*fix: pytest --llmwb-record test_flow.py::test_refund*",
        ]
    )


TWO_TESTS = """
import agent

def test_a(llmwb):
    agent.run_agent("a", orders=("A1",))

def test_b(llmwb):
    agent.run_agent("b", orders=("B2",))
"""


def test_once_records_only_missing_bundles(
    pytester: pytest.Pytester, agent: Agent, snapshot_tree: Tree
) -> None:
    bundles = _record_flow(pytester, agent, TWO_TESTS.split("def test_b")[0])
    before = snapshot_tree(bundles / "test_a")
    pytester.makepyfile(test_flow=TWO_TESTS)
    result = pytester.runpytest("--llmwb-mode=once")
    result.assert_outcomes(passed=2)
    assert agent.live_calls() == ["lookup B2", "answer"]  # test_a was served
    assert snapshot_tree(bundles / "test_a") == before
    assert _bundles(pytester) == ["test_flow/test_a", "test_flow/test_b"]


def test_new_appends_new_calls_to_an_existing_bundle(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    source = """
import agent

def test_orders(llmwb):
    agent.lookup("A1")
"""
    bundles = _record_flow(pytester, agent, source)
    pytester.makepyfile(test_flow=source + '    agent.lookup("B2")\n')
    result = pytester.runpytest("--llmwb-mode=new")
    result.assert_outcomes(passed=1)
    assert agent.live_calls() == ["lookup B2"]
    bundle = load_bundle(bundles / "test_orders")
    assert [f.arguments["order_id"] for f in bundle.tool_calls()] == ["A1", "B2"]
    agent.offline()
    pytester.runpytest().assert_outcomes(passed=1)


def test_new_with_nothing_new_leaves_the_bundle_untouched(
    pytester: pytest.Pytester, agent: Agent, snapshot_tree: Tree
) -> None:
    bundles = _record_flow(pytester, agent)
    before = snapshot_tree(bundles)
    agent.offline()  # every call is served: nothing can run live
    result = pytester.runpytest("--llmwb-mode=new")
    result.assert_outcomes(passed=1)
    assert snapshot_tree(bundles) == before  # volatile.json included
    result.stdout.no_fnmatch_line("*bundle(s) written*")  # and none is said to be


def test_verify_calls_live_and_writes_nothing(
    pytester: pytest.Pytester, agent: Agent, snapshot_tree: Tree
) -> None:
    bundles = _record_flow(pytester, agent)
    before = snapshot_tree(bundles)
    result = pytester.runpytest("--llmwb-mode=verify")
    result.assert_outcomes(passed=1)
    assert agent.live_calls() == ["lookup A1", "answer"]
    assert snapshot_tree(bundles) == before


def test_verify_fails_on_request_drift(
    pytester: pytest.Pytester, agent: Agent, snapshot_tree: Tree
) -> None:
    bundles = _record_flow(pytester, agent)
    before = snapshot_tree(bundles)
    pytester.makepyfile(test_flow=TEST_FLOW.replace('"refund?")', '"refund?", orders=("Z9",))'))
    result = pytester.runpytest("--llmwb-mode=verify")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*PayloadDriftError*", "*/arguments/order_id: 'A1' -> 'Z9'*"])
    assert snapshot_tree(bundles) == before


def test_failing_test_in_record_mode_keeps_the_old_bundle(
    pytester: pytest.Pytester, agent: Agent, snapshot_tree: Tree
) -> None:
    bundles = _record_flow(pytester, agent)
    before = snapshot_tree(bundles)
    pytester.makepyfile(
        test_flow=TEST_FLOW.replace('run_agent("refund?")', 'run_agent("other")')
        + "    assert False, 'the agent regressed'\n"
    )
    result = pytester.runpytest("--llmwb-record")
    result.assert_outcomes(failed=1)
    assert agent.live_calls() == ["lookup A1", "answer"]
    assert snapshot_tree(bundles) == before
    out = result.stdout.str()
    assert "its bundle was not written" in out
    assert f"{bundles / 'test_refund'} is unchanged" in out
    kept = out.split("kept for inspection at ", 1)[1].split(" ", 1)[0]
    partial = load_bundle(kept)
    assert (
        partial.model_io()[0].request.messages[0].content
        == "other [{'order_id': 'A1', 'status': 'shipped'}]"
    )


UNUSED = """
import agent
import pytest

{marker}
def test_orders(llmwb):
    agent.lookup("A1")
{more}
"""


def test_unused_recorded_calls_fail_at_teardown(pytester: pytest.Pytester, agent: Agent) -> None:
    _record_flow(pytester, agent, UNUSED.format(marker="", more='    agent.lookup("B2")'))
    pytester.makepyfile(test_flow=UNUSED.format(marker="", more=""))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_orders*",
            "*MissingCallsError: 1 recorded call(s) were never made*",
            "*node 'lookup', 2nd call: tool_call lookup*B2*",
            "*allow_unused=True*llmwb_allow_unused = true*",
        ]
    )


def test_allow_unused_marker_and_ini_opt_out(pytester: pytest.Pytester, agent: Agent) -> None:
    _record_flow(pytester, agent, UNUSED.format(marker="", more='    agent.lookup("B2")'))
    pytester.makepyfile(
        test_flow=UNUSED.format(marker="@pytest.mark.llmwb(allow_unused=True)", more="")
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(test_flow=UNUSED.format(marker="", more=""))
    pytester.makeini("[pytest]\nllmwb_allow_unused = true\n")
    pytester.runpytest().assert_outcomes(passed=1)


def test_unknown_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest("--llmwb-mode=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmwb-mode=bogus*replay, once, new, rewrite, verify*"])


def test_record_contradicting_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest("--llmwb-record", "--llmwb-mode=verify")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_unknown_marker_argument_is_a_config_error(pytester: pytest.Pytester, agent: Agent) -> None:
    pytester.makepyfile(
        test_flow="""
import pytest

@pytest.mark.llmwb(bundel="typo")
def test_x(llmwb):
    pass
"""
    )
    result = pytester.runpytest("--llmwb-record")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ConfigError: @pytest.mark.llmwb on test_flow.py::test_x got unknown argument(s) bundel*"]
    )


def test_two_tests_with_one_bundle_name_conflict_in_record_mode(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.makepyfile(
        test_flow="""
import agent
import pytest

@pytest.mark.llmwb(bundle="shared")
def test_one(llmwb):
    agent.lookup("A1")

@pytest.mark.llmwb(bundle="shared")
def test_two(llmwb):
    agent.lookup("B2")
"""
    )
    result = pytester.runpytest("--llmwb-record")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*BundleConflictError: test_flow.py::test_one and test_flow.py::test_two would both*"]
    )
    assert agent.live_calls() == []
    assert _bundles(pytester) == []


def test_parametrized_ids_get_safe_distinct_bundle_dirs(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.makepyfile(
        test_flow="""
import agent
import pytest

@pytest.mark.parametrize("q", ["a/b", "a:b", "a b", "a_b", "../up"])
def test_p(llmwb, q):
    agent.run_agent(q)
"""
    )
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=5)
    names = _bundles(pytester)
    assert len(names) == 5
    for name in names:
        module, test = name.split("/")
        assert module == "test_flow"
        assert not any(c in test for c in ':" \\'), test
    assert sorted(p.name for p in (pytester.path / "llmwb_bundles").iterdir()) == ["test_flow"]
    names_by_test = {load_bundle(pytester.path / "llmwb_bundles" / n).name: n for n in names}
    assert set(names_by_test) == {
        f"test_flow.py::test_p[{q}]" for q in ["a/b", "a:b", "a b", "a_b", "../up"]
    }
    assert names_by_test["test_flow.py::test_p[a_b]"] == "test_flow/test_p[a_b]"
    agent.reset()
    agent.offline()
    pytester.runpytest().assert_outcomes(passed=5)


def test_bundle_dir_option(pytester: pytest.Pytester, agent: Agent) -> None:
    pytester.makepyfile(test_flow=TEST_FLOW)
    pytester.runpytest("--llmwb-record", "--llmwb-bundle-dir=golden").assert_outcomes(passed=1)
    assert (pytester.path / "golden/test_flow/test_refund/manifest.json").is_file()
    assert not (pytester.path / "llmwb_bundles").exists()
    agent.offline()
    pytester.runpytest("--llmwb-bundle-dir=golden").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(errors=1)  # the default place has none


def test_bundle_dir_ini(pytester: pytest.Pytester, agent: Agent) -> None:
    pytester.makeini("[pytest]\nllmwb_bundle_dir = recorded\n")
    pytester.makepyfile(test_flow=TEST_FLOW)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    assert (pytester.path / "recorded/test_flow/test_refund/manifest.json").is_file()


def test_bundle_path_hook_overrides_the_path(pytester: pytest.Pytester, agent: Agent) -> None:
    pytester.makeconftest(
        """
def pytest_llmwb_bundle_path(item, default):
    assert default.parts[-3:] == ("llmwb_bundles", "test_flow", "test_refund")
    return item.path.parent / "custom" / ("golden-" + item.name)
"""
    )
    pytester.makepyfile(test_flow=TEST_FLOW)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    assert (pytester.path / "custom/golden-test_refund/manifest.json").is_file()
    assert not (pytester.path / "llmwb_bundles").exists()
    agent.offline()
    pytester.runpytest().assert_outcomes(passed=1)


def test_run_finished_hook_is_called(pytester: pytest.Pytester, agent: Agent) -> None:
    pytester.makeconftest(
        """
import os

def pytest_llmwb_run_finished(item, run, bundle_path, written):
    with open(os.environ["AGENT_LOG"] + ".hook", "a") as log:
        log.write(f"{item.name} {run.mode} {len(run.facts)} {written} {bundle_path.name}\\n")
"""
    )
    pytester.makepyfile(test_flow=TEST_FLOW)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)
    hook_log = Path(str(agent.log) + ".hook").read_text().splitlines()
    assert hook_log == [
        "test_refund record 2 True test_refund",
        "test_refund replay 2 False test_refund",
    ]


def test_marker_without_fixture_records_and_replays(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.makepyfile(
        test_flow="""
import agent
import pytest
from pytest_llmwb import current_run

@pytest.mark.llmwb
def test_marked():
    assert current_run() is not None
    agent.run_agent("marked")
"""
    )
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    bundle = load_bundle(pytester.path / "llmwb_bundles/test_flow/test_marked")
    assert len(bundle.facts) == 2
    agent.reset()
    agent.offline()
    pytester.runpytest().assert_outcomes(passed=1)
    assert agent.live_calls() == []


def test_unwritable_bundle_dir_is_a_bundle_write_error(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    (pytester.path / "not_a_dir").write_text("a regular file")
    pytester.makepyfile(test_flow=TEST_FLOW)
    result = pytester.runpytest("--llmwb-record", "--llmwb-bundle-dir=not_a_dir")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*BundleWriteError: cannot write bundle*not_a_dir*"])


def test_plugin_import_is_light() -> None:
    code = textwrap.dedent(
        """
        import sys
        import pytest_llmwb.plugin
        heavy = ["pydantic", "orjson", "vcr", "cryptography", "deepdiff", "syrupy"]
        print(",".join(m for m in heavy if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_mode_precedence_option_over_marker_over_ini(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.makeini("[pytest]\nllmwb_mode = once\n")
    pytester.makepyfile(
        test_flow="""
import agent
import pytest

def test_ini(llmwb):
    agent.lookup("I1")

@pytest.mark.llmwb(mode="replay")
def test_marker(llmwb):
    agent.lookup("M1")
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)  # ini once records; marker replay has none
    result.stdout.fnmatch_lines(["*BundleNotFoundError: no bundle for test_flow.py::test_marker*"])
    assert agent.live_calls() == ["lookup I1"]
    pytester.runpytest("--llmwb-mode=once").assert_outcomes(passed=2)  # option beats marker
    assert agent.live_calls() == ["lookup I1", "lookup M1"]


def test_bad_ini_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nllmwb_mode = sometimes\n")
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llmwb_mode = sometimes*replay, once, new, rewrite, verify*"])


def test_marker_dag_and_gates(pytester: pytest.Pytester, agent: Agent) -> None:
    source = """
import agent
import pytest
from pytest_llmwb import Dag

DAG = Dag("flow").tool("lookup").model("answer", prompt="{prompt}").gate("approve")

def reviewer(subject):
    return {{"decision": "approved", "reviewer": {{"id": "bot", "kind": "policy"}}}}

@pytest.mark.llmwb(dag=DAG, gates={gates})
def test_flow(llmwb):
    agent.run_agent("q")
    fact = llmwb.gate("approve", subject={{"q": 1}}, reviewer=reviewer)
    assert fact.decision == "{expect}"
"""
    pytester.makepyfile(test_flow=source.format(prompt="v1", gates=None, expect="approved"))
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    bundle = load_bundle(pytester.path / "llmwb_bundles/test_flow/test_flow")
    assert bundle.dag.declared
    assert bundle.dag.node_ids == ["lookup", "answer", "approve"]
    agent.offline()
    scripted = source.format(prompt="v1", gates={"approve": "rejected"}, expect="rejected")
    pytester.makepyfile(test_flow=scripted)
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(test_flow=source.format(prompt="v2", gates=None, expect="approved"))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*DagDriftError*", "*node 'answer': config 'prompt' changed*"])
