"""Bundles in git: bundles as of a revision, and the ``llmwb git-diff`` external diff driver.

git diffs a bundle directory file by file and hands an external diff driver
(``diff.llmwb.command``) the two versions of one file: ``llmwb git-diff`` prints the
semantic diff of ``facts.jsonl`` (aligned facts; gate, artifact, token and cost
changes) and of ``dag.json`` (nodes, config, edges), nothing for ``volatile.json``, and
a line diff of the readable text (:mod:`pytest_llmwb.textconv`) for anything else. It
always exits 0: git stops at a failing external diff.
"""

from __future__ import annotations

import difflib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from ..exceptions import BundleCorruptError, ConfigError
from ..textconv import BUNDLE_FILES, file_kind, inline_blobs, textconv_bytes

__all__ = ["Repository", "bundle_dir_of", "bundle_dirs", "external_diff"]


# --- git ---------------------------------------------------------------------------------


class Repository:
    """The git repository around ``cwd``, for reading bundles as of a revision."""

    def __init__(self, cwd: str | os.PathLike[str] = ".") -> None:
        self.cwd = Path(cwd)
        top = self._git("rev-parse", "--show-toplevel", what="find the git repository").strip()
        self.root = Path(os.path.realpath(top.decode()))

    def _git(self, *args: str, what: str, cwd: Path | None = None) -> bytes:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd or self.cwd, capture_output=True, check=False
            )
        except FileNotFoundError:
            raise ConfigError(
                f"cannot {what}: git is not installed (or not on PATH)",
                fix="install git, or compare two bundle directories: llmwb diff OLD NEW",
            ) from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            raise ConfigError(
                f"cannot {what}: git {' '.join(args[:2])} failed: {message}",
                fix="run llmwb diff --rev inside a git work tree, with a revision it has "
                "(git fetch origin main; git branch -a)",
            )
        return done.stdout

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` (relative to the current directory) as a path in the repository."""
        absolute = Path(os.path.realpath(Path(self.cwd, path)))
        try:
            rel = absolute.relative_to(self.root)
        except ValueError:
            raise ConfigError(
                f"{path} is outside the git repository at {self.root}",
                fix="give a path inside the repository",
            ) from None
        return rel.as_posix() if rel.parts else "."

    def commit(self, rev: str) -> str:
        """The commit id of ``rev``; a :class:`ConfigError` naming ``rev`` if there is none."""
        try:
            out = self._git(
                "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", what=f"resolve {rev}"
            )
        except ConfigError:
            raise ConfigError(
                f"--rev {rev}: no such revision in the repository at {self.root}",
                fix="name a branch, tag or commit it has (fetch it first in CI: "
                "git fetch origin main, with actions/checkout fetch-depth: 0)",
            ) from None
        return out.decode().strip()

    def files(self, rev: str, rel: str) -> list[str]:
        """Repository paths of the files below ``rel`` as of ``rev``."""
        out = self._git(
            *("ls-tree", "-r", "-z", "--name-only", rev, "--", rel),
            what=f"list {rel} at {rev}",
            cwd=self.root,
        )
        return [name.decode() for name in out.split(b"\0") if name]

    def changed(self, old: str, new: str | None, rel: str) -> list[str]:
        """Repository paths below ``rel`` that differ between ``old`` and ``new``.

        ``new`` ``None`` is the work tree, untracked files included.
        """
        args = ["diff", "--name-only", "-z", "--no-renames", old, *([new] if new else [])]
        out = self._git(*args, "--", rel, what=f"compare {rel} with {old}", cwd=self.root)
        names = {name.decode() for name in out.split(b"\0") if name}
        if new is None:
            untracked = self._git(
                *("ls-files", "-z", "--others", "--exclude-standard", "--", rel),
                what="list untracked files",
                cwd=self.root,
            )
            names.update(name.decode() for name in untracked.split(b"\0") if name)
        return sorted(names)

    def export(self, rev: str, paths: Sequence[str], dest: Path) -> None:
        """Write the files at ``paths`` (repository paths) as of ``rev`` below ``dest``."""
        if not paths:
            return
        data = self._git(
            *("archive", "--format=tar", rev, "--", *paths),
            what=f"read {paths[0]} at {rev}",
            cwd=self.root,
        )
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                target = dest / member.name
                if not member.isfile() or not target.resolve().is_relative_to(dest.resolve()):
                    continue  # directories are made as needed; links are never followed
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)


def bundle_dir_of(path: str) -> str | None:
    """The bundle directory a repository path belongs to, or ``None`` if it is no bundle file."""
    pure = PurePosixPath(path)
    if pure.parent.name == "blobs":
        return str(pure.parent.parent)
    if pure.name in BUNDLE_FILES:
        return str(pure.parent)
    return None


def bundle_dirs(paths: Iterable[str]) -> list[str]:
    """The distinct bundle directories of some repository paths, sorted."""
    return sorted({d for d in map(bundle_dir_of, paths) if d is not None})


# --- external diff driver (diff.llmwb.command) ------------------------------------------------


def _read_side(path: str) -> bytes | None:
    if path == "/dev/null" or not os.path.exists(path):
        return None
    from ..textconv import _regular_bytes

    data = _regular_bytes(Path(path), 2**62)
    if data is None:
        raise BundleCorruptError(
            f"{path} is not a regular file that can be read",
            path=path,
            fix='git passes files to this command: git config diff.llmwb.command "llmwb git-diff"',
        )
    return data


def _typed_facts(data: bytes, name: str, blobs: Path | None) -> list[Any]:
    from ..store import parse_fact

    facts = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            raw = inline_blobs(orjson.loads(line), blobs)
            facts.append(parse_fact(raw, Path(name), number))
    return facts


class _Side:
    def __init__(self, dag: Any, facts: Sequence[Any]) -> None:
        self.dag = dag
        self.facts = facts


def _semantic(kind: str, name: str, old: bytes, new: bytes, blobs: Path | None) -> str:
    from ..dag import snapshot_from_nodes
    from ..schema import DagSnapshot
    from . import diff_runs, render_text

    if kind == "facts.jsonl":
        stub = snapshot_from_nodes(Path(name).parent.name or "run", [])
        before = _Side(stub, _typed_facts(old, name, blobs))
        after = _Side(stub, _typed_facts(new, name, blobs))
        return render_text(diff_runs(before, after))
    old_dag = DagSnapshot.model_validate(orjson.loads(old))
    new_dag = DagSnapshot.model_validate(orjson.loads(new))
    return render_text(diff_runs(_Side(old_dag, []), _Side(new_dag, [])))


def external_diff(argv: Sequence[str]) -> str:
    """The output of ``llmwb git-diff`` for git's external diff arguments.

    ``argv`` is ``path old-file old-hex old-mode new-file new-hex new-mode`` (git adds
    two more for a rename). ``facts.jsonl`` and ``dag.json`` get the semantic diff;
    ``volatile.json`` nothing; other files a unified diff of their readable text.
    """
    if len(argv) not in (7, 9):
        raise ConfigError(
            f"llmwb git-diff takes the 7 arguments git passes to an external diff, got {len(argv)}",
            fix='configure it for git: git config diff.llmwb.command "llmwb git-diff"',
        )
    name, old_file, new_file = argv[0], argv[1], argv[4]
    shown = argv[7] if len(argv) == 9 else name
    old, new = _read_side(old_file), _read_side(new_file)
    kind = file_kind(name)
    header = f"llmwb diff a/{name} b/{shown}\n"
    if kind == "volatile.json":
        return ""
    if old is None or new is None:
        what = "added" if old is None else "deleted"
        if kind == "blob":
            return f"{header}{textconv_bytes(kind, old or new or b'').rstrip()} {what}\n"
        return f"{header}{kind or 'file'} {what}\n"
    blobs = None  # placeholders on both sides: the old side's blobs are not at hand
    if kind in ("facts.jsonl", "dag.json"):
        try:
            return header + _semantic(kind, name, old, new, blobs)
        except Exception as exc:  # a hand-edited file: fall back to the readable lines
            note = f"(no semantic diff: {str(exc).splitlines()[0]}; showing changed lines)\n"
            header += note
    before = textconv_bytes(kind, old, blobs).splitlines(keepends=True)
    after = textconv_bytes(kind, new, blobs).splitlines(keepends=True)
    lines = list(difflib.unified_diff(before, after, f"a/{name}", f"b/{shown}", n=2))
    if not lines:
        return ""  # a change that does not show in the readable text (digests, order of keys)
    return header + "".join(line if line.endswith("\n") else line + "\n" for line in lines)
