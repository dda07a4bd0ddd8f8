"""Seal, verify, prove and redact bundles.

A seal is three files in ``<bundle>/seal/``:

``envelope.json``
    a DSSE envelope (signed once, Ed25519) around an in-toto Statement v1 whose
    subjects are the Merkle root over the bundle's facts and blobs, ``dag.json`` and
    ``volatile.json``; its predicate repeats the manifest (all but the digests of
    ``facts.jsonl``, which redaction changes: the Merkle root covers the facts),
    the fact count and the blob list.
``salts.jsonl``
    one line per fact: a fresh 128-bit salt for each of its fields.
``redactions.json``
    only in a redacted bundle: the fields and blobs withheld.

Each field of a fact (everything but ``seq``, ``kind`` and ``node``) is committed to
as ``sha256`` of the disclosure ``[JCS(salt),JCS(name),VALUE]`` (an SD-JWT disclosure),
where VALUE is the value's stored bytes, exactly as in ``facts.jsonl``: key order and
number spelling (``20`` or ``20.0``) are part of what replay serves, so they are part
of what is signed (JCS would normalize both away). A fact's leaf is
``JCS({"seq", "kind", "node", "fields": {name: commitment}})``. Long strings are stored
as blob references, so verification hashes large payloads once, as stored bytes; a
blob's leaf is its ``sha256:`` name. Redaction
replaces a value by ``{"$redacted": commitment}`` and drops its salt: the leaf, the
root and the signature stay valid, and the value can later be disclosed on its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..codec import canonical_json, digest_bytes, dumps_pretty
from ..exceptions import (
    ProofError,
    RedactionError,
    SealError,
    SealVerificationError,
)
from ..store import REDACTED_KEY
from .keys import (
    TRUST_FIX,
    SigningKey,
    TrustStore,
    load_signing_key,
    open_envelope,
    sign_envelope,
)
from .merkle import inclusion_path, leaf_hash, root_from_path, tree_root

__all__ = [
    "PREDICATE_TYPE",
    "REDACTED_KEY",
    "Verdict",
    "prove_fact",
    "redact_bundle",
    "seal_bundle",
    "verify_bundle",
    "verify_proof",
]

SEAL_DIR = "seal"
ENVELOPE = "envelope.json"
SALTS = "salts.jsonl"
REDACTIONS = "redactions.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: The in-toto predicate type of a sealed bundle.
PREDICATE_TYPE = "https://pytest-llmwb.dev/seal/v1"
PROOF_FORMAT = "llmwb-proof/1"
ROOT_SUBJECT = "facts+blobs (RFC 9162 Merkle root)"
FIXED = ("seq", "kind", "node")
SALT_BYTES = 16  # 128 bits, as SD-JWT asks for

_SEAL_FIX = "seal it again with: llmwb seal BUNDLE --key KEY (after recording it again)"


def _verify_fix(root: Path) -> str:
    """Advice for whoever verifies: sealing again would only hide a change."""
    return (
        "get the original bundle again from its source; if the change is yours and "
        f"intended, record and seal again: llmwb seal {root} --key KEY"
    )


_PROOF_FIX = (
    "get the original proof again from its source; if it is yours, make it again with: "
    "llmwb prove BUNDLE --fact SEQ"
)


def _salt() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(SALT_BYTES)).decode().rstrip("=")


def disclosure(salt: str, name: str, value: Any) -> bytes:
    """The disclosure of one field: the JSON array ``[salt, name, value]``.

    The salt and the name are canonical JSON (RFC 8785); the value is its stored bytes
    (``orjson.dumps`` of the value as parsed from ``facts.jsonl`` gives them back), not
    JCS, which would sort its keys and read its numbers as doubles: ``{"b":1,"a":2}``
    and ``{"a":2,"b":1}``, ``20`` and ``20.0`` replay differently, so they must commit
    differently, and integers above 2**53 must commit at all.
    """
    return (
        b"["
        + canonical_json(salt)
        + b","
        + canonical_json(name)
        + b","
        + orjson.dumps(value)
        + b"]"
    )


def commitment(salt: str, name: str, value: Any) -> str:
    """The commitment to one field: ``sha256:`` of its :func:`disclosure`."""
    return digest_bytes(disclosure(salt, name, value))


def fact_leaf(seq: int, kind: str, node: str, fields: dict[str, str]) -> bytes:
    """The Merkle leaf hash of a fact, from its field commitments."""
    body = {"seq": seq, "kind": kind, "node": node, "fields": fields}
    return leaf_hash(canonical_json(body))


def blob_leaf(ref: str) -> bytes:
    """The Merkle leaf hash of a blob: its ``sha256:<hex>`` name."""
    return leaf_hash(ref.encode())


def _read_file(path: Path, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, through the store's bounded reader.

    A FIFO, a device or a file over ``limit`` (default: the blob limit) is refused with
    :class:`~pytest_llmwb.exceptions.BundleCorruptError` instead of hanging the reader.
    """
    from ..store import MAX_BLOB_BYTES, _read_regular

    return _read_regular(path, MAX_BLOB_BYTES if limit is None else limit)


