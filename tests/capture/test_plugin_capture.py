"""End to end: ``@pytest.mark.llmwb`` on an SDK test, ``--llmwb-record`` once, then offline."""

from __future__ import annotations

from pathlib import Path

import pytest

AGENT_TESTS = """
import os

import openai
import pytest
import requests

from pytest_llmwb.testing import Reply, ScriptedLLMServer, ToolCallReply

SCRIPT = [
    Reply(tool_calls=[ToolCallReply("lookup_order", {"order_id": "A-1"})]),
    Reply(text="Order A-1 shipped on Monday.", chunk_size=6),
]


@pytest.fixture
def base_url():
    # the provider runs only while recording; replay needs no server at all
    if os.environ.get("SERVE") == "1":
        with ScriptedLLMServer(list(SCRIPT)) as server:
            yield server.base_url
    else:
        yield "http://127.0.0.1:9"


def ask(base_url):
    with openai.OpenAI(
        base_url=base_url + "/v1", api_key=os.environ["OPENAI_API_KEY"], max_retries=0
    ) as client:
        first = client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "Where is A-1?"}]
        )
        call = first.choices[0].message.tool_calls[0]
        stream = client.chat.completions.create(
            model="test-model",
            messages=[
                {"role": "user", "content": "Where is A-1?"},
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "shipped Monday"},
            ],
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in stream)


@pytest.mark.llmwb
def test_agent_answers(base_url):
    assert ask(base_url) == "Order A-1 shipped on Monday."


@pytest.mark.llmwb
def test_agent_in_steps(base_url, llmwb):
    with llmwb.step("answer"):
        assert ask(base_url).startswith("Order A-1")
    assert [f.node for f in llmwb.model_calls] == ["answer", "answer"]
    assert llmwb.model_calls[0].response.tool_calls[0].name == "lookup_order"


@pytest.mark.llmwb(allow_unused=True)
def test_swallowed_network_error(base_url):
    if os.environ.get("SERVE") != "1":
        try:
            requests.get("http://192.0.2.1/", timeout=1)
        except Exception:
            pass  # an over-eager retry loop hides the error
"""

KEY = "sk-proj-realLookingKey0123456789abcdefghij"


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(test_agent=AGENT_TESTS)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:cacheprovider")
    return pytester


def _bundle_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("workers", [None, "2"])
def test_record_once_then_replay_offline(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: str | None
) -> None:
    xdist = ["-p", "xdist", "-n", workers] if workers else ["-p", "no:xdist"]
    monkeypatch.setenv("SERVE", "1")
    recorded = project.runpytest(*xdist, "--llmwb-record", "-W", "error")
    recorded.assert_outcomes(passed=3)
    bundles = project.path / "llmwb_bundles" / "test_agent"
    assert sorted(p.name for p in bundles.iterdir()) == [
        "test_agent_answers",
        "test_agent_in_steps",
        "test_swallowed_network_error",
    ]
    everything = _bundle_bytes(bundles)
    assert KEY.encode() not in everything
    assert b"<secret:" not in everything  # the key went in a header, which is dropped

    monkeypatch.delenv("SERVE")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")  # replay needs no real key
    replayed = project.runpytest(*xdist, "-W", "error")
    replayed.assert_outcomes(passed=3, errors=1)  # the call passed, its teardown failed
    replayed.stdout.fnmatch_lines(
        [
            "*LiveCallBlockedError: *test_swallowed_network_error passed, but in replay it "
            "tried to reach the network*GET http://192.0.2.1/*",
        ]
    )
    assert _bundle_bytes(bundles) == everything


def test_a_changed_prompt_fails_replay_with_the_record_command(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVE", "1")
    project.runpytest("-p", "no:xdist", "--llmwb-record", "-k", "answers").assert_outcomes(passed=1)
    monkeypatch.delenv("SERVE")
    source = project.path / "test_agent.py"
    source.write_text(source.read_text().replace('"Where is A-1?"}]', '"Where is B-2?"}]'))
    result = project.runpytest("-p", "no:xdist", "-k", "answers")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*PayloadDriftError: request drift at node 'openai.chat', 1st call (ordinal 0)*",
            "*/messages/0/content: 'Where is A-1?' -> 'Where is B-2?'*",
            "*fix: pytest --llmwb-record test_agent.py::test_agent_answers*",
        ]
    )


