"""Bundles on disk: a deterministic, git-friendly directory, written atomically, read strictly.

Layout of a bundle directory::

    manifest.json   schema version, digests of dag.json and facts.jsonl, fact count, blobs
    dag.json        the DAG snapshot (indented, sorted keys)
    facts.jsonl     one fact per line, compact, seq/kind/node first, no volatile values
    volatile.json   wall times, durations, trace and span ids, by fact seq
    blobs/<hex>     strings larger than BLOB_THRESHOLD, by sha256 of their UTF-8 bytes

Only ``volatile.json`` changes when unchanged behaviour is recorded again.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import dataclasses
import gc
import hashlib
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import orjson
from pydantic import ValidationError

from . import __version__
from .codec import digest, digest_bytes, dumps_pretty, dumps_record
from .exceptions import (
    BundleCorruptError,
    BundleNotFoundError,
    BundleRedactedError,
    BundleWriteError,
    SchemaVersionError,
    UnknownFactKindError,
)
from .schema import (
    SCHEMA_VERSION,
    VOLATILE_FIELDS,
    ArtifactFact,
    DagSnapshot,
    GateFact,
    Manifest,
    ModelIOFact,
    ToolCallFact,
    fact_adapter,
)

if TYPE_CHECKING:
    from .scrub import Scrubber

__all__ = [
    "BLOB_THRESHOLD",
    "Bundle",
    "load_bundle",
    "safe_dirname",
    "write_bundle",
]

MANIFEST = "manifest.json"
DAG = "dag.json"
FACTS = "facts.jsonl"
VOLATILE = "volatile.json"
BLOBS = "blobs"
#: Present only in a redacted sealed bundle (see pytest_llmwb.evidence.seal).
REDACTIONS = "seal/redactions.json"

#: Strings longer than this many UTF-8 bytes are stored out of line in ``blobs/``.
BLOB_THRESHOLD = 16 * 1024
BLOB_KEY = "$blob"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DAG_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024 * 1024

_RECORD_FIX = "record it again: pytest --llmwb-record <test id>"


@dataclass(frozen=True)
class Bundle:
    """A run as stored: manifest, DAG snapshot and facts in ``seq`` order."""

    manifest: Manifest
    dag: DagSnapshot
    facts: Sequence[Any]
    path: Path | None = None
    volatile: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)
    #: Whether :func:`write_bundle` wrote it (``False``: an identical bundle was kept).
    written: bool = field(default=True, compare=False)

    def blob(self, ref: str) -> bytes:
        """The bytes of blob ``ref`` (``sha256:<hex>``), verified against their digest."""
        data = self.blobs.get(ref)
        if data is not None:
            return data
        if self.path is None:
            raise BundleCorruptError(f"blob {ref} is missing", path="<memory>", fix=_RECORD_FIX)
        data = read_blob(self.path / BLOBS, ref)
        self.blobs[ref] = data
        return data

    @property
    def name(self) -> str:
        """The run's name (the test id for bundles recorded by the pytest plugin)."""
        return self.manifest.name

    def model_io(self) -> list[ModelIOFact]:
        """All model_io receipts, in order."""
        return [f for f in self.facts if isinstance(f, ModelIOFact)]

    def tool_calls(self) -> list[ToolCallFact]:
        """All tool calls, in order."""
        return [f for f in self.facts if isinstance(f, ToolCallFact)]

    def gates(self) -> list[GateFact]:
        """All gate decisions, in order."""
        return [f for f in self.facts if isinstance(f, GateFact)]

    def artifacts(self) -> list[ArtifactFact]:
        """All artifact revisions, in order."""
        return [f for f in self.facts if isinstance(f, ArtifactFact)]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Bundle:
        """Read and validate the bundle directory at ``path``."""
        return load_bundle(path)


# --- names -----------------------------------------------------------------------------

_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]|\s')
_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)
MAX_NAME = 120


