"""Benchmark: the semantic diff of two 10,000-fact bundles with 1% of the facts changed.

    python benchmarks/bench_diff.py            # 10k facts (and 100k for the bounded output)
    python benchmarks/bench_diff.py --quick    # 1k facts: a smoke test

The synthetic run of ``bench_replay`` (40% model_io, 60% tool_call over 20 nodes, ~1.1
KB per fact) is recorded twice with ``Run`` + ``save``: as is, and with one fact in a
hundred changed (a model call's answer, or a tool call's arguments and result). Then,
interleaved round by round:

- ``load``: ``load_bundle`` of both bundles (read, validate every fact): the baseline;
- ``diff``: ``diff_runs`` of the two loaded runs (DAG, alignment, content), with the
  cyclic garbage collector paused, as ``llmwb diff`` and the golden check run it;
- ``diff_gc``: the same with the collector running (each collection rescans every
  object of both loaded bundles: the difference grows with the bundles);
- ``render``: ``render_text`` of that diff.

Reported: seconds for ``diff`` (goal: under 1 s on this machine) as a ratio to ``load``,
and the length of the output against the number of changes: with the default bound (50
change records) and unbounded, at 1%, 2% and 4% changed, and 1% of twice as many facts
(as many changes as 2% of the first size: the output follows the change, not the
bundle). Without ``--quick``, two 100,000-fact bundles with 1% changed show the bounded
output and its count of what was cut. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_replay import MODEL_NODES, TOOL_NODES, calls
from bench_stats import BenchResult, Row, interleaved, median, paired_ratios

from pytest_llmwb import Run
from pytest_llmwb.diff import diff_runs, render_text
from pytest_llmwb.diff.command import paused_gc
from pytest_llmwb.schema import ModelResponse
from pytest_llmwb.store import load_bundle

NAME = "diff"


def _record(path: Path, count: int, every: int | None) -> None:
    """Record the synthetic run; with ``every``, change one call in ``every``."""
    with Run(f"synthetic-{count}") as run:
        for i, call in enumerate(calls(count, results=True)):
            changed = every is not None and i % every == every // 2
            if call.kind == "model_io":
                response = dict(call.result)
                if changed:
                    response["content"] = f"a different answer, number {i}"
                run.model_io(
                    call.request, lambda _r, r=response: ModelResponse(**r), node=call.node
                )
            else:
                arguments = dict(call.request, page=call.request["page"] + 100 * changed)
                result = {"changed": i} if changed else call.result
                run.tool_call(call.node, arguments, lambda r=result: r, node=call.node)
    run.save(path)


def _lengths(old: Any, new: Any) -> dict[str, int]:
    bounded = diff_runs(old, new)
    unbounded = diff_runs(old, new, max_changes=None)
    return {
        "changes": unbounded.change_count,
        "bounded_chars": len(render_text(bounded)),
        "bounded_cut": bounded.cut,
        "unbounded_chars": len(render_text(unbounded)),
    }


def run(quick: bool) -> BenchResult:
    """Run the benchmark and return its rows and details."""
    size = 1_000 if quick else 10_000
    repeats = 3 if quick else 7
    result = BenchResult(NAME)
    with tempfile.TemporaryDirectory(prefix="llmwb-bench-diff-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        _record(root / "old", size, None)
        for every in (100, 50, 25):
            _record(root / f"new-{every}", size, every)
        _record(root / "old-2x", 2 * size, None)
        _record(root / "new-2x", 2 * size, 100)
        recorded_s = time.perf_counter() - started

        old, new = load_bundle(root / "old"), load_bundle(root / "new-100")
        diffs: list[Any] = []

        def load() -> float:
            t = time.perf_counter()
            load_bundle(root / "old")
            load_bundle(root / "new-100")
            return time.perf_counter() - t

        def diff() -> float:
            with paused_gc():
                t = time.perf_counter()
                diffs.append(diff_runs(old, new))
                return time.perf_counter() - t

        def diff_gc() -> float:
            t = time.perf_counter()
            diff_runs(old, new)
            return time.perf_counter() - t

        def render() -> float:
            t = time.perf_counter()
            render_text(diffs[-1] if diffs else diff_runs(old, new))
            return time.perf_counter() - t

        subjects = {"load": load, "diff": diff, "diff_gc": diff_gc, "render": render}
        samples = interleaved(subjects, repeats)
        ratio = median(paired_ratios(samples["diff"], samples["load"]))
        result.rows.append(
            Row(
                NAME,
                f"diff_runs, {size:,} facts, 1% changed",
                median(samples["diff"]),
                "s",
                "load_bundle of both",
                median(samples["load"]),
                "s",
                ratio,
                note="goal: under 1 s (absolute); garbage collector paused",
            )
        )
        result.rows.append(
            Row(
                NAME,
                "diff_runs with the garbage collector running",
                median(samples["diff_gc"]),
                "s",
                "collector paused",
                median(samples["diff"]),
                "s",
                median(paired_ratios(samples["diff_gc"], samples["diff"])),
            )
        )
        result.rows.append(
            Row(
                NAME,
                "render_text of that diff",
                median(samples["render"]),
                "s",
                "diff_runs",
                median(samples["diff"]),
                "s",
                median(paired_ratios(samples["render"], samples["diff"])),
            )
        )
        lengths = {
            f"{100 // every}%": _lengths(old, load_bundle(root / f"new-{every}"))
            for every in (100, 50, 25)
        }
        lengths["1% of 2x facts"] = _lengths(
            load_bundle(root / "old-2x"), load_bundle(root / "new-2x")
        )
        one, four = lengths["1%"], lengths["4%"]
        result.rows.append(
            Row(
                NAME,
                "unbounded output chars per change, 4% vs 1% changed",
                four["unbounded_chars"] / four["changes"],
                "chars",
                "at 1%",
                one["unbounded_chars"] / one["changes"],
                "chars",
                (four["unbounded_chars"] / four["changes"])
                / (one["unbounded_chars"] / one["changes"]),
                note="about 1: output grows with the change",
            )
        )
        double, two = lengths["1% of 2x facts"], lengths["2%"]
        result.rows.append(
            Row(
                NAME,
                "unbounded output chars, 1% of 2x facts vs 2% of 1x (as many changes)",
                double["unbounded_chars"],
                "chars",
                "2% of 1x",
                two["unbounded_chars"],
                "chars",
                double["unbounded_chars"] / two["unbounded_chars"],
                note="about 1: the output follows the change, not the bundle",
            )
        )
        result.rows.append(
            Row(
                NAME,
                "default (bounded) output chars at 4% changed",
                four["bounded_chars"],
                "chars",
                "at 1%",
                one["bounded_chars"],
                "chars",
                four["bounded_chars"] / one["bounded_chars"],
                note="at most 50 change records, the rest counted",
            )
        )
        details: dict[str, Any] = {
            "facts": size,
            "recorded_s": recorded_s,
            "samples_s": samples,
            "output": lengths,
            "summary": diffs[-1].summary if diffs else None,
        }
        if not quick:
            _record(root / "big-old", 100_000, None)
            _record(root / "big-new", 100_000, 100)
            big_old, big_new = load_bundle(root / "big-old"), load_bundle(root / "big-new")
            with paused_gc():
                t = time.perf_counter()
                big = diff_runs(big_old, big_new)
                big_s = time.perf_counter() - t
            text = render_text(big)
            details["100k"] = {
                "diff_s": big_s,
                "changes": big.change_count,
                "cut": big.cut,
                "chars": len(text),
                "last_line": text.rstrip().splitlines()[-1],
            }
        result.details = details
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k facts, no 100k run")
    parser.add_argument("--output", type=Path, help="write the rows and details as JSON")
    args = parser.parse_args(argv)
    result = run(args.quick)
    for row in result.rows:
        print(
            f"{row.metric}: {row.figure:.4g} {row.unit} vs {row.baseline_name} "
            f"{row.baseline:.4g} {row.baseline_unit}: ratio {row.ratio:.3f}"
            + (f"  ({row.note})" if row.note else "")
        )
    print(json.dumps(result.details["output"], indent=2))
    if "100k" in result.details:
        print("100k facts, 1% changed:", json.dumps(result.details["100k"], indent=2))
    print(f"nodes: {len(MODEL_NODES)} model, {len(TOOL_NODES)} tool", file=sys.stderr)
    if args.output:
        data = {"rows": [r.as_dict() for r in result.rows], "details": result.details}
        args.output.write_text(json.dumps(data, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
