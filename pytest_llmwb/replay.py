"""Serving a replayed run's calls from a bundle, and naming every kind of drift.

Each call is keyed by ``(node, ordinal)``: the DAG node it belongs to and its position
among the calls on that node. The recorded request digest is the check. Lookups are
dict accesses, O(1) per call, whatever the size of the bundle.

Calls recorded as ``concurrent`` (made from threads or tasks of the run, whose order is
not defined: see :mod:`pytest_llmwb.sequencing`) are paired with live calls by request
digest within their node instead: identical requests are served in recorded order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .codec import pointer_changes
from .exceptions import (
    MissingCallsError,
    OrderDriftError,
    PayloadDriftError,
    ReplayDriftError,
    UnexpectedCallError,
)
from .schema import GateFact, ModelIOFact, ToolCallFact

__all__ = ["ReplayIndex", "nth", "short"]

CallFact = ModelIOFact | ToolCallFact | GateFact


def nth(ordinal: int) -> str:
    """``0`` -> ``"1st call"``: ordinals are 0-based, people count from one."""
    n = ordinal + 1
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} call"


def short(value: Any, width: int = 80) -> str:
    """A one-line ``repr`` of a JSON value, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe(fact: CallFact) -> str:
    """A one-line description of a recorded call."""
    if isinstance(fact, ModelIOFact):
        return f"model_io {fact.provider}/{fact.request.model}"
    if isinstance(fact, ToolCallFact):
        return f"tool_call {fact.tool}({short(fact.arguments, 60)})"
    return f"gate {fact.gate_id}"


def call_request(fact: CallFact) -> Any:
    """The JSON the request digest of a recorded call was computed over."""
    if isinstance(fact, ModelIOFact):
        return fact.request.model_dump(mode="json")
    if isinstance(fact, ToolCallFact):
        return {"tool": fact.tool, "arguments": fact.arguments}
    return {
        "gate_id": fact.gate_id,
        "subject": fact.subject.model_dump(mode="json") if fact.subject else None,
        "policy": fact.policy.model_dump(mode="json") if fact.policy else None,
    }


def call_digest(fact: CallFact) -> str:
    """The recorded request digest (gates keep theirs implicitly)."""
    if isinstance(fact, GateFact):
        from .codec import digest

        return digest(call_request(fact))
    return fact.request_digest


