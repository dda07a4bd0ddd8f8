"""The semantic diff engine: what changed between two runs, as typed change records.

Two runs are compared in three passes:

1. **DAG** — nodes by id (added, removed, kind, config per key), edges as a multiset,
   the DAG's name and whether it was declared.
2. **Alignment** — facts are aligned by content signatures (node and kind plus request
   digest, gate id and decision, artifact name and revision, ...) with a patience diff:
   signatures unique in both runs anchor the alignment, so one inserted call does not
   shift what follows it, and repeated ones (step start/end) never anchor a wrong match.
   Alignment is by content, never by ``seq`` or ``ordinal``. Within each stretch that
   differs, facts of the same node and identity (kind, tool, gate id, artifact name) pair
   up as *changed* rather than removed plus added. Identical stretches removed at one
   place and added at another are *moved*. A long stretch with no unique signature at
   all (every call changed) falls back to pairing by node, identity and order.
3. **Content** — each aligned pair is compared without its volatile fields, numbering
   (``seq``, ``ordinal``) and derived digests; references to other facts by ``seq`` are
   compared through the alignment. Only pairs that differ are walked field by field.

The result, :class:`RunDiff`, is bounded by ``max_changes`` and says what it left out.
"""

from __future__ import annotations

import bisect
import difflib
import enum
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, ClassVar, Literal, Protocol

import orjson

from ..exceptions import ConfigError
from ..schema import (
    VOLATILE_FIELDS,
    ArtifactFact,
    DagNode,
    DagSnapshot,
    ErrorFact,
    Fact,
    GateFact,
    ModelIOFact,
    Reviewer,
    StepFact,
    ToolCallFact,
)

__all__ = [
    "ABSENT",
    "Absent",
    "Change",
    "DagChange",
    "DagFieldChanged",
    "DiffStats",
    "EdgeAdded",
    "EdgeRemoved",
    "FactAdded",
    "FactChange",
    "FactChanged",
    "FactRemoved",
    "FactsMoved",
    "NodeAdded",
    "NodeConfigChanged",
    "NodeKindChanged",
    "NodeRemoved",
    "NodeUsage",
    "RunDiff",
    "RunLike",
    "UsageDelta",
    "ValueChange",
    "diff_dags",
    "diff_runs",
    "fact_label",
]

#: Fields left out of every fact comparison: wall times and trace ids, the numbering
#: (alignment is by content) and digests of content that is compared itself, including
#: ``exchange``, the blob digest of the raw wire exchange behind a normalized call.
IGNORED_FACT_FIELDS = frozenset(
    VOLATILE_FIELDS | {"seq", "ordinal", "request_digest", "content_digest", "exchange"}
)

_TEXT_DIFF_MIN_CHARS = 80
_TEXT_DIFF_MAX_LINES = 40
_TEXT_DIFF_MAX_CHARS = 2_000_000
# Above this many candidate pairs, same-identity facts of a differing range are paired
# in order instead of by similarity (which compares every candidate pair).
_SIMILARITY_PAIRING_MAX = 400
# A stretch without unique signatures is aligned by SequenceMatcher up to this size
# (product of both lengths), beyond which its quadratic worst case is not worth it.
_MATCHER_MAX = 40_000


class RunLike(Protocol):
    """Anything that holds a run: a DAG snapshot and its facts in ``seq`` order.

    A loaded ``Bundle`` is one; tests can use a two-field dataclass.
    """

    @property
    def dag(self) -> DagSnapshot:
        """The run's frozen DAG snapshot."""
        ...

    @property
    def facts(self) -> Sequence[Fact]:
        """The run's facts, in ``seq`` order."""
        ...


class Absent(enum.Enum):
    """The type of :data:`ABSENT`."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "<absent>"


#: Stands for the missing side of a :class:`ValueChange` (a key added or removed).
ABSENT = Absent.ABSENT


@dataclass(frozen=True)
class ValueChange:
    """One value that differs, at a JSON-pointer ``path``: ``old → new``.

    Either side is :data:`ABSENT` when the value was added or removed; list indexes are
    those of the new value, except for removed elements. ``text_diff`` holds unified-diff
    lines (no file header) when both sides are long or multi-line strings, such as
    prompts.
    """

    path: str
    old: Any
    new: Any
    text_diff: tuple[str, ...] = ()


class Change:
    """Base of every change record.

    ``change`` names the record type (``node_added``, ``fact_changed``, ...), ``headline``
    is a short phrase for the verdict line, ``summary`` one full line in plain words.
    """

    change: ClassVar[str]

    @property
    def headline(self) -> str:
        """A short phrase, e.g. ``gate approve_refund approved → rejected``."""
        raise NotImplementedError

    @property
    def summary(self) -> str:
        """One line in plain words; by default the headline."""
        return self.headline

    @property
    def rank(self) -> int:
        """Importance when output is cut: lower ranks are kept first."""
        return 0


# --- DAG changes -----------------------------------------------------------------------


@dataclass(frozen=True)
class DagFieldChanged(Change):
    """The DAG's ``name`` changed, or whether it was ``declared`` by the host."""

    change: ClassVar[str] = "dag_field_changed"
    field: Literal["name", "declared"]
    old: Any
    new: Any

    @property
    def headline(self) -> str:
        """A short phrase."""
        if self.field == "name":
            return f"DAG renamed {self.old} → {self.new}"
        return "DAG now declared by the host" if self.new else "DAG no longer declared"


@dataclass(frozen=True)
class NodeAdded(Change):
    """A node the new DAG declares and the old one does not."""

    change: ClassVar[str] = "node_added"
    node: str
    kind: str

    @property
    def headline(self) -> str:
        """A short phrase."""
        return f"node {self.node} added ({self.kind})"


