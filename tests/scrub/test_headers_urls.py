"""Headers are recorded by allowlist, credentials never; URLs lose their secret parameters."""

from __future__ import annotations

import pytest

from pytest_llmwb import Run
from pytest_llmwb.scrub import (
    DEFAULT_ALLOWED_HEADERS,
    Scrubber,
    SecretRule,
    is_denied_header,
    scrub_headers,
    scrub_url,
)

from .conftest import FAKES, chars

REQUEST_HEADERS = {
    "Authorization": f"Bearer {FAKES['openai-key']}",
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "OpenAI/Python 1.99.0",
    "X-Stainless-OS": "Linux",
    "OpenAI-Organization": "org-" + chars(24, 1),
    "OpenAI-Beta": "assistants=v2",
    "anthropic-version": "2023-06-01",
    "x-api-key": FAKES["anthropic-key"],
    "x-goog-api-key": FAKES["google-api-key"],
    "api-key": chars(32, 2),
    "Cookie": "session=" + chars(32, 3),
    "Proxy-Authorization": "Basic " + chars(20, 4),
    "X-Amz-Date": "20261101T000000Z",
    "X-Amz-Security-Token": chars(80, 5),
    "X-Amz-Content-Sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
}
RESPONSE_HEADERS = {
    "content-type": "text/event-stream",
    "set-cookie": "__cf_bm=" + chars(40, 6) + "; path=/; HttpOnly",
    "Set-Cookie2": "_cfuvid=" + chars(40, 7),
    "x-request-id": "req_" + chars(24, 8),
    "request-id": "req_" + chars(24, 9),
    "retry-after-ms": "200",
    "x-should-retry": "true",
    "openai-processing-ms": "512",
    "x-ratelimit-remaining-tokens": "79000",
    "content-encoding": "gzip",
}


def test_request_headers_by_allowlist_credentials_dropped() -> None:
    assert scrub_headers(REQUEST_HEADERS) == {
        "content-type": "application/json",
        "accept": "application/json",
        "openai-beta": "assistants=v2",
        "anthropic-version": "2023-06-01",
    }


def test_response_headers_drop_set_cookie() -> None:
    kept = scrub_headers(RESPONSE_HEADERS)
    assert kept == {
        "content-type": "text/event-stream",
        "x-request-id": RESPONSE_HEADERS["x-request-id"],
        "request-id": RESPONSE_HEADERS["request-id"],
        "retry-after-ms": "200",
        "x-should-retry": "true",
    }


def test_credential_headers_are_dropped_even_when_allowed() -> None:
    everything = {name.lower() for name in [*REQUEST_HEADERS, *RESPONSE_HEADERS]}
    kept = scrub_headers({**REQUEST_HEADERS, **RESPONSE_HEADERS}, allow=everything)
    dropped = everything - set(kept)
    assert dropped == {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-goog-api-key",
        "api-key",
        "cookie",
        "set-cookie",
        "set-cookie2",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "openai-organization",
    }
    for name in ("X-Auth-Token", "x-my-service-api-key", "x-session-token", "x-client-secret"):
        assert is_denied_header(name), name
    for name in ("x-request-id", "content-type", "www-authenticate", "anthropic-version"):
        assert not is_denied_header(name), name


def test_allowlist_wildcards_and_scrubbed_values() -> None:
    headers = {
        "X-RateLimit-Remaining-Tokens": "10",
        "X-RateLimit-Limit-Requests": "50",
        "X-Debug": f"called with {FAKES['github-token']}",
        "Content-Type": "application/json",
    }
    kept = scrub_headers(headers, allow=DEFAULT_ALLOWED_HEADERS | {"x-ratelimit-*", "x-debug"})
    assert kept["x-ratelimit-remaining-tokens"] == "10"
    assert kept["x-ratelimit-limit-requests"] == "50"
    assert kept["x-debug"].startswith("called with <secret:github-token:")
    assert set(kept) == {
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-limit-requests",
        "x-debug",
        "content-type",
    }


def test_the_current_runs_scrubber_is_used() -> None:
    token = "acme_" + chars(24, 1)
    rule = SecretRule("acme-token", r"acme_[A-Za-z0-9]{24}", anchors=["acme_"])
    with Run("r", scrubber=Scrubber(extra_rules=[rule], allow_headers={"x-acme"})):
        assert scrub_headers({"X-Acme": token, "Accept": "*/*"}) == {
            "x-acme": Scrubber(extra_rules=[rule]).scrub_text(token)
        }
    assert scrub_headers({"X-Acme": token}) == {}


KEY = FAKES["google-api-key"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://generativelanguage.googleapis.com/v1beta/models/g:generateContent?key={KEY}",
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent"
            "?key=REDACTED",
        ),
        (
            "https://x.test/a?b=1&api_key=abc123&c=2&ACCESS_TOKEN=t&sig=s%2Fx&empty=&d=4",
            "https://x.test/a?b=1&api_key=REDACTED&c=2&ACCESS_TOKEN=REDACTED&sig=REDACTED"
            "&empty=&d=4",
        ),
        (
            "https://blob.test/c/f.txt?sv=2024&se=2026&sp=r&signature=abc&X-Amz-Signature=f00",
            "https://blob.test/c/f.txt?sv=2024&se=2026&sp=r&signature=REDACTED"
            "&X-Amz-Signature=REDACTED",
        ),
        ("https://user:hunter2@db.test:5432/x", "https://user:REDACTED@db.test:5432/x"),
        (
            "https://app.test/cb#access_token=abc&state=1",
            "https://app.test/cb#access_token=REDACTED&state=1",
        ),
        ("https://x.test/a?api%5Fkey=v", "https://x.test/a?api%5Fkey=REDACTED"),
        (
            "https://api.openai.com/v1/chat/completions",
            "https://api.openai.com/v1/chat/completions",
        ),
        ("https://x.test/a?q=task-list&page=2", "https://x.test/a?q=task-list&page=2"),
    ],
)
def test_secret_query_parameters_are_redacted_in_order(url: str, expected: str) -> None:
    assert scrub_url(url) == expected


def test_secret_shapes_elsewhere_in_a_url() -> None:
    token = FAKES["slack-token"]
    clean = scrub_url(f"https://hooks.test/services/{token}/post?x=1")
    assert token not in clean and "<secret:slack-token:" in clean
    assert clean.endswith("/post?x=1")
