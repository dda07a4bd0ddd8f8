"""The benchmark harness runs end to end in --quick mode and writes well-formed results.

Only the shape of the results is checked: no figure is asserted on (the machines that
run the suite are shared and noisy; see benchmarks/README.md).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
BENCHMARKS = {"record_overhead", "replay", "plugin_import", "capture", "diff", "evidence"}
ROW_KEYS = {
    "bench",
    "metric",
    "figure",
    "unit",
    "baseline_name",
    "baseline",
    "baseline_unit",
    "ratio",
    "goal",
    "met",
    "note",
}


def test_quick_benchmarks_write_well_formed_results(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout.splitlines()[0]

    results = json.loads(output.read_text())
    assert results["schema"] == 1
    assert results["meta"]["quick"] is True
    assert set(results["benchmarks"]) == BENCHMARKS
    rows = results["rows"]
    assert {row["bench"] for row in rows} == BENCHMARKS
    for row in rows:
        assert set(row) == ROW_KEYS, row
        for key in ("figure", "baseline", "ratio"):
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), row
        assert row["baseline"] > 0 and row["ratio"] > 0, row
        if row["goal"] is None:
            assert row["met"] is None, row
        else:
            assert row["met"] is (row["ratio"] <= row["goal"]), row
    overhead = results["benchmarks"]["record_overhead"]["details"]
    assert overhead["profile"]["by_self"] and overhead["components"]
    replay = results["benchmarks"]["replay"]["details"]
    assert replay["profile"]["by_self"] and replay["tracemalloc"]["top_after_load"]
