"""Secret scrubbing: what is recorded never holds a credential.

Everything a run records passes through a :class:`Scrubber` before it is hashed or
stored: request JSON before its digest (identically in record and replay, so matching
is unaffected), responses, tool results, artifacts and blobs before they are kept,
and every file of a bundle once more when it is written. What the host receives live
is never changed.

Three mechanisms:

- **headers** are recorded by allowlist (:data:`DEFAULT_ALLOWED_HEADERS`); credential
  headers (:func:`is_denied_header`) are dropped even when allowlisted;
- **URLs** keep their shape; the values of credential query parameters
  (:data:`SECRET_QUERY_PARAMS`) and userinfo passwords become ``REDACTED``;
- **strings** anywhere in JSON are scanned for the shapes of known secrets
  (:data:`BUILTIN_RULES`) plus user rules; each hit becomes a stable placeholder
  ``<secret:RULE:TAG>``. Credentials are also found by name: the string value of a
  JSON field named like one (``password``, ``db_password``, ``api_key``, ...), the same
  ``name: "value"`` inside text, and ``NAME_PASSWORD=value`` lines; all three become
  ``<secret:credential>``, so a value gets one placeholder whichever form it took.

The tag is the first 8 hex digits of HMAC-SHA256 over the secret, keyed with the
scrubber's salt (``LLMWB_SECRET_SALT``, else a fixed public salt): the same secret gives
the same placeholder within and across runs and machines, different secrets almost
always differ, and 32 bits of a keyed hash say nothing usable about a high-entropy key.
With the public salt, someone who already holds a candidate secret can test it against
a tag; set ``LLMWB_SECRET_SALT`` (kept out of the repository) to rule that out. Values
caught only by their field name may be low-entropy (passwords), so their placeholder
carries no tag.

In strict mode (``Scrubber(strict=True)``, ``--llmwb-strict-secrets``) a hit raises
:class:`~pytest_llmwb.exceptions.SecretFoundError` naming where, the JSON pointer and the
rule, never the secret.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import ahocorasick_rs
import orjson

from .exceptions import ConfigError, SecretFoundError

if TYPE_CHECKING:
    from .schema import DagSnapshot

__all__ = [
    "BUILTIN_RULES",
    "DEFAULT_ALLOWED_HEADERS",
    "DENIED_HEADERS",
    "SECRET_FIELDS",
    "SECRET_QUERY_PARAMS",
    "Scrubber",
    "SecretRule",
    "active_scrubber",
    "default_scrubber",
    "is_denied_header",
    "register_rule",
    "registered_rules",
    "scrub_headers",
    "scrub_url",
    "scrub_value",
    "unregister_rule",
]

JSON = Any

#: Environment variable holding the salt that keys placeholder tags.
SALT_ENV = "LLMWB_SECRET_SALT"
_PUBLIC_SALT = b"pytest-llmwb secret placeholder v1"

#: What a redacted URL query value or password becomes.
REDACTED = "REDACTED"

_NOT_IN_TAG = re.compile(r"\\[nrt]|\\(?=/)|\s")
_PLACEHOLDER = re.compile(r"<secret:[a-z0-9][a-z0-9-]*(?::[0-9a-f]{8})?>")
_RULE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True)
class SecretRule:
    """A kind of secret: a regex for its shape, or the field names that hold it.

    - ``name``: lower-case words joined by ``-``; it appears in placeholders and errors.
    - ``pattern``: a regex matching the secret in any string.
    - ``group``: the group of ``pattern`` that is the secret (default: the whole match),
      e.g. the token after ``Bearer``.
    - ``anchors``: literal strings, one of which every match contains. Strings holding
      none of any rule's anchors are skipped without running a regex, which is what
      keeps scrubbing cheap; a rule without anchors is tried on every string.
    - ``keys``: field names whose string values are secrets whole, whatever their
      shape: a JSON field whose name ends with one of them (case-insensitively, ``-``
      and ``_`` alike) is replaced.
    - ``tag``: whether the placeholder carries the keyed hash of the secret.
    - ``label``: the name written in the placeholder (default: ``name``). Rules that
      catch one secret in several forms share a label, so that the secret gets the same
      placeholder whichever form it was found in.
    """

    name: str
    pattern: str | re.Pattern[str] | None = None
    group: int | str = 0
    anchors: Sequence[str] | None = None
    keys: Sequence[str] = ()
    tag: bool = True
    label: str | None = None
    regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        fix = 'e.g. SecretRule("acme-token", r"acme_[A-Za-z0-9]{32}", anchors=["acme_"])'
        if not isinstance(self.name, str) or not _RULE_NAME.fullmatch(self.name):
            raise ConfigError(
                f"secret rule name {self.name!r} must be lower-case letters, digits and '-'",
                fix=fix,
            )
        if self.label is not None and not _RULE_NAME.fullmatch(str(self.label)):
            raise ConfigError(
                f"secret rule label {self.label!r} must be lower-case letters, digits and '-'",
                fix=fix,
            )
        if self.pattern is None and not self.keys:
            raise ConfigError(f"secret rule {self.name!r} has neither a pattern nor keys", fix=fix)
        if self.pattern is not None:
            try:
                regex = (
                    self.pattern
                    if isinstance(self.pattern, re.Pattern)
                    else re.compile(self.pattern)
                )
            except re.error as exc:
                raise ConfigError(
                    f"secret rule {self.name!r}: invalid pattern: {exc}", fix=fix
                ) from None
            if regex.search("") is not None:
                raise ConfigError(
                    f"secret rule {self.name!r}: the pattern matches the empty string", fix=fix
                )
            object.__setattr__(self, "regex", regex)
        object.__setattr__(self, "keys", tuple(_key(k) for k in self.keys))
        if self.anchors is not None:
            anchors = tuple(self.anchors)
            # an empty anchor occurs in every string: the rule is tried on all of them
            object.__setattr__(self, "anchors", None if "" in anchors else anchors)

    def placeholder(self, secret: str, salt: bytes) -> str:
        """The placeholder that replaces ``secret``."""
        label = self.label or self.name
        if not self.tag:
            return f"<secret:{label}>"
        # whitespace and escapes left out, so that a key gets one tag raw and quoted in
        # JSON or a repr (a PEM key's newlines become "\n" there)
        canonical = _NOT_IN_TAG.sub("", secret)
        tag = hmac.new(salt, canonical.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"<secret:{label}:{tag.hexdigest()[:8]}>"


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


#: Field names (suffixes) whose string values are secrets whole: ``password``,
#: ``db_password``, ``X-Api-Key``, ``client_secret``, ... (lower-case, ``-`` as ``_``).
SECRET_FIELDS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "session_token",
    "private_key",
    "secret_key",
    "secret_access_key",
    "authorization",
)
_FIELD_NAMES = "|".join(
    re.escape(name).replace("_", "[-_]?") for name in sorted(SECRET_FIELDS, key=len, reverse=True)
)

# Every pattern starts with a literal (checks on the character before it come after it,
# as look-behinds), so that ``re`` finds candidates with its fast literal search.

#: The built-in rules; where two match at the same place, the earlier one wins.
BUILTIN_RULES: tuple[SecretRule, ...] = (
    # Credentials by name, first: the string value of a JSON field named like one, and
    # the same `name: "value"` inside text (JSON or a repr pasted into a prompt). One
    # rule for both, so that a tool result served in replay (its field scrubbed) and
    # the live result quoted in the next request give the same placeholder. The values
    # may be low-entropy (passwords): no tag.
    SecretRule(
        "credential",
        rf"(?i:{_FIELD_NAMES})[\"']?\s*[:=]\s*([\"'])(?P<value>[^\"'\r\n]{{1,1024}})\1",
        group="value",
        keys=SECRET_FIELDS,
        tag=False,
        anchors=[
            *("assword", "ASSWORD", "asswd", "ASSWD", "ecret", "ECRET"),
            *("pi_key", "pi-key", "piKey", "pi-Key", "PI_KEY", "PI-KEY", "pikey", "PIKEY"),
            *("ccess_token", "ccessToken", "CCESS_TOKEN", "uth_token", "uthToken", "UTH_TOKEN"),
            *("efresh_token", "efreshToken", "REFRESH_TOKEN", "id_token", "idToken", "ID_TOKEN"),
            *("ession_token", "essionToken", "ESSION_TOKEN"),
            *("rivate_key", "rivateKey", "RIVATE_KEY", "uthorization", "UTHORIZATION"),
        ],
    ),
    SecretRule(
        "private-key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)",
        anchors=["PRIVATE KEY"],
    ),
    SecretRule(
        "bearer-token",
        r"[Bb]earer\s+([A-Za-z0-9._~+/-]{16,}=*)",
        group=1,
        anchors=["earer"],
    ),
    SecretRule(
        "anthropic-key",
        r"sk-ant-(?<![A-Za-z0-9_-]sk-ant-)[A-Za-z0-9_-]{20,}",
        anchors=["sk-ant-"],
    ),
    SecretRule(
        "openai-key",
        r"sk-(?<![A-Za-z0-9_-]sk-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}",
        anchors=["sk-"],
    ),
    SecretRule(
        "aws-access-key-id",
        r"(?:AKIA|ASIA|ABIA|ACCA)(?<![A-Z0-9][A-Z]{4})[A-Z0-9]{16}(?![A-Z0-9])",
        anchors=["AKIA", "ASIA", "ABIA", "ACCA"],
    ),
    SecretRule(
        "aws-secret-access-key",
        r"(?i:aws_?secret_?access_?key|secretaccesskey)[\"']?\s*[:=]\s*[\"']?"
        r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        group=1,
        anchors=["ecret_access_key", "ECRET_ACCESS_KEY", "ecretAccessKey", "ecretaccesskey"],
    ),
    SecretRule("google-api-key", r"AIza[0-9A-Za-z_-]{35}", anchors=["AIza"]),
    SecretRule("google-oauth-token", r"ya29\.[0-9A-Za-z_-]{20,}", anchors=["ya29."]),
    SecretRule(
        "github-token",
        r"gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}",
        anchors=["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
    ),
    SecretRule("slack-token", r"xox[baprs]-[0-9A-Za-z-]{10,}", anchors=["xox"]),
    SecretRule(
        "stripe-key", r"[sr]k_(?:live|test)_[0-9A-Za-z]{20,}", anchors=["k_live_", "k_test_"]
    ),
    SecretRule("huggingface-token", r"hf_(?<![A-Za-z0-9]hf_)[A-Za-z0-9]{30,}", anchors=["hf_"]),
    SecretRule(
        "jwt", r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}", anchors=["eyJ"]
    ),
    # `NAME=value` lines of a .env file or a shell a tool read
    SecretRule(
        "env-credential",
        r"[A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|API_KEY|ACCESS_TOKEN|AUTH_TOKEN|PRIVATE_KEY)"
        r"[A-Z0-9_]*=([^\s\"']{3,256})",
        group=1,
        tag=False,
        anchors=["ASSWORD", "ASSWD", "ECRET", "PI_KEY", "CCESS_TOKEN", "UTH_TOKEN", "RIVATE_KEY"],
        label="credential",
    ),
)

#: Headers recorded by default (lower-case; ``*`` matches any suffix). Wire-level
#: framing (content-length, content-encoding, transfer-encoding) is left out because
#: stored bodies are decoded and may be scrubbed; volatile client fingerprints
#: (user-agent, x-stainless-*, rate-limit counters) are left out to keep re-recorded
#: bundles quiet in git.
DEFAULT_ALLOWED_HEADERS: frozenset[str] = frozenset(
    {
        "content-type",
        "accept",
        "openai-beta",
        "openai-version",
        "anthropic-version",
        "anthropic-beta",
        "x-request-id",
        "request-id",
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
    }
)

#: Headers never recorded, whatever the allowlist says.
DENIED_HEADERS: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "set-cookie2",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "x-amz-credential",
        "x-amz-signature",
        "x-goog-iam-authorization-token",
        "x-auth-token",
        "x-access-token",
        "x-security-token",
        "x-csrf-token",
        "x-xsrf-token",
        "openai-organization",
        "openai-project",
    }
)
_DENIED_HEADER_SHAPE = re.compile(
    r"(?:^|-)(?:api-?key|key|token|secret|password|passwd|cookie|session|signature|"
    r"credentials?|auth|authorization)(?:$|-)"
)

#: Query (and fragment) parameters whose values are redacted in recorded URLs.
SECRET_QUERY_PARAMS: frozenset[str] = frozenset(
    {
        "key",
        "api_key",
        "apikey",
        "api-key",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "auth",
        "authorization",
        "sig",
        "signature",
        "secret",
        "client_secret",
        "password",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
    }
)


def is_denied_header(name: str) -> bool:
    """Whether header ``name`` carries a credential and must never be recorded."""
    lowered = name.lower()
    return lowered in DENIED_HEADERS or _DENIED_HEADER_SHAPE.search(lowered) is not None


# --- the registry --------------------------------------------------------------------

_registry_lock = threading.Lock()
_registered: list[SecretRule] = []
_default: Scrubber | None = None


def register_rule(rule: SecretRule) -> SecretRule:
    """Add ``rule`` to the rules of every :class:`Scrubber` made afterwards with defaults.

    For production recorders configured in code; a pytest suite returns its rules from
    the ``pytest_llmwb_secret_rules`` hook instead. Returns the rule.
    """
    global _default
    if not isinstance(rule, SecretRule):
        raise ConfigError(
            f"register_rule() takes a SecretRule, got {type(rule).__name__}",
            fix='register_rule(SecretRule("acme-token", r"acme_[A-Za-z0-9]{32}"))',
        )
    with _registry_lock:
        if all(r.name != rule.name for r in _registered):
            _registered.append(rule)
        _default = None
    return rule


def registered_rules() -> tuple[SecretRule, ...]:
    """The rules added with :func:`register_rule`."""
    return tuple(_registered)


def unregister_rule(name: str) -> None:
    """Forget the rule registered as ``name`` (scrubbers made before keep it)."""
    global _default
    with _registry_lock:
        _registered[:] = [r for r in _registered if r.name != name]
        _default = None


def _unregister_all() -> None:
    """Forget the registered rules (for tests)."""
    global _default
    with _registry_lock:
        _registered.clear()
        _default = None


def default_scrubber() -> Scrubber:
    """The scrubber of runs made without one: built-in and registered rules, not strict."""
    global _default
    scrubber = _default
    if scrubber is None:
        scrubber = _default = Scrubber()
    return scrubber


def active_scrubber() -> Scrubber:
    """The scrubber of the current run, else :func:`default_scrubber`."""
    from .recording import current_run

    run = current_run()
    scrubber = getattr(run, "scrubber", None)
    return scrubber if isinstance(scrubber, Scrubber) else default_scrubber()


def scrub_headers(
    headers: Mapping[str, str], *, allow: Iterable[str] | None = None
) -> dict[str, str]:
    """The headers to record (names lower-cased), by allowlist, with values scrubbed.

    ``allow`` replaces :data:`DEFAULT_ALLOWED_HEADERS` (extend it with
    ``DEFAULT_ALLOWED_HEADERS | {"x-my-header"}``); names in :data:`DENIED_HEADERS` or
    shaped like a credential are dropped even when allowed. Uses the current run's
    scrubber.
    """
    __tracebackhide__ = True
    return active_scrubber().scrub_headers(headers, allow=allow)


def scrub_url(url: str) -> str:
    """``url`` with the values of secret query parameters redacted, order kept."""
    __tracebackhide__ = True
    return active_scrubber().scrub_url(url)


def scrub_value(value: JSON, *, where: str) -> JSON:
    """``value`` with every secret replaced by its placeholder (the current run's rules).

    ``where`` names what is scrubbed, for strict-mode errors (e.g. ``"response body of
    POST https://api.openai.com/v1/chat/completions"``).
    """
    __tracebackhide__ = True
    return active_scrubber().scrub_value(value, where=where)


# --- the scrubber --------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    rule: SecretRule
    start: int
    end: int


class Scrubber:
    """Finds secrets and replaces them with stable placeholders (or raises, if strict).

    ``rules`` default to :data:`BUILTIN_RULES` plus :func:`registered_rules`;
    ``extra_rules`` are added to them. ``strict`` raises
    :class:`~pytest_llmwb.exceptions.SecretFoundError` instead of replacing. ``salt``
    keys the placeholder tags (default: ``LLMWB_SECRET_SALT``, else a public salt).
    ``allow_headers`` replaces the default header allowlist. A scrubber is immutable
    and safe to share between threads.
    """

    def __init__(
        self,
        rules: Iterable[SecretRule] | None = None,
        *,
        extra_rules: Iterable[SecretRule] = (),
        strict: bool = False,
        salt: str | bytes | None = None,
        allow_headers: Iterable[str] | None = None,
    ) -> None:
        base = list(rules) if rules is not None else [*BUILTIN_RULES, *registered_rules()]
        chosen: dict[str, SecretRule] = {}
        for rule in [*base, *extra_rules]:
            if not isinstance(rule, SecretRule):
                raise ConfigError(
                    f"secret rules must be SecretRule objects, got {type(rule).__name__}",
                    fix='return [SecretRule("name", r"pattern")] from pytest_llmwb_secret_rules',
                )
            chosen[rule.name] = rule  # a later rule of the same name replaces the earlier
        self.rules: tuple[SecretRule, ...] = tuple(chosen.values())
        self.strict = bool(strict)
        if salt is None:
            salt = os.environ.get(SALT_ENV) or _PUBLIC_SALT
        self._salt = salt.encode() if isinstance(salt, str) else bytes(salt)
        self.allow_headers = frozenset(
            h.lower() for h in (DEFAULT_ALLOWED_HEADERS if allow_headers is None else allow_headers)
        )
        self._allowlists: dict[frozenset[str], tuple[frozenset[str], list[str]]] = {}
        self._patterns = [r for r in self.rules if r.regex is not None]
        self._keyed = [r for r in self.rules if r.keys]
        self._anchorless = any(r.anchors is None for r in self._patterns)
        self._anchors = tuple(sorted({a for r in self._patterns for a in r.anchors or ()}))
        # per anchor (by index): the rules it may start a match of
        self._rules_by_anchor = [
            frozenset(
                order for order, rule in enumerate(self._patterns) if a in (rule.anchors or ())
            )
            for a in self._anchors
        ]
        lowered = {a.lower().encode() for a in self._anchors}
        # a superset test for bytes: lower-cased, and only the anchors that contain no
        # other anchor (if "ECRET_ACCESS_KEY" occurs, so does "ecret")
        self._prefilter = tuple(
            sorted(a for a in lowered if not any(b != a and b in a for b in lowered))
        )
        names = {k.lower().encode() for r in self._keyed for k in r.keys}
        names |= {n.replace(b"_", b"-") for n in names}
        self._key_names = tuple(
            sorted(n for n in names if not any(m != n and m in n for m in names))
        )
        # Python's re has no multi-pattern engine: an alternation of the anchors is
        # tried at every position (~300 ns a character), and a substring search per
        # anchor costs ~40 scans. One Aho-Corasick automaton finds them all in one scan.
        self._anchor_finder = (
            ahocorasick_rs.AhoCorasick(list(self._anchors)) if self._anchors else None
        )
        self._byte_finder = (
            ahocorasick_rs.BytesAhoCorasick([*self._prefilter, *self._key_names])
            if self._prefilter or self._key_names
            else None
        )
        # the end of a secret field's key, as orjson writes it: 'password":'
        self._key_probe = (
            re.compile(
                rb"(?i:"
                + b"|".join(
                    re.escape(k).replace("_", "[-_]").encode() for r in self._keyed for k in r.keys
                )
                + rb')":'
            )
            if self._keyed
            else None
        )

    def __repr__(self) -> str:
        names = ", ".join(r.name for r in self.rules)
        return f"Scrubber(strict={self.strict}, rules=[{names}])"

    # -- text ---------------------------------------------------------------------------

    def _hits(self, text: str) -> list[_Hit]:
        # only the rules whose anchors occur run their regex
        finder = self._anchor_finder
        try:
            found_anchors = (
                finder.find_matches_as_indexes(text, overlapping=True) if finder is not None else []
            )
        except UnicodeEncodeError:  # a lone surrogate (a file name from os.listdir)
            found_anchors = [(i, 0, 0) for i, a in enumerate(self._anchors) if a in text]
        if not found_anchors and not self._anchorless:
            return []
        chosen = set().union(*(self._rules_by_anchor[i] for i, _, _ in found_anchors))
        candidates = [
            (order, rule)
            for order, rule in enumerate(self._patterns)
            if rule.anchors is None or order in chosen
        ]
        if not candidates:
            return []
        found: list[tuple[int, int, SecretRule, int]] = []
        for order, rule in candidates:
            assert rule.regex is not None
            for match in rule.regex.finditer(text):
                start, end = match.span(rule.group)
                if start != -1 and start != end:
                    found.append((start, order, rule, end))
        if not found:
            return []
        found.sort(key=lambda item: (item[0], item[1]))
        hits: list[_Hit] = []
        last = 0
        for start, _, rule, end in found:
            if start >= last and not _PLACEHOLDER.fullmatch(text, start, end):
                hits.append(_Hit(rule, start, end))
                last = end
        return hits

    def scrub_text(self, text: str, *, where: str = "a string", pointer: str = "") -> str:
        """``text`` with each secret replaced by its placeholder."""
        __tracebackhide__ = True
        hits = self._hits(text)
        if not hits:
            return text
        if self.strict:
            self._raise(hits[0].rule, text[hits[0].start : hits[0].end], where, pointer)
        parts: list[str] = []
        last = 0
        for hit in hits:
            parts.append(text[last : hit.start])
            parts.append(hit.rule.placeholder(text[hit.start : hit.end], self._salt))
            last = hit.end
        parts.append(text[last:])
        return "".join(parts)

    def _raise(self, rule: SecretRule, secret: str, where: str, pointer: str) -> None:
        __tracebackhide__ = True
        at = f" at {pointer}" if pointer else ""
        raise SecretFoundError(
            f"a secret matching rule {rule.name!r} was found in {where}{at} "
            f"(strict secret scrubbing; it would be recorded as "
            f"{rule.placeholder(secret, self._salt)})",
            where=where,
            field=pointer,
            rule=rule.name,
            fix="keep the secret out of what the run records (headers are dropped, "
            "environment variables are never recorded), or drop --llmwb-strict-secrets / "
            "llmwb_strict_secrets to record it as its placeholder",
        )

    # -- JSON ---------------------------------------------------------------------------

    def _byte_hits(self, data: bytes) -> tuple[bool, bool]:
        """Whether lower-cased ``data`` holds an anchor, and whether a credential name."""
        finder = self._byte_finder
        if finder is None:
            return False, False
        anchors = len(self._prefilter)
        found = finder.find_matches_as_indexes(data.lower(), overlapping=True)
        return any(i < anchors for i, _, _ in found), any(i >= anchors for i, _, _ in found)

    def could_hold_secret(self, value: JSON) -> bool:
        """A fast, conservative check: ``False`` means ``value`` certainly holds none."""
        if self._anchorless:
            return True
        try:
            data = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            return True
        anchor, name = self._byte_hits(data)
        if anchor:
            return True
        # the probe is a case-insensitive alternation (slow); run it only when one of the
        # credential field names occurs at all
        return name and self._key_probe is not None and self._key_probe.search(data) is not None

    def scrub_value(self, value: JSON, *, where: str) -> JSON:
        """``value`` with every secret replaced; the same object when nothing was found.

        Strings are scanned with the pattern rules; string values of fields named like
        credentials (``password``, ``api_key``, ...) are replaced whole; object keys
        are scanned too.
        """
        __tracebackhide__ = True
        if not self.could_hold_secret(value):
            return value
        return self._walk(value, "", where)

    def _walk(self, value: JSON, pointer: str, where: str) -> JSON:
        __tracebackhide__ = True
        if isinstance(value, str):
            return self.scrub_text(value, where=where, pointer=pointer)
        if isinstance(value, dict):
            changed = False
            out: dict[Any, Any] = {}
            for key, item in value.items():
                sub = f"{pointer}/{_escape(str(key))}"
                new_key = self._walk(key, sub, where) if isinstance(key, str) else key
                field_rule = self._key_rule(key) if isinstance(key, str) else None
                if field_rule is not None and isinstance(item, str) and item:
                    new_item = self._field(field_rule, item, sub, where)
                else:
                    new_item = self._walk(item, sub, where)
                changed = changed or new_key is not key or new_item is not item
                out[new_key] = new_item
            return out if changed else value
        if isinstance(value, (list, tuple)):
            items = [self._walk(item, f"{pointer}/{i}", where) for i, item in enumerate(value)]
            if any(new is not old for new, old in zip(items, value, strict=True)):
                return items if isinstance(value, list) else tuple(items)
            return value
        return value

    def _key_rule(self, key: str) -> SecretRule | None:
        if not self._keyed:
            return None
        name = _key(key)
        for rule in self._keyed:
            if name.endswith(tuple(rule.keys)):
                return rule
        return None

    def _field(self, rule: SecretRule, value: str, pointer: str, where: str) -> str:
        __tracebackhide__ = True
        if _PLACEHOLDER.fullmatch(value):
            return value
        if self.strict:
            self._raise(rule, value, where, pointer)
        return rule.placeholder(value, self._salt)

    def find(self, value: JSON) -> list[tuple[str, str]]:
        """``(JSON pointer, rule name)`` of every secret in ``value``; nothing is raised."""
        found: list[tuple[str, str]] = []

        def walk(item: JSON, pointer: str, key: str | None) -> None:
            rule = self._key_rule(key) if key is not None else None
            if isinstance(item, str):
                if rule is not None and item and not _PLACEHOLDER.fullmatch(item):
                    found.append((pointer, rule.name))
                else:
                    found.extend((pointer, hit.rule.name) for hit in self._hits(item))
            elif isinstance(item, dict):
                for k, v in item.items():
                    walk(v, f"{pointer}/{_escape(str(k))}", k if isinstance(k, str) else None)
            elif isinstance(item, (list, tuple)):
                for i, v in enumerate(item):
                    walk(v, f"{pointer}/{i}", None)

        walk(value, "", None)
        return found

    # -- bytes --------------------------------------------------------------------------

    def scrub_bytes(self, data: bytes, *, where: str) -> bytes:
        """``data`` with each secret replaced; the same object when nothing was found.

        Any bytes round-trip: the text is read as Latin-1, so bytes outside a secret
        are kept exactly. Field-name rules do not apply (there is no structure).
        """
        __tracebackhide__ = True
        if not self._anchorless and not self._byte_hits(data)[0]:
            return data
        text = data.decode("latin-1")
        scrubbed = self._scrub_latin1(text, where)
        return data if scrubbed is text else scrubbed.encode("latin-1")

    def _scrub_latin1(self, text: str, where: str) -> str:
        __tracebackhide__ = True
        hits = self._hits(text)
        if not hits:
            return text
        if self.strict:
            hit = hits[0]
            self._raise(hit.rule, text[hit.start : hit.end], where, f"byte offset {hit.start}")
        parts: list[str] = []
        last = 0
        for hit in hits:
            secret = text[hit.start : hit.end].encode("latin-1").decode("utf-8", "replace")
            parts.append(text[last : hit.start])
            parts.append(hit.rule.placeholder(secret, self._salt))
            last = hit.end
        parts.append(text[last:])
        return "".join(parts)

    # -- text a caller assembles from pieces -----------------------------------------------

    def scrub_pieces(self, pieces: Sequence[str], *, where: str, pointer: str = "") -> list[str]:
        """``pieces`` scrubbed as the text they make together, still one piece each.

        A secret split across pieces (a streamed reply's deltas) is found in the joined
        text; its placeholder goes where the secret starts, and the pieces that held the
        rest of it lose those characters (some become empty). Joining the result gives
        exactly ``scrub_text("".join(pieces))``.
        """
        __tracebackhide__ = True
        text = "".join(pieces)
        hits = self._hits(text)
        if not hits:
            return list(pieces)
        if self.strict:
            self._raise(hits[0].rule, text[hits[0].start : hits[0].end], where, pointer)
        out: list[str] = []
        h = 0
        start = 0
        for piece in pieces:
            end = start + len(piece)
            parts: list[str] = []
            at = start
            while at < end:
                while h < len(hits) and hits[h].end <= at:
                    h += 1
                if h < len(hits) and hits[h].start < end:
                    hit = hits[h]
                    if hit.start > at:
                        parts.append(text[at : hit.start])
                        at = hit.start
                    if at == hit.start:
                        parts.append(hit.rule.placeholder(text[hit.start : hit.end], self._salt))
                    at = min(hit.end, end)
                else:
                    parts.append(text[at:end])
                    at = end
            out.append("".join(parts))
            start = end
        return out

    def scrub_event_stream(self, data: bytes, *, where: str) -> bytes:
        """A server-sent event stream with secrets split across its events scrubbed.

        Providers stream text and tool-call arguments as deltas, so a secret arrives in
        pieces no single event holds whole. Events whose data is JSON are read; the
        strings found at the same place in successive events (same event type, same
        JSON path, same ``index`` / ``output_index`` / ``content_index`` / ``item_id``)
        are one channel, scrubbed as the text they join into (:meth:`scrub_pieces`).
        Only the events that change are written again (their data as one compact JSON
        line); every other byte is kept. Secrets whole inside one event are left to
        :meth:`scrub_bytes`; returns ``data`` itself when nothing changed.
        """
        __tracebackhide__ = True
        from .adapters.sse import SSEParser

        parser = SSEParser()
        events = parser.feed(data)
        events += parser.close()
        if len(events) < 2:
            return data
        docs: dict[int, Any] = {}
        channels: dict[tuple[Any, ...], list[tuple[int, tuple[Any, ...], str]]] = {}
        for i, event in enumerate(events):
            if not event.data.startswith(("{", "[")):
                continue
            try:
                doc = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            docs[i] = doc
            context: tuple[Any, ...] = ()
            if isinstance(doc, dict):
                context = tuple(
                    str(doc.get(k)) for k in ("index", "output_index", "content_index", "item_id")
                )
            for path, label, text in _strings(doc):
                channels.setdefault((event.event, context, label), []).append((i, path, text))
        changed: set[int] = set()
        for (_, _, label), found in channels.items():
            texts = [text for _, _, text in found]
            if len(texts) < 2 or all(t == texts[0] for t in texts):
                continue  # an id or a type repeated in every event: no text to assemble
            pointer = "/" + "/".join(_escape(str(p)) for p in label)
            clean = self.scrub_pieces(texts, where=where, pointer=f"{pointer} (streamed)")
            for (i, path, text), new in zip(found, clean, strict=True):
                if new != text:
                    docs[i] = _replaced(docs[i], path, new)
                    changed.add(i)
        if not changed:
            return data
        out = bytearray()
        last = 0
        for i, event in enumerate(events):
            if i not in changed:
                continue
            out += data[last : event.start]
            out += _with_data(data[event.start : event.end], orjson.dumps(docs[i]))
            last = event.end
        out += data[last:]
        return bytes(out)

    # -- headers and URLs -----------------------------------------------------------------

    def scrub_headers(
        self, headers: Mapping[str, str], *, allow: Iterable[str] | None = None
    ) -> dict[str, str]:
        """The headers to record: allowlisted, never a credential, values scrubbed."""
        allowed, patterns = self._allowlist(allow)
        kept: dict[str, str] = {}
        for name, value in headers.items():
            lowered = name.lower()
            if is_denied_header(lowered):
                continue
            if lowered not in allowed and not any(
                fnmatch.fnmatchcase(lowered, p) for p in patterns
            ):
                continue
            kept[lowered] = self.scrub_text(str(value), where=f"header {lowered!r}")
        return kept

    def _allowlist(self, allow: Iterable[str] | None) -> tuple[frozenset[str], list[str]]:
        """A header allowlist, lower-cased, and its ``*`` patterns (kept per allowlist)."""
        key = self.allow_headers if allow is None else allow
        found = self._allowlists.get(key) if isinstance(key, frozenset) else None
        if found is None:
            allowed = frozenset(h.lower() for h in key)
            found = (allowed, [h for h in allowed if "*" in h])
            if isinstance(key, frozenset) and len(self._allowlists) < 64:
                self._allowlists[key] = found
        return found

    def scrub_url(self, url: str) -> str:
        """``url`` with secret query/fragment values and any password redacted."""
        __tracebackhide__ = True
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            if ":" in userinfo:
                netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"
        query = _redact_params(parts.query)
        fragment = _redact_params(parts.fragment) if "=" in parts.fragment else parts.fragment
        if (netloc, query, fragment) != (parts.netloc, parts.query, parts.fragment):
            url = urlunsplit((parts.scheme, netloc, parts.path, query, fragment))
        return self.scrub_text(url, where="a URL")

    # -- a DAG snapshot -------------------------------------------------------------------

    def scrub_dag(self, dag: DagSnapshot, *, where: str = "the DAG") -> DagSnapshot:
        """``dag`` with secrets scrubbed from node configs (digests recomputed)."""
        __tracebackhide__ = True
        from .dag import _node, _snapshot

        nodes = []
        changed = False
        for node in dag.nodes:
            config = dict(node.config)
            clean = self.scrub_value(config, where=f"{where}, node {node.id!r} config")
            if clean is config:
                nodes.append(node)
            else:
                changed = True
                nodes.append(_node(node.id, node.kind, clean))
        if not changed:
            return dag
        return _snapshot(dag.name, dag.declared, nodes, list(dag.edges))

    # -- the last line of defence, as a bundle is written ---------------------------------

    def guard_bundle(
        self,
        records: list[dict[str, Any]],
        dag: DagSnapshot,
        blobs: dict[str, bytes],
        *,
        rekey: Callable[[bytes], str],
    ) -> tuple[list[dict[str, Any]], DagSnapshot, dict[str, bytes]]:
        """Check (strict) or scrub what a bundle is about to hold: facts, DAG and blobs.

        Upstream scrubbing normally leaves nothing to do; this catches facts appended
        without it. A scrubbed blob gets a new digest (``rekey``) and the facts that
        name it as their ``exchange`` follow.
        """
        __tracebackhide__ = True
        renamed: dict[str, str] = {}
        kept: dict[str, bytes] = {}
        for ref, data in blobs.items():
            clean = self.scrub_bytes(data, where=f"blobs/{ref.removeprefix('sha256:')}")
            if clean is data:
                kept[ref] = data
            else:
                new_ref = rekey(clean)
                renamed[ref] = new_ref
                kept[new_ref] = clean
        out: list[dict[str, Any]] = []
        for line, record in enumerate(records, 1):
            if renamed and record.get("exchange") in renamed:
                record = {**record, "exchange": renamed[record["exchange"]]}
            out.append(self.scrub_value(record, where=f"facts.jsonl line {line}"))
        return out, self.scrub_dag(dag, where="dag.json"), kept


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _strings(value: Any) -> list[tuple[tuple[Any, ...], tuple[Any, ...], str]]:
    """Every string in ``value``: its path, its label (list items by ``index``), itself."""
    found: list[tuple[tuple[Any, ...], tuple[Any, ...], str]] = []
    # iterative: this runs for every event of every recorded stream
    stack: list[tuple[Any, tuple[Any, ...], tuple[Any, ...]]] = [(value, (), ())]
    while stack:
        item, path, label = stack.pop()
        if isinstance(item, str):
            found.append((path, label, item))
        elif isinstance(item, dict):
            for key, sub in item.items():
                if isinstance(sub, str):
                    found.append(((*path, key), (*label, key), sub))
                elif isinstance(sub, (dict, list)):
                    stack.append((sub, (*path, key), (*label, key)))
        elif isinstance(item, list):
            for position, sub in enumerate(item):
                # OpenAI puts choices and tool calls in lists whose items say their
                # index; the position in one chunk's list says nothing
                index = sub.get("index") if isinstance(sub, dict) else None
                name = f"index={index}" if isinstance(index, int) else position
                stack.append((sub, (*path, position), (*label, name)))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: str) -> Any:
    """``value`` with the string at ``path`` replaced by ``new`` (in place for containers)."""
    if not path:
        return new
    value[path[0]] = _replaced(value[path[0]], path[1:], new)
    return value


_SSE_EOL = re.compile(rb"\r\n?|\n")


def _with_data(block: bytes, data: bytes) -> bytes:
    """An event's bytes with its data lines replaced by one ``data:`` line holding ``data``."""
    eol_match = _SSE_EOL.search(block)
    eol = eol_match.group() if eol_match else b"\n"
    lines = _SSE_EOL.split(block)
    kept: list[bytes] = []
    placed = False
    for line in lines:
        if not line:
            continue
        if line == b"data" or line.startswith(b"data:"):
            if not placed:
                kept.append(b"data: " + data)
                placed = True
            continue
        kept.append(line)
    return eol.join(kept) + eol + eol


def _redact_params(query: str) -> str:
    if not query:
        return query
    pieces = []
    for piece in query.split("&"):
        name, sep, value = piece.partition("=")
        if sep and value and unquote_plus(name).lower() in SECRET_QUERY_PARAMS:
            pieces.append(f"{name}={REDACTED}")
        else:
            pieces.append(piece)
    return "&".join(pieces)
