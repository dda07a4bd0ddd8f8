"""Verify mode: what a live run's responses and tool results are compared on.

In ``verify`` every call runs live and its request must match the bundle (a changed
request is drift, as in replay). After the run, each live call is compared with the
call recorded at the same node and ordinal:

- **compared** (a difference fails the test with
  :class:`~pytest_llmwb.exceptions.ResponseDriftError`): a model response's
  ``content``, its tool calls (``name`` and ``arguments``, in order), its
  ``finish_reason`` and its error type; a tool call's ``result`` and error type.
- **reported** (listed, never failing): the response ``model`` (a provider's dated
  version behind an alias), ``usage`` (normalized token counts) and an error's message.
- **ignored**: ids (response id, tool-call ids, request ids), timestamps and
  durations, how a stream was split into chunks, cost, provider extras.

Each difference is a JSON pointer into the normalized fact with the recorded and the
live value. Calls with no recorded counterpart are left to the request checks
(unexpected and missing calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import pointer_changes

__all__ = ["VerifyDifference", "compare_run", "compared_view"]

#: Fact fields whose differences fail a verify run, per fact kind.
COMPARED: dict[str, tuple[str, ...]] = {
    "model_io": ("content", "tool_calls", "finish_reason", "error"),
    "tool_call": ("result", "error"),
}
#: Fact fields whose differences are reported only.
REPORTED: dict[str, tuple[str, ...]] = {
    "model_io": ("model", "usage", "error_message"),
    "tool_call": ("error_message",),
}


@dataclass(frozen=True)
class VerifyDifference:
    """One difference between a live call and its recording: where, what, and whether it fails."""

    node: str
    ordinal: int
    kind: str
    path: str
    recorded: Any
    live: Any
    fails: bool

    def line(self) -> str:
        """``node 'x' ordinal 0 (model_io): /content: 'old' -> 'new'``, marked if reported only."""
        from .replay import short

        note = "" if self.fails else " (reported, not compared)"
        return (
            f"node {self.node!r} ordinal {self.ordinal} ({self.kind}): {self.path}: "
            f"{short(self.recorded)} -> {short(self.live)}{note}"
        )


def compared_view(fact: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parts of a call fact verify compares, and the parts it only reports."""
    data = fact.model_dump(mode="json")
    error = data.get("error") or {}
    if fact.kind == "model_io":
        response = data.get("response") or {}
        compared = {
            "content": response.get("content"),
            "tool_calls": [
                {"name": call.get("name"), "arguments": call.get("arguments")}
                for call in response.get("tool_calls") or ()
            ],
            "finish_reason": response.get("finish_reason"),
            "error": error.get("type"),
        }
        usage = dict(response.get("usage") or {})
        usage.pop("raw", None)  # the provider's own counts, said again normalized
        reported = {
            "model": response.get("model"),
            "usage": usage,
            "error_message": error.get("message"),
        }
    else:
        compared = {"result": data.get("result"), "error": error.get("type")}
        reported = {"error_message": error.get("message")}
    return compared, reported


def compare_run(run: Any) -> list[VerifyDifference]:
    """Every difference between the live calls of a ``verify`` run and its bundle.

    Also lists them, one line each, in ``run.verify_report``.
    """
    index = run.index
    if index is None:
        return []
    found: list[VerifyDifference] = []
    for fact in run.facts:
        if fact.kind not in COMPARED:
            continue
        recorded = index.recorded(fact.node, fact.ordinal)
        if recorded is None or recorded.kind != fact.kind:
            continue  # an extra call: the request checks report it
        old_compared, old_reported = compared_view(recorded)
        new_compared, new_reported = compared_view(fact)
        for fails, old, new in (
            (True, old_compared, new_compared),
            (False, old_reported, new_reported),
        ):
            for path, before, after in pointer_changes(old, new):
                found.append(
                    VerifyDifference(fact.node, fact.ordinal, fact.kind, path, before, after, fails)
                )
    run.verify_report[:] = [difference.line() for difference in found]
    return found
