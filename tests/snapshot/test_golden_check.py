"""The golden check after a replayed test, lenient replay, and updating a golden bundle."""

from __future__ import annotations

import pytest

from pytest_llmwb.store import load_bundle

from .conftest import Refunds

TEST = """
import refunds

def test_refund(llmwb):
    refunds.handle()
"""


@pytest.fixture
def recorded(pytester: pytest.Pytester, refunds: Refunds) -> Refunds:
    pytester.makepyfile(test_flow=TEST)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    refunds.offline()
    return refunds


def test_a_host_side_change_fails_after_the_test_and_updates_offline(
    pytester: pytest.Pytester, recorded: Refunds
) -> None:
    recorded.set(signature="Ana, support")  # the host changes the artifact; no call changes
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "E   pytest_llmwb.exceptions.GoldenMismatchError: test_flow.py::test_refund: "
            "the replayed run differs from its golden bundle llmwb_bundles/test_flow/"
            "test_refund",
            "      1 change: artifact reply content changed",
            "        ~ artifact reply: content changed (signature) [[]seq 3[]]",
            '            /content/signature: "The support team" → "Ana, support"',
            "    fix: pytest --snapshot-update test_flow.py::test_refund (no call changed: "
            "the replay is written offline); or, to skip this check, "
            "@pytest.mark.llmwb(golden=False)",
        ]
    )
    pytester.runpytest("-o", "llmwb_golden=false").assert_outcomes(passed=1)

    updated = pytester.runpytest("--snapshot-update")  # offline: nothing runs live
    updated.assert_outcomes(passed=1)
    updated.stdout.fnmatch_lines(["*1 bundle(s) written:*", "*llmwb_bundles/test_flow/test_refund"])
    bundle = load_bundle(recorded.bundle("test_flow", "test_refund"))
    assert bundle.artifacts()[0].content["signature"] == "Ana, support"
    assert bundle.manifest.fact_count == 5
    pytester.runpytest().assert_outcomes(passed=1)


def test_lenient_replay_shows_every_change_of_a_run_at_once(
    pytester: pytest.Pytester, recorded: Refunds
) -> None:
    recorded.set(prompt="Answer in two short sentences.", question="Where is the money?")
    strict = pytester.runpytest()
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*DagDriftError: DAG drift*"])  # the first drift only

    result = pytester.runpytest("--llmwb-lenient")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*GoldenMismatchError: test_flow.py::test_refund: the replayed run differs *",
            "      lenient replay tolerated 1 drifted call(s); each was answered with the "
            "response recorded for the old request",
            "      2 changes: node answer prompt changed; model call answer#0 request changed",
            "        ~ node answer prompt changed",
            "        ~ model call answer#0: request changed (messages, system)*",
            '            /request/messages/0/content: "Where is my refund?" → '
            '"Where is the money?"',
            '            /request/system: "Answer in one sentence." → '
            '"Answer in two short sentences."',
            "    fix: pytest --llmwb-record test_flow.py::test_refund (changed requests need "
            "new responses, recorded live)",
        ]
    )
    before = recorded.bundle("test_flow", "test_refund").joinpath("facts.jsonl").read_bytes()
    refused = pytester.runpytest("--snapshot-update")  # stale responses are never written
    refused.assert_outcomes(passed=1, errors=1)
    refused.stdout.fnmatch_lines(["*fix: pytest --llmwb-record test_flow.py::test_refund*"])
    after = recorded.bundle("test_flow", "test_refund").joinpath("facts.jsonl").read_bytes()
    assert after == before

    recorded.online()
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    recorded.offline()
    pytester.runpytest().assert_outcomes(passed=1)


def test_lenient_replay_fails_at_once_on_a_call_that_was_never_recorded(
    pytester: pytest.Pytester, recorded: Refunds
) -> None:
    pytester.makepyfile(
        test_flow=TEST.replace(
            "def test", "import pytest\n\n@pytest.mark.llmwb(lenient=True)\ndef test"
        )
    )
    recorded.set(prompt="Be brief.", lookups="2")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*UnexpectedCallError: unexpected tool_call call at node 'lookup', 2nd call "
            "(ordinal 1)*",
            "E * note: lenient replay answers a changed call from the call recorded at its "
            "place, but nothing was recorded here, and nothing runs live in replay",
            "*Captured llmwb drift (lenient replay, up to the failure) teardown*",
            "1 drift(s) tolerated before the test failed:",
            "  DAG drift: the declared DAG 'refunds' differs from the recorded snapshot",
            "      node 'answer': config 'prompt' changed: 'Answer in one sentence.' -> "
            "'Be brief.'",
        ]
    )


def test_a_golden_bundle_edited_by_hand(pytester: pytest.Pytester, recorded: Refunds) -> None:
    facts = recorded.bundle("test_flow", "test_refund") / "facts.jsonl"
    facts.write_text(
        facts.read_text().replace('"content":"Your refund', '"content":"Our refund', 1)
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*BundleIntegrityError: facts.jsonl does not match the digest in manifest.json "
            "(edited after recording)",
            "*  in */facts.jsonl",
            "*fix: record it again: pytest --llmwb-record <test id>; or accept the edit with: "
            "llmwb rehash */test_refund",
        ]
    )
    from pytest_llmwb.cli import main

    assert main(["rehash", str(facts.parent)]) == 0
    accepted = pytester.runpytest()  # the edited response no longer matches its artifact
    accepted.assert_outcomes(passed=1, errors=1)
    accepted.stdout.fnmatch_lines(
        ['            /content/text: "Your refund is on its way." → "Our refund is on its way."']
    )
