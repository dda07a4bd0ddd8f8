"""Scrubbing in the recording API: before digests, in record and replay alike, and at write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_llmwb import (
    Dag,
    ErrorFact,
    GateDecision,
    ModelRequest,
    ModelResponse,
    PayloadDriftError,
    Reviewer,
    Run,
    load_bundle,
    model,
    tool,
)
from pytest_llmwb.codec import digest, digest_bytes
from pytest_llmwb.exceptions import SecretFoundError
from pytest_llmwb.schema import ModelIOFact
from pytest_llmwb.scrub import Scrubber
from pytest_llmwb.store import write_bundle

from .conftest import FAKES

OPENAI = FAKES["openai-key"]
GITHUB = FAKES["github-token"]
JWT = FAKES["jwt"]


def every_byte(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


SEEN: dict[str, Any] = {}


@tool
def fetch_repo(repo: str, token: str) -> dict[str, str]:
    SEEN["token"] = token
    return {"repo": repo, "session": f"Bearer {JWT}"}


@model(provider="custom")
def chat(request: ModelRequest) -> ModelResponse:
    SEEN["request"] = request
    return ModelResponse(content=f"use {OPENAI} for that", finish_reason="stop")


def agent() -> tuple[dict[str, str], ModelResponse]:
    result = fetch_repo("acme/app", token=GITHUB)
    reply = chat({"model": "m-1", "messages": [{"role": "user", "content": f"key {OPENAI}"}]})
    return result, reply


def test_live_callers_get_the_secrets_and_the_bundle_does_not(tmp_path: Path) -> None:
    SEEN.clear()
    with Run("r") as run:
        result, reply = agent()
    # live: the tool, the model and the host see the real values
    assert SEEN["token"] == GITHUB
    assert SEEN["request"].messages[0].content == f"key {OPENAI}"
    assert result["session"] == f"Bearer {JWT}"
    assert reply.content == f"use {OPENAI} for that"
    # recorded: placeholders, and the digests are of what is recorded
    tool_fact, model_fact = run.tool_calls[0], run.model_calls[0]
    assert tool_fact.arguments["token"].startswith("<secret:github-token:")
    assert tool_fact.request_digest == digest(
        {"tool": "fetch_repo", "arguments": tool_fact.arguments}
    )
    assert tool_fact.result["session"].startswith("Bearer <secret:bearer-token:")  # type: ignore[index,call-overload]
    assert model_fact.request.messages[0].content.startswith("key <secret:openai-key:")  # type: ignore[union-attr]
    assert model_fact.request_digest == digest(model_fact.request.model_dump(mode="json"))
    assert model_fact.response is not None
    assert "<secret:openai-key:" in (model_fact.response.content or "")
    run.save(tmp_path / "b")
    data = every_byte(tmp_path / "b")
    for secret in (OPENAI, GITHUB, JWT):
        assert secret.encode() not in data


def test_replay_matches_because_both_sides_are_scrubbed(tmp_path: Path) -> None:
    with Run("r") as run:
        agent()
    run.save(tmp_path / "b")
    SEEN.clear()
    with Run.replay(tmp_path / "b") as replay:
        result, reply = agent()
    replay.check_complete()
    assert SEEN == {}  # nothing ran live
    # served from the bundle: the recorded (scrubbed) values
    assert result["session"].startswith("Bearer <secret:bearer-token:")
    assert "<secret:openai-key:" in (reply.content or "")


def test_another_secret_of_the_same_shape_is_drift(tmp_path: Path) -> None:
    with Run("r") as run:
        agent()
    run.save(tmp_path / "b")
    with Run.replay(tmp_path / "b"), pytest.raises(PayloadDriftError) as info:
        fetch_repo("acme/app", token=GITHUB[:-1] + "Q")
    assert GITHUB not in str(info.value)


def test_errors_artifacts_gate_subjects_and_the_dag_are_scrubbed(tmp_path: Path) -> None:
    dag = Dag("d").model("m-node", system=f"call with {OPENAI}").tool("t")
    with Run("r", dag=dag) as run:
        assert OPENAI not in str(run.dag.model_dump())
        with pytest.raises(ValueError, match="bad token"):
            run.tool_call("t", {}, lambda: (_ for _ in ()).throw(ValueError(f"bad token {GITHUB}")))
        draft = run.artifact("reply", {"text": f"your key: {OPENAI}"}, node="m-node")
        assert draft.content_digest == digest(draft.content)
        run.gate(
            "t",
            subject={"share": JWT},
            reviewer=lambda s: GateDecision(
                decision="approved", reviewer=Reviewer(id="x", kind="test")
            ),
        )
    assert run.tool_calls[0].error is not None
    assert run.tool_calls[0].error.message.startswith("bad token <secret:github-token:")
    run.save(tmp_path / "b")
    data = every_byte(tmp_path / "b")
    for secret in (OPENAI, GITHUB, JWT):
        assert secret.encode() not in data
    load_bundle(tmp_path / "b")  # digests still consistent


def test_strict_run_fails_the_call_naming_the_field() -> None:
    with Run("r", scrubber=Scrubber(strict=True)), pytest.raises(SecretFoundError) as info:
        fetch_repo("acme/app", token=GITHUB)
    assert info.value.field == "/token" and info.value.rule == "github-token"
    assert "tool 'fetch_repo'" in str(info.value) and GITHUB not in str(info.value)
    with Run("r", scrubber=Scrubber(strict=True)), pytest.raises(SecretFoundError) as info:
        chat({"model": "m-1", "messages": [{"role": "user", "content": OPENAI}]})
    assert info.value.field == "/messages/0/content"
    assert "model_io request on node 'chat'" in str(info.value)


def test_blobs_added_to_a_run_are_scrubbed() -> None:
    with Run("r") as run:
        ref = run.add_blob(b'{"authorization": "Bearer ' + OPENAI.encode() + b'"}')
    assert OPENAI.encode() not in run.blob(ref)
    assert ref == digest_bytes(run.blob(ref))


# --- write_bundle: the last line of defence -------------------------------------------------


def _leaky_run() -> Run:
    """A run with a secret that no upstream scrubbing saw (a fact appended directly)."""
    run = Run("r", scrubber=Scrubber(strict=False))
    with run:
        run.append(ErrorFact, node="n", type="Boom", message=f"leaked {OPENAI}")
    return run


def test_write_bundle_scrubs_what_upstream_missed(tmp_path: Path) -> None:
    run = _leaky_run()
    assert OPENAI in run.facts[0].message  # in memory: as appended
    run.save(tmp_path / "b")
    assert OPENAI.encode() not in every_byte(tmp_path / "b")
    assert load_bundle(tmp_path / "b").facts[0].message.startswith("leaked <secret:openai-key:")


def test_write_bundle_strict_refuses_and_writes_nothing(tmp_path: Path) -> None:
    run = _leaky_run()
    with pytest.raises(SecretFoundError) as info:
        write_bundle(
            tmp_path / "b",
            name="r",
            dag=run.dag,
            facts=run.facts,
            scrubber=Scrubber(strict=True),
        )
    assert info.value.where == "facts.jsonl line 1" and info.value.field == "/message"
    assert not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory left behind


def test_write_bundle_rekeys_a_scrubbed_blob_and_its_exchange(tmp_path: Path) -> None:
    raw = b"Authorization: Bearer " + OPENAI.encode()
    ref = digest_bytes(raw)
    fact = ModelIOFact(
        seq=1,
        node="n",
        ordinal=0,
        provider="openai",
        request=ModelRequest(model="m"),
        request_digest=digest({}),
        exchange=ref,
    )
    with Run("r") as run:
        pass
    bundle = write_bundle(tmp_path / "b", name="r", dag=run.dag, facts=[fact], blobs={ref: raw})
    loaded = load_bundle(tmp_path / "b")
    new_ref = loaded.facts[0].exchange
    assert new_ref != ref and new_ref in loaded.manifest.blobs
    assert OPENAI.encode() not in loaded.blob(new_ref)
    assert OPENAI.encode() not in every_byte(tmp_path / "b")
    assert bundle.manifest.blobs == [new_ref]
    with pytest.raises(SecretFoundError, match="blobs/"):
        write_bundle(
            tmp_path / "c",
            name="r",
            dag=run.dag,
            facts=[fact],
            blobs={ref: raw},
            scrubber=Scrubber(strict=True),
        )


def test_write_bundle_scrubs_a_dag_declared_around_the_run(tmp_path: Path) -> None:
    snapshot = Dag("d").model("m", prompt=f"key {OPENAI}").freeze()
    write_bundle(tmp_path / "b", name="r", dag=snapshot, facts=[])
    assert OPENAI.encode() not in every_byte(tmp_path / "b")
    assert "<secret:openai-key:" in str(load_bundle(tmp_path / "b").dag.nodes[0].config)
    with pytest.raises(SecretFoundError) as info:
        write_bundle(
            tmp_path / "c", name="r", dag=snapshot, facts=[], scrubber=Scrubber(strict=True)
        )
    assert info.value.where == "dag.json, node 'm' config" and info.value.field == "/prompt"