@dataclass(frozen=True)
class NodeRemoved(Change):
    """A node the old DAG declared and the new one does not."""

    change: ClassVar[str] = "node_removed"
    node: str
    kind: str

    @property
    def headline(self) -> str:
        """A short phrase."""
        return f"node {self.node} removed ({self.kind})"


@dataclass(frozen=True)
class NodeKindChanged(Change):
    """A node kept its id but changed kind (``function`` → ``agent``, ...)."""

    change: ClassVar[str] = "node_kind_changed"
    node: str
    old: str
    new: str

    @property
    def headline(self) -> str:
        """A short phrase."""
        return f"node {self.node} kind {self.old} → {self.new}"


@dataclass(frozen=True)
class NodeConfigChanged(Change):
    """One config key of a node changed, was added or was removed.

    ``changes`` hold pointer paths from the node's config (``/prompt``,
    ``/schema/properties/id/type``); ``cut_paths`` counts paths left out.
    """

    change: ClassVar[str] = "node_config_changed"
    node: str
    key: str
    changes: tuple[ValueChange, ...]
    cut_paths: int = 0

    @property
    def headline(self) -> str:
        """A short phrase."""
        verb = "changed"
        if len(self.changes) == 1 and self.changes[0].path == f"/{_escape(self.key)}":
            if self.changes[0].old is ABSENT:
                verb = "added"
            elif self.changes[0].new is ABSENT:
                verb = "removed"
        return f"node {self.node} {self.key} {verb}"


@dataclass(frozen=True)
class EdgeAdded(Change):
    """An edge ``source -> target`` only the new DAG has."""

    change: ClassVar[str] = "edge_added"
    source: str
    target: str

    @property
    def headline(self) -> str:
        """A short phrase."""
        return f"edge {self.source} -> {self.target} added"


@dataclass(frozen=True)
class EdgeRemoved(Change):
    """An edge ``source -> target`` only the old DAG had."""

    change: ClassVar[str] = "edge_removed"
    source: str
    target: str

    @property
    def headline(self) -> str:
        """A short phrase."""
        return f"edge {self.source} -> {self.target} removed"


DagChange = (
    DagFieldChanged
    | NodeAdded
    | NodeRemoved
    | NodeKindChanged
    | NodeConfigChanged
    | EdgeAdded
    | EdgeRemoved
)


# --- fact changes ----------------------------------------------------------------------

_KIND_RANK = {"gate": 1, "error": 2, "artifact": 3, "model_io": 4, "tool_call": 4, "step": 6}


def _reviewer(reviewer: Reviewer) -> str:
    return f"{reviewer.kind}:{reviewer.id}"


def fact_label(fact: Fact) -> str:
    """How a fact is named in diff output: ``model call draft_reply#0``, ``gate approve``."""
    if isinstance(fact, ModelIOFact):
        return f"model call {fact.node}#{fact.ordinal}"
    if isinstance(fact, ToolCallFact):
        tool = "" if fact.tool == fact.node else f" ({fact.tool})"
        return f"tool call {fact.node}#{fact.ordinal}{tool}"
    if isinstance(fact, GateFact):
        return f"gate {fact.gate_id}"
    if isinstance(fact, ArtifactFact):
        return f"artifact {fact.name} rev {fact.revision}"
    if isinstance(fact, StepFact):
        return f"step {fact.node} {fact.phase}"
    if isinstance(fact, ErrorFact):
        return f"error in {fact.node}"
    return f"{getattr(fact, 'kind', type(fact).__name__)} fact in {fact.node}"


def _fact_detail(fact: Fact) -> str:
    """What an added or removed fact said, in a few words ("" when its label says it)."""
    if isinstance(fact, GateFact):
        return f"{fact.decision} (reviewer {_reviewer(fact.reviewer)})"
    if isinstance(fact, ErrorFact):
        return f"{fact.type}: {_clip(fact.message, 60)}"
    if isinstance(fact, ModelIOFact):
        return f"{fact.request.model}, {fact.usage.total_tokens} tokens"
    if isinstance(fact, ToolCallFact):
        return _clip(orjson.dumps(fact.arguments, option=orjson.OPT_SORT_KEYS).decode(), 60)
    if isinstance(fact, StepFact) and fact.status is not None:
        return f"status {fact.status}"
    return ""


@dataclass(frozen=True)
class FactAdded(Change):
    """A fact only the new run has (an inserted call, a new error, ...)."""

    change: ClassVar[str] = "fact_added"
    fact: Fact

    @property
    def headline(self) -> str:
        """A short phrase."""
        return f"{fact_label(self.fact)} added"

    @property
    def summary(self) -> str:
        """One line in plain words."""
        detail = _fact_detail(self.fact)
        return f"{self.headline}: {detail}" if detail else self.headline

    @property
    def rank(self) -> int:
        """Importance when output is cut."""
        return _KIND_RANK.get(self.fact.kind, 5)


@dataclass(frozen=True)
class FactRemoved(Change):
    """A fact only the old run has (a call no longer made, an error gone, ...)."""

    change: ClassVar[str] = "fact_removed"
    fact: Fact

    @property
    def headline(self) -> str:
        """A short phrase."""
        return f"{fact_label(self.fact)} removed"

    @property
    def summary(self) -> str:
        """One line in plain words."""
        detail = _fact_detail(self.fact)
        return f"{self.headline}: {detail}" if detail else self.headline

    @property
    def rank(self) -> int:
        """Importance when output is cut."""
        return _KIND_RANK.get(self.fact.kind, 5)


