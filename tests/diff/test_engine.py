from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from pytest_llmwb.codec import digest
from pytest_llmwb.dag import Dag
from pytest_llmwb.diff import (
    ABSENT,
    DagFieldChanged,
    EdgeAdded,
    EdgeRemoved,
    FactAdded,
    FactChanged,
    FactRemoved,
    FactsMoved,
    NodeAdded,
    NodeConfigChanged,
    NodeKindChanged,
    NodeRemoved,
    RunDiff,
    ValueChange,
    diff_runs,
)
from pytest_llmwb.exceptions import ConfigError
from pytest_llmwb.schema import (
    ArtifactFact,
    Cost,
    DagSnapshot,
    ErrorFact,
    Fact,
    GateFact,
    Message,
    ModelIOFact,
    ModelRequest,
    ModelResponse,
    PolicyRef,
    Reviewer,
    StepFact,
    SubjectRef,
    ToolCallFact,
    Usage,
)

DRAFT_PROMPT = "You are a support agent.\nWrite a reply to the customer.\nBe polite."


# --- building runs ---------------------------------------------------------------------


@dataclass
class RunData:
    """The smallest RunLike: a DAG snapshot and facts."""

    dag: DagSnapshot
    facts: list[Fact] = field(default_factory=list)


def support_dag(name: str = "support_agent", **draft_config: Any) -> DagSnapshot:
    config = {"prompt": DRAFT_PROMPT, "model": "small-1", **draft_config}
    return (
        Dag(name)
        .model("classify", prompt="Classify the ticket.", model="small-1")
        .tool("lookup_order", description="Find an order")
        .model("draft_reply", **config)
        .gate("approve_refund", policy="refunds")
        .chain("classify", "lookup_order", "draft_reply", "approve_refund")
        .freeze()
    )


class Recorder:
    """Appends facts with consecutive seqs and per-node ordinals, like a recorder would."""

    def __init__(self, dag: DagSnapshot | None = None) -> None:
        self.run = RunData(dag or support_dag())
        self._ordinals: Counter[str] = Counter()

    def _base(self, node: str) -> dict[str, Any]:
        return {"seq": len(self.run.facts) + 1, "node": node}

    def _ordinal(self, node: str) -> int:
        self._ordinals[node] += 1
        return self._ordinals[node] - 1

    def add(self, fact: Fact) -> Fact:
        self.run.facts.append(fact)
        return fact

    def step(self, node: str, phase: str, status: str | None = None) -> Fact:
        return self.add(StepFact(**self._base(node), phase=phase, status=status))  # type: ignore[arg-type]

    def model(
        self,
        node: str,
        user: str,
        reply: str,
        *,
        model: str = "small-1",
        system: str | None = None,
        tokens: tuple[int, int] = (100, 20),
        cost: str | None = "0.0010",
        finish_reason: str = "stop",
        response_id: str | None = None,
        **volatile: Any,
    ) -> Fact:
        request = ModelRequest(
            model=model, system=system, messages=[Message(role="user", content=user)]
        )
        response = ModelResponse(
            id=response_id,
            content=reply,
            finish_reason=finish_reason,
            usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        )
        return self.add(
            ModelIOFact(
                **self._base(node),
                **volatile,
                ordinal=self._ordinal(node),
                provider="openai",
                request=request,
                request_digest=digest(request.model_dump(mode="json")),
                response=response,
                cost=Cost(amount=cost, source="test-prices") if cost is not None else None,
            )
        )

    def tool(self, node: str, arguments: dict[str, Any], result: Any) -> Fact:
        return self.add(
            ToolCallFact(
                **self._base(node),
                ordinal=self._ordinal(node),
                tool=node,
                arguments=arguments,
                request_digest=digest({"tool": node, "arguments": arguments}),
                result=result,
            )
        )

    def gate(
        self,
        gate_id: str,
        decision: str,
        *,
        reviewer: str = "scripted",
        subject_seq: int | None = None,
        subject_revision: int | None = None,
    ) -> Fact:
        subject = None
        if subject_seq is not None:
            call = self.run.facts[subject_seq - 1]
            assert isinstance(call, ToolCallFact)
            subject = SubjectRef(kind="tool_call", digest=call.request_digest, seq=subject_seq)
        elif subject_revision is not None:
            subject = SubjectRef(
                kind="artifact",
                digest=digest(subject_revision),
                name="reply",
                revision=subject_revision,
            )
        return self.add(
            GateFact(
                **self._base(gate_id),
                ordinal=self._ordinal(gate_id),
                gate_id=gate_id,
                policy=PolicyRef(id="refunds"),
                subject=subject,
                decision=decision,  # type: ignore[arg-type]
                reviewer=Reviewer(id=reviewer, kind="test"),
            )
        )

    def artifact(self, node: str, name: str, content: Any, revision: int = 1) -> Fact:
        return self.add(
            ArtifactFact(
                **self._base(node),
                name=name,
                revision=revision,
                content=content,
                content_digest=digest(content),
            )
        )

    def error(self, node: str, type_: str, message: str) -> Fact:
        return self.add(ErrorFact(**self._base(node), type=type_, message=message))


