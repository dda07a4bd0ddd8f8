"""The host-facing recording API: a :class:`Run`, and decorators that find it on their own.

Independent of pytest: a production service records bundles with the same calls. The
current run lives in a context variable (with a process-wide fallback so threads the
host starts find it too); instrumented functions called outside any run just run.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import inspect
import threading
import time
import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel, TypeAdapter, ValidationError

if typing.TYPE_CHECKING:
    from .costs import CostSummary
    from .pricing import PriceTable
from pydantic_core import to_jsonable_python

from .codec import digest
from .dag import Dag, DagTransitions, snapshot_from_nodes
from .exceptions import (
    DagDriftError,
    DagFrozenError,
    LlmwbError,
    NoActiveRunError,
    RecordedCallError,
    ReplayDriftError,
    UndeclaredNodeError,
)
from .otel.context import TraceContext, active_ids, active_span_context, from_environ
from .replay import ReplayIndex, nth, short
from .reviewers import as_decision
from .schema import (
    ArtifactFact,
    Cost,
    DagSnapshot,
    ErrorFact,
    ErrorInfo,
    GateDecision,
    GateFact,
    ModelIOFact,
    ModelRequest,
    ModelResponse,
    PolicyRef,
    Reviewer,
    StepFact,
    SubjectRef,
    ToolCallFact,
    Usage,
    _FactBase,
)
from .scrub import Scrubber, default_scrubber
from .sequencing import Lane, canonical_order, current_identity, has_concurrency

__all__ = [
    "Mode",
    "Run",
    "artifact",
    "current_run",
    "declare",
    "gate",
    "model",
    "step",
    "tool",
    "traceparent",
]

Mode = Literal["record", "replay", "new", "verify"]
MODES: tuple[str, ...] = ("record", "replay", "new", "verify")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
FactT = TypeVar("FactT", bound=_FactBase)

_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar("llmwb_run", default=None)
_node: contextvars.ContextVar[str | None] = contextvars.ContextVar("llmwb_node", default=None)
_ambient: list[Run] = []  # runs entered, for threads that do not inherit the context
# the lane (thread or task, see sequencing.py) this context appends facts from, per run
_lane: contextvars.ContextVar[tuple[Run, Lane] | None] = contextvars.ContextVar(
    "llmwb_lane", default=None
)
# True while an instrumented model or tool function runs live: its call is recorded by
# the decorator, so HTTP capture lets the traffic inside it through unrecorded
_instrumented: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "llmwb_instrumented", default=False
)


def in_instrumented_call() -> bool:
    """Whether an instrumented model or tool function is running live in this context."""
    return _instrumented.get()


@contextmanager
def _live_call() -> Iterator[None]:
    token = _instrumented.set(True)
    try:
        yield
    finally:
        _instrumented.reset(token)


def current_run() -> Run | None:
    """The run active in this context, or ``None``.

    A thread the host started without copying the context (``contextvars``) finds the
    run too, as long as only one run is active in the process. With several runs
    active (a service handling requests concurrently) such a thread finds none rather
    than a wrong one, and a :class:`LlmwbWarning` says how to pass the context.
    """
    run = _current.get()
    if run is not None or not _ambient:
        return run
    if len(_ambient) == 1:
        return _ambient[0]
    import warnings

    from .exceptions import LlmwbWarning

    warnings.warn(
        f"{len(_ambient)} runs are active and this thread carries none of them, so its "
        "calls are not recorded; start the thread with contextvars.copy_context().run(...) "
        "so it belongs to the run that started it",
        LlmwbWarning,
        stacklevel=3,
    )
    return None


def declare(dag: Dag | DagSnapshot) -> None:
    """Declare the DAG of the current run, if there is one; a no-op outside any run."""
    __tracebackhide__ = True
    run = current_run()
    if run is not None:
        run.declare(dag)


# --- OpenTelemetry ids (optional dependency, imported on first use) ---------------------


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, for a call or process the host starts.

    The active OpenTelemetry span, else the current run's context (from ``TRACEPARENT``
    when the run started), else ``TRACEPARENT`` itself; ``None`` when there is none.
    """
    context = _current_context(current_run())
    return context.traceparent if context is not None else None


def _current_context(run: Run | None) -> TraceContext | None:
    active = active_span_context()
    if active is not None:
        return active
    return run.trace_context if run is not None else from_environ()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _error_info(exc: BaseException) -> ErrorInfo:
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return ErrorInfo(type=name, message=str(exc))


def _rebuild(error: ErrorInfo) -> BaseException:
    """The recorded exception, rebuilt when its type takes a message, else RecordedCallError."""
    module, _, name = error.type.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module or "builtins"), name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            exc = cls(error.message)
            if str(exc) == error.message:
                return exc
    except Exception:
        pass
    return RecordedCallError(error.type, error.message)