def test_allow_hosts_option_and_marker_are_accepted(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_hosts="""
        import pytest

        @pytest.mark.llmwb(allow_hosts=["db.internal.test"], volatile=["/extra/user"])
        def test_hosts(llmwb):
            pass
        """
    )
    result = project.runpytest(
        "-p", "no:xdist", "test_hosts.py", "--llmwb-record", "--llmwb-allow-hosts=a.test,b.test"
    )
    result.assert_outcomes(passed=1)
    bad = project.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.llmwb(allow_hosts=3)
        def test_bad(llmwb):
            pass
        """
    )
    result = project.runpytest("-p", "no:xdist", str(bad), "--llmwb-record")
    result.stdout.fnmatch_lines(["*ConfigError*has allow_hosts=3; it takes a list of strings*"])
    bad.write_text(bad.read_text().replace("allow_hosts=3", 'expect_drift="yes"'))
    result = project.runpytest("-p", "no:xdist", str(bad), "--llmwb-record")
    result.stdout.fnmatch_lines(
        [
            "*ConfigError*has expect_drift='yes'; it takes True or False*",
            "*fix: see `pytest --markers`*",
        ]
    )


def test_a_hook_that_returns_no_adapter_list_is_a_config_error(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        def pytest_llmwb_adapters(config):
            return "not adapters"
        """
    )
    project.makepyfile(
        test_hook="""
        def test_hook(llmwb):
            pass
        """
    )
    result = project.runpytest("-p", "no:xdist", "test_hook.py", "--llmwb-record")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ConfigError: pytest_llmwb_adapters returned 'not adapters': it must return a list*"]
    )


def test_strict_secrets_fail_a_captured_test_naming_the_call_and_write_nothing(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(
        test_leak="""
        import os

        import openai
        import pytest

        from pytest_llmwb.testing import ScriptedLLMServer

        TOKEN = "ghp_" + "A1b2C3d4" * 5

        @pytest.mark.llmwb
        def test_leak():
            with ScriptedLLMServer([f"use {TOKEN}"]) as server, openai.OpenAI(
                base_url=server.base_url + "/v1", api_key=os.environ["OPENAI_API_KEY"]
            ) as client:
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "token?"}]
                )
            assert reply.choices[0].message.content == f"use {TOKEN}"  # live: untouched
        """
    )
    result = project.runpytest("-p", "no:xdist", "test_leak.py", "--llmwb-record")
    result.assert_outcomes(passed=1)  # not strict: recorded as a placeholder
    bundle = project.path / "llmwb_bundles" / "test_leak" / "test_leak"
    assert b"<secret:github-token:" in _bundle_bytes(bundle)
    stored = _bundle_bytes(bundle)

    result = project.runpytest(
        "-p", "no:xdist", "test_leak.py", "--llmwb-record", "--llmwb-strict-secrets"
    )
    result.assert_outcomes(passed=1, errors=1)  # the test ran; recording it failed
    result.stdout.fnmatch_lines(["*1 passed, 1 error*"])
    result.stdout.fnmatch_lines(
        [
            "*SecretFoundError: a secret matching rule 'github-token' was found in the "
            "response body of POST http://127.0.0.1:*/v1/chat/completions at /choices/0/*",
        ]
    )
    assert "A1b2C3d4A1b2" not in result.stdout.str()
    assert _bundle_bytes(bundle) == stored  # the bundle on disk is untouched


SWALLOWING = """
import os

import openai
import pytest
import requests

from pytest_llmwb.testing import ScriptedLLMServer

PROMPT = "Where is A-1?"


@pytest.fixture
def base_url():
    if os.environ.get("SERVE") == "1":
        with ScriptedLLMServer(["It shipped."]) as server:
            yield server.base_url
    else:
        yield "http://127.0.0.1:9"


@pytest.mark.llmwb(allow_unused=ALLOW_UNUSED)
def test_fallback(base_url):
    try:  # an agent that falls back on any error hides the drift from its test
        with openai.OpenAI(base_url=base_url + "/v1", api_key="sk-x", max_retries=0) as client:
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": PROMPT}]
            )
    except Exception as exc:
        print("swallowed", type(exc).__name__)
    if os.environ.get("PROBE") == "1":
        try:
            requests.get("https://example.com/", timeout=1)
        except Exception:
            pass
"""


@pytest.mark.parametrize("allow_unused", [False, True])
def test_drift_the_test_swallowed_fails_it_naming_the_drift(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, allow_unused: bool
) -> None:
    source = SWALLOWING.replace("ALLOW_UNUSED", str(allow_unused))
    project.makepyfile(test_fallback=source)
    monkeypatch.setenv("SERVE", "1")
    project.runpytest("-p", "no:xdist", "test_fallback.py", "--llmwb-record").assert_outcomes(
        passed=1
    )
    monkeypatch.delenv("SERVE")
    project.makepyfile(test_fallback=source.replace("Where is A-1?", "Where is B-2?"))
    result = project.runpytest("-p", "no:xdist", "test_fallback.py")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*PayloadDriftError: test_fallback.py::test_fallback passed, but its replay "
            "drifted and something caught the error:*",
            "*request drift at node 'openai.chat', 1st call (ordinal 0)*",
            "*/messages/0/content: 'Where is A-1?' -> 'Where is B-2?'*",
            "*fix: pytest --llmwb-record test_fallback.py::test_fallback*",
        ]
    )
    result.stdout.no_fnmatch_line("*MissingCallsError*")