def support_run(
    *,
    dag: DagSnapshot | None = None,
    reply: str = "We are sorry, a refund is on its way.",
    decision: str = "approved",
    extra_lookup: bool = False,
    drop_classify: bool = False,
    reply_tokens: tuple[int, int] = (100, 20),
    **volatile: Any,
) -> RunData:
    """A small support-agent run: classify, look up the order, draft, approve."""
    rec = Recorder(dag)
    if not drop_classify:
        rec.step("classify", "start")
        rec.model("classify", "Where is my refund?", "refund", tokens=(50, 2), **volatile)
        rec.step("classify", "end", "ok")
    rec.step("lookup_order", "start")
    lookup = rec.tool("lookup_order", {"order_id": "A1"}, {"status": "paid"})
    if extra_lookup:
        rec.tool("lookup_order", {"order_id": "A2"}, {"status": "open"})
    rec.step("lookup_order", "end", "ok")
    rec.step("draft_reply", "start")
    rec.model("draft_reply", "Write the reply.", reply, tokens=reply_tokens, **volatile)
    rec.artifact("draft_reply", "reply", {"body": reply, "tone": "polite"})
    rec.step("draft_reply", "end", "ok")
    rec.gate("approve_refund", decision, subject_seq=lookup.seq)
    return rec.run


def only(diff: RunDiff, kind: type) -> list[Any]:
    return [change for change in diff.changes if isinstance(change, kind)]


# --- identical runs and volatile values ------------------------------------------------


def test_identical_runs_are_same() -> None:
    diff = diff_runs(support_run(), support_run())
    assert diff.same
    assert diff.verdict == "same"
    assert diff.changes == ()
    assert diff.stats.unchanged == diff.stats.old_facts == 11
    assert diff.summary == "no changes: DAG support_agent, 11 facts"


def test_volatile_fields_and_numbering_are_ignored() -> None:
    old = support_run(trace_id="a" * 32, span_id="b" * 16, at="2025-01-01T00:00:00Z")
    new = support_run(trace_id="c" * 32, span_id="d" * 16, at="2025-06-01T00:00:00Z")
    new.facts[1] = new.facts[1].model_copy(
        update={"duration_ms": 999.0, "ordinal": 7, "exchange": "sha256:" + "0" * 64}
    )
    assert diff_runs(old, new).same