def safe_dirname(name: str) -> str:
    """A directory name for ``name`` that is legal on every common filesystem.

    Names that are already safe are kept as they are. Otherwise unsafe characters are
    replaced and a short hash of the original is appended, so that two names that
    differ only in unsafe characters (or after truncation) stay distinct.
    """
    cleaned = _UNSAFE.sub("_", name).strip(". ")
    reserved = bool(_RESERVED.match(cleaned))
    if cleaned == name and cleaned and not reserved and len(cleaned.encode()) <= MAX_NAME:
        return cleaned
    if reserved:  # "aux.txt" is a device on Windows whatever follows the dot
        cleaned = "_" + cleaned
    suffix = hashlib.sha256(name.encode()).hexdigest()[:10]
    budget = MAX_NAME - len(suffix) - 1
    head = cleaned.encode()[:budget].decode(errors="ignore").rstrip(". ") or "bundle"
    return f"{head}-{suffix}"


# --- writing ---------------------------------------------------------------------------


def _outline(value: Any, blobs: dict[str, bytes]) -> Any:
    """Replace long strings with blob references."""
    if isinstance(value, str):
        # a str of n characters has at most 4n UTF-8 bytes: skip the encode for short ones
        if len(value) * 4 > BLOB_THRESHOLD:
            data = value.encode()
            if len(data) > BLOB_THRESHOLD:
                ref = digest_bytes(data)
                blobs[ref] = data
                return {BLOB_KEY: ref, "bytes": len(data)}
        return value
    if isinstance(value, dict):
        return {k: _outline(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [_outline(v, blobs) for v in value]
    return value


def fact_record(fact: Any) -> dict[str, Any]:
    """The stored form of a fact: no volatile values, no fields left at their default.

    ``seq``, ``kind`` and ``node`` come first, then the kind's fields in schema order;
    JSON values keep the order the live code gave them.
    """
    fields: dict[str, Any] = fact.model_dump(
        mode="json", exclude_defaults=True, exclude={"seq", "kind", "node", *VOLATILE_FIELDS}
    )
    return {"seq": fact.seq, "kind": fact.kind, "node": fact.node, **fields}


def volatile_record(fact: Any) -> dict[str, Any]:
    """The volatile values of a fact (wall time, duration, trace and span ids)."""
    return {
        name: getattr(fact, name) for name in VOLATILE_FIELDS if getattr(fact, name) is not None
    }


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


_RENAME_EXCHANGE = 2
_libc: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False when unsupported."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            _libc.renameat2  # noqa: B018 - probe that the symbol exists
        except (OSError, AttributeError):
            _libc = False
    if _libc is False:
        return False
    at_fdcwd = -100
    result = _libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(result == 0)


def _replace_dir(staged: Path, target: Path) -> None:
    """Put ``staged`` at ``target``; an existing ``target`` is never left half-written."""
    if not target.exists():
        os.rename(staged, target)
        return
    if _exchange(staged, target):
        shutil.rmtree(staged)  # staged now holds the old bundle
        return
    backup = target.with_name(f".{target.name}.llmwb-old-{uuid.uuid4().hex[:8]}")
    os.rename(target, backup)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup)


def write_bundle(
    path: str | os.PathLike[str],
    *,
    name: str,
    dag: DagSnapshot,
    facts: Sequence[Any],
    labels: dict[str, str] | None = None,
    volatile_run: dict[str, Any] | None = None,
    blobs: dict[str, bytes] | None = None,
    scrubber: Scrubber | None = None,
    keep_unchanged: bool = False,
) -> Bundle:
    """Write a bundle directory atomically and return it.

    The files are written into a hidden sibling directory, flushed to disk, and then
    swapped into place, so an interrupted write leaves any previous bundle intact.
    ``blobs`` are extra content-addressed payloads (such as captured wire exchanges),
    keyed by the ``sha256:<hex>`` digest of their bytes.

    Last line of defence against leaked secrets: facts, ``dag.json`` and blobs are
    scanned with ``scrubber`` (default: the built-in rules) before anything is written.
    A strict scrubber refuses to write (:class:`SecretFoundError` naming file and
    field); otherwise what upstream scrubbing missed is replaced by its placeholder.

    With ``keep_unchanged``, a bundle already at ``path`` whose manifest is the one this
    write would produce (same DAG, facts, blobs, labels and producer) is left as it is,
    ``volatile.json`` included: nothing new to record, nothing to show in a diff.
    """
    __tracebackhide__ = True
    from .scrub import default_scrubber

    target = Path(path)
    records, dag, blobs = (scrubber or default_scrubber()).guard_bundle(
        [fact_record(f) for f in facts], dag, dict(blobs or {}), rekey=digest_bytes
    )
    lines = [dumps_record(_outline(record, blobs)) for record in records]
    facts_bytes = b"".join(line + b"\n" for line in lines)
    volatile_facts = {str(f.seq): v for f in facts if (v := volatile_record(f))}
    volatile = {"run": volatile_run or {}, "facts": volatile_facts}
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        producer=f"pytest-llmwb {__version__}",
        dag_digest=dag.digest,
        fact_count=len(lines),
        facts_digest=digest_bytes(facts_bytes),
        blobs=sorted(blobs),
        labels=labels or {},
    )
    manifest_bytes = dumps_pretty(manifest.model_dump(mode="json"))
    bundle = Bundle(
        manifest=manifest, dag=dag, facts=list(facts), path=target, volatile=volatile, blobs=blobs
    )
    if keep_unchanged and _unchanged(target, manifest_bytes, blobs):
        return dataclasses.replace(bundle, written=False)
    staged = target.with_name(f".{target.name}.llmwb-tmp-{uuid.uuid4().hex[:8]}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.mkdir()
        try:
            _write_file(staged / DAG, dumps_pretty(dag.model_dump(mode="json")))
            _write_file(staged / FACTS, facts_bytes)
            _write_file(staged / VOLATILE, dumps_pretty(volatile))
            if blobs:
                (staged / BLOBS).mkdir()
                for ref, data in blobs.items():
                    _write_file(staged / BLOBS / ref.removeprefix("sha256:"), data)
            _write_file(staged / MANIFEST, manifest_bytes)
            _replace_dir(staged, target)
        finally:
            if staged.exists():
                shutil.rmtree(staged, ignore_errors=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason += f" ({exc.filename or target}: a file is where a directory must be)"
        raise BundleWriteError(
            f"cannot write bundle {target}: {reason}",
            fix=(
                "move the file away or make the directory writable, or point bundles "
                "elsewhere with --llmwb-bundle-dir DIR or the llmwb_bundle_dir ini key"
            ),
        ) from exc
    return bundle


def _unchanged(target: Path, manifest_bytes: bytes, blobs: dict[str, bytes]) -> bool:
    """Whether the bundle at ``target`` already holds what ``manifest_bytes`` describes."""
    try:
        if (target / MANIFEST).read_bytes() != manifest_bytes:
            return False
    except OSError:
        return False
    return all((target / BLOBS / ref.removeprefix("sha256:")).is_file() for ref in blobs)


# --- reading ---------------------------------------------------------------------------


def _read(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BundleCorruptError(
            f"bundle file {path.name} is missing", path=str(path), fix=_RECORD_FIX
        ) from None
    if size > limit:
        raise BundleCorruptError(
            f"{path.name} is {size} bytes, over the {limit}-byte limit for this file",
            path=str(path),
            fix=_RECORD_FIX,
        )
    return path.read_bytes()


def _loads(data: bytes, path: Path, line: int | None = None) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BundleCorruptError(
            f"invalid JSON: {exc.msg} at column {exc.colno}",
            path=str(path),
            line=line if line is not None else exc.lineno,
            fix=_RECORD_FIX,
        ) from None


def _field(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    return loc, err["msg"]


def _validated(model: Any, raw: Any, path: Path, line: int | None = None) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        loc, msg = _field(exc)
        raise BundleCorruptError(
            f"invalid {path.name}: {msg}", path=str(path), line=line, field=loc, fix=_RECORD_FIX
        ) from None


def _check_version(raw: Any, path: Path) -> None:
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version == SCHEMA_VERSION:
        return
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"bundle {path.parent} has schema_version {version}; this pytest-llmwb "
            f"({__version__}) reads schema_version {SCHEMA_VERSION}",
            fix="upgrade: pip install -U pytest-llmwb",
        )
    raise SchemaVersionError(
        f"bundle {path.parent} has schema_version {version!r}; this pytest-llmwb "
        f"({__version__}) reads schema_version {SCHEMA_VERSION} and has no migration from it",
        fix=_RECORD_FIX,
    )


def read_blob(blobs_dir: Path, ref: str, *, referrer: tuple[Path, int] | None = None) -> bytes:
    """The bytes of blob ``ref``, checked against its digest.

    A missing blob is reported at ``referrer`` (the file and line that point to it)
    when given; a blob whose bytes do not match its name is reported at the blob.
    """
    blob = blobs_dir / ref.removeprefix("sha256:")
    try:
        data = blob.read_bytes()
    except OSError:
        where, line = referrer if referrer is not None else (blob, None)
        raise BundleCorruptError(
            f"blob {ref} is missing", path=str(where), line=line, fix=_RECORD_FIX
        ) from None
    if digest_bytes(data) != ref:
        raise BundleCorruptError(
            f"blob {ref} does not match its digest (modified on disk)",
            path=str(blob),
            fix=_RECORD_FIX,
        )
    return data


def _inline(value: Any, blobs_dir: Path, facts_path: Path, line: int) -> Any:
    if isinstance(value, dict):
        ref = value.get(BLOB_KEY)
        if isinstance(ref, str) and len(value) == 2:
            return read_blob(blobs_dir, ref, referrer=(facts_path, line)).decode()
        return {k: _inline(v, blobs_dir, facts_path, line) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, blobs_dir, facts_path, line) for v in value]
    return value


def iter_fact_lines(facts_bytes: bytes, path: Path) -> Iterator[tuple[int, bytes, int]]:
    """``(line number, record bytes, offset)`` for each line of a ``facts.jsonl`` file."""
    if facts_bytes and not facts_bytes.endswith(b"\n"):
        count = facts_bytes.count(b"\n") + 1
        raise BundleCorruptError(
            "facts.jsonl is truncated: its last line has no newline",
            path=str(path),
            line=count,
            fix=_RECORD_FIX,
        )
    start = 0
    number = 0
    while start < len(facts_bytes):
        end = facts_bytes.index(b"\n", start)
        number += 1
        if end - start > MAX_LINE_BYTES:
            raise BundleCorruptError(
                f"line is {end - start} bytes, over the {MAX_LINE_BYTES}-byte limit",
                path=str(path),
                line=number,
                fix=_RECORD_FIX,
            )
        yield number, facts_bytes[start:end], start
        start = end + 1


def parse_fact(raw: Any, path: Path, line: int, volatile: dict[str, Any] | None = None) -> Any:
    """Validate one fact record (already JSON-decoded), naming file, line and field."""
    if not isinstance(raw, dict):
        raise BundleCorruptError(
            "a fact record must be a JSON object", path=str(path), line=line, fix=_RECORD_FIX
        )
    kind = raw.get("kind")
    from .schema import FACT_KINDS

    if kind not in FACT_KINDS:
        raise UnknownFactKindError(
            f"unknown fact kind {kind!r}; this pytest-llmwb ({__version__}) knows "
            f"{', '.join(FACT_KINDS)}",
            path=str(path),
            line=line,
            field="kind",
            fix="upgrade pytest-llmwb if the bundle is newer, or " + _RECORD_FIX,
        )
    if volatile:
        raw = {**raw, **volatile}
    try:
        return fact_adapter().validate_python(raw)
    except ValidationError as exc:
        loc, msg = _field(exc)
        # drop the discriminator tag pydantic puts first in the location
        loc = loc.split(".", 1)[1] if loc.startswith(f"{kind}.") else loc
        raise BundleCorruptError(
            f"invalid {kind} fact: {msg}", path=str(path), line=line, field=loc, fix=_RECORD_FIX
        ) from None


class LazyFacts(Sequence[Any]):
    """The facts of a bundle kept as their stored lines, each rebuilt when it is read.

    Every line was validated when the bundle was loaded; reading one parses it again
    and nothing is cached, so memory stays close to the size of ``facts.jsonl``.
    """

    def __init__(self, data: bytes, spans: array.array[int], load: Callable[[int, bytes], Any]):
        self._data = data
        self._spans = spans
        self._load = load

    def __len__(self) -> int:
        return len(self._spans) // 2

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        start, end = self._spans[2 * index], self._spans[2 * index + 1]
        return self._load(index + 1, self._data[start:end])


def load_bundle(
    path: str | os.PathLike[str],
    *,
    lazy: bool = False,
    visit: Callable[[Any], None] | None = None,
) -> Bundle:
    """Read and validate a bundle directory.

    Every fact is validated. With ``lazy``, facts are kept as their stored lines and
    rebuilt when read (see :class:`LazyFacts`), which is how replay keeps memory near
    the bundle's size; ``visit`` is called with each fact as it is validated.

    Raises :class:`BundleNotFoundError` when there is none, :class:`SchemaVersionError`
    for an unreadable version, and :class:`BundleCorruptError` (naming file, line and
    field) for anything malformed, truncated or inconsistent.
    """
    root = Path(path)
    if not (root / MANIFEST).is_file():
        leftovers = (
            sorted(root.parent.glob(f".{root.name}.llmwb-old-*")) if root.parent.exists() else []
        )
        hint = f" (a copy from an interrupted write is at {leftovers[0]})" if leftovers else ""
        raise BundleNotFoundError(f"no bundle at {root}{hint}", fix=_RECORD_FIX)
    if (root / REDACTIONS).is_file():
        raise BundleRedactedError(
            f"bundle {root} is redacted: values were withheld (listed in {REDACTIONS}); "
            "a digest is not content, so it cannot serve a replay",
            fix="replay the unredacted bundle; hand the redacted copy to auditors only "
            f"(check it with: llmwb verify {root} --trust KEY.pub)",
        )
    manifest_path = root / MANIFEST
    raw_manifest = _loads(_read(manifest_path, MAX_MANIFEST_BYTES), manifest_path)
    _check_version(raw_manifest, manifest_path)
    manifest: Manifest = _validated(Manifest, raw_manifest, manifest_path)

    dag_path = root / DAG
    dag: DagSnapshot = _validated(
        DagSnapshot, _loads(_read(dag_path, MAX_DAG_BYTES), dag_path), dag_path
    )
    _check_dag(dag, manifest, dag_path)

    volatile_path = root / VOLATILE
    volatile: dict[str, Any] = {}
    if volatile_path.is_file():
        loaded = _loads(_read(volatile_path, MAX_DAG_BYTES), volatile_path)
        if isinstance(loaded, dict):
            volatile = loaded
    volatile_facts = volatile.get("facts", {}) if isinstance(volatile.get("facts"), dict) else {}

    facts_path = root / FACTS
    facts_bytes = _read(facts_path, sys.maxsize)
    blobs_dir = root / BLOBS
    blob_key = BLOB_KEY.encode()

    def load(line: int, record: bytes) -> Any:
        raw = _loads(record, facts_path, line)
        if blob_key in record:
            raw = _inline(raw, blobs_dir, facts_path, line)
        return parse_fact(raw, facts_path, line, volatile_facts.get(str(line)))

    facts: list[Any] = []
    spans = array.array("Q")
    count = 0
    # Parsing allocates many small objects that all stay alive: the cyclic garbage
    # collector would rescan them again and again (quadratic in practice).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for line, record, start in iter_fact_lines(facts_bytes, facts_path):
            fact = load(line, record)
            if fact.seq != line:
                raise BundleCorruptError(
                    f"fact seq {fact.seq} is on line {line}: facts must be in seq order from 1",
                    path=str(facts_path),
                    line=line,
                    field="seq",
                    fix=_RECORD_FIX,
                )
            if visit is not None:
                visit(fact)
            if lazy:
                spans.extend((start, start + len(record)))
            else:
                facts.append(fact)
            count += 1
    finally:
        if collecting:
            gc.enable()
    if count != manifest.fact_count:
        raise BundleCorruptError(
            f"facts.jsonl has {count} facts but manifest.json says {manifest.fact_count}"
            + (" (truncated?)" if count < manifest.fact_count else ""),
            path=str(facts_path),
            fix=_RECORD_FIX,
        )
    if digest_bytes(facts_bytes) != manifest.facts_digest:
        raise BundleCorruptError(
            "facts.jsonl does not match the digest in manifest.json (edited after recording)",
            path=str(facts_path),
            fix=f"{_RECORD_FIX}; or accept the edit with: llmwb rehash {root}",
        )
    kept: Sequence[Any] = LazyFacts(facts_bytes, spans, load) if lazy else facts
    return Bundle(manifest=manifest, dag=dag, facts=kept, path=root, volatile=volatile)


def _check_dag(dag: DagSnapshot, manifest: Manifest, path: Path) -> None:
    from .dag import _node, _snapshot

    for node in dag.nodes:
        for key, value in node.config.items():
            if node.digests.get(key) != digest(value):
                raise BundleCorruptError(
                    f"node {node.id!r}: config {key!r} does not match its digest "
                    "(dag.json edited by hand?)",
                    path=str(path),
                    field=f"nodes.{node.id}.config.{key}",
                    fix=_RECORD_FIX,
                )
        if _node(node.id, node.kind, dict(node.config)).digest != node.digest:
            raise BundleCorruptError(
                f"dag.json: node {node.id!r} does not match its digest "
                "(id, kind or config edited by hand?)",
                path=str(path),
                field=f"nodes.{node.id}",
                fix=_RECORD_FIX,
            )
    rebuilt = _snapshot(dag.name, dag.declared, list(dag.nodes), list(dag.edges))
    if rebuilt.digest != dag.digest or dag.digest != manifest.dag_digest:
        raise BundleCorruptError(
            "dag.json does not match its digest or the manifest's dag_digest (edited by hand?)",
            path=str(path),
            field="digest",
            fix=_RECORD_FIX,
        )


def rehash_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Accept hand edits to ``facts.jsonl``: validate every fact and rewrite the manifest."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleNotFoundError(f"no bundle at {root}", fix=_RECORD_FIX)
    raw_manifest = _loads(_read(manifest_path, MAX_MANIFEST_BYTES), manifest_path)
    _check_version(raw_manifest, manifest_path)
    manifest: Manifest = _validated(Manifest, raw_manifest, manifest_path)
    facts_path = root / FACTS
    facts_bytes = _read(facts_path, sys.maxsize)
    count = 0
    for line, record, _ in iter_fact_lines(facts_bytes, facts_path):
        raw = _inline(_loads(record, facts_path, line), root / BLOBS, facts_path, line)
        parse_fact(raw, facts_path, line)
        count += 1
    updated = manifest.model_copy(
        update={"fact_count": count, "facts_digest": digest_bytes(facts_bytes)}
    )
    _write_file(manifest_path, dumps_pretty(updated.model_dump(mode="json")))
    return load_bundle(root)


def iter_bundles(root: str | os.PathLike[str]) -> Iterable[Path]:
    """Every bundle directory below ``root`` (directories holding a manifest.json)."""
    for manifest in sorted(Path(root).rglob(MANIFEST)):
        if not any(part.startswith(".") for part in manifest.parent.relative_to(root).parts):
            yield manifest.parent
