"""Golden bundles in pytest: lenient replay, the golden check, ``llmwb_snapshot``, unused bundles.

A pytest plugin of its own, registered by :mod:`pytest_llmwb.plugin`; like it, it imports
only the standard library and pytest at load time.

- **Golden check.** After a replayed test passes, its run (DAG and facts, volatile values
  aside) is compared with the bundle it replayed; a difference fails the test with the
  semantic diff. Calls are checked as they are made, so what this catches is what the
  host computed from the served calls: artifacts, steps, errors, scripted gate decisions.
- **Lenient replay** (``--llmwb-lenient``, ``lenient=True``): a call whose request drifted
  is answered with the call recorded at its place (node, ordinal) and the drift is
  collected, so one run shows every change at once; the test then fails with the full
  diff. A call with no recording at its place still fails at once: nothing runs live in
  replay.
- **Updating.** Request or DAG changes need new responses: ``--llmwb-record`` records
  live. Changes that need no new response (everything else) are written from the replay,
  offline, by ``--snapshot-update``.
- **Unused golden bundles**: bundle directories next to the collected test files that no
  collected test owns, found in one pass over the directories (set lookups, no
  per-test scan), reported in the terminal summary, failed on or deleted as
  ``--llmwb-unused`` says. Deleting needs the whole suite and happens on the
  pytest-xdist controller only, from the collection a worker reports.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import plugin

if TYPE_CHECKING:
    from .diff import RunDiff
    from .recording import Run

UNUSED_MODES = ("report", "fail", "delete", "ignore")
#: ``llmwb_snapshot`` assertions after the first store their bundle next to the first:
#: ``<bundle>.1``, ``<bundle>[name]``. These suffixes map such a bundle to its test.
_INDEX_SUFFIX = re.compile(r"^(?P<base>.+?)(?:\.\d+|\[[^\]]*\])$")
_SHOWN = 20


@dataclass
class Inventory:
    """What collection says about golden bundles; plain data, so it crosses pytest-xdist."""

    owned: set[str] = field(default_factory=set)  # bundle paths, lowercased
    modules: dict[str, bool] = field(default_factory=dict)  # module bundle dir -> fully collected
    bases: dict[str, list[str]] = field(default_factory=dict)  # bundle base -> test file dirs
    per_directory: bool = True  # bases sit next to test files (no --llmwb-bundle-dir)

    def to_json(self) -> dict[str, Any]:
        """The inventory as JSON (what a pytest-xdist worker sends its controller)."""
        return {
            "owned": sorted(self.owned),
            "modules": self.modules,
            "bases": self.bases,
            "per_directory": self.per_directory,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        """The inventory :meth:`to_json` gave."""
        return cls(set(data["owned"]), data["modules"], data["bases"], data["per_directory"])


@dataclass
class _State:
    inventory: Inventory | None = None
    worker_failed: bool = False
    unused: list[Path] = field(default_factory=list)
    deleted: bool = False
    kept_because: str | None = None


_state_key = pytest.StashKey[_State]()
_written_key = pytest.StashKey[bool]()  # the snapshot extension wrote this test's bundle


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --llmwb-lenient, --llmwb-unused and their ini keys."""
    group = parser.getgroup("llmwb")
    group.addoption(
        "--llmwb-lenient",
        action="store_true",
        dest="llmwb_lenient",
        default=False,
        help="Replay past drift: a changed call is answered from its recorded place and "
        "the test fails at the end with the full semantic diff against its bundle.",
    )
    group.addoption(
        "--llmwb-unused",
        action="store",
        dest="llmwb_unused",
        default=None,
        choices=UNUSED_MODES,
        help="What to do with golden bundles no collected test owns: report (default), "
        "fail, delete (only when the whole suite runs), ignore.",
    )
    parser.addini(
        "llmwb_lenient",
        "Replay past drift and fail each test at its end with the full diff.",
        type="bool",
        default=False,
    )
    parser.addini(
        "llmwb_golden",
        "Compare each replayed run with its bundle after the test (artifacts, steps, gates).",
        type="bool",
        default=True,
    )
    parser.addini(
        "llmwb_unused",
        "Golden bundles no test owns: report, fail, delete or ignore.",
        default="report",
    )


class _XdistHooks:
    """Hooks that exist only when pytest-xdist is installed."""

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        state = node.config.stash[_state_key]
        if error:
            state.worker_failed = True
        data = getattr(node, "workeroutput", {}).get("llmwb_golden")
        if data is not None and state.inventory is None:
            state.inventory = Inventory.from_json(data)


