"""Regression tests from a review of sealing: what commitments cover, hostile bundles,
interrupted redaction, named errors, and what an INVALID or a proof tells its reader."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from pytest_llmwb import (
    Dag,
    RedactionError,
    Run,
    SealError,
    SealVerificationError,
    prove_fact,
    redact_bundle,
    seal_bundle,
    verify_bundle,
    verify_proof,
)
from pytest_llmwb.cli import main
from pytest_llmwb.codec import dumps_pretty
from pytest_llmwb.evidence.keys import SigningKey, TrustStore
from pytest_llmwb.store import write_bundle

from .conftest import write_tiny

BIG = 2**60 + 1  # above 2**53: not exact as a double


def write_request(
    path: Path, request: dict[str, Any], *, name: str = "numbers", result: Any = True
) -> Path:
    """One tool call with ``request`` as its arguments: any JSON, stored as given."""
    dag = Dag("numbers").tool("lookup")
    with Run(name, dag=dag) as run:
        run.tool_call("lookup", request, lambda: {"ok": result})
    write_bundle(path, name=name, dag=run.dag, facts=run.facts, labels={"build": name})
    return path


REQUEST = {
    "model": "m-1",
    "max_tokens": 20,
    "seed": 12345,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"max_tokens":20,', b'"max_tokens":20.0,'),
        (b'"seed":12345,', b'"seed":12345.0,'),
        (b'"model":"m-1","max_tokens":20,', b'"max_tokens":20,"model":"m-1",'),
        (b'{"seq":1,', b'{"seq":1.0,'),
    ],
    ids=["20.0", "12345.0", "key-order", "seq-1.0"],
)
def test_a_change_canonical_json_would_hide_is_invalid_after_rehash(
    tmp_path: Path, key: SigningKey, trust: TrustStore, old: bytes, new: bytes
) -> None:
    path = write_request(tmp_path / "b", REQUEST)
    seal_bundle(path, key)
    facts = path / "facts.jsonl"
    data = facts.read_bytes()
    assert old in data
    facts.write_bytes(data.replace(old, new, 1))
    assert main(["rehash", str(path)]) == 0  # the manifest agrees with the edit
    with pytest.raises(SealVerificationError):
        verify_bundle(path, trust)


def test_integers_above_2_53_seal_verify_and_prove_exactly(
    tmp_path: Path, key: SigningKey, trust: TrustStore
) -> None:
    path = write_request(tmp_path / "b", REQUEST, result=BIG)
    seal_bundle(path, key)
    assert verify_bundle(path, trust).fact_count == 1
    proof = prove_fact(path, 1)
    assert verify_proof(proof, trust)["result"] == {"ok": BIG}
    # a proof whose value differs only where a double cannot tell does not verify
    proof["fact"]["fields"]["result"]["value"]["ok"] = BIG + 1
    with pytest.raises(SealVerificationError, match="does not lead to the signed Merkle root"):
        verify_proof(proof, trust)


def test_a_proof_with_a_value_respelled_as_a_float_does_not_verify(
    tmp_path: Path, key: SigningKey, trust: TrustStore
) -> None:
    path = write_request(tmp_path / "b", REQUEST)
    seal_bundle(path, key)
    proof = prove_fact(path, 1)
    proof["fact"]["fields"]["arguments"]["value"]["max_tokens"] = 20.0
    with pytest.raises(SealVerificationError, match="does not lead to the signed Merkle root"):
        verify_proof(proof, trust)
    proof = prove_fact(path, 1)
    proof["fact"]["seq"] = 1.0
    with pytest.raises(SealVerificationError, match="malformed"):
        verify_proof(proof, trust)


# --- hostile files never hang the verifier -------------------------------------------


def _verify_cli(path: Path, pub: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from pytest_llmwb.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "verify", str(path), "--trust", pub],
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test instead of the suite
        check=False,
    )


def _blob(tiny: Path) -> Path:
    (blob,) = (tiny / "blobs").iterdir()
    return blob


@pytest.mark.parametrize(
    "hostile", ["blob-fifo", "blob-dev-zero", "salts-fifo", "redactions-fifo", "dag-fifo"]
)
def test_a_fifo_or_device_in_a_bundle_is_invalid_not_a_hang(
    tiny: Path, key: SigningKey, hostile: str
) -> None:
    if hostile.startswith("blob"):
        target = _blob(tiny)
    elif hostile == "dag-fifo":
        target = tiny / "dag.json"
    else:
        target = tiny / "seal" / ("salts.jsonl" if hostile == "salts-fifo" else "redactions.json")
    target.unlink(missing_ok=True)
    if hostile == "blob-dev-zero":
        target.symlink_to("/dev/zero")
    else:
        os.mkfifo(target)
    result = _verify_cli(tiny, key.source + ".pub")
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("INVALID: ")
    assert target.name in result.stdout
    assert "not a regular file" in result.stdout


# --- redaction converges after an interruption ---------------------------------------


def test_redacting_again_after_an_interruption_before_the_blob_was_deleted(
    tiny: Path, trust: TrustStore
) -> None:
    """The state a crash left between rewriting the facts and deleting the blobs."""
    blob = _blob(tiny)
    kept = blob.read_bytes()
    redact_bundle(tiny, ["1/response"])
    assert not blob.exists()
    blob.write_bytes(kept)  # the unlink never happened
    with pytest.raises(SealVerificationError, match="listed as withheld but present"):
        verify_bundle(tiny, trust)
    redact_bundle(tiny, ["1/response"])
    assert not blob.exists()
    assert verify_bundle(tiny, trust).redacted
    redact_bundle(tiny, ["1/request"])  # any later redaction converges too
    assert verify_bundle(tiny, trust).withheld_fields == [
        "1/request",
        "1/request_digest",
        "1/response",
    ]


def test_redacting_again_after_an_interruption_before_the_salts_were_written(
    tiny: Path, trust: TrustStore
) -> None:
    salts = tiny / "seal" / "salts.jsonl"
    before = salts.read_bytes()
    redact_bundle(tiny, ["1/response"])
    salts.write_bytes(before)  # the facts were rewritten, the salts not yet
    with pytest.raises(SealVerificationError, match="withheld but"):
        verify_bundle(tiny, trust)
    redact_bundle(tiny, ["1/response"])
    assert verify_bundle(tiny, trust).withheld_fields == ["1/response"]


# --- named errors, not crashes ---------------------------------------------------------


def test_a_non_ascii_digit_in_a_redaction_path_is_a_redaction_error(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["redact", str(tiny), "--path", "²/result"]) == 2
    assert "'²/result' is not a redaction path" in capsys.readouterr().err
    with pytest.raises(RedactionError):
        redact_bundle(tiny, ["¹/response"])


def test_a_non_ascii_digit_in_redactions_json_is_invalid(tiny: Path, trust: TrustStore) -> None:
    (tiny / "seal" / "redactions.json").write_bytes(dumps_pretty({"fields": ["²/x"], "blobs": []}))
    with pytest.raises(SealVerificationError, match="names '²/x', not SEQ/FIELD"):
        verify_bundle(tiny, trust)


def test_redacting_a_field_whose_salt_is_gone_is_a_redaction_error(tiny: Path) -> None:
    salts = tiny / "seal" / "salts.jsonl"
    line = orjson.loads(salts.read_bytes())
    del line["response"]
    salts.write_bytes(orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n")
    with pytest.raises(RedactionError, match="field 'response' has no salt"):
        redact_bundle(tiny, ["1/response"])


def test_a_genuine_value_shaped_like_a_withheld_one_is_refused_by_seal(
    tmp_path: Path, key: SigningKey
) -> None:
    dag = Dag("shaped").tool("lookup")
    with Run("shaped", dag=dag) as run:
        run.tool_call("lookup", {"order": "A-42"}, lambda: {"$redacted": "not really"})
    path = tmp_path / "b"
    write_bundle(path, name="shaped", dag=run.dag, facts=run.facts)
    with pytest.raises(SealError, match=r"fact 1 \(tool_call\): field 'result'") as info:
        seal_bundle(path, key)
    assert not isinstance(info.value, SealVerificationError)
    assert not (path / "seal").exists()


# --- what the verifier reads -----------------------------------------------------------


def test_verify_proof_names_the_signed_run_its_labels_root_and_key(
    tmp_path: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = key.source + ".pub"
    proofs = {}
    for name in ("b1", "b2"):
        path = write_request(tmp_path / name, REQUEST, name=name)
        seal_bundle(path, key)
        proofs[name] = tmp_path / f"{name}.json"
        assert main(["prove", str(path), "--fact", "1", "-o", str(proofs[name])]) == 0
        root = verify_bundle(path, TrustStore.load([pub])).root
        capsys.readouterr()
        assert main(["verify-proof", str(proofs[name]), "--trust", pub]) == 0
        head = capsys.readouterr().out.splitlines()[:3]
        assert head == [
            "VALID: fact 1 (tool_call at node lookup)",
            f"  run {name} (build={name}), root sha256:{root[:16]}",
            f"  signed by key {key.keyid[:12]} ({pub})",
        ]


def test_invalid_tells_the_verifier_to_get_the_original_not_to_reseal(
    tiny: Path, key: SigningKey, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = key.source + ".pub"
    expected = (
        "fix: get the original bundle again from its source; if the change is yours and "
        f"intended, record and seal again: llmwb seal {tiny} --key KEY\n"
    )
    envelope = tiny / "seal" / "envelope.json"
    good = envelope.read_bytes()
    envelope.write_bytes(good.replace(b'"payload": "', b'"payload": "AAAA', 1))
    assert main(["verify", str(tiny), "--trust", pub]) == 1
    out = capsys.readouterr().out
    assert out.endswith(expected), out
    envelope.write_bytes(good)
    facts = tiny / "facts.jsonl"
    facts.write_bytes(facts.read_bytes().replace(b"m-1", b"m-2"))
    assert main(["verify", str(tiny), "--trust", pub]) == 1
    assert capsys.readouterr().out.endswith(expected)
    # an untrusted signer is not a change to the bundle: that advice stays
    stranger = tmp_path / "stranger"
    assert main(["keygen", str(stranger)]) == 0
    capsys.readouterr()
    assert main(["verify", str(tiny), "--trust", f"{stranger}.pub"]) == 1
    assert "fix: get the signer's public key through a channel you trust" in capsys.readouterr().out


def test_sealing_with_the_public_key_says_to_pass_the_private_one(
    tmp_path: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_tiny(tmp_path / "b")
    assert main(["seal", str(bundle), "--key", key.source + ".pub"]) == 2
    err = capsys.readouterr().err
    assert f"{key.source}.pub is a public key" in err
    assert f"fix: pass the private key instead: --key {key.source} " in err
    assert "llmwb keygen" not in err
    shutil.rmtree(bundle)
