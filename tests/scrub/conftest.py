"""Fake secrets of every built-in shape, assembled at run time.

They look like the real thing to the scrubber (and to secret scanners, which is why no
test file holds one literally) but grant nothing.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Iterator

import pytest

from pytest_llmwb import scrub

_ALNUM = string.ascii_letters + string.digits


def chars(n: int, seed: int, alphabet: str = _ALNUM) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _pem() -> str:
    body = "\n".join(chars(64, 40 + i, _ALNUM + "+/") for i in range(4))
    return "-----BEGIN RSA " + f"PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


#: rule name -> a fake secret of that shape (the exact text the rule replaces)
FAKES: dict[str, str] = {
    "openai-key": "sk-" + "proj-" + chars(48, 1, _ALNUM + "_-") + "T3BlbkFJ" + chars(20, 2),
    "anthropic-key": "sk-" + "ant-api03-" + chars(93, 3, _ALNUM + "_-") + "AA",
    "aws-access-key-id": "AKIA" + "IOSFODNN7" + "EXAMPLE",
    "google-api-key": "AIza" + "Sy" + chars(33, 4, _ALNUM + "_-"),
    "google-oauth-token": "ya29" + "." + chars(60, 5, _ALNUM + "_-"),
    "github-token": "ghp" + "_" + chars(36, 6),
    "slack-token": "xox" + "b-" + "123456789012-1234567890123-" + chars(24, 7),
    "stripe-key": "sk" + "_live_" + chars(24, 8),
    "huggingface-token": "hf" + "_" + chars(34, 9, string.ascii_letters),
    "jwt": _b64({"alg": "HS256", "typ": "JWT"})
    + "."
    + _b64({"sub": "1234567890", "name": "Jane", "iat": 1516239022})
    + "."
    + chars(43, 10, _ALNUM + "_-"),
    "private-key": _pem(),
}
#: secrets found inside text: (rule, the text, the secret in it)
BEARER_TOKEN = chars(40, 11, _ALNUM + "._-")
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
_PAT = "github_pat_" + chars(82, 12, _ALNUM + "_")
_LEGACY = "sk-" + chars(48, 13)
_ASIA = "ASIA" + chars(16, 14, string.ascii_uppercase + string.digits)
IN_CONTEXT: list[tuple[str, str, str]] = [
    ("bearer-token", f"Authorization: Bearer {BEARER_TOKEN}", BEARER_TOKEN),
    ("aws-secret-access-key", f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
    ("aws-secret-access-key", f"[default]\naws_secret_access_key={AWS_SECRET}\n", AWS_SECRET),
    ("github-token", f"token {_PAT}", _PAT),
    ("openai-key", f"legacy key {_LEGACY}.", _LEGACY),
    ("aws-access-key-id", f"temporary {_ASIA} ok", _ASIA),
    ("credential", """{"db_password": "hunter2 x"}""", "hunter2 x"),
    ("credential", "connect(user='app', password='hunter2')", "hunter2"),
    ("credential", "{'Authorization': 'Bearer abc.def'}", "Bearer abc.def"),
    ("env-credential", "HOME=/root\nDB_PASSWORD=hunter2\n", "hunter2"),
]


@pytest.fixture(autouse=True)
def _no_registered_rules() -> Iterator[None]:
    """Rules registered by a test do not leak into the next one."""
    scrub._unregister_all()
    yield
    scrub._unregister_all()