class Run:
    """One execution of an agent workflow, recorded as a DAG snapshot and facts.

    ``mode`` decides where calls are answered:

    - ``record``: every call runs live and is recorded.
    - ``replay``: calls are served from ``replay`` (a bundle path, :class:`Bundle` or
      :class:`ReplayIndex`); nothing runs live; any difference is a drift error.
    - ``new``: calls that match the bundle are served; the others run live.
    - ``verify``: every call runs live; a request that differs from the bundle is a
      drift error; :func:`pytest_llmwb.verify.compare_run` compares the live responses
      and tool results with the recording and lists them in :attr:`verify_report`.

    ``lenient`` (replay only): a call whose request changed is answered with the call
    recorded at its place, and the drift is kept in :attr:`drifts` instead of raised;
    a call with nothing recorded at its place still raises.

    ``check_transitions`` (default on): a declared DAG with edges is also checked as
    the run goes: stepping from one node to another it declares no edge for raises
    :class:`DagTransitionError` (kept in :attr:`drifts` by lenient replay).

    ``scrubber`` (default: the built-in secret rules, see :mod:`pytest_llmwb.scrub`)
    replaces secrets in everything recorded before it is hashed or stored; what the host
    receives live is unchanged. ``prices`` (default: ``pricing.default_table()``) prices
    each live model call whose ``cost`` callable gave no cost; served calls keep their
    recorded cost.

    Facts take the trace and span ids of the active OpenTelemetry span, else of the
    W3C context in ``TRACEPARENT``/``TRACESTATE`` (:attr:`trace_context`).
    ``emit_spans`` (``True`` for the global ``TracerProvider``, or a provider) sends
    the run's spans to OpenTelemetry: an ``invoke_agent`` root span current while the
    run is active, a span per step and call when it exits (needs ``opentelemetry-api``).

    Use it as a context manager (it becomes the current run), then :meth:`save`::

        with Run("refund", dag=DAG) as run:
            agent.handle(ticket)
        run.save("bundles/refund")
    """

    def __init__(
        self,
        name: str = "run",
        *,
        dag: Dag | DagSnapshot | None = None,
        mode: Mode = "record",
        replay: Any = None,
        record_command: str | None = None,
        gate_decisions: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        lenient: bool = False,
        scrubber: Scrubber | None = None,
        prices: PriceTable | None = None,
        emit_spans: Any = False,
        check_transitions: bool = True,
    ) -> None:
        if mode not in MODES:
            raise LlmwbError(f"unknown run mode {mode!r}", fix=f"use one of {', '.join(MODES)}")
        #: What secrets are scrubbed from everything recorded (and whether strictly).
        self.scrubber: Scrubber = scrubber or default_scrubber()
        self._prices = prices
        self.name = name
        self.mode: Mode = mode
        self.labels = dict(labels or {})
        self.record_command = record_command
        self._lock = threading.RLock()
        self._facts: list[Any] = []
        self._lanes: list[Lane] = []  # the lane each fact was appended from
        self._owner: Lane | None = None  # the lane that entered the run
        self._lane_tokens: list[contextvars.Token[tuple[Run, Lane] | None]] = []
        self.check_transitions = check_transitions
        self._transitions: DagTransitions | None = None
        self._ordinals: dict[str, int] = {}
        self._used_nodes: dict[str, str] = {}
        self._dag: DagSnapshot | None = None
        self._recorded_dag: DagSnapshot | None = None
        self._artifact_revisions: dict[str, int] = {}
        self._artifact_schemas: dict[str, Any] = {}
        self._scripted = dict(gate_decisions or {})
        self._scripted_used: set[str] = set()
        self._tokens: list[tuple[contextvars.Token[Run | None], bool]] = []
        self.verify_report: list[str] = []
        self.started_at = _now()
        #: The trace context the run started in: the active OpenTelemetry span, else the
        #: ``TRACEPARENT``/``TRACESTATE`` environment variables (an invalid value is
        #: ignored with a :class:`TraceContextWarning`). Facts recorded outside any span
        #: take its ids; it is kept in ``volatile.json`` as the run's ``trace_id``/``span_id``.
        self.trace_context: TraceContext | None = active_span_context() or from_environ()
        #: Where the run's spans go while it is active: ``True`` for the global
        #: OpenTelemetry ``TracerProvider``, a ``TracerProvider`` for that one, ``False``
        #: for none (see :mod:`pytest_llmwb.otel.emit`).
        self.emit_spans: Any = emit_spans
        self._emitter: Any = None
        self.index: ReplayIndex | None = None
        self._blobs: dict[str, bytes] = {}
        self._replayed: Any = None  # the replayed Bundle, for its blobs
        if mode != "record":
            if replay is None:
                raise LlmwbError(f"mode {mode!r} needs a bundle to replay", fix="pass replay=PATH")
            self.index = self._index(replay)
            self.index.lenient = lenient and mode == "replay"
        self._patches: dict[int, dict[str, Any]] = {}  # lenient: what a served call changed
        if dag is not None:
            self.declare(dag)

    def _index(self, replay: Any) -> ReplayIndex:
        if isinstance(replay, ReplayIndex):
            return replay
        from .store import Bundle, load_bundle

        if isinstance(replay, Bundle):
            index = ReplayIndex.from_facts(replay.facts, fix=self._fix())
            bundle = replay
        else:
            # facts stay as their stored lines; the index keeps (kind, digest, seq) per call
            index = ReplayIndex([], fix=self._fix())
            bundle = load_bundle(replay, lazy=True, visit=index.add)
            index.facts = bundle.facts
        index.source = str(bundle.path or "the bundle")
        self._recorded_dag = bundle.dag
        self._replayed = bundle
        return index

    def _fix(self) -> str:
        return self.record_command or "record the run again (Run(..., mode='record'))"

    # -- constructors for the common cases ------------------------------------------------

    @classmethod
    def replay(
        cls, path: str | Path, *, dag: Dag | DagSnapshot | None = None, **kwargs: Any
    ) -> Run:
        """A run served from the bundle at ``path``."""
        return cls(
            kwargs.pop("name", Path(path).name), dag=dag, mode="replay", replay=path, **kwargs
        )

    # -- context ---------------------------------------------------------------------------

    def __enter__(self) -> Run:
        token = _current.set(self)
        _ambient.append(self)
        self._tokens.append((token, True))
        if self.emit_spans and self._emitter is None:
            from .otel.emit import SpanEmitter

            # the root span is current while the run is active: facts, subprocesses and
            # the host's own instrumentation nest under it
            provider = None if self.emit_spans is True else self.emit_spans
            self._emitter = SpanEmitter(self.name, self.trace_context, provider)
        if self._owner is None:
            self._owner = Lane(None, current_identity())
        self._lane_tokens.append(_lane.set((self, self._owner)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        token, _ = self._tokens.pop()
        _current.reset(token)
        _lane.reset(self._lane_tokens.pop())
        if self in _ambient:
            _ambient.remove(self)
        emitter = self._emitter
        if emitter is not None and not self._tokens:
            self._emitter = None
            error = exc_info[1] if len(exc_info) > 1 else None
            try:
                emitter.finish(self, error=error if isinstance(error, BaseException) else None)
            except Exception as exc:  # telemetry must never break the host's run
                import warnings

                from .exceptions import LlmwbWarning

                warnings.warn(
                    f"run {self.name!r}: its spans could not be sent to OpenTelemetry "
                    f"({type(exc).__name__}: {exc}); the run itself is recorded",
                    LlmwbWarning,
                    stacklevel=2,
                )

    # -- trace context ---------------------------------------------------------------------

    def subprocess_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """A copy of ``env`` (default ``os.environ``) that carries the current span.

        ``TRACEPARENT``/``TRACESTATE`` are set for the active OpenTelemetry span, else for
        the run's own context, so a process started with it joins the trace::

            subprocess.run(cmd, env=run.subprocess_env())

        ``os.environ`` itself is never changed: it is shared by every thread and every
        run of the process, and its value would outlive the span it names.
        """
        import os

        result = dict(os.environ if env is None else env)
        context = _current_context(self)
        if context is not None:
            result["TRACEPARENT"] = context.traceparent
            if context.tracestate:
                result["TRACESTATE"] = context.tracestate
            else:
                result.pop("TRACESTATE", None)  # another parent's state would be wrong
        return result

    # -- the DAG -----------------------------------------------------------------------------

    def declare(self, dag: Dag | DagSnapshot) -> None:
        """Declare the workflow; frozen before the first fact, compared with the bundle."""
        __tracebackhide__ = True
        snapshot = dag.freeze() if isinstance(dag, Dag) else dag
        snapshot = self.scrubber.scrub_dag(snapshot, where=f"DAG {snapshot.name!r}")
        with self._lock:
            if self._dag is not None and self._dag.digest == snapshot.digest:
                return
            if self._facts or self._dag is not None:
                raise DagFrozenError(
                    f"run {self.name!r}: the DAG is frozen once the run has started "
                    f"({len(self._facts)} fact(s) recorded, DAG "
                    f"{self._dag.name if self._dag else snapshot.name!r} declared)",
                    fix="declare the DAG before the first call: Run(dag=...) or "
                    "pytest_llmwb.declare(dag) at the start of the run",
                )
            self._dag = snapshot
            self._transitions = DagTransitions(snapshot) if snapshot.edges else None
        if self.mode in ("replay", "verify") and self._recorded_dag is not None:
            try:
                check_dag_drift(
                    self._recorded_dag, snapshot, source=self._source(), fix=self._fix()
                )
            except DagDriftError as drift:
                if self.index is None or not self.index.lenient:
                    raise
                self.index.drifts.append(drift)

    def _source(self) -> str:
        return self.index.source if self.index is not None else "the bundle"

    @property
    def drifts(self) -> list[Exception]:
        """Drift tolerated by lenient replay (DAG, order, request), in the order met."""
        return list(self.index.drifts) if self.index is not None else []

    @property
    def live(self) -> bool:
        """Whether calls can run live in this run: every mode but ``replay``.

        A fixture that starts a provider or a service for a test asks this, so that
        replay runs with nothing started.
        """
        return self.mode != "replay"

    @property
    def raised_drift(self) -> list[ReplayDriftError]:
        """Drift errors this run raised to the host code (replay and verify), in order."""
        return list(self.index.raised) if self.index is not None else []

    @property
    def replayed(self) -> Any:
        """The :class:`~pytest_llmwb.store.Bundle` this run replays, or ``None``."""
        return self._replayed

    @property
    def dag(self) -> DagSnapshot:
        """The declared DAG, or one derived from the nodes the run used."""
        if self._dag is not None:
            return self._dag
        used = self._used_nodes
        if has_concurrency(self._lanes):  # first use in canonical order, not in time
            first = dict.fromkeys(f.node for f in self.facts)
            used = {n: used[n] for n in [*first, *used] if n in used}
        return snapshot_from_nodes("implicit", used.items())

    def _here(self) -> Lane:
        """The lane of the caller: the thread or asyncio task appending a fact now."""
        identity = current_identity()
        held = _lane.get()
        if held is not None and held[0] is self:
            if held[1].identity == identity:
                return held[1]
            # a thread or task started from that lane (its context was copied from it)
            lane = Lane(held[1], identity)
        elif self._owner is None:  # a run used without `with`: its first caller owns it
            lane = self._owner = Lane(None, identity)
        else:  # a thread that carries no context of the run, e.g. a pool worker
            lane = Lane(self._owner, identity, adopted=True)
        _lane.set((self, lane))
        return lane

    def _transition(self, node: str) -> None:
        """Check the step to ``node`` from the node this thread or task ran last."""
        __tracebackhide__ = True
        rules = self._transitions
        if rules is None or not self.check_transitions or node not in rules.checked:
            return
        lane = self._here()
        # a pool thread: which task it runs for, and so what came before, is unknown
        if lane.adopted:
            return
        previous = lane.last
        origin = lane.parent
        if not lane.moved:
            while origin is not None and not origin.moved:
                origin = origin.parent
            previous = origin.last if origin is not None else None
        # after its children joined, a lane may step on from where any of them ended
        before = [previous, *lane.joined.values()]
        lane.joined.clear()
        self._moved(lane, node)
        container = _node.get()
        problems = [rules.problem(p, node, container) for p in before]
        if None in problems or previous is None:
            return
        problem = problems[0]
        from .exceptions import DagTransitionError

        where = f"\n  bundle: {self._source()}" if self.index is not None else ""
        error = DagTransitionError(
            f"DAG transition drift in run {self.name!r}: {problem}{where}",
            source=previous,
            target=node,
            fix=f"declare the edge (Dag(...).edge({previous!r}, {node!r})) if this path is "
            "intended; or turn the check off: @pytest.mark.llmwb(check_transitions=False), "
            "llmwb_check_transitions = false, --llmwb-no-check-transitions, or "
            "Run(..., check_transitions=False)",
        )
        if self.index is not None:
            if self.index.lenient:
                self.index.drifts.append(error)
                return
            self.index.raised.append(error)
        raise error

    def _left(self, node: str) -> None:
        """A step of ``node`` ended: what runs next in this lane comes after ``node``."""
        rules = self._transitions
        if rules is not None and node in rules.checked and self.check_transitions:
            self._moved(self._here(), node)

    @staticmethod
    def _moved(lane: Lane, node: str) -> None:
        lane.last, lane.moved = node, True
        origin = lane.parent
        while origin is not None and not origin.moved and origin.parent is not None:
            origin = origin.parent
        if origin is not None:
            origin.joined[id(lane)] = node

    def _check_node(self, node: str, kind: str) -> None:
        __tracebackhide__ = True
        if self._dag is not None:
            if self._dag.node(node) is None:
                raise UndeclaredNodeError(
                    f"run {self.name!r}: a {kind} fact names node {node!r}, which DAG "
                    f"{self._dag.name!r} does not declare (declared: "
                    f"{', '.join(self._dag.node_ids) or 'none'})",
                    fix=f"declare the node in the DAG, e.g. Dag(...).node({node!r}, ...), "
                    "or attribute the call to a declared node (node=...)",
                )
        else:
            self._used_nodes.setdefault(node, _NODE_KIND.get(kind, "function"))

    # -- facts -------------------------------------------------------------------------------

    @property
    def facts(self) -> list[Any]:
        """The facts recorded so far, in ``seq`` order.

        Facts of calls made concurrently (from threads or tasks of the run) are in
        their canonical order, as saved (see :mod:`pytest_llmwb.sequencing`).
        """
        return canonical_order(list(self._iter()), self._lanes)

    def _iter(self, *kinds: str) -> Iterator[Any]:
        """The facts (of ``kinds``, or all), each read when reached: nothing is kept."""
        for item in self._facts:
            if not kinds or item.kind in kinds:
                yield item.load() if type(item) in _LAZY else item

    def count(self, *kinds: str) -> int:
        """How many facts (of ``kinds``, or in all) the run has, without reading them."""
        return sum(1 for item in self._facts if not kinds or item.kind in kinds)

    def _append(self, cls: type[FactT], **fields: Any) -> FactT:
        trace_id, span_id = self.trace_ids()
        lane = self._here()
        with self._lock:
            fact = cls(
                seq=len(self._facts) + 1,
                trace_id=trace_id,
                span_id=span_id,
                **fields,
            )
            self._facts.append(fact)
            self._lanes.append(lane)
        return fact

    def _next_ordinal(self, node: str) -> int:
        with self._lock:
            ordinal = self._ordinals.get(node, 0)
            self._ordinals[node] = ordinal + 1
        return ordinal

    def _node_for(self, node: str | None, default: str) -> str:
        return node or _node.get() or default

    @contextmanager
    def step(self, node: str) -> Iterator[None]:
        """Run a block as DAG node ``node``: facts inside it belong to that node."""
        self._check_node(node, "step")
        self._transition(node)
        self._append(StepFact, node=node, phase="start", at=_now())
        token = _node.set(node)
        started = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            _node.reset(token)
            self._left(node)
            self._append(ErrorFact, node=node, at=_now(), **_error_info(exc).model_dump())
            self._append(
                StepFact,
                node=node,
                phase="end",
                status="error",
                at=_now(),
                duration_ms=(time.perf_counter() - started) * 1000,
            )
            raise
        _node.reset(token)
        self._left(node)
        self._append(
            StepFact,
            node=node,
            phase="end",
            status="ok",
            at=_now(),
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    def _serve(self, node: str, ordinal: int, kind: str, request_digest: str, request: Any) -> Any:
        """The recorded call to answer with, or ``None`` to go live."""
        __tracebackhide__ = True
        if self.index is None or self.mode == "record":
            return None
        if self.mode == "replay":
            served = self.index.take(node, ordinal, kind, request_digest, request)
            if (
                self.index.lenient
                and not isinstance(served, GateFact)
                and (
                    served.request_digest != request_digest
                    or (served.ordinal != ordinal and not served.concurrent)
                )
            ):  # a drifted call: its fact keeps the new request, and the recorded answer
                patch = {"ordinal": ordinal, "request_digest": request_digest}
                if kind == "model_io":
                    patch["request"] = ModelRequest.model_validate(request)
                else:
                    patch.update(tool=request["tool"], arguments=request["arguments"])
                self._patches[served.seq] = patch
            return served
        if self.mode == "new":
            return self.index.lookup(node, ordinal, kind, request_digest, request)
        # verify: requests must match; the call still goes live
        self.index.take(node, ordinal, kind, request_digest, request)
        return None

    def model_io(
        self,
        request: ModelRequest | Mapping[str, Any],
        call: Callable[[ModelRequest], ModelResponse | Mapping[str, Any]],
        *,
        node: str | None = None,
        provider: str = "custom",
        operation: str = "chat",
        cost: Callable[[ModelRequest, ModelResponse], Cost | None] | None = None,
    ) -> ModelResponse:
        """Record one model call: ``call(request)`` runs live or is answered from the bundle.

        ``cost``, when given, prices the response at record time; a replay serves the
        recorded cost and never recomputes it.
        """
        __tracebackhide__ = True
        pending = self._model_call(request, node, provider, operation, cost)
        if pending.served is not None:
            response: ModelResponse = pending.served()
            return response
        try:
            with _live_call():
                raw = call(pending.argument)
        except Exception as exc:
            pending.end(None, exc)
            raise
        live: ModelResponse = pending.end(raw, None)
        return live

    async def amodel_io(
        self,
        request: ModelRequest | Mapping[str, Any],
        call: Callable[[ModelRequest], Awaitable[ModelResponse | Mapping[str, Any]]],
        *,
        node: str | None = None,
        provider: str = "custom",
        operation: str = "chat",
        cost: Callable[[ModelRequest, ModelResponse], Cost | None] | None = None,
    ) -> ModelResponse:
        """:meth:`model_io` for an async ``call``."""
        __tracebackhide__ = True
        pending = self._model_call(request, node, provider, operation, cost)
        if pending.served is not None:
            response: ModelResponse = pending.served()
            return response
        try:
            with _live_call():
                raw = await call(pending.argument)
        except Exception as exc:
            pending.end(None, exc)
            raise
        live: ModelResponse = pending.end(raw, None)
        return live

    def _model_call(
        self,
        request: ModelRequest | Mapping[str, Any],
        node: str | None,
        provider: str,
        operation: str,
        cost: Callable[[ModelRequest, ModelResponse], Cost | None] | None,
    ) -> _Pending:
        """A model call: answered from the bundle, or to run live and then be recorded."""
        __tracebackhide__ = True
        req, node_id, ordinal, req_digest, req_json = self._begin_model(
            request, node, provider, operation
        )
        recorded = self._serve(node_id, ordinal, "model_io", req_digest, req_json)
        if recorded is not None:
            return _Pending(req, served=lambda: self._replayed_model(recorded, node_id, ordinal))
        started, at = time.perf_counter(), _now()

        def end(raw: Any, exc: BaseException | None) -> ModelResponse | None:
            response = None if exc is not None else _as_response(raw)
            priced = cost(req, response) if cost is not None and response is not None else None
            self._record_model(
                node_id,
                ordinal,
                provider,
                operation,
                req,
                req_digest,
                response,
                exc,
                priced,
                at,
                started,
            )
            return response

        return _Pending(req, end=end)

    def _begin_model(
        self,
        request: ModelRequest | Mapping[str, Any],
        node: str | None,
        provider: str,
        operation: str,
    ) -> tuple[ModelRequest, str, int, str, Any]:
        __tracebackhide__ = True  # its arguments may hold the secrets a strict scrubber found
        req = _as_request(request)
        node_id = self._node_for(node, f"{provider}.{operation}")
        self._check_node(node_id, "model_io")
        self._transition(node_id)
        # scrubbed before the digest, in record and replay alike; the call gets `req` as is
        req_json = self.scrubber.scrub_value(
            req.model_dump(mode="json"), where=f"the model_io request on node {node_id!r}"
        )
        return req, node_id, self._next_ordinal(node_id), digest(req_json), req_json

    def _scrubbed(self, model: BaseModel | None, where: str) -> Any:
        """``model`` as it is stored: secrets replaced (the same object when it has none)."""
        __tracebackhide__ = True
        if model is None:
            return None
        data = model.model_dump(mode="json")
        clean = self.scrubber.scrub_value(data, where=where)
        return model if clean is data else type(model).model_validate(clean)

    def _scrubbed_error(self, exc: BaseException, where: str) -> ErrorInfo:
        __tracebackhide__ = True
        info = _error_info(exc)
        message = self.scrubber.scrub_text(info.message, where=f"the error raised by {where}")
        return info if message is info.message else ErrorInfo(type=info.type, message=message)

    def _price(self, provider: str, req: ModelRequest, response: ModelResponse, at: str) -> Any:
        """The cost of a live call from the run's price table (``None`` when unknown)."""
        from .pricing import default_table, price

        table = self._prices if self._prices is not None else default_table()
        when = datetime.fromisoformat(at)
        for model in dict.fromkeys(m for m in (response.model, req.model) if m):
            cost = price(provider, model, response.usage, table=table, at=when)
            if cost is not None:
                return cost
        return None

    @property
    def prices(self) -> PriceTable:
        """The price table that prices this run's live model calls."""
        from .pricing import default_table

        return self._prices if self._prices is not None else default_table()

    def _record_model(
        self,
        node: str,
        ordinal: int,
        provider: str,
        operation: str,
        req: ModelRequest,
        req_digest: str,
        response: ModelResponse | None,
        exc: BaseException | None,
        cost: Cost | None,
        at: str,
        started: float,
    ) -> None:
        __tracebackhide__ = True
        if cost is None and response is not None:
            cost = self._price(provider, req, response, at)
        where = f"the model_io call on node {node!r}"
        self._append(
            ModelIOFact,
            node=node,
            ordinal=ordinal,
            provider=provider,
            operation=operation,
            request=self._scrubbed(req, f"{where} (request)"),
            request_digest=req_digest,
            response=self._scrubbed(response, f"{where} (response)"),
            error=self._scrubbed_error(exc, where) if exc else None,
            cost=cost,
            at=at,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    def _append_served(
        self, recorded: Any, *, kind: str = "", node: str = "", source_seq: int = 0
    ) -> None:
        """Record a call answered from the bundle: a reference to the recorded fact.

        The recorded fact, or its ``kind``, ``node`` and ``source_seq`` (its ``seq``)
        when the caller has them without reading it.
        """
        if recorded is not None:
            kind, node, source_seq = recorded.kind, recorded.node, recorded.seq
        trace_id, span_id = self.trace_ids()
        lane = self._here()
        with self._lock:
            seq = len(self._facts) + 1
            fields = {"seq": seq, "trace_id": trace_id, "span_id": span_id, "at": _now()}
            fields.update(self._patches.pop(source_seq, {}))
            served = _Served(kind, node, source_seq, self._replayed_facts(), fields)
            self._facts.append(served)
            self._lanes.append(lane)

    def _replayed_facts(self) -> Sequence[Any]:
        return self.index.facts if self.index is not None else ()

    def _replayed_model(self, recorded: Any, node: str, ordinal: int) -> ModelResponse:
        __tracebackhide__ = True
        self._append_served(recorded)
        if recorded.error is not None:
            raise _rebuild(recorded.error)
        assert recorded.response is not None
        response: ModelResponse = recorded.response
        return response

    def tool_call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        call: Callable[[], T],
        *,
        node: str | None = None,
        result_type: Any = None,
    ) -> T:
        """Record one tool call: ``call()`` runs live or its result comes from the bundle.

        ``result_type`` (a type pydantic can validate) rebuilds the recorded JSON result
        into the type the live function returns.
        """
        __tracebackhide__ = True
        pending = self._tool_call(tool, arguments, node, result_type)
        if pending.served is not None:
            return typing.cast(T, pending.served())
        try:
            with _live_call():
                result = call()
        except Exception as exc:
            pending.end(None, exc)
            raise
        return typing.cast(T, pending.end(result, None))

    async def atool_call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        call: Callable[[], Awaitable[T]],
        *,
        node: str | None = None,
        result_type: Any = None,
    ) -> T:
        """:meth:`tool_call` for an async ``call``."""
        __tracebackhide__ = True
        pending = self._tool_call(tool, arguments, node, result_type)
        if pending.served is not None:
            return typing.cast(T, pending.served())
        try:
            with _live_call():
                result = await call()
        except Exception as exc:
            pending.end(None, exc)
            raise
        return typing.cast(T, pending.end(result, None))

    def _tool_call(
        self, tool: str, arguments: Mapping[str, Any], node: str | None, result_type: Any
    ) -> _Pending:
        """A tool call: answered from the bundle, or to run live and then be recorded."""
        __tracebackhide__ = True
        node_id, ordinal, args, req_digest = self._begin_tool(tool, arguments, node)
        request = {"tool": tool, "arguments": args}
        recorded = self._serve(node_id, ordinal, "tool_call", req_digest, request)
        if recorded is not None:
            return _Pending(
                None, served=lambda: self._replayed_tool(recorded, node_id, ordinal, result_type)
            )
        started, at = time.perf_counter(), _now()

        def end(result: Any, exc: BaseException | None) -> Any:
            self._record_tool(node_id, ordinal, tool, args, req_digest, result, exc, at, started)
            return result

        return _Pending(None, end=end)

    def _begin_tool(
        self, tool: str, arguments: Mapping[str, Any], node: str | None
    ) -> tuple[str, int, dict[str, Any], str]:
        __tracebackhide__ = True  # its arguments may hold the secrets a strict scrubber found
        node_id = self._node_for(node, tool)
        self._check_node(node_id, "tool_call")
        self._transition(node_id)
        # scrubbed before the digest, in record and replay alike; the tool runs with its own
        args = self.scrubber.scrub_value(
            to_jsonable_python(dict(arguments)),
            where=f"the arguments of tool {tool!r} on node {node_id!r}",
        )
        return node_id, self._next_ordinal(node_id), args, digest({"tool": tool, "arguments": args})

    def _record_tool(
        self,
        node: str,
        ordinal: int,
        tool: str,
        args: dict[str, Any],
        req_digest: str,
        result: Any,
        exc: BaseException | None,
        at: str,
        started: float,
    ) -> None:
        __tracebackhide__ = True
        self._append(
            ToolCallFact,
            node=node,
            ordinal=ordinal,
            tool=tool,
            arguments=args,
            request_digest=req_digest,
            result=None
            if exc
            else self.scrubber.scrub_value(
                to_jsonable_python(result), where=f"the result of tool {tool!r} on node {node!r}"
            ),
            error=self._scrubbed_error(exc, f"tool {tool!r} on node {node!r}") if exc else None,
            at=at,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    def _replayed_tool(self, recorded: Any, node: str, ordinal: int, result_type: Any) -> Any:
        __tracebackhide__ = True
        self._append_served(recorded)
        if recorded.error is not None:
            raise _rebuild(recorded.error)
        if result_type is None:
            return recorded.result
        try:
            return _adapter(result_type).validate_python(recorded.result)
        except ValidationError as exc:
            from .exceptions import ResultTypeError

            err = exc.errors(include_url=False)[0]
            where = ".".join(map(str, err["loc"])) or "(the result)"
            error = ResultTypeError(
                f"the recorded result of tool {recorded.tool!r} (node {node!r}, "
                f"{nth(ordinal)}) no longer fits its return type {result_type!r}: "
                f"{where}: {err['msg']}\n  bundle: {self._source()}",
                fix=self._fix(),
            )
            if self.index is not None:
                self.index.raised.append(error)
            raise error from None

    # -- artifacts and gates -------------------------------------------------------------------

    def artifact(
        self,
        name: str,
        value: Any,
        *,
        node: str | None = None,
        derived_from: Sequence[int] | None = None,
        schema: Any = None,
        supersedes: int | None = None,
    ) -> ArtifactFact:
        """Record a revision of artifact ``name``: a pydantic model, or JSON and its schema.

        ``schema`` (a pydantic model class, any type pydantic validates, or a JSON
        Schema dict) validates a JSON ``value``; a pydantic ``value`` is its own schema.
        ``derived_from`` defaults to the model and tool calls of the producing node and
        the DAG nodes upstream of it. Raises :class:`ArtifactSchemaError` when the value
        does not validate.
        """
        __tracebackhide__ = True
        node_id = self._node_for(node, name)
        self._check_node(node_id, "artifact")
        content, schema_ref, schema_digest = _artifact_content(name, value, schema)
        content = self.scrubber.scrub_value(content, where=f"artifact {name!r}")
        with self._lock:
            revision = self._artifact_revisions.get(name, 0) + 1
            self._artifact_revisions[name] = revision
            if isinstance(value, BaseModel):
                self._artifact_schemas[name] = type(value)
            elif schema is not None:
                self._artifact_schemas[name] = schema
            sources = list(derived_from) if derived_from is not None else self._lineage(node_id)
        return self._append(
            ArtifactFact,
            node=node_id,
            name=name,
            revision=revision,
            content=content,
            content_digest=digest(content),
            schema_ref=schema_ref,
            schema_digest=schema_digest,
            derived_from=sources,
            supersedes=supersedes,
            at=_now(),
        )

    def _lineage(self, node: str) -> list[int]:
        """Seqs of the model and tool calls on ``node`` and the DAG nodes upstream of it."""
        upstream = self.upstream(node)
        return [
            item.seq
            for item in self._facts
            if item.kind in ("model_io", "tool_call")
            and (upstream is None or item.node in upstream)
        ]

    def upstream(self, node: str) -> set[str] | None:
        """``node`` and every DAG node with a path to it; ``None`` when there are no edges."""
        return upstream_nodes(self._dag, node) if self._dag is not None else None

    def gate(
        self,
        gate_id: str,
        *,
        reviewer: Any,
        subject: Any = None,
        policy: PolicyRef | str | None = None,
        node: str | None = None,
    ) -> GateFact:
        """Stop at gate ``gate_id``; the reviewer decides and the decision is recorded.

        ``subject`` is what is reviewed: an :class:`ArtifactFact` of this run (the
        decision binds to its revision and digest), a :class:`ToolCallFact` of this run,
        or any JSON value. ``reviewer`` is a reviewer object (see
        :mod:`pytest_llmwb.reviewers`) or a callable ``reviewer(subject)``. An
        ``edited`` decision about an artifact records the edit as its next revision.

        In replay the recorded decision is served and the reviewer is not asked; a
        decision scripted with ``gate_decisions`` overrides both. A reviewer that raises
        is recorded as ``escalated`` (never as an approval) with an error fact.
        """
        __tracebackhide__ = True
        node_id = node or gate_id
        self._check_node(node_id, "gate")
        self._transition(node_id)
        subject_ref, subject_value = self._subject(gate_id, subject)
        policy_ref = PolicyRef(id=policy) if isinstance(policy, str) else policy
        request = {
            "gate_id": gate_id,
            "subject": subject_ref.model_dump(mode="json") if subject_ref else None,
            "policy": policy_ref.model_dump(mode="json") if policy_ref else None,
        }
        ordinal = self._next_ordinal(node_id)
        scripted = self._scripted.get(gate_id)
        recorded = None
        if scripted is None:
            recorded = self._serve(node_id, ordinal, "gate", digest(request), request)
        elif self.index is not None:
            recorded = self.index.lookup(node_id, ordinal, "gate", digest(request), request)
        if scripted is not None:
            self._scripted_used.add(gate_id)
            decision = as_decision(
                scripted,
                Reviewer(id="scripted", kind="test"),
                where=f"scripted decision for gate {gate_id!r}",
            )
            if decision.reason is None:
                decision = decision.model_copy(
                    update={"reason": f"scripted decision for gate {gate_id!r}"}
                )
            if recorded is not None and recorded.decision != decision.decision:
                assert self.index is not None
                self.index.context.append(
                    f"gate {gate_id!r} was scripted to {decision.decision!r} but this bundle "
                    f"recorded {recorded.decision!r}: the calls of that branch are not in it. "
                    "Record the branch as a bundle of its own: give this test a bundle "
                    "name no other test uses (@pytest.mark.llmwb(bundle='a-new-name'), or "
                    "none for the default) and run it with --llmwb-record"
                )
        elif recorded is not None:
            decision = GateDecision(
                decision=recorded.decision,
                reviewer=recorded.reviewer,
                reason=recorded.reason,
                edit=recorded.edit,
                signature=recorded.signature,
            )
        else:
            from .reviewers import GateRequest

            decision = self._ask(
                reviewer,
                GateRequest(gate_id, subject_value, subject_ref, policy_ref, self.name),
                node_id,
            )
        fact = self._append(
            GateFact,
            node=node_id,
            ordinal=ordinal,
            gate_id=gate_id,
            policy=policy_ref,
            subject=subject_ref,
            decision=decision.decision,
            reviewer=decision.reviewer,
            reason=decision.reason,
            edit=decision.edit,
            signature=decision.signature,
            at=_now(),
        )
        if decision.decision == "edited" and isinstance(subject, ArtifactFact):
            self.artifact(
                subject.name,
                decision.edit,
                node=subject.node,
                derived_from=[*subject.derived_from, fact.seq],
                schema=self._artifact_schemas.get(subject.name),
                supersedes=subject.seq,
            )
        return fact

    def _ask(self, reviewer: Any, request: Any, node: str) -> GateDecision:
        """Ask a reviewer; a reviewer that raises gives a recorded ``escalated`` decision."""
        __tracebackhide__ = True
        from .reviewers import ask

        decision, exc = ask(reviewer, request)
        if exc is not None:
            self._append(ErrorFact, node=node, at=_now(), **_error_info(exc).model_dump())
        return decision

    def _subject(self, gate_id: str, subject: Any) -> tuple[SubjectRef | None, Any]:
        """The reference and the reviewed value of a gate subject produced by this run."""
        __tracebackhide__ = True
        if subject is None:
            return None, None
        if isinstance(subject, (ArtifactFact, ToolCallFact)):
            produced = (
                0 < subject.seq <= len(self._facts)
                and _load(self._facts[subject.seq - 1]) == subject
            )
            if not produced:
                what = (
                    f"artifact {subject.name!r} revision {subject.revision}"
                    if isinstance(subject, ArtifactFact)
                    else f"tool call {subject.tool!r} (seq {subject.seq})"
                )
                have = ", ".join(f"{n} rev {f.revision}" for n, f in self.artifacts.items())
                from .exceptions import GateSubjectError

                raise GateSubjectError(
                    f"gate {gate_id!r}: the subject, {what}, was not produced by run "
                    f"{self.name!r} (latest artifacts: {have or 'none'})",
                    fix="pass the ArtifactFact returned by run.artifact(...) in this run",
                )
            if isinstance(subject, ArtifactFact):
                ref = SubjectRef(
                    kind="artifact",
                    digest=subject.content_digest,
                    name=subject.name,
                    revision=subject.revision,
                    seq=subject.seq,
                )
                return ref, subject.content
            ref = SubjectRef(
                kind="tool_call", digest=subject.request_digest, name=subject.tool, seq=subject.seq
            )
            return ref, {"tool": subject.tool, "arguments": subject.arguments}
        value = self.scrubber.scrub_value(
            to_jsonable_python(subject), where=f"the subject of gate {gate_id!r}"
        )
        return SubjectRef(kind="value", digest=digest(value), value=value), value

    # -- results ------------------------------------------------------------------------------

    @property
    def gates(self) -> dict[str, GateFact]:
        """The last decision of each gate, by gate id."""
        return {f.gate_id: f for f in self._iter("gate")}

    @property
    def artifacts(self) -> dict[str, ArtifactFact]:
        """The latest revision of each artifact, by name."""
        return {f.name: f for f in self._iter("artifact")}

    def revisions(self, name: str) -> list[ArtifactFact]:
        """Every revision of artifact ``name``, oldest first."""
        return [f for f in self._iter("artifact") if f.name == name]

    @property
    def model_calls(self) -> list[ModelIOFact]:
        """All model_io receipts, in order."""
        return list(self._iter("model_io"))

    @property
    def tool_calls(self) -> list[ToolCallFact]:
        """All tool calls, in order."""
        return list(self._iter("tool_call"))

    @property
    def usage(self) -> Usage:
        """Tokens summed over every model call."""
        totals = dict.fromkeys(
            (
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "reasoning_output_tokens",
            ),
            0,
        )
        for fact in self.model_calls:
            for key in totals:
                totals[key] += getattr(fact.usage, key)
        return Usage.model_validate(totals)

    @property
    def cost(self) -> CostSummary:
        """Tokens and recorded cost: in total, per node and per artifact revision."""
        from .costs import summarize

        return summarize(self._iter("model_io", "artifact"))

    def check_complete(self, *, opt_out: str = "do not call check_complete() for this run") -> None:
        """In replay, raise if recorded calls were never made (see ``ReplayIndex``)."""
        __tracebackhide__ = True
        if self.index is not None and self.mode in ("replay", "verify"):
            self.index.check_all_used(opt_out=opt_out)

    @property
    def unused_scripted_gates(self) -> list[str]:
        """Gates given a scripted decision that never fired."""
        return sorted(set(self._scripted) - self._scripted_used)

    # -- the adapter API: what capture layers use for the calls they intercept ----------------

    def resolve_node(self, node: str | None, default: str, kind: str) -> str:
        """The node a call belongs to: ``node``, else the enclosing step, else ``default``.

        Raises :class:`UndeclaredNodeError` when a declared DAG lacks it.
        """
        __tracebackhide__ = True
        node_id = self._node_for(node, default)
        self._check_node(node_id, kind)
        self._transition(node_id)
        return node_id

    def next_ordinal(self, node: str) -> int:
        """Reserve the next call ordinal on ``node``."""
        return self._next_ordinal(node)

    def serve(self, node: str, ordinal: int, kind: str, request_digest: str, request: Any) -> Any:
        """The recorded call fact that answers this call, or ``None`` to go live.

        Follows the run's mode: in ``replay`` a mismatch raises the drift it shows; in
        ``new`` a mismatch returns ``None``; in ``verify`` the request is checked and
        ``None`` is returned; in ``record`` it is always ``None``.
        """
        __tracebackhide__ = True
        return self._serve(node, ordinal, kind, request_digest, request)

    def append(self, cls: type[FactT], **fields: Any) -> FactT:
        """Append a fact of type ``cls``; ``seq`` and the trace ids are filled in."""
        return self._append(cls, **fields)

    def append_deferred(
        self,
        node: str,
        build: Callable[[dict[str, Any]], Any],
        *,
        trace: tuple[str | None, str | None] | None = None,
    ) -> Any:
        """Take the next ``seq`` for a fact on ``node`` that ``build(fields)`` makes later.

        ``fields`` holds ``seq``, ``trace_id`` and ``span_id`` (``trace``, else the
        current span's, as :meth:`trace_ids` gives them); the fact is built once, when
        first read. Returns the handle, whose ``load()`` builds it.
        """
        trace_id, span_id = trace if trace is not None else self.trace_ids()
        lane = self._here()
        with self._lock:
            fields = {"seq": len(self._facts) + 1, "trace_id": trace_id, "span_id": span_id}
            entry = _Deferred(node, fields, build)
            self._facts.append(entry)
            self._lanes.append(lane)
        return entry

    def trace_ids(self) -> tuple[str | None, str | None]:
        """Trace and span ids for a fact recorded now, or ``(None, None)``.

        The active OpenTelemetry span's, else the run's :attr:`trace_context`.
        """
        ids = active_ids()
        if ids is not None:
            return ids
        context = self.trace_context
        return (context.trace_id, context.span_id) if context is not None else (None, None)

    def append_served(self, recorded: Any) -> None:
        """Append a call answered from the bundle: ``recorded`` is what :meth:`serve` gave."""
        self._append_served(recorded)

    def serve_exact(self, node: str, ordinal: int) -> str | None:
        """Serve the call recorded at ``(node, ordinal)`` by its stored HTTP exchange.

        For a capture layer that has checked that the request is byte for byte the
        recorded one (so its digest is the recorded digest, unread): the call is taken
        and appended as served, without reading its fact. Returns the exchange's ref,
        or ``None`` (nothing taken) when there is no such unserved captured call.
        """
        index = self.index
        if index is None or self.mode not in ("replay", "new"):
            return None
        key = (node, ordinal)
        entry = index.calls.get(key)
        ref = index.exchanges.get(key)
        if entry is None or ref is None or key in index.consumed:
            return None
        index.consumed.add(key)
        self._append_served(None, kind=entry[0], node=node, source_seq=entry[2])
        return ref

    def exchange_ref(self, node: str, ordinal: int) -> str | None:
        """The stored HTTP exchange of the call recorded at ``(node, ordinal)``, if any."""
        return self.index.exchanges.get((node, ordinal)) if self.index is not None else None

    def add_blob(self, data: bytes, *, scrubbed: bool = False) -> str:
        """Keep ``data`` as a content-addressed blob of this run; returns its digest.

        Secrets of a known shape are scrubbed first (so the digest is of what is kept);
        structure-aware scrubbing (headers, JSON fields) is the caller's, before this.
        ``scrubbed`` says the caller already scrubbed every part of ``data`` with this
        run's scrubber (HTTP capture does), which saves a second pass.
        """
        __tracebackhide__ = True
        from .codec import digest_bytes

        if not scrubbed:
            data = self.scrubber.scrub_bytes(data, where=f"a blob of run {self.name!r}")
        ref = digest_bytes(data)
        self._blobs[ref] = data
        return ref

    def blob(self, ref: str) -> bytes:
        """A blob of this run, or of the bundle it replays."""
        kept = self._blobs.get(ref)
        if kept is not None:
            return kept
        if self._replayed is None:
            raise LlmwbError(f"run {self.name!r} has no blob {ref}")
        data: bytes = self._replayed.blob(ref)
        self._blobs[ref] = data
        return data

    def save(self, path: str | Path, *, keep_unchanged: bool = False) -> Any:
        """Write the run as a bundle directory (atomically) and return the :class:`Bundle`.

        ``keep_unchanged`` leaves a bundle at ``path`` that already holds this run
        (same DAG, facts and blobs) untouched, ``volatile.json`` included.
        """
        __tracebackhide__ = True
        from .store import write_bundle

        facts = self.facts
        refs = {f.exchange for f in facts if getattr(f, "exchange", None)}
        blobs = {ref: self.blob(ref) for ref in sorted(refs)}
        return write_bundle(
            path,
            blobs=blobs,
            name=self.name,
            dag=self.dag,
            facts=facts,
            labels=self.labels,
            volatile_run=self._volatile_run(),
            scrubber=self.scrubber,
            keep_unchanged=keep_unchanged,
        )

    def _volatile_run(self) -> dict[str, Any]:
        run: dict[str, Any] = {"started_at": self.started_at, "finished_at": _now()}
        run["mode"] = self.mode
        if self.trace_context is not None:
            run["trace_id"] = self.trace_context.trace_id
            run["span_id"] = self.trace_context.span_id
        return run


_NODE_KIND = {"model_io": "model", "tool_call": "tool", "gate": "gate"}


class _Pending:
    """One call of a run, shared by the sync and async variants of each call.

    ``served`` answers it from the bundle; otherwise the caller runs it live with
    ``argument`` and reports the outcome to ``end(result, exc)``, which records it.
    """

    __slots__ = ("argument", "end", "served")

    def __init__(
        self,
        argument: Any,
        *,
        served: Callable[[], Any] | None = None,
        end: Callable[[Any, BaseException | None], Any] | None = None,
    ) -> None:
        self.argument = argument
        self.served = served
        self.end: Callable[[Any, BaseException | None], Any] = end or (lambda r, e: r)


class _Served:
    """A call fact answered from the bundle, kept as a reference to the recorded fact.

    A replayed run of 100,000 calls would otherwise hold 100,000 rebuilt pydantic
    facts; this holds the recorded fact's place in the (lazily loaded) bundle and the
    few fields that differ, and rebuilds the fact when it is read.
    """

    __slots__ = ("fields", "kind", "node", "seq", "source", "source_seq")

    def __init__(
        self, kind: str, node: str, source_seq: int, source: Sequence[Any], fields: dict[str, Any]
    ) -> None:
        self.kind = kind
        self.node = node
        self.seq: int = fields["seq"]
        self.source_seq = source_seq
        self.source = source
        self.fields = {**fields, "duration_ms": 0.0}

    def load(self) -> Any:
        return self.source[self.source_seq - 1].model_copy(update=self.fields)


class _Deferred:
    """A fact whose place (``seq``) is taken now and whose content is built when read.

    HTTP capture keeps the call path to copying bytes: parsing, scrubbing, digests and
    pricing happen when the run's facts are first read, when capture ends, or when the
    run is saved. ``build(fields)`` makes the fact from ``seq`` and the trace ids.
    """

    __slots__ = ("_build", "_fact", "_lock", "failed", "fields", "node")

    def __init__(self, node: str, fields: dict[str, Any], build: Callable[..., Any]) -> None:
        self.node = node
        self.fields = fields
        self._build: Callable[..., Any] | None = build
        self._fact: Any = None
        self._lock = threading.Lock()
        #: building it raised (a secret under a strict scrubber): it raises on every read
        self.failed = False

    @property
    def seq(self) -> int:
        seq: int = self.fields["seq"]
        return seq

    @property
    def kind(self) -> str:
        kind: str = self.load().kind
        return kind

    def load(self) -> Any:
        fact = self._fact
        if fact is None:
            with self._lock:
                if self._fact is None:
                    assert self._build is not None
                    try:
                        self._fact = self._build(self.fields)
                    except BaseException:
                        self.failed = True
                        raise
                    self._build = None
                fact = self._fact
        return fact


_LAZY = (_Served, _Deferred)


def _load(item: Any) -> Any:
    return item.load() if type(item) in _LAZY else item


def check_dag_drift(recorded: DagSnapshot, live: DagSnapshot, *, source: str, fix: str) -> None:
    """Raise :class:`DagDriftError` naming every node and edge that changed."""
    __tracebackhide__ = True
    if recorded.digest == live.digest:
        return
    lines: list[str] = []
    if recorded.name != live.name:
        lines.append(f"DAG name: {recorded.name!r} -> {live.name!r}")
    old = {n.id: n for n in recorded.nodes}
    new = {n.id: n for n in live.nodes}
    for node_id in [n for n in old if n not in new]:
        lines.append(f"node {node_id!r} removed")
    for node_id in [n for n in new if n not in old]:
        lines.append(f"node {node_id!r} added ({new[node_id].kind})")
    for node_id in [n for n in new if n in old and new[n].digest != old[n].digest]:
        a, b = old[node_id], new[node_id]
        if a.kind != b.kind:
            lines.append(f"node {node_id!r}: kind {a.kind} -> {b.kind}")
        for key in sorted(set(a.config) | set(b.config)):
            if a.digests.get(key) != b.digests.get(key):
                before, after = a.config.get(key, "<absent>"), b.config.get(key, "<absent>")
                if (
                    isinstance(before, str)
                    and isinstance(after, str)
                    and max(len(before), len(after)) > 60
                ):
                    old_text, new_text = text_window(before, after)
                    lines.append(f"node {node_id!r}: config {key!r} changed:")
                    lines.append(f"  - {old_text}")
                    lines.append(f"  + {new_text}")
                else:
                    lines.append(
                        f"node {node_id!r}: config {key!r} changed: "
                        f"{short(before, 120)} -> {short(after, 120)}"
                    )
    old_edges = {(e.source, e.target) for e in recorded.edges}
    new_edges = {(e.source, e.target) for e in live.edges}
    lines += [f"edge {s!r} -> {t!r} removed" for s, t in sorted(old_edges - new_edges)]
    lines += [f"edge {s!r} -> {t!r} added" for s, t in sorted(new_edges - old_edges)]
    if not lines:
        lines.append("the node order changed")
    body = "\n".join(f"    {line}" for line in lines)
    raise DagDriftError(
        f"DAG drift: the declared DAG {live.name!r} differs from the recorded snapshot\n"
        f"{body}\n  bundle: {source}",
        fix=fix,
    )


def text_window(old: str, new: str, width: int = 100) -> tuple[str, str]:
    """Excerpts of two long texts around their first difference, one line each."""
    prefix = 0
    for x, y in zip(old, new, strict=False):
        if x != y:
            break
        prefix += 1
    start = max(0, prefix - 30)

    def cut(text: str) -> str:
        piece = text[start : start + width].replace("\n", "\\n")
        return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")

    return cut(old), cut(new)


def _as_request(raw: ModelRequest | Mapping[str, Any]) -> ModelRequest:
    return raw if isinstance(raw, ModelRequest) else ModelRequest.model_validate(raw)


def _as_response(raw: ModelResponse | Mapping[str, Any]) -> ModelResponse:
    return raw if isinstance(raw, ModelResponse) else ModelResponse.model_validate(raw)


def upstream_nodes(dag: DagSnapshot, node: str) -> set[str] | None:
    """``node`` and every node of ``dag`` with a path to it; ``None`` when it has no edges."""
    if not dag.edges:
        return None
    parents: dict[str, set[str]] = {}
    for edge in dag.edges:
        parents.setdefault(edge.target, set()).add(edge.source)
    found = {node}
    stack = [node]
    while stack:
        for parent in parents.get(stack.pop(), ()):
            if parent not in found:
                found.add(parent)
                stack.append(parent)
    return found


def _artifact_content(name: str, value: Any, schema: Any) -> tuple[Any, str | None, str | None]:
    """The JSON content of an artifact, its schema reference and schema digest."""
    __tracebackhide__ = True
    from pydantic import ValidationError

    from .exceptions import ArtifactSchemaError

    if isinstance(value, BaseModel):
        cls = type(value)
        return (
            value.model_dump(mode="json"),
            f"{cls.__module__}:{cls.__qualname__}",
            digest(cls.model_json_schema()),
        )
    if schema is None:
        return to_jsonable_python(value), None, None
    if isinstance(schema, dict):
        try:
            import jsonschema
        except ImportError:  # pragma: no cover - jsonschema is a dependency
            raise ArtifactSchemaError(
                "validating against a JSON Schema needs the jsonschema package",
                fix="pip install jsonschema",
            ) from None
        content = to_jsonable_python(value)
        error = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(content)
        )
        if error is not None:
            path = "/" + "/".join(map(str, error.absolute_path))
            raise ArtifactSchemaError(
                f"artifact {name!r} does not match its JSON Schema at {path}: {error.message}",
                fix="fix the value, or the schema if the value is right",
            )
        return content, schema.get("$id") or schema.get("title"), digest(schema)
    try:
        validated = _adapter(schema).validate_python(value)
    except ValidationError as exc:
        lines = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:5]
        )
        raise ArtifactSchemaError(
            f"artifact {name!r} does not match {getattr(schema, '__qualname__', schema)}: {lines}",
            fix="fix the value, or the schema if the value is right",
        ) from None
    if isinstance(validated, BaseModel):
        return _artifact_content(name, validated, None)
    return to_jsonable_python(validated), str(schema), digest(_adapter(schema).json_schema())


