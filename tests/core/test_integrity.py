"""Bundle integrity: the manifest covers every file and blob, and load checks them all.

The bundles here are real: copies of the example project's committed bundles (calls
captured over HTTP through the openai SDK, so each model_io fact names a wire exchange
blob that replay serves byte for byte), or runs recorded with ``Run``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pytest_llmwb import (
    BundleCorruptError,
    BundleIntegrityError,
    BundleNotFoundError,
    ModelResponse,
    Run,
    SchemaVersionError,
    load_bundle,
)
from pytest_llmwb.cli import main
from pytest_llmwb.codec import digest_bytes
from pytest_llmwb.store import BLOB_THRESHOLD, MAX_BLOB_BYTES, rehash_bundle

EXAMPLE = (
    Path(__file__).parents[2]
    / "example_project/tests/llmwb_bundles/test_refund"
    / "test_reviewer_edits_the_reply_before_it_is_sent"
)


@pytest.fixture
def captured(tmp_path: Path) -> Path:
    """A copy of a committed bundle whose model calls were captured over HTTP."""
    return Path(shutil.copytree(EXAMPLE, tmp_path / "captured"))


def _records(bundle: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (bundle / "facts.jsonl").read_bytes().splitlines()]


def _write_records(bundle: Path, records: list[dict[str, Any]]) -> None:
    (bundle / "facts.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _exchange_blob(bundle: Path) -> Path:
    ref = next(r["exchange"] for r in _records(bundle) if r["kind"] == "model_io")
    return bundle / "blobs" / ref.removeprefix("sha256:")


def _reseal_manifest(bundle: Path) -> None:
    """What an attacker who also edits manifest.json does: every digest made to match."""
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    for name in manifest["files"]:
        manifest["files"][name] = digest_bytes((bundle / name).read_bytes())
    manifest["facts_digest"] = manifest["files"]["facts.jsonl"]
    (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))


def llmwb(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- the manifest covers every file ---------------------------------------------------------


def test_the_manifest_lists_a_digest_for_every_file_and_names_every_blob(captured: Path) -> None:
    manifest = orjson.loads((captured / "manifest.json").read_bytes())
    assert manifest["schema_version"] == 2
    assert manifest["files"] == {
        name: digest_bytes((captured / name).read_bytes())
        for name in ("dag.json", "facts.jsonl", "volatile.json")
    }
    assert sorted(p.name for p in (captured / "blobs").iterdir()) == [
        ref.removeprefix("sha256:") for ref in manifest["blobs"]
    ]


@pytest.mark.parametrize("change", ["flip", "delete"])
@pytest.mark.parametrize("lazy", [False, True])
def test_a_changed_or_deleted_exchange_blob_fails_load_before_anything_is_served(
    captured: Path, change: str, lazy: bool
) -> None:
    blob = _exchange_blob(captured)
    if change == "flip":
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
        expected: type[BundleCorruptError] = BundleIntegrityError
    else:
        blob.unlink()
        expected = BundleCorruptError
    with pytest.raises(expected, match=blob.name if change == "flip" else "is missing"):
        load_bundle(captured, lazy=lazy)


def test_show_and_diff_refuse_a_bundle_whose_exchange_blob_changed(
    captured: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = Path(shutil.copytree(captured, tmp_path / "original"))
    blob = _exchange_blob(captured)
    blob.write_bytes(blob.read_bytes().replace(b"refund", b"refunX", 1))
    code, _, err = llmwb(capsys, "show", captured)
    assert code == 2
    assert "does not match its digest" in err
    code, out, err = llmwb(capsys, "diff", original, captured)
    assert code == 2
    assert "no changes" not in out
    assert blob.name in err


def test_an_unlisted_file_in_blobs_is_refused(captured: Path) -> None:
    (captured / "blobs" / ("0" * 64)).write_bytes(b"smuggled")
    with pytest.raises(BundleIntegrityError, match=r"not listed in manifest.json"):
        load_bundle(captured)


def test_a_reformatted_dag_file_fails_its_file_digest(captured: Path) -> None:
    dag = orjson.loads((captured / "dag.json").read_bytes())
    (captured / "dag.json").write_bytes(orjson.dumps(dag))  # same DAG, other bytes
    with pytest.raises(BundleIntegrityError, match=r"dag.json does not match its digest"):
        load_bundle(captured)


# --- volatile.json ------------------------------------------------------------------------


def test_an_edited_volatile_file_fails_its_digest(captured: Path) -> None:
    volatile = orjson.loads((captured / "volatile.json").read_bytes())
    volatile["facts"]["2"]["duration_ms"] = 1.0  # well-formed, but not what was recorded
    (captured / "volatile.json").write_bytes(orjson.dumps(volatile))
    with pytest.raises(BundleIntegrityError, match=r"volatile.json does not match its digest"):
        load_bundle(captured)


@pytest.mark.parametrize(
    ("seq", "key", "value", "message"),
    [
        ("2", "response", {"content": "TAMPERED"}, "'response' would change what the fact says"),
        ("9", "decision", "rejected", "'decision' would change what the fact says"),
        ("2", "duration_ms", "fast", "duration_ms has the wrong type"),
        ("2", "trace_id", "XYZ", "trace_id has the wrong type"),
        ("2", "timing", [0.1, "x"], "timing has the wrong type"),
        ("99", "at", "2026-01-01", "there is no fact seq 99"),
    ],
)
def test_volatile_values_can_never_change_what_a_fact_says(
    captured: Path, seq: str, key: str, value: Any, message: str
) -> None:
    volatile = orjson.loads((captured / "volatile.json").read_bytes())
    volatile["facts"].setdefault(seq, {})[key] = value
    (captured / "volatile.json").write_bytes(orjson.dumps(volatile))
    _reseal_manifest(captured)  # even with every digest made to match
    with pytest.raises(BundleCorruptError, match=message) as excinfo:
        load_bundle(captured)
    assert excinfo.value.path.endswith("volatile.json")
    assert (excinfo.value.field or "").startswith(f"facts.{seq}")


def test_volatile_run_values_are_strings_of_three_known_keys(captured: Path) -> None:
    volatile = orjson.loads((captured / "volatile.json").read_bytes())
    volatile["run"]["mode"] = ["record"]
    (captured / "volatile.json").write_bytes(orjson.dumps(volatile))
    _reseal_manifest(captured)
    with pytest.raises(BundleCorruptError, match=r"run.mode must be a string"):
        load_bundle(captured)


def test_a_volatile_value_written_into_facts_is_refused(captured: Path) -> None:
    records = _records(captured)
    records[1]["duration_ms"] = 5.0
    _write_records(captured, records)
    _reseal_manifest(captured)
    with pytest.raises(BundleCorruptError, match=r"kept in volatile.json") as excinfo:
        load_bundle(captured)
    assert excinfo.value.line == 2


# --- blob references ----------------------------------------------------------------------


def _record_long_reply(path: Path) -> Path:
    with Run("long") as run:
        run.model_io(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            lambda request: ModelResponse(content="y" * (BLOB_THRESHOLD + 1)),
            node="answer",
        )
    run.save(path)
    return path


def _point_blob_at(bundle: Path, ref: Any) -> None:
    records = _records(bundle)
    records[0]["response"]["content"] = {"$blob": ref, "bytes": 1}
    _write_records(bundle, records)
    _reseal_manifest(bundle)


@pytest.mark.parametrize(
    "ref",
    [
        "sha256:/dev/zero",
        "sha256:../../../../etc/passwd",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "md5:" + "a" * 64,
        5,
        None,
    ],
)
def test_a_blob_reference_must_be_sha256_and_64_lowercase_hex(tmp_path: Path, ref: Any) -> None:
    bundle = _record_long_reply(tmp_path / "b")
    _point_blob_at(bundle, ref)
    with pytest.raises(BundleCorruptError, match="is not a blob reference") as excinfo:
        load_bundle(bundle)
    assert excinfo.value.line == 1


def _with_timeout(call: Callable[[], Any], seconds: float = 10.0) -> BaseException | None:
    """Run ``call`` in a thread; fail the test if it hangs (a FIFO would block a reader)."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} hung for {seconds} s"
    return caught[0] if caught else None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_place_of_a_blob_is_refused_without_hanging(tmp_path: Path) -> None:
    bundle = _record_long_reply(tmp_path / "b")
    (blob,) = (bundle / "blobs").iterdir()
    blob.unlink()
    os.mkfifo(blob)
    error = _with_timeout(lambda: load_bundle(bundle))
    assert isinstance(error, BundleCorruptError)
    assert "not a regular file" in str(error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("name", ["dag.json", "facts.jsonl", "volatile.json", "manifest.json"])
def test_a_fifo_or_directory_in_place_of_a_bundle_file_is_refused(
    captured: Path, name: str
) -> None:
    # a manifest.json that is not a file means there is no bundle here
    expected = BundleNotFoundError if name == "manifest.json" else BundleCorruptError
    (captured / name).unlink()
    os.mkfifo(captured / name)
    assert isinstance(_with_timeout(lambda: load_bundle(captured)), expected)
    (captured / name).unlink()
    (captured / name).mkdir()
    assert isinstance(_with_timeout(lambda: load_bundle(captured)), expected)


def test_an_oversized_blob_is_refused_before_it_is_read(tmp_path: Path) -> None:
    bundle = _record_long_reply(tmp_path / "b")
    (blob,) = (bundle / "blobs").iterdir()
    with open(blob, "r+b") as handle:
        handle.truncate(MAX_BLOB_BYTES + 1)  # sparse: nothing is allocated
    with pytest.raises(BundleCorruptError, match=r"over the .*-byte limit"):
        load_bundle(bundle)


# --- rehash -------------------------------------------------------------------------------


def test_rehash_refuses_a_fact_that_no_longer_says_what_its_exchange_says(
    captured: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _records(captured)
    seq = next(r["seq"] for r in records if r["kind"] == "model_io")
    records[seq - 1]["response"]["content"] = "TAMPERED"
    _write_records(captured, records)
    manifest_before = (captured / "manifest.json").read_bytes()
    code, _, err = llmwb(capsys, "rehash", captured)
    assert code == 2
    assert f"fact seq {seq} (node 'classify') no longer says what its captured wire" in err
    assert "response/content is 'TAMPERED' but the exchange says" in err
    assert f"facts.jsonl:{seq}" in err
    assert "git checkout --" in err
    assert (captured / "manifest.json").read_bytes() == manifest_before  # not rehashed


def test_rehash_refuses_an_edited_request_too(captured: Path) -> None:
    records = _records(captured)
    first = next(r for r in records if r["kind"] == "model_io")
    first["request"]["model"] = "another-model"
    _write_records(captured, records)
    with pytest.raises(BundleIntegrityError, match=r"request/model is 'another-model'"):
        rehash_bundle(captured)


def test_rehash_accepts_an_edit_of_a_fact_that_has_no_exchange(captured: Path) -> None:
    records = _records(captured)
    gate = next(r for r in records if r["kind"] == "gate")
    gate["reason"] = "edited by hand, on purpose"
    _write_records(captured, records)
    with pytest.raises(BundleIntegrityError, match="edited after recording"):
        load_bundle(captured)
    rehashed = rehash_bundle(captured)
    assert "edited by hand, on purpose" in [g.reason for g in rehashed.gates()]


# --- schema_version 1 -----------------------------------------------------------------------


def _as_version_1(bundle: Path) -> None:
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    del manifest["files"]
    manifest["schema_version"] = 1
    (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))


def test_a_version_1_bundle_asks_for_rehash_or_record(captured: Path) -> None:
    _as_version_1(captured)
    with pytest.raises(SchemaVersionError) as excinfo:
        load_bundle(captured)
    message = str(excinfo.value)
    assert "schema_version 1" in message
    assert f"llmwb rehash {captured}" in message
    assert "pytest --llmwb-record" in message


def test_rehash_upgrades_a_version_1_bundle(captured: Path) -> None:
    expected = (captured / "manifest.json").read_bytes()
    _as_version_1(captured)
    rehash_bundle(captured)
    assert (captured / "manifest.json").read_bytes() == expected
    load_bundle(captured)


def test_rehash_of_a_version_1_bundle_still_checks_volatile_values(captured: Path) -> None:
    _as_version_1(captured)
    volatile = orjson.loads((captured / "volatile.json").read_bytes())
    volatile["facts"]["2"]["response"] = {"content": "TAMPERED"}
    (captured / "volatile.json").write_bytes(orjson.dumps(volatile))
    with pytest.raises(BundleCorruptError, match="would change what the fact says"):
        rehash_bundle(captured)


def test_a_blob_named_many_times_is_read_and_held_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytest_llmwb.store as store
    from pytest_llmwb import Dag, Run

    long = "x" * 40_000  # stored out of line
    with Run("many", dag=Dag("many").tool("echo")) as run:
        for index in range(30):
            run.tool_call("echo", {"index": index}, lambda: long)
    run.save(tmp_path / "b")
    reads: list[str] = []
    real = store.read_blob

    def counting(blobs_dir: Path, ref: str, **kwargs: Any) -> bytes:
        reads.append(ref)
        return real(blobs_dir, ref, **kwargs)

    monkeypatch.setattr(store, "read_blob", counting)
    results = [fact.result for fact in store.load_bundle(tmp_path / "b").tool_calls()]
    assert results == [long] * 30
    assert len(reads) == 1
    assert len({id(result) for result in results}) == 1  # one string, not thirty copies