def test_extra_ignore_paths() -> None:
    rec_old, rec_new = Recorder(), Recorder()
    rec_old.model("classify", "hi", "refund", response_id="resp-1")
    rec_new.model("classify", "hi", "refund", response_id="resp-2")
    diff = diff_runs(rec_old.run, rec_new.run)
    assert [c.path for c in only(diff, FactChanged)[0].changes] == ["/response/id"]
    assert diff_runs(rec_old.run, rec_new.run, ignore=["/response/id"]).same
    assert diff_runs(rec_old.run, rec_new.run, ignore=["/*/id"]).same
    assert diff_runs(rec_old.run, rec_new.run, ignore="/response/id").same


def test_ignore_path_must_be_a_pointer() -> None:
    with pytest.raises(ConfigError, match="not a JSON pointer"):
        diff_runs(support_run(), support_run(), ignore=["response.id"])


# --- DAG -------------------------------------------------------------------------------


def test_dag_node_added_and_removed() -> None:
    old = support_run()
    dag = (
        Dag("support_agent")
        .model("classify", prompt="Classify the ticket.", model="small-1")
        .tool("lookup_order", description="Find an order")
        .model("draft_reply", prompt=DRAFT_PROMPT, model="small-1")
        .tool("audit_log")
        .chain("classify", "lookup_order", "draft_reply", "audit_log")
        .freeze()
    )
    new = support_run()
    new.dag = dag
    diff = diff_runs(old, new)
    assert only(diff, NodeRemoved) == [NodeRemoved("approve_refund", "gate")]
    assert only(diff, NodeAdded) == [NodeAdded("audit_log", "tool")]
    assert only(diff, EdgeRemoved) == [EdgeRemoved("draft_reply", "approve_refund")]
    assert only(diff, EdgeAdded) == [EdgeAdded("draft_reply", "audit_log")]
    assert diff.fact_changes == ()


def test_dag_prompt_change_is_a_text_diff() -> None:
    new_prompt = DRAFT_PROMPT.replace("Write a reply", "Write a short reply")
    diff = diff_runs(support_run(), support_run(dag=support_dag(prompt=new_prompt)))
    (change,) = diff.dag_changes
    assert isinstance(change, NodeConfigChanged)
    assert (change.node, change.key, change.headline) == (
        "draft_reply",
        "prompt",
        "node draft_reply prompt changed",
    )
    (value,) = change.changes
    assert value.path == "/prompt"
    assert value.text_diff == (
        "@@ -1,3 +1,3 @@",
        " You are a support agent.",
        "-Write a reply to the customer.",
        "+Write a short reply to the customer.",
        " Be polite.",
    )


def test_dag_config_value_and_nested_changes() -> None:
    schema_old = {"type": "object", "properties": {"id": {"type": "string"}}}
    schema_new = {"type": "object", "properties": {"id": {"type": "integer"}}}
    old = support_run(dag=support_dag(model="small-1", schema=schema_old))
    new = support_run(dag=support_dag(model="small-2", schema=schema_new, temperature=0.2))
    diff = diff_runs(old, new)
    changes = {(c.key, c.headline): c.changes for c in only(diff, NodeConfigChanged)}
    assert changes == {
        ("model", "node draft_reply model changed"): (ValueChange("/model", "small-1", "small-2"),),
        ("schema", "node draft_reply schema changed"): (
            ValueChange("/schema/properties/id/type", "string", "integer"),
        ),
        ("temperature", "node draft_reply temperature added"): (
            ValueChange("/temperature", ABSENT, 0.2),
        ),
    }


def test_dag_edge_kind_and_name_changes() -> None:
    old = RunData(Dag("a").node("x", "function").node("y").chain("x", "y").freeze())
    new = RunData(Dag("b").node("x", "agent").node("y").chain("y", "x").freeze())
    diff = diff_runs(old, new)
    assert diff.verdict == "changed"  # no facts: names differ but nothing to misalign
    assert diff.dag_changes == (
        DagFieldChanged("name", "a", "b"),
        NodeKindChanged("x", "function", "agent"),
        EdgeRemoved("x", "y"),
        EdgeAdded("y", "x"),
    )
    assert diff.dag_changes[0].headline == "DAG renamed a → b"


