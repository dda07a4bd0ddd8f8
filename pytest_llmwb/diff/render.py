"""Renderers of a :class:`~pytest_llmwb.diff.engine.RunDiff`: terminal, Markdown, JSON.

All three lead with the verdict in words and grow with the change, not with the run:
they only walk the (already bounded) change records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson

from .engine import (
    ABSENT,
    Change,
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
    NodeUsage,
    RunDiff,
    UsageDelta,
    ValueChange,
    fact_label,
)

__all__ = ["render_json", "render_markdown", "render_text"]

_VALUE_WIDTH = 80
_JSON_VALUE_MAX = 1000


# --- shared words ----------------------------------------------------------------------


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def _show(value: Any, width: int = _VALUE_WIDTH) -> str:
    """A value in one line: JSON, shortened to ``width`` characters."""
    if value is ABSENT:
        return "(absent)"
    text = _json_text(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _mark(change: Change) -> str:
    if isinstance(change, (NodeAdded, EdgeAdded, FactAdded)):
        return "+"
    if isinstance(change, (NodeRemoved, EdgeRemoved, FactRemoved)):
        return "-"
    if isinstance(change, FactsMoved):
        return ">"
    return "~"


def _seqs(change: Change) -> str:
    if isinstance(change, FactChanged):
        old, new = change.old.seq, change.new.seq
        return f"seq {new}" if old == new else f"seq {old} → {new}"
    if isinstance(change, (FactAdded, FactRemoved)):
        return f"seq {change.fact.seq}"
    return ""


def _paths(change: Change) -> tuple[Sequence[ValueChange], int]:
    """The value changes a record shows below its line, and how many were cut."""
    if isinstance(change, FactChanged):
        return change.details, change.cut_paths
    if isinstance(change, NodeConfigChanged):
        return change.changes, change.cut_paths
    return (), 0


def _number(old: int, new: int) -> str:
    if old == new:
        return f"{new:,}"
    return f"{old:,} → {new:,} ({new - old:+,})"


def _money(old: NodeUsage, new: NodeUsage) -> list[str]:
    out = []
    for currency in dict.fromkeys([*old.cost, *new.cost]):
        before, after = old.cost.get(currency, Decimal(0)), new.cost.get(currency, Decimal(0))
        if before == after:
            out.append(f"{after:f} {currency}")
        else:
            out.append(f"{before:f} → {after:f} {currency} ({after - before:+f})")
    return out


def _usage_words(delta: UsageDelta, *, calls: bool) -> list[str]:
    """``calls 1 → 2``, ``tokens 100 → 220 (+120)``, ``cost ... USD (+0.0012)``."""
    old, new = delta.old, delta.new
    words = []
    if calls and old.calls != new.calls:
        words.append(f"calls {old.calls} → {new.calls}")
    if old.total_tokens != new.total_tokens or not calls:
        words.append(f"tokens {_number(old.total_tokens, new.total_tokens)}")
    if old.cost != new.cost:
        words.extend(f"cost {money}" for money in _money(old, new) if "→" in money)
    return words


def _dag_title(diff: RunDiff) -> str:
    if diff.old_dag == diff.new_dag:
        return diff.new_dag
    return f"{diff.old_dag} → {diff.new_dag}"


def _more(count: int, what: str) -> str:
    return f"… {count} more {what}{'s' if count != 1 else ''}"


# --- terminal --------------------------------------------------------------------------

_RESET = "\x1b[0m"
_STYLES = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "+": "\x1b[32m",
    "-": "\x1b[31m",
    "~": "\x1b[33m",
    ">": "\x1b[35m",
    "@": "\x1b[36m",
}


def _painter(color: bool) -> Callable[[str, str], str]:
    def paint(style: str, text: str) -> str:
        return f"{_STYLES[style]}{text}{_RESET}" if color and text else text

    return paint


def _diff_line_style(line: str) -> str:
    if line.startswith("@@"):
        return "@"
    if line[:1] in ("+", "-"):
        return line[0]
    return "dim"


def render_text(diff: RunDiff, color: bool = False) -> str:
    """Compact terminal output; ANSI colours only when ``color`` is true.

    The first line is the verdict in words, the second (when tokens or cost moved) the
    total usage change; sections for the DAG, the facts and usage by node follow.
    """
    paint = _painter(color)
    lines = [paint("bold", diff.summary)]
    if diff.total_usage.changed:
        lines.append(", ".join(_usage_words(diff.total_usage, calls=False)))
    if diff.verdict != "changed":
        return "\n".join(lines) + "\n"

    def record(change: Change) -> None:
        mark = _mark(change)
        seqs = _seqs(change)
        lines.append(
            f"  {paint(mark, mark)} {change.summary}"
            + (f" {paint('dim', f'[{seqs}]')}" if seqs else "")
        )
        shown, cut = _paths(change)
        for value in shown:
            if value.text_diff:
                lines.append(f"      {value.path}:")
                lines.extend(
                    f"        {paint(_diff_line_style(line), line)}" for line in value.text_diff
                )
            else:
                lines.append(f"      {value.path}: {_show(value.old)} → {_show(value.new)}")
        if cut:
            lines.append(f"      {_more(cut, 'path')}")

    if diff.dag_changes:
        lines += ["", f"DAG {_dag_title(diff)}"]
        for dag_change in diff.dag_changes:
            record(dag_change)
    if diff.fact_changes:
        lines += ["", f"Facts ({diff.stats.old_facts} → {diff.stats.new_facts})"]
        for fact_change in diff.fact_changes:
            record(fact_change)
    if diff.usage:
        lines += ["", "Tokens and cost by node"]
        for delta in diff.usage:
            lines.append(f"  {delta.node}: {', '.join(_usage_words(delta, calls=True))}")
    if diff.cut:
        lines += ["", f"{_more(diff.cut, 'change')} not shown (raise max_changes)"]
    return "\n".join(lines) + "\n"


# --- Markdown --------------------------------------------------------------------------

_MD_SPECIAL = str.maketrans({char: "\\" + char for char in "\\`*_[]<>|~"})


def _md(text: str) -> str:
    return text.translate(_MD_SPECIAL)


def _code(text: str) -> str:
    if "`" not in text:
        return f"`{text}`"
    return f"`` {text.replace('``', '` `')} ``"


def _fence(lines: Sequence[str]) -> str:
    """A code fence longer than any run of backticks in ``lines``."""
    ticks = 3
    for line in lines:
        run = 0
        for char in line:
            run = run + 1 if char == "`" else 0
            ticks = max(ticks, run + 1)
    return "`" * ticks


def render_markdown(diff: RunDiff) -> str:
    """Markdown for a PR comment or ``$GITHUB_STEP_SUMMARY``.

    A heading and the verdict, then lists of DAG and fact changes (text diffs in
    ```` ```diff ```` blocks) and a table of token and cost changes by node.
    """
    verdict, _, words = diff.summary.partition(": ")
    out: list[str] = ["### llmwb diff", "", f"**{_md(verdict)}**: {_md(words)}"]
    if diff.total_usage.changed:
        out += ["", _md(", ".join(_usage_words(diff.total_usage, calls=False)))]
    if diff.verdict != "changed":
        return "\n".join(out) + "\n"

    def record(change: Change) -> None:
        seqs = _seqs(change)
        out.append(
            f"- {_code(_mark(change))} {_md(change.summary)}" + (f" — {seqs}" if seqs else "")
        )
        shown, cut = _paths(change)
        for value in shown:
            path = _code(value.path)
            if value.text_diff:
                fence = _fence(value.text_diff)
                out.extend([f"  - {path}:", "", f"    {fence}diff"])
                out.extend(f"    {line}" for line in value.text_diff)
                out.append(f"    {fence}")
            else:
                old, new = _code(_show(value.old)), _code(_show(value.new))
                out.append(f"  - {path}: {old} → {new}")
        if cut:
            out.append(f"  - {_more(cut, 'path')}")

    if diff.dag_changes:
        out += ["", f"#### DAG {_code(_dag_title(diff))}", ""]
        for dag_change in diff.dag_changes:
            record(dag_change)
    if diff.fact_changes:
        out += ["", f"#### Facts ({diff.stats.old_facts} → {diff.stats.new_facts})", ""]
        for fact_change in diff.fact_changes:
            record(fact_change)
    if diff.usage:
        out += ["", "#### Tokens and cost by node", ""]
        out += ["| node | calls | tokens | cost |", "|---|---|---|---|"]
        for delta in [*diff.usage, diff.total_usage]:
            node = _md(delta.node) if delta.node is not None else "**total**"
            calls = _number(delta.old.calls, delta.new.calls)
            tokens = _number(delta.old.total_tokens, delta.new.total_tokens)
            cost = "<br>".join(_md(money) for money in _money(delta.old, delta.new))
            out.append(f"| {node} | {calls} | {tokens} | {cost} |")
    if diff.cut:
        out += ["", f"_{_more(diff.cut, 'change')} not shown (raise max\\_changes)._"]
    return "\n".join(out) + "\n"


# --- JSON ------------------------------------------------------------------------------


def _json_value(out: dict[str, Any], name: str, value: Any) -> None:
    if value is ABSENT:
        return
    text = _json_text(value)
    if len(text) > _JSON_VALUE_MAX:
        out[f"{name}_truncated"] = text[:_JSON_VALUE_MAX] + "…"
    else:
        out[name] = value


def _value_change(value: ValueChange) -> dict[str, Any]:
    out: dict[str, Any] = {"path": value.path}
    _json_value(out, "old", value.old)
    _json_value(out, "new", value.new)
    if value.text_diff:
        out["text_diff"] = list(value.text_diff)
    return out


def _record(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {
        "change": change.change,
        "headline": change.headline,
        "summary": change.summary,
    }
    if isinstance(change, DagFieldChanged):
        out.update(field=change.field, old=change.old, new=change.new)
    elif isinstance(change, (NodeAdded, NodeRemoved)):
        out.update(node=change.node, kind=change.kind)
    elif isinstance(change, NodeKindChanged):
        out.update(node=change.node, old=change.old, new=change.new)
    elif isinstance(change, NodeConfigChanged):
        out.update(node=change.node, key=change.key)
        out["changes"] = [_value_change(value) for value in change.changes]
        out["cut_paths"] = change.cut_paths
    elif isinstance(change, (EdgeAdded, EdgeRemoved)):
        out.update(source=change.source, target=change.target)
    elif isinstance(change, (FactAdded, FactRemoved)):
        fact = change.fact
        out.update(kind=fact.kind, node=fact.node, seq=fact.seq, label=fact_label(fact))
    elif isinstance(change, FactChanged):
        out.update(kind=change.kind, node=change.node, label=fact_label(change.new))
        out.update(old_seq=change.old.seq, new_seq=change.new.seq)
        out["changes"] = [_value_change(value) for value in change.changes]
        out["cut_paths"] = change.cut_paths
    elif isinstance(change, FactsMoved):
        out.update(node=change.node, old_seqs=list(change.old_seqs))
        out["new_seqs"] = list(change.new_seqs)
    return out


def _node_usage(usage: NodeUsage) -> dict[str, Any]:
    out = dataclasses.asdict(usage)
    out["total_tokens"] = usage.total_tokens
    out["cost"] = {currency: str(amount) for currency, amount in usage.cost.items()}
    return out


def _usage(delta: UsageDelta) -> dict[str, Any]:
    return {
        "node": delta.node,
        "old": _node_usage(delta.old),
        "new": _node_usage(delta.new),
        "tokens_delta": delta.tokens,
        "cost_delta": {currency: str(amount) for currency, amount in delta.cost.items()},
    }


def render_json(diff: RunDiff) -> dict[str, Any]:
    """A JSON-serializable dict for tools: verdict, stats, change records, usage.

    Values longer than 1,000 characters of JSON are replaced by ``old_truncated`` /
    ``new_truncated`` previews; decimals are strings.
    """
    return {
        "verdict": diff.verdict,
        "same": diff.same,
        "summary": diff.summary,
        "old_dag": diff.old_dag,
        "new_dag": diff.new_dag,
        "stats": dataclasses.asdict(diff.stats),
        "dag_changes": [_record(change) for change in diff.dag_changes],
        "fact_changes": [_record(change) for change in diff.fact_changes],
        "cut": diff.cut,
        "usage": {
            "total": _usage(diff.total_usage),
            "nodes": [_usage(delta) for delta in diff.usage],
        },
    }
