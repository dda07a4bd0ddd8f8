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
