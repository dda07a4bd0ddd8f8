"""The canonical order of a run's facts when some of its calls were made concurrently.

Calls a run makes from threads or asyncio tasks of its own finish in whatever order the
scheduler picks, so the order they are appended in (and the ordinal each takes on its
node) differs from one execution to the next. Like a workflow engine's history, a
bundle must not depend on that: the same behaviour recorded twice gives the same bytes.

Every fact is appended from a *lane*: the thread, or the asyncio task, that made it.
A lane knows the lane it was started from, through the context it copied from it
(asyncio tasks, ``contextvars.copy_context().run``, ``asyncio.to_thread``). Lanes started
from the same parent are *siblings*: when two or more siblings record facts, what they
record has no defined order between them, nor has what their own children record. A
thread that carries no context (a ``ThreadPoolExecutor`` worker) has no known origin,
and how many workers a pool happens to use differs from run to run, so its facts are
concurrent too. The facts of a lane without siblings (the code that entered the run, a
task or a context-copying thread started on its own) are sequential and keep the order
they were made in.

At save time each maximal stretch of concurrent facts between two sequential ones is
sorted by content (node, kind, request digest, then everything else that is not
volatile) and the stretch's seqs and per-node ordinals are handed out again in that
order; references to seqs (``derived_from``, ``supersedes``, a gate's subject) follow.
Call facts in such a stretch are marked ``concurrent``, which tells replay to pair
them with live calls by request digest instead of by ordinal.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .codec import digest
from .schema import VOLATILE_FIELDS

__all__ = ["Lane", "canonical_order", "current_identity", "has_concurrency"]

#: Fields left out of the sort key: volatile values, what canonical ordering rewrites
#: (seq, ordinal, the mark itself) and seq references, which point into the old order.
_UNSTABLE = frozenset(
    {"seq", "ordinal", "concurrent", "derived_from", "supersedes", *VOLATILE_FIELDS}
)


@dataclass(eq=False)
class Lane:
    """A thread or asyncio task that appended facts to a run, and the lane it came from."""

    parent: Lane | None
    identity: tuple[int, int]
    #: Found without a context from the run (a pool thread): its origin is unknown.
    adopted: bool = False
    #: The DAG node (one that edges name) this lane ran last; see ``DagTransitions``.
    last: str | None = None
    #: Whether this lane has run such a node (else its parent's ``last`` came before).
    moved: bool = False
    #: The ``last`` node of each child lane, by lane id: after a join, the next node
    #: of this lane may follow any of them.
    joined: dict[int, str] = field(default_factory=dict)


def current_identity() -> tuple[int, int]:
    """``(thread id, id of the running asyncio task or 0)`` of the caller."""
    task = 0
    asyncio = sys.modules.get("asyncio")  # no import: a run without asyncio has no tasks
    if asyncio is not None:
        try:
            running = asyncio.current_task()
        except RuntimeError:  # no event loop runs in this thread
            running = None
        if running is not None:
            task = id(running)
    return threading.get_ident(), task


def _concurrent_lanes(lanes: Sequence[Lane]) -> set[int]:
    """The ids of the lanes whose facts have no defined order (see the module docs)."""
    active: dict[int, Lane] = {}  # lanes with facts of their own or of a descendant
    for lane in lanes:
        node: Lane | None = lane
        while node is not None and id(node) not in active:
            active[id(node)] = node
            node = node.parent
    children: dict[int, int] = {}
    for lane in active.values():
        # a pool thread is concurrent on its own account: where it was started from is a
        # guess, so it makes no task or thread of the run concurrent as a sibling
        if lane.parent is not None and not lane.adopted:
            children[id(lane.parent)] = children.get(id(lane.parent), 0) + 1
    concurrent: set[int] = set()

    def is_concurrent(lane: Lane) -> bool:
        chain: list[Lane] = []
        node: Lane | None = lane
        answer = False
        while node is not None and node.parent is not None:
            if id(node) in concurrent or node.adopted or children.get(id(node.parent), 0) > 1:
                answer = True
                break
            chain.append(node)
            node = node.parent
        if answer:
            concurrent.update(id(n) for n in chain)
        return answer

    for lane in active.values():
        if is_concurrent(lane):
            concurrent.add(id(lane))
    return concurrent


def has_concurrency(lanes: Sequence[Lane]) -> bool:
    """Whether facts appended from ``lanes`` include concurrent ones (cheap when not)."""
    return _several(lanes) and bool(_concurrent_lanes(lanes))


def _several(lanes: Sequence[Lane]) -> bool:
    """Whether ``lanes`` may hold concurrent facts: more than one lane, or a pool thread.

    A single pool thread counts: a pool whose calls are quick (served from a bundle in
    replay) may run them all on its first worker, where the recording spread them over
    four; their facts must be ordered the same either way.
    """
    return bool(lanes) and (lanes[0].adopted or any(lane is not lanes[0] for lane in lanes))


def _sort_key(fact: Any) -> tuple[str, str, str, str]:
    data = fact.model_dump(mode="json", exclude_defaults=True, exclude=_UNSTABLE)
    subject = data.get("subject")
    if isinstance(subject, dict):
        subject.pop("seq", None)
    request = getattr(fact, "request_digest", None) or digest(data.get("gate_id"))
    return fact.node, fact.kind, request, digest(data)


def canonical_order(facts: Sequence[Any], lanes: Sequence[Lane]) -> list[Any]:
    """``facts`` (in append order, each appended from ``lanes[i]``) in canonical order.

    Returns the facts themselves when none were concurrent; otherwise copies with
    ``seq``, ``ordinal``, ``concurrent`` and seq references rewritten.
    """
    concurrent = _concurrent_lanes(lanes) if _several(lanes) else set()
    if not concurrent:
        return list(facts)
    regions: list[list[int]] = []  # maximal stretches of concurrent facts
    for position, lane in enumerate(lanes):
        if id(lane) not in concurrent:
            continue
        if regions and regions[-1][-1] == position - 1:
            regions[-1].append(position)
        else:
            regions.append([position])
    # each region sorted by content, in the place where it started
    starts = {region[0]: region for region in regions}
    marked = {position for region in regions for position in region}
    order: list[int] = []  # old positions, in the new order
    for position in range(len(facts)):
        region = starts.get(position)
        if region is not None:
            order.extend(sorted(region, key=lambda p: _sort_key(facts[p])))
        elif position not in marked:
            order.append(position)
    rank = {old: new for new, old in enumerate(order)}
    # the ordinals a region took on each node, handed out again in the sorted order
    ordinals: dict[int, int] = {}
    for region in regions:
        taken: dict[str, list[int]] = {}
        calls = sorted((p for p in region if hasattr(facts[p], "ordinal")), key=rank.__getitem__)
        for position in calls:
            taken.setdefault(facts[position].node, []).append(facts[position].ordinal)
        for numbers in taken.values():
            numbers.sort(reverse=True)
        for position in calls:
            ordinals[position] = taken[facts[position].node].pop()
    new_seq = {facts[old].seq: new + 1 for new, old in enumerate(order)}
    result: list[Any] = []
    for new, old in enumerate(order):
        fact = facts[old]
        update: dict[str, Any] = {"seq": new + 1}
        if old in ordinals:
            update["ordinal"] = ordinals[old]
        if hasattr(fact, "concurrent"):
            update["concurrent"] = old in marked
        if getattr(fact, "derived_from", None):
            sources = [new_seq.get(s, s) for s in fact.derived_from]
            update["derived_from"] = sorted(sources) if old in marked else sources
        if getattr(fact, "supersedes", None) is not None:
            update["supersedes"] = new_seq.get(fact.supersedes, fact.supersedes)
        subject = getattr(fact, "subject", None)
        if subject is not None and subject.seq is not None:
            update["subject"] = subject.model_copy(update={"seq": new_seq.get(subject.seq)})
        result.append(fact.model_copy(update=update))
    return result