def _file_digest(path: Path, limit: int | None = None) -> str:
    """``sha256:`` of a regular file of at most ``limit`` bytes (default: the blob limit)."""
    return "sha256:" + hashlib.sha256(_read_file(path, limit)).hexdigest()


def _lines(data: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            yield data[start:]  # no final newline: the caller's format check reports it
            return
        yield data[start:end]
        start = end + 1


def _signing_key(key: SigningKey | str | os.PathLike[str]) -> SigningKey:
    return key if isinstance(key, SigningKey) else load_signing_key(key)


def _sealed_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the seal signs it: without the digests of ``facts.jsonl``.

    Redaction rewrites ``facts.jsonl``, so its plain digests change; the facts are
    covered by the Merkle root instead.
    """
    from ..store import FACTS

    sealed = {k: v for k, v in manifest.items() if k != "facts_digest"}
    if isinstance(sealed.get("files"), dict):
        sealed["files"] = {k: v for k, v in sealed["files"].items() if k != FACTS}
    return sealed


def _set_facts_digest(manifest: dict[str, Any], digest: str) -> None:
    from ..store import FACTS

    manifest["facts_digest"] = digest
    if isinstance(manifest.get("files"), dict):
        manifest["files"][FACTS] = digest


def _read_manifest(root: Path) -> dict[str, Any]:
    from ..store import MANIFEST

    raw = orjson.loads((root / MANIFEST).read_bytes())
    if not isinstance(raw, dict):
        raise SealError(f"{root / MANIFEST} is not a JSON object", fix=_SEAL_FIX)
    return raw


# --- sealing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SealInfo:
    """What :func:`seal_bundle` signed."""

    path: Path
    keyid: str
    root: str
    fact_count: int
    blob_count: int


def seal_bundle(path: str | os.PathLike[str], key: SigningKey | str | os.PathLike[str]) -> SealInfo:
    """Seal the bundle at ``path`` with ``key`` (a private key file or a loaded key).

    The bundle is loaded and checked first; any previous seal is replaced. Fresh
    salts are drawn for every field of every fact. Only ``seal/`` is written.
    """
    from ..store import BLOBS, DAG, FACTS, VOLATILE, load_bundle

    root = Path(path)
    signer = _signing_key(key)
    load_bundle(root)  # a corrupt (or redacted) bundle is reported as such, not sealed
    manifest = _read_manifest(root)
    facts_bytes = _read_file(root / FACTS, sys.maxsize)
    salt_lines: list[bytes] = []
    leaves: list[bytes] = []
    for record in _lines(facts_bytes):
        raw = orjson.loads(record)
        salts = {name: _salt() for name in raw if name not in FIXED}
        for name in salts:
            if _is_redacted(raw[name]):
                # it would read as withheld: the seal could never verify nor prove it
                raise SealError(
                    f"fact {raw['seq']} ({raw['kind']}): field {name!r} holds a value of the "
                    f'form {{"{REDACTED_KEY}": "..."}}, which a seal reserves for withheld '
                    "values; it cannot be sealed",
                    fix=f"record {name!r} of fact {raw['seq']} in another form (another key "
                    f"than {REDACTED_KEY!r}), then: llmwb seal {root} --key KEY",
                )
        fields = {name: commitment(salts[name], name, raw[name]) for name in salts}
        leaves.append(fact_leaf(raw["seq"], raw["kind"], raw["node"], fields))
        salt_lines.append(orjson.dumps(salts, option=orjson.OPT_SORT_KEYS) + b"\n")
    blobs = sorted(manifest.get("blobs", []))
    for ref in blobs:
        if _file_digest(root / BLOBS / ref.removeprefix("sha256:")) != ref:
            raise SealError(f"blob {ref} does not match its name", fix=_SEAL_FIX)
    leaves.extend(blob_leaf(ref) for ref in blobs)
    merkle_root = tree_root(leaves).hex()
    subjects = [
        {"name": ROOT_SUBJECT, "digest": {"sha256": merkle_root}},
        {"name": DAG, "digest": {"sha256": _file_digest(root / DAG).removeprefix("sha256:")}},
    ]
    if (root / VOLATILE).is_file():
        volatile = _file_digest(root / VOLATILE).removeprefix("sha256:")
        subjects.append({"name": VOLATILE, "digest": {"sha256": volatile}})
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "tree_size": len(leaves),
            "fact_count": len(salt_lines),
            "blobs": blobs,
            "manifest": _sealed_manifest(manifest),
        },
    }
    envelope = sign_envelope(canonical_json(statement), signer)
    seal_dir = root / SEAL_DIR
    staged = root / f".{SEAL_DIR}.llmwb-tmp-{uuid.uuid4().hex[:8]}"
    try:
        staged.mkdir()
        from ..store import _replace_dir, _write_file

        _write_file(staged / SALTS, b"".join(salt_lines))
        _write_file(staged / ENVELOPE, dumps_pretty(envelope))
        _replace_dir(staged, seal_dir)
    except OSError as exc:
        raise SealError(
            f"cannot write the seal of {root}: {exc.strerror or exc}",
            fix="make the bundle directory writable",
        ) from None
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return SealInfo(root, signer.keyid, merkle_root, len(salt_lines), len(blobs))


# --- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A sealed bundle that verified: who signed it, what it covers, what was withheld."""

    path: Path
    name: str
    keyid: str
    key_source: str
    root: str
    fact_count: int
    blob_count: int
    withheld_fields: list[str] = field(default_factory=list)
    withheld_blobs: list[str] = field(default_factory=list)

    @property
    def redacted(self) -> bool:
        """Whether anything was withheld."""
        return bool(self.withheld_fields or self.withheld_blobs)

    def describe(self) -> str:
        """``VALID ...`` or ``VALID (redacted: ...)``, as ``llmwb verify`` prints it."""
        head = "VALID"
        if self.redacted:
            withheld = [*self.withheld_fields, *(f"blob {r}" for r in self.withheld_blobs)]
            head += f" (redacted: {', '.join(withheld)})"
        return (
            f"{head}\n  run {self.name}: {self.fact_count} facts, {self.blob_count} blobs, "
            f"root sha256:{self.root[:16]}\n  signed by key {self.keyid[:12]} ({self.key_source})"
        )


def _invalid(message: str, where: Path | str, line: int | None = None) -> SealVerificationError:
    # the fix is set by verify_bundle / verify_proof, which know what was verified
    at = f"{where}:{line}" if line is not None else str(where)
    return SealVerificationError(message, where=at)


def _read_checked(path: Path, limit: int = sys.maxsize) -> bytes:
    """The bytes of ``path`` for verification, or INVALID naming the file.

    Anything but a readable regular file of at most ``limit`` bytes (a FIFO, a device,
    a directory) is INVALID, never a hang.
    """
    from ..exceptions import BundleCorruptError

    try:
        return _read_file(path, limit)
    except BundleCorruptError as exc:
        raise _invalid(exc.message, path) from None


def _read_strict(path: Path, render: Any) -> Any:
    """Parse ``path`` and require it to be exactly as the sealer wrote it."""
    from ..store import MAX_MANIFEST_BYTES

    data = _read_checked(path, MAX_MANIFEST_BYTES)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"{path.name} is not valid JSON ({exc.msg})", path, exc.lineno) from None
    if render(value) != data:
        raise _invalid(f"{path.name} was changed: it is not in the form the sealer wrote", path)
    return value


