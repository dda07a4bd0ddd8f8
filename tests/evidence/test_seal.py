"""Seal, verify, prove and redact, with real Ed25519 keys, through the API and the CLI."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import orjson
import pytest

from pytest_llmwb import (
    BundleRedactedError,
    ProofError,
    RedactionError,
    SealError,
    SealVerificationError,
    TrustError,
    load_bundle,
    prove_fact,
    redact_bundle,
    seal_bundle,
    verify_bundle,
    verify_proof,
)
from pytest_llmwb.cli import main
from pytest_llmwb.evidence.keys import SigningKey, TrustStore, generate_key

from .conftest import SECRET_REPLY, write_tiny


def test_a_sealed_bundle_verifies_and_says_who_signed_it(tiny: Path, trust: TrustStore) -> None:
    verdict = verify_bundle(tiny, trust)
    assert not verdict.redacted
    assert (verdict.name, verdict.fact_count, verdict.blob_count) == ("tiny", 1, 1)
    assert verdict.keyid in trust.keys
    assert verdict.describe().startswith("VALID\n")


def test_sealing_touches_nothing_but_the_seal_directory(tmp_path: Path, key: SigningKey) -> None:
    path = write_tiny(tmp_path / "b")
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    seal_bundle(path, key)
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k.parts[0] != "seal"} == before
    assert sorted(str(k) for k in after if k.parts[0] == "seal") == [
        "seal/envelope.json",
        "seal/salts.jsonl",
    ]
    # the private key is never copied into the bundle
    private = Path(key.source).read_bytes()
    assert not any(b"PRIVATE" in data or private in data for data in after.values())
    load_bundle(path)  # a sealed bundle still loads (and replays)


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def _every_flip_is_invalid(file: Path, bundle: Path, trust: TrustStore) -> int:
    """Flip each byte of ``file`` in turn: each must make the bundle INVALID. Returns the count."""
    original = file.read_bytes()
    data = bytearray(original)
    for index in range(len(data)):
        data[index] ^= 0x01
        file.write_bytes(data)
        with pytest.raises(SealVerificationError):
            verify_bundle(bundle, trust)
        data[index] ^= 0x01
    file.write_bytes(original)
    return len(data)


def test_every_single_byte_flip_of_every_file_is_detected(tiny: Path, trust: TrustStore) -> None:
    verify_bundle(tiny, trust)
    flips = sum(_every_flip_is_invalid(file, tiny, trust) for file in _files(tiny))
    assert flips > 2500  # every file, every byte: nothing was skipped
    verify_bundle(tiny, trust)


def test_a_removed_or_added_file_is_detected(tiny: Path, trust: TrustStore) -> None:
    blob = next((tiny / "blobs").iterdir())
    data = blob.read_bytes()
    blob.unlink()
    with pytest.raises(SealVerificationError, match="is missing"):
        verify_bundle(tiny, trust)
    blob.write_bytes(data)
    (tiny / "blobs" / ("0" * 64)).write_bytes(b"extra")
    with pytest.raises(SealVerificationError, match="not covered by the seal"):
        verify_bundle(tiny, trust)


def test_an_unknown_key_is_invalid_and_names_the_key(tiny: Path, tmp_path: Path) -> None:
    other = generate_key(tmp_path / "keys" / "mallory")
    store = TrustStore.load([other.source + ".pub"])
    with pytest.raises(SealVerificationError, match="not in the trust store") as caught:
        verify_bundle(tiny, store)
    assert "envelope.json" in str(caught.value)


def test_a_reseal_by_another_key_is_not_trusted(
    tiny: Path, tmp_path: Path, trust: TrustStore
) -> None:
    seal_bundle(tiny, generate_key(tmp_path / "keys" / "mallory"))
    with pytest.raises(SealVerificationError, match="not in the trust store"):
        verify_bundle(tiny, trust)


def test_a_signature_swapped_under_a_trusted_keyid_does_not_verify(
    tiny: Path, tmp_path: Path, trust: TrustStore, key: SigningKey
) -> None:
    other = generate_key(tmp_path / "keys" / "mallory")
    envelope_path = tiny / "seal" / "envelope.json"
    envelope = orjson.loads(envelope_path.read_bytes())
    from pytest_llmwb.evidence.keys import pae

    forged = other.sign(pae(envelope["payloadType"], base64.b64decode(envelope["payload"])))
    envelope["signatures"][0]["sig"] = base64.b64encode(forged).decode()
    from pytest_llmwb.codec import dumps_pretty

    envelope_path.write_bytes(dumps_pretty(envelope))
    with pytest.raises(SealVerificationError, match="does not verify"):
        verify_bundle(tiny, trust)


def test_a_truncated_envelope_is_invalid(tiny: Path, trust: TrustStore) -> None:
    envelope = tiny / "seal" / "envelope.json"
    envelope.write_bytes(envelope.read_bytes()[:100])
    with pytest.raises(SealVerificationError, match="not valid JSON"):
        verify_bundle(tiny, trust)


def test_no_trust_store_and_bad_key_files_are_named(
    tmp_path: Path, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMWB_TRUST", raising=False)
    with pytest.raises(TrustError, match="no trusted keys"):
        TrustStore.load([])
    with pytest.raises(TrustError, match="is a private key"):
        TrustStore.load([key.source])
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    with pytest.raises(TrustError, match="not a PEM public key"):
        TrustStore.load([junk])
    with pytest.raises(SealError, match="not an unencrypted PKCS#8"):
        seal_bundle(write_tiny(tmp_path / "b"), junk)
    monkeypatch.setenv("LLMWB_TRUST", str(Path(key.source).parent))
    assert key.keyid in TrustStore.load([]).keys


def test_an_unsealed_bundle_is_reported_with_the_command_that_seals_it(
    tmp_path: Path, trust: TrustStore
) -> None:
    path = write_tiny(tmp_path / "b")
    with pytest.raises(SealError, match="is not sealed") as caught:
        verify_bundle(path, trust)
    assert "llmwb seal" in str(caught.value)


def test_keygen_never_overwrites_and_keeps_the_private_key_private(key: SigningKey) -> None:
    assert Path(key.source).stat().st_mode & 0o077 == 0
    with pytest.raises(SealError, match="already exists"):
        generate_key(key.source)


# --- proofs -------------------------------------------------------------------------------


def test_a_proof_checks_alone_against_the_signed_root(tiny: Path, trust: TrustStore) -> None:
    proof = orjson.loads(orjson.dumps(prove_fact(tiny, 1)))
    shutil.rmtree(tiny)  # the auditor has the proof and a public key, nothing else
    fact = verify_proof(proof, trust)
    assert fact["response"]["content"] == SECRET_REPLY
    assert (fact["seq"], fact["kind"], fact["node"]) == (1, "model_io", "answer")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p["fact"]["fields"]["response"]["value"].update(content="changed"),
        lambda p: p["fact"].update(node="other"),
        lambda p: p["fact"]["fields"]["request"].update(salt="A" * 22),
        lambda p: p["inclusion"]["path"].append(base64.b64encode(b"\0" * 32).decode()),
        lambda p: p["inclusion"].update(index=1),
        lambda p: p["inclusion"].update(tree_size=3),
        lambda p: p["inclusion"].update(path=["not base64!"]),
        lambda p: p.update(format="other"),
        lambda p: p["fact"]["fields"].pop("request"),
    ],
)
def test_a_tampered_or_malformed_proof_is_a_proof_error(
    tiny: Path, trust: TrustStore, tamper: object
) -> None:
    proof = prove_fact(tiny, 1)
    verify_proof(proof, trust)
    tamper(proof)  # type: ignore[operator]
    with pytest.raises(ProofError):
        verify_proof(proof, trust)


def test_proving_a_fact_that_does_not_exist_is_a_proof_error(tiny: Path) -> None:
    with pytest.raises(ProofError, match=r"facts 1\.\.1, not 7"):
        prove_fact(tiny, 7)


# --- redaction ------------------------------------------------------------------------------


def test_redaction_keeps_the_seal_valid_and_says_what_was_withheld(
    tiny: Path, trust: TrustStore
) -> None:
    before = prove_fact(tiny, 1)
    withheld = redact_bundle(tiny, ["1/response"]).blobs
    verdict = verify_bundle(tiny, trust)
    assert verdict.withheld_fields == ["1/response"]
    # the exchange blob repeats the answer: it is withheld too
    assert verdict.withheld_blobs == withheld and len(withheld) == 1
    assert "VALID (redacted: 1/response, blob sha256:" in verdict.describe()
    everything = b"".join(p.read_bytes() for p in _files(tiny))
    assert SECRET_REPLY.encode() not in everything
    # what stays checks out, the value stays withheld in a proof made after redaction
    after = verify_proof(prove_fact(tiny, 1), trust)
    assert set(after["response"]) == {"$redacted"}
    # and the value can still be disclosed later, on its own, by whoever holds the proof
    assert verify_proof(before, trust)["response"]["content"] == SECRET_REPLY


def test_a_redacted_bundle_refuses_to_replay_with_a_named_error(tiny: Path) -> None:
    redact_bundle(tiny, ["1/response"])
    with pytest.raises(BundleRedactedError, match="is redacted"):
        load_bundle(tiny)
    # hiding the list of redactions does not make the withheld values content
    (tiny / "seal" / "redactions.json").unlink()
    with pytest.raises(BundleRedactedError, match="fact 1 has 'response' withheld"):
        load_bundle(tiny)


def test_redacting_twice_is_harmless_and_every_flip_after_is_caught(
    tiny: Path, trust: TrustStore
) -> None:
    redact_bundle(tiny, ["1/response"])
    redact_bundle(tiny, ["1/response", "1/request"])
    # the request's plain digest goes with it: a guess could be confirmed against it
    assert verify_bundle(tiny, trust).withheld_fields == [
        "1/request",
        "1/request_digest",
        "1/response",
    ]
    redactions = tiny / "seal" / "redactions.json"
    assert _every_flip_is_invalid(redactions, tiny, trust) > 0
    redactions.unlink()  # hiding the redaction is no way out either
    with pytest.raises(SealVerificationError, match=r"withheld but redactions\.json"):
        verify_bundle(tiny, trust)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("1/nonsense", "has no field 'nonsense'"),
        ("1/seq", "has no field 'seq'"),
        ("9/response", r"facts 1\.\.1, not 9"),
        ("response", "is not a redaction path"),
    ],
)
def test_redacting_an_unknown_path_is_a_redaction_error(
    tiny: Path, path: str, message: str
) -> None:
    facts = (tiny / "facts.jsonl").read_bytes()
    with pytest.raises(RedactionError, match=message):
        redact_bundle(tiny, [path])
    assert (tiny / "facts.jsonl").read_bytes() == facts


def test_redacting_an_unsealed_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RedactionError, match="not sealed"):
        redact_bundle(write_tiny(tmp_path / "b"), ["1/response"])


# --- the CLI -------------------------------------------------------------------------------


def test_cli_exit_codes_follow_diff(
    tiny: Path, key: SigningKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = key.source + ".pub"
    assert main(["verify", str(tiny), "--trust", pub]) == 0
    assert capsys.readouterr().out.startswith("VALID\n")
    facts = tiny / "facts.jsonl"
    facts.write_bytes(facts.read_bytes().replace(b"m-1", b"m-2"))
    assert main(["verify", str(tiny), "--trust", pub]) == 1
    out = capsys.readouterr().out
    assert out.startswith("INVALID: ") and "facts.jsonl" in out
    assert main(["verify", str(tiny)]) == 2
    assert "no trusted keys" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "nowhere"), "--trust", pub]) == 2


def test_cli_keygen_seal_prove_redact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = write_tiny(tmp_path / "b")
    key = tmp_path / "k"
    assert main(["keygen", str(key)]) == 0
    monkeypatch.delenv("LLMWB_SEAL_KEY", raising=False)
    assert main(["seal", str(bundle)]) == 2
    assert "no seal key" in capsys.readouterr().err
    monkeypatch.setenv("LLMWB_SEAL_KEY", str(key))
    assert main(["seal", str(bundle)]) == 0
    proof = tmp_path / "proof.json"
    assert main(["prove", str(bundle), "--fact", "1", "-o", str(proof)]) == 0
    assert main(["redact", str(bundle), "--path", "1/response"]) == 0
    assert main(["verify", str(bundle), "--trust", f"{key}.pub"]) == 0
    assert "VALID (redacted: 1/response" in capsys.readouterr().out
    assert main(["verify-proof", str(proof), "--trust", f"{key}.pub"]) == 0
    assert SECRET_REPLY in capsys.readouterr().out
    proof.write_bytes(proof.read_bytes().replace(b"expires", b"expired"))
    assert main(["verify-proof", str(proof), "--trust", f"{key}.pub"]) == 1
    assert "does not lead to the signed Merkle root" in capsys.readouterr().out
    proof.write_bytes(b"{")
    assert main(["verify-proof", str(proof), "--trust", f"{key}.pub"]) == 1
    assert main(["redact", str(bundle), "--path", "1/nope"]) == 2


def test_a_signature_in_non_canonical_base64_is_refused(tiny: Path, trust: TrustStore) -> None:
    """Unused low bits of the last base64 character change no byte of the signature."""
    from pytest_llmwb.codec import dumps_pretty

    path = tiny / "seal" / "envelope.json"
    envelope = orjson.loads(path.read_bytes())
    sig = envelope["signatures"][0]["sig"]
    assert sig.endswith("==")  # 64 bytes: the last character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(sig[-3]) ^ 0b1]
    loose = sig[:-3] + last + "=="
    assert base64.b64decode(loose) == base64.b64decode(sig)
    envelope["signatures"][0]["sig"] = loose
    path.write_bytes(dumps_pretty(envelope))
    with pytest.raises(SealVerificationError, match="not canonical base64"):
        verify_bundle(tiny, trust)


def test_proving_or_redacting_a_damaged_seal_is_a_seal_error(tiny: Path) -> None:
    (tiny / "seal" / "salts.jsonl").write_bytes(b"{}\n")
    with pytest.raises(SealError, match="is damaged") as caught:
        prove_fact(tiny, 1)
    assert "llmwb verify" in str(caught.value)
    (tiny / "seal" / "salts.jsonl").write_bytes(b"not json\n")
    with pytest.raises(SealError, match="is damaged"):
        redact_bundle(tiny, ["1/response"])


def test_redaction_withholds_any_blob_that_repeats_the_value(
    tmp_path: Path, key: SigningKey, trust: TrustStore
) -> None:
    from pytest_llmwb import Dag, ModelResponse, Run
    from pytest_llmwb.codec import digest_bytes
    from pytest_llmwb.store import write_bundle

    other = b'{"format":"llmwb-exchange/1","quoted":"' + SECRET_REPLY.encode() + b'"}'
    with Run("two", dag=Dag("two").model("answer", model="m-1")) as run:
        for content in (SECRET_REPLY, "nothing to hide here"):
            run.model_io(
                {"model": "m-1", "messages": [{"role": "user", "content": "hi"}]},
                lambda request, c=content: ModelResponse(content=c),
                node="answer",
            )
    ref = digest_bytes(other)
    facts = list(run.facts)
    facts[1] = facts[1].model_copy(update={"exchange": ref})  # the second call quotes the first
    path = tmp_path / "two"
    write_bundle(path, name="two", dag=run.dag, facts=facts, blobs={ref: other})
    seal_bundle(path, key)
    assert redact_bundle(path, ["1/response"]).blobs == [ref]
    assert verify_bundle(path, trust).withheld_blobs == [ref]


def test_redaction_names_fields_where_the_withheld_text_still_shows(
    tmp_path: Path, key: SigningKey, trust: TrustStore
) -> None:
    from pytest_llmwb import Dag, Run

    email = "ana@example.com"
    with Run("leak", dag=Dag("leak").tool("lookup").tool("notify")) as run:
        run.tool_call("lookup", {"order": "A-42"}, lambda: {"email": email})
        run.tool_call("notify", {"to": email}, lambda: {"sent": True})
    run.save(tmp_path / "leak")
    seal_bundle(tmp_path / "leak", key)
    done = redact_bundle(tmp_path / "leak", ["1/result", "1/arguments"])
    # the plain digest of the arguments would confirm a guessed order id: withheld too
    assert done.fields == ["1/result", "1/arguments", "1/request_digest"]
    assert done.still_visible == ["2/arguments"]
    facts = (tmp_path / "leak" / "facts.jsonl").read_text().splitlines()
    assert "A-42" not in facts[0] and "request_digest" in facts[0]
    assert verify_bundle(tmp_path / "leak", trust).withheld_fields == [
        "1/arguments",
        "1/request_digest",
        "1/result",
    ]


def test_rehash_of_a_sealed_bundle_says_its_seal_is_out_of_date(
    tmp_path: Path, key: SigningKey, trust: TrustStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_llmwb import Dag, Run

    with Run("edit", dag=Dag("edit").tool("lookup")) as run:
        run.tool_call("lookup", {"order": "A-42"}, lambda: {"status": "shipped"})
    run.save(tmp_path / "b")
    seal_bundle(tmp_path / "b", key)
    facts = tmp_path / "b" / "facts.jsonl"
    facts.write_text(facts.read_text().replace("shipped", "refunded"))
    assert main(["rehash", str(tmp_path / "b")]) == 0
    assert f"the seal of {tmp_path / 'b'} is out of date" in capsys.readouterr().err
    with pytest.raises(SealVerificationError):
        verify_bundle(tmp_path / "b", trust)
