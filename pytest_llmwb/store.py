"""Bundles on disk: a deterministic, git-friendly directory, written atomically, read strictly.

Layout of a bundle directory::

    manifest.json   schema version, digest of every other file, fact count, blobs
    dag.json        the DAG snapshot (indented, sorted keys)
    facts.jsonl     one fact per line, compact, seq/kind/node first, no volatile values
    volatile.json   wall times, durations, trace and span ids, by fact seq
    blobs/<hex>     strings larger than BLOB_THRESHOLD, by sha256 of their UTF-8 bytes

Only ``volatile.json`` (and its digest in the manifest) changes when unchanged
behaviour is recorded again. The manifest covers every other file: ``load_bundle``
checks each file and blob against it before anything is returned.
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
import socket
import stat
import sys
import time
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
    BundleIntegrityError,
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
#: How a sealed bundle's redaction marks a withheld field: ``{"$redacted": <commitment>}``.
REDACTED_KEY = "$redacted"

#: Strings longer than this many UTF-8 bytes are stored out of line in ``blobs/``.
BLOB_THRESHOLD = 16 * 1024
BLOB_KEY = "$blob"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DAG_BYTES = 64 * 1024 * 1024
MAX_VOLATILE_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024 * 1024
#: The largest blob a bundle may hold (a long string or one captured wire exchange).
MAX_BLOB_BYTES = 256 * 1024 * 1024
#: The files whose digest ``manifest.json`` holds in ``files`` (blobs are named by theirs).
DIGESTED_FILES = (DAG, FACTS, VOLATILE)
#: A blob reference: ``sha256:`` and 64 lowercase hex digits, nothing else.
BLOB_REF = re.compile(r"sha256:[0-9a-f]{64}")

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


def _fsync_dir(path: Path) -> None:
    """Make a rename in directory ``path`` durable (a no-op where directories cannot be)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) refuse fsync on a directory
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace one file by a fully written copy: readers see the old or the new bytes."""
    staged = path.with_name(f".{path.name}.{_staging_tag()}")
    try:
        _write_file(staged, data)
        os.replace(staged, path)
    finally:
        if staged.exists():
            staged.unlink()
    _fsync_dir(path.parent)


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
        _fsync_dir(target.parent)
        return
    if _exchange(staged, target):
        _fsync_dir(target.parent)
        shutil.rmtree(staged)  # staged now holds the old bundle
        return
    backup = target.with_name(f".{target.name}.llmwb-old-{uuid.uuid4().hex[:8]}")
    os.rename(target, backup)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(backup, target)
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(backup)


# --- staging directories ---------------------------------------------------------------

#: Staging directories of this host carry this tag, so that only they are judged by pid.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
#: A staging directory of another host (a shared filesystem), or of an older version
#: that did not name its writer, is stale after this many seconds without a change.
STALE_STAGING_SECONDS = 24 * 3600


def _staging_tag() -> str:
    return f"llmwb-tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process: alive, as far as we may know
    except OSError:
        return True
    return True


def clean_stale_staging(target: Path) -> list[Path]:
    """Remove staging directories that a killed write of ``target`` left beside it.

    Only directories named as :func:`write_bundle` names its own staging directories
    for this very bundle (``.<name>.llmwb-tmp-<host>-<pid>-<random>``) are considered,
    and only stale ones: written on this host by a process that no longer exists, or
    (another host, or an older version's name) untouched for
    :data:`STALE_STAGING_SECONDS`. A live writer's directory (an xdist worker writing
    a sibling, or the same bundle) is never touched. Returns what was removed.
    """
    parent = target.parent
    prefix = f".{target.name}.llmwb-tmp-"
    ours = re.compile(r"([0-9a-f]{8})-(\d{1,10})-[0-9a-f]{8}")
    legacy = re.compile(r"[0-9a-f]{8}")
    removed: list[Path] = []
    try:
        entries = [entry for entry in os.scandir(parent) if entry.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        rest = entry.name[len(prefix) :]
        match = ours.fullmatch(rest)
        if match is None and legacy.fullmatch(rest) is None:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if match is not None and match.group(1) == _HOST:
            stale = not _alive(int(match.group(2)))
        else:
            stale = age > STALE_STAGING_SECONDS
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


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

    given = Path(path)
    # a bundle directory that is a symlink is written through: the new bundle is swapped
    # in at the link's target (atomically, beside it) and the link is left as it is
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    records, dag, blobs = (scrubber or default_scrubber()).guard_bundle(
        [fact_record(f) for f in facts], dag, dict(blobs or {}), rekey=digest_bytes
    )
    lines = [dumps_record(_outline(record, blobs)) for record in records]
    facts_bytes = b"".join(line + b"\n" for line in lines)
    volatile_facts = {str(f.seq): v for f in facts if (v := volatile_record(f))}
    volatile = {"run": volatile_run or {}, "facts": volatile_facts}
    dag_bytes = dumps_pretty(dag.model_dump(mode="json"))
    volatile_bytes = dumps_pretty(volatile)
    facts_digest = digest_bytes(facts_bytes)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        producer=f"pytest-llmwb {__version__}",
        dag_digest=dag.digest,
        fact_count=len(lines),
        facts_digest=facts_digest,
        files={
            DAG: digest_bytes(dag_bytes),
            FACTS: facts_digest,
            VOLATILE: digest_bytes(volatile_bytes),
        },
        blobs=sorted(blobs),
        labels=labels or {},
    )
    manifest_bytes = dumps_pretty(manifest.model_dump(mode="json"))
    bundle = Bundle(
        manifest=manifest, dag=dag, facts=list(facts), path=given, volatile=volatile, blobs=blobs
    )
    if keep_unchanged and _unchanged(target, manifest, blobs):
        return dataclasses.replace(bundle, written=False)
    staged = target.with_name(f".{target.name}.{_staging_tag()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(target)
        staged.mkdir()
        try:
            _write_file(staged / DAG, dag_bytes)
            _write_file(staged / FACTS, facts_bytes)
            _write_file(staged / VOLATILE, volatile_bytes)
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


def _unchanged(target: Path, manifest: Manifest, blobs: dict[str, bytes]) -> bool:
    """Whether the bundle at ``target`` already holds what ``manifest`` describes.

    The digest of ``volatile.json`` is left out of the comparison: the bundle there is
    kept whole, with its own ``volatile.json``, which its manifest covers.
    """
    try:
        stored = orjson.loads((target / MANIFEST).read_bytes())
        kept_volatile = stored["files"][VOLATILE]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return False
    same = manifest.model_copy(update={"files": {**manifest.files, VOLATILE: kept_volatile}})
    if stored != same.model_dump(mode="json"):
        return False
    return all((target / BLOBS / ref.removeprefix("sha256:")).is_file() for ref in blobs)


# --- reading ---------------------------------------------------------------------------

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _read_regular(
    path: Path, limit: int, *, missing: tuple[Path, int | None] | None = None
) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Opened without blocking (a FIFO or a device never hangs the reader) and checked to
    be a regular file before anything is read, so a hostile bundle cannot make a
    loader wait forever or read without end. ``missing`` names the place to report a
    missing file at (the file and line that refer to it).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        where, line = missing if missing is not None else (path, None)
        raise BundleCorruptError(
            f"bundle file {path.name} is missing", path=str(where), line=line, fix=_RECORD_FIX
        ) from None
    except OSError as exc:
        raise BundleCorruptError(
            f"{path.name} cannot be read: {exc.strerror or exc}", path=str(path), fix=_RECORD_FIX
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise BundleCorruptError(
            f"{path.name} is {what}: a bundle holds regular files only",
            path=str(path),
            fix=_RECORD_FIX,
        )
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if info.st_size > limit:
            raise BundleCorruptError(
                f"{path.name} is {info.st_size} bytes, over the {limit}-byte limit for this file",
                path=str(path),
                fix=_RECORD_FIX,
            )
        try:
            data = handle.readall() if info.st_size == 0 else handle.read(info.st_size + 1)
        except OSError as exc:
            raise BundleCorruptError(
                f"{path.name} cannot be read: {exc.strerror or exc}",
                path=str(path),
                fix=_RECORD_FIX,
            ) from None
    if data is None or len(data) > info.st_size:
        raise BundleCorruptError(
            f"{path.name} changed while it was being read", path=str(path), fix=_RECORD_FIX
        )
    return bytes(data)


def _read(path: Path, limit: int) -> bytes:
    return _read_regular(path, limit)


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
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. too deep for a validator
        raise BundleCorruptError(
            f"invalid {path.name}: {type(exc).__name__}: {exc}",
            path=str(path),
            line=line,
            fix=_RECORD_FIX,
        ) from None


def _rehash_fix(root: Path) -> str:
    return f"{_RECORD_FIX}; or, for a bundle you trust, upgrade it in place: llmwb rehash {root}"


def _check_version(raw: Any, path: Path, *, upgradable: bool = False) -> None:
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version == SCHEMA_VERSION or (upgradable and version == 1):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"bundle {path.parent} has schema_version {version}; this pytest-llmwb "
            f"({__version__}) reads schema_version {SCHEMA_VERSION}",
            fix="upgrade: pip install -U pytest-llmwb",
        )
    if version == 1:
        raise SchemaVersionError(
            f"bundle {path.parent} has schema_version 1, whose manifest covers only "
            f"facts.jsonl and dag.json; this pytest-llmwb ({__version__}) reads "
            f"schema_version {SCHEMA_VERSION}, whose manifest covers every file",
            fix=_rehash_fix(path.parent),
        )
    raise SchemaVersionError(
        f"bundle {path.parent} has schema_version {version!r}; this pytest-llmwb "
        f"({__version__}) reads schema_version {SCHEMA_VERSION} and has no migration from it",
        fix=_RECORD_FIX,
    )


def _check_manifest(manifest: Manifest, path: Path) -> None:
    """The manifest's file list and blob names are exactly what this version writes."""
    if sorted(manifest.files) != sorted(DIGESTED_FILES):
        raise BundleCorruptError(
            f"manifest.json lists files {sorted(manifest.files)}; a bundle has exactly "
            f"{list(DIGESTED_FILES)} besides blobs/",
            path=str(path),
            field="files",
            fix=_RECORD_FIX,
        )
    for name, value in manifest.files.items():
        if not BLOB_REF.fullmatch(value):
            raise BundleCorruptError(
                f"the digest of {name} is not sha256: and 64 lowercase hex digits: {value!r}",
                path=str(path),
                field=f"files.{name}",
                fix=_RECORD_FIX,
            )
    if manifest.files[FACTS] != manifest.facts_digest:
        raise BundleIntegrityError(
            "manifest.json holds two different digests of facts.jsonl",
            path=str(path),
            field="facts_digest",
            fix=_RECORD_FIX,
        )
    for index, ref in enumerate(manifest.blobs):
        _check_ref(ref, path, field=f"blobs.{index}")


