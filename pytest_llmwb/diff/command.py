"""``llmwb diff``: compare two bundles, two trees of bundles, or one path at git revisions.

Exit codes follow diff(1): 0 the runs are the same (volatile values aside), 1 they
differ (including bundles added, removed or of unrelated runs), 2 an error (message on
stderr, with the fix).

- ``llmwb diff OLD NEW``: two bundle directories, or two directories holding bundles
  (paired by relative path).
- ``llmwb diff --rev REV PATH``: ``PATH`` as of ``REV`` against the work tree; with
  ``--rev A --rev B``, as of ``A`` against as of ``B``. For a directory holding bundles,
  only the bundles git sees as changed are read, so a PR touching two of 3,000 bundles
  costs two diffs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson

from .. import __version__
from ..exceptions import BundleNotFoundError, ConfigError, SchemaVersionError
from .engine import RunDiff, diff_runs
from .render import render_json, render_markdown, render_text

__all__ = ["BundleDiff", "compare_bundles", "compare_trees", "paused_gc", "render", "run"]

Status = Literal["same", "changed", "unrelated", "added", "removed"]
#: GitHub refuses comments over 65,536 characters; tree Markdown stops well before.
MARKDOWN_BUDGET = 60_000


@dataclass(frozen=True)
class BundleDiff:
    """One bundle compared: its path, what happened to it, and the diff when both exist."""

    path: str
    status: Status
    diff: RunDiff | None = None
    about: str = ""  # for an added or removed bundle: its run name and size

    @property
    def differs(self) -> bool:
        """True unless the two sides are the same run."""
        return self.status != "same"


# --- loading --------------------------------------------------------------------------------


def _manifest(path: Path) -> Any:
    """The decoded ``manifest.json`` of ``path``, or ``None`` (read bounded, never blocking)."""
    from ..store import MAX_MANIFEST_BYTES
    from ..textconv import _regular_bytes

    data = _regular_bytes(path / "manifest.json", MAX_MANIFEST_BYTES)
    try:
        return orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        return None


def _schema_version(path: Path) -> Any:
    raw = _manifest(path)
    return raw.get("schema_version") if isinstance(raw, dict) else None


def check_versions(old: Path, new: Path, old_name: str, new_name: str) -> None:
    """Raise :class:`SchemaVersionError` saying exactly why bundles of two versions differ."""
    from ..schema import SCHEMA_VERSION

    versions = {old_name: _schema_version(old), new_name: _schema_version(new)}
    if len(set(map(repr, versions.values()))) == 1:
        return  # the same version: loading says whether it is readable
    both = (
        f"{old_name} has schema_version {versions[old_name]!r}, "
        f"{new_name} has {versions[new_name]!r}"
    )
    unreadable = [(n, v) for n, v in versions.items() if v != SCHEMA_VERSION]
    name, version = unreadable[0]
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"cannot compare bundles of two schema versions: {both}. {name} was written by a "
            f"newer pytest-llmwb; this one ({__version__}) reads schema_version "
            f"{SCHEMA_VERSION} and cannot read it",
            fix="upgrade, then compare again: pip install -U pytest-llmwb",
        )
    if version == 1:
        path = old if name == old_name else new
        raise SchemaVersionError(
            f"cannot compare bundles of two schema versions: {both}. {name} was written "
            f"before manifests covered every file; this pytest-llmwb ({__version__}) reads "
            f"schema_version {SCHEMA_VERSION}",
            fix=f"record the run of {name} again (pytest --llmwb-record <test id>), or, for a "
            f"bundle you trust, upgrade it in place: llmwb rehash {path}",
        )
    raise SchemaVersionError(
        f"cannot compare bundles of two schema versions: {both}. This pytest-llmwb "
        f"({__version__}) reads schema_version {SCHEMA_VERSION}, so there is no migration "
        f"from {version!r}: {name} was not written by pytest-llmwb or was edited by hand",
        fix=f"record the run of {name} again (pytest --llmwb-record <test id>) and compare "
        "that recording",
    )


def _load(path: Path, name: str) -> Any:
    from ..store import load_bundle

    _require(path, name)
    return load_bundle(path)


def _require(path: Path, name: str) -> None:
    if not (path / "manifest.json").is_file():
        hint = " (a directory holding no bundle)" if path.is_dir() else " (no such directory)"
        raise BundleNotFoundError(
            f"no bundle at {name}{hint}",
            fix="give two bundle directories (each holds a manifest.json), "
            "or two directories of bundles",
        )


def _about(path: Path) -> str:
    raw = _manifest(path)
    try:
        return f"run {raw['name']}, {raw['fact_count']} facts"
    except (KeyError, TypeError, IndexError):
        return "unreadable manifest.json"


def _same_files(old: Path, new: Path) -> bool:
    """Byte-identical DAG and facts: the same run whatever the volatile values say."""
    from ..textconv import _regular_bytes

    for name in ("dag.json", "facts.jsonl"):
        before = _regular_bytes(old / name, 2**62)
        if before is None or before != _regular_bytes(new / name, 2**62):
            return False
    return True


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector.

    Two loaded bundles are hundreds of thousands of long-lived objects, and diffing them
    allocates many more: each collection rescans them all, which made a 100,000-fact
    diff four times slower (and superlinear). Nothing here makes reference cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compare_bundles(
    old: Path, new: Path, *, names: tuple[str, str] | None = None, **options: Any
) -> BundleDiff:
    """Compare two bundle directories; ``options`` go to :func:`diff_runs`."""
    old_name, new_name = names or (str(old), str(new))
    for path, name in ((old, old_name), (new, new_name)):
        _require(path, name)
    check_versions(old, new, old_name, new_name)
    with paused_gc():
        diff = diff_runs(_load(old, old_name), _load(new, new_name), **options)
    return BundleDiff(new_name, diff.verdict, diff)


def _bundles_below(root: Path) -> dict[str, Path]:
    """Bundle directories below ``root`` by relative path (hidden directories skipped)."""
    found: dict[str, Path] = {}
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "manifest.json" in files:
            found[Path(current).relative_to(root).as_posix()] = Path(current)
            dirs[:] = []  # a bundle holds no bundle
    return found


def _pair(rel: str, old: Path | None, new: Path | None, options: dict[str, Any]) -> BundleDiff:
    if old is None or not (old / "manifest.json").is_file():
        assert new is not None
        return BundleDiff(rel, "added", about=_about(new))
    if new is None or not (new / "manifest.json").is_file():
        return BundleDiff(rel, "removed", about=_about(old))
    if _same_files(old, new):
        return BundleDiff(rel, "same")
    return compare_bundles(old, new, names=(f"{rel} (old)", rel), **options)


def compare_trees(old: Path, new: Path, **options: Any) -> list[BundleDiff]:
    """Compare every bundle below two directories, paired by relative path."""
    olds, news = _bundles_below(old), _bundles_below(new)
    return [_pair(rel, olds.get(rel), news.get(rel), options) for rel in sorted({*olds, *news})]


def _join(rel: str, name: str) -> str:
    return name if rel == "." else f"{rel}/{name}"


def _compare_revisions(
    path: str, revs: Sequence[str], workdir: Path, options: dict[str, Any]
) -> BundleDiff | list[BundleDiff]:
    from .git import Repository, bundle_dirs

    repo = Repository()
    rel = repo.relative(path)
    old_rev, new_rev = revs[0], (revs[1] if len(revs) > 1 else None)
    for rev in revs:
        repo.commit(rev)
    old_dir = workdir / "old"
    new_dir = workdir / "new" if new_rev else repo.root
    old_files = repo.files(old_rev, rel)
    new_files = repo.files(new_rev, rel) if new_rev else None
    manifest = _join(rel, "manifest.json")
    old_is_bundle = manifest in old_files
    if new_files is not None:
        new_is_bundle = manifest in new_files
    else:
        new_is_bundle = (repo.root / manifest).is_file()
    if old_is_bundle or new_is_bundle:
        names = (f"{rel}@{old_rev}", f"{rel}@{new_rev}" if new_rev else rel)
        if old_is_bundle:
            repo.export(old_rev, [rel], old_dir)
        if new_rev and new_is_bundle:
            repo.export(new_rev, [rel], new_dir)
        if not old_is_bundle:
            return BundleDiff(names[1], "added", about=_about(new_dir / rel))
        if not new_is_bundle:
            return BundleDiff(names[0], "removed", about=_about(old_dir / rel))
        return compare_bundles(old_dir / rel, new_dir / rel, names=names, **options)
    new_exists = bool(new_files) if new_files is not None else (repo.root / rel).exists()
    if not old_files and not new_exists:
        raise BundleNotFoundError(
            f"nothing at {path}, neither in {old_rev} nor in {new_rev or 'the work tree'}",
            fix="give a bundle directory or a directory holding bundles",
        )
    changed = bundle_dirs(repo.changed(old_rev, new_rev, rel))
    old_bundles = set(bundle_dirs(f for f in old_files if f.endswith("manifest.json")))
    repo.export(old_rev, [d for d in changed if d in old_bundles], old_dir)
    if new_files is not None:
        new_bundles = set(bundle_dirs(f for f in new_files if f.endswith("manifest.json")))
        repo.export(new_rev or "", [d for d in changed if d in new_bundles], new_dir)
    return [_pair(d, old_dir / d, new_dir / d, options) for d in changed]


# --- rendering --------------------------------------------------------------------------------


def _counts(results: Sequence[BundleDiff]) -> str:
    counts = {
        s: sum(r.status == s for r in results) for s in ("changed", "unrelated", "added", "removed")
    }
    differ = sum(counts.values())
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    same = len(results) - differ
    head = f"{differ} of {len(results)} bundle(s) differ" + (f" ({parts})" if parts else "")
    return head + (f"; {same} re-recorded or compared with no semantic change" if same else "")


def _render_tree_text(results: Sequence[BundleDiff], color: bool) -> str:
    out = [f"llmwb diff: {_counts(results)}"]
    for result in results:
        if not result.differs:
            continue
        out.append("")
        out.append(
            f"=== {result.path}: {result.status}" + (f" ({result.about})" if result.about else "")
        )
        if result.diff is not None:
            out.append(render_text(result.diff, color=color).rstrip("\n"))
    return "\n".join(out) + "\n"


def _render_tree_markdown(results: Sequence[BundleDiff]) -> str:
    from .render import _code, _md

    out = ["### llmwb diff", "", f"**{_md(_counts(results))}**"]
    size = sum(len(line) + 1 for line in out)
    differing = [r for r in results if r.differs]
    for shown, result in enumerate(differing):
        if result.diff is None:
            section = [f"- {_code(result.path)}: {result.status} ({_md(result.about)})"]
        else:
            body = render_markdown(result.diff).split("\n")[3:]
            summary = _md(result.diff.summary)
            section = [
                "",
                f"<details><summary>{_code(result.path)}: {summary}</summary>",
                "",
                *body,
                "</details>",
            ]
        cost = sum(len(line) + 1 for line in section)
        if size + cost > MARKDOWN_BUDGET:
            out += [
                "",
                f"_{len(differing) - shown} more bundle(s) not shown (a PR comment holds "
                "65,536 characters); run `llmwb diff` locally._",
            ]
            break
        out += section
        size += cost
    return "\n".join(out) + "\n"


def _tree_json(results: Sequence[BundleDiff]) -> dict[str, Any]:
    return {
        "summary": _counts(results),
        "same": not any(r.differs for r in results),
        "bundles": [
            {
                "path": r.path,
                "status": r.status,
                "about": r.about or None,
                "diff": render_json(r.diff) if r.diff is not None else None,
            }
            for r in results
        ],
    }


def render(result: BundleDiff | list[BundleDiff], fmt: str, *, color: bool = False) -> str:
    """The output of ``llmwb diff`` in ``fmt`` (text, markdown or json)."""
    if isinstance(result, list):
        if fmt == "json":
            return orjson.dumps(_tree_json(result), option=orjson.OPT_INDENT_2).decode() + "\n"
        if fmt == "markdown":
            return _render_tree_markdown(result)
        return _render_tree_text(result, color)
    if result.diff is None:  # one side only
        return (
            orjson.dumps(
                {"path": result.path, "status": result.status, "about": result.about}
            ).decode()
            + "\n"
            if fmt == "json"
            else f"{result.path}: bundle {result.status} ({result.about})\n"
        )
    if fmt == "json":
        data = {"path": result.path, **render_json(result.diff)}
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "markdown":
        return render_markdown(result.diff)
    return render_text(result.diff, color=color)


def _use_color(choice: str, out: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run ``llmwb diff``; returns the exit code (0 same, 1 different)."""
    if args.max_changes < 0:
        raise ConfigError(
            f"--max-changes {args.max_changes}: give 0 (all) or more", fix="--max-changes 50"
        )
    options: dict[str, Any] = {
        "ignore": args.ignore,
        "max_changes": args.max_changes or None,
        "check_order": not args.no_order,
    }
    revs: list[str] = args.rev or []
    if len(revs) > 2:
        raise ConfigError(
            "--rev is given at most twice", fix="llmwb diff --rev OLD [--rev NEW] PATH"
        )
    if revs and len(args.paths) != 1:
        raise ConfigError(
            f"with --rev, give one PATH (got {len(args.paths)})",
            fix=f"llmwb diff --rev {revs[0]} PATH",
        )
    if not revs and len(args.paths) != 2:
        raise ConfigError(
            f"give two paths to compare (got {len(args.paths)})",
            fix="llmwb diff OLD NEW, or llmwb diff --rev main PATH",
        )
    with tempfile.TemporaryDirectory(prefix="llmwb-diff-") as scratch:
        result: BundleDiff | list[BundleDiff]
        if revs:
            result = _compare_revisions(args.paths[0], revs, Path(scratch), options)
        else:
            old, new = (Path(p) for p in args.paths)
            if (old / "manifest.json").is_file() or (new / "manifest.json").is_file():
                result = compare_bundles(old, new, **options)
            elif old.is_dir() and new.is_dir():
                result = compare_trees(old, new, **options)
            else:
                missing = old if not old.is_dir() else new
                raise BundleNotFoundError(
                    f"no bundle at {missing} (no such directory)",
                    fix="give two bundle directories, or two directories of bundles",
                )
        out.write(render(result, args.format, color=_use_color(args.color, out)))
    differs = any(r.differs for r in result) if isinstance(result, list) else result.differs
    return 1 if differs else 0