@dataclass(frozen=True)
class FactChanged(Change):
    """Two aligned facts whose content differs.

    ``changes`` hold pointer paths from the fact (``/request/messages/1/content``,
    ``/response/finish_reason``, ``/decision``); ``cut_paths`` counts paths left out.
    ``details`` are the changes that ``summary`` does not already say in words.
    """

    change: ClassVar[str] = "fact_changed"
    old: Fact
    new: Fact
    changes: tuple[ValueChange, ...]
    cut_paths: int = 0

    @property
    def kind(self) -> str:
        """The kind of both facts."""
        return str(self.new.kind)

    @property
    def node(self) -> str:
        """The DAG node of both facts."""
        return self.new.node

    @property
    def rank(self) -> int:
        """Importance when output is cut."""
        return _KIND_RANK.get(self.kind, 5)

    @cached_property
    def _words(self) -> tuple[str, str, tuple[ValueChange, ...]]:
        return _describe_change(self.old, self.new, self.changes)

    @property
    def headline(self) -> str:
        """A short phrase."""
        return self._words[0]

    @property
    def summary(self) -> str:
        """One line in plain words."""
        return self._words[1]

    @property
    def details(self) -> tuple[ValueChange, ...]:
        """The changes not already said by ``summary``."""
        return self._words[2]


@dataclass(frozen=True)
class FactsMoved(Change):
    """Aligned facts of one node that now happen in another order relative to the rest.

    Seqs are listed for both runs; facts that also changed have their own
    :class:`FactChanged`.
    """

    change: ClassVar[str] = "facts_moved"
    node: str
    old_seqs: tuple[int, ...]
    new_seqs: tuple[int, ...]

    @property
    def headline(self) -> str:
        """A short phrase."""
        count = len(self.new_seqs)
        return f"{count} fact{'s' if count != 1 else ''} of node {self.node} moved"

    @property
    def summary(self) -> str:
        """One line in plain words."""
        return f"{self.headline} (seq {_seq_span(self.old_seqs)} → {_seq_span(self.new_seqs)})"

    @property
    def rank(self) -> int:
        """Importance when output is cut."""
        return 5


FactChange = FactAdded | FactRemoved | FactChanged | FactsMoved


def _seq_span(seqs: Sequence[int]) -> str:
    if len(seqs) > 1 and list(seqs) == list(range(seqs[0], seqs[0] + len(seqs))):
        return f"{seqs[0]}-{seqs[-1]}"
    shown = ", ".join(str(seq) for seq in seqs[:4])
    return shown + (", …" if len(seqs) > 4 else "")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _areas(changes: Sequence[ValueChange]) -> dict[str, list[str]]:
    """Changed top-level fields (``request``, ``response``) and the parts changed in each."""
    areas: dict[str, list[str]] = {}
    for change in changes:
        tokens = change.path.split("/")[1:] or ["value"]
        parts = areas.setdefault(tokens[0].replace("_", " "), [])
        part = tokens[1].replace("_", " ") if len(tokens) > 1 else ""
        if part and not part.isdigit() and part not in parts:
            parts.append(part)
    return areas


def _describe_change(
    old: Fact, new: Fact, changes: tuple[ValueChange, ...]
) -> tuple[str, str, tuple[ValueChange, ...]]:
    """(headline, summary, details not said by the summary) of a changed fact."""
    label = fact_label(new)
    said: list[str] = []
    explained: set[str] = set()
    if isinstance(old, GateFact) and isinstance(new, GateFact):
        reviewer_changed = old.reviewer != new.reviewer
        reviewer = (
            f"{_reviewer(old.reviewer)} → {_reviewer(new.reviewer)}"
            if reviewer_changed
            else _reviewer(new.reviewer)
        )
        if old.decision != new.decision:
            said.append(f"{old.decision} → {new.decision} (reviewer {reviewer})")
            explained.update({"/decision", "/reviewer/id", "/reviewer/kind"})
        elif reviewer_changed:
            said.append(f"reviewer {reviewer}")
            explained.update({"/reviewer/id", "/reviewer/kind"})
        if old.policy != new.policy:
            said.append(f"policy {_policy(old)} → {_policy(new)}")
            explained.update({"/policy", "/policy/id", "/policy/version"})
        old_rev = old.subject.revision if old.subject else None
        new_rev = new.subject.revision if new.subject else None
        if old_rev != new_rev and old.subject and new.subject:
            said.append(f"subject revision {old_rev} → {new_rev}")
            explained.add("/subject/revision")
        if any(c.path == "/subject/digest" for c in changes):
            said.append("subject digest changed")
            explained.add("/subject/digest")
        if old.decision != new.decision:
            headline = f"{label} {old.decision} → {new.decision}"
        else:
            headline = f"{label} {said[0]}" if said else ""
    elif isinstance(old, StepFact) and isinstance(new, StepFact) and old.status != new.status:
        said.append(f"status {old.status} → {new.status}")
        explained.add("/status")
        headline = f"{label} status {old.status} → {new.status}"
    elif isinstance(old, ArtifactFact) and isinstance(new, ArtifactFact):
        label = f"artifact {new.name}"
        if old.revision != new.revision:
            said.append(f"revision {old.revision} → {new.revision}")
            explained.add("/revision")
        headline = ""
    else:
        headline = ""
    details = tuple(c for c in changes if c.path not in explained)
    areas = _areas(details)
    if not headline:
        rest = [" and ".join(areas) + " changed"] if areas else []
        headline = f"{label} {'; '.join([*said, *rest])}"
    for area, parts in areas.items():
        said.append(f"{area} changed" + (f" ({', '.join(parts)})" if parts else ""))
    return headline, f"{label}: {'; '.join(said)}", details


def _policy(gate: GateFact) -> str:
    return "none" if gate.policy is None else f"{gate.policy.id} v{gate.policy.version}"


