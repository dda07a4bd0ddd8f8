"""Sealing on record through the pytest plugin, and replay of a redacted bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_llmwb import redact_bundle, verify_bundle
from pytest_llmwb.evidence.keys import TrustStore, generate_key

if TYPE_CHECKING:
    from conftest import Agent

TEST_FLOW = """
import agent

def test_refund(llmwb):
    reply = agent.run_agent("refund?")
    assert reply.content.startswith("done: refund?")
"""
BUNDLE = Path("llmwb_bundles") / "test_flow" / "test_refund"


@pytest.mark.parametrize("how", ["option", "env", "ini"])
def test_record_seals_with_the_configured_key_and_never_writes_it(
    pytester: pytest.Pytester, agent: Agent, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    key = generate_key(pytester.path / "keys" / "ci")
    pytester.makepyfile(test_flow=TEST_FLOW)
    monkeypatch.delenv("LLMWB_SEAL_KEY", raising=False)
    args = ["--llmwb-record"]
    if how == "option":
        args.append(f"--llmwb-seal-key={key.source}")
    elif how == "env":
        monkeypatch.setenv("LLMWB_SEAL_KEY", key.source)
    else:
        pytester.makeini("[pytest]\nllmwb_seal_key = keys/ci\n")
    pytester.runpytest(*args).assert_outcomes(passed=1)
    bundle = pytester.path / BUNDLE
    verdict = verify_bundle(bundle, TrustStore.load([key.source + ".pub"]))
    assert verdict.fact_count == 2
    private = Path(key.source).read_bytes()
    assert not any(private in p.read_bytes() for p in bundle.rglob("*") if p.is_file())
    # the sealed bundle replays
    agent.offline()
    pytester.runpytest().assert_outcomes(passed=1)


def test_record_without_a_key_does_not_seal(pytester: pytest.Pytester, agent: Agent) -> None:
    pytester.makepyfile(test_flow=TEST_FLOW)
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    assert not (pytester.path / BUNDLE / "seal").exists()


def test_a_bad_seal_key_stops_the_recording_before_anything_runs(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    pytester.makepyfile(test_flow=TEST_FLOW)
    result = pytester.runpytest("--llmwb-record", "--llmwb-seal-key=missing.pem")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the seal key: cannot read the private key missing.pem*"])
    assert agent.live_calls() == []  # nothing ran live
    assert not (pytester.path / BUNDLE).exists()
    # a replay needs no key: the same setting does not stop it
    pytester.runpytest("--llmwb-seal-key=missing.pem").assert_outcomes(errors=1)


def test_replaying_a_redacted_bundle_fails_with_a_named_error(
    pytester: pytest.Pytester, agent: Agent
) -> None:
    key = generate_key(pytester.path / "keys" / "ci")
    pytester.makepyfile(test_flow=TEST_FLOW)
    pytester.runpytest("--llmwb-record", f"--llmwb-seal-key={key.source}").assert_outcomes(passed=1)
    redact_bundle(pytester.path / BUNDLE, ["2/response"])
    agent.offline()
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*BundleRedactedError: bundle *test_refund is redacted*"])
    assert "network is off" not in result.stdout.str()
