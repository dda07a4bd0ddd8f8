"""Canonical bytes and digests.

Anything that is hashed (request digests, DAG digests, artifact digests) goes through
:func:`canonical_json`, which is RFC 8785 (JSON Canonicalization Scheme). orjson with
sorted keys is byte-identical to JCS for the common case (integers within the IEEE-754
safe range, non-integral floats between 1e-5 and 1e16, ASCII object keys) and about
10x faster, so that case takes the fast path; everything else goes through the exact
``rfc8785`` implementation. Files that are only stored, never hashed, use :func:`dumps_record`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "DIGEST_PREFIX",
    "canonical_json",
    "digest",
    "digest_bytes",
    "dumps_pretty",
    "dumps_record",
    "pointer_changes",
]

DIGEST_PREFIX = "sha256:"
_SAFE_INT = 2**53 - 1


def _fast_path_ok(obj: Any) -> bool:
    """True when orjson's sorted output equals RFC 8785 for ``obj``."""
    stack = [obj]
    pop, push = stack.pop, stack.append
    while stack:
        value = pop()
        kind = type(value)
        if kind is str or value is None or kind is bool:
            continue
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str or not key.isascii():
                    return False
                if type(item) is not str:  # most leaves are strings: not pushed
                    push(item)
            continue
        if kind is list or kind is tuple:
            stack.extend(value)
            continue
        if isinstance(value, bool):  # a bool subclass, like True
            continue
        if isinstance(value, int):
            if -_SAFE_INT <= value <= _SAFE_INT:
                continue
            return False
        if isinstance(value, float):
            # orjson and ECMAScript print these alike (shortest round trip, no exponent);
            # integral floats ("1.0" vs "1") and exponent ranges differ
            if 1e-5 <= abs(value) < 1e16 and not value.is_integer():
                continue
            return False
        if isinstance(value, str):  # a str subclass
            continue
        if isinstance(value, dict):
            if not all(isinstance(key, str) and key.isascii() for key in value):
                return False
            stack.extend(value.values())
            continue
        if isinstance(value, (list, tuple)):
            stack.extend(value)
            continue
        return False  # anything that is not JSON
    return True


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of ``obj`` (plain JSON values only).

    Raises ``ValueError`` for values JSON cannot represent exactly (NaN, infinities,
    integers beyond 2**53, non-string keys).
    """
    if _fast_path_ok(obj):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate in a string
            raise ValueError(f"value cannot be canonicalized as JSON: {exc}") from exc
    import rfc8785

    try:
        return bytes(rfc8785.dumps(obj))
    except Exception as exc:  # rfc8785 raises its own error classes
        raise ValueError(f"value cannot be canonicalized as JSON: {exc}") from exc


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of raw bytes."""
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def digest(obj: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``obj``."""
    return digest_bytes(canonical_json(obj))


def dumps_record(obj: Any) -> bytes:
    """One compact JSON record, keys in insertion order (a line of ``facts.jsonl``).

    Keys are not sorted: a replayed value must come back as the live code built it
    (an agent that formats a tool result into a prompt would otherwise drift). The
    order is still deterministic: the same behaviour builds the same dicts.
    """
    return orjson.dumps(obj)


def dumps_pretty(obj: Any) -> bytes:
    """Indented JSON with sorted keys and a final newline, for files read in git diffs."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointer_changes(old: Any, new: Any, *, limit: int = 50) -> list[tuple[str, Any, Any]]:
    """The JSON-pointer paths at which ``old`` and ``new`` differ, with both values.

    A missing side is reported as the string ``"<absent>"``; a change of the whole
    value has the empty pointer ``""``. At most ``limit`` changes are returned, in
    document order.
    """
    absent = "<absent>"
    out: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                sub = f"{path}/{_escape_pointer(str(key))}"
                if key not in a:
                    out.append((sub, absent, b[key]))
                elif key not in b:
                    out.append((sub, a[key], absent))
                else:
                    walk(a[key], b[key], sub)
            return
        if isinstance(a, list) and isinstance(b, list):
            for index in range(max(len(a), len(b))):
                sub = f"{path}/{index}"
                if index >= len(a):
                    out.append((sub, absent, b[index]))
                elif index >= len(b):
                    out.append((sub, a[index], absent))
                else:
                    walk(a[index], b[index], sub)
            return
        if type(a) is not type(b) or a != b:
            out.append((path, a, b))  # "" is the whole document (RFC 6901)

    walk(old, new, "")
    return out
