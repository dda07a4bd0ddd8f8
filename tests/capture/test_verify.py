"""``--llmwb-mode verify``: live responses and tool results compared with the bundle.

The real openai SDK and a REST tool over requests, against loopback servers whose
answers come from environment variables, recorded once and verified after the
"provider" changed.
"""

from __future__ import annotations

import pytest

AGENT = """
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
import requests

import pytest_llmwb as llmwb
from pytest_llmwb.testing import Reply, ReplyUsage, ScriptedLLMServer


def answer(request):
    usage = ReplyUsage(input_tokens=5, output_tokens=int(os.environ.get("OUT", "3")))
    return Reply(text=os.environ["ANSWER"], usage=usage)


class Orders(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"id": "A-1", "status": os.environ["STATUS"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Orders)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with ScriptedLLMServer(answer) as llm:
        yield llm.base_url, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@llmwb.tool
def eta(order: str) -> dict:
    return {"order": order, "days": int(os.environ.get("DAYS", "2"))}


@pytest.mark.llmwb
def test_agent(servers):
    llm, orders = servers
    status = requests.get(orders + "/orders/A-1", timeout=5).json()["status"]
    days = eta("A-1")["days"]
    with openai.OpenAI(base_url=llm + "/v1", api_key="sk-x", max_retries=0) as client:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"A-1 is {status}, {days} days"}]
        )
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:randomly")
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_agent=AGENT)
    monkeypatch.setenv("ANSWER", "Hello there.")
    monkeypatch.setenv("STATUS", "shipped")
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    return pytester


def test_verify_passes_when_the_provider_answers_as_recorded(project: pytest.Pytester) -> None:
    result = project.runpytest("--llmwb-mode=verify")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["test_agent.py::test_agent: verify, 3 calls, *"])
    result.stdout.no_fnmatch_line("*difference*")


def test_verify_fails_naming_every_changed_response_and_tool_result(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANSWER", "Howdy.")
    monkeypatch.setenv("DAYS", "2")
    result = project.runpytest("--llmwb-mode=verify")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ResponseDriftError: test_agent.py::test_agent: in verify, 1 live response or "
            "tool result value differs*",
            "*node 'openai.chat' ordinal 0 (model_io): /content: 'Hello there.' -> 'Howdy.'",
            "*fix: if the provider's new behaviour is right, record it: pytest --llmwb-record*",
        ]
    )
    # the terminal summary says so too
    result.stdout.fnmatch_lines(
        [
            "test_agent.py::test_agent: verify, 3 calls, *; 1 difference from the bundle",
            "    node 'openai.chat' ordinal 0 (model_io): /content: 'Hello there.' -> 'Howdy.'",
        ]
    )


def test_verify_compares_tool_results_captured_and_instrumented(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATUS", "lost")
    monkeypatch.setenv("DAYS", "9")
    # the prompt quotes the results: keep the request equal, so only results differ
    project.makepyfile(
        test_agent=AGENT.replace('f"A-1 is {status}, {days} days"', '"A-1 is shipped, 2 days"')
    )
    result = project.runpytest("--llmwb-mode=verify")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*node 'http:127.0.0.1' ordinal 0 (tool_call): /result/body/status: "
            "'shipped' -> 'lost'",
            "*node 'eta' ordinal 0 (tool_call): /result/days: 2 -> 9",
        ]
    )


def test_usage_differences_are_reported_without_failing(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUT", "9")
    result = project.runpytest("--llmwb-mode=verify")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*; 1 difference from the bundle",
            "    node 'openai.chat' ordinal 0 (model_io): /usage/output_tokens: 3 -> 9 "
            "(reported, not compared)",
        ]
    )
