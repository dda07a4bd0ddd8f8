"""The newcomer's path through the example project, end to end, on a scratch copy."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "example_project"
BUNDLES = Path("tests/llmwb_bundles/test_refund")


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    shutil.copytree(EXAMPLE / "support_agent", pytester.path / "support_agent")
    shutil.copytree(EXAMPLE / "tests", pytester.path / "tests")
    shutil.copy(EXAMPLE / "prices.toml", pytester.path / "prices.toml")
    pytester.makeini(
        "[pytest]\npythonpath = .\nfilterwarnings = error\nllmwb_price_file = prices.toml\n"
    )
    return pytester.path


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # a subprocess: the agent module is edited between runs and must be imported afresh
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def _same_files(a: Path, b: Path, names: tuple[str, ...]) -> list[str]:
    differing = []
    for bundle in sorted(p.name for p in a.iterdir()):
        _, mismatch, errors = filecmp.cmpfiles(a / bundle, b / bundle, names, shallow=False)
        differing += [f"{bundle}/{name}" for name in mismatch + errors]
    return differing


def test_replays_offline_records_identically_and_reports_a_prompt_change(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = project / "committed"
    shutil.copytree(project / BUNDLES, committed)

    # 1. replay from the committed bundles: the scripted model is never called
    monkeypatch.setenv("LLMWB_EXAMPLE_PROVIDER", "openai")  # a live call would need a key
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # and would fail at once
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("LLMWB_EXAMPLE_MODEL", "scripted-support-1")
    _run(pytester).assert_outcomes(passed=8)
    monkeypatch.delenv("LLMWB_EXAMPLE_PROVIDER")
    monkeypatch.delenv("LLMWB_EXAMPLE_MODEL")

    # 2. record again: DAG and fact files are byte-identical
    result = _run(pytester, "--llmwb-record")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*8 bundle(s) written:*"])
    assert _same_files(committed, project / BUNDLES, ("dag.json", "facts.jsonl")) == []

    # 3. change one prompt: replay names the node, the config key and both texts
    agent = project / "support_agent" / "agent.py"
    source = agent.read_text()
    agent.write_text(source.replace("short, friendly replies", "short, formal replies"))
    result = _run(pytester, "tests/test_refund.py::test_large_refund_is_approved_by_policy")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*DagDriftError: DAG drift: the declared DAG 'support_agent' differs*",
            "*node 'draft_reply': config 'prompt' changed:",
            "*  - You write short, friendly replies to customers*",
            "*  + You write short, formal replies to customers*",
            "*fix: pytest --llmwb-record "
            "tests/test_refund.py::test_large_refund_is_approved_by_policy*",
        ]
    )


def test_default_provider_never_goes_live_because_a_key_is_present(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("LLMWB_EXAMPLE_PROVIDER", raising=False)
    _run(pytester, "--llmwb-record").assert_outcomes(passed=8)
    bundle = project / BUNDLES / "test_large_refund_is_approved_by_policy"
    facts = (bundle / "facts.jsonl").read_text()
    # the openai SDK was used, against the scripted stand-in, not the real API
    assert '"provider":"openai"' in facts and '"model":"scripted-support-1"' in facts
    assert '"url": "http://127.0.0.1:*/v1/chat/completions"' in "".join(
        blob.read_text() for blob in (bundle / "blobs").iterdir()
    )
    everything = b"".join(p.read_bytes() for p in (project / BUNDLES).rglob("*") if p.is_file())
    assert b"sk-test-not-a-real-key" not in everything


def test_unknown_provider_is_a_clear_error(
    project: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMWB_EXAMPLE_PROVIDER", "bogus")
    result = _run(pytester)
    assert result.ret != 0
    # raised where the tests' conftest imports the agent's model module
    pytest.LineMatcher(result.outlines + result.errlines).fnmatch_lines(
        ["*LLMWB_EXAMPLE_PROVIDER='bogus': use 'scripted' (the default) or 'openai'*"]
    )


def test_scripting_the_other_branch_of_a_gate_names_the_gate_and_the_first_unrecorded_call(
    project: Path, pytester: pytest.Pytester
) -> None:
    (project / "tests" / "test_branch.py").write_text(
        "import pytest\n"
        "from support_agent import SupportAgent, Ticket\n\n"
        "@pytest.mark.llmwb('test_large_refund_is_approved_by_policy',\n"
        "                   gates={'approve_refund': 'rejected'})\n"
        "def test_rejected_branch(llmwb):\n"
        "    SupportAgent().handle(Ticket(id='T-2', customer='bo@example.com',\n"
        "                                 text='I want my money back for B-2002.'))\n"
    )
    bundles = project / "tests" / "llmwb_bundles"
    (bundles / "test_branch").mkdir()
    shutil.copytree(
        bundles / "test_refund" / "test_large_refund_is_approved_by_policy",
        bundles / "test_branch" / "test_large_refund_is_approved_by_policy",
    )
    result = _run(pytester, "tests/test_branch.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*PayloadDriftError: request drift at node 'draft_reply', 1st call (ordinal 0)*",
            "*/messages/1/content:*",  # 0 is the system prompt
            "*note: gate 'approve_refund' was scripted to 'rejected' but this bundle recorded "
            "'approved': the calls of that branch are not in it.*",
        ]
    )
