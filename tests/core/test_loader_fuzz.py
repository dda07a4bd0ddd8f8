"""Every public loading path raises only LlmwbError subclasses, whatever a bundle holds.

A seeded fuzzer over real bundles: a copy of one of the example project's committed
bundles (captured HTTP exchanges) or of a run with a long string stored as a blob,
mutated (bytes flipped, files cut short or replaced by directories, JSON values swapped
for odd ones: huge integers, deep nesting, wrong types, hostile blob references), and
half the time with every digest of the manifest made to match again, so that the
parsers behind the integrity checks are reached too. Then each loader is run over it:
``load_bundle`` (eager and lazy, every fact read), ``llmwb show``, ``cost``,
``explain``, ``diff``, ``textconv`` and ``git-diff``.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_llmwb import LlmwbError, ModelResponse, Run, load_bundle
from pytest_llmwb.cli import main
from pytest_llmwb.codec import digest_bytes
from pytest_llmwb.store import BLOB_THRESHOLD
from pytest_llmwb.textconv import textconv

EXAMPLE = Path(__file__).parents[2] / "example_project/tests/llmwb_bundles/test_refund"
FILES = ("manifest.json", "dag.json", "facts.jsonl", "volatile.json")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bases")
    with Run("long") as run:
        run.model_io(
            {"model": "m", "messages": [{"role": "user", "content": "z" * (BLOB_THRESHOLD + 1)}]},
            lambda request: ModelResponse(content="short"),
            node="answer",
        )
    run.save(root / "long")
    captured = shutil.copytree(
        EXAMPLE / "test_reviewer_edits_the_reply_before_it_is_sent", root / "captured"
    )
    return [Path(captured), root / "long"]


odd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([2**53 + 1, 2**63, 2**64 - 1, -(2**63), -1, 0, 1.5, 1e308, -0.0]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "sha256:/dev/zero",
            "sha256:../manifest.json",
            "sha256:" + "0" * 64,
            "model_io",
            "gate",
            "",
        ]
    ),
)
odd_values = st.recursive(
    odd_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["$blob", "bytes", "kind", "nodes", "edges", "blobs", "x"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def _replace_somewhere(data: st.DataObject, value: Any, new: Any) -> Any:
    """``value`` with one node, picked by walking down at random, replaced by ``new``."""
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(value)))
        return {**value, key: _replace_somewhere(data, value[key], new)}
    if isinstance(value, list) and value and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(value) - 1))
        return [*value[:index], _replace_somewhere(data, value[index], new), *value[index + 1 :]]
    return new


def _mutate(data: st.DataObject, bundle: Path) -> None:
    files = [*FILES, *(f"blobs/{p.name}" for p in sorted((bundle / "blobs").glob("*")))]
    name = data.draw(st.sampled_from(files), label="file")
    path = bundle / name
    raw = path.read_bytes()
    how = data.draw(
        st.sampled_from(["flip", "cut", "directory", "json", "deep", "delete", "ref"]), label="how"
    )
    if how == "flip" and raw:
        at = data.draw(st.integers(0, len(raw) - 1))
        path.write_bytes(
            raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1 :]
        )
    elif how == "cut":
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw)))])
    elif how == "directory":
        path.unlink()
        path.mkdir()
    elif how == "delete":
        path.unlink()
    elif how in ("json", "deep", "ref"):
        if how == "deep":
            new: Any = _deep(data.draw(st.sampled_from([200, 900, 1100, 3000])))
        elif how == "ref":
            new = {"$blob": data.draw(odd_scalars), "bytes": 1}
        else:
            new = data.draw(odd_values)
        lines = raw.split(b"\n") if name == "facts.jsonl" else [raw]
        index = data.draw(st.integers(0, max(len(lines) - 2, 0)))
        try:
            doc = orjson.loads(lines[index])
        except orjson.JSONDecodeError:
            return
        try:
            lines[index] = orjson.dumps(_replace_somewhere(data, doc, new))
        except orjson.JSONEncodeError:  # deeper than orjson writes: write it by hand
            lines[index] = b"[" * 3000 + b"]" * 3000
        path.write_bytes(b"\n".join(lines))
    if data.draw(st.booleans(), label="reseal"):
        _reseal(bundle)


def _reseal(bundle: Path) -> None:
    """Make the manifest's digests match the files again, as an attacker would."""
    try:
        manifest = orjson.loads((bundle / "manifest.json").read_bytes())
        for name in list(manifest["files"]):
            manifest["files"][name] = digest_bytes((bundle / name).read_bytes())
        manifest["facts_digest"] = manifest["files"]["facts.jsonl"]
        (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _loaders(base: Path, bundle: Path) -> Iterator[tuple[str, Any]]:
    def eager() -> None:
        load_bundle(bundle)

    def lazy() -> None:
        for fact in load_bundle(bundle, lazy=True).facts:
            assert fact is not None

    yield "load_bundle", eager
    yield "load_bundle(lazy=True)", lazy
    for command in (["show"], ["cost"], ["explain", "--gate", "review_reply"]):
        yield f"llmwb {command[0]}", lambda c=command: main([*c[:1], str(bundle), *c[1:]])
    yield "llmwb diff", lambda: main(["diff", str(base), str(bundle)])
    for name in FILES:
        yield f"textconv {name}", lambda n=name: textconv(bundle / n, blobs=bundle / "blobs")
        yield (
            f"git-diff {name}",
            lambda n=name: main(
                [
                    "git-diff",
                    n,
                    str(base / n),
                    "0" * 40,
                    "100644",
                    str(bundle / n),
                    "1" * 40,
                    "100644",
                ]
            ),
        )


@settings(
    max_examples=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_loaders_raise_only_llmwb_errors_on_mutated_bundles(
    bases: list[Path], data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    with tempfile.TemporaryDirectory() as scratch:
        bundle = Path(shutil.copytree(base, Path(scratch) / base.name))
        _mutate(data, bundle)
        for what, load in _loaders(base, bundle):
            try:
                with _quiet():
                    load()
            except LlmwbError:
                pass
            except Exception as exc:  # the bug this test exists to catch
                raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from exc


# --- the crashes issue #10 listed, each pinned ------------------------------------------------


def _resealed_copy(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / base.name))


def test_a_huge_integer_in_a_dag_config_is_a_bundle_error(
    bases: list[Path], tmp_path: Path
) -> None:
    bundle = _resealed_copy(bases[0], tmp_path)
    dag = orjson.loads((bundle / "dag.json").read_bytes())
    dag["nodes"][0]["config"]["temperature"] = 2**63
    (bundle / "dag.json").write_bytes(orjson.dumps(dag))
    _reseal(bundle)
    with pytest.raises(LlmwbError, match="cannot be digested"):
        load_bundle(bundle)


@pytest.mark.parametrize("value", [[1], "x", 5, {"1": 5}, {"1": {"at": 5}}])
def test_a_wrongly_typed_volatile_file_is_a_bundle_error(
    bases: list[Path], tmp_path: Path, value: Any
) -> None:
    bundle = _resealed_copy(bases[0], tmp_path)
    (bundle / "volatile.json").write_bytes(orjson.dumps({"run": {}, "facts": value}))
    _reseal(bundle)
    with pytest.raises(LlmwbError, match=r"volatile.json"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("dag.json", {"nodes": [1], "edges": 2}),
        ("manifest.json", {"blobs": 5, "labels": [1]}),
        ("facts.jsonl", {"kind": ["x"], "node": 1}),
        ("facts.jsonl", {"$blob": "sha256:/dev/zero", "bytes": 1}),
        ("dag.json", b"[" * 900 + b'"leaf"' + b"]" * 900),
        ("facts.jsonl", b'{"kind":"step","x":' + b"[" * 1000 + b"]" * 1000 + b"}"),
    ],
)
def test_textconv_shows_any_shape_as_stored(tmp_path: Path, name: str, document: Any) -> None:
    path = tmp_path / name
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    path.write_bytes(raw + b"\n")
    assert textconv(path, blobs=tmp_path / "blobs")


def test_textconv_of_a_directory_is_a_bundle_error(tmp_path: Path) -> None:
    (tmp_path / "facts.jsonl").mkdir()
    with pytest.raises(LlmwbError, match="not a regular file"):
        textconv(tmp_path / "facts.jsonl")
