from __future__ import annotations

import json

from pytest_llmwb.dag import Dag
from pytest_llmwb.diff import RunDiff, diff_runs, render_json, render_markdown, render_text

from .test_engine import DRAFT_PROMPT, Recorder, support_dag, support_run


def _review_diff() -> RunDiff:
    """A prompt edit, a changed reply, an extra lookup and a rejected refund."""
    new_prompt = DRAFT_PROMPT.replace("Write a reply", "Write a short reply")
    new = support_run(
        dag=support_dag(prompt=new_prompt),
        reply="Refund sent.",
        reply_tokens=(100, 8),
        decision="rejected",
        extra_lookup=True,
    )
    return diff_runs(support_run(), new)


def _gate_diff() -> RunDiff:
    return diff_runs(support_run(), support_run(decision="rejected"))


TEXT = """\
5 changes: node draft_reply prompt changed; gate approve_refund approved → rejected; \
artifact reply content changed; and 2 more
tokens 172 → 160 (-12)

DAG support_agent
  ~ node draft_reply prompt changed
      /prompt:
        @@ -1,3 +1,3 @@
         You are a support agent.
        -Write a reply to the customer.
        +Write a short reply to the customer.
         Be polite.

Facts (11 → 12)
  + tool call lookup_order#1 added: {"order_id":"A2"} [seq 6]
  ~ model call draft_reply#0: response changed (content, usage) [seq 8 → 9]
      /response/content: "We are sorry, a refund is on its way." → "Refund sent."
      /response/usage/output_tokens: 20 → 8
  ~ artifact reply: content changed (body) [seq 9 → 10]
      /content/body: "We are sorry, a refund is on its way." → "Refund sent."
  ~ gate approve_refund: approved → rejected (reviewer test:scripted) [seq 11 → 12]

Tokens and cost by node
  draft_reply: tokens 120 → 108 (-12)
"""


def test_text() -> None:
    assert render_text(_review_diff(), color=False) == TEXT


def test_text_in_color() -> None:
    assert render_text(_gate_diff(), color=True) == (
        "\x1b[1m1 change: gate approve_refund approved → rejected\x1b[0m\n"
        "\n"
        "Facts (11 → 11)\n"
        "  \x1b[33m~\x1b[0m gate approve_refund: approved → rejected (reviewer test:scripted)"
        " \x1b[2m[seq 11]\x1b[0m\n"
    )


def test_text_without_color_has_no_escapes() -> None:
    assert "\x1b" not in render_text(_review_diff(), color=False)


def test_text_same_and_unrelated() -> None:
    assert render_text(diff_runs(support_run(), support_run())) == (
        "no changes: DAG support_agent, 11 facts\n"
    )
    other = Recorder(Dag("billing_agent").model("invoice").freeze())
    other.model("invoice", "invoice 1", "ok")
    assert render_text(diff_runs(support_run(), other.run)) == (
        "unrelated runs: DAG support_agent vs billing_agent, 0% of facts align "
        "(11 vs 1 facts); not compared\n"
        "tokens 172 → 120 (-52), cost 0.0020 → 0.0010 USD (-0.0010)\n"
    )


def test_text_says_what_was_cut() -> None:
    old, new = Recorder(), Recorder()
    for n in range(12):
        old.tool("lookup_order", {"order_id": n}, "open")
        new.tool("lookup_order", {"order_id": n}, "closed")
    text = render_text(diff_runs(old.run, new.run, max_changes=2))
    assert text == (
        "12 changes: tool call lookup_order#0 result changed; "
        "tool call lookup_order#1 result changed; and 10 more\n"
        "\n"
        "Facts (12 → 12)\n"
        "  ~ tool call lookup_order#0: result changed [seq 1]\n"
        '      /result: "open" → "closed"\n'
        "  ~ tool call lookup_order#1: result changed [seq 2]\n"
        '      /result: "open" → "closed"\n'
        "\n"
        "… 10 more changes not shown (raise max_changes)\n"
    )