def _check_ref(ref: Any, path: Path, *, line: int | None = None, field: str | None = None) -> None:
    if not isinstance(ref, str) or not BLOB_REF.fullmatch(ref):
        raise BundleCorruptError(
            f"{ref!r} is not a blob reference (sha256: and 64 lowercase hex digits)",
            path=str(path),
            line=line,
            field=field,
            fix=_RECORD_FIX,
        )


def _check_digest(data: bytes, expected: str, path: Path, root: Path) -> None:
    if digest_bytes(data) != expected:
        raise BundleIntegrityError(
            f"{path.name} does not match its digest in manifest.json (modified after recording)",
            path=str(path),
            fix=f"{_RECORD_FIX}; or, if the edit is intended, accept it with: llmwb rehash {root}",
        )


def read_blob(blobs_dir: Path, ref: str, *, referrer: tuple[Path, int] | None = None) -> bytes:
    """The bytes of blob ``ref``, checked against its digest.

    ``ref`` must be ``sha256:`` and 64 lowercase hex digits, so it names a file inside
    ``blobs_dir`` and nowhere else; the file must be a regular file of at most
    :data:`MAX_BLOB_BYTES`. A missing blob is reported at ``referrer`` (the file and
    line that point to it) when given; a blob whose bytes do not match its name is
    reported at the blob.
    """
    where, line = referrer if referrer is not None else (blobs_dir, None)
    _check_ref(ref, where, line=line)
    blob = blobs_dir / ref.removeprefix("sha256:")
    try:
        data = _read_regular(blob, MAX_BLOB_BYTES, missing=(where, line))
    except BundleCorruptError as exc:
        if "is missing" in str(exc):
            raise BundleCorruptError(
                f"blob {ref} is missing", path=str(where), line=line, fix=_RECORD_FIX
            ) from None
        raise
    if digest_bytes(data) != ref:
        raise BundleIntegrityError(
            f"blob {ref} does not match its digest (modified on disk)",
            path=str(blob),
            fix=_RECORD_FIX,
        )
    return data


