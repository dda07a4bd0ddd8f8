"""``assert run == llmwb_snapshot``: the syrupy extension whose snapshots are golden bundles."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_llmwb.store import load_bundle

from .conftest import Refunds

FIXTURE_RUN = """
import refunds

def test_refund(llmwb, llmwb_snapshot):
    refunds.handle()
    assert llmwb == llmwb_snapshot
"""


def test_a_run_as_a_snapshot(pytester: pytest.Pytester, refunds: Refunds) -> None:
    pytester.makepyfile(
        test_agent="""
import refunds
from pytest_llmwb import Run

def test_agent(llmwb_snapshot):
    with Run("refunds") as run:
        refunds.handle()
    assert run == llmwb_snapshot
    assert run == llmwb_snapshot(name="second")
"""
    )
    missing = pytester.runpytest()
    missing.assert_outcomes(failed=1)
    missing.stdout.fnmatch_lines(
        [
            "E       *assert [[]+ received] == [[]- snapshot]",
            "E         Snapshot 'test_agent' does not exist!",
            "E         no golden bundle yet; update it: pytest --snapshot-update "
            "test_agent.py::test_agent",
        ]
    )
    written = pytester.runpytest("--snapshot-update")
    written.assert_outcomes(passed=1)
    written.stdout.fnmatch_lines(["*2 snapshots generated*"])
    assert load_bundle(refunds.bundle("test_agent", "test_agent")).manifest.fact_count == 5
    assert refunds.bundle("test_agent", "test_agent[second]").joinpath("manifest.json").is_file()
    pytester.runpytest().assert_outcomes(passed=1)

    refunds.set(reply="We refunded A1 today.")
    changed = pytester.runpytest()
    changed.assert_outcomes(failed=1)
    changed.stdout.fnmatch_lines(
        [
            "E       *assert [[]+ received] == [[]- snapshot]",
            "E         2 changes: artifact reply content changed; model call answer#0 response "
            "and cost changed",
            "E         update it: pytest --snapshot-update test_agent.py::test_agent",
            "E         golden bundle: llmwb_bundles/test_agent/test_agent",
        ]
    )
    verbose = pytester.runpytest("-vv")
    verbose.stdout.fnmatch_lines(
        [
            "E           ~ model call answer#0: response changed (content, usage); cost changed "
            "(amount) [[]seq 2[]]",
            '*/response/content: "Your refund is on its way." → "We refunded A1 today."',
        ]
    )
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)

    golden = refunds.bundle("test_agent", "test_agent") / "facts.jsonl"
    golden.write_text(golden.read_text().replace("today", "tomorrow"))
    broken = pytester.runpytest()
    broken.assert_outcomes(failed=1)
    broken.stdout.fnmatch_lines(
        [
            "E         the golden bundle llmwb_bundles/test_agent/test_agent cannot be read:",
            "E         facts.jsonl does not match the digest in manifest.json (edited after "
            "recording)",
        ]
    )
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)  # rewrites a broken one
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_llmwb_fixture_run_against_its_own_bundle(
    pytester: pytest.Pytester, refunds: Refunds
) -> None:
    pytester.makepyfile(test_flow=FIXTURE_RUN)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)  # the recording is golden
    refunds.offline()
    pytester.runpytest().assert_outcomes(passed=1)

    refunds.set(prompt="Answer in two short sentences.")
    drifted = pytester.runpytest("--llmwb-lenient")
    drifted.assert_outcomes(failed=1)
    drifted.stdout.fnmatch_lines(
        [
            "E         2 changes: node answer prompt changed; model call answer#0 request changed",
            "E         update it by recording live: pytest --llmwb-record "
            "test_flow.py::test_refund (1 call(s) replayed with a changed request: their "
            "responses are stale)",
        ]
    )
    refused = pytester.runpytest("--snapshot-update")
    refused.assert_outcomes(failed=1)
    refused.stdout.fnmatch_lines(
        [
            "E         pytest_llmwb.exceptions.GoldenMismatchError: cannot update the golden "
            "bundle llmwb_bundles/test_flow/test_refund from this run: lenient replay "
            "answered 1 changed call(s) with responses recorded for the old requests; record it "
            "live: pytest --llmwb-record test_flow.py::test_refund",
        ]
    )

    refunds.reset()
    refunds.set(signature="Ana, support")  # the host alone changed: updated offline
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    bundle = load_bundle(refunds.bundle("test_flow", "test_refund"))
    assert bundle.artifacts()[0].content["signature"] == "Ana, support"
    pytester.runpytest().assert_outcomes(passed=1)


def test_only_runs_can_be_compared(pytester: pytest.Pytester, refunds: Refunds) -> None:
    pytester.makepyfile(
        test_value="""
def test_value(llmwb_snapshot):
    assert {"a": 1} == llmwb_snapshot
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ConfigError: llmwb_snapshot compares runs, not dict*"])


def test_the_plugin_loads_no_heavy_module() -> None:
    code = (
        "import sys, pytest_llmwb.plugin, pytest_llmwb.golden\n"
        "heavy = ('syrupy', 'deepdiff', 'pydantic', 'orjson', 'vcr')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"
