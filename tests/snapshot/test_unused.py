"""Unused golden bundles: found in one pass, reported, failed on, deleted only when safe."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from .conftest import Refunds

TWO_TESTS = """
import refunds

def test_one(llmwb):
    refunds.handle()

def test_two(llmwb):
    refunds.handle("B2")
"""


def _copy(bundle: Path, *targets: Path) -> None:
    for target in targets:
        shutil.copytree(bundle, target, copy_function=os.link)


@pytest.fixture
def stale(pytester: pytest.Pytester, refunds: Refunds) -> dict[str, Path]:
    """Two recorded tests, and bundles no test owns: one left by a removed test, one by a
    removed test file; plus bundles that are owned or not bundles at all."""
    pytester.makepyfile(test_a=TWO_TESTS)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=2)
    refunds.offline()
    one = refunds.bundle("test_a", "test_one")
    paths = {
        "gone": refunds.bundle("test_a", "test_gone"),
        "orphan": refunds.bundle("test_removed", "test_x"),
        "second": refunds.bundle("test_a", "test_one.1"),  # llmwb_snapshot's second assertion
        "named": refunds.bundle("test_a", "test_two[happy]"),  # llmwb_snapshot(name="happy")
        "staging": refunds.bundle("test_a", ".test_one.llmwb-tmp-1234"),
    }
    _copy(one, *paths.values())
    refunds.bundle("test_a", "notes").mkdir()  # not a bundle: no manifest.json
    return paths


def test_unused_bundles_are_reported(pytester: pytest.Pytester, stale: dict[str, Path]) -> None:
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*- llmwb golden bundles -*",
            "2 unused golden bundle(s) (no collected test owns them):",
            "  llmwb_bundles/test_a/test_gone",
            "  llmwb_bundles/test_removed/test_x",
            "delete them with: pytest --llmwb-unused=delete (or --snapshot-update), "
            "running the whole suite",
        ]
    )
    failed = pytester.runpytest("--llmwb-unused=fail")
    failed.assert_outcomes(passed=2)
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    quiet = pytester.runpytest("-o", "llmwb_unused=ignore")
    assert "llmwb golden bundles" not in quiet.stdout.str()


def test_deleting_needs_the_whole_suite(pytester: pytest.Pytester, stale: dict[str, Path]) -> None:
    partial = pytester.runpytest("-k", "one", "--llmwb-unused=delete")
    partial.assert_outcomes(passed=1, deselected=1)
    partial.stdout.fnmatch_lines(
        [
            "2 unused golden bundle(s) (no collected test owns them):",  # test_two's is owned
            "not deleted: -k selects part of the suite; deleting needs the whole suite",
        ]
    )
    one_test = pytester.runpytest("test_a.py::test_one", "--llmwb-unused=delete")
    one_test.stdout.fnmatch_lines(
        [
            "1 unused golden bundle(s) (no collected test owns them):",  # test_a not judged
            "  llmwb_bundles/test_removed/test_x",
            "not deleted: the command line selects test_a.py::test_one; *",
        ]
    )
    assert all(path.exists() for path in stale.values())

    deleted = pytester.runpytest("--llmwb-unused=delete")
    deleted.assert_outcomes(passed=2)
    deleted.stdout.fnmatch_lines(["2 unused golden bundle(s) (deleted):"])
    assert not stale["gone"].exists()
    assert not stale["orphan"].parent.exists()  # the removed file's directory, now empty
    assert stale["second"].exists() and stale["named"].exists() and stale["staging"].exists()
    assert pytester.runpytest().ret == 0


def test_3000_golden_bundles(pytester: pytest.Pytester, refunds: Refunds) -> None:
    pytester.makepyfile(
        test_many="""
import pytest
import refunds

@pytest.mark.parametrize("n", range(3000))
def test_many(llmwb, n):
    refunds.handle()
