"""Bundle files as stable, readable text: what ``git diff`` shows through ``llmwb textconv``.

git diffs file by file and hands a textconv driver one file of one side at a time, often
a temporary copy of the blob named ``XXXXXX_<basename>``. Each bundle file becomes text
that a line diff reads well:

- ``facts.jsonl``: one block per fact, headed by its kind and place (``model_io
  draft_reply#0``, ``gate approve_refund (approve_refund#0)``), then one line per field
  as a JSON pointer; long strings (prompts, replies) line by line. No ``seq`` numbers
  (an inserted call would renumber every later fact), no digests of content that is
  shown itself.
- ``dag.json``: the DAG, each node with its config, the edges.
- ``manifest.json``: the run's name, schema version, fact count and labels.
- ``volatile.json``: one constant line, so a re-recording that changed nothing but wall
  times shows no diff at all.
- ``blobs/<sha256>``: one line, the digest and size: a blob is a payload a fact refers
  to by digest (a long string, a raw wire exchange), and what it means is in the facts.

Large strings stored out of line (``{"$blob": "sha256:..."}``) are shown as ``<blob
sha256:..., N bytes>``: equal placeholders mean equal content. git hands a driver the
old side as a temporary copy, far from its ``blobs/``, so both sides are shown alike;
``llmwb diff --rev`` reads whole bundles and shows their text.

Only orjson and the standard library are imported: git runs this once per file and side.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "BUNDLE_FILES",
    "VOLATILE_TEXT",
    "file_kind",
    "inline_blobs",
    "readable_dag",
    "readable_facts",
    "readable_manifest",
    "textconv",
    "textconv_bytes",
]

#: The files of a bundle directory (besides ``blobs/``).
BUNDLE_FILES = ("manifest.json", "dag.json", "facts.jsonl", "volatile.json")
_BLOB_KEY = "$blob"
_BLOB_NAME = re.compile(r"(^|_)[0-9a-f]{64}$")  # blobs/<sha256 hex>, or git's copy of one
#: Fields of a fact record not shown: in the header, numbering, or digests of shown content.
_NOT_SHOWN = frozenset(
    {"seq", "kind", "node", "ordinal", "request_digest", "content_digest", "exchange"}
)
_NONE: frozenset[str] = frozenset()
_IN_HEADER = {
    "step": frozenset({"phase"}),
    "gate": frozenset({"gate_id"}),
    "artifact": frozenset({"name", "revision"}),
}


#: A blob reference names a file inside ``blobs/`` only when it is exactly this.
_BLOB_REF = re.compile(r"sha256:[0-9a-f]{64}")
#: Blobs larger than this are shown as a placeholder, never read.
MAX_SHOWN_BLOB_BYTES = 64 * 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _regular_bytes(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes, else ``None``.

    Never blocks (a FIFO is opened without waiting for a writer, then refused).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        return None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        try:
            data = handle.read(info.st_size + 1) if info.st_size else handle.readall()
        except OSError:
            return None
    return bytes(data) if data is not None and len(data) <= limit else None


def _blob_text(value: dict[str, Any], blobs: Path | None) -> str:
    ref = value.get(_BLOB_KEY)
    if not isinstance(ref, str) or _BLOB_REF.fullmatch(ref) is None:
        return f"<not a blob reference: {orjson.dumps(ref).decode()[:80]}>"
    if blobs is not None:
        from .codec import digest_bytes

        data = _regular_bytes(blobs / ref.removeprefix("sha256:"), MAX_SHOWN_BLOB_BYTES)
        if data is not None and digest_bytes(data) == ref:
            return data.decode(errors="replace")
    size = value.get("bytes")
    return f"<blob {ref[:19]}, {size if isinstance(size, int) else '?'} bytes>"


def inline_blobs(value: Any, blobs: Path | None) -> Any:
    """``value`` with blob references replaced by their text (or a placeholder)."""
    if isinstance(value, dict):
        if _BLOB_KEY in value and len(value) == 2:
            return _blob_text(value, blobs)
        return {k: inline_blobs(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [inline_blobs(v, blobs) for v in value]
    return value


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _flat(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _flat(value[key], f"{path}/{_escape(str(key))}")
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _flat(item, f"{path}/{index}")
    else:
        yield path, value


def _field_lines(record: dict[str, Any], skip: frozenset[str] = frozenset()) -> list[str]:
    lines = []
    for key in sorted(set(record) - skip):
        for path, value in _flat(record[key], _escape(key)):
            if isinstance(value, str):
                first, *rest = value.split("\n")
                lines.append(f"  {path}: {first}")
                lines.extend(f"  {' ' * len(path)}| {line}" for line in rest)
            else:
                lines.append(f"  {path}: {orjson.dumps(value).decode()}")
    return lines


def _fact_header(record: dict[str, Any]) -> str:
    kind = record.get("kind", "?")
    node = record.get("node", "?")
    place = f"{node}#{record['ordinal']}" if "ordinal" in record else str(node)
    if kind == "artifact":
        return f"artifact {record.get('name')} rev {record.get('revision')} ({node})"
    if kind == "gate":
        return f"gate {record.get('gate_id')} ({place})"
    if kind == "step":
        return f"step {node} {record.get('phase')}"
    return f"{kind} {place}"


def readable_facts(data: bytes, blobs: Path | None = None) -> str:
    """``facts.jsonl`` as text to diff: a header per fact, then one line per field."""
    out: list[str] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            out += [f"line {number}: not JSON ({exc.msg})", f"  {line.decode(errors='replace')}"]
            continue
        if not isinstance(record, dict):
            out += [f"line {number}: not a JSON object", f"  {line.decode(errors='replace')}"]
            continue
        record = inline_blobs(record, blobs)
        if not isinstance(record, dict):  # the whole record was a blob reference
            out += [f"line {number}: not a JSON object", f"  {line.decode(errors='replace')}"]
            continue
        out.append(_fact_header(record))
        kind = record.get("kind")
        out += _field_lines(
            record,
            _NOT_SHOWN | _IN_HEADER.get(kind, _NONE) if isinstance(kind, str) else _NOT_SHOWN,
        )
    return "\n".join(out) + "\n" if out else ""


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def readable_dag(data: bytes) -> str:
    """``dag.json`` as text to diff: the DAG, each node with its config, the edges."""
    dag = orjson.loads(data)
    if not isinstance(dag, dict):
        return data.decode(errors="replace")
    declared = "declared" if dag.get("declared") else "derived from the facts"
    out = [f"DAG {dag.get('name')} ({declared})"]
    for node in _as_list(dag.get("nodes")):
        node = _as_dict(node)
        out.append(f"node {node.get('id')} ({node.get('kind')})")
        out += _field_lines(_as_dict(node.get("config")))
    edges = [_as_dict(edge) for edge in _as_list(dag.get("edges"))]
    if edges:
        out.append("edges")
        out += [f"  {edge.get('source')} -> {edge.get('target')}" for edge in edges]
    return "\n".join(out) + "\n"


def readable_manifest(data: bytes) -> str:
    """``manifest.json`` as text to diff: the run's name, schema, counts and labels."""
    manifest = orjson.loads(data)
    if not isinstance(manifest, dict):
        return data.decode(errors="replace")
    out = [
        f"run {manifest.get('name')}",
        f"schema_version {manifest.get('schema_version')} ({manifest.get('producer')})",
        f"facts {manifest.get('fact_count')}, blobs {len(_as_list(manifest.get('blobs')))}",
    ]
    out += _field_lines({"labels": _as_dict(manifest.get("labels"))})
    return "\n".join(out) + "\n"