def _inline(
    value: Any,
    blobs_dir: Path,
    facts_path: Path,
    line: int,
    seen: set[str] | None = None,
    texts: dict[str, str] | None = None,
) -> Any:
    """``value`` with each ``$blob`` reference replaced by the blob's text.

    With ``texts``, each blob is read, checked and decoded once however often it is
    referenced, and the references share one string: a bundle that names one large
    blob many times costs its size once, not once per reference.
    """
    if isinstance(value, dict):
        if BLOB_KEY in value and len(value) == 2:
            ref = value[BLOB_KEY]
            if texts is not None and isinstance(ref, str) and ref in texts:
                return texts[ref]
            data = read_blob(blobs_dir, ref, referrer=(facts_path, line))
            if seen is not None:
                seen.add(ref)
            try:
                text = data.decode()
            except UnicodeDecodeError:
                raise BundleCorruptError(
                    f"blob {ref} is not UTF-8 text, which a string stored out of line is",
                    path=str(facts_path),
                    line=line,
                    fix=_RECORD_FIX,
                ) from None
            if texts is not None:
                texts[ref] = text
            return text
        return {k: _inline(v, blobs_dir, facts_path, line, seen, texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_inline(v, blobs_dir, facts_path, line, seen, texts) for v in value]
    return value


_HEX = {"trace_id": re.compile(r"[0-9a-f]{32}"), "span_id": re.compile(r"[0-9a-f]{16}")}
# the run's own values: its wall times and mode, and the trace context it started in
_VOLATILE_RUN = ("started_at", "finished_at", "mode", *_HEX)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _volatile_value(name: str, value: Any) -> bool:
    if name in _HEX:
        return isinstance(value, str) and _HEX[name].fullmatch(value) is not None
    if name == "at":
        return isinstance(value, str) and len(value) <= 64
    if name == "duration_ms":
        return _number(value)
    if name == "timing":
        return isinstance(value, list) and all(_number(v) for v in value)
    return False


def check_volatile(raw: Any, path: Path, fact_count: int) -> dict[str, Any]:
    """``volatile.json`` validated: only timing and trace values, each of its type.

    It is merged over the facts when they are read, so it may hold nothing that says
    what happened: per fact seq (1 to ``fact_count``) only ``at``, ``duration_ms``,
    ``trace_id``, ``span_id`` and ``timing``; for the run only ``started_at``,
    ``finished_at`` and ``mode`` as strings, and ``trace_id``/``span_id`` as hex ids.
    """

    def bad(message: str, field: str | None = None) -> BundleCorruptError:
        return BundleCorruptError(
            f"volatile.json: {message}", path=str(path), field=field, fix=_RECORD_FIX
        )

    if not isinstance(raw, dict) or set(raw) - {"run", "facts"}:
        raise bad('must be an object with only "run" and "facts"')
    run = raw.get("run", {})
    if not isinstance(run, dict):
        raise bad('"run" must be an object', "run")
    for key, value in run.items():
        if key not in _VOLATILE_RUN:
            raise bad(f"run may hold only {', '.join(_VOLATILE_RUN)}, not {key!r}", f"run.{key}")
        if value is None:
            continue
        if key in _HEX:
            if not _volatile_value(key, value):
                raise bad(f"run.{key} has the wrong type or shape: {value!r:.80}", f"run.{key}")
        elif not isinstance(value, str):
            raise bad(f"run.{key} must be a string", f"run.{key}")
    facts = raw.get("facts", {})
    if not isinstance(facts, dict):
        raise bad('"facts" must be an object keyed by fact seq', "facts")
    for seq, values in facts.items():
        if not (seq.isdigit() and seq.isascii() and str(int(seq)) == seq):
            raise bad(f"{seq!r} is not a fact seq", f"facts.{seq}")
        if not 1 <= int(seq) <= fact_count:
            raise bad(f"there is no fact seq {seq} (the bundle has {fact_count})", f"facts.{seq}")
        if not isinstance(values, dict):
            raise bad(f"facts.{seq} must be an object", f"facts.{seq}")
        for name, value in values.items():
            if name not in VOLATILE_FIELDS:
                raise bad(
                    f"a fact's volatile values are {', '.join(sorted(VOLATILE_FIELDS))}; "
                    f"{name!r} would change what the fact says",
                    f"facts.{seq}.{name}",
                )
            if not _volatile_value(name, value):
                raise bad(
                    f"{name} has the wrong type or shape: {value!r:.80}", f"facts.{seq}.{name}"
                )
    return {"run": run, "facts": facts}


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

    if not isinstance(kind, str) or kind not in FACT_KINDS:
        raise UnknownFactKindError(
            f"unknown fact kind {kind!r:.80}; this pytest-llmwb ({__version__}) knows "
            f"{', '.join(FACT_KINDS)}",
            path=str(path),
            line=line,
            field="kind",
            fix="upgrade pytest-llmwb if the bundle is newer, or " + _RECORD_FIX,
        )
    for name in VOLATILE_FIELDS & raw.keys():
        # volatile values live in volatile.json only: one here was put by hand
        raise BundleCorruptError(
            f"{name} is a volatile value, kept in volatile.json, never in facts.jsonl",
            path=str(path),
            line=line,
            field=name,
            fix=_RECORD_FIX,
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
    except (ValueError, TypeError, RecursionError) as exc:
        raise BundleCorruptError(
            f"invalid {kind} fact: {type(exc).__name__}: {exc}",
            path=str(path),
            line=line,
            fix=_RECORD_FIX,
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


def _check_blobs(root: Path, manifest: Manifest, verified: set[str], referenced: set[str]) -> None:
    """Every blob the manifest lists matches its name; no other file is in ``blobs/``.

    Blobs already read (and so checked) while the facts were parsed are in ``verified``;
    every reference from a fact must be to a listed blob.
    """
    manifest_path = root / MANIFEST
    listed = set(manifest.blobs)
    unlisted = sorted(referenced - listed)
    if unlisted:
        raise BundleIntegrityError(
            f"facts.jsonl refers to blob {unlisted[0]}, which manifest.json does not list",
            path=str(root / FACTS),
            fix=_RECORD_FIX,
        )
    blobs_dir = root / BLOBS
    for ref in manifest.blobs:
        if ref not in verified:
            read_blob(blobs_dir, ref, referrer=(manifest_path, 0))
    try:
        present = os.listdir(blobs_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BundleCorruptError(
            f"blobs/ cannot be listed: {exc.strerror or exc}", path=str(blobs_dir), fix=_RECORD_FIX
        ) from None
    names = {ref.removeprefix("sha256:") for ref in listed}
    extra = sorted(name for name in present if name not in names)
    if extra:
        raise BundleIntegrityError(
            f"blobs/{extra[0]} is not listed in manifest.json: every file of a bundle is "
            "covered by its manifest",
            path=str(blobs_dir / extra[0]),
            fix=f"remove it, or {_RECORD_FIX}",
        )


def load_bundle(
    path: str | os.PathLike[str],
    *,
    lazy: bool = False,
    visit: Callable[[Any], None] | None = None,
) -> Bundle:
    """Read and validate a bundle directory; every file and blob is checked.

    Every fact is validated, and every file and blob is checked against the digest
    ``manifest.json`` holds for it before the bundle is returned, so nothing is served
    from a bundle modified after it was recorded. With ``lazy``, facts are kept as
    their stored lines and rebuilt when read (see :class:`LazyFacts`), which is how
    replay keeps memory near the bundle's size; ``visit`` is called with each fact as
    it is validated.

    Raises :class:`BundleNotFoundError` when there is none, :class:`SchemaVersionError`
    for an unreadable version, :class:`BundleIntegrityError` for a file that does not
    match its digest, and :class:`BundleCorruptError` (naming file, line and field) for
    anything malformed, truncated or inconsistent.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        leftovers = (
            sorted(root.parent.glob(f".{root.name}.llmwb-old-*")) if root.parent.is_dir() else []
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
    raw_manifest = _loads(_read(manifest_path, MAX_MANIFEST_BYTES), manifest_path)
    _check_version(raw_manifest, manifest_path)
    manifest: Manifest = _validated(Manifest, raw_manifest, manifest_path)
    _check_manifest(manifest, manifest_path)

    dag_path = root / DAG
    dag_bytes = _read(dag_path, MAX_DAG_BYTES)
    dag: DagSnapshot = _validated(DagSnapshot, _loads(dag_bytes, dag_path), dag_path)
    _check_dag(dag, manifest, dag_path)  # first: it names the node and key edited
    _check_digest(dag_bytes, manifest.files[DAG], dag_path, root)

    volatile_path = root / VOLATILE
    volatile_bytes = _read(volatile_path, MAX_VOLATILE_BYTES)
    volatile = check_volatile(
        _loads(volatile_bytes, volatile_path), volatile_path, manifest.fact_count
    )
    _check_digest(volatile_bytes, manifest.files[VOLATILE], volatile_path, root)
    volatile_facts: dict[str, Any] = volatile["facts"]

    facts_path = root / FACTS
    facts_bytes = _read(facts_path, sys.maxsize)
    blobs_dir = root / BLOBS
    blob_key = BLOB_KEY.encode()
    verified: set[str] = set()
    referenced: set[str] = set()

    # in a sealed bundle, {"$redacted": ...} is a withheld value even if the list of
    # redactions was removed; seal_bundle refuses a genuine value of that shape
    sealed = (root / "seal").is_dir()

    def load(
        line: int,
        record: bytes,
        seen: set[str] | None = None,
        texts: dict[str, str] | None = None,
    ) -> Any:
        raw = _loads(record, facts_path, line)
        if sealed and isinstance(raw, dict):
            for name, value in raw.items():
                if (
                    isinstance(value, dict)
                    and len(value) == 1
                    and isinstance(value.get(REDACTED_KEY), str)
                ):
                    raise BundleRedactedError(
                        f"bundle {root} is redacted: fact {line} has {name!r} withheld "
                        "(a digest is not content, so it cannot serve a replay)",
                        fix="replay the unredacted bundle; hand the redacted copy to auditors "
                        f"only (check it with: llmwb verify {root} --trust KEY.pub)",
                    )
        if blob_key in record:
            raw = _inline(raw, blobs_dir, facts_path, line, seen, texts)
        return parse_fact(raw, facts_path, line, volatile_facts.get(str(line)))

    facts: list[Any] = []
    spans = array.array("Q")
    count = 0
    # Parsing allocates many small objects that all stay alive: the cyclic garbage
    # collector would rescan them again and again (quadratic in practice).
    collecting = gc.isenabled()
    gc.disable()
    try:
        texts: dict[str, str] = {}  # each blob's text once, however often it is named
        for line, record, start in iter_fact_lines(facts_bytes, facts_path):
            fact = load(line, record, verified, texts)
            if fact.seq != line:
                raise BundleCorruptError(
                    f"fact seq {fact.seq} is on line {line}: facts must be in seq order from 1",
                    path=str(facts_path),
                    line=line,
                    field="seq",
                    fix=_RECORD_FIX,
                )
            exchange = getattr(fact, "exchange", None)
            if exchange is not None:
                _check_ref(exchange, facts_path, line=line, field="exchange")
                referenced.add(exchange)
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
    # after parsing, so that a truncated or malformed file is reported at its line; the
    # parser is bounded and reads only validated blob names, so that order is safe
    if digest_bytes(facts_bytes) != manifest.facts_digest:
        raise BundleIntegrityError(
            "facts.jsonl does not match the digest in manifest.json (edited after recording)",
            path=str(facts_path),
            fix=f"{_RECORD_FIX}; or accept the edit with: llmwb rehash {root}",
        )
    _check_blobs(root, manifest, verified, referenced | verified)
    kept: Sequence[Any] = LazyFacts(facts_bytes, spans, load) if lazy else facts
    return Bundle(manifest=manifest, dag=dag, facts=kept, path=root, volatile=volatile)


def _check_dag(dag: DagSnapshot, manifest: Manifest, path: Path) -> None:
    from .dag import _node, _snapshot

    try:
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
    except (ValueError, TypeError, RecursionError) as exc:
        # a value JSON holds but cannot digest exactly (an integer beyond 2**53, ...)
        raise BundleCorruptError(
            f"dag.json holds a value that cannot be digested: {exc}",
            path=str(path),
            fix=_RECORD_FIX,
        ) from None
    if rebuilt.digest != dag.digest or dag.digest != manifest.dag_digest:
        raise BundleCorruptError(
            "dag.json does not match its digest or the manifest's dag_digest (edited by hand?)",
            path=str(path),
            field="digest",
            fix=_RECORD_FIX,
        )


def _exchange_disagreement(fact: Any, data: bytes, where: str) -> str | None:
    """Where a captured fact no longer says what its wire exchange says, or ``None``.

    The exchange is read again by the adapter that recorded it; the request and the
    response it gives must be the fact's. Exchanges no built-in adapter reads (and
    responses cut short) are not compared.
    """
    from urllib.parse import urlsplit

    from .adapters import AdapterError, find_adapter
    from .capture.exchange import Exchange
    from .codec import pointer_changes

    exchange = Exchange.from_blob(data, where=where)
    url = urlsplit(exchange.url)
    found = find_adapter(exchange.method, url.hostname or "", url.path)
    if isinstance(fact, ModelIOFact):
        if found is None:
            return None
        adapter = found[0]
        pairs: list[tuple[str, Any, Any]] = []
        try:
            request = adapter.parse_request(orjson.loads(exchange.request_body))
            pairs.append(("request", fact.request, request))
        except (orjson.JSONDecodeError, AdapterError):
            pass
        if exchange.status is not None and exchange.end == "eof" and fact.response is not None:
            try:
                response, _ = adapter.parse_response(
                    exchange.status, exchange.body, exchange.content_type
                )
            except AdapterError:
                response = None
            if response is not None:
                pairs.append(("response", fact.response, response))
        for name, stored, wire in pairs:
            changes = pointer_changes(stored.model_dump(mode="json"), wire.model_dump(mode="json"))
            if changes:
                pointer, said, heard = changes[0]
                return f"{name}{pointer} is {said!r:.120} but the exchange says {heard!r:.120}"
        return None
    if isinstance(fact, ToolCallFact) and exchange.status is not None and found is None:
        body: Any = exchange.body
        if "json" in exchange.content_type.lower():
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError:
                body = exchange.body
        if isinstance(body, bytes):
            try:
                body = body.decode() if body else None
            except UnicodeDecodeError:
                body = f"<{len(body)} bytes>"
        wire = {"status": exchange.status, "body": body}
        changes = pointer_changes(fact.result, wire)
        if changes:
            pointer, said, heard = changes[0]
            return f"result{pointer} is {said!r:.120} but the exchange says {heard!r:.120}"
    return None


def rehash_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Accept hand edits to ``facts.jsonl``: validate everything and rewrite the manifest.

    Also upgrades a bundle of schema_version 1 (whose manifest did not cover
    ``dag.json``, ``volatile.json`` and every blob) to the current version. Refuses
    (:class:`BundleIntegrityError`) a fact captured over HTTP that no longer says what
    its stored wire exchange says: replay serves the exchange, so such an edit would
    make replay and the receipts tell two different stories.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleNotFoundError(f"no bundle at {root}", fix=_RECORD_FIX)
    raw_manifest = _loads(_read(manifest_path, MAX_MANIFEST_BYTES), manifest_path)
    _check_version(raw_manifest, manifest_path, upgradable=True)
    if isinstance(raw_manifest, dict):  # the fields this version adds, recomputed below
        raw_manifest = {**raw_manifest, "files": {}, "schema_version": SCHEMA_VERSION}
    manifest: Manifest = _validated(Manifest, raw_manifest, manifest_path)
    for index, ref in enumerate(manifest.blobs):
        _check_ref(ref, manifest_path, field=f"blobs.{index}")
    dag_path = root / DAG
    dag_bytes = _read(dag_path, MAX_DAG_BYTES)
    dag: DagSnapshot = _validated(DagSnapshot, _loads(dag_bytes, dag_path), dag_path)
    _check_dag(dag, manifest, dag_path)
    facts_path = root / FACTS
    facts_bytes = _read(facts_path, sys.maxsize)
    volatile_path = root / VOLATILE
    if volatile_path.exists() or volatile_path.is_symlink():
        volatile_bytes = _read(volatile_path, MAX_VOLATILE_BYTES)
        check_volatile(
            _loads(volatile_bytes, volatile_path),
            volatile_path,
            sum(1 for _ in iter_fact_lines(facts_bytes, facts_path)),
        )
    else:  # older bundles could do without one
        volatile_bytes = dumps_pretty({"run": {}, "facts": {}})
    blobs_dir = root / BLOBS
    seen: set[str] = set()
    count = 0
    for line, record, _ in iter_fact_lines(facts_bytes, facts_path):
        raw = _inline(_loads(record, facts_path, line), blobs_dir, facts_path, line, seen)
        fact = parse_fact(raw, facts_path, line)
        exchange = getattr(fact, "exchange", None)
        if exchange is not None:
            data = read_blob(blobs_dir, exchange, referrer=(facts_path, line))
            seen.add(exchange)
            problem = _exchange_disagreement(fact, data, f"blob {exchange}")
            if problem is not None:
                raise BundleIntegrityError(
                    f"fact seq {fact.seq} (node {fact.node!r}) no longer says what its "
                    f"captured wire exchange says: {problem}. Replay serves the exchange, "
                    "so the receipts and the replayed run would disagree; not rehashed",
                    path=str(facts_path),
                    line=line,
                    field="exchange",
                    fix=f"undo the edit (git checkout -- {facts_path}), or {_RECORD_FIX}",
                )
        count += 1
    updated = manifest.model_copy(
        update={
            "fact_count": count,
            "facts_digest": digest_bytes(facts_bytes),
            "files": {
                DAG: digest_bytes(dag_bytes),
                FACTS: digest_bytes(facts_bytes),
                VOLATILE: digest_bytes(volatile_bytes),
            },
        }
    )
    if not volatile_path.exists():
        write_atomic(volatile_path, volatile_bytes)
    _check_blobs(root, updated, seen, seen)
    write_atomic(manifest_path, dumps_pretty(updated.model_dump(mode="json")))
    return load_bundle(root)


def iter_bundles(root: str | os.PathLike[str]) -> Iterable[Path]:
    """Every bundle directory below ``root`` (directories holding a manifest.json)."""
    for manifest in sorted(Path(root).rglob(MANIFEST)):
        if not any(part.startswith(".") for part in manifest.parent.relative_to(root).parts):
            yield manifest.parent