"""
    )
    pytester.runpytest("--llmwb-record", "test_many.py::test_many[0]").assert_outcomes(passed=1)
    bundles = refunds.root / "llmwb_bundles" / "test_many"
    first = bundles / "test_many[0]"
    _copy(first, *(bundles / f"test_many[{n}]" for n in range(1, 3000)))
    _copy(first, *(bundles / f"test_many[{n}]" for n in range(3000, 3030)))  # removed params
    started = time.perf_counter()
    result = pytester.runpytest("-k", "nothing_matches_this")  # collected, then deselected
    elapsed = time.perf_counter() - started
    result.stdout.fnmatch_lines(
        [
            "30 unused golden bundle(s) (no collected test owns them):",
            "  llmwb_bundles/test_many/test_many[[]3000[]]",
            "  ... and 10 more (-v lists all)",
        ]
    )
    lines = result.stdout.lines
    listed = [line for line in lines if line.startswith("  llmwb_bundles/test_many/")]
    assert (
        listed
        == sorted(f"  llmwb_bundles/test_many/test_many[{n}]" for n in range(3000, 3030))[:20]
    )
    print(f"3,030 bundles, 3,000 tests: collection and unused detection in {elapsed:.2f} s")


XDIST_TESTS = """
import refunds
from pytest_llmwb import Run

def test_one(llmwb):
    refunds.handle()

def test_two(llmwb):
    refunds.handle("B2")

def test_three(llmwb_snapshot):
    with Run("refunds") as run:
        refunds.handle("C3")
    assert run == llmwb_snapshot

def test_four(llmwb, llmwb_snapshot):
    refunds.handle("D4")
    assert llmwb == llmwb_snapshot
"""


def test_two_workers_never_delete_what_a_test_owns(
    pytester: pytest.Pytester, refunds: Refunds
) -> None:
    pytester.makepyfile(test_x=XDIST_TESTS)
    first = pytester.runpytest("--llmwb-record", "--snapshot-update")
    first.assert_outcomes(passed=4)
    owned = sorted(p.name for p in (refunds.root / "llmwb_bundles" / "test_x").iterdir())
    assert owned == ["test_four", "test_one", "test_three", "test_two"]
    one = refunds.bundle("test_x", "test_one")
    _copy(one, refunds.bundle("test_x", "test_gone"), refunds.bundle("test_old", "test_y"))
    before = {p: p.read_bytes() for p in (refunds.root / "llmwb_bundles").rglob("*.json*")}
    refunds.offline()

    partial = pytester.runpytest("-p", "xdist", "-n", "2", "-k", "one", "--snapshot-update")
    partial.assert_outcomes(passed=1)  # xdist does not count what the workers deselect
    partial.stdout.fnmatch_lines(["not deleted: -k selects part of the suite; *"])

    refunds.set(signature="Ana, support")  # the host changed: the update rewrites, offline
    refunds.online()  # test_three records its own run live
    updated = pytester.runpytest("-p", "xdist", "-n", "2", "--snapshot-update")
    updated.assert_outcomes(passed=4)
    assert updated.stdout.str().count("llmwb golden bundles") == 1  # the controller only
    updated.stdout.fnmatch_lines(
        [
            "2 unused golden bundle(s) (deleted):",
            "  llmwb_bundles/test_old/test_y",
            "  llmwb_bundles/test_x/test_gone",
        ]
    )
    left = sorted(p.name for p in (refunds.root / "llmwb_bundles" / "test_x").iterdir())
    assert left == owned
    assert not refunds.bundle("test_old", "test_y").parent.exists()
    after = {p: p.read_bytes() for p in (refunds.root / "llmwb_bundles").rglob("facts.jsonl")}
    assert all(b"Ana, support" in data for data in after.values())
    assert all(before[p] != data for p, data in after.items())
    refunds.offline()
    pytester.runpytest("-k", "not three").assert_outcomes(passed=3, deselected=1)