def _pretty(value: Any) -> bytes:
    return dumps_pretty(value)


def _statement(payload: bytes, where: Path) -> dict[str, Any]:
    try:
        statement = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise _invalid("the signed payload is not JSON", where) from None
    ok = (
        isinstance(statement, dict)
        and statement.get("_type") == STATEMENT_TYPE
        and statement.get("predicateType") == PREDICATE_TYPE
        and isinstance(statement.get("subject"), list)
        and isinstance(statement.get("predicate"), dict)
    )
    predicate = statement.get("predicate") if ok else None
    if not (
        isinstance(predicate, dict)
        and isinstance(predicate.get("tree_size"), int)
        and isinstance(predicate.get("fact_count"), int)
        and isinstance(predicate.get("blobs"), list)
        and isinstance(predicate.get("manifest"), dict)
    ):
        raise _invalid(
            f"the signed statement is not an in-toto Statement v1 of type {PREDICATE_TYPE}", where
        )
    return dict(statement)


def _subjects(statement: dict[str, Any], where: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for subject in statement["subject"]:
        digest = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
            raise _invalid("a subject of the signed statement has no sha256 digest", where)
        out[str(subject.get("name"))] = digest["sha256"]
    if ROOT_SUBJECT not in out:
        raise _invalid("the signed statement has no Merkle root subject", where)
    return out


def _redactions(root: Path) -> tuple[set[tuple[int, str]], set[str]]:
    path = root / SEAL_DIR / REDACTIONS
    if not os.path.lexists(path):
        return set(), set()
    raw = _read_strict(path, _pretty)
    fields = raw.get("fields") if isinstance(raw, dict) else None
    blobs = raw.get("blobs") if isinstance(raw, dict) else None
    if (
        not isinstance(fields, list)
        or not isinstance(blobs, list)
        or set(raw) != {"fields", "blobs"}
        or not all(isinstance(f, str) and "/" in f for f in fields)
        or not all(isinstance(b, str) for b in blobs)
    ):
        raise _invalid("redactions.json is not {fields: [SEQ/FIELD...], blobs: [...]}", path)
    out: set[tuple[int, str]] = set()
    for entry in fields:
        seq, _, name = entry.partition("/")
        if not (seq.isascii() and seq.isdigit()):
            raise _invalid(f"redactions.json names {entry!r}, not SEQ/FIELD", path)
        out.add((int(seq), name))
    return out, set(blobs)


def verify_bundle(path: str | os.PathLike[str], trust: TrustStore) -> Verdict:
    """Verify the sealed bundle at ``path`` against the keys of ``trust``.

    Checks, in order: the envelope's signature by a trusted key; the manifest against
    the signed copy; ``dag.json`` and ``volatile.json`` against their signed digests;
    every fact's commitments and leaf; every blob against its name; the Merkle root.
    Raises :class:`SealVerificationError` at the first check that fails (the verdict
    INVALID), :class:`SealError` when the bundle is not sealed.
    """
    root = Path(path)
    try:
        return _verify_bundle(root, trust)
    except SealVerificationError as exc:
        if exc.fix != TRUST_FIX:
            exc.fix = _verify_fix(root)
        raise


def _verify_bundle(root: Path, trust: TrustStore) -> Verdict:
    from ..store import BLOBS, DAG, FACTS, MANIFEST, MAX_DAG_BYTES, MAX_VOLATILE_BYTES, VOLATILE

    envelope_path = root / SEAL_DIR / ENVELOPE
    if not (root / MANIFEST).is_file():
        raise SealError(f"no bundle at {root}", fix="pass the path of a bundle directory")
    if not envelope_path.is_file():
        raise SealError(
            f"bundle {root} is not sealed (no {SEAL_DIR}/{ENVELOPE})",
            fix=f"seal it with: llmwb seal {root} --key KEY",
        )
    envelope = _read_strict(envelope_path, _pretty)
    payload, key = open_envelope(envelope, trust, where=str(envelope_path))
    statement = _statement(payload, envelope_path)
    subjects = _subjects(statement, envelope_path)
    predicate = statement["predicate"]

    manifest_path = root / MANIFEST
    manifest = _read_strict(manifest_path, _pretty)
    if not isinstance(manifest, dict):
        raise _invalid("manifest.json is not a JSON object", manifest_path)
    signed_manifest = predicate["manifest"]
    unsigned = _sealed_manifest(manifest)
    for name in sorted(set(unsigned) | set(signed_manifest)):
        if unsigned.get(name) != signed_manifest.get(name):
            raise _invalid(
                f"manifest.json: {name!r} differs from the sealed manifest", manifest_path
            )
    facts_path = root / FACTS
    facts_bytes = _read_checked(facts_path)
    facts_digest = digest_bytes(facts_bytes)
    files = manifest.get("files")
    if manifest.get("facts_digest") != facts_digest or (
        isinstance(files, dict) and files.get(FACTS) != facts_digest
    ):
        raise _invalid("facts.jsonl does not match the manifest's digests of it", facts_path)
    limits = {DAG: MAX_DAG_BYTES, VOLATILE: MAX_VOLATILE_BYTES}
    for name in (DAG, VOLATILE):
        if name in subjects:
            file = root / name
            digest = hashlib.sha256(_read_checked(file, limits[name])).hexdigest()
            if digest != subjects[name]:
                raise _invalid(f"{name} does not match its signed digest", file)
        elif name == DAG:
            raise _invalid("the signed statement has no dag.json subject", envelope_path)

    withheld_fields, withheld_blobs = _redactions(root)
    salts_path = root / SEAL_DIR / SALTS
    salts_bytes = _read_checked(salts_path)
    if facts_bytes and not facts_bytes.endswith(b"\n"):
        raise _invalid("facts.jsonl is truncated (no final newline)", facts_path)
    if salts_bytes and not salts_bytes.endswith(b"\n"):
        raise _invalid("salts.jsonl is truncated (no final newline)", salts_path)
    salt_records = list(_lines(salts_bytes))
    leaves: list[bytes] = []
    seen_redacted: set[tuple[int, str]] = set()
    for line, record in enumerate(_lines(facts_bytes), start=1):
        leaves.append(
            _fact_leaf(
                record, line, salt_records, facts_path, salts_path, withheld_fields, seen_redacted
            )
        )
    count = len(leaves)
    if count != predicate["fact_count"] or len(salt_records) != count:
        raise _invalid(
            f"{count} facts and {len(salt_records)} salt lines; the seal covers "
            f"{predicate['fact_count']} facts (facts removed or added)",
            facts_path,
        )
    if seen_redacted != withheld_fields:
        missing = sorted(withheld_fields - seen_redacted)
        raise _invalid(
            f"redactions.json lists {missing[0][0]}/{missing[0][1]}, which is not withheld",
            root / SEAL_DIR / REDACTIONS,
        )

    blobs_dir = root / BLOBS
    signed_blobs: list[str] = predicate["blobs"]
    expected = set(signed_blobs)
    present = {f"sha256:{p.name}" for p in blobs_dir.iterdir()} if blobs_dir.is_dir() else set()
    for ref in sorted(present - expected):
        raise _invalid(
            f"blob {ref} is not covered by the seal", blobs_dir / ref.removeprefix("sha256:")
        )
    for ref in sorted(withheld_blobs - expected):
        raise _invalid(
            f"redactions.json withholds blob {ref}, which the seal does not cover",
            root / SEAL_DIR / REDACTIONS,
        )
    withheld: list[str] = []
    for ref in signed_blobs:
        file = blobs_dir / ref.removeprefix("sha256:")
        if ref not in present:
            if ref not in withheld_blobs:
                raise _invalid(f"blob {ref} is missing (and not listed as withheld)", file)
            withheld.append(ref)
        elif _readable_digest(file) != ref:
            raise _invalid(f"blob {ref} does not match its name (modified on disk)", file)
        elif ref in withheld_blobs:
            raise _invalid(f"blob {ref} is listed as withheld but present", file)
        leaves.append(blob_leaf(ref))
    if len(leaves) != predicate["tree_size"]:
        raise _invalid(
            f"{len(leaves)} leaves; the seal covers {predicate['tree_size']}", envelope_path
        )
    merkle_root = tree_root(leaves).hex()
    if merkle_root != subjects[ROOT_SUBJECT]:
        raise _invalid(
            "the Merkle root over the facts and blobs does not match the signed root", facts_path
        )
    return Verdict(
        path=root,
        name=str(manifest.get("name")),
        keyid=key.keyid,
        key_source=key.source,
        root=merkle_root,
        fact_count=count,
        blob_count=len(signed_blobs),
        withheld_fields=[f"{seq}/{name}" for seq, name in sorted(withheld_fields)],
        withheld_blobs=withheld,
    )


def _readable_digest(file: Path) -> str:
    from ..store import MAX_BLOB_BYTES

    return "sha256:" + hashlib.sha256(_read_checked(file, MAX_BLOB_BYTES)).hexdigest()


def _is_redacted(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REDACTED_KEY), str)


