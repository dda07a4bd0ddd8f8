"""The scrubber on its own: every rule, placeholders, fields, strict mode, user rules."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from pytest_llmwb import scrub
from pytest_llmwb.exceptions import ConfigError, SecretFoundError
from pytest_llmwb.scrub import BUILTIN_RULES, Scrubber, SecretRule, register_rule

from .conftest import FAKES, IN_CONTEXT, chars

PLACEHOLDER = re.compile(r"<secret:([a-z0-9-]+)(?::([0-9a-f]{8}))?>")


def test_every_builtin_rule_has_a_fake() -> None:
    named = {rule for rule, _, _ in IN_CONTEXT} | set(FAKES)
    assert named == {rule.name for rule in BUILTIN_RULES}


@pytest.mark.parametrize(("rule", "secret"), sorted(FAKES.items()))
def test_each_rule_replaces_its_secret_with_a_placeholder(rule: str, secret: str) -> None:
    text = f"before {secret} after"
    clean = Scrubber().scrub_text(text)
    assert secret not in clean
    match = PLACEHOLDER.search(clean)
    assert match is not None and match.group(1) == rule
    assert clean == f"before {match.group(0)} after"


@pytest.mark.parametrize(("rule", "text", "secret"), IN_CONTEXT)
def test_secrets_found_inside_text(rule: str, text: str, secret: str) -> None:
    clean = Scrubber().scrub_text(text)
    assert secret not in clean
    match = PLACEHOLDER.search(clean)
    label = next(r.label or r.name for r in BUILTIN_RULES if r.name == rule)
    assert match is not None and match.group(1) == label
    # only the secret goes: the words around it stay
    assert clean.replace(match.group(0), secret) == text


def test_anthropic_keys_are_not_taken_for_openai_keys() -> None:
    assert "<secret:anthropic-key:" in Scrubber().scrub_text(FAKES["anthropic-key"])


def test_a_truncated_private_key_is_scrubbed_to_the_end() -> None:
    pem = FAKES["private-key"]
    cut = pem[: len(pem) // 2]
    assert Scrubber().scrub_text(f"key:\n{cut}").startswith("key:\n<secret:private-key:")
    assert cut[20:] not in Scrubber().scrub_text(cut)


@pytest.mark.parametrize(
    "text",
    [
        "a task-list and a risk-free desk-top plan",
        "sk-short",
        "sha256:" + hashlib.sha256(b"x").hexdigest(),
        "123e4567-e89b-12d3-a456-426614174000",
        "Bearer of bad news",
        "AKIA is not a key",
        "ghp_tooshort",
        "xoxb-short",
        "the bearer token is secret",
        "eyJhbGciOi alone",
        "<secret:openai-key:0123abcd> was already scrubbed",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert Scrubber().scrub_text(text) is text


def test_placeholders_are_stable_and_keyed() -> None:
    secret = FAKES["openai-key"]
    first = Scrubber().scrub_text(secret)
    assert Scrubber().scrub_text(f"x {secret} y") == f"x {first} y"  # across scrubbers
    assert Scrubber().scrub_text(f"{secret} {secret}") == f"{first} {first}"
    other = Scrubber().scrub_text(FAKES["openai-key"][:-1] + "Z")
    assert other != first
    tag = PLACEHOLDER.fullmatch(first).group(2)  # type: ignore[union-attr]
    # not a plain (dictionary-testable) hash of the secret
    assert tag != hashlib.sha256(secret.encode()).hexdigest()[:8]
    assert Scrubber(salt="another project").scrub_text(secret) != first


def test_the_salt_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = FAKES["github-token"]
    default = Scrubber().scrub_text(secret)
    monkeypatch.setenv("LLMWB_SECRET_SALT", "ci-secret-salt")
    assert Scrubber().scrub_text(secret) != default
    assert Scrubber().scrub_text(secret) == Scrubber(salt="ci-secret-salt").scrub_text(secret)


def test_scrubbing_is_idempotent() -> None:
    value = {"a": [FAKES["jwt"], f"Bearer {chars(30, 1)}"], "password": "hunter2"}
    once = Scrubber().scrub_value(value, where="v")
    assert Scrubber().scrub_value(once, where="v") is once


def test_json_walk_scrubs_strings_keys_and_secret_fields() -> None:
    key = FAKES["openai-key"]
    value = {
        "messages": [{"role": "user", "content": f"my key is {key}"}],
        "config": {
            "Password": "hunter2",
            "API-Key": "plain-value",
            "db_password": "pw",
            "password_hint": "a pet",
            "token": "Hello",
        },
        key: 1,
        "n": 3,
        "ok": True,
        "none": None,
    }
    clean = Scrubber().scrub_value(value, where="v")
    assert key not in str(clean)
    assert clean["messages"][0]["content"].startswith("my key is <secret:openai-key:")
    # credential fields are replaced whole, without a tag (they may be low-entropy)
    assert clean["config"]["Password"] == "<secret:credential>"
    assert clean["config"]["API-Key"] == "<secret:credential>"
    assert clean["config"]["db_password"] == "<secret:credential>"  # names end with one
    assert clean["config"]["password_hint"] == "a pet"
    assert clean["config"]["token"] == "Hello"  # e.g. logprobs: not a credential name
    assert (clean["n"], clean["ok"], clean["none"]) == (3, True, None)
    assert value["messages"][0]["content"] == f"my key is {key}"  # the input is not changed


@pytest.mark.parametrize("dump", [json.dumps, repr])
def test_a_scrubbed_result_quoted_in_a_request_scrubs_alike(dump: Any) -> None:
    """Replay serves scrubbed tool results; the request quoting one must not drift."""
    result = {
        "keys": [*FAKES.values(), *(secret for _, _, secret in IN_CONTEXT)],
        "db": {"password": "pw", "authorization": f"Bearer {chars(30, 3)}"},
        "env": "A=1\nDB_PASSWORD=hunter2",
    }
    scrubber = Scrubber()
    served = scrubber.scrub_value(result, where="result")
    assert scrubber.scrub_text(dump(served)) == scrubber.scrub_text(dump(result))


def test_a_clean_value_comes_back_as_the_same_object() -> None:
    value = {"messages": [{"role": "user", "content": "a task-list"}], "password": ""}
    assert Scrubber().scrub_value(value, where="v") is value


def test_strict_mode_names_where_the_field_and_the_rule_never_the_secret() -> None:
    key = FAKES["anthropic-key"]
    value = {"messages": [{"role": "user", "content": "x"}, {"content": f"k={key}"}]}
    with pytest.raises(SecretFoundError) as info:
        Scrubber(strict=True).scrub_value(value, where="the request on node 'draft'")
    err = info.value
    assert (err.field, err.rule) == ("/messages/1/content", "anthropic-key")
    assert "the request on node 'draft' at /messages/1/content" in str(err)
    assert "'anthropic-key'" in str(err) and "fix:" in str(err)
    assert key not in str(err) and key[10:30] not in str(err)


def test_strict_mode_on_a_secret_field() -> None:
    with pytest.raises(SecretFoundError) as info:
        Scrubber(strict=True).scrub_value({"db": {"password": "hunter2"}}, where="args")
    assert (info.value.field, info.value.rule) == ("/db/password", "credential")
    assert "hunter2" not in str(info.value)


def test_find_lists_every_secret_without_raising() -> None:
    value = {"a": FAKES["jwt"], "b": [FAKES["slack-token"]], "secret": "s"}
    assert sorted(Scrubber(strict=True).find(value)) == [
        ("/a", "jwt"),
        ("/b/0", "slack-token"),
        ("/secret", "credential"),
    ]


def test_bytes_keep_everything_but_the_secret() -> None:
    key = FAKES["google-api-key"]
    data = b"\x00\xff caf\xc3\xa9 " + key.encode() + b" \x89PNG"
    clean = Scrubber().scrub_bytes(data, where="blob")
    assert key.encode() not in clean
    assert clean.startswith(b"\x00\xff caf\xc3\xa9 <secret:google-api-key:")
    assert clean.endswith(b" \x89PNG")
    plain = b"no secrets \xff"
    assert Scrubber().scrub_bytes(plain, where="blob") is plain
    with pytest.raises(SecretFoundError, match="byte offset 9"):
        Scrubber(strict=True).scrub_bytes(data, where="blob")


# --- user rules ----------------------------------------------------------------------------

ACME = SecretRule("acme-token", r"acme_[A-Za-z0-9]{24}", anchors=["acme_"])


def test_a_user_rule_through_the_constructor() -> None:
    token = "acme_" + chars(24, 5)
    assert Scrubber().scrub_text(token) == token
    assert Scrubber(extra_rules=[ACME]).scrub_text(token).startswith("<secret:acme-token:")


def test_a_user_rule_through_register_rule() -> None:
    token = "acme_" + chars(24, 6)
    assert register_rule(ACME) is ACME
    assert scrub.default_scrubber().scrub_text(token).startswith("<secret:acme-token:")
    assert scrub.registered_rules() == (ACME,)
    assert Scrubber().scrub_text(token) != token


def test_rule_options_group_keys_no_tag_flags_no_anchors() -> None:
    rules = [
        SecretRule("session", r"(?i)session=([0-9a-f]{16})", group=1, tag=False),
        SecretRule("pin", keys=["PIN-Code"]),
        SecretRule("repeat", r"(x{3})-\1"),  # a back-reference works: rules run on their own
    ]
    scrubber = Scrubber(extra_rules=rules)
    assert scrubber.scrub_text("SESSION=0123456789abcdef;") == "SESSION=<secret:session>;"
    assert "<secret:pin:" in scrubber.scrub_value({"pin_code": "1234"}, where="v")["pin_code"]
    assert scrubber.scrub_text("xxx-xxx") == scrubber.scrub_text("xxx-xxx")
    assert scrubber.scrub_text("xxx-xxx").startswith("<secret:repeat:")


def test_a_user_rule_replaces_a_builtin_of_the_same_name() -> None:
    stricter = SecretRule("openai-key", r"sk-[A-Za-z0-9]{4,}", anchors=["sk-"])
    assert Scrubber(extra_rules=[stricter]).scrub_text("sk-abcd").startswith("<secret:openai")
    assert Scrubber().scrub_text("sk-abcd") == "sk-abcd"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name", "pattern": "x"}, "lower-case"),
        ({"name": "empty", "pattern": "a*"}, "empty string"),
        ({"name": "nothing"}, "neither a pattern nor keys"),
        ({"name": "broken", "pattern": "("}, "invalid pattern"),
    ],
)
def test_invalid_rules_are_config_errors(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SecretRule(**kwargs)  # type: ignore[arg-type]


def test_only_rules_are_accepted() -> None:
    with pytest.raises(ConfigError, match="SecretRule"):
        register_rule("acme_.*")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="SecretRule"):
        Scrubber(extra_rules=["acme_.*"])  # type: ignore[list-item]


def test_a_large_text_is_scrubbed_quickly() -> None:
    import time

    text = ("the quick brown fox; a task-list; risk-free. " * 25_000) + FAKES["openai-key"]
    started = time.perf_counter()
    clean = Scrubber().scrub_text(text)
    assert time.perf_counter() - started < 1.0  # ~1 MB; a few ms in practice
    assert clean.endswith(">") and FAKES["openai-key"] not in clean


def test_strings_with_lone_surrogates_are_scanned_too() -> None:
    # os.listdir() gives such names for bytes that are not UTF-8
    text = "report-\udcff.txt uploaded with sk-proj-" + "a1B2" * 8
    scrubbed = Scrubber().scrub_text(text)
    assert scrubbed.startswith("report-\udcff.txt uploaded with <secret:openai-key:")


def test_an_empty_anchor_means_the_rule_is_tried_on_every_string() -> None:
    rule = SecretRule("acme", r"acme_[0-9]{6}", anchors=[""])
    assert rule.anchors is None
    assert Scrubber(extra_rules=[rule]).scrub_text("id acme_123456").startswith("id <secret:acme:")
