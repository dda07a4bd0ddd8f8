"""Hooks that projects implement in ``conftest.py`` to adapt pytest-llmwb."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .adapters import ProviderAdapter
    from .recording import Run
    from .scrub import SecretRule

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


@hookspec
def pytest_llmwb_adapters(config: pytest.Config) -> list[ProviderAdapter] | None:
    """Add provider adapters, so HTTP capture reads another provider's API.

    Return a list of adapters (see :class:`~pytest_llmwb.adapters.ProviderAdapter`);
    the adapters of every implementation are tried, in order, before the built-in
    ones. A request an adapter matches becomes a model_io receipt; other requests
    become tool_call facts. Called once per test that uses the plugin.

    :param config: the pytest config.
    """


@hookspec
def pytest_llmwb_secret_rules(config: pytest.Config) -> list[SecretRule] | None:
    """Add secret rules: shapes of your own credentials, scrubbed from what runs record.

    Return a list of :class:`~pytest_llmwb.scrub.SecretRule`; they are added to the
    built-in rules (a rule named like a built-in one replaces it). Called once per
    session, when the first test needs a run.

    :param config: the pytest config.
    """