# --- model calls -----------------------------------------------------------------------


def _draft(diff: RunDiff) -> FactChanged:
    (change,) = [c for c in only(diff, FactChanged) if c.kind == "model_io"]
    assert isinstance(change, FactChanged)
    return change


def test_request_change_shows_pointer_paths() -> None:
    old, new = Recorder(), Recorder()
    old.model("draft_reply", "Write the reply.", "ok", system="Be brief.")
    new.model("draft_reply", "Write the reply now.", "ok", system="Be brief.", model="small-2")
    change = _draft(diff_runs(old.run, new.run))
    assert change.changes == (
        ValueChange("/request/model", "small-1", "small-2"),
        ValueChange("/request/messages/0/content", "Write the reply.", "Write the reply now."),
    )
    assert change.headline == "model call draft_reply#0 request changed"
    assert change.summary == "model call draft_reply#0: request changed (model, messages)"


def test_inserted_message_is_one_change_not_a_shift() -> None:
    def call(messages: list[str]) -> ModelIOFact:
        request = ModelRequest(
            model="m", messages=[Message(role="user", content=m) for m in messages]
        )
        return ModelIOFact(
            seq=1,
            node="n",
            ordinal=0,
            provider="p",
            request=request,
            request_digest=digest(request.model_dump(mode="json")),
        )

    dag = Dag("d").model("n").freeze()
    old = RunData(dag, [call(["a", "b", "c", "d"])])
    new = RunData(dag, [call(["a", "x", "b", "c", "d"])])
    (change,) = diff_runs(old, new).fact_changes
    assert isinstance(change, FactChanged)
    assert change.changes == (
        ValueChange(
            "/request/messages/1",
            ABSENT,
            {"role": "user", "content": "x", "name": None, "tool_calls": [], "tool_call_id": None},
        ),
    )


def test_response_change() -> None:
    old = support_run()
    new = support_run(reply="A refund has been issued.", reply_tokens=(100, 12))
    diff = diff_runs(old, new)
    change = _draft(diff)
    assert [(c.path, c.old, c.new) for c in change.changes] == [
        ("/response/content", "We are sorry, a refund is on its way.", "A refund has been issued."),
        ("/response/usage/output_tokens", 20, 12),
    ]
    assert change.summary == "model call draft_reply#0: response changed (content, usage)"
    (artifact,) = [c for c in only(diff, FactChanged) if c.kind == "artifact"]
    assert artifact.summary == "artifact reply: content changed (body)"
    assert [c.path for c in artifact.changes] == ["/content/body"]


def test_long_response_gets_a_text_diff() -> None:
    old_text = "line one\nline two\nline three"
    old, new = Recorder(), Recorder()
    old.model("draft_reply", "go", old_text)
    new.model("draft_reply", "go", old_text.replace("two", "2"))
    (value,) = _draft(diff_runs(old.run, new.run)).changes
    assert value.text_diff == (
        "@@ -1,3 +1,3 @@",
        " line one",
        "-line two",
        "+line 2",
        " line three",
    )


def test_inserted_call_does_not_shift_later_facts() -> None:
    old = support_run()
    new = support_run(extra_lookup=True)
    diff = diff_runs(old, new)
    (added,) = diff.fact_changes
    assert isinstance(added, FactAdded)
    assert added.fact.seq == 6
    assert added.summary == 'tool call lookup_order#1 added: {"order_id":"A2"}'
    assert diff.stats.unchanged == 11  # everything after the insertion still aligns


def test_removed_call() -> None:
    diff = diff_runs(support_run(), support_run(drop_classify=True))
    assert [c.headline for c in diff.fact_changes] == [
        "step classify start removed",
        "model call classify#0 removed",
        "step classify end removed",
    ]
    assert diff.fact_changes[1].summary == ("model call classify#0 removed: small-1, 52 tokens")
    # the gate still reviews the same lookup, though its seq went from 5 to 2
    assert diff.stats.unchanged == 8