def pytest_configure(config: pytest.Config) -> None:
    """Check the ini value; register the xdist-only hooks when xdist is installed."""
    mode = config.getini("llmwb_unused")
    if mode not in UNUSED_MODES:
        raise pytest.UsageError(
            f"llmwb_unused = {mode} in the ini file: use one of {', '.join(UNUSED_MODES)}"
        )
    config.stash[_state_key] = _State()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "llmwb-golden-xdist")


# --- settings ---------------------------------------------------------------------------


def updating(config: pytest.Config) -> bool:
    """Whether ``--snapshot-update`` (syrupy's) was given."""
    return bool(getattr(config.option, "update_snapshots", False))


def lenient(item: pytest.Item, marker: dict[str, Any]) -> bool:
    """Whether this test replays past drift (``--snapshot-update`` implies it)."""
    config = item.config
    if config.getoption("llmwb_lenient") or updating(config):
        return True
    if marker.get("lenient") is not None:
        return bool(marker["lenient"])
    return bool(config.getini("llmwb_lenient"))


def _unused_mode(config: pytest.Config) -> str:
    mode = config.getoption("llmwb_unused") or config.getini("llmwb_unused")
    if mode in ("report", "fail") and updating(config):
        return "delete"  # like syrupy: --snapshot-update removes unused snapshots
    return str(mode)


def command_target(item: pytest.Item) -> str:
    """The test as a command-line argument, e.g. ``tests/test_a.py::test_b``."""
    return plugin._record_command(item).split(" ", 2)[2]


def update_command(item: pytest.Item) -> str:
    """The command that rewrites this test's golden bundle from its replay, offline."""
    return f"pytest --snapshot-update {command_target(item)}"


# --- after a replayed test ----------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    dag: Any
    facts: list[Any]


def golden_diff(run: Run) -> RunDiff:
    """The replayed run compared with the bundle it replayed (old: bundle, new: run)."""
    from .diff import diff_runs
    from .diff.command import paused_gc

    bundle = run.replayed
    assert bundle is not None
    with paused_gc():
        return diff_runs(_Loaded(bundle.dag, list(bundle.facts)), run)


def differs(diff: RunDiff, marker: dict[str, Any]) -> bool:
    """Whether ``diff`` shows a change beyond gates the test scripts on purpose.

    A test that scripts a gate decision (``gates={...}``) replaying a bundle recorded
    with another decision changes that gate's fact by design.
    """
    from .diff import FactChanged

    scripted = set(marker.get("gates") or ())
    return bool(diff.cut) or any(
        not (
            isinstance(change, FactChanged)
            and change.kind == "gate"
            and getattr(change.new, "gate_id", None) in scripted
        )
        for change in diff.changes
    )


def _call_drifts(run: Run) -> list[Exception]:
    from .exceptions import DagDriftError

    return [d for d in run.drifts if not isinstance(d, DagDriftError)]


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive
        return str(path)


def _indent(text: str) -> str:
    return "".join(f"  {line}" if line.strip() else line for line in text.splitlines(True))


def _mismatch(item: pytest.Item, run: Run, path: Path, diff: RunDiff) -> str:
    from .diff import render_text

    head = f"{item.nodeid}: the replayed run differs from its golden bundle {_relative(path)}"
    drifts = _call_drifts(run)
    if drifts:
        head += (
            f"\n  lenient replay tolerated {len(drifts)} drifted call(s); each was answered "
            "with the response recorded for the old request"
        )
    return f"{head}\n{_indent(render_text(diff))}"


def settle(item: pytest.Item, run: Run, path: Path, marker: dict[str, Any], passed: bool) -> bool:
    """Right after a replayed test: tolerated drift, or ``--snapshot-update``.

    Returns True when the golden bundle was (re)written by this test, so that the other
    checks are skipped. Raises :class:`GoldenMismatchError` for drift tolerated by
    lenient replay.
    """
    __tracebackhide__ = True
    from .exceptions import GoldenMismatchError

    if run.replayed is None:
        return False
    if not passed:
        if run.drifts:  # the diff of a run cut short would list every fact not reached
            item.add_report_section(
                "teardown",
                "llmwb drift (lenient replay, up to the failure)",
                f"{len(run.drifts)} drift(s) tolerated before the test failed:\n"
                + "\n".join(_indent(getattr(d, "message", str(d))) for d in run.drifts),
            )
        return False
    if item.stash.get(_written_key, False):
        return True
    if _call_drifts(run):
        raise GoldenMismatchError(
            _mismatch(item, run, path, golden_diff(run)),
            fix=f"{plugin._record_command(item)} (changed requests need new responses, "
            "recorded live)",
        )
    if updating(item.config):
        diff = golden_diff(run)
        if not differs(diff, marker) and not (run.index is not None and run.index.unused()):
            return False
        owners = item.config.stash[plugin._session_key].bundle_owners.get(str(path).lower(), [])
        others = [nodeid for nodeid in owners if nodeid != item.nodeid]
        if others:
            from .exceptions import BundleConflictError

            raise BundleConflictError(
                f"{item.nodeid} cannot rewrite {path} from its replay: "
                f"{', '.join(others)} replay(s) it too",
                fix="give each test its own bundle: @pytest.mark.llmwb(bundle='a-unique-name')",
            )
        run.save(path)
        item.user_properties.append(("llmwb_written", str(path)))
        item.add_report_section(
            "teardown",
            "llmwb",
            f"golden bundle {path} rewritten from the replay (--snapshot-update): {diff.summary}",
        )
        return True
    if run.drifts:
        raise GoldenMismatchError(
            _mismatch(item, run, path, golden_diff(run)),
            fix=f"{update_command(item)} (no call changed: the replay is written offline)",
        )
    return False


