"""Bundles on disk: round trip, determinism, blobs, strict loading, atomic writes, names."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pytest_llmwb import (
    BundleCorruptError,
    BundleNotFoundError,
    BundleWriteError,
    ModelResponse,
    Run,
    SchemaVersionError,
    UnknownFactKindError,
    load_bundle,
    store,
)
from pytest_llmwb.codec import digest_bytes
from pytest_llmwb.store import BLOB_THRESHOLD, safe_dirname

Tree = Callable[[Path], dict[str, bytes]]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (path / "facts.jsonl").read_bytes().splitlines()]


def _write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    (path / "facts.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = orjson.loads(path.read_bytes())
    edit(data)
    path.write_bytes(orjson.dumps(data))


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- round trip and determinism --------------------------------------------------------------


def test_write_then_load_round_trips_everything(
    tmp_path: Path, record_sample: Callable[..., Run]
) -> None:
    run = record_sample()
    written = run.save(tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    assert loaded.manifest == written.manifest
    assert loaded.dag == run.dag
    assert list(loaded.facts) == run.facts  # volatile values (times, ids) merged back
    assert [f.kind for f in loaded.facts] == ["tool_call", "model_io", "artifact", "gate"]
    assert (len(loaded.tool_calls()), len(loaded.model_io())) == (1, 1)
    assert (len(loaded.artifacts()), len(loaded.gates())) == (1, 1)
    assert loaded.name == "sample"
    assert loaded.manifest.fact_count == 4
    assert loaded.manifest.facts_digest == digest_bytes((tmp_path / "b/facts.jsonl").read_bytes())


def test_unchanged_behaviour_recorded_twice_gives_identical_files(
    tmp_path: Path, record_sample: Callable[..., Run]
) -> None:
    record_sample().save(tmp_path / "one")
    record_sample().save(tmp_path / "two")
    for name in ("dag.json", "facts.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    # the manifest differs in one value only: the digest of volatile.json
    one, two = (orjson.loads((tmp_path / n / "manifest.json").read_bytes()) for n in ("one", "two"))
    assert one["files"].pop("volatile.json") != two["files"].pop("volatile.json")
    assert one == two
    volatile = orjson.loads((tmp_path / "one/volatile.json").read_bytes())
    assert set(volatile["facts"]) == {"1", "2", "3", "4"}  # wall times live here, not in facts
    facts = (tmp_path / "one/facts.jsonl").read_bytes()
    assert b'"at"' not in facts
    assert b"duration_ms" not in facts


def test_rewriting_same_path_changes_only_volatile(
    sample_bundle: Path, record_sample: Callable[..., Run], snapshot_tree: Tree
) -> None:
    before = snapshot_tree(sample_bundle)
    record_sample().save(sample_bundle)
    after = snapshot_tree(sample_bundle)
    assert set(before) == set(after)
    assert {k for k in before if before[k] != after[k]} <= {"volatile.json", "manifest.json"}


def test_facts_file_is_one_compact_record_per_line_led_by_seq_kind_node(
    sample_bundle: Path,
) -> None:
    raw = (sample_bundle / "facts.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    for number, line in enumerate(raw.splitlines(), 1):
        record = orjson.loads(line)
        assert line == orjson.dumps(record)
        assert list(record)[:3] == ["seq", "kind", "node"] and record["seq"] == number


def test_replayed_json_keeps_the_order_the_live_code_built(tmp_path: Path) -> None:
    result = {"zeta": 1, "alpha": {"y": 2, "b": 3}}
    with Run("order") as run:
        run.tool_call("lookup", {"b": 1, "a": 2}, lambda: result)
    run.save(tmp_path / "b")
    with Run("order", mode="replay", replay=tmp_path / "b") as replay:
        served = replay.tool_call("lookup", {"b": 1, "a": 2}, lambda: None)
    assert served == result
    assert list(served) == ["zeta", "alpha"] and list(served["alpha"]) == ["y", "b"]


# --- blobs -----------------------------------------------------------------------------------


def _record_reply(path: Path, reply: str) -> Run:
    with Run("big") as run:
        run.model_io(
            {"model": "m", "messages": [{"role": "user", "content": reply}]},
            lambda request: ModelResponse(content=reply),
            node="answer",
        )
    run.save(path)
    return run


def test_long_strings_go_to_blobs_and_come_back(tmp_path: Path) -> None:
    reply = "é" * BLOB_THRESHOLD  # 2 bytes each: well over the threshold
    _record_reply(tmp_path / "b", reply)
    data = reply.encode()
    ref = digest_bytes(data)
    blob = tmp_path / "b/blobs" / ref.removeprefix("sha256:")
    assert blob.read_bytes() == data
    facts = (tmp_path / "b/facts.jsonl").read_bytes()
    assert reply.encode() not in facts
    assert facts.count(ref.encode()) == 2  # request and response, one blob
    assert len(list((tmp_path / "b/blobs").iterdir())) == 1
    loaded = load_bundle(tmp_path / "b")
    assert loaded.manifest.blobs == [ref]
    call = loaded.model_io()[0]
    assert call.response is not None
    assert call.response.content == reply
    assert call.request.messages[0].content == reply
    # the request digest was computed over the inline value, so replay still matches
    with Run.replay(tmp_path / "b") as again:
        again.model_io(
            {"model": "m", "messages": [{"role": "user", "content": reply}]},
            lambda request: pytest.fail("replay must not call live"),
            node="answer",
        )
    again.check_complete()


def test_blob_threshold_is_on_utf8_bytes(tmp_path: Path) -> None:
    _record_reply(tmp_path / "at", "x" * BLOB_THRESHOLD)
    assert not (tmp_path / "at/blobs").exists()
    _record_reply(tmp_path / "over", "x" * (BLOB_THRESHOLD + 1))
    assert (tmp_path / "over/blobs").is_dir()
    _record_reply(tmp_path / "astral", "\U0001f600" * (BLOB_THRESHOLD // 4 + 1))
    assert (tmp_path / "astral/blobs").is_dir()


def test_modified_blob_fails_its_digest_check(tmp_path: Path) -> None:
    _record_reply(tmp_path / "b", "y" * (BLOB_THRESHOLD + 1))
    (blob,) = (tmp_path / "b/blobs").iterdir()
    blob.write_bytes(blob.read_bytes().replace(b"y", b"z", 1))
    with pytest.raises(BundleCorruptError, match="does not match its digest") as excinfo:
        load_bundle(tmp_path / "b")
    assert blob.name in str(excinfo.value)


def test_missing_blob_names_facts_file_and_line(tmp_path: Path) -> None:
    _record_reply(tmp_path / "b", "y" * (BLOB_THRESHOLD + 1))
    for blob in (tmp_path / "b/blobs").iterdir():
        blob.unlink()
    with pytest.raises(BundleCorruptError, match="is missing") as excinfo:
        load_bundle(tmp_path / "b")
    assert excinfo.value.line == 1
    assert "facts.jsonl:1" in str(excinfo.value)


# --- strict loading: every bad input names file, line and field ---------------------------


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError) as excinfo:
        load_bundle(tmp_path / "nope")
    message = str(excinfo.value)
    assert str(tmp_path / "nope") in message
    assert "--llmwb-record" in message


def test_missing_bundle_points_at_copy_left_by_interrupted_write(tmp_path: Path) -> None:
    (tmp_path / ".b.llmwb-old-1234abcd").mkdir()
    with pytest.raises(BundleNotFoundError, match=r"\.b\.llmwb-old-1234abcd"):
        load_bundle(tmp_path / "b")


def test_corrupt_json_names_line(sample_bundle: Path) -> None:
    lines = (sample_bundle / "facts.jsonl").read_bytes().splitlines(keepends=True)
    lines[2] = b'{"kind": "artifact", "seq": 3,\n'
    (sample_bundle / "facts.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(BundleCorruptError, match="invalid JSON") as excinfo:
        load_bundle(sample_bundle)
    assert excinfo.value.line == 3
    assert f"{sample_bundle / 'facts.jsonl'}:3" in str(excinfo.value)


def test_truncated_last_line_without_newline(sample_bundle: Path) -> None:
    facts = sample_bundle / "facts.jsonl"
    facts.write_bytes(facts.read_bytes()[:-20])
    with pytest.raises(BundleCorruptError, match="truncated") as excinfo:
        load_bundle(sample_bundle)
    assert excinfo.value.line == 4
    assert "facts.jsonl:4" in str(excinfo.value)


def test_fewer_facts_than_manifest(sample_bundle: Path) -> None:
    facts = sample_bundle / "facts.jsonl"
    facts.write_bytes(b"".join(facts.read_bytes().splitlines(keepends=True)[:3]))
    with pytest.raises(BundleCorruptError, match=r"has 3 facts but manifest.json says 4") as e:
        load_bundle(sample_bundle)
    assert "truncated" in str(e.value)
    assert str(facts) in str(e.value)


@pytest.mark.parametrize(
    ("line", "edit", "field"),
    [
        (1, lambda r: r.update(ordinal="first"), "ordinal"),
        (2, lambda r: r["request"].update(model=5), "request.model"),
        (4, lambda r: r["reviewer"].update(kind="robot"), "reviewer.kind"),
    ],
    ids=["tool-ordinal", "model-request-model", "gate-reviewer-kind"],
)
def test_wrong_field_type_names_line_and_field(
    sample_bundle: Path, line: int, edit: Callable[[dict[str, Any]], None], field: str
) -> None:
    records = _lines(sample_bundle)
    edit(records[line - 1])
    _write_lines(sample_bundle, records)
    with pytest.raises(BundleCorruptError) as excinfo:
        load_bundle(sample_bundle)
    assert type(excinfo.value) is BundleCorruptError
    assert excinfo.value.line == line
    assert excinfo.value.field == field
    message = str(excinfo.value)
    assert f"facts.jsonl:{line}" in message
    assert f"(field {field!r})" in message


def test_manifest_wrong_type_names_field(sample_bundle: Path) -> None:
    _edit_json(sample_bundle / "manifest.json", lambda m: m.update(fact_count="four"))
    with pytest.raises(BundleCorruptError, match=r"manifest\.json \(field 'fact_count'\)"):
        load_bundle(sample_bundle)


def test_manifest_bad_json_names_file_and_line(sample_bundle: Path) -> None:
    (sample_bundle / "manifest.json").write_bytes(b'{\n  "schema_version": 1,\n  oops\n}\n')
    with pytest.raises(BundleCorruptError, match=r"manifest\.json:3"):
        load_bundle(sample_bundle)


def test_newer_schema_version_says_upgrade(sample_bundle: Path) -> None:
    _edit_json(sample_bundle / "manifest.json", lambda m: m.update(schema_version=99))
    with pytest.raises(SchemaVersionError) as excinfo:
        load_bundle(sample_bundle)
    message = str(excinfo.value)
    assert "schema_version 99" in message
    assert "upgrade" in message
    assert "--llmwb-record" not in message


@pytest.mark.parametrize("version", [0, "one", None])
def test_older_or_garbage_schema_version_says_record_again(
    sample_bundle: Path, version: Any
) -> None:
    _edit_json(sample_bundle / "manifest.json", lambda m: m.update(schema_version=version))
    with pytest.raises(SchemaVersionError) as excinfo:
        load_bundle(sample_bundle)
    message = str(excinfo.value)
    assert repr(version) in message
    assert "--llmwb-record" in message
    assert "upgrade" not in message


def test_unknown_fact_kind_names_kind_and_line(sample_bundle: Path) -> None:
    records = _lines(sample_bundle)
    records[2] = {"kind": "telepathy", "seq": 3, "node": "answer"}
    _write_lines(sample_bundle, records)
    with pytest.raises(UnknownFactKindError) as excinfo:
        load_bundle(sample_bundle)
    assert excinfo.value.line == 3
    message = str(excinfo.value)
    assert "'telepathy'" in message
    assert "facts.jsonl:3" in message


def test_facts_out_of_seq_order(sample_bundle: Path) -> None:
    records = _lines(sample_bundle)
    records[0], records[1] = records[1], records[0]
    _write_lines(sample_bundle, records)
    with pytest.raises(BundleCorruptError) as excinfo:
        load_bundle(sample_bundle)
    assert (excinfo.value.line, excinfo.value.field) == (1, "seq")


def test_hand_edited_dag_config_names_node_and_key(sample_bundle: Path) -> None:
    def edit(dag: dict[str, Any]) -> None:
        node = next(n for n in dag["nodes"] if n["id"] == "answer")
        node["config"]["prompt"] = "Answer rudely: {question}"

    _edit_json(sample_bundle / "dag.json", edit)
    with pytest.raises(BundleCorruptError, match="does not match its digest") as excinfo:
        load_bundle(sample_bundle)
    message = str(excinfo.value)
    assert "'answer'" in message
    assert "'prompt'" in message
    assert "dag.json" in message


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(name="renamed"),
        lambda d: d["edges"].pop(),
        lambda d: d["nodes"][0].update(kind="agent"),
        lambda d: d["nodes"][0].update(id="renamed"),
    ],
    ids=["name", "edge", "node-kind", "node-id"],
)
def test_hand_edited_dag_structure_fails_digest(
    sample_bundle: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    _edit_json(sample_bundle / "dag.json", edit)
    with pytest.raises(BundleCorruptError, match=r"dag\.json.*digest|digest.*dag\.json"):
        load_bundle(sample_bundle)


def test_facts_edited_after_recording_fails_digest_and_mentions_rehash(
    sample_bundle: Path,
) -> None:
    records = _lines(sample_bundle)
    records[1]["response"]["content"] = "cancelled"  # still a valid fact
    _write_lines(sample_bundle, records)
    with pytest.raises(BundleCorruptError, match="edited after recording") as excinfo:
        load_bundle(sample_bundle)
    message = str(excinfo.value)
    assert "facts.jsonl" in message
    assert f"llmwb rehash {sample_bundle}" in message


def test_volatile_file_is_required_since_the_manifest_covers_it(sample_bundle: Path) -> None:
    (sample_bundle / "volatile.json").unlink()
    with pytest.raises(BundleCorruptError, match=r"volatile.json is missing"):
        load_bundle(sample_bundle)


# --- writing: errors and atomicity ------------------------------------------------------------


def test_unwritable_directory_raises_bundle_write_error(
    tmp_path: Path, record_sample: Callable[..., Run]
) -> None:
    # running as root, chmod does not stop writes: a regular file in the path does
    (tmp_path / "file").write_text("not a directory")
    target = tmp_path / "file" / "bundle"
    with pytest.raises(BundleWriteError) as excinfo:
        record_sample().save(target)
    message = str(excinfo.value)
    assert str(target) in message
    assert "--llmwb-bundle-dir" in message
    assert isinstance(excinfo.value.__cause__, OSError)


def test_failed_exchange_keeps_old_bundle(
    sample_bundle: Path,
    record_sample: Callable[..., Run],
    snapshot_tree: Tree,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = snapshot_tree(sample_bundle)

    def exchange(a: Path, b: Path) -> bool:
        raise OSError(5, "injected failure")

    monkeypatch.setattr(store, "_exchange", exchange)
    with pytest.raises(BundleWriteError, match="injected failure"):
        record_sample(reply="refunded").save(sample_bundle)
    assert snapshot_tree(sample_bundle) == before
    assert _leftovers(sample_bundle.parent) == []
    load_bundle(sample_bundle)


def test_failed_rename_in_fallback_restores_old_bundle(
    sample_bundle: Path,
    record_sample: Callable[..., Run],
    snapshot_tree: Tree,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = snapshot_tree(sample_bundle)
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if ".llmwb-tmp-" in str(src):
            raise OSError(28, "No space left on device (injected)")
        real_rename(src, dst)

    monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(BundleWriteError, match="injected"):
        record_sample(reply="refunded").save(sample_bundle)
    monkeypatch.undo()
    assert snapshot_tree(sample_bundle) == before
    assert _leftovers(sample_bundle.parent) == []


def test_failure_while_writing_files_keeps_old_bundle(
    sample_bundle: Path,
    record_sample: Callable[..., Run],
    snapshot_tree: Tree,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = snapshot_tree(sample_bundle)
    real_write = store._write_file

    def write(path: Path, data: bytes) -> None:
        if path.name == "facts.jsonl":
            real_write(path, data[: len(data) // 2])
            raise OSError(28, "disk full (injected)")
        real_write(path, data)

    monkeypatch.setattr(store, "_write_file", write)
    with pytest.raises(BundleWriteError, match="injected"):
        record_sample(reply="refunded").save(sample_bundle)
    assert snapshot_tree(sample_bundle) == before
    assert _leftovers(sample_bundle.parent) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-fallback"])
def test_replacing_existing_bundle_leaves_no_temp_dirs(
    sample_bundle: Path,
    record_sample: Callable[..., Run],
    monkeypatch: pytest.MonkeyPatch,
    exchange: bool,
) -> None:
    if not exchange:
        monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    record_sample(reply="refunded").save(sample_bundle)
    loaded = load_bundle(sample_bundle)
    response = loaded.model_io()[0].response
    assert response is not None
    assert response.content == "refunded"
    assert _leftovers(sample_bundle.parent) == []


# --- directory names ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_refund", "TestAgent.test_x[1-2]", "test_ü[é]", "a.b-c"])
def test_safe_names_are_kept(name: str) -> None:
    assert safe_dirname(name) == name


@pytest.mark.parametrize("char", [*'<>:"/\\|?*', "\x00", "\x1f", "\x7f", "\t", "\n", " "])
def test_illegal_characters_are_replaced(char: str, tmp_path: Path) -> None:
    name = safe_dirname(f"test_x[a{char}b]")
    assert char not in name
    assert name.startswith("test_x[a_b]-")
    (tmp_path / name).mkdir()  # legal here, and one path component


@pytest.mark.parametrize("name", ["CON", "con", "Nul", "aux.txt", "COM1", "lpt9", "prn.tar.gz"])
def test_reserved_windows_names_are_avoided(name: str) -> None:
    safe = safe_dirname(name)
    assert safe.split(".")[0].lower() not in {"con", "prn", "aux", "nul", "com1", "lpt9"}


@pytest.mark.parametrize("name", ["trailing.", "trailing ", ".", "..", ""])
def test_names_never_end_in_dot_or_space_and_are_never_empty(name: str) -> None:
    safe = safe_dirname(name)
    assert safe
    assert safe not in {".", ".."}
    assert not safe.endswith((".", " "))


@pytest.mark.parametrize("unit", ["x", "é", "\U0001f600"])
def test_long_names_are_bounded_in_bytes(unit: str, tmp_path: Path) -> None:
    name = f"test_long[{unit * 400}]"
    safe = safe_dirname(name)
    assert len(safe.encode()) <= 120
    safe.encode().decode()  # no split multi-byte character
    (tmp_path / safe).mkdir()


def test_distinct_ids_get_distinct_names() -> None:
    long = "test_param[" + "x" * 300
    ids = [
        "test_p[a/b]",
        "test_p[a:b]",
        "test_p[a b]",
        "test_p[a_b]",
        "test_p[a?b]",
        "test_p[a\\b]",
        "CON",
        "CON-x",
        long + "1]",
        long + "2]",
    ]
    names = [safe_dirname(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert safe_dirname("test_p[a/b]") == names[0]  # and stable