def test_a_swallowed_blocked_call_is_reported_before_any_golden_check(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.makepyfile(test_fallback=SWALLOWING.replace("ALLOW_UNUSED", "False"))
    monkeypatch.setenv("SERVE", "1")
    project.runpytest("-p", "no:xdist", "test_fallback.py", "--llmwb-record").assert_outcomes(
        passed=1
    )
    monkeypatch.delenv("SERVE")
    bundle = project.path / "llmwb_bundles" / "test_fallback" / "test_fallback"
    before = _bundle_bytes(bundle)
    monkeypatch.setenv("PROBE", "1")
    for extra in ([], ["--snapshot-update"]):
        result = project.runpytest("-p", "no:xdist", "test_fallback.py", *extra)
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(
            ["*LiveCallBlockedError: *passed, but in replay it tried to reach the network*"]
        )
        result.stdout.no_fnmatch_line("*GoldenMismatchError*")
        assert _bundle_bytes(bundle) == before  # not rewritten from a blocked replay


def test_a_strict_secret_found_while_the_test_reads_its_facts_is_reported_once(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_read="""
        import os

        import openai
        import pytest

        from pytest_llmwb.testing import ScriptedLLMServer

        @pytest.mark.llmwb
        def test_read(llmwb):
            with ScriptedLLMServer(["use ghp_" + "A1b2C3d4" * 5]) as server, openai.OpenAI(
                base_url=server.base_url + "/v1", api_key=os.environ["OPENAI_API_KEY"]
            ) as client:
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "token?"}]
                )
            assert llmwb.model_calls  # builds the receipt: the secret is found here
        """
    )
    result = project.runpytest(
        "-p", "no:xdist", "test_read.py", "--llmwb-record", "--llmwb-strict-secrets"
    )
    result.assert_outcomes(failed=1, errors=0)
    result.stdout.fnmatch_lines(["*SecretFoundError: a secret matching rule 'github-token'*"])
    assert not (project.path / "llmwb_bundles" / "test_read").exists()


def test_a_test_that_expects_drift_says_so_with_expect_drift(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = SWALLOWING.replace("ALLOW_UNUSED", "True").replace(
        "@pytest.mark.llmwb(allow_unused=True)", "@pytest.mark.llmwb(allow_unused=True, EXPECT)"
    )
    source += """

def test_drift_is_raised(base_url, llmwb):
    from pytest_llmwb.exceptions import PayloadDriftError

    with pytest.raises(PayloadDriftError) if os.environ.get("SERVE") != "1" else nullcontext():
        with openai.OpenAI(base_url=base_url + "/v1", api_key="sk-x", max_retries=0) as client:
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": PROMPT}]
            )
"""
    source = "from contextlib import nullcontext\n" + source
    conftest = """
def pytest_llmwb_run_finished(item, run, bundle_path, written):
    print("HOOK", item.name, written)
"""
    project.makeconftest(conftest)
    recorded = source.replace("EXPECT", "expect_drift=False")
    project.makepyfile(test_fallback=recorded)
    monkeypatch.setenv("SERVE", "1")
    project.runpytest(
        "-p", "no:xdist", "test_fallback.py::test_drift_is_raised", "--llmwb-record"
    ).assert_outcomes(passed=1)
    monkeypatch.delenv("SERVE")
    changed = recorded.replace("Where is A-1?", "Where is B-2?")
    project.makepyfile(test_fallback=changed.replace("def test_drift_is_raised", ALLOWED))
    result = project.runpytest("-p", "no:xdist", "-s", "test_fallback.py::test_drift_is_raised")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*PayloadDriftError: *passed, but its replay drifted*",
            "*or, if the test catches this drift on purpose (pytest.raises), mark it "
            "@pytest.mark.llmwb(expect_drift=True)",
        ]
    )
    result.stdout.fnmatch_lines(["*HOOK test_drift_is_raised False*"])  # the hook still ran
    project.makepyfile(
        test_fallback=changed.replace(
            "def test_drift_is_raised",
            "@pytest.mark.llmwb(expect_drift=True)\ndef test_drift_is_raised",
        )
    )
    project.runpytest("-p", "no:xdist", "test_fallback.py::test_drift_is_raised").assert_outcomes(
        passed=1
    )


ALLOWED = "@pytest.mark.llmwb(allow_unused=True)\ndef test_drift_is_raised"