@dataclass
class ReplayIndex:
    """The calls of a recorded run, keyed by ``(node, ordinal)``.

    ``calls`` maps each key to ``(kind, request digest, seq)``; the recorded facts
    themselves are read from ``facts`` (by ``seq``) only when a call is served, so an
    index over a lazily loaded bundle stays small. ``source`` names the bundle in
    messages; ``fix`` is the command that re-records it; ``context`` is extra text
    appended to drift messages (e.g. a scripted gate branch).
    """

    facts: Sequence[Any]
    calls: dict[tuple[str, int], tuple[str, str, int]] = field(default_factory=dict)
    source: str = "the bundle"
    fix: str | None = None
    consumed: set[tuple[str, int]] = field(default_factory=set)
    context: list[str] = field(default_factory=list)
    #: Lenient replay: a drifted call is answered with the call recorded at its place
    #: and its drift kept in :attr:`drifts`, instead of raising.
    lenient: bool = False
    drifts: list[ReplayDriftError] = field(default_factory=list)
    #: Drift errors raised to the host code, in the order raised (a test that catches
    #: one still fails: see the plugin's teardown checks).
    raised: list[ReplayDriftError] = field(default_factory=list)
    #: The stored HTTP exchange of each captured call, by ``(node, ordinal)``.
    exchanges: dict[tuple[str, int], str] = field(default_factory=dict)
    _by_digest: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    _per_node: dict[str, int] = field(default_factory=dict)
    #: Ordinals of the concurrent calls not yet served, by (node, request digest).
    _concurrent: dict[tuple[str, str], deque[int]] = field(default_factory=dict)

    @classmethod
    def from_facts(
        cls, facts: Sequence[Any], *, source: str = "the bundle", fix: str | None = None
    ) -> ReplayIndex:
        """Index the call facts (model_io, tool_call, gate) of a recorded run."""
        index = cls(facts, source=source, fix=fix)
        for fact in facts:
            index.add(fact)
        return index

    def add(self, fact: Any) -> None:
        """Index one recorded fact (facts that are not calls are ignored)."""
        if isinstance(fact, (ModelIOFact, ToolCallFact, GateFact)):
            request_digest = call_digest(fact)
            self.calls[(fact.node, fact.ordinal)] = (fact.kind, request_digest, fact.seq)
            exchange = getattr(fact, "exchange", None)
            if exchange is not None:
                self.exchanges[(fact.node, fact.ordinal)] = exchange
            self._by_digest.setdefault((fact.node, request_digest), []).append(fact.ordinal)
            self._per_node[fact.node] = self._per_node.get(fact.node, 0) + 1
            if getattr(fact, "concurrent", False):
                key = (fact.node, request_digest)
                self._concurrent.setdefault(key, deque()).append(fact.ordinal)

    def recorded(self, node: str, ordinal: int) -> CallFact | None:
        """The recorded call at ``(node, ordinal)``, or ``None``."""
        entry = self.calls.get((node, ordinal))
        if entry is None:
            return None
        fact: CallFact = self.facts[entry[2] - 1]
        return fact

    def _context(self) -> str:
        return "".join(f"\n  note: {line}" for line in self.context)

    def lookup(
        self, node: str, ordinal: int, kind: str, request_digest: str, request: Any
    ) -> CallFact | None:
        """The recorded call that answers this one, else ``None``.

        The call at ``(node, ordinal)`` if its request matches; else, for a request
        recorded as concurrent on ``node``, the first such call not yet served.
        """
        key = (node, ordinal)
        entry = self.calls.get(key)
        if entry is None or entry[0] != kind or entry[1] != request_digest or key in self.consumed:
            waiting = self._concurrent.get((node, request_digest))
            while waiting and (node, waiting[0]) in self.consumed:
                waiting.popleft()  # served at its own ordinal: each is skipped once
            if not waiting or self.calls[(node, waiting[0])][0] != kind:
                return None
            key = (node, waiting.popleft())
            entry = self.calls[key]
        self.consumed.add(key)
        fact: CallFact = self.facts[entry[2] - 1]
        return fact

    def take(
        self, node: str, ordinal: int, kind: str, request_digest: str, request: Any
    ) -> CallFact:
        """Serve the recorded call at ``(node, ordinal)`` or raise the drift it shows.

        Raises :class:`UnexpectedCallError` (no call was recorded there),
        :class:`OrderDriftError` (this request was recorded at another ordinal of the
        node) or :class:`PayloadDriftError` (the request changed; the message lists
        the JSON-pointer paths that differ, old -> new). With :attr:`lenient`, order and
        request drift are kept in :attr:`drifts` and the recorded call is served.
        """
        __tracebackhide__ = True
        try:
            return self._take(node, ordinal, kind, request_digest, request)
        except ReplayDriftError as exc:
            self.raised.append(exc)
            raise

    def _take(
        self, node: str, ordinal: int, kind: str, request_digest: str, request: Any
    ) -> CallFact:
        __tracebackhide__ = True
        served = self.lookup(node, ordinal, kind, request_digest, request)
        if served is not None:
            return served
        recorded = self.recorded(node, ordinal)
        if recorded is not None and (node, ordinal) in self.consumed:
            # a concurrent call took it: compare with a call of the node still unserved
            recorded = self._unserved_concurrent(node) or recorded
        where = f"node {node!r}, {nth(ordinal)} (ordinal {ordinal})"
        if recorded is None:
            count = self._per_node.get(node, 0)
            if count:
                detail = f"the bundle recorded {count} call(s) on node {node!r}"
            else:
                nodes = sorted({n for n, _ in self.calls})
                detail = (
                    f"the bundle recorded no call on node {node!r} "
                    f"(it has: {', '.join(nodes) or 'none'})"
                )
            lenient = (
                "\n  note: lenient replay answers a changed call from the call recorded at its "
                "place, but nothing was recorded here, and nothing runs live in replay"
                if self.lenient
                else ""
            )
            raise UnexpectedCallError(
                f"unexpected {kind} call at {where}: {detail}\n"
                f"  request: {short(request, 200)}\n  bundle: {self.source}{self._context()}"
                f"{lenient}",
                fix=self._fix(),
            )
        elsewhere = [
            o
            for o in self._by_digest.get((node, request_digest), [])
            if (node, o) not in self.consumed
        ]
        if elsewhere and recorded.kind == kind:
            order = OrderDriftError(
                f"order drift at {where}: this request was recorded as the "
                f"{nth(elsewhere[0])} (ordinal {elsewhere[0]}) of node {node!r}; "
                f"the {nth(ordinal)} was recorded as {describe(recorded)}\n"
                f"  bundle: {self.source}{self._context()}",
                fix=self._fix(),
            )
            if self.lenient:  # serve the call recorded with this very request
                return self._tolerate(order, node, elsewhere[0])
            raise order
        if recorded.kind != kind:
            changes: list[tuple[str, Any, Any]] = [("/kind", recorded.kind, kind)]
        else:
            changes = pointer_changes(call_request(recorded), request)
        lines = "\n".join(
            f"    {path or '(the whole request)'}: {short(old)} -> {short(new)}"
            for path, old, new in changes
        )
        payload = PayloadDriftError(
            f"request drift at {where}: the {kind} request differs from the recording\n"
            f"  changed (recorded -> now):\n{lines}\n  bundle: {self.source}{self._context()}",
            node=node,
            ordinal=ordinal,
            changes=changes,
            fix=self._fix(),
        )
        if self.lenient and recorded.kind == kind:
            return self._tolerate(payload, node, ordinal)
        raise payload

    def _unserved_concurrent(self, node: str) -> CallFact | None:
        """The first concurrent call on ``node`` not yet served (for drift messages)."""
        left = [o for (n, _), queue in self._concurrent.items() if n == node for o in queue]
        left = sorted(o for o in left if (node, o) not in self.consumed)
        return self.recorded(node, left[0]) if left else None

    def _tolerate(self, drift: ReplayDriftError, node: str, ordinal: int) -> CallFact:
        """Lenient replay: keep ``drift`` and serve the call recorded at ``(node, ordinal)``."""
        self.drifts.append(drift)
        self.consumed.add((node, ordinal))
        fact = self.recorded(node, ordinal)
        assert fact is not None
        return fact

    def unused(self) -> list[CallFact]:
        """Recorded calls the replayed run never made, in recorded order."""
        left = sorted(entry[2] for key, entry in self.calls.items() if key not in self.consumed)
        return [self.facts[seq - 1] for seq in left]

    def check_all_used(self, *, opt_out: str) -> None:
        """Raise :class:`MissingCallsError` if recorded calls were never made."""
        __tracebackhide__ = True
        left = self.unused()
        if not left:
            return
        shown = "\n".join(
            f"    node {f.node!r}, {nth(f.ordinal)}: {describe(f)}" for f in left[:20]
        )
        more = f"\n    ... and {len(left) - 20} more" if len(left) > 20 else ""
        raise MissingCallsError(
            f"{len(left)} recorded call(s) were never made by the replayed run:\n{shown}{more}\n"
            f"  bundle: {self.source}{self._context()}",
            fix=f"{self._fix()}; or, if leaving them out is intended, {opt_out}",
        )

    def _fix(self) -> str:
        return self.fix or "record the run again"
