"""Strict secret scrubbing fails the test without showing the secret anywhere in the output.

pytest prints frames' arguments and locals (``-l``, ``--tb=long``): a frame holding the
request headers (the ``Authorization: Bearer`` token) or the body would print them into
the CI log. Recorded through the real openai SDK against the loopback server, and in
replay through the slow path that scrubs each request as it goes out.
"""

from __future__ import annotations

import pytest

from .conftest import BEARER_TOKEN, FAKES

TEST = """
import os

import openai
import pytest
import requests

from pytest_llmwb.testing import ScriptedLLMServer

pytestmark = pytest.mark.llmwb


@pytest.fixture
def base_url():
    if os.environ.get("SERVE") == "1":
        with ScriptedLLMServer() as server:
            yield server.base_url
    else:
        yield "http://127.0.0.1:9"


def test_chat(base_url):
    with openai.OpenAI(
        base_url=base_url + "/v1", api_key=os.environ["TOKEN"], max_retries=0
    ) as client:
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "deploy with " + os.environ["SECRET"]}],
        )


def test_tool(base_url):
    requests.post(
        base_url + "/tools/deploy",
        json={"note": os.environ["SECRET"]},
        headers={"Authorization": "Bearer " + os.environ["TOKEN"]},
        timeout=5,
    )
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:randomly")
    monkeypatch.setenv("TOKEN", BEARER_TOKEN)
    monkeypatch.setenv("SECRET", FAKES["github-token"])
    pytester.makepyfile(test_agent=TEST)
    return pytester


def _assert_no_secret(output: str) -> None:
    for secret in (BEARER_TOKEN, FAKES["github-token"][:-1]):
        assert secret not in output
        assert secret[:16] not in output


@pytest.mark.parametrize("tb", ["long", "short", "auto", "native"])
def test_strict_record_shows_no_secret(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tb: str
) -> None:
    monkeypatch.setenv("SERVE", "1")
    result = project.runpytest(
        "--llmwb-record", "--llmwb-strict-secrets", "-l", f"--tb={tb}", "-p", "no:cacheprovider"
    )
    output = result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=2, errors=2)
    assert "SecretFoundError" in output
    _assert_no_secret(output)


def test_strict_replay_shows_no_secret(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVE", "1")
    project.runpytest("--llmwb-record").assert_outcomes(passed=2)
    monkeypatch.setenv("SERVE", "0")
    # a changed secret: the request cannot be served byte for byte, so it is scrubbed
    changed = FAKES["github-token"][:-1] + ("x" if FAKES["github-token"][-1] != "x" else "y")
    monkeypatch.setenv("SECRET", changed)
    result = project.runpytest("--llmwb-strict-secrets", "-l", "--tb=long")
    output = result.stdout.str() + result.stderr.str()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["FAILED *test_chat - *SecretFoundError*"])
    _assert_no_secret(output)
