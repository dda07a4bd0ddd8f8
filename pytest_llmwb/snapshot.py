"""The syrupy extension behind the ``llmwb_snapshot`` fixture: ``assert run == llmwb_snapshot``.

syrupy composes an extension of four roles; here each one is about runs:

- **serializer**: the received value (a :class:`~pytest_llmwb.Run`, a
  :class:`~pytest_llmwb.store.Bundle` or a bundle path) becomes a :class:`ReceivedRun`.
- **storage**: the snapshot is a golden bundle directory at the test's bundle path (the
  one the ``llmwb`` fixture replays: ``llmwb_bundles/<module>/<test>``); a second
  assertion in the test uses ``<test>.1``, a named one ``<test>[name]``. Writing is
  :meth:`Run.save` (atomic). syrupy is told of no snapshot files at all, so its own
  unused-snapshot pass never scans, lists or deletes bundles: pytest-llmwb finds unused
  golden bundles itself, in one pass, on the xdist controller only.
- **comparator**: :func:`~pytest_llmwb.diff.diff_runs` (volatile values aside).
- **reporter**: the semantic diff, and the one flag that updates the bundle:
  ``--snapshot-update`` when the run's calls were served as recorded (or ran live),
  ``--llmwb-record`` when lenient replay served calls whose requests changed (their
  responses must be recorded anew).

Imported only when a test asks for ``llmwb_snapshot``: syrupy is never loaded otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syrupy.data import Snapshot, SnapshotCollection, SnapshotCollections
from syrupy.extensions.base import AbstractSyrupyExtension

from . import golden, plugin
from .exceptions import BundleError, ConfigError, GoldenMismatchError

if TYPE_CHECKING:
    import pytest
    from syrupy.location import PyTestLocation
    from syrupy.types import (
        PropertyFilter,
        PropertyMatcher,
        SerializableData,
        SerializedData,
        SnapshotIndex,
    )

    from .diff import RunDiff

__all__ = ["GoldenBundle", "LlmwbSnapshotExtension", "ReceivedRun"]


@dataclass(frozen=True)
class _Loaded:
    dag: Any
    facts: list[Any]


class ReceivedRun(str):
    """A run as the extension received it; the string is how syrupy shows it.

    ``drifted`` counts calls that lenient replay answered although their request
    changed: such a run cannot become a golden bundle (its responses are stale).
    ``recording`` is true for the ``llmwb`` fixture's own run while it records: the
    fixture writes it to this very bundle when the test passes.
    """

    run: Any
    item: pytest.Item | None
    drifted: int
    recording: bool

    def __new__(cls, data: Any, item: pytest.Item | None) -> ReceivedRun:
        """Wrap ``data`` (a Run, a Bundle or a bundle path) received by ``item``."""
        from .recording import Run
        from .store import Bundle, load_bundle

        if isinstance(data, (str, os.PathLike)) and not isinstance(data, ReceivedRun):
            data = load_bundle(data)
        if isinstance(data, Run):
            name, count = data.name, len(data.facts)
        elif isinstance(data, Bundle):
            name, count = data.name, data.manifest.fact_count
        else:
            raise ConfigError(  # one line: syrupy shows the last line of an exception first
                f"llmwb_snapshot compares runs, not {type(data).__name__}: assert run == "
                "llmwb_snapshot with a pytest_llmwb.Run (such as the llmwb fixture), a Bundle "
                "or a bundle path"
            )
        self = super().__new__(cls, f"<run {name}: {count} facts>")
        self.run = data
        self.item = item
        self.drifted = 0
        self.recording = False
        if isinstance(data, Run):
            self.drifted = len(golden._call_drifts(data)) if data.index is not None else 0
            self.recording = _recording(item) is data
        return self

    def runlike(self) -> Any:
        """The run as :func:`diff_runs` reads it."""
        return (
            self.run
            if not hasattr(self.run, "manifest")
            else _Loaded(self.run.dag, list(self.run.facts))
        )

    def write(self, location: Path) -> None:
        """Write the run as the golden bundle at ``location``."""
        from .recording import Run
        from .store import write_bundle

        if isinstance(self.run, Run):
            self.run.save(location)
            return
        bundle = self.run
        write_bundle(
            location,
            name=bundle.name,
            dag=bundle.dag,
            facts=list(bundle.facts),
            labels=dict(bundle.manifest.labels),
            blobs={ref: bundle.blob(ref) for ref in bundle.manifest.blobs},
        )


def _recording(item: pytest.Item | None) -> Any:
    """The ``llmwb`` fixture's run of ``item`` if it records (and so writes its bundle)."""
    run = getattr(item, "funcargs", {}).get("llmwb")
    return run if getattr(run, "mode", None) in ("record", "new") else None