VOLATILE_TEXT = "volatile values (wall times, durations, trace and span ids): not compared\n"


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """Which bundle file ``path`` is (``facts.jsonl``, ..., ``blob``), or ``None``."""
    name = Path(path).name
    for kind in BUNDLE_FILES:
        # git names its temporary copies XXXXXX_<basename>
        if name == kind or name.endswith("_" + kind):
            return kind
    if _BLOB_NAME.search(name):
        return "blob"
    return None


def textconv(path: str | os.PathLike[str], *, blobs: Path | None = None) -> str:
    """The readable text of one bundle file (any other file: its text unchanged).

    ``blobs``, a bundle's ``blobs/`` directory, shows long strings stored out of line;
    without it they are placeholders (what git's drivers show, for both sides alike).
    Raises :class:`~pytest_llmwb.BundleCorruptError` for a path that is not a regular
    file it can read (a directory, a FIFO, a missing file).
    """
    data = _regular_bytes(Path(path), 2**62)
    if data is None:
        from .exceptions import BundleCorruptError

        raise BundleCorruptError(
            f"{Path(path).name} is not a regular file that can be read",
            path=str(path),
            fix="pass the path of one file of a bundle (llmwb textconv BUNDLE/facts.jsonl)",
        )
    return textconv_bytes(file_kind(path), data, blobs)


def textconv_bytes(kind: str | None, data: bytes, blobs: Path | None = None) -> str:
    """:func:`textconv` of bytes already read, given the bundle file kind.

    Anything that is not of the expected shape is shown as stored, with the reason:
    this is a viewer, it never fails on what a bundle file holds.
    """
    try:
        if kind == "facts.jsonl":
            return readable_facts(data, blobs)
        if kind == "dag.json":
            return readable_dag(data)
        if kind == "manifest.json":
            return readable_manifest(data)
    except orjson.JSONDecodeError as exc:
        return f"(not valid JSON: {exc.msg}; shown as stored)\n" + data.decode(errors="replace")
    except RecursionError:
        return "(nested too deeply to show field by field; shown as stored)\n" + data.decode(
            errors="replace"
        )
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        # a shape no bundle writer makes: still a viewer's job to show it
        return f"(not of the expected shape: {type(exc).__name__}; shown as stored)\n" + (
            data.decode(errors="replace")
        )
    if kind == "volatile.json":
        return VOLATILE_TEXT
    if kind == "blob":
        return blob_text(data)
    return data.decode(errors="replace")


def blob_text(data: bytes) -> str:
    """A blob as one line: its digest and size.

    A blob is a stored payload (a long string, a raw wire exchange) that a fact refers
    to by digest; what it means shows in ``facts.jsonl``, so its bytes are not repeated.
    """
    from .codec import digest_bytes

    return f"blob {digest_bytes(data)[:19]}…, {len(data)} bytes (what it holds: see facts.jsonl)\n"
