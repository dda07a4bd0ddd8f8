"""``--llmwb-view-dir``: a viewer page for each failed llmwb test, named in the summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from snapshot.conftest import Refunds

TEST = """
import refunds

def test_refund(llmwb):
    refunds.handle()

def test_fails_after_its_run(llmwb):
    refunds.handle()
    assert False, "the reply was not polite enough"
"""


def embedded(page: Path) -> dict:
    text = page.read_text()
    match = re.search(r'id="llmwb-data">(.*?)</script>', text, re.S)
    assert match is not None
    return json.loads(match.group(1))


@pytest.fixture
def recorded(pytester: pytest.Pytester, refunds: Refunds) -> Refunds:
    pytester.makepyfile(test_flow=TEST)
    result = pytester.runpytest("--llmwb-record", "test_flow.py::test_refund")
    result.assert_outcomes(passed=1)
    refunds.offline()
    return refunds


def test_a_drifting_replay_gets_the_diff_against_its_bundle(
    pytester: pytest.Pytester, recorded: Refunds
) -> None:
    recorded.set(signature="Ana, support")  # a host-side change: the golden check fails
    result = pytester.runpytest("--llmwb-view-dir", "pages", "test_flow.py::test_refund")
    result.assert_outcomes(passed=1, errors=1)
    (page,) = (pytester.path / "pages").glob("test_flow.py__test_refund*.html")
    result.stdout.fnmatch_lines(
        [
            "*- Captured llmwb view teardown -*",
            f"viewer page: {page}",
            "*1 viewer page(s) of failed tests:",
            f"  pages/{page.name}",
        ]
    )
    data = embedded(page)
    assert data["diff"]["summary"] == "1 change: artifact reply content changed"
    assert data["diff"]["old"]["source"] == str(recorded.bundle("test_flow", "test_refund"))
    assert [a["marker"] for a in data["artifacts"]] == ["changed"]


def test_a_test_failing_in_record_mode_gets_the_run_it_left(
    pytester: pytest.Pytester, refunds: Refunds
) -> None:
    pytester.makepyfile(test_flow=TEST)
    pytester.makeini("[pytest]\nllmwb_view_dir = out/views\n")
    result = pytester.runpytest("--llmwb-record", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    pages = sorted((pytester.path / "out" / "views").iterdir())
    assert [p.name[:36] for p in pages] == ["test_flow.py__test_fails_after_its_r"]
    data = embedded(pages[0])
    assert "diff" not in data
    assert data["source"] == "recorded live by the failed test (not written as its bundle)"
    assert [g["gate_id"] for g in data["gates"]] == ["approve"]
    assert data["costs"]["total"]["calls"] == 1
    result.stdout.fnmatch_lines(["*1 viewer page(s) of failed tests:", "  out/views/*.html"])


def test_no_page_without_the_option_or_for_passing_tests(
    pytester: pytest.Pytester, recorded: Refunds
) -> None:
    result = pytester.runpytest("--llmwb-view-dir", "pages", "test_flow.py::test_refund")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "pages").exists()
    assert "viewer page" not in result.stdout.str()
    recorded.set(signature="Ana, support")
    result = pytester.runpytest("test_flow.py::test_refund")
    result.assert_outcomes(passed=1, errors=1)
    assert "viewer page" not in result.stdout.str()


def test_an_unwritable_view_dir_does_not_hide_the_failure(
    pytester: pytest.Pytester, recorded: Refunds
) -> None:
    recorded.set(signature="Ana, support")
    (pytester.path / "pages").write_text("a file, not a directory")
    result = pytester.runpytest("--llmwb-view-dir", "pages", "test_flow.py::test_refund")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*GoldenMismatchError*",
            "no viewer page: cannot make the viewer page directory *pages: File exists",
            "fix: point --llmwb-view-dir (or the llmwb_view_dir ini key) at a writable directory",
        ]
    )


def test_pages_written_by_xdist_workers_are_listed_once(
    pytester: pytest.Pytester, refunds: Refunds
) -> None:
    pytester.makepyfile(
        test_two="import refunds\n\n"
        "def test_one(llmwb):\n    refunds.handle()\n\n"
        "def test_two(llmwb):\n    refunds.handle()\n"
    )
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=2)
    refunds.offline()
    refunds.set(signature="Ana, support")
    result = pytester.runpytest("-p", "xdist", "-n", "2", "--llmwb-view-dir", "pages")
    result.assert_outcomes(passed=2, errors=2)
    pages = sorted(p.name for p in (pytester.path / "pages").iterdir())
    assert len(pages) == 2
    result.stdout.fnmatch_lines(
        ["*2 viewer page(s) of failed tests:", f"  pages/{pages[0]}", f"  pages/{pages[1]}"]
    )


def test_a_request_drift_page_shows_the_drift_and_what_the_run_never_reached(
    pytester: pytest.Pytester, refunds: Refunds
) -> None:
    pytester.makepyfile(test_flow=TEST)
    refunds.set(question="Classify: where is my refund?")
    pytester.runpytest("--llmwb-record", "test_flow.py::test_refund").assert_outcomes(passed=1)
    refunds.offline()
    refunds.set(question="Categorize: where is my refund?")
    result = pytester.runpytest("--llmwb-view-dir", "pages", "test_flow.py::test_refund")
    result.assert_outcomes(failed=1)
    (page,) = (pytester.path / "pages").glob("*.html")
    diff = embedded(page)["diff"]
    (drift,) = diff["drift"]
    assert drift["kind"] == "PayloadDriftError"
    assert drift["headline"].startswith("request drift at node 'answer', 1st call")
    assert (drift["node"], drift["ordinal"], drift["call"]) == ("answer", 0, "1st call")
    assert drift["changes"] == [
        {
            "path": "/messages/0/content",
            "old": "Classify: where is my refund?",
            "new": "Categorize: where is my refund?",
        }
    ]
    assert drift["fix"] == "pytest --llmwb-record test_flow.py::test_refund"
    # the lookup ran; the model call drifted; the run never got to anything after it
    removed = {f["label"]: f["marker"] for f in diff["removed_facts"]}
    assert removed.pop("model call answer#0") == "drifted"
    assert removed and set(removed.values()) == {"unreached"}
    assert diff["stats"]["removed"] == 0
    assert diff["stats"]["unreached"] == len(removed)
    assert diff["summary"] == (
        "the run stopped at the drift, 1 drifted call(s), 3 recorded fact(s) not reached"
    )
    said = [c["summary"] for c in diff["fact_changes"] if c["change"] == "fact_removed"]
    assert all("removed" not in line for line in said), said
    assert said[:2] == [
        "model call answer#0 drifted: m-1, 15 tokens",
        "artifact reply rev 1 not reached",
    ]


def test_a_dag_drift_page_shows_the_drift_and_no_fact_as_removed(
    pytester: pytest.Pytester, recorded: Refunds
) -> None:
    recorded.set(prompt="Answer in two sentences.")
    result = pytester.runpytest("--llmwb-view-dir", "pages", "test_flow.py::test_refund")
    result.assert_outcomes(failed=1)
    (page,) = (pytester.path / "pages").glob("*.html")
    diff = embedded(page)["diff"]
    (drift,) = diff["drift"]
    assert drift["kind"] == "DagDriftError"
    assert any(
        "Answer in one sentence." in line and "Answer in two sentences." in line
        for line in drift["details"]
    ), drift["details"]
    assert drift["fix"].startswith("pytest --llmwb-record")
    assert diff["removed_facts"]
    assert {f["marker"] for f in diff["removed_facts"]} == {"unreached"}
    assert diff["stats"]["removed"] == 0
    assert diff["summary"] == (
        "the run stopped at the drift, 5 recorded fact(s) not reached; "
        "1 other change: node answer prompt changed"
    )