def check(item: pytest.Item, run: Run, path: Path, marker: dict[str, Any]) -> None:
    """The golden check after a passing replayed test (``llmwb_golden``, ``golden=``)."""
    __tracebackhide__ = True
    from .exceptions import GoldenMismatchError

    config = item.config
    if run.replayed is None or marker.get("allow_unused", config.getini("llmwb_allow_unused")):
        return
    if not marker.get("golden", config.getini("llmwb_golden")):
        return
    diff = golden_diff(run)
    if differs(diff, marker):
        raise GoldenMismatchError(
            _mismatch(item, run, path, diff),
            fix=f"{update_command(item)} (no call changed: the replay is written offline); "
            "or, to skip this check, @pytest.mark.llmwb(golden=False)",
        )


# --- llmwb_snapshot --------------------------------------------------------------------------


@pytest.fixture
def llmwb_snapshot(request: pytest.FixtureRequest) -> Any:
    """A syrupy snapshot whose value is a run: ``assert run == llmwb_snapshot``.

    The snapshot is a golden bundle at the test's bundle path (the one the ``llmwb``
    fixture replays). A mismatch shows the semantic diff; ``--snapshot-update`` writes
    the run (or ``--llmwb-record``, when the run replayed drifted calls).
    """
    from .exceptions import ConfigError

    try:
        snapshot = request.getfixturevalue("snapshot")
    except pytest.FixtureLookupError:
        raise ConfigError(
            f"{request.node.nodeid} uses llmwb_snapshot, which needs syrupy's snapshot fixture",
            fix="pip install syrupy, and do not disable it (-p no:syrupy)",
        ) from None
    from .snapshot import LlmwbSnapshotExtension

    assertion = snapshot.use_extension(LlmwbSnapshotExtension)
    assertion.extension.item = request.node
    return assertion


def mark_written(item: pytest.Item) -> None:
    """Note that the snapshot extension wrote this test's own bundle."""
    item.stash[_written_key] = True


# --- unused golden bundles --------------------------------------------------------------------


def _partial_files(config: pytest.Config) -> set[str]:
    """Test files of which the command line selected only some tests (``file::test``)."""
    root = config.invocation_params.dir
    return {
        os.path.normcase(os.path.realpath(Path(root, arg.split("::", 1)[0])))
        for arg in config.args
        if "::" in arg
    }


def _inventory(config: pytest.Config, items: list[pytest.Item]) -> Inventory:
    option_dir = config.getoption("llmwb_bundle_dir")
    inventory = Inventory(per_directory=not option_dir)
    partial = _partial_files(config)
    ini_dir = config.getini("llmwb_bundle_dir")
    modules: dict[Path, str] = {}  # test file -> its bundle directory, once per file
    for item in items:
        path = getattr(item, "path", None)
        if path is None or not isinstance(item, pytest.Function):
            continue
        module = modules.get(path)
        if module is None:
            base = (
                Path(config.invocation_params.dir, option_dir)
                if option_dir
                else path.parent / ini_dir
            )
            test_dirs = inventory.bases.setdefault(str(base), [])
            if str(path.parent) not in test_dirs:
                test_dirs.append(str(path.parent))
            module = modules[path] = str(base / path.stem)
            full = not partial or os.path.normcase(os.path.realpath(path)) not in partial
            inventory.modules[module] = inventory.modules.get(module, True) and full
        if plugin._uses_llmwb(item):
            bundle = item.stash.get(plugin._path_key, None)
            if bundle is None:
                try:
                    bundle = plugin._bundle_path(item, plugin._marker_kwargs(item))
                except Exception:
                    continue  # reported when the test sets up
            inventory.owned.add(str(bundle).lower())
    return inventory


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> Any:
    """Take stock of every collected test before -k, -m or --deselect drop any."""
    collected = list(items)
    result = yield
    if not config.option.collectonly:
        config.stash[_state_key].inventory = _inventory(config, collected)
    return result


