"""The pytest entry point: options, ini keys, the ``llmwb`` marker, fixtures and hooks.

Imports here are light (stdlib and pytest only): suites that never use the plugin do
not pay for pydantic, orjson or vcrpy. The rest loads when a test first asks for a run.

Where a setting can come from several places, the first that is set wins:
command-line option > ``llmwb`` marker > ini key > default.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import hookspecs

if TYPE_CHECKING:
    from .recording import Run

MODES = ("replay", "once", "new", "rewrite", "verify")
MARKER = (
    "llmwb(bundle=None, *, mode=None, allow_unused=False, gates=None, dag=None, "
    "max_cost=None, max_tokens=None, lenient=None, golden=None, allow_hosts=(), "
    "volatile=(), capture=True, expect_drift=False, check_transitions=None): "
    "record or replay this test's agent run as a pytest-llmwb bundle. "
    "bundle: directory name under the bundle dir (default: the test id); mode: one of "
    f"{', '.join(MODES)}; allow_unused: do not fail when recorded calls go unused; "
    "gates: {gate_id: decision} scripted gate decisions; dag: the Dag to declare; "
    "max_cost, max_tokens: fail the test when its run spends more; lenient: replay past "
    "drift and fail at the end with the full diff; golden: compare the replayed run with "
    "its bundle after the test (default: the llmwb_golden ini key, true); allow_hosts: "
    "hosts whose traffic is neither captured nor blocked; volatile: JSON pointers of the "
    "model request that do not count when matching; capture: record HTTP traffic (openai, "
    "anthropic, httpx, requests, aiohttp) as facts; expect_drift: the test catches drift "
    "errors on purpose (pytest.raises): caught drift, and what follows from it (recorded "
    "calls left unmade, the golden check), do not fail it; check_transitions: check "
    "each step from node to node against the declared DAG's edges (default: the "
    "llmwb_check_transitions ini key, true)."
)
_MARKER_KEYS = {
    *("bundle", "mode", "allow_unused", "gates", "dag", "max_cost", "max_tokens"),
    *("lenient", "golden"),
    *("allow_hosts", "volatile", "capture", "expect_drift", "check_transitions"),
}
# golden bundles: lenient replay, the golden check, llmwb_snapshot, unused bundles
pytest_plugins = ("pytest_llmwb.golden",)


@dataclass
class _Session:
    """Per-session plugin state (kept under a StashKey on the config)."""

    bundle_owners: dict[str, list[str]] = field(default_factory=dict)
    scrubber: Any = None  # the session's Scrubber, made when a test first needs a run
    prices: Any = None  # the session's PriceTable, made when a test first records
    seal_key: Any = None  # the SigningKey that seals recorded bundles; in memory only


_session_key = pytest.StashKey[_Session]()
_report_key = pytest.StashKey[pytest.TestReport]()
# the drift error a failed test's call ended with (its viewer page shows it)
_drift_key = pytest.StashKey[BaseException]()
_path_key = pytest.StashKey[Path]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the pytest_llmwb_* hooks."""
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the --llmwb-* options and llmwb_* ini keys."""
    group = parser.getgroup("llmwb", "LLM Workbench: record and replay agent runs")
    group.addoption(
        "--llmwb-record",
        action="store_true",
        dest="llmwb_record",
        default=False,
        help="Run model and tool calls live and (re)write each test's bundle "
        "(same as --llmwb-mode=rewrite).",
    )
    group.addoption(
        "--llmwb-mode",
        action="store",
        dest="llmwb_mode",
        default=None,
        metavar="MODE",
        help=f"How calls are answered: {', '.join(MODES)}. Default: replay "
        "(served from bundles, nothing live).",
    )
    group.addoption(
        "--llmwb-bundle-dir",
        action="store",
        dest="llmwb_bundle_dir",
        default=None,
        metavar="DIR",
        help="Directory for bundles (default: llmwb_bundles/ next to each test file).",
    )
    parser.addini(
        "llmwb_mode", "Default mode (replay, once, new, rewrite, verify).", default="replay"
    )
    parser.addini(
        "llmwb_bundle_dir",
        "Bundle directory; relative paths are relative to each test file's directory.",
        default="llmwb_bundles",
    )
    parser.addini(
        "llmwb_allow_unused",
        "Do not fail a replayed test whose recorded calls were not all made.",
        type="bool",
        default=False,
    )
    group.addoption(
        "--llmwb-allow-hosts",
        action="append",
        dest="llmwb_allow_hosts",
        default=[],
        metavar="HOSTS",
        help="Comma-separated hosts (name, name:port, *.suffix, IP) whose traffic is neither "
        "captured nor blocked in replay: a local service tests must reach.",
    )
    group.addoption(
        "--llmwb-replay-timing",
        action="store_true",
        dest="llmwb_replay_timing",
        default=False,
        help="Replay streamed responses at the pace they were recorded (default: at once).",
    )
    parser.addini(
        "llmwb_allow_hosts",
        "Hosts whose traffic is neither captured nor blocked in replay (one per line).",
        type="linelist",
        default=[],
    )
    group.addoption(
        "--llmwb-strict-secrets",
        action="store_true",
        dest="llmwb_strict_secrets",
        default=False,
        help="Fail the test when a secret is found in what a run records, instead of "
        "recording its placeholder.",
    )
    parser.addini(
        "llmwb_strict_secrets",
        "Fail when a secret is found in what a run records (like --llmwb-strict-secrets).",
        type="bool",
        default=False,
    )
    group.addoption(
        "--llmwb-no-check-transitions",
        action="store_true",
        dest="llmwb_no_check_transitions",
        default=False,
        help="Do not check the steps from node to node against the declared DAG's edges.",
    )
    parser.addini(
        "llmwb_check_transitions",
        "Check each step from node to node against the declared DAG's edges "
        "(a DagTransitionError for a step it has no edge for).",
        type="bool",
        default=True,
    )
    parser.addini(
        "llmwb_emit_spans",
        "Send each run's spans (invoke_agent, chat, execute_tool, ...) to the "
        "OpenTelemetry TracerProvider of the test session (needs opentelemetry-api).",
        type="bool",
        default=False,
    )
    group.addoption(
        "--llmwb-view-dir",
        action="store",
        dest="llmwb_view_dir",
        default=None,
        metavar="DIR",
        help="Write a viewer page (self-contained HTML: DAG, gates, timeline, costs; for a "
        "replayed test, the diff against its bundle) for each failed llmwb test into DIR.",
    )
    parser.addini(
        "llmwb_view_dir",
        "Directory (relative to the ini file) for viewer pages of failed llmwb tests "
        "(like --llmwb-view-dir; default: none are written).",
        default="",
    )
    parser.addini(
        "llmwb_price_file",
        "TOML or JSON price file (relative to the ini file) that overrides genai-prices; "
        "the LLMWB_PRICE_FILE environment variable takes precedence.",
        default="",
    )

    group.addoption(
        "--llmwb-seal-key",
        action="store",
        dest="llmwb_seal_key",
        default=None,
        metavar="KEY",
        help="Seal every bundle written while recording with this Ed25519 private key file "
        "(PEM). Also $LLMWB_SEAL_KEY or the llmwb_seal_key ini key.",
    )
    parser.addini(
        "llmwb_seal_key",
        "Private key file (relative to the ini file) that seals recorded bundles; "
        "--llmwb-seal-key and $LLMWB_SEAL_KEY take precedence.",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and check the options."""
    config.addinivalue_line("markers", MARKER)
    config.stash[_session_key] = _Session()
    mode = config.getoption("llmwb_mode")
    if mode is not None and mode not in MODES:
        raise pytest.UsageError(
            f"--llmwb-mode={mode}: unknown mode. Use one of: {', '.join(MODES)} "
            "(e.g. --llmwb-mode=replay)"
        )
    ini_mode = config.getini("llmwb_mode")
    if ini_mode not in MODES:
        raise pytest.UsageError(
            f"llmwb_mode = {ini_mode} in the ini file: unknown mode. Use one of: {', '.join(MODES)}"
        )
    if config.getoption("llmwb_record") and mode not in (None, "rewrite"):
        raise pytest.UsageError(
            f"--llmwb-record and --llmwb-mode={mode} contradict each other: "
            "--llmwb-record means --llmwb-mode=rewrite; pass only one"
        )
    session_mode = "rewrite" if config.getoption("llmwb_record") else (mode or ini_mode)
    if session_mode in ("once", "new", "rewrite"):
        # a key that cannot seal must stop the session before any test calls anything live
        from .exceptions import LlmwbError

        try:
            _seal_key(config)
        except LlmwbError as exc:
            raise pytest.UsageError(f"the seal key: {exc}") from None


