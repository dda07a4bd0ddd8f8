"""Recording and replaying under pytest-xdist: per-test bundles, identical to a serial run."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Agent

SIX_TESTS = """
import agent
import pytest

@pytest.mark.parametrize("order", ["A1", "B2", "C3", "D/4"])
def test_orders(llmwb, order):
    agent.run_agent("where is", orders=(order,))

def test_two_orders(llmwb):
    agent.run_agent("both", orders=("A1", "B2"))

@pytest.mark.llmwb(bundle="named")
def test_marked():
    agent.lookup("Z9")
"""

STABLE = ("manifest.json", "dag.json", "facts.jsonl")


def _stable(path: Path) -> bytes:
    """The bytes of a bundle file; a manifest without the digest of volatile.json."""
    data = path.read_bytes()
    if path.name == "manifest.json":
        data = re.sub(rb'\n *"volatile.json": "sha256:[0-9a-f]{64}",?', b"", data)
    return data


def _stable_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): _stable(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name in STABLE
    }


def test_record_and_replay_with_two_workers(
    pytester: pytest.Pytester, agent: Agent, snapshot_tree: Callable[[Path], dict[str, bytes]]
) -> None:
    pytester.makepyfile(test_flow=SIX_TESTS)
    parallel = pytester.runpytest("-p", "xdist", "-n", "2", "--llmwb-record")
    parallel.assert_outcomes(passed=6)
    parallel.stdout.fnmatch_lines(["*2 workers*"])
    assert len(agent.live_calls()) == 12  # 4 x 2 + 3 + 1: each test ran live once

    serial = pytester.runpytest("-p", "no:xdist", "--llmwb-record", "--llmwb-bundle-dir=serial")
    serial.assert_outcomes(passed=6)
    recorded = _stable_files(pytester.path / "llmwb_bundles")
    assert len(recorded) == 6 * len(STABLE)
    assert recorded == _stable_files(pytester.path / "serial")

    before = snapshot_tree(pytester.path / "llmwb_bundles")
    agent.reset()
    agent.offline()
    replay = pytester.runpytest("-p", "xdist", "-n", "2")
    replay.assert_outcomes(passed=6)
    assert agent.live_calls() == []
    assert snapshot_tree(pytester.path / "llmwb_bundles") == before
