"""Ed25519 keys, key ids, trust stores and DSSE envelopes.

Key files are PEM: PKCS#8 for private keys, SubjectPublicKeyInfo for public keys.
A key id follows securesystemslib's default: the SHA-256 hex of the canonical JSON of
``{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": <raw key hex>}}``,
so that envelopes signed here verify with securesystemslib and the other way round.
The key id in an envelope is only a hint: the key that verifies it always comes from
the caller's trust store, never from the bundle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..codec import canonical_json
from ..exceptions import SealError, SealVerificationError, TrustError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "PAYLOAD_TYPE",
    "SEAL_KEY_ENV",
    "TRUST_ENV",
    "PublicKey",
    "SigningKey",
    "TrustStore",
    "generate_key",
    "keyid",
    "load_signing_key",
    "open_envelope",
    "pae",
    "sign_envelope",
]

#: The DSSE payload type of an in-toto Statement.
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: Environment variable naming the private key file that seals bundles.
SEAL_KEY_ENV = "LLMWB_SEAL_KEY"
#: Environment variable naming trusted public key files or directories (os.pathsep-separated).
TRUST_ENV = "LLMWB_TRUST"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def keyid(public: Ed25519PublicKey) -> str:
    """Securesystemslib's default key id of an Ed25519 public key."""
    raw = public.public_bytes_raw().hex()
    body = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": raw}}
    return hashlib.sha256(canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A trusted Ed25519 public key and where it was read from."""

    key: Ed25519PublicKey
    keyid: str
    source: str

    def verifies(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``data``."""
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key; only ever held in memory."""

    key: Ed25519PrivateKey
    keyid: str
    source: str

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data``."""
        return self.key.sign(data)


#: The fix of a seal signed by a key that is not trusted: the one INVALID that is not
#: about the bundle's content.
TRUST_FIX = "get the signer's public key through a channel you trust and pass it with --trust"


def _pem_fix(path: str) -> str:
    return f"create a key pair with: llmwb keygen {path}"


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a PKCS#8 PEM Ed25519 private key (unencrypted)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SealError(
            f"cannot read the private key {source}: {exc.strerror or exc}", fix=_pem_fix(source)
        ) from None
    if b"-----BEGIN PUBLIC KEY-----" in data:
        private = source.removesuffix(".pub") if source.endswith(".pub") else "PRIVATE_KEY"
        raise SealError(
            f"{source} is a public key; a seal is signed with the private key of the pair",
            fix=f"pass the private key instead: --key {private} (the file without .pub)",
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SealError(
            f"{source} is not an unencrypted PKCS#8 PEM private key ({exc})",
            fix=_pem_fix(source),
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SealError(
            f"{source} holds a {type(key).__name__}; seals are signed with Ed25519 keys",
            fix=_pem_fix(source),
        )
    return SigningKey(key, keyid(key.public_key()), source)


def _load_public(path: Path) -> PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustError(
            f"cannot read trusted key {path}: {exc.strerror or exc}",
            fix="pass public key files (or directories of *.pub) with --trust PATH",
        ) from None
    if b"PRIVATE KEY" in data:
        raise TrustError(
            f"{path} is a private key; a trust store holds public keys only",
            fix=f"pass its public half ({path}.pub, written by llmwb keygen) instead",
        )
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise TrustError(
            f"{path} is not a PEM public key (SubjectPublicKeyInfo): {exc}",
            fix="pass the .pub file written by: llmwb keygen KEY",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError(
            f"{path} holds a {type(key).__name__}; seals are verified with Ed25519 keys",
            fix="pass the .pub file written by: llmwb keygen KEY",
        )
    return PublicKey(key, keyid(key), str(path))


class TrustStore:
    """The public keys a verifier trusts, by key id."""

    def __init__(self, keys: Iterable[PublicKey] = ()) -> None:
        self.keys: dict[str, PublicKey] = {key.keyid: key for key in keys}

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]] = ()) -> TrustStore:
        """Keys from ``paths`` (files, or directories of ``*.pub``/``*.pem``), else $LLMWB_TRUST."""
        chosen = [str(p) for p in paths]
        if not chosen:
            chosen = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
        if not chosen:
            raise TrustError(
                "no trusted keys: a seal is verified only against keys you trust, "
                "never against a key shipped in the bundle",
                fix=f"pass the signer's public key with --trust KEY.pub (or set {TRUST_ENV})",
            )
        keys: list[PublicKey] = []
        for entry in chosen:
            path = Path(entry)
            if path.is_dir():
                files = sorted(
                    p for p in path.iterdir() if p.suffix in (".pub", ".pem") and p.is_file()
                )
                keys.extend(_load_public(p) for p in files)
            else:
                keys.append(_load_public(path))
        if not keys:
            raise TrustError(
                f"no public keys (*.pub, *.pem) in {', '.join(chosen)}",
                fix="pass the signer's public key with --trust KEY.pub",
            )
        return cls(keys)

    def describe(self) -> str:
        """The key ids and files of the store, for messages."""
        return ", ".join(f"{k[:12]} ({v.source})" for k, v in sorted(self.keys.items()))