# --- resolving a test's settings ----------------------------------------------------------


def _marker_kwargs(item: pytest.Item) -> dict[str, Any]:
    __tracebackhide__ = True
    merged: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("llmwb"))):
        if len(mark.args) > 1:
            raise _config_error(item, "takes at most one positional argument (the bundle name)")
        if mark.args:
            merged["bundle"] = mark.args[0]
        unknown = set(mark.kwargs) - _MARKER_KEYS
        if unknown:
            raise _config_error(
                item,
                f"got unknown argument(s) {', '.join(sorted(unknown))}; "
                f"it takes {', '.join(sorted(_MARKER_KEYS))}",
            )
        merged.update(mark.kwargs)
    for key in ("expect_drift", "check_transitions"):
        if key in merged and not isinstance(merged[key], bool):
            raise _config_error(item, f"has {key}={merged[key]!r}; it takes True or False")
    return merged


def _config_error(item: pytest.Item, what: str) -> Exception:
    from .exceptions import ConfigError

    return ConfigError(f"@pytest.mark.llmwb on {item.nodeid} {what}", fix="see `pytest --markers`")


def _mode(item: pytest.Item, marker: dict[str, Any]) -> str:
    __tracebackhide__ = True
    config = item.config
    if config.getoption("llmwb_record"):
        return "rewrite"
    mode = config.getoption("llmwb_mode") or marker.get("mode") or config.getini("llmwb_mode")
    if mode not in MODES:
        raise _config_error(item, f"has mode={mode!r}; use one of {', '.join(MODES)}")
    return str(mode)


