"""Run the pytest-llmwb benchmarks, print a table and write ``benchmarks/results.json``.

    python benchmarks/run.py            # full run (about a minute and a half)
    python benchmarks/run.py --quick    # tiny sizes: a smoke test of the harness

Every figure is a ratio against a baseline measured in the same run, interleaved with
it; nothing is asserted. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_capture
import bench_diff
import bench_evidence
import bench_import
import bench_overhead
import bench_replay
from bench_stats import BenchResult, Row

HERE = Path(__file__).resolve().parent
RESULTS_SCHEMA = 1
BENCHMARKS: dict[str, Callable[[bool], BenchResult]] = {
    bench_overhead.NAME: bench_overhead.run,
    bench_replay.NAME: bench_replay.run,
    bench_import.NAME: bench_import.run,
    bench_capture.NAME: bench_capture.run,
    bench_diff.NAME: bench_diff.run,
    bench_evidence.NAME: bench_evidence.run,
}


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _table(rows: Sequence[Row]) -> str:
    header = ("benchmark", "figure", "baseline", "ratio", "goal", "met")
    lines = [
        (
            f"{row.bench}: {row.metric}",
            f"{_num(row.figure)} {row.unit}",
            f"{_num(row.baseline)} {row.baseline_unit} ({row.baseline_name})",
            f"{row.ratio:.3f}",
            "-" if row.goal is None else f"<= {row.goal:g}",
            {None: "-", True: "yes", False: "NO"}[row.met],
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines]
    return "\n".join(out)


def _hot_spots(title: str, profile: dict[str, Any], limit: int = 8) -> str:
    lines = [f"{title} (cProfile, self time; {profile['profiled_us_per_unit']} us profiled/unit)"]
    for entry in profile["by_self"][:limit]:
        lines.append(
            f"  {entry['self_share']:6.1%}  {entry['self_us_per_unit']:9.3f} us  "
            f"x{entry['calls_per_unit']:<6g} {entry['function']}"
        )
    return "\n".join(lines)


def _components(components: dict[str, dict[str, float]]) -> str:
    lines = ["record_overhead steps of one tool_call, each timed alone (no profiler)"]
    for name, entry in components.items():
        lines.append(f"  {entry['share_of_call']:6.1%}  {entry['us_per_call']:9.3f} us  {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results.json",
        help="where to write the results (default: benchmarks/results.json)",
    )
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only these benchmarks"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results: dict[str, Any] = {}
    rows: list[Row] = []
    for name, bench in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr, flush=True)
        begin = time.perf_counter()
        result = bench(args.quick)
        rows += result.rows
        results[name] = {
            "seconds": time.perf_counter() - begin,
            "rows": [row.as_dict() for row in result.rows],
            "details": result.details,
        }

    print(_table(rows))
    for row in rows:
        if row.note:
            print(f"  * {row.bench}: {row.metric}: {row.note}")
    components = results.get(bench_overhead.NAME, {}).get("details", {}).get("components")
    if components:
        print()
        print(_components(components))
    for name, title in (
        (bench_overhead.NAME, "record_overhead hot spots, per tool_call"),
        (bench_replay.NAME, "replay hot spots, per fact (load + serve + check)"),
    ):
        profile = results.get(name, {}).get("details", {}).get("profile")
        if profile:
            print()
            print(_hot_spots(title, profile))

    elapsed = time.perf_counter() - started
    document = {
        "schema": RESULTS_SCHEMA,
        "meta": {
            "quick": args.quick,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": elapsed,
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "rows": [row.as_dict() for row in rows],
        "benchmarks": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {args.output} in {elapsed:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
