"""Gates, budgets and the per-test summary through pytest itself."""

from __future__ import annotations

import pytest

AGENT = """
import pytest_llmwb as llmwb
from pytest_llmwb import Dag, ModelResponse, PolicyReviewer

DAG = Dag("a").model("answer").gate("approve").tool("send").chain("answer", "approve", "send")

def price(request, response):
    return llmwb.Cost(amount="0.25", source="test prices v1")

@llmwb.model(node="answer", cost=price)
def complete(request):
    return ModelResponse(content="ok", usage={"input_tokens": 30, "output_tokens": 12})

@llmwb.tool
def send(text: str) -> str:
    return "sent"

policy = PolicyReviewer("send-policy", lambda subject: ("approved", "fine"))

def run_agent():
    llmwb.declare(DAG)
    answer = complete({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    decision = llmwb.gate("approve", reviewer=policy, subject={"text": answer.content})
    if decision.decision == "approved":
        send(answer.content)
"""


@pytest.fixture
def agent(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(agent=AGENT)
    pytester.syspathinsert()
    return pytester


def test_failed_gate_expectation_explains_itself(agent: pytest.Pytester) -> None:
    agent.makepyfile(
        test_a="""
        from pytest_llmwb import expect_gate
        from agent import run_agent

        def test_gate(llmwb):
            run_agent()
            assert llmwb.gates["approve"] == expect_gate("rejected", reviewer="human")
        """
    )
    agent.runpytest("--llmwb-record").assert_outcomes(failed=1)
    result = agent.runpytest("--llmwb-record")  # twice: the second run re-imports the package
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*gate 'approve' does not match the expectation:*",
            "*decision: expected 'rejected', got 'approved'*",
            "*reviewer: expected 'human', got policy 'send-policy@1'*",
            "*actual:*",
            "*reason:   fine*",
            "*subject:  value (sha256:*",
        ]
    )


def test_assert_gate_names_the_gates_that_fired(agent: pytest.Pytester) -> None:
    agent.makepyfile(
        test_a="""
        from pytest_llmwb import assert_gate
        from agent import run_agent

        def test_gate(llmwb):
            run_agent()
            assert_gate(llmwb, "aprove", "approved")
        """
    )
    result = agent.runpytest("--llmwb-record")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*gate 'aprove' never fired in run * (gates that fired: approve)*"]
    )


def test_budget_fails_the_test_with_the_top_spenders_and_writes_nothing(
    agent: pytest.Pytester,
) -> None:
    agent.makepyfile(
        test_a="""
        import pytest
        from agent import run_agent

        @pytest.mark.llmwb(max_cost="0.10", max_tokens=20)
        def test_budget(llmwb):
            run_agent()
        """
    )
    result = agent.runpytest("--llmwb-record")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*BudgetExceededError: test_a.py::test_budget spent 42 tokens, over max_tokens=20 "
            "and 0.25 USD, over max_cost=0.10",
            "*top spenders:",
            "*answer: 1 call(s), 42 tokens, 0.25 USD",
            "*fix: make the agent spend less, or raise the budget*",
        ]
    )
    assert not (agent.path / "llmwb_bundles" / "test_a" / "test_budget").exists()


def test_budget_within_limits_passes_in_replay_too(agent: pytest.Pytester) -> None:
    agent.makepyfile(
        test_a="""
        import pytest
        from agent import run_agent

        @pytest.mark.llmwb(max_cost=1, max_tokens=100)
        def test_budget(llmwb):
            run_agent()
        """
    )
    agent.runpytest("--llmwb-record").assert_outcomes(passed=1)
    agent.runpytest().assert_outcomes(passed=1)


def test_terminal_summary_shows_mode_calls_tokens_cost_and_gates(agent: pytest.Pytester) -> None:
    agent.makepyfile(
        test_a="""
        from agent import run_agent

        def test_one(llmwb):
            run_agent()

        def test_plain():
            pass
        """
    )
    agent.runpytest("--llmwb-record").assert_outcomes(passed=2)
    result = agent.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*- llmwb -*",
            "test_a.py::test_one: replay, 2 calls, 42 tokens, 0.25 USD; gates approve=approved",
        ]
    )
    assert "test_plain" not in result.stdout.str().split("- llmwb -")[1]


def test_scripted_decision_for_a_gate_that_never_fires_is_reported(agent: pytest.Pytester) -> None:
    agent.makepyfile(
        test_a="""
        import pytest
        from agent import run_agent

        def test_one(llmwb):
            run_agent()

        @pytest.mark.llmwb("test_one", gates={"aprove": "rejected"})
        def test_scripted(llmwb):
            run_agent()
        """
    )
    agent.runpytest("--llmwb-record", "-k", "test_one").assert_outcomes(passed=1)
    result = agent.runpytest("-k", "test_scripted")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ConfigError: test_a.py::test_scripted: scripted decision(s) "
            "for gate(s) that never fired: aprove*"
        ]
    )


def test_scripting_the_other_branch_without_its_bundle_names_gate_and_call(
    agent: pytest.Pytester,
) -> None:
    agent.makepyfile(
        test_a="""
        import pytest
        from agent import run_agent

        def test_one(llmwb):
            run_agent()

        @pytest.mark.llmwb("test_one", gates={"approve": "rejected"})
        def test_rejected(llmwb):
            run_agent()
        """
    )
    agent.runpytest("--llmwb-record", "-k", "test_one").assert_outcomes(passed=1)
    result = agent.runpytest("-k", "test_rejected")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*MissingCallsError: 1 recorded call(s) were never made by the replayed run:*",
            "*node 'send', 1st call: tool_call send*",
            "*note: gate 'approve' was scripted to 'rejected' but this bundle recorded 'approved'*",
        ]
    )


def test_a_failed_record_is_kept_aside_even_without_the_cache_plugin(
    agent: pytest.Pytester,
) -> None:
    agent.makepyfile(
        test_a="""
        from agent import run_agent

        def test_one(llmwb):
            run_agent()
            assert False
        """
    )
    result = agent.runpytest("--llmwb-record", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*The partial run is kept for inspection at *llmwb-failed-*"])
    assert "AttributeError" not in result.stdout.str()


def test_a_budget_warns_when_calls_it_checks_have_no_cost(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_u="""
        import pytest
        import pytest_llmwb as llmwb
        from pytest_llmwb import ModelRequest, ModelResponse

        @llmwb.model(provider="openai")
        def ask(request: ModelRequest) -> ModelResponse:
            return ModelResponse(model="gpt-4o", content="hi")  # no usage reported

        @pytest.mark.llmwb(max_cost=1)
        def test_u(llmwb):
            ask(ModelRequest(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]))
            assert llmwb.model_calls[0].cost is None  # not priced at 0: nothing is guessed
        """
    )
    result = pytester.runpytest(
        "--llmwb-record", "-p", "no:cacheprovider", "-W", "default::pytest_llmwb.LlmwbWarning"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*LlmwbWarning: test_u.py::test_u: max_cost=1 sees only priced calls; 1 model "
            "call(s) have no cost*",
            "*test_u.py::test_u: rewrite, 1 call, 0 tokens (1 unpriced)*",
        ]
    )