def _owned(path: str, inventory: Inventory) -> bool:
    key = path.lower()
    if key in inventory.owned:
        return True
    match = _INDEX_SUFFIX.match(os.path.basename(key))
    return (
        match is not None and os.path.join(os.path.dirname(key), match["base"]) in inventory.owned
    )


def _bundle_entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return []


def find_unused(inventory: Inventory, *, whole_suite: bool) -> list[Path]:
    """Bundle directories below the bundle dirs of collected test files that no test owns.

    A module's directory is judged when its test file was collected whole; the
    directory of a test file that no longer exists is judged (all its bundles are
    unused) when bundles sit next to test files, or when the whole suite ran.
    One ``scandir`` per directory and a set lookup per bundle: O(bundles + tests).
    """
    unused: list[Path] = []
    for base, test_dirs in inventory.bases.items():
        for module in _bundle_entries(base):
            full = inventory.modules.get(module.path)
            if full is None:  # no collected test file of that name
                own_dir = inventory.per_directory and test_dirs == [str(Path(base).parent)]
                if not (own_dir or whole_suite) or any(
                    os.path.exists(os.path.join(d, f"{module.name}.py")) for d in test_dirs
                ):
                    continue  # the file exists and was not collected, or may live elsewhere
            elif not full:
                continue
            for bundle in _bundle_entries(module.path):
                if os.path.isfile(os.path.join(bundle.path, "manifest.json")) and not _owned(
                    bundle.path, inventory
                ):
                    unused.append(Path(bundle.path))
    return sorted(unused)


def whole_suite(config: pytest.Config) -> str | None:
    """``None`` when this session collects the whole suite, else why not (for deleting)."""
    option = config.option
    for flag, name in (
        ("keyword", "-k"),
        ("markexpr", "-m"),
        ("deselect", "--deselect"),
        ("lf", "--lf"),
        ("stepwise", "--sw"),
        ("stepwise_skip", "--sw-skip"),
    ):
        if getattr(option, flag, None):
            return f"{name} selects part of the suite"
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return None
    root = Path(config.rootpath)
    whole = {root.resolve(), *(Path(root, p).resolve() for p in config.getini("testpaths"))}
    for arg in config.args:
        if "::" in arg or Path(config.invocation_params.dir, arg).resolve() not in whole:
            return f"the command line selects {arg}"
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Find unused golden bundles (on the controller only, under pytest-xdist)."""
    config = session.config
    state = config.stash[_state_key]
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        if state.inventory is not None:
            workeroutput["llmwb_golden"] = state.inventory.to_json()
        return
    mode = _unused_mode(config)
    if mode == "ignore" or state.inventory is None or config.option.collectonly:
        return
    if getattr(config.option, "lf", False):
        return  # --lf collects only part of some files: ownership is not known
    partial = whole_suite(config)
    state.unused = find_unused(state.inventory, whole_suite=partial is None)
    if not state.unused:
        return
    if mode == "delete":
        if partial is not None:
            state.kept_because = partial
        elif state.worker_failed or exitstatus == pytest.ExitCode.INTERRUPTED:
            state.kept_because = "the session did not complete"
        else:
            for path in state.unused:
                shutil.rmtree(path)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # a module directory left empty
            state.deleted = True
            return
    if mode == "fail" and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """List unused golden bundles, and what was done with them."""
    state = config.stash[_state_key]
    if not state.unused:
        return
    count = len(state.unused)
    terminalreporter.write_sep("-", "llmwb golden bundles")
    what = "deleted" if state.deleted else "no collected test owns them"
    terminalreporter.write_line(f"{count} unused golden bundle(s) ({what}):")
    shown = state.unused if config.getoption("verbose") > 0 else state.unused[:_SHOWN]
    for path in shown:
        terminalreporter.write_line(f"  {os.path.relpath(path)}")
    if len(shown) < count:
        terminalreporter.write_line(f"  ... and {count - len(shown)} more (-v lists all)")
    if state.deleted:
        return
    if state.kept_because:
        terminalreporter.write_line(
            f"not deleted: {state.kept_because}; deleting needs the whole suite"
        )
    else:
        terminalreporter.write_line(
            "delete them with: pytest --llmwb-unused=delete (or --snapshot-update), "
            "running the whole suite"
        )