# --- usage -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeUsage:
    """Model calls, tokens by category and cost (by currency) of one node or a run."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_output_tokens: int = 0
    cost: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class UsageDelta:
    """Usage of one node (``node`` is ``None`` for the whole run) in both runs."""

    node: str | None
    old: NodeUsage
    new: NodeUsage

    @property
    def changed(self) -> bool:
        """Whether calls, tokens or cost differ."""
        return self.old != self.new

    @property
    def tokens(self) -> int:
        """Change of total tokens, new minus old."""
        return self.new.total_tokens - self.old.total_tokens

    @property
    def cost(self) -> dict[str, Decimal]:
        """Change of cost per currency, new minus old (only currencies that changed)."""
        out: dict[str, Decimal] = {}
        for currency in dict.fromkeys([*self.old.cost, *self.new.cost]):
            delta = self.new.cost.get(currency, Decimal(0)) - self.old.cost.get(
                currency, Decimal(0)
            )
            if delta or currency not in self.old.cost or currency not in self.new.cost:
                out[currency] = delta
        return out


class _UsageSum:
    __slots__ = ("calls", "cost", "tokens")

    def __init__(self) -> None:
        self.calls = 0
        self.tokens = [0, 0, 0, 0, 0]
        self.cost: dict[str, Decimal] = {}

    def add(self, fact: ModelIOFact) -> None:
        self.calls += 1
        if fact.response is not None:
            usage = fact.response.usage
            self.tokens[0] += usage.input_tokens
            self.tokens[1] += usage.output_tokens
            self.tokens[2] += usage.cache_read_input_tokens
            self.tokens[3] += usage.cache_creation_input_tokens
            self.tokens[4] += usage.reasoning_output_tokens
        if fact.cost is not None:
            currency = fact.cost.currency
            self.cost[currency] = self.cost.get(currency, Decimal(0)) + fact.cost.decimal

    def freeze(self) -> NodeUsage:
        tokens = self.tokens
        return NodeUsage(
            self.calls, tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], dict(self.cost)
        )


def _usage(facts: Sequence[Fact]) -> tuple[dict[str, _UsageSum], _UsageSum]:
    per_node: dict[str, _UsageSum] = {}
    total = _UsageSum()
    for fact in facts:
        if isinstance(fact, ModelIOFact):
            per_node.setdefault(fact.node, _UsageSum()).add(fact)
            total.add(fact)
    return per_node, total


def _usage_deltas(old: Sequence[Fact], new: Sequence[Fact]) -> tuple[list[UsageDelta], UsageDelta]:
    old_nodes, old_total = _usage(old)
    new_nodes, new_total = _usage(new)
    empty = _UsageSum()
    deltas = []
    for node in dict.fromkeys([*new_nodes, *old_nodes]):
        delta = UsageDelta(
            node,
            old_nodes.get(node, empty).freeze(),
            new_nodes.get(node, empty).freeze(),
        )
        if delta.changed:
            deltas.append(delta)
    return deltas, UsageDelta(None, old_total.freeze(), new_total.freeze())


# --- the result ------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffStats:
    """Counts over the whole comparison, before ``max_changes`` cut anything.

    ``alignment`` is the share of facts that found a partner (``2 * aligned / (old +
    new)``, 1.0 for two empty runs).
    """

    old_facts: int
    new_facts: int
    aligned: int
    unchanged: int
    changed: int
    added: int
    removed: int
    moved: int
    alignment: float


@dataclass(frozen=True)
class RunDiff:
    """What changed from the ``old`` run to the ``new`` one.

    ``verdict`` is ``same``, ``changed`` or ``unrelated`` (different DAG names and too
    few facts align to compare; the change lists are then empty). Change records are in
    run order; ``cut`` counts the records dropped by ``max_changes`` (the least
    important ones: steps and moves before model calls, before gates and DAG changes).
    """

    verdict: Literal["same", "changed", "unrelated"]
    old_dag: str
    new_dag: str
    dag_changes: tuple[DagChange, ...]
    fact_changes: tuple[FactChange, ...]
    usage: tuple[UsageDelta, ...]
    total_usage: UsageDelta
    stats: DiffStats
    cut: int = 0

    @property
    def same(self) -> bool:
        """True when nothing but ignored values differs."""
        return self.verdict == "same"

    @property
    def changes(self) -> tuple[Change, ...]:
        """DAG changes, then fact changes."""
        return (*self.dag_changes, *self.fact_changes)

    @property
    def change_count(self) -> int:
        """Number of changes found, including those cut."""
        return len(self.dag_changes) + len(self.fact_changes) + self.cut

    @property
    def summary(self) -> str:
        """The verdict in words, e.g. ``2 changes: node draft_reply prompt changed; ...``."""
        stats = self.stats
        if self.verdict == "unrelated":
            return (
                f"unrelated runs: DAG {self.old_dag} vs {self.new_dag}, "
                f"{stats.alignment:.0%} of facts align "
                f"({stats.old_facts} vs {stats.new_facts} facts); not compared"
            )
        if self.verdict == "same":
            return f"no changes: DAG {self.new_dag}, {stats.new_facts} facts"
        count = self.change_count
        top = sorted(self.changes, key=lambda change: change.rank)[:3]
        words = "; ".join(change.headline for change in top)
        more = count - len(top)
        return f"{count} change{'s' if count != 1 else ''}: {words}" + (
            f"; and {more} more" if more else ""
        )


# --- structural comparison -------------------------------------------------------------

_Tokens = tuple[str, ...]


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(tokens: _Tokens) -> str:
    return "".join("/" + token for token in tokens)


def _parse_ignore(paths: Iterable[str]) -> tuple[_Tokens, ...]:
    if isinstance(paths, str):  # one path, not its characters
        paths = [paths]
    patterns = []
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(
                f"ignore path {path!r} is not a JSON pointer into a fact",
                fix='write it like "/response/id" (use * for any one key or index)',
            )
        patterns.append(tuple(path[1:].split("/")))
    return tuple(patterns)


def _text_diff(old: Any, new: Any) -> tuple[str, ...]:
    if not (isinstance(old, str) and isinstance(new, str)):
        return ()
    if max(len(old), len(new)) <= _TEXT_DIFF_MIN_CHARS and "\n" not in old + new:
        return ()
    if len(old) + len(new) > _TEXT_DIFF_MAX_CHARS:
        return (f"(text too long to diff: {len(old):,} → {len(new):,} characters)",)
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=1))[2:]
    if len(lines) > _TEXT_DIFF_MAX_LINES:
        more = len(lines) - _TEXT_DIFF_MAX_LINES
        lines = [*lines[:_TEXT_DIFF_MAX_LINES], f"… {more} more diff lines"]
    return tuple(lines)


def _element_key(value: Any) -> Any:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


class _Walker:
    """Collects the JSON-pointer paths at which two JSON values differ.

    Unlike a plain index-by-index walk, lists of different lengths are aligned first,
    so one message inserted into a conversation is one change, not one per message.
    """

    def __init__(self, ignore: tuple[_Tokens, ...], limit: int) -> None:
        self.ignore = ignore
        self.limit = limit
        self.changes: list[ValueChange] = []
        self.total = 0

    def ignored(self, tokens: _Tokens) -> bool:
        for pattern in self.ignore:
            if len(pattern) <= len(tokens) and all(
                p == "*" or p == t for p, t in zip(pattern, tokens, strict=False)
            ):
                return True
        return False

    def add(self, tokens: _Tokens, old: Any, new: Any) -> None:
        if self.ignore and self.ignored(tokens):
            return
        self.total += 1
        if len(self.changes) < self.limit:
            self.changes.append(ValueChange(_pointer(tokens), old, new, _text_diff(old, new)))

    def walk(self, old: Any, new: Any, tokens: _Tokens) -> None:
        if old is new:
            return
        if self.ignore and self.ignored(tokens):
            return
        if isinstance(old, dict) and isinstance(new, dict):
            if old == new:
                return
            for key in dict.fromkeys([*old, *new]):
                self.walk(old.get(key, ABSENT), new.get(key, ABSENT), (*tokens, _escape(key)))
        elif isinstance(old, list) and isinstance(new, list):
            if old != new:
                self._walk_list(old, new, tokens)
        elif type(old) is not type(new) or old != new:
            self.add(tokens, old, new)

    def _walk_list(self, old: list[Any], new: list[Any], tokens: _Tokens) -> None:
        if len(old) == len(new):
            for index, (a, b) in enumerate(zip(old, new, strict=True)):
                self.walk(a, b, (*tokens, str(index)))
            return
        matcher = difflib.SequenceMatcher(
            None, [_element_key(x) for x in old], [_element_key(x) for x in new]
        )
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            paired = min(i2 - i1, j2 - j1)
            for k in range(paired):
                self.walk(old[i1 + k], new[j1 + k], (*tokens, str(j1 + k)))
            for i in range(i1 + paired, i2):
                self.add((*tokens, str(i)), old[i], ABSENT)
            for j in range(j1 + paired, j2):
                self.add((*tokens, str(j)), ABSENT, new[j])


# --- DAG -------------------------------------------------------------------------------


def diff_dags(old: DagSnapshot, new: DagSnapshot, *, max_paths: int = 20) -> list[DagChange]:
    """The changes from one DAG snapshot to another, in declaration order.

    Node order and edge order are not changes; duplicate edges count as a multiset.
    """
    changes: list[DagChange] = []
    if old.name != new.name:
        changes.append(DagFieldChanged("name", old.name, new.name))
    if old.declared != new.declared:
        changes.append(DagFieldChanged("declared", old.declared, new.declared))
    if old.digest == new.digest:
        return changes
    old_nodes = {node.id: node for node in old.nodes}
    new_nodes = {node.id: node for node in new.nodes}
    for node in old.nodes:
        if node.id not in new_nodes:
            changes.append(NodeRemoved(node.id, node.kind))
    for node in new.nodes:
        before = old_nodes.get(node.id)
        if before is None:
            changes.append(NodeAdded(node.id, node.kind))
            continue
        if before.digest == node.digest:
            continue
        if before.kind != node.kind:
            changes.append(NodeKindChanged(node.id, before.kind, node.kind))
        changes.extend(_config_changes(before, node, max_paths))
    old_edges = Counter((edge.source, edge.target) for edge in old.edges)
    new_edges = Counter((edge.source, edge.target) for edge in new.edges)
    for source, target in (old_edges - new_edges).elements():
        changes.append(EdgeRemoved(source, target))
    for source, target in (new_edges - old_edges).elements():
        changes.append(EdgeAdded(source, target))
    return changes


def _config_changes(old: DagNode, new: DagNode, max_paths: int) -> list[NodeConfigChanged]:
    out = []
    for key in dict.fromkeys([*old.config, *new.config]):
        old_digest, new_digest = old.digests.get(key), new.digests.get(key)
        if old_digest is not None and old_digest == new_digest:
            continue
        walker = _Walker((), max_paths)
        walker.walk(old.config.get(key, ABSENT), new.config.get(key, ABSENT), (_escape(key),))
        if walker.total:
            out.append(
                NodeConfigChanged(
                    new.id, key, tuple(walker.changes), walker.total - len(walker.changes)
                )
            )
    return out


# --- fact alignment --------------------------------------------------------------------


def _signature(fact: Fact) -> tuple[Any, ...]:
    """What must be equal for two facts to align as unchanged (node included)."""
    if isinstance(fact, ModelIOFact):
        return (fact.node, "model_io", fact.request_digest)
    if isinstance(fact, StepFact):
        return (fact.node, "step", fact.phase, fact.status)
    if isinstance(fact, ToolCallFact):
        return (fact.node, "tool_call", fact.tool, fact.request_digest)
    if isinstance(fact, GateFact):
        return (fact.node, "gate", fact.gate_id, fact.decision)
    if isinstance(fact, ArtifactFact):
        return (fact.node, "artifact", fact.name, fact.revision)
    if isinstance(fact, ErrorFact):
        return (fact.node, "error", fact.type, fact.message)
    return (fact.node, getattr(fact, "kind", type(fact).__name__))


def _identity(fact: Fact) -> tuple[Any, ...]:
    """What must be equal for two differing facts to pair as *changed*."""
    if isinstance(fact, ToolCallFact):
        return (fact.node, "tool_call", fact.tool)
    if isinstance(fact, GateFact):
        return (fact.node, "gate", fact.gate_id)
    if isinstance(fact, ArtifactFact):
        return (fact.node, "artifact", fact.name)
    if isinstance(fact, StepFact):
        return (fact.node, "step", fact.phase)
    return (fact.node, getattr(fact, "kind", type(fact).__name__))


def _references(fact: Fact) -> tuple[tuple[str, Any], ...]:
    """The fields of ``fact`` that point at other facts by ``seq``."""
    if isinstance(fact, GateFact) and fact.subject is not None and fact.subject.seq is not None:
        return (("/subject/seq", fact.subject.seq),)
    if isinstance(fact, ArtifactFact) and fact.derived_from:
        return (("/derived_from", list(fact.derived_from)),)
    return ()


def _same_content(old: Fact, new: Fact) -> bool:
    """Fast check on field values, skipping ignored fields; no serialization."""
    if type(old) is not type(new):
        return False
    new_fields = new.__dict__
    for name, value in old.__dict__.items():
        if name not in IGNORED_FACT_FIELDS and new_fields.get(name, ABSENT) != value:
            return False
    return True


_DUMP_EXCLUDE = set(IGNORED_FACT_FIELDS)


class _Comparer:
    def __init__(
        self,
        old: Sequence[Fact],
        new: Sequence[Fact],
        ignore: tuple[_Tokens, ...],
        max_paths: int,
    ) -> None:
        self.old = old
        self.new = new
        self.ignore = ignore
        self.max_paths = max_paths
        self.old_seq_of_new: dict[int, int] = {}
        self._dumps: dict[tuple[int, int], dict[str, Any]] = {}

    def dump(self, side: int, index: int) -> dict[str, Any]:
        key = (side, index)
        cached = self._dumps.get(key)
        if cached is None:
            fact = (self.old, self.new)[side][index]
            cached = fact.model_dump(mode="json", exclude=_DUMP_EXCLUDE)
            # references are compared through the alignment, not as numbers
            cached.pop("derived_from", None)
            subject = cached.get("subject")
            if isinstance(subject, dict):
                subject.pop("seq", None)
            self._dumps[key] = cached
        return cached

    def distance(self, i: int, j: int) -> int:
        """How many paths differ (references aside); used to pair similar facts."""
        if _same_content(self.old[i], self.new[j]):
            return 0
        walker = _Walker(self.ignore, 0)
        walker.walk(self.dump(0, i), self.dump(1, j), ())
        return walker.total

    def compare(self, i: int, j: int) -> FactChanged | None:
        old, new = self.old[i], self.new[j]
        old_refs, new_refs = _references(old), _references(new)
        if not old_refs and not new_refs and _same_content(old, new):
            return None
        walker = _Walker(self.ignore, self.max_paths)
        walker.walk(self.dump(0, i), self.dump(1, j), ())
        self._compare_references(walker, dict(old_refs), dict(new_refs))
        if not walker.total:
            return None
        return FactChanged(old, new, tuple(walker.changes), walker.total - len(walker.changes))

    def _compare_references(
        self, walker: _Walker, old_refs: dict[str, Any], new_refs: dict[str, Any]
    ) -> None:
        def as_old(value: Any) -> Any:
            if isinstance(value, list):
                return [as_old(item) for item in value]
            # a reference to a fact the old run lacks must never equal an old seq
            return self.old_seq_of_new.get(value, ("new", value))

        for path in dict.fromkeys([*old_refs, *new_refs]):
            old_value, new_value = old_refs.get(path, ABSENT), new_refs.get(path, ABSENT)
            if old_value is ABSENT or new_value is ABSENT or old_value != as_old(new_value):
                walker.add(tuple(path[1:].split("/")), old_value, new_value)


def _increasing(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A longest run of ``points`` (sorted by first item) increasing in the second."""
    tails: list[int] = []
    tail_at: list[int] = []
    previous = [-1] * len(points)
    for k, (_, j) in enumerate(points):
        pos = bisect.bisect_left(tails, j)
        if pos == len(tails):
            tails.append(j)
            tail_at.append(k)
        else:
            tails[pos] = j
            tail_at[pos] = k
        previous[k] = tail_at[pos - 1] if pos else -1
    out = []
    k = tail_at[-1] if tail_at else -1
    while k != -1:
        out.append(points[k])
        k = previous[k]
    out.reverse()
    return out


