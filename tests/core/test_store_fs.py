"""Bundles and the filesystem: killed writes, stale staging directories, fsync, symlinks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_llmwb import ModelResponse, Run, load_bundle
from pytest_llmwb import store as store_module
from pytest_llmwb.store import clean_stale_staging

if TYPE_CHECKING:
    from conftest import Agent

RECORDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_llmwb import ModelResponse, Run

    target = Path(sys.argv[1])
    big = "x" * (4 * 1024 * 1024)  # a large blob: each write spends a while in staging
    i = 0
    while True:
        with Run("killed") as run:
            run.model_io(
                {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                lambda request: ModelResponse(content=big + str(i)),
                node="answer",
            )
        run.save(target)
        i += 1
    """
)


def _record(path: Path, reply: str = "ok") -> None:
    with Run("killed") as run:
        run.model_io(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            lambda request: ModelResponse(content=reply),
            node="answer",
        )
    run.save(path)


def _staging(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".llmwb-tmp-" in p.name)


def test_a_killed_record_leaves_the_old_bundle_and_the_next_record_cleans_up(
    tmp_path: Path,
) -> None:
    target = tmp_path / "bundles" / "killed"
    _record(target, "the old bundle")
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    deadline = time.monotonic() + 60
    left: list[str] = []
    while not left and time.monotonic() < deadline:
        child = subprocess.Popen([sys.executable, str(script), str(target)])
        try:
            while child.poll() is None and not _staging(target.parent):
                time.sleep(0.002)
            os.kill(child.pid, signal.SIGKILL)  # kill -9, in the middle of a write
        finally:
            child.wait(10)
        left = _staging(target.parent)
    assert left, "no write was caught in the middle in 60 s"
    load_bundle(target)  # never half-written: the old bundle or a complete new one
    _record(target, "recorded again")
    assert _staging(target.parent) == []
    assert load_bundle(target).model_io()[0].response.content == "recorded again"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process other than this one: the pid of a writer still at work."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait(10)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    return child.pid


def test_only_stale_staging_directories_of_the_same_bundle_are_removed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    host = store_module._HOST
    target = tmp_path / "test_a"
    names = {
        "dead": f".test_a.llmwb-tmp-{host}-{_dead_pid()}-0000abcd",
        "live": f".test_a.llmwb-tmp-{host}-{sleeper.pid}-0000abcd",
        "mine": f".test_a.llmwb-tmp-{host}-{os.getpid()}-0000abcd",
        "other host, recent": f".test_a.llmwb-tmp-ffffffff-{_dead_pid()}-0000abcd",
        "old version, recent": ".test_a.llmwb-tmp-0000abcd",
        "old version, a day old": ".test_a.llmwb-tmp-1111abcd",
        "sibling bundle": f".test_ab.llmwb-tmp-{host}-{_dead_pid()}-0000abcd",
        "not ours": ".test_a.llmwb-tmp-notours",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    day_ago = time.time() - store_module.STALE_STAGING_SECONDS - 60
    os.utime(tmp_path / names["old version, a day old"], (day_ago, day_ago))
    removed = clean_stale_staging(target)
    assert sorted(p.name for p in removed) == sorted(
        [names["dead"], names["old version, a day old"]]
    )
    kept = {k for k, name in names.items() if (tmp_path / name).exists()}
    assert kept == set(names) - {"dead", "old version, a day old"}


def test_the_parent_directory_is_fsynced_after_the_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("no /proc to name file descriptors")
    monkeypatch.setattr(os, "fsync", fsync)
    _record(tmp_path / "b", "first")  # a new bundle: renamed into place
    assert synced[-1] == str(tmp_path)
    synced.clear()
    _record(tmp_path / "b", "second")  # an existing one: swapped
    assert any(p.endswith("/manifest.json") for p in synced[:-1])  # the files first
    assert synced[-1] == str(tmp_path)  # then the directory that holds the swap


# --- a bundle directory that is a symlink -----------------------------------------------------


def test_a_symlinked_bundle_is_written_through_to_its_target(tmp_path: Path) -> None:
    real = tmp_path / "store" / "b"
    _record(real, "first")
    link = tmp_path / "bundles" / "b"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    _record(link, "second")
    assert link.is_symlink()
    assert os.readlink(link) == str(real)
    assert load_bundle(real).model_io()[0].response.content == "second"
    assert load_bundle(link).model_io()[0].response.content == "second"
    assert sorted(p.name for p in link.parent.iterdir()) == ["b"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["b"]


def test_a_symlinked_bundle_directory_records_under_pytest(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.makepyfile(
        test_flow="""
import agent

def test_refund(llmwb):
    assert agent.run_agent("refund?").content.startswith("done: refund?")
"""
    )
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    bundle = pytester.path / "llmwb_bundles" / "test_flow" / "test_refund"
    real = pytester.path / "shared" / "test_refund"
    real.parent.mkdir()
    bundle.rename(real)
    bundle.symlink_to(real, target_is_directory=True)
    agent.reset()
    result = pytester.runpytest("--llmwb-record")
    result.assert_outcomes(passed=1)
    assert bundle.is_symlink()
    load_bundle(real)
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["test_refund"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["test_refund"]
    agent.reset()
    agent.offline()
    pytester.runpytest().assert_outcomes(passed=1)
