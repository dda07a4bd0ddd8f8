"""A tiny sealed bundle (one fact, one small blob) and key pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmwb import Dag, ModelResponse, Run
from pytest_llmwb.codec import digest_bytes
from pytest_llmwb.evidence.keys import SigningKey, TrustStore, generate_key
from pytest_llmwb.evidence.seal import seal_bundle
from pytest_llmwb.store import write_bundle

TINY_DAG = Dag("tiny").model("answer", prompt="Answer.", model="m-1")
SECRET_REPLY = "card 4000-1234 expires soon"
EXCHANGE = (
    b'{"format":"llmwb-exchange/1","request":{"body":"hi"},"response":{"body":"'
    + SECRET_REPLY.encode()
    + b'"}}'
)


def write_tiny(path: Path) -> Path:
    """One model call whose captured exchange (a small blob) repeats its answer."""
    with Run("tiny", dag=TINY_DAG) as run:
        run.model_io(
            {"model": "m-1", "messages": [{"role": "user", "content": "hi"}]},
            lambda request: ModelResponse(content=SECRET_REPLY),
            node="answer",
        )
    ref = digest_bytes(EXCHANGE)
    facts = [f.model_copy(update={"exchange": ref}) for f in run.facts]
    write_bundle(path, name="tiny", dag=run.dag, facts=facts, blobs={ref: EXCHANGE})
    return path


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return generate_key(tmp_path / "keys" / "alice")


@pytest.fixture
def trust(key: SigningKey) -> TrustStore:
    return TrustStore.load([key.source + ".pub"])


@pytest.fixture
def tiny(tmp_path: Path, key: SigningKey) -> Path:
    """A sealed tiny bundle."""
    path = write_tiny(tmp_path / "tiny")
    seal_bundle(path, key)
    return path