def _fact_leaf(
    record: bytes,
    line: int,
    salt_records: list[bytes],
    facts_path: Path,
    salts_path: Path,
    withheld: set[tuple[int, str]],
    seen: set[tuple[int, str]],
) -> bytes:
    try:
        raw = orjson.loads(record)
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"fact is not valid JSON ({exc.msg})", facts_path, line) from None
    if not isinstance(raw, dict) or orjson.dumps(raw) != record:
        raise _invalid("fact was changed: not in the form the recorder wrote", facts_path, line)
    seq, kind, node = raw.get("seq"), raw.get("kind"), raw.get("node")
    # type(seq) is int: 1.0 and True equal 1 in Python and are the same number in JCS
    if (
        type(seq) is not int
        or seq != line
        or not isinstance(kind, str)
        or not isinstance(node, str)
    ):
        raise _invalid(
            f"fact on line {line} has seq {seq!r}, kind {kind!r}, node {node!r}", facts_path, line
        )
    if line > len(salt_records):
        raise _invalid(f"no salt line for fact {line}", salts_path, line)
    salt_record = salt_records[line - 1]
    try:
        salts = orjson.loads(salt_record)
    except orjson.JSONDecodeError:
        raise _invalid("salt line is not valid JSON", salts_path, line) from None
    if (
        not isinstance(salts, dict)
        or orjson.dumps(salts, option=orjson.OPT_SORT_KEYS) != salt_record
    ):
        raise _invalid("salt line was changed: not in the form the sealer wrote", salts_path, line)
    fields: dict[str, str] = {}
    for name, value in raw.items():
        if name in FIXED:
            continue
        if _is_redacted(value):
            if (seq, name) not in withheld or name in salts:
                raise _invalid(
                    f"fact {seq}: field {name!r} is withheld but redactions.json does not say so",
                    facts_path,
                    line,
                )
            seen.add((seq, name))
            fields[name] = value[REDACTED_KEY]
            continue
        salt = salts.get(name)
        if not isinstance(salt, str):
            raise _invalid(
                f"fact {seq}: field {name!r} has no salt (field added?)", salts_path, line
            )
        fields[name] = commitment(salt, name, value)
    if set(salts) - set(fields):
        extra = sorted(set(salts) - set(fields))[0]
        raise _invalid(f"fact {seq}: field {extra!r} was removed", facts_path, line)
    return fact_leaf(seq, kind, node, fields)


