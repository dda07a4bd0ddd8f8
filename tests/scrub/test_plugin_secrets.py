"""End to end through pytest: no byte of a recorded bundle holds a secret."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .conftest import AWS_SECRET, FAKES, chars

KEYS = {
    "openai": FAKES["openai-key"],
    "anthropic": FAKES["anthropic-key"],
    "github": FAKES["github-token"],
    "aws_id": FAKES["aws-access-key-id"],
    "aws_secret": AWS_SECRET,
    "pem": FAKES["private-key"],
    "jwt": FAKES["jwt"],
    "acme": "acme_" + chars(24, 99),
    "password": "hunter2-" + chars(6, 98),
}

AGENT = """
import json

from pytest_llmwb import ModelRequest, ModelResponse, artifact, model, tool

KEYS = {keys!r}


@tool
def deploy(service: str, token: str, extra: dict) -> dict:
    return {{
        "service": service,
        "env": "AWS_ACCESS_KEY_ID=" + KEYS["aws_id"]
        + "\\nAWS_SECRET_ACCESS_KEY=" + KEYS["aws_secret"],
        "db": {{"password": KEYS["password"]}},
        "tls": KEYS["pem"],
    }}


@model(provider="openai")
def chat(request: ModelRequest) -> ModelResponse:
    return ModelResponse(
        model="gpt-4o",
        content="use " + KEYS["openai"] + " and session " + KEYS["jwt"],
        usage={{"input_tokens": 12, "output_tokens": 7}},
    )


def run_agent():
    out = deploy("web", token=KEYS["github"], extra={{"acme": KEYS["acme"]}})
    reply = chat({{
        "model": "gpt-4o",
        "messages": [
            {{"role": "system", "content": "anthropic key " + KEYS["anthropic"]}},
            {{"role": "user", "content": "deployed: " + json.dumps(out, sort_keys=True)}},
        ],
    }})
    artifact("summary", {{"text": reply.content, "acme": KEYS["acme"]}})
    return out, reply
"""

CONFTEST = """
from pytest_llmwb.scrub import SecretRule


def pytest_llmwb_secret_rules(config):
    return [SecretRule("acme-token", r"acme_[A-Za-z0-9]{24}", anchors=["acme_"])]
"""

TEST = """
import agent


def test_deploy(llmwb):
    out, reply = agent.run_agent()
    assert out["service"] == "web"
    assert reply.content.startswith("use ")
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    pytester.makepyfile(agent=AGENT.format(keys=KEYS))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_deploy=TEST)
    return pytester


def _every_byte(root: Path) -> bytes:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    return b"".join(p.read_bytes() for p in files)


# genai-prices (the default price table) is installed on Python >= 3.11 only
needs_genai = pytest.mark.skipif(
    importlib.util.find_spec("genai_prices") is None, reason="genai-prices is not installed"
)


@needs_genai
def test_a_recorded_bundle_holds_no_secret_and_replays(project: pytest.Pytester) -> None:
    project.runpytest("--llmwb-record").assert_outcomes(passed=1)
    root = project.path / "llmwb_bundles"
    data = _every_byte(root)
    for name, secret in KEYS.items():
        assert secret.encode() not in data, name
        assert secret[5:25].encode() not in data, name  # nor a piece of it
    facts = (root / "test_deploy" / "test_deploy" / "facts.jsonl").read_text()
    for rule in ("github-token", "acme-token", "openai-key", "anthropic-key", "private-key"):
        assert f"<secret:{rule}:" in facts, rule
    assert "<secret:credential>" in facts  # the password, by its field name
    assert '"cost":{"amount":' in facts  # priced when recorded
    # replay scrubs the live requests the same way, so they match the recorded ones
    project.runpytest().assert_outcomes(passed=1)


def test_strict_secrets_fail_the_test_naming_the_field(project: pytest.Pytester) -> None:
    result = project.runpytest("--llmwb-record", "--llmwb-strict-secrets")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*SecretFoundError: a secret matching rule 'github-token' was found in the arguments "
            "of tool 'deploy' on node 'deploy' at /token*"
        ]
    )
    assert KEYS["github"] not in result.stdout.str()
    assert not (project.path / "llmwb_bundles").exists()


def test_strict_secrets_from_the_ini_file(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nllmwb_strict_secrets = true\n")
    result = project.runpytest("--llmwb-record")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*SecretFoundError*"])


def test_without_the_hook_the_user_secret_is_not_known(project: pytest.Pytester) -> None:
    project.makeconftest("")
    project.runpytest("--llmwb-record").assert_outcomes(passed=1)
    data = _every_byte(project.path / "llmwb_bundles")
    assert KEYS["acme"].encode() in data  # what the hook's rule took out above
    assert KEYS["github"].encode() not in data