_Range = tuple[int, int, int, int]


def _patience(
    old: list[tuple[Any, ...]], new: list[tuple[Any, ...]]
) -> tuple[list[tuple[int, int]], list[_Range]]:
    """Patience alignment of two signature lists: (aligned pairs, ranges that differ).

    Signatures unique in both stretches anchor the alignment (the longest increasing run
    of them), and stretches between anchors are aligned the same way, so repeated
    signatures (step start/end) never anchor a wrong match and the cost stays near
    linear. A stretch with no unique signature falls back to ``SequenceMatcher`` when
    small, and is otherwise left as one differing range.
    """
    pairs: list[tuple[int, int]] = []
    gaps: list[_Range] = []
    stack: list[_Range] = [(0, len(old), 0, len(new))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        while alo < ahi and blo < bhi and old[alo] == new[blo]:
            pairs.append((alo, blo))
            alo, blo = alo + 1, blo + 1
        while alo < ahi and blo < bhi and old[ahi - 1] == new[bhi - 1]:
            ahi, bhi = ahi - 1, bhi - 1
            pairs.append((ahi, bhi))
        if alo == ahi or blo == bhi:
            if alo < ahi or blo < bhi:
                gaps.append((alo, ahi, blo, bhi))
            continue
        counts = Counter(old[alo:ahi])
        where: dict[tuple[Any, ...], int] = {}
        for j in range(blo, bhi):
            where[new[j]] = -1 if new[j] in where else j
        anchors = [
            (i, where[old[i]])
            for i in range(alo, ahi)
            if counts[old[i]] == 1 and where.get(old[i], -1) >= 0
        ]
        if anchors:
            start_a, start_b = alo, blo
            for i, j in _increasing(anchors):
                pairs.append((i, j))
                stack.append((start_a, i, start_b, j))
                start_a, start_b = i + 1, j + 1
            stack.append((start_a, ahi, start_b, bhi))
        elif (ahi - alo) * (bhi - blo) <= _MATCHER_MAX:
            matcher = difflib.SequenceMatcher(None, old[alo:ahi], new[blo:bhi], autojunk=False)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes():
                if tag == "equal":
                    pairs.extend(
                        zip(range(alo + i1, alo + i2), range(blo + j1, blo + j2), strict=True)
                    )
                else:
                    gaps.append((alo + i1, alo + i2, blo + j1, blo + j2))
        else:
            gaps.append((alo, ahi, blo, bhi))
    return pairs, gaps


class _Alignment:
    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []
        self.moves: list[list[tuple[int, int]]] = []
        self.removed: list[int] = []
        self.added: list[int] = []


def _align(comparer: _Comparer, *, check_order: bool = True) -> _Alignment:
    old, new = comparer.old, comparer.new
    old_sig = [_signature(fact) for fact in old]
    new_sig = [_signature(fact) for fact in new]
    out = _Alignment()
    out.pairs, gaps = _patience(old_sig, new_sig)
    groups = [(list(range(alo, ahi)), list(range(blo, bhi))) for alo, ahi, blo, bhi in gaps]
    if not check_order:
        groups = _pair_unordered(groups, old_sig, new_sig, comparer, out)
    for old_idx, new_idx in groups:
        _pair_range(old_idx, new_idx, comparer, out)
    if out.removed and out.added:
        _find_moves(old_sig, new_sig, out)
    return out


def _pair_unordered(
    groups: list[tuple[list[int], list[int]]],
    old_sig: list[tuple[Any, ...]],
    new_sig: list[tuple[Any, ...]],
    comparer: _Comparer,
    out: _Alignment,
) -> list[tuple[list[int], list[int]]]:
    """Pair the facts left unaligned that have equal signatures, wherever they are.

    For runs whose calls were made concurrently the order of facts says nothing: the
    same calls in another interleaving must align as unchanged, not as changed pairs
    of neighbours. Among facts of one signature, equal content pairs first. Returns
    what is left of each group, to be paired by identity.
    """
    olds: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    news: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for old_idx, new_idx in groups:
        for i in old_idx:
            olds[old_sig[i]].append(i)
        for j in new_idx:
            news[new_sig[j]].append(j)
    taken_old: set[int] = set()
    taken_new: set[int] = set()
    for sig, old_idx in olds.items():
        rest = news.get(sig, [])
        if not rest:
            continue
        if len(old_idx) * len(rest) <= _SIMILARITY_PAIRING_MAX:
            rest = list(rest)
            for i in old_idx:  # equal content first: identical requests, equal answers
                same = next((j for j in rest if comparer.distance(i, j) == 0), None)
                if same is not None:
                    rest.remove(same)
                    out.pairs.append((i, same))
                    taken_old.add(i)
                    taken_new.add(same)
        left = [i for i in old_idx if i not in taken_old]
        for i, j in zip(left, rest, strict=False):
            out.pairs.append((i, j))
            taken_old.add(i)
            taken_new.add(j)
    return [
        ([i for i in old_idx if i not in taken_old], [j for j in new_idx if j not in taken_new])
        for old_idx, new_idx in groups
    ]


def _pair_range(
    old_idx: list[int], new_idx: list[int], comparer: _Comparer, out: _Alignment
) -> None:
    """Pair the differing facts of one range by identity; the rest are added/removed."""
    old_groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    new_groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i in old_idx:
        old_groups[_identity(comparer.old[i])].append(i)
    for j in new_idx:
        new_groups[_identity(comparer.new[j])].append(j)
    for key in dict.fromkeys([*old_groups, *new_groups]):
        olds, news = old_groups.get(key, []), new_groups.get(key, [])
        if len(olds) == len(news) or len(olds) * len(news) > _SIMILARITY_PAIRING_MAX:
            pairs = list(zip(olds, news, strict=False))
        else:
            pairs = _closest_pairs(olds, news, comparer)
        out.pairs.extend(pairs)
        paired_old = {i for i, _ in pairs}
        paired_new = {j for _, j in pairs}
        out.removed.extend(i for i in olds if i not in paired_old)
        out.added.extend(j for j in news if j not in paired_new)


def _closest_pairs(olds: list[int], news: list[int], comparer: _Comparer) -> list[tuple[int, int]]:
    """Order-preserving pairing of every fact of the shorter list with its most similar."""
    swap = len(olds) > len(news)
    short, long = (news, olds) if swap else (olds, news)

    def cost(s: int, t: int) -> int:
        return comparer.distance(t, s) if swap else comparer.distance(s, t)

    m, n = len(short), len(long)
    inf = float("inf")
    # best[i][j]: least total distance pairing short[:i] within long[:j]
    best = [[0.0] * (n + 1)] + [[inf] * (n + 1) for _ in range(m)]
    for i in range(1, m + 1):
        for j in range(i, n + 1):
            best[i][j] = min(best[i][j - 1], best[i - 1][j - 1] + cost(short[i - 1], long[j - 1]))
    pairs = []
    i, j = m, n
    while i > 0:
        if j > i and best[i][j] == best[i][j - 1]:
            j -= 1
        else:
            pairs.append((short[i - 1], long[j - 1]))
            i, j = i - 1, j - 1
    pairs.reverse()
    return [(b, a) for a, b in pairs] if swap else pairs


def _find_moves(
    old_sig: list[tuple[Any, ...]], new_sig: list[tuple[Any, ...]], out: _Alignment
) -> None:
    """Facts removed at one place and added, identical, at another: moved.

    Only stretches holding more than step facts count, so a node invoked at another
    place with other calls is not called a move of its start and end steps.
    """
    out.removed.sort()
    out.added.sort()
    matcher = difflib.SequenceMatcher(
        None, [old_sig[i] for i in out.removed], [new_sig[j] for j in out.added]
    )
    taken_old: set[int] = set()
    taken_new: set[int] = set()
    for block in matcher.get_matching_blocks():
        moved = [(out.removed[block.a + k], out.added[block.b + k]) for k in range(block.size)]
        if all(old_sig[i][1] == "step" for i, _ in moved):
            continue
        out.moves.append(moved)
        taken_old.update(i for i, _ in moved)
        taken_new.update(j for _, j in moved)
    out.removed = [i for i in out.removed if i not in taken_old]
    out.added = [j for j in out.added if j not in taken_new]


# --- the engine ------------------------------------------------------------------------


def diff_runs(
    old: RunLike,
    new: RunLike,
    *,
    ignore: Iterable[str] = (),
    max_changes: int | None = 50,
    max_paths: int = 20,
    check_order: bool = True,
    unrelated_below: float = 0.2,
) -> RunDiff:
    """Compare two runs: DAG, aligned facts, gates, artifacts, errors, tokens and cost.

    :param ignore: JSON pointers into facts whose values are not compared, such as
        ``"/response/id"``; ``*`` stands for any one key or index. Volatile fields
        (``trace_id``, ``span_id``, ``at``, ``duration_ms``) and numbering (``seq``,
        ``ordinal``) are always ignored.
    :param max_changes: at most this many change records are kept (``None``: all); the
        least important are cut first and counted in :attr:`RunDiff.cut`.
    :param max_paths: at most this many pointer paths per changed fact or config key.
    :param check_order: report facts that moved to another place in the run. Moved
        facts stay aligned either way; turn this off for hosts whose nodes run
        concurrently.
    :param unrelated_below: when the DAG names differ and fewer than this share of facts
        align, the verdict is ``unrelated`` and nothing else is reported.
    """
    patterns = _parse_ignore(ignore)
    old_facts, new_facts = old.facts, new.facts
    comparer = _Comparer(old_facts, new_facts, patterns, max_paths)
    alignment = _align(comparer, check_order=check_order)
    moved_pairs = [pair for move in alignment.moves for pair in move]
    pairs = sorted([*alignment.pairs, *moved_pairs])
    total = len(old_facts) + len(new_facts)
    share = 2 * len(pairs) / total if total else 1.0
    usage, total_usage = _usage_deltas(old_facts, new_facts)

    if old.dag.name != new.dag.name and share < unrelated_below:
        stats = DiffStats(len(old_facts), len(new_facts), len(pairs), 0, 0, 0, 0, 0, share)
        return RunDiff(
            "unrelated", old.dag.name, new.dag.name, (), (), tuple(usage), total_usage, stats
        )

    comparer.old_seq_of_new = {new_facts[j].seq: old_facts[i].seq for i, j in pairs}
    # Every record gets a place in the new run's order; a removed fact goes after the
    # new place of the last aligned fact that preceded it in the old run.
    placed: list[tuple[tuple[int, int, int], FactChange]] = []
    changed = 0
    for i, j in pairs:
        record = comparer.compare(i, j)
        if record is not None:
            changed += 1
            placed.append(((j, 1, 0), record))
    for j in alignment.added:
        placed.append(((j, 2, 0), FactAdded(new_facts[j])))
    if alignment.removed:
        after = [-1] * len(old_facts)
        for i, j in pairs:
            after[i] = j
        last = -1
        for i in range(len(old_facts)):
            last = after[i] if after[i] >= 0 else last
            after[i] = last
        for i in alignment.removed:
            placed.append(((after[i], 3, i), FactRemoved(old_facts[i])))
    if check_order:
        for move in alignment.moves:
            for group in _by_node(move, new_facts):
                moved = FactsMoved(
                    new_facts[group[0][1]].node,
                    tuple(old_facts[i].seq for i, _ in group),
                    tuple(new_facts[j].seq for _, j in group),
                )
                placed.append(((group[0][1], 0, 0), moved))

    dag_changes = diff_dags(old.dag, new.dag, max_paths=max_paths)
    cut = 0
    if max_changes is not None and len(dag_changes) + len(placed) > max_changes:
        keep = max(max_changes - len(dag_changes), 0)
        cut = len(placed) - keep + max(len(dag_changes) - max_changes, 0)
        placed = sorted(placed, key=lambda item: (item[1].rank, item[0]))[:keep]
        dag_changes = dag_changes[:max_changes]
    placed.sort(key=lambda item: item[0])
    stats = DiffStats(
        old_facts=len(old_facts),
        new_facts=len(new_facts),
        aligned=len(pairs),
        unchanged=len(pairs) - changed,
        changed=changed,
        added=len(alignment.added),
        removed=len(alignment.removed),
        moved=len(moved_pairs),
        alignment=share,
    )
    changes_found = bool(dag_changes or placed or cut)
    return RunDiff(
        "changed" if changes_found else "same",
        old.dag.name,
        new.dag.name,
        tuple(dag_changes),
        tuple(record for _, record in placed),
        tuple(usage),
        total_usage,
        stats,
        cut,
    )


def _by_node(pairs: list[tuple[int, int]], new: Sequence[Fact]) -> list[list[tuple[int, int]]]:
    groups: list[list[tuple[int, int]]] = []
    for pair in pairs:
        if groups and new[groups[-1][-1][1]].node == new[pair[1]].node:
            groups[-1].append(pair)
        else:
            groups.append([pair])
    return groups