# --- proving one fact ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _damaged(root: Path, exc: BaseException) -> SealError:
    return SealError(
        f"the bundle or seal at {root} is damaged ({type(exc).__name__}: {exc})",
        fix=f"find what with: llmwb verify {root} --trust KEY.pub; then seal it again",
    )


def _leaves_of(root: Path) -> tuple[list[bytes], list[dict[str, Any]], list[dict[str, Any]]]:
    """Leaf hashes of a sealed bundle, with its parsed facts and salts (unverified)."""
    from ..store import FACTS

    facts = [orjson.loads(r) for r in _lines(_read_file(root / FACTS, sys.maxsize))]
    salts = [orjson.loads(r) for r in _lines(_read_file(root / SEAL_DIR / SALTS, sys.maxsize))]
    if len(facts) != len(salts):
        raise SealError(f"bundle {root}: facts and salts differ in number", fix=_SEAL_FIX)
    leaves = []
    for raw, salt in zip(facts, salts, strict=True):
        fields = {
            name: value[REDACTED_KEY]
            if _is_redacted(value)
            else commitment(salt[name], name, value)
            for name, value in raw.items()
            if name not in FIXED
        }
        leaves.append(fact_leaf(raw["seq"], raw["kind"], raw["node"], fields))
    return leaves, facts, salts


