"""Gate decisions signed by the reviewer's own key, checked by llmwb explain."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmwb import (
    Dag,
    PolicyRef,
    PolicyReviewer,
    Reviewer,
    Run,
    SealError,
    SignedReviewer,
    load_bundle,
)
from pytest_llmwb.cli import main
from pytest_llmwb.evidence.decisions import check_decision
from pytest_llmwb.evidence.keys import SigningKey, TrustStore, generate_key

DAG = Dag("refunds").tool("issue_refund").gate("approve", policy="refunds")
POLICY = PolicyRef(id="refunds", version="7")


def _record(path: Path, key: SigningKey | str, *, amount: int = 120, mode: str = "record") -> Run:
    ana = Reviewer(id="ana@example.com", kind="human")
    reviewer = SignedReviewer(lambda subject: ("approved", "within budget"), key, identity=ana)
    kwargs = {"replay": path} if mode == "replay" else {}
    with Run("refund", dag=DAG, mode=mode, **kwargs) as run:  # type: ignore[arg-type]
        run.gate("approve", subject={"amount": amount}, policy=POLICY, reviewer=reviewer)
    if mode == "record":
        run.save(path)
    return run


def test_a_signed_decision_names_its_key_and_verifies(tmp_path: Path, key: SigningKey) -> None:
    _record(tmp_path / "b", key)
    (gate,) = load_bundle(tmp_path / "b").gates()
    assert gate.reviewer.id == "ana@example.com" and gate.reviewer.keyid == key.keyid
    assert gate.signature
    check = check_decision(gate, TrustStore.load([key.source + ".pub"]))
    assert check.signed and check.verified is True
    assert check_decision(gate).verified is None  # not checked without a trust store


@pytest.mark.parametrize(
    "change",
    [
        {"decision": "rejected"},
        {"reason": "over budget"},
        {"gate_id": "other"},
        {"policy": PolicyRef(id="refunds", version="8")},
    ],
)
def test_a_changed_decision_does_not_verify(
    tmp_path: Path, key: SigningKey, change: dict[str, object]
) -> None:
    _record(tmp_path / "b", key)
    (gate,) = load_bundle(tmp_path / "b").gates()
    trust = TrustStore.load([key.source + ".pub"])
    assert check_decision(gate.model_copy(update=change), trust).verified is False


def test_a_signature_moved_to_another_subject_does_not_verify(
    tmp_path: Path, key: SigningKey
) -> None:
    _record(tmp_path / "a", key, amount=120)
    _record(tmp_path / "b", key, amount=9000)
    (small,) = load_bundle(tmp_path / "a").gates()
    (large,) = load_bundle(tmp_path / "b").gates()
    trust = TrustStore.load([key.source + ".pub"])
    moved = large.model_copy(update={"signature": small.signature})
    assert check_decision(moved, trust).verified is False


def test_signed_decisions_are_deterministic_and_replay_signed(
    tmp_path: Path, key: SigningKey
) -> None:
    _record(tmp_path / "a", key)
    _record(tmp_path / "b", key)
    assert (tmp_path / "a" / "facts.jsonl").read_bytes() == (
        tmp_path / "b" / "facts.jsonl"
    ).read_bytes()
    replayed = _record(tmp_path / "a", key, mode="replay")
    assert replayed.gates["approve"].signature == load_bundle(tmp_path / "a").gates()[0].signature


def test_explain_says_whether_and_by_whom_a_decision_is_signed(
    tmp_path: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(tmp_path / "b", key)
    with Run("unsigned", dag=DAG) as run:
        run.gate(
            "approve",
            subject={"amount": 1},
            policy=POLICY,
            reviewer=PolicyReviewer(POLICY, lambda s: True),
        )
    run.save(tmp_path / "unsigned")
    bundle = str(tmp_path / "b")
    assert main(["explain", bundle]) == 0
    assert f"signature: signed by key {key.keyid[:12]}: not checked" in capsys.readouterr().out
    assert main(["explain", bundle, "--trust", key.source + ".pub"]) == 0
    assert f"verifies against {key.source}.pub" in capsys.readouterr().out
    other = generate_key(tmp_path / "keys" / "bob")
    assert main(["explain", bundle, "--trust", other.source + ".pub"]) == 0
    assert "not in the trust store: NOT VERIFIED" in capsys.readouterr().out
    assert main(["explain", str(tmp_path / "unsigned")]) == 0
    assert "signature: not signed" in capsys.readouterr().out


def test_a_missing_reviewer_key_is_a_seal_error(tmp_path: Path) -> None:
    with pytest.raises(SealError, match="cannot read the private key"):
        SignedReviewer(lambda s: True, tmp_path / "nope.pem")


def test_a_subject_swapped_under_a_signed_decision_does_not_verify(
    tmp_path: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "b"
    _record(path, key, amount=20)
    facts = path / "facts.jsonl"
    facts.write_text(facts.read_text().replace('"value":{"amount":20}', '"value":{"amount":50000}'))
    assert main(["rehash", str(path)]) == 0  # the bundle accepts the edit as a bundle ...
    (gate,) = load_bundle(path).gates()
    trust = TrustStore.load([key.source + ".pub"])
    check = check_decision(gate, trust, load_bundle(path).facts)
    # ... but the decision was not made on what it now shows
    assert check.verified is False
    assert check.subject_problem == "its value does not have the digest the decision was made on"
    assert main(["explain", str(path), "--trust", key.source + ".pub"]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT VERIFY (the subject was changed: its value" in out
    assert "verifies against" not in out


def test_an_artifact_subject_is_checked_against_the_revision_it_names(
    tmp_path: Path, key: SigningKey
) -> None:
    ana = Reviewer(id="ana@example.com", kind="human")
    reviewer = SignedReviewer(lambda subject: ("approved", "fine"), key, identity=ana)
    dag = Dag("replies").node("draft").gate("review").edge("draft", "review")
    with Run("reply", dag=dag) as run:
        reply = run.artifact("reply", {"text": "Refund issued."}, node="draft")
        run.gate("review", subject=reply, reviewer=reviewer)
    facts = list(run.facts)
    trust = TrustStore.load([key.source + ".pub"])
    assert check_decision(facts[1], trust, facts).verified is True
    swapped = facts[0].model_copy(update={"content": {"text": "No refund."}})
    assert check_decision(facts[1], trust, [swapped, facts[1]]).subject_problem == (
        "artifact 'reply' (fact 1) does not have the digest the decision was made on"
    )