# The fixed DER headers of Ed25519 keys (RFC 8410): PKCS#8 and SubjectPublicKeyInfo.
# Built by hand rather than with cryptography's serialization enums, whose classes a
# re-import (as pytester does between runs) makes unrecognisable to the Rust side.
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def generate_key(path: str | os.PathLike[str]) -> SigningKey:
    """Write a new Ed25519 key pair: ``PATH`` (private, mode 0600) and ``PATH.pub``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    target = Path(path)
    public_path = target.with_name(target.name + ".pub")
    for existing in (target, public_path):
        if existing.exists():
            raise SealError(
                f"{existing} already exists; llmwb keygen never overwrites a key",
                fix="choose another path, or delete the old key pair first",
            )
    key = Ed25519PrivateKey.generate()
    private = _pem("PRIVATE KEY", _PKCS8_ED25519 + key.private_bytes_raw())
    public = _pem("PUBLIC KEY", _SPKI_ED25519 + key.public_key().public_bytes_raw())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # created 0600 from the start: the private key is never readable by others
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
        public_path.write_bytes(public)
    except OSError as exc:
        raise SealError(
            f"cannot write the key pair at {target}: {exc.strerror or exc}",
            fix="choose a writable path",
        ) from None
    return SigningKey(key, keyid(key.public_key()), str(target))


# --- DSSE envelopes ----------------------------------------------------------------------


def sign_envelope(
    payload: bytes, key: SigningKey, payload_type: str = PAYLOAD_TYPE
) -> dict[str, Any]:
    """A DSSE envelope (securesystemslib's JSON shape) over ``payload``, signed by ``key``."""
    signature = key.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [{"keyid": key.keyid, "sig": base64.b64encode(signature).decode()}],
    }


def _b64(value: Any, what: str, where: str) -> bytes:
    if isinstance(value, str):
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            data = None
        # only the canonical encoding: otherwise unused low bits of the last character
        # could change without changing the bytes, and a flipped byte would pass unseen
        if data is not None and base64.b64encode(data).decode() == value:
            return data
    raise SealVerificationError(
        f"{what} is not canonical base64", where=where, fix="seal the bundle again"
    )


def open_envelope(
    envelope: Any, trust: TrustStore, *, where: str, payload_type: str = PAYLOAD_TYPE
) -> tuple[bytes, PublicKey]:
    """The payload of a DSSE ``envelope`` and the trusted key whose signature verifies it.

    Raises :class:`SealVerificationError` naming what failed: the shape, an unknown
    key (the key id is only a hint: a trusted key must verify the signature), or a
    signature that does not verify.
    """
    fix = "seal the bundle again with: llmwb seal BUNDLE --key KEY"
    if (
        not isinstance(envelope, dict)
        or set(envelope) != {"payload", "payloadType", "signatures"}
        or not isinstance(envelope["signatures"], list)
        or not envelope["signatures"]
    ):
        raise SealVerificationError(
            "not a DSSE envelope (payload, payloadType, signatures)", where=where, fix=fix
        )
    if envelope["payloadType"] != payload_type:
        raise SealVerificationError(
            f"payloadType is {envelope['payloadType']!r}, expected {payload_type!r}",
            where=where,
            fix=fix,
        )
    payload = _b64(envelope["payload"], "payload", where)
    signed = pae(payload_type, payload)
    hints: list[str] = []
    for entry in envelope["signatures"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
            raise SealVerificationError("a signature entry has no sig", where=where, fix=fix)
        signature = _b64(entry["sig"], "a signature", where)
        hint = entry.get("keyid")
        if not isinstance(hint, str) or set(entry) - {"keyid", "sig"}:
            raise SealVerificationError(
                "a signature entry is not {keyid, sig}", where=where, fix=fix
            )
        hints.append(hint)
        key = trust.keys.get(hint)
        if key is not None and key.verifies(signature, signed):
            return payload, key
        if key is not None:
            raise SealVerificationError(
                f"the signature by key {hint[:12]} ({key.source}) does not verify: "
                "the signed statement or the signature was changed",
                where=where,
                fix=fix,
            )
    raise SealVerificationError(
        f"signed by key {', '.join(h[:12] for h in hints)}, which is not in the trust store "
        f"({trust.describe()})",
        where=where,
        fix=TRUST_FIX,
    )