def prove_fact(path: str | os.PathLike[str], seq: int) -> dict[str, Any]:
    """An inclusion proof for fact ``seq``, which :func:`verify_proof` checks alone.

    It holds the fact's disclosures (salt and value of each field), its audit path and
    the signed envelope.
    """
    root = Path(path)
    envelope_path = root / SEAL_DIR / ENVELOPE
    if not envelope_path.is_file():
        raise SealError(
            f"bundle {root} is not sealed", fix=f"seal it with: llmwb seal {root} --key KEY"
        )
    try:
        envelope = orjson.loads(_read_file(envelope_path))
        statement = orjson.loads(base64.b64decode(envelope["payload"]))
        leaves, facts, salts = _leaves_of(root)
        blob_refs = [str(ref) for ref in statement["predicate"]["blobs"]]
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise _damaged(root, exc) from None
    if not 1 <= seq <= len(facts):
        raise ProofError(
            f"bundle {root} has facts 1..{len(facts)}, not {seq}",
            where=str(root),
            fix="pick a seq from: llmwb show " + str(root),
        )
    raw, salt = facts[seq - 1], salts[seq - 1]
    blob_leaves = [blob_leaf(ref) for ref in blob_refs]
    all_leaves = leaves + blob_leaves
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        if name in FIXED:
            continue
        fields[name] = value if _is_redacted(value) else {"salt": salt[name], "value": value}
    return {
        "format": PROOF_FORMAT,
        "fact": {"seq": raw["seq"], "kind": raw["kind"], "node": raw["node"], "fields": fields},
        "inclusion": {
            "index": seq - 1,
            "tree_size": len(all_leaves),
            "path": [_b64(h) for h in inclusion_path(all_leaves, seq - 1)],
        },
        "envelope": envelope,
    }


def verify_proof(proof: Any, trust: TrustStore, *, where: str = "<proof>") -> dict[str, Any]:
    """Check an inclusion proof from :func:`prove_fact` against a trusted signature.

    Returns the disclosed fact (withheld fields stay ``{"$redacted": ...}``); raises
    :class:`ProofError` when the proof is malformed or does not lead to the signed root,
    :class:`SealVerificationError` when the envelope does not verify.
    :func:`check_proof` also says which signed run the fact belongs to.
    """
    return check_proof(proof, trust, where=where).fact


@dataclass(frozen=True)
class ProofVerdict:
    """A proof that verified: the disclosed fact and the signed run it belongs to."""

    fact: dict[str, Any]
    #: The run's name and labels, from the signed manifest.
    name: str
    labels: dict[str, Any]
    root: str
    keyid: str
    key_source: str

    def describe(self) -> str:
        """``VALID: fact N ...`` with the run, the root and the key, as the CLI prints it."""
        fact = self.fact
        labels = ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return (
            f"VALID: fact {fact['seq']} ({fact['kind']} at node {fact['node']})\n"
            f"  run {self.name}" + (f" ({labels})" if labels else "") + f", root sha256:"
            f"{self.root[:16]}\n  signed by key {self.keyid[:12]} ({self.key_source})"
        )


def check_proof(proof: Any, trust: TrustStore, *, where: str = "<proof>") -> ProofVerdict:
    """Like :func:`verify_proof`, and say which signed run (name, labels, root) and key."""
    try:
        return _check_proof(proof, trust, where)
    except SealVerificationError as exc:
        if exc.fix != TRUST_FIX:
            exc.fix = _PROOF_FIX
        raise