def test_gate_reference_to_a_different_call_is_a_change() -> None:
    old = support_run()
    new = support_run(extra_lookup=True)
    gate = new.facts[-1]
    assert isinstance(gate, GateFact) and gate.subject is not None
    new.facts[-1] = gate.model_copy(update={"subject": gate.subject.model_copy(update={"seq": 6})})
    (change,) = only(diff_runs(old, new), FactChanged)
    assert change.changes == (ValueChange("/subject/seq", 5, 6),)


def test_moved_block() -> None:
    rec_old, rec_new = Recorder(), Recorder()
    for rec, order in (
        (rec_old, ["classify", "draft_reply"]),
        (rec_new, ["draft_reply", "classify"]),
    ):
        for node in order:
            rec.step(node, "start")
            rec.model(node, f"{node} input", f"{node} output")
            rec.step(node, "end", "ok")
    for _ in range(2):
        rec_old.tool("lookup_order", {"n": _}, None)
        rec_new.tool("lookup_order", {"n": _}, None)
    diff = diff_runs(rec_old.run, rec_new.run)
    (moved,) = diff.fact_changes
    assert isinstance(moved, FactsMoved)
    assert moved.summary == "3 facts of node classify moved (seq 1-3 → 4-6)"
    assert diff_runs(rec_old.run, rec_new.run, check_order=False).same


def interleaved(order: list[tuple[str, str]]) -> RunData:
    """Tool and model calls of three tasks, in the order a scheduler interleaved them."""
    rec = Recorder()
    rec.step("classify", "start")
    for node, task in order:
        if node == "lookup_order":
            rec.tool(node, {"task": task}, {"found": task})
        else:
            rec.model(node, f"reply for {task}", f"dear {task}")
    rec.step("classify", "end", "ok")
    return rec.run


def test_no_order_shows_no_change_between_equivalent_concurrent_runs() -> None:
    calls = [(node, task) for task in "abc" for node in ("lookup_order", "draft_reply")]
    old = interleaved(calls)
    new = interleaved([calls[i] for i in (2, 4, 5, 0, 3, 1)])
    assert not diff_runs(old, new).same  # the order differs
    diff = diff_runs(old, new, check_order=False)
    assert diff.same, diff.fact_changes
    # a real change still shows
    changed = interleaved([*calls[:-1], ("draft_reply", "z")])
    (change,) = diff_runs(old, changed, check_order=False).fact_changes
    assert isinstance(change, FactChanged)


# --- gates, artifacts, errors ----------------------------------------------------------


def test_gate_decision_change_is_worded_plainly() -> None:
    diff = diff_runs(support_run(), support_run(decision="rejected"))
    (change,) = diff.fact_changes
    assert isinstance(change, FactChanged)
    assert change.summary == "gate approve_refund: approved → rejected (reviewer test:scripted)"
    assert change.headline == "gate approve_refund approved → rejected"
    assert change.details == ()
    assert diff.summary == "1 change: gate approve_refund approved → rejected"


def test_gate_reviewer_and_subject_revision_change() -> None:
    old, new = Recorder(), Recorder()
    old.gate("approve_refund", "approved", reviewer="alice", subject_revision=1)
    new.gate("approve_refund", "edited", reviewer="bob", subject_revision=2)
    (change,) = diff_runs(old.run, new.run).fact_changes
    assert isinstance(change, FactChanged)
    assert change.summary == (
        "gate approve_refund: approved → edited (reviewer test:alice → test:bob); "
        "subject revision 1 → 2; subject digest changed"
    )
    assert change.details == ()