MARKDOWN = """\
### llmwb diff

**5 changes**: node draft\\_reply prompt changed; gate approve\\_refund approved → rejected; \
artifact reply content changed; and 2 more

tokens 172 → 160 (-12)

#### DAG `support_agent`

- `~` node draft\\_reply prompt changed
  - `/prompt`:

    ```diff
    @@ -1,3 +1,3 @@
     You are a support agent.
    -Write a reply to the customer.
    +Write a short reply to the customer.
     Be polite.
    ```

#### Facts (11 → 12)

- `+` tool call lookup\\_order#1 added: {"order\\_id":"A2"} — seq 6
- `~` model call draft\\_reply#0: response changed (content, usage) — seq 8 → 9
  - `/response/content`: `"We are sorry, a refund is on its way."` → `"Refund sent."`
  - `/response/usage/output_tokens`: `20` → `8`
- `~` artifact reply: content changed (body) — seq 9 → 10
  - `/content/body`: `"We are sorry, a refund is on its way."` → `"Refund sent."`
- `~` gate approve\\_refund: approved → rejected (reviewer test:scripted) — seq 11 → 12

#### Tokens and cost by node

| node | calls | tokens | cost |
|---|---|---|---|
| draft\\_reply | 1 | 120 → 108 (-12) | 0.0010 USD |
| **total** | 2 | 172 → 160 (-12) | 0.0020 USD |
"""


def test_markdown() -> None:
    assert render_markdown(_review_diff()) == MARKDOWN


def test_markdown_fence_outgrows_backticks_in_text() -> None:
    old, new = Recorder(), Recorder()
    old.model("draft_reply", "go", "Use ```code``` here\nand there")
    new.model("draft_reply", "go", "Use ```code``` now\nand there")
    markdown = render_markdown(diff_runs(old.run, new.run))
    assert "    ````diff\n" in markdown
    assert markdown.endswith("     and there\n    ````\n")


def test_json() -> None:
    out = render_json(_gate_diff())
    assert json.loads(json.dumps(out)) == out
    assert {key: out[key] for key in ("verdict", "same", "summary", "cut")} == {
        "verdict": "changed",
        "same": False,
        "summary": "1 change: gate approve_refund approved → rejected",
        "cut": 0,
    }
    assert out["fact_changes"] == [
        {
            "change": "fact_changed",
            "headline": "gate approve_refund approved → rejected",
            "summary": "gate approve_refund: approved → rejected (reviewer test:scripted)",
            "kind": "gate",
            "node": "approve_refund",
            "label": "gate approve_refund",
            "old_seq": 11,
            "new_seq": 11,
            "changes": [{"path": "/decision", "old": "approved", "new": "rejected"}],
            "cut_paths": 0,
        }
    ]
    assert out["usage"]["nodes"] == []
    assert out["usage"]["total"]["new"]["cost"] == {"USD": "0.0020"}


def test_json_usage_and_added_value() -> None:
    out = render_json(_review_diff())
    assert json.loads(json.dumps(out)) == out
    (draft,) = out["usage"]["nodes"]
    assert (draft["node"], draft["tokens_delta"], draft["cost_delta"]) == ("draft_reply", -12, {})
    assert out["dag_changes"][0]["changes"][0]["text_diff"][2] == "-Write a reply to the customer."
    assert out["stats"]["added"] == 1


def test_json_truncates_long_values_and_omits_absent_sides() -> None:
    old, new = Recorder(), Recorder()
    old.artifact("draft_reply", "reply", {"body": "x" * 5000})
    new.artifact("draft_reply", "reply", {"body": "y" * 5000, "note": "new"})
    (change,) = render_json(diff_runs(old.run, new.run))["fact_changes"]
    body, note = change["changes"]
    assert set(body) == {"path", "old_truncated", "new_truncated", "text_diff"}
    assert len(body["old_truncated"]) == 1001
    assert note == {"path": "/content/note", "new": "new"}


def test_output_grows_with_the_change_not_the_run() -> None:
    small_old, small_new = Recorder(), Recorder()
    big_old, big_new = Recorder(), Recorder()
    for rec_old, rec_new, calls in ((small_old, small_new, 3), (big_old, big_new, 600)):
        for n in range(calls):
            for rec in (rec_old, rec_new):
                rec.model("classify", f"ticket {n}", "refund")
        rec_old.gate("approve_refund", "approved")
        rec_new.gate("approve_refund", "rejected")
    small = diff_runs(small_old.run, small_new.run)
    big = diff_runs(big_old.run, big_new.run)
    assert render_text(big).replace("601", "4") == render_text(small)
    assert render_markdown(big).replace("601", "4") == render_markdown(small)