def _check_proof(proof: Any, trust: TrustStore, where: str) -> ProofVerdict:
    def bad(message: str) -> ProofError:
        return ProofError(message, where=where, fix=_PROOF_FIX)

    if not isinstance(proof, dict) or proof.get("format") != PROOF_FORMAT:
        raise bad(f"not an inclusion proof (format {PROOF_FORMAT})")
    fact, inclusion = proof.get("fact"), proof.get("inclusion")
    if not isinstance(fact, dict) or not isinstance(inclusion, dict):
        raise bad("the proof has no fact or no inclusion")
    payload, key = open_envelope(proof.get("envelope"), trust, where=f"{where} (envelope)")
    statement = _statement(payload, Path(where))
    subjects = _subjects(statement, Path(where))
    seq, kind, node, fields = (
        fact.get("seq"),
        fact.get("kind"),
        fact.get("node"),
        fact.get("fields"),
    )
    index, size, path = inclusion.get("index"), inclusion.get("tree_size"), inclusion.get("path")
    if (
        type(seq) is not int
        or not isinstance(kind, str)
        or not isinstance(node, str)
        or not isinstance(fields, dict)
        or type(index) is not int
        or type(size) is not int
        or not isinstance(path, list)
    ):
        raise bad("the proof's fact or inclusion is malformed")
    if index != seq - 1 or not seq <= statement["predicate"]["fact_count"]:
        raise bad(f"fact {seq} cannot be at leaf index {index}")
    if size != statement["predicate"]["tree_size"]:
        raise bad(
            f"tree_size {size} is not the signed tree size {statement['predicate']['tree_size']}"
        )
    commitments: dict[str, str] = {}
    disclosed: dict[str, Any] = {"seq": seq, "kind": kind, "node": node}
    for name, entry in fields.items():
        if _is_redacted(entry):
            commitments[name] = entry[REDACTED_KEY]
            disclosed[name] = entry
        elif (
            isinstance(entry, dict)
            and set(entry) == {"salt", "value"}
            and isinstance(entry["salt"], str)
        ):
            try:
                commitments[name] = commitment(entry["salt"], name, entry["value"])
            except (TypeError, ValueError) as exc:
                raise bad(f"field {name!r}: {exc}") from None
            disclosed[name] = entry["value"]
        else:
            raise bad(f"field {name!r} is neither {{salt, value}} nor withheld")
    hashes: list[bytes] = []
    for item in path:
        try:
            hashes.append(base64.b64decode(item, validate=True) if isinstance(item, str) else b"")
        except (binascii.Error, ValueError):
            hashes.append(b"")
        if len(hashes[-1]) != 32:
            raise bad("the audit path holds something that is not a base64 SHA-256 hash")
    found = root_from_path(fact_leaf(seq, kind, node, commitments), index, size, hashes)
    if found is None or found.hex() != subjects[ROOT_SUBJECT]:
        raise bad(f"fact {seq} with this audit path does not lead to the signed Merkle root")
    manifest = statement["predicate"]["manifest"]
    labels = manifest.get("labels")
    return ProofVerdict(
        fact=disclosed,
        name=str(manifest.get("name")),
        labels=dict(labels) if isinstance(labels, dict) else {},
        root=found.hex(),
        keyid=key.keyid,
        key_source=key.source,
    )


# --- redacting -----------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _blob_refs(value: Any) -> Iterator[str]:
    from ..store import BLOB_KEY

    if isinstance(value, dict):
        ref = value.get(BLOB_KEY)
        if isinstance(ref, str) and len(value) == 2:
            yield ref
            return
        for item in value.values():
            yield from _blob_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _blob_refs(item)


#: Withheld strings shorter than this are not searched for in other blobs (too common).
MIN_SEARCH = 8


@dataclass(frozen=True)
class Redaction:
    """What :func:`redact_bundle` withheld, and where withheld text still shows."""

    #: The fields withheld by this call, ``SEQ/FIELD``: those asked for and the plain
    #: digests computed from them (``request_digest``, ``content_digest``), which would
    #: let anyone confirm a guessed value.
    fields: list[str]
    #: The blobs withheld by this call.
    blobs: list[str]
    #: Fields left in the bundle that still contain a withheld string (8 characters or
    #: more), ``SEQ/FIELD``: withhold them too if that matters.
    still_visible: list[str]


#: Fields whose plain (unsalted) digest another field of the same fact holds: withholding
#: the value withholds that digest too, or a guess could be confirmed against it.
DIGEST_OF = {
    "request": "request_digest",
    "arguments": "request_digest",
    "content": "content_digest",
}