def test_artifact_content_and_revision_change() -> None:
    old, new = Recorder(), Recorder()
    old.artifact("draft_reply", "reply", {"body": "Hi", "tags": ["a"]})
    new.artifact("draft_reply", "reply", {"body": "Hello", "tags": ["a", "b"]}, revision=2)
    (change,) = diff_runs(old.run, new.run).fact_changes
    assert isinstance(change, FactChanged)
    assert change.changes == (
        ValueChange("/revision", 1, 2),
        ValueChange("/content/body", "Hi", "Hello"),
        ValueChange("/content/tags/1", ABSENT, "b"),
    )
    assert change.summary == "artifact reply: revision 1 → 2; content changed (body, tags)"


def test_error_added_and_removed() -> None:
    old, new = Recorder(), Recorder()
    for rec in (old, new):
        rec.step("draft_reply", "start")
    old.error("draft_reply", "TimeoutError", "model did not answer")
    old.step("draft_reply", "end", "error")
    new.model("draft_reply", "go", "done")
    new.step("draft_reply", "end", "ok")
    diff = diff_runs(old.run, new.run)
    # like a unified diff: what went away, then what came in its place
    assert [c.summary for c in diff.fact_changes] == [
        "error in draft_reply removed: TimeoutError: model did not answer",
        "model call draft_reply#0 added: small-1, 120 tokens",
        "step draft_reply end: status error → ok",
    ]


# --- usage -----------------------------------------------------------------------------


def test_token_and_cost_deltas() -> None:
    old = support_run()
    new = support_run(extra_lookup=True, reply="Refund sent.", reply_tokens=(100, 80))
    rec = Recorder(new.dag)
    rec.run.facts = new.facts
    rec.model("draft_reply", "Again.", "Refund sent!", tokens=(10, 5), cost="0.0025")
    diff = diff_runs(old, new)
    (draft,) = diff.usage
    assert draft.node == "draft_reply"
    assert (draft.old.calls, draft.new.calls) == (1, 2)
    assert (draft.old.total_tokens, draft.new.total_tokens, draft.tokens) == (120, 195, 75)
    assert draft.cost == {"USD": Decimal("0.0025")}
    total = diff.total_usage
    assert (total.old.total_tokens, total.new.total_tokens) == (172, 247)
    assert total.new.cost == {"USD": Decimal("0.0045")}


# --- unrelated runs and bounds ---------------------------------------------------------


def test_unrelated_runs() -> None:
    other = Recorder(Dag("billing_agent").model("invoice").freeze())
    for n in range(5):
        other.model("invoice", f"invoice {n}", "ok")
    diff = diff_runs(support_run(), other.run)
    assert diff.verdict == "unrelated"
    assert diff.changes == ()
    assert diff.summary == (
        "unrelated runs: DAG support_agent vs billing_agent, 0% of facts align "
        "(11 vs 5 facts); not compared"
    )


def test_renamed_dag_with_same_facts_is_not_unrelated() -> None:
    diff = diff_runs(support_run(), support_run(dag=support_dag(name="support_agent_v2")))
    assert diff.verdict == "changed"
    assert diff.dag_changes == (DagFieldChanged("name", "support_agent", "support_agent_v2"),)


def test_bounded_output_counts_what_was_cut() -> None:
    old, new = Recorder(), Recorder()
    for n in range(30):
        old.model("classify", f"ticket {n}", "refund")
        new.model("classify", f"ticket {n}", "question")
    old.gate("approve_refund", "approved")
    new.gate("approve_refund", "rejected")
    diff = diff_runs(old.run, new.run, max_changes=5)
    assert diff.cut == 26
    assert diff.change_count == 31
    assert len(diff.fact_changes) == 5
    # the gate outranks model calls; the kept records stay in run order
    assert diff.fact_changes[-1].headline == "gate approve_refund approved → rejected"
    assert [c.new.seq for c in diff.fact_changes[:4] if isinstance(c, FactChanged)] == [1, 2, 3, 4]
    assert diff.summary == (
        "31 changes: gate approve_refund approved → rejected; "
        "model call classify#0 response changed; model call classify#1 response changed; "
        "and 28 more"
    )


