"""Hooks that projects implement in ``conftest.py`` to adapt pytest-llmwb."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .recording import Run

hookspec = pytest.hookspec


@hookspec(firstresult=True)
def pytest_llmwb_bundle_path(item: pytest.Item, default: Path) -> Path | None:
    """Choose where the bundle of ``item`` lives.

    Return a path to override the default, or ``None`` to keep it. Called once per
    test that uses the plugin, at collection, so that two tests resolving to the same
    bundle are reported before anything runs.

    :param item: the test item.
    :param default: the path the plugin would use (``llmwb_bundles/<module>/<test>``
        next to the test file, or under ``--llmwb-bundle-dir``).
    """


@hookspec
def pytest_llmwb_run_finished(item: pytest.Item, run: Run, bundle_path: Path, written: bool) -> Any:
    """Called after a test's run ended and its bundle was (or was not) written.

    :param item: the test item.
    :param run: the finished :class:`~pytest_llmwb.Run` with all its facts.
    :param bundle_path: the test's bundle directory.
    :param written: whether the bundle was written by this test (record modes, test
        passed).
    """
