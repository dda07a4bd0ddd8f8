"""The refunds agent in a pytester directory, with its knobs and its network switch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .refunds import KNOBS, SOURCE


@dataclass
class Refunds:
    """The ``refunds`` module of a pytester directory, and the environment it reads."""

    root: Path
    monkeypatch: pytest.MonkeyPatch

    def set(self, **knobs: str) -> None:
        """Change the agent's behaviour (``reply="..."``); the others keep their value."""
        for key, value in knobs.items():
            self.monkeypatch.setenv(f"REFUNDS_{key.upper()}", value)

    def reset(self) -> None:
        """Back to the default behaviour."""
        for key in KNOBS:
            self.monkeypatch.delenv(f"REFUNDS_{key}", raising=False)

    def offline(self) -> None:
        """Make every live call raise, as a blocked network would."""
        self.monkeypatch.setenv("REFUNDS_OFFLINE", "1")

    def online(self) -> None:
        self.monkeypatch.delenv("REFUNDS_OFFLINE", raising=False)

    def bundle(self, module: str, test: str) -> Path:
        return self.root / "llmwb_bundles" / module / test


@pytest.fixture
def refunds(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Refunds:
    pytester.makepyfile(refunds=SOURCE)
    pytester.syspathinsert()
    # hypothesis's plugin would be imported again by every inner session; not needed there
    monkeypatch.setenv(
        "PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:benchmark -p no:recording -p no:anyio"
    )
    agent = Refunds(pytester.path, monkeypatch)
    agent.reset()
    agent.online()
    return agent