def redact_bundle(path: str | os.PathLike[str], paths: Sequence[str]) -> Redaction:
    """Withhold fields of a sealed bundle: ``SEQ/FIELD`` (a top-level field of fact SEQ).

    Each value becomes ``{"$redacted": <its commitment>}`` and its salt is dropped, so the
    seal still verifies and reports what was withheld. The fact's plain digest of the
    value (``request_digest`` of a request or tool arguments, ``content_digest`` of an
    artifact), blobs the value refers to, the fact's captured wire ``exchange`` and any
    blob that contains a withheld string are withheld too.
    """
    from ..store import BLOBS, FACTS, MANIFEST, write_atomic

    root = Path(path)
    seal_dir = root / SEAL_DIR
    if not (seal_dir / ENVELOPE).is_file():
        raise RedactionError(
            f"bundle {root} is not sealed; redaction keeps a seal valid and needs one",
            fix=f"seal it first with: llmwb seal {root} --key KEY",
        )
    try:
        facts = [orjson.loads(r) for r in _lines(_read_file(root / FACTS, sys.maxsize))]
        salts = [orjson.loads(r) for r in _lines(_read_file(seal_dir / SALTS, sys.maxsize))]
        if len(facts) != len(salts) or not all(isinstance(x, dict) for x in facts + salts):
            raise ValueError("facts and salts do not pair up")
    except (ValueError, OSError) as exc:
        raise _damaged(root, exc) from None
    fields, blobs = _redactions(root)
    targets: list[tuple[int, str]] = []
    for entry in paths:
        seq_text, _, name = entry.strip("/").partition("/")
        if not (seq_text.isascii() and seq_text.isdigit()) or not name:
            raise RedactionError(
                f"{entry!r} is not a redaction path",
                fix="name a field as SEQ/FIELD, e.g. 3/response",
            )
        seq = int(seq_text)
        if not 1 <= seq <= len(facts):
            raise RedactionError(
                f"bundle {root} has facts 1..{len(facts)}, not {seq} (in {entry!r})",
                fix=f"pick a fact from: llmwb show {root}",
            )
        raw = facts[seq - 1]
        if name in FIXED or name not in raw:
            available = [k for k in raw if k not in FIXED]
            example = next(
                (k for k in available if k in DIGEST_OF or k in ("response", "result")), None
            )
            raise RedactionError(
                f"fact {seq} ({raw['kind']}) has no field {name!r} that can be withheld "
                f"(it has: {', '.join(available)})",
                fix=f"name one of its fields, e.g. {seq}/{example or (available or ['FIELD'])[0]}",
            )
        targets.append((seq, name))
        if DIGEST_OF.get(name) in raw:
            targets.append((seq, DIGEST_OF[name]))
    for raw, salt in zip(facts, salts, strict=True):
        for name, value in raw.items():
            if name not in FIXED and _is_redacted(value):
                salt.pop(name, None)  # kept only by an interrupted redaction
    withheld_strings: set[str] = set()
    new_blobs: set[str] = set()
    new_fields: list[str] = []
    for seq, name in targets:
        raw = facts[seq - 1]
        value = raw[name]
        if _is_redacted(value):
            continue
        salt = salts[seq - 1].pop(name, None)
        if not isinstance(salt, str):
            raise RedactionError(
                f"fact {seq}: field {name!r} has no salt in {seal_dir / SALTS}:{seq}; "
                "its commitment cannot be computed, so it cannot be withheld",
                fix=f"check the seal with: llmwb verify {root} --trust KEY.pub; "
                f"then seal it again: llmwb seal {root} --key KEY",
            )
        raw[name] = {REDACTED_KEY: commitment(salt, name, value)}
        fields.add((seq, name))
        new_fields.append(f"{seq}/{name}")
        new_blobs.update(_blob_refs(value))
        exchange = raw.get("exchange")
        if isinstance(exchange, str):
            new_blobs.add(exchange)  # the wire exchange holds the request and response again
        withheld_strings.update(s for s in _strings(value) if len(s) >= MIN_SEARCH)
    still_visible = [
        f"{raw['seq']}/{name}"
        for raw in facts
        for name, value in raw.items()
        if name not in FIXED
        and not _is_redacted(value)
        and any(s in text for text in _strings(value) for s in withheld_strings)
    ]
    blobs_dir = root / BLOBS
    if blobs_dir.is_dir() and withheld_strings:
        needles = [s.encode() for s in withheld_strings]
        needles += [orjson.dumps(s)[1:-1] for s in withheld_strings]
        for blob in blobs_dir.iterdir():
            ref = f"sha256:{blob.name}"
            if ref not in new_blobs and ref not in blobs:
                data = _read_file(blob)
                if any(n in data for n in needles):
                    new_blobs.add(ref)
    new_facts = b"".join(orjson.dumps(raw) + b"\n" for raw in facts)
    manifest = _read_manifest(root)
    _set_facts_digest(manifest, digest_bytes(new_facts))
    blobs |= new_blobs
    try:
        write_atomic(
            seal_dir / REDACTIONS,
            dumps_pretty(
                {"fields": [f"{s}/{n}" for s, n in sorted(fields)], "blobs": sorted(blobs)}
            ),
        )
        # redactions.json goes first: from then on the bundle refuses to replay, even
        # if the steps below are interrupted. Then every withheld blob still present
        # goes (those of earlier, maybe interrupted, calls too), before the facts change:
        # a retry finds the values unredacted, or finds their blobs listed, and converges.
        for ref in sorted(blobs):
            (blobs_dir / ref.removeprefix("sha256:")).unlink(missing_ok=True)
        # the facts before the salts: a value withheld whose salt is kept is mended by a
        # retry, a salt dropped from a value still there could not be
        write_atomic(root / FACTS, new_facts)
        salt_lines = (orjson.dumps(s, option=orjson.OPT_SORT_KEYS) + b"\n" for s in salts)
        write_atomic(seal_dir / SALTS, b"".join(salt_lines))
        write_atomic(root / MANIFEST, dumps_pretty(manifest))
    except OSError as exc:
        raise RedactionError(
            f"cannot write the redacted bundle {root}: {exc.strerror or exc}",
            fix="make the bundle writable and redact again",
        ) from None
    return Redaction(fields=new_fields, blobs=sorted(new_blobs), still_visible=still_visible)