def test_max_paths_bounds_one_fact() -> None:
    old, new = Recorder(), Recorder()
    old.artifact("n", "table", {f"k{i}": i for i in range(30)})
    new.artifact("n", "table", {f"k{i}": i + 1 for i in range(30)})
    (change,) = diff_runs(old.run, new.run, max_paths=4).fact_changes
    assert isinstance(change, FactChanged)
    assert len(change.changes) == 4
    assert change.cut_paths == 26


# --- scale -----------------------------------------------------------------------------


def _big_runs(invocations: int) -> tuple[RunData, RunData, dict[str, int]]:
    """Two ~10,000-fact runs; about 1% of facts changed, inserted, removed or moved."""
    nodes = ["classify", "lookup_order", "draft_reply", "approve_refund"]
    old, new = Recorder(), Recorder()
    expected = Counter[str]()
    for n in range(invocations):
        for rec in (old, new):
            rec.step(nodes[n % 3], "start")
        changed_reply = n % 50 == 7
        old.model(nodes[n % 3], f"ticket {n}", f"answer {n}")
        new.model(nodes[n % 3], f"ticket {n}", f"answer {n}" + ("!" if changed_reply else ""))
        expected["model_io changed"] += changed_reply
        if n % 100 == 30:
            new.tool("lookup_order", {"order": n}, {"ok": True})
            expected["added"] += 1
        if n % 100 == 60:
            old.tool("lookup_order", {"order": n}, {"ok": True})
            expected["removed"] += 1
        flip = n % 100 == 90
        old.gate("approve_refund", "approved")
        new.gate("approve_refund", "rejected" if flip else "approved")
        expected["gate changed"] += flip
        for rec in (old, new):
            rec.step(nodes[n % 3], "end", "ok")
    return old.run, new.run, dict(expected)


def test_ten_thousand_facts() -> None:
    old, new, expected = _big_runs(2500)
    assert len(old.facts) == len(new.facts) == 10_025
    diff = diff_runs(old, new, max_changes=None)
    counts = Counter[str]()
    for change in diff.fact_changes:
        if isinstance(change, FactChanged):
            counts[f"{change.kind} changed"] += 1
        elif isinstance(change, FactAdded):
            counts["added"] += 1
            assert change.fact.kind == "tool_call"
        elif isinstance(change, FactRemoved):
            counts["removed"] += 1
            assert change.fact.kind == "tool_call"
        else:
            counts["other"] += 1
    assert (
        dict(counts)
        == expected
        == {
            "model_io changed": 50,
            "added": 25,
            "removed": 25,
            "gate changed": 25,
        }
    )
    assert diff.stats.unchanged == 10_000 - 75
    assert all(
        isinstance(c, FactChanged) and c.old.node == c.new.node and c.changes
        for c in diff.fact_changes
        if isinstance(c, FactChanged)
    )


def test_inserted_call_among_changed_calls_pairs_by_similarity() -> None:
    old, new = Recorder(), Recorder()
    for user in ("ticket 1", "ticket 2"):
        old.model("draft_reply", user, f"re: {user}", system="Be brief.")
    for user in ("ticket 0", "ticket 1", "ticket 2"):
        new.model("draft_reply", user, f"re: {user}", system="Be very brief.")
    diff = diff_runs(old.run, new.run)
    assert [c.summary for c in diff.fact_changes] == [
        "model call draft_reply#0 added: small-1, 120 tokens",
        "model call draft_reply#1: request changed (system)",
        "model call draft_reply#2: request changed (system)",
    ]


def test_long_stretch_without_unique_facts_pairs_in_order() -> None:
    old, new = Recorder(), Recorder()
    for _ in range(300):
        old.gate("approve_refund", "approved")
        new.gate("approve_refund", "rejected")
    diff = diff_runs(old.run, new.run, max_changes=None)
    assert diff.stats.changed == 300
    assert all(isinstance(c, FactChanged) and c.old.seq == c.new.seq for c in diff.fact_changes)