def _test_name(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[1].replace("::", ".") if "::" in item.nodeid else item.name


def _bundle_path(item: pytest.Item, marker: dict[str, Any]) -> Path:
    __tracebackhide__ = True
    from .store import safe_dirname

    config = item.config
    option_dir = config.getoption("llmwb_bundle_dir")
    if option_dir:
        base = Path(config.invocation_params.dir, option_dir)
    else:
        base = item.path.parent / config.getini("llmwb_bundle_dir")
    name = marker.get("bundle")
    if name is not None and (not isinstance(name, str) or not name):
        raise _config_error(item, f"has bundle={name!r}; it must be a non-empty string")
    default = base / item.path.stem / safe_dirname(name or _test_name(item))
    custom = config.hook.pytest_llmwb_bundle_path(item=item, default=default)
    return Path(custom) if custom is not None else default


def _record_command(item: pytest.Item) -> str:
    try:
        rel = item.path.relative_to(item.config.invocation_params.dir)
    except ValueError:
        rel = item.path
    rest = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else ""
    target = f"{rel}::{rest}" if rest else str(rel)
    return f"pytest --llmwb-record {shlex.quote(target)}"


def _uses_llmwb(item: pytest.Item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    return item.get_closest_marker("llmwb") is not None or any(
        name in fixtures for name in ("llmwb", "llmwb_snapshot")
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Resolve each selected test's bundle path once, so two tests sharing one are caught."""
    owners = session.config.stash[_session_key].bundle_owners
    for item in session.items:
        if not _uses_llmwb(item):
            continue
        try:
            path = _bundle_path(item, _marker_kwargs(item))
        except Exception:
            continue  # reported when the test sets up
        item.stash[_path_key] = path
        owners.setdefault(str(path).lower(), []).append(item.nodeid)


# --- fixtures -----------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the call report, so the fixture knows at teardown whether the test passed.

    A failure caused by a secret (strict scrubbing) is reported by its message alone:
    the frames it passed through hold the secret in their arguments and locals, which
    ``-l`` / ``--tb=long`` would print into the CI log.
    """
    report = yield
    if report.when == "call":
        item.stash[_report_key] = report
    if call.excinfo is not None and "pytest_llmwb.exceptions" in sys.modules:
        secret = _caused_by(call.excinfo.value, "SecretFoundError")
        if secret is not None and secret.__traceback__ is not None:
            info = pytest.ExceptionInfo.from_exception(secret)
            longrepr: Any = info.getrepr(style="value", chain=False)
            with contextlib.suppress(AttributeError, IndexError, TypeError):  # pytest's reprs
                lines = longrepr.chain[0][0].reprentries[0].lines
                lines[0] = f"{info.exconly().partition(':')[0]}: {lines[0]}"
            report.longrepr = longrepr
        elif report.failed:
            drift = _caused_by(call.excinfo.value, "ReplayDriftError")
            if drift is not None and report.when == "call":
                item.stash[_drift_key] = drift
            crash = getattr(report.longrepr, "reprcrash", None)
            if drift is not None and crash is not None:
                # the short summary names the drift, even when an SDK wrapped it, with
                # the node and the JSON paths that changed
                crash.message = _drift_line(drift)
    return report


def _drift_line(error: Any) -> str:
    """One line for the short summary: the drift's class, what and where, the paths."""
    line = str(error.message).split("\n", 1)[0].rstrip(":")
    paths = [str(change[0]) for change in getattr(error, "changes", None) or ()]
    if paths:
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        line += f"; changed: {', '.join(paths[:3])}{more}"
    return f"{type(error).__name__}: {line}"


def _caused_by(error: BaseException, name: str) -> BaseException | None:
    """The error of class ``name`` that ``error`` is, or was caused by (SDKs wrap errors)."""
    from . import exceptions

    cls: type[BaseException] = getattr(exceptions, name)
    seen: set[int] = set()
    found: BaseException | None = error
    while found is not None and id(found) not in seen:
        if isinstance(found, cls):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


@pytest.fixture(autouse=True)
def _llmwb_marker(request: pytest.FixtureRequest) -> None:
    """Give a run to tests marked ``@pytest.mark.llmwb`` that do not ask for ``llmwb``."""
    if request.node.get_closest_marker("llmwb") is not None and "llmwb" not in request.fixturenames:
        request.getfixturevalue("llmwb")


@pytest.fixture
def llmwb(request: pytest.FixtureRequest) -> Iterator[Run]:
    """The test's :class:`~pytest_llmwb.Run`, bound to its bundle and active for the test.

    In replay (the default) model and tool calls are served from the bundle; with
    ``--llmwb-record`` they run live and the bundle is rewritten when the test passes.
    """
    __tracebackhide__ = True
    from . import golden
    from .exceptions import BundleConflictError, BundleNotFoundError
    from .recording import Run

    item = request.node
    config = request.config
    state = config.stash[_session_key]
    marker = _marker_kwargs(item)
    mode = _mode(item, marker)
    path = item.stash.get(_path_key, None) or _bundle_path(item, marker)
    command = _record_command(item)
    exists = (path / "manifest.json").is_file()
    run_mode = {
        "replay": "replay",
        "verify": "verify",
        "rewrite": "record",
        "once": "replay" if exists else "record",
        "new": "new" if exists else "record",
    }[mode]
    if run_mode in ("replay", "verify") and not exists:
        raise BundleNotFoundError(
            f"no bundle for {item.nodeid} at {path} (mode {mode}: calls are served from "
            "the bundle and nothing runs live)",
            fix=command,
        )
    owners = [n for n in state.bundle_owners.get(str(path).lower(), []) if n != item.nodeid]
    if owners and run_mode in ("record", "new"):
        raise BundleConflictError(
            f"{item.nodeid} and {', '.join(owners)} would both write the bundle {path}",
            fix="give each test its own bundle: @pytest.mark.llmwb(bundle='a-unique-name')",
        )
    run = Run(
        item.nodeid,
        mode=run_mode,  # type: ignore[arg-type]
        replay=path if run_mode != "record" else None,
        record_command=command,
        gate_decisions=marker.get("gates"),
        labels={"test": item.nodeid},
        lenient=run_mode == "replay" and golden.lenient(item, marker),
        scrubber=_scrubber(config),
        prices=_prices(config) if run_mode != "replay" else None,
        emit_spans=bool(config.getini("llmwb_emit_spans")),
        check_transitions=_check_transitions(config, marker),
    )
    if marker.get("dag") is not None:
        run.declare(marker["dag"])
    capture = _capture(item, marker, run)
    finished = False
    try:
        with run, capture, _trace_environ(run):
            yield run
        _finish(item, run, mode, run_mode, path, marker, capture)
        finished = True
    finally:  # whatever failed (a strict secret as capture ended, a check), warn as well
        capture.emit_warnings(stacklevel=2)
        report = item.stash.get(_report_key, None)
        if not finished or (report is not None and report.failed):
            _view_failed(item, run, run_mode, path)


@contextlib.contextmanager
def _trace_environ(run: Run) -> Iterator[None]:
    """While the test runs, processes it starts inherit the run's current span.

    ``TRACEPARENT``/``TRACESTATE`` are set for the test's duration (a test runs alone in
    its process) and put back afterwards; with no trace context nothing changes.
    """
    values = run.subprocess_env({})
    if "TRACEPARENT" not in values:
        yield
        return
    names = ("TRACEPARENT", "TRACESTATE")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        if name in values:
            os.environ[name] = values[name]
        else:
            os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_transitions(config: pytest.Config, marker: dict[str, Any]) -> bool:
    """Whether the run checks DAG transitions: option > marker > ini (default on)."""
    if config.getoption("llmwb_no_check_transitions"):
        return False
    if marker.get("check_transitions") is not None:
        return bool(marker["check_transitions"])
    return bool(config.getini("llmwb_check_transitions"))


def _scrubber(config: pytest.Config) -> Any:
    """The session's secret scrubber: built-in rules, hook rules, strictness (made once)."""
    state = config.stash[_session_key]
    if state.scrubber is None:
        from .scrub import Scrubber

        rules = [r for found in config.hook.pytest_llmwb_secret_rules(config=config) for r in found]
        strict = config.getoption("llmwb_strict_secrets") or config.getini("llmwb_strict_secrets")
        state.scrubber = Scrubber(extra_rules=rules, strict=bool(strict))
    return state.scrubber


def _seal_key(config: pytest.Config) -> Any:
    """The key that seals recorded bundles: --llmwb-seal-key > $LLMWB_SEAL_KEY > ini; or None.

    Read once per session and kept in memory only: the private key is never written.
    """
    state = config.stash[_session_key]
    if state.seal_key is None:
        from .evidence.keys import SEAL_KEY_ENV, load_signing_key

        chosen = config.getoption("llmwb_seal_key") or os.environ.get(SEAL_KEY_ENV)
        if not chosen:
            ini = config.getini("llmwb_seal_key")
            base = config.inipath.parent if config.inipath is not None else config.rootpath
            chosen = str(base / ini) if ini else None
        state.seal_key = load_signing_key(chosen) if chosen else False
    return state.seal_key or None


def _prices(config: pytest.Config) -> Any:
    """The session's price table: LLMWB_PRICE_FILE > llmwb_price_file > genai-prices."""
    state = config.stash[_session_key]
    if state.prices is None:
        from .pricing import PRICE_FILE_ENV, default_table

        ini = config.getini("llmwb_price_file")
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        chosen = os.environ.get(PRICE_FILE_ENV) or (str(base / ini) if ini else None)
        state.prices = default_table(chosen)
    return state.prices


def _strings(item: pytest.Item, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(v, str) for v in value
    ):
        raise _config_error(item, f"has {key}={value!r}; it takes a list of strings")
    return tuple(value)


def _capture(item: pytest.Item, marker: dict[str, Any], run: Run) -> Any:
    """The HTTP capture (and, in replay, the network guard) of a test's run."""
    from .capture import CaptureConfig, CaptureSession

    config = item.config
    hosts = [h.strip() for arg in config.getoption("llmwb_allow_hosts") for h in arg.split(",")]
    hosts += config.getini("llmwb_allow_hosts")
    hosts += _strings(item, "allow_hosts", marker.get("allow_hosts"))
    adapters: list[Any] = []
    for found in config.hook.pytest_llmwb_adapters(config=config):
        from .adapters import ProviderAdapter
        from .exceptions import ConfigError

        if not isinstance(found, (list, tuple)) or not all(
            isinstance(a, ProviderAdapter) for a in found
        ):
            raise ConfigError(
                f"pytest_llmwb_adapters returned {found!r}: it must return a list of adapters "
                "(objects with name, api, matches, parse_request and parse_response)",
                fix="return [MyAdapter()] from the hook; see docs/adapters.md",
            )
        adapters += found
    settings = CaptureConfig(
        http=bool(marker.get("capture", True)),
        allow_hosts=tuple(h for h in hosts if h),
        volatile=_strings(item, "volatile", marker.get("volatile")),
        replay_timing=bool(config.getoption("llmwb_replay_timing")),
        adapters=tuple(adapters),
    )
    return CaptureSession(run, settings, record_command=run.record_command)


def _check_swallowed(item: pytest.Item, run: Run, capture: Any, marker: dict[str, Any]) -> None:
    """Fail a passed test whose replay raised an error that something caught.

    A blocked network access first, then drift (a changed request, an extra call, a
    stream read too far): checked before anything else after the test, so that the
    cause is reported, not what follows from it (calls never made, a golden mismatch),
    and no golden bundle is rewritten from such a run.
    """
    __tracebackhide__ = True
    attempts = capture.blocked
    if attempts:
        from .exceptions import LiveCallBlockedError

        raise LiveCallBlockedError(
            f"{item.nodeid} passed, but in replay it tried to reach the network and "
            f"something caught the error: {'; '.join(attempts[:5])}",
            attempt=attempts[0],
            fix=f"record the test ({capture.record_command}), or allow the host with "
            "@pytest.mark.llmwb(allow_hosts=[...])",
        )
    raised = run.raised_drift
    if raised and not marker.get("expect_drift", False):
        original = raised[0]
        more = f" (and {len(raised) - 1} more)" if len(raised) > 1 else ""
        message = (
            f"{item.nodeid} passed, but its replay drifted and something caught the "
            f"error{more}:\n{original.message}"
        )
        # the same class and details (node, changes, fix), said of the test
        fix = (
            f"{original.fix}; or, if the test catches this drift on purpose (pytest.raises), "
            "mark it @pytest.mark.llmwb(expect_drift=True)"
        )
        restated = type(original).__new__(type(original), message)
        restated.__dict__.update(original.__dict__, message=message, fix=fix)
        raise restated from None


def _finish(
    item: pytest.Item,
    run: Run,
    mode: str,
    run_mode: str,
    path: Path,
    marker: dict[str, Any],
    capture: Any,
) -> None:
    """After the test: check budgets and unused calls, then write (or keep) the bundle."""
    __tracebackhide__ = True
    from . import golden
    from .exceptions import ConfigError, LlmwbError

    report = item.stash.get(_report_key, None)
    passed = report is not None and report.passed
    config = item.config
    differences: list[Any] = []
    if run_mode == "verify":
        from .verify import compare_run

        differences = compare_run(run)
    item.user_properties.append(("llmwb", _summary(run, mode)))
    writes = run_mode in ("record", "new")
    try:
        if passed:
            _check_swallowed(item, run, capture, marker)
            _check_budget(item, run, marker)
    except LlmwbError:  # the run is not written; it is kept for inspection, and said so
        if writes:
            _keep_failed(item, run, path)
        config.hook.pytest_llmwb_run_finished(item=item, run=run, bundle_path=path, written=False)
        raise
    if writes:
        written = False
        if passed:
            # `new` with nothing new leaves the bundle as it was (volatile.json too)
            written = run.save(path, keep_unchanged=run_mode == "new").written
            if written:
                key = _seal_key(config)
                if key is not None:
                    from .evidence.seal import seal_bundle

                    seal_bundle(path, key)
                item.user_properties.append(("llmwb_written", str(path)))
        else:
            _keep_failed(item, run, path)
        config.hook.pytest_llmwb_run_finished(item=item, run=run, bundle_path=path, written=written)
        return
    updated = run_mode == "replay" and golden.settle(item, run, path, marker, passed)
    config.hook.pytest_llmwb_run_finished(item=item, run=run, bundle_path=path, written=updated)
    if not passed or updated:
        return
    if run.unused_scripted_gates:
        raise ConfigError(
            f"{item.nodeid}: scripted decision(s) for gate(s) that never fired: "
            f"{', '.join(run.unused_scripted_gates)}",
            fix="remove them from @pytest.mark.llmwb(gates=...) or check the gate ids",
        )
    expected = bool(marker.get("expect_drift", False) and run.raised_drift)
    if not expected and not marker.get("allow_unused", config.getini("llmwb_allow_unused")):
        run.check_complete(
            opt_out="mark the test @pytest.mark.llmwb(allow_unused=True) "
            "or set llmwb_allow_unused = true in the ini file"
        )
    if run_mode == "replay" and not expected:
        golden.check(item, run, path, marker)
    if run.verify_report:
        item.add_report_section("teardown", "llmwb verify", "\n".join(run.verify_report))
    failing = [d for d in differences if d.fails]
    if failing:
        from .exceptions import ResponseDriftError

        lines = "\n".join(f"  {d.line()}" for d in failing)
        raise ResponseDriftError(
            f"{item.nodeid}: in verify, {len(failing)} live response or tool result "
            f"value{'s differ' if len(failing) != 1 else ' differs'} from the bundle {path} "
            f"(recorded -> live):\n{lines}",
            differences=failing,
            fix=f"if the provider's new behaviour is right, record it: {run.record_command}",
        )


def _view_dir(config: pytest.Config) -> Path | None:
    """Where viewer pages of failed tests go: option (from the invocation dir) > ini."""
    option = str(config.getoption("llmwb_view_dir") or "")
    if option:
        return config.invocation_params.dir / option
    ini = str(config.getini("llmwb_view_dir"))
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / ini
    return None


def _view_failed(item: pytest.Item, run: Run, run_mode: str, path: Path) -> None:
    """Write the viewer page of a failed test, when asked to; never hide the failure."""
    view_dir = _view_dir(item.config)
    if view_dir is None:
        return
    from .exceptions import LlmwbError
    from .viewer.report import failed_test_page

    # the drift errors the replay raised, and the one the test failed with if it is not
    # among them (a DAG drift is raised by declare(), outside the replay index)
    drift: list[BaseException] = list(run.raised_drift)
    failure = item.stash.get(_drift_key, None)
    if failure is not None and not any(failure is error for error in drift):
        drift.insert(0, failure)
    try:
        page = failed_test_page(
            run,
            test_id=item.nodeid,
            replayed=run_mode in ("replay", "verify"),
            bundle_path=path,
            view_dir=view_dir,
            drift=drift,
        )
    except LlmwbError as exc:  # the test's own failure is the one to report
        item.add_report_section("teardown", "llmwb view", f"no viewer page: {exc}")
        return
    except Exception as exc:  # a page is a courtesy: it must not replace the failure
        item.add_report_section(
            "teardown", "llmwb view", f"no viewer page: {type(exc).__name__}: {exc}"
        )
        return
    item.user_properties.append(("llmwb_view", str(page)))
    item.add_report_section("teardown", "llmwb view", f"viewer page: {page}")


def _keep_failed(item: pytest.Item, run: Run, path: Path) -> None:
    """Save the run of a failed test aside, for inspection; the bundle stays as it was."""
    from .store import safe_dirname

    cache = getattr(item.config, "cache", None)  # absent with -p no:cacheprovider
    base = (
        cache.mkdir("llmwb-failed")
        if cache is not None
        else Path(tempfile.mkdtemp(prefix="llmwb-failed-"))
    )
    from .exceptions import SecretFoundError

    try:
        kept = run.save(base / safe_dirname(item.nodeid)).path
    except SecretFoundError:  # the strict scrubber refused it; the test's error says where
        item.add_report_section(
            "teardown",
            "llmwb",
            f"the test failed, so its bundle was not written; {path} is unchanged. Its run "
            "was not kept either: it holds a secret the strict scrubber refused.",
        )
        return
    item.add_report_section(
        "teardown",
        "llmwb",
        f"the test failed, so its bundle was not written; {path} is unchanged.\n"
        f"The partial run is kept for inspection at {kept} "
        f"(llmwb show {shlex.quote(str(kept))})",
    )


def _check_budget(item: pytest.Item, run: Run, marker: dict[str, Any]) -> None:
    """Fail a test whose run spent more than ``max_cost`` or ``max_tokens`` allow."""
    __tracebackhide__ = True
    from decimal import Decimal, InvalidOperation

    from .costs import money
    from .exceptions import BudgetExceededError

    max_cost, max_tokens = marker.get("max_cost"), marker.get("max_tokens")
    if max_cost is None and max_tokens is None:
        return
    summary = run.cost
    over = []
    if max_tokens is not None and summary.tokens > int(max_tokens):
        over.append(f"{summary.tokens} tokens, over max_tokens={max_tokens}")
    if max_cost is not None:
        try:
            limit = Decimal(str(max_cost))
        except InvalidOperation:
            raise _config_error(item, f"has max_cost={max_cost!r}; use a number") from None
        spent = sum(summary.total.cost.values(), Decimal(0))
        if summary.total.unpriced:
            import warnings

            from .exceptions import LlmwbWarning

            warnings.warn(
                LlmwbWarning(
                    f"{item.nodeid}: max_cost={max_cost} sees only priced calls; "
                    f"{summary.total.unpriced} model call(s) have no cost (a model no price "
                    "table knows, or a response that reported no usage); see docs/pricing.md"
                ),
                stacklevel=2,
            )
        if spent > limit:
            currencies = "/".join(sorted(summary.total.cost)) or "USD"
            over.append(f"{money(spent)} {currencies}, over max_cost={max_cost}")
    if over:
        top = "\n".join(f"    {node}: {spend.describe()}" for node, spend in summary.top_nodes(3))
        raise BudgetExceededError(
            f"{item.nodeid} spent {' and '.join(over)}\n  top spenders:\n{top}",
            fix="make the agent spend less, or raise the budget in "
            "@pytest.mark.llmwb(max_cost=..., max_tokens=...)",
        )


def _summary(run: Run, mode: str) -> dict[str, Any]:
    """What the terminal summary shows of one test (plain data: it crosses xdist)."""
    from .exceptions import SecretFoundError

    try:
        summary = run.cost
    except SecretFoundError:  # a strict scrubber refused a call: the test says so already
        return {"mode": mode, "calls": 0, "tokens": 0, "cost": "", "gates": "", "unpriced": 0}
    from .costs import money

    spent = ", ".join(
        f"{money(amount)} {cur}" for cur, amount in sorted(summary.total.cost.items())
    )
    return {
        "mode": mode,
        "calls": run.count("model_io", "tool_call"),
        "tokens": summary.tokens,
        "cost": spent,
        "unpriced": summary.total.unpriced,
        "gates": ", ".join(f"{g.gate_id}={g.decision}" for g in run.gates.values()),
        "verify": list(run.verify_report),
    }


def pytest_assertrepr_compare(
    config: pytest.Config, op: str, left: Any, right: Any
) -> list[str] | None:
    """Explain a failed ``gate == expect_gate(...)`` comparison field by field."""
    if op != "==" or not any(
        type(side).__module__.startswith("pytest_llmwb.") for side in (left, right)
    ):
        return None
    from .assertions import GateExpectation, explain_mismatch
    from .schema import GateFact

    if isinstance(left, GateFact) and isinstance(right, GateExpectation):
        return explain_mismatch(left, right)
    if isinstance(right, GateFact) and isinstance(left, GateExpectation):
        return explain_mismatch(right, left)
    return None


# --- reporting ----------------------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say which mode the session runs in."""
    if config.getoption("llmwb_record"):
        return "llmwb: mode rewrite (calls run live; bundles are rewritten when tests pass)"
    mode = config.getoption("llmwb_mode")
    return f"llmwb: mode {mode}" if mode else None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Per test that used a run: mode, calls, tokens, cost and gates; bundles written; pages."""
    written: set[str] = set()
    pages: set[str] = set()
    rows: dict[str, dict[str, Any]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == "llmwb_written":
                    written.add(value)
                elif key == "llmwb_view":
                    pages.add(value)
                elif key == "llmwb" and getattr(report, "when", None) == "teardown":
                    rows[report.nodeid] = value
    if not rows and not written and not pages:
        return
    terminalreporter.write_sep("-", "llmwb")
    shown = sorted(rows.items())
    verbose = config.getoption("verbose") > 0
    if len(shown) > 20 and not verbose:
        shown = sorted(rows.items(), key=lambda kv: (kv[1]["tokens"], kv[0]), reverse=True)[:10]
        terminalreporter.write_line(f"{len(rows)} runs; the 10 that used most tokens (-v for all):")
    for nodeid, row in shown:
        calls = row["calls"]
        line = f"{nodeid}: {row['mode']}, {calls} call{'' if calls == 1 else 's'}"
        line += f", {row['tokens']} tokens"
        if row["cost"]:
            line += f", {row['cost']}"
        if row.get("unpriced"):
            line += f" ({row['unpriced']} unpriced)"
        if row["gates"]:
            line += f"; gates {row['gates']}"
        differences = row.get("verify") or ()
        if differences:
            line += f"; {len(differences)} difference{'' if len(differences) == 1 else 's'}"
            line += " from the bundle"
        terminalreporter.write_line(line)
        for difference in differences:
            terminalreporter.write_line(f"    {difference}")
    if written:
        terminalreporter.write_line(f"{len(written)} bundle(s) written:")
        for path in sorted(written):
            terminalreporter.write_line(f"  {os.path.relpath(path)}")
    if pages:
        terminalreporter.write_line(f"{len(pages)} viewer page(s) of failed tests:")
        for path in sorted(pages):
            terminalreporter.write_line(f"  {os.path.relpath(path)}")