@functools.lru_cache(maxsize=256)
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


# --- decorators ---------------------------------------------------------------------------


def _return_type(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    ret = hints.get("return")
    if ret is None or ret is type(None) or ret is Any:
        return None
    origin = typing.get_origin(ret)
    if origin is not None and getattr(origin, "__name__", "") in ("Coroutine", "Awaitable"):
        args = typing.get_args(ret)
        return args[-1] if args else None
    return ret


@overload
def model(fn: F, /) -> F: ...
@overload
def model(
    *,
    node: str | None = None,
    provider: str = "custom",
    operation: str = "chat",
    cost: Callable[[ModelRequest, ModelResponse], Cost | None] | None = None,
) -> Callable[[F], F]: ...
def model(
    fn: F | None = None,
    /,
    *,
    node: str | None = None,
    provider: str = "custom",
    operation: str = "chat",
    cost: Callable[[ModelRequest, ModelResponse], Cost | None] | None = None,
) -> F | Callable[[F], F]:
    """Instrument a model function ``(request: ModelRequest, ...) -> ModelResponse``.

    Inside a run each call is recorded (or served in replay) as a model_io fact on
    ``node`` (default: the enclosing step, else the function's name). ``cost``
    prices each live response when it is recorded. Outside any run the function
    just runs. Works on sync and async functions.
    """

    def decorate(func: F) -> F:
        default = node or func.__name__
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                run = current_run()
                if run is None:
                    return _as_response(await func(_as_request(request), *args, **kwargs))
                return await run.amodel_io(
                    request,
                    lambda r: func(r, *args, **kwargs),
                    node=node or _node.get() or default,
                    provider=provider,
                    operation=operation,
                    cost=cost,
                )

            return typing.cast(F, awrapper)

        @functools.wraps(func)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            run = current_run()
            if run is None:
                return _as_response(func(_as_request(request), *args, **kwargs))
            return run.model_io(
                request,
                lambda r: func(r, *args, **kwargs),
                node=node or _node.get() or default,
                provider=provider,
                operation=operation,
                cost=cost,
            )

        return typing.cast(F, wrapper)

    return decorate(fn) if fn is not None else decorate


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(*, node: str | None = None, name: str | None = None) -> Callable[[F], F]: ...
def tool(
    fn: F | None = None, /, *, node: str | None = None, name: str | None = None
) -> F | Callable[[F], F]:
    """Instrument a tool function: each call inside a run becomes a tool_call fact.

    Arguments are recorded by parameter name; in replay the recorded result is
    validated back into the function's return annotation, so callers get the same
    type they get live. ``node`` defaults to the tool's name.
    """

    def decorate(func: F) -> F:
        tool_name = name or func.__name__
        node_id = node or tool_name
        signature = inspect.signature(func)
        skip_first = next(iter(signature.parameters), None) in ("self", "cls")
        result_type: list[Any] = []  # resolved on first use: annotations may be forward refs

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            if skip_first:
                values.pop(next(iter(values)))
            return values

        def rtype() -> Any:
            if not result_type:
                result_type.append(_return_type(func))
            return result_type[0]

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                run = current_run()
                if run is None:
                    return await func(*args, **kwargs)
                return await run.atool_call(
                    tool_name,
                    arguments(args, kwargs),
                    lambda: func(*args, **kwargs),
                    node=node_id,
                    result_type=rtype(),
                )

            return typing.cast(F, awrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            run = current_run()
            if run is None:
                return func(*args, **kwargs)
            return run.tool_call(
                tool_name,
                arguments(args, kwargs),
                lambda: func(*args, **kwargs),
                node=node_id,
                result_type=rtype(),
            )

        return typing.cast(F, wrapper)

    return decorate(fn) if fn is not None else decorate


def step(node: str) -> Callable[[F], F]:
    """Run a function as DAG node ``node`` (a no-op outside any run)."""

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                run = current_run()
                if run is None:
                    return await func(*args, **kwargs)
                with run.step(node):
                    return await func(*args, **kwargs)

            return typing.cast(F, awrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            run = current_run()
            if run is None:
                return func(*args, **kwargs)
            with run.step(node):
                return func(*args, **kwargs)

        return typing.cast(F, wrapper)

    return decorate


def gate(
    gate_id: str,
    *,
    reviewer: Any,
    subject: Any = None,
    policy: PolicyRef | str | None = None,
    node: str | None = None,
) -> GateDecision:
    """Stop at a gate in the current run (see :meth:`Run.gate`) and return the decision.

    Outside any run the reviewer is asked the same way (reviewer objects or callables,
    the same accepted answers, a raising reviewer gives ``escalated``); nothing is
    recorded.
    """
    __tracebackhide__ = True
    run = current_run()
    if run is None:
        from .reviewers import GateRequest, ask

        if isinstance(subject, BaseModel):
            subject = subject.model_dump(mode="json")
        ref = PolicyRef(id=policy) if isinstance(policy, str) else policy
        return ask(reviewer, GateRequest(gate_id, subject, None, ref, "(no run)"))[0]
    fact = run.gate(gate_id, reviewer=reviewer, subject=subject, policy=policy, node=node)
    return GateDecision(
        decision=fact.decision, reviewer=fact.reviewer, reason=fact.reason, edit=fact.edit
    )


def artifact(
    name: str,
    value: Any,
    *,
    node: str | None = None,
    derived_from: Sequence[int] | None = None,
    schema: Any = None,
) -> ArtifactFact | None:
    """Record a revision of an artifact in the current run (see :meth:`Run.artifact`).

    Returns ``None`` outside any run.
    """
    __tracebackhide__ = True
    run = current_run()
    if run is None:
        return None
    return run.artifact(name, value, node=node, derived_from=derived_from, schema=schema)


def require_run() -> Run:
    """The current run, or :class:`NoActiveRunError` saying how to start one."""
    run = current_run()
    if run is None:
        raise NoActiveRunError(
            "no llmwb run is active here",
            fix="use the llmwb fixture in the test, or wrap the code in `with Run(...):`",
        )
    return run
