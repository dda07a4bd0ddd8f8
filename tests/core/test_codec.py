"""Canonical JSON (RFC 8785), digests, stored-record encodings and JSON-pointer diffs."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pytest_llmwb.codec import canonical_json, digest, dumps_pretty, dumps_record, pointer_changes

SAFE_INT = 2**53 - 1

# Valid Unicode only (no lone surrogates: those are tested on their own), with control
# characters, DEL, non-ASCII and astral-plane characters all in reach.
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["", "\x00", "\x1f\x7f", "\b\f\n\r\t", '"\\', "é", "\uffff", "\U0001f600", "\u2028", "a~/b"]
)
NUMBERS = (
    st.integers()
    | st.sampled_from([SAFE_INT, SAFE_INT + 1, -SAFE_INT, -SAFE_INT - 1, 2**64, 0])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.1, -0.0, 1e21, 1e-7, 5e-324, 1.7976931348623157e308, 1.0, 2.5])
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


def _rfc8785(value: Any) -> bytes | None:
    try:
        return bytes(rfc8785.dumps(value))
    except Exception:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
@example({"\uffff": 1, "\U0001f600": 2, "e": 3, "é": 4})  # UTF-16 key order != code points
@example([SAFE_INT, -SAFE_INT])
@example({"big": SAFE_INT + 1})
@example({"f": 1.0, "g": [1e21, -0.0, 0.1]})
def test_canonical_json_is_rfc8785(value: Any) -> None:
    expected = _rfc8785(value)
    if expected is None:
        with pytest.raises(ValueError):
            canonical_json(value)
    else:
        assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), 2**53, -(2**53), {1: "int key"}, {"x": [2**70]}],
    ids=["nan", "inf", "-inf", "2**53", "-2**53", "int-key", "nested-big-int"],
)
def test_canonical_json_rejects_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(ValueError, match="cannot be canonicalized"):
        canonical_json(value)


@pytest.mark.parametrize("value", ["\ud800", {"k": "x\udfff"}, {"\ud800": 1}])
def test_canonical_json_rejects_lone_surrogates_with_value_error(value: Any) -> None:
    # a lone surrogate has no UTF-8 encoding; the documented error is ValueError
    with pytest.raises(ValueError):
        canonical_json(value)


def test_canonical_json_known_bytes() -> None:
    value = {"b": [1, 2.5, None, True], "a": "\u00e9\n", "\U0001f600": 0, "\uffff": 1}
    assert canonical_json(value) == (
        b'{"a":"\xc3\xa9\\n","b":[1,2.5,null,true],"\xf0\x9f\x98\x80":0,"\xef\xbf\xbf":1}'
    )


def test_digest_is_sha256_of_canonical_bytes_and_ignores_key_order() -> None:
    one = {"model": "m", "params": {"temperature": 0.5, "seed": 7}}
    two = {"params": {"seed": 7, "temperature": 0.5}, "model": "m"}
    expected = "sha256:" + hashlib.sha256(canonical_json(one)).hexdigest()
    assert digest(one) == digest(two) == expected
    assert digest({**one, "model": "n"}) != expected


def test_dumps_record_is_one_compact_line_in_insertion_order() -> None:
    # insertion order, not sorted: a replayed dict must come back as the live code built it
    data = dumps_record({"z": 1, "a": {"y": "two\nlines", "b": None}})
    assert data == b'{"z":1,"a":{"y":"two\\nlines","b":null}}'
    assert list(orjson.loads(data)) == ["z", "a"]


def test_dumps_pretty_is_sorted_indented_with_final_newline() -> None:
    assert dumps_pretty({"b": 1, "a": [1]}) == b'{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'


# --- pointer_changes -----------------------------------------------------------------------


def test_pointer_changes_equal_values_have_no_changes() -> None:
    value = {"a": [1, {"b": None}], "c": "x"}
    assert pointer_changes(value, orjson.loads(orjson.dumps(value))) == []


def test_pointer_changes_escapes_tilde_and_slash() -> None:
    old = {"a/b": 1, "c~d": 1, "~1": 1, "/": {"~": 1}}
    new = {"a/b": 2, "c~d": 2, "~1": 2, "/": {"~": 2}}
    assert pointer_changes(old, new) == [
        ("/~1/~0", 1, 2),
        ("/a~1b", 1, 2),
        ("/c~0d", 1, 2),
        ("/~01", 1, 2),
    ]


def test_pointer_changes_nested_paths_in_document_order() -> None:
    old = {"messages": [{"role": "user", "content": "hi"}], "model": "m-1"}
    new = {"messages": [{"role": "user", "content": "hello"}], "model": "m-2"}
    assert pointer_changes(old, new) == [
        ("/messages/0/content", "hi", "hello"),
        ("/model", "m-1", "m-2"),
    ]


def test_pointer_changes_list_shrinks_and_grows() -> None:
    assert pointer_changes([1, 2, 3], [1]) == [("/1", 2, "<absent>"), ("/2", 3, "<absent>")]
    assert pointer_changes({"l": [1]}, {"l": [1, "x", None]}) == [
        ("/l/1", "<absent>", "x"),
        ("/l/2", "<absent>", None),
    ]


def test_pointer_changes_added_and_removed_keys() -> None:
    assert pointer_changes({"a": 1, "gone": 2}, {"a": 1, "new": 3}) == [
        ("/gone", 2, "<absent>"),
        ("/new", "<absent>", 3),
    ]


@pytest.mark.parametrize(("old", "new"), [(1, 1.0), (1, True), (0, False), ("1", 1), ([], {})])
def test_pointer_changes_reports_type_changes_of_equal_looking_values(old: Any, new: Any) -> None:
    assert pointer_changes({"v": old}, {"v": new}) == [("/v", old, new)]


def test_pointer_changes_respects_limit() -> None:
    old = {f"k{i:02}": i for i in range(10)}
    new = {key: value + 1 for key, value in old.items()}
    changes = pointer_changes(old, new, limit=3)
    assert [path for path, _, _ in changes] == ["/k00", "/k01", "/k02"]
