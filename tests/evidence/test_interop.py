"""Our envelopes and key ids against securesystemslib's, both ways, with real keys."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from pytest_llmwb import SealVerificationError, verify_bundle
from pytest_llmwb.codec import dumps_pretty
from pytest_llmwb.evidence.keys import (
    PAYLOAD_TYPE,
    SigningKey,
    TrustStore,
    keyid,
    open_envelope,
    sign_envelope,
)


def _sslib_public(key: SigningKey) -> SSlibKey:
    return SSlibKey.from_crypto(key.key.public_key())


def test_our_keyid_is_securesystemslibs_default_keyid(key: SigningKey) -> None:
    assert key.keyid == _sslib_public(key).keyid == keyid(key.key.public_key())


def test_securesystemslib_verifies_our_sealed_bundle(tiny: Path, key: SigningKey) -> None:
    data = orjson.loads((tiny / "seal" / "envelope.json").read_bytes())
    envelope = Envelope.from_dict(data)
    accepted = envelope.verify([_sslib_public(key)], 1)
    assert list(accepted) == [key.keyid]
    statement = orjson.loads(envelope.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert envelope.payload_type == PAYLOAD_TYPE


def test_securesystemslib_rejects_our_envelope_when_tampered(key: SigningKey) -> None:
    from securesystemslib.exceptions import VerificationError

    data = sign_envelope(b'{"a":1}', key)
    data["payload"] = base64.b64encode(b'{"a":2}').decode()
    with pytest.raises(VerificationError):
        Envelope.from_dict(data).verify([_sslib_public(key)], 1)


def test_we_verify_an_envelope_securesystemslib_signed(key: SigningKey, trust: TrustStore) -> None:
    signer = CryptoSigner(key.key)
    envelope = Envelope(b'{"hello":"world"}', PAYLOAD_TYPE, {})
    envelope.sign(signer)
    payload, used = open_envelope(envelope.to_dict(), trust, where="sslib")
    assert payload == b'{"hello":"world"}' and used.keyid == key.keyid


def test_a_bundle_sealed_by_securesystemslib_verifies_here(
    tiny: Path, key: SigningKey, trust: TrustStore
) -> None:
    """Re-sign our statement with securesystemslib: the bundle verifies; tampered, it does not."""
    path = tiny / "seal" / "envelope.json"
    ours = orjson.loads(path.read_bytes())
    envelope = Envelope(base64.b64decode(ours["payload"]), PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(key.key))
    path.write_bytes(dumps_pretty(envelope.to_dict()))
    assert verify_bundle(tiny, trust).keyid == key.keyid
    theirs = envelope.to_dict()
    sig = bytearray(base64.b64decode(theirs["signatures"][0]["sig"]))
    sig[0] ^= 1
    theirs["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    path.write_bytes(dumps_pretty(theirs))
    with pytest.raises(SealVerificationError, match="does not verify"):
        verify_bundle(tiny, trust)