class GoldenBundle(str):
    """A golden bundle as read from disk; the string is how syrupy shows it.

    ``bundle`` is ``None`` for the bundle the ``llmwb`` fixture is recording in this
    test (it is written when the test passes).
    """

    bundle: Any
    path: Path
    error: BundleError | None

    def __new__(cls, bundle: Any, path: Path, error: BundleError | None = None) -> GoldenBundle:
        """Wrap the loaded ``bundle`` read from ``path`` (or the ``error`` reading it)."""
        if error is not None:
            what = "unreadable"
        else:
            what = f"{len(bundle.facts)} facts" if bundle is not None else "being recorded"
        self = super().__new__(cls, f"<golden bundle {path.name}: {what}>")
        self.bundle = _Loaded(bundle.dag, list(bundle.facts)) if bundle is not None else None
        self.path = path
        self.error = error
        return self


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)


class LlmwbSnapshotExtension(AbstractSyrupyExtension):
    """Golden bundles as syrupy snapshots (see the module docstring)."""

    #: The test, set by the ``llmwb_snapshot`` fixture.
    item: pytest.Item | None = None
    #: Write in the assertion, not at session end: a refusal then fails that assertion,
    #: and the ``llmwb`` fixture's teardown sees the bundle already written.
    write_immediately = True

    def __init__(self) -> None:
        # matches() and then diff_lines() ask about the same pair: diff it once
        self._last: tuple[ReceivedRun, GoldenBundle, RunDiff] | None = None

    # -- serializer ---------------------------------------------------------------------

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> SerializedData:
        """The received run."""
        return ReceivedRun(data, self.item)

    # -- comparator and reporter ---------------------------------------------------------

    def _diff(self, received: ReceivedRun, golden_bundle: GoldenBundle) -> RunDiff:
        from .diff import diff_runs
        from .diff.command import paused_gc

        last = self._last
        if last is None or last[0] is not received or last[1] is not golden_bundle:
            with paused_gc():
                diff = diff_runs(golden_bundle.bundle, received.runlike())
            last = self._last = (received, golden_bundle, diff)
        return last[2]

    def matches(
        self, *, serialized_data: SerializableData, snapshot_data: SerializableData
    ) -> bool:
        """Same run, volatile values aside; the fixture's recording run always matches."""
        if not isinstance(serialized_data, ReceivedRun) or not isinstance(
            snapshot_data, GoldenBundle
        ):
            return False
        if serialized_data.recording and self.item is not None:
            return bool(snapshot_data.path == self.item.stash.get(plugin._path_key, None))
        if snapshot_data.bundle is None:
            return False
        return not serialized_data.drifted and self._diff(serialized_data, snapshot_data).same

    def _update_hint(self, received: ReceivedRun) -> str:
        if self.item is None:
            return "update it with --snapshot-update"
        if received.drifted:
            return (
                f"update it by recording live: {plugin._record_command(self.item)} "
                f"({received.drifted} call(s) replayed with a changed request: "
                "their responses are stale)"
            )
        return f"update it: {golden.update_command(self.item)}"

    def diff_lines(
        self, serialized_data: SerializedData, snapshot_data: SerializedData
    ) -> Iterator[str]:
        """The semantic diff, golden bundle (old) to received run (new).

        pytest cuts assertion explanations to 8 lines unless ``-vv`` (or on CI), so the
        verdict and the update command come first.
        """
        from .diff import render_text

        if not isinstance(serialized_data, ReceivedRun):
            yield f"received {serialized_data!r}"
            return
        if not isinstance(snapshot_data, GoldenBundle):
            yield f"no golden bundle yet; {self._update_hint(serialized_data)}"
            return
        if snapshot_data.error is not None:
            yield f"the golden bundle {_relative(snapshot_data.path)} cannot be read:"
            yield from str(snapshot_data.error).splitlines()
            yield "or write it again from this run: --snapshot-update"
            return
        if snapshot_data.bundle is None:
            yield (
                f"{_relative(snapshot_data.path)} is being recorded by the llmwb fixture: "
                "compare its run (assert llmwb == llmwb_snapshot), or give this snapshot "
                "another name: llmwb_snapshot(name=...)"
            )
            return
        summary, *rest = render_text(self._diff(serialized_data, snapshot_data)).splitlines()
        yield summary
        yield f"{self._update_hint(serialized_data)}"
        yield f"golden bundle: {_relative(snapshot_data.path)}"
        yield from rest

    def diff_snapshots(
        self, serialized_data: SerializedData, snapshot_data: SerializedData
    ) -> SerializedData:
        """``snapshot(diff=...)`` is not supported for runs: the diff is the comparison."""
        raise ConfigError(
            "llmwb_snapshot(diff=...) is not supported",
            fix="compare two bundles with: llmwb diff OLD NEW",
        )

    # -- storage ----------------------------------------------------------------------------

    @classmethod
    def _bundle_path(cls, test_location: PyTestLocation) -> Path:
        item = test_location.item
        path = item.stash.get(plugin._path_key, None)
        return path if path is not None else plugin._bundle_path(item, plugin._marker_kwargs(item))

    @classmethod
    def get_location(cls, *, test_location: PyTestLocation, index: SnapshotIndex) -> str:
        """The bundle directory: the test's bundle path, or a sibling for later indexes."""
        from .store import safe_dirname

        path = cls._bundle_path(test_location)
        if index == 0:
            return str(path)
        suffix = f"[{index}]" if isinstance(index, str) else f".{index}"
        return str(path.with_name(safe_dirname(path.name + suffix)))

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        """The directory of the test module's bundles."""
        return str(cls._bundle_path(test_location).parent)

    @classmethod
    def matches_test_location(
        cls, *, test_location: PyTestLocation, snapshot_location: str
    ) -> bool:
        """Locations come from the test's own bundle path."""
        return True

    def discover_snapshots(
        self, *, test_location: PyTestLocation, ignore_extensions: list[str] | None = None
    ) -> SnapshotCollections:
        """Nothing: unused golden bundles are found by pytest-llmwb, not by syrupy."""
        return SnapshotCollections()

    def read_snapshot_collection(self, *, snapshot_location: str) -> SnapshotCollection:
        """The bundle at ``snapshot_location`` as a one-snapshot collection."""
        collection = SnapshotCollection(location=snapshot_location)
        if (Path(snapshot_location) / "manifest.json").is_file():
            collection.add(Snapshot(name=Path(snapshot_location).name))
        return collection

    def read_snapshot_data_from_location(
        self, *, snapshot_location: str, snapshot_name: str, session_id: str
    ) -> SerializableData | None:
        """The golden bundle, or ``None`` when there is none (or, when updating, a broken one)."""
        from .store import load_bundle

        path = Path(snapshot_location)
        item = self.item
        if (
            item is not None
            and _recording(item) is not None
            and path == item.stash.get(plugin._path_key, None)
        ):
            return GoldenBundle(None, path)  # the llmwb fixture writes it after the test
        if not (path / "manifest.json").is_file():
            return None
        try:
            return GoldenBundle(load_bundle(path), path)
        except BundleError as error:
            if self.item is not None and golden.updating(self.item.config):
                return None  # rewritten by this update
            return GoldenBundle(None, path, error)

    @classmethod
    def write_snapshot_collection(
        cls, *, snapshot_collection: SnapshotCollection, name_order: dict[str, int] | None = None
    ) -> None:
        """Write the received run as the golden bundle."""
        __tracebackhide__ = True
        location = Path(snapshot_collection.location)
        for snapshot in snapshot_collection:
            received = snapshot.data
            assert isinstance(received, ReceivedRun)
            if received.drifted:
                target = golden.command_target(received.item) if received.item else "<test id>"
                # one line: syrupy shows the last line of an exception first
                raise GoldenMismatchError(
                    f"cannot update the golden bundle {_relative(location)} from this run: "
                    f"lenient replay answered {received.drifted} changed call(s) with responses "
                    f"recorded for the old requests; record it live: pytest --llmwb-record {target}"
                )
            received.write(location)
            item = received.item
            if item is not None and item.stash.get(plugin._path_key, None) == location:
                golden.mark_written(item)  # the llmwb fixture must not check it again

    def delete_snapshots(self, *, snapshot_location: str, snapshot_names: set[str]) -> None:
        """Never called: syrupy is told of no snapshot, so it has none to delete."""
