"""Benchmark 3: what the installed plugin costs a suite that never uses it.

A generated suite of plain tests (no llmwb marker or fixture) is collected with
``python -m pytest --collect-only -q``, with the plugin (loaded through its entry
point, as for every pytest user who installs it) and with ``-p no:llmwb``, in
alternating pairs whose order is shuffled. Each pair gives one ratio; the figure is the
median. Wall time is the goal's measure; CPU time of the child (user + sys) is given
too, as it is less sensitive to the other tenants of a shared machine.

Also: ``python -X importtime -c "import pytest_llmwb.plugin"``: the self time of the
package's modules against the import time of ``pytest`` itself in the same process, and
any module the plugin imports that ``import pytest`` does not.

``python bench_import.py profile-import`` is a child process run by ``run.py``.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_stats import BenchResult, Row, median, paired_ratios, profile_top

NAME = "plugin_import"
HERE = Path(__file__).resolve().parent
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)$")


_PYCACHE: list[str] = []


def _env() -> dict[str, str]:
    """The environment without anything that would change what pytest loads.

    Bytecode is cached under a temporary ``PYTHONPYCACHEPREFIX`` (outside the work
    tree), as any normal install caches it: with ``PYTHONDONTWRITEBYTECODE=1`` every
    start would compile the package's sources again, which no user pays.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    for name in ("PYTHONDEVMODE", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    if not _PYCACHE:
        _PYCACHE.append(tempfile.mkdtemp(prefix="llmwb-pycache-"))
    env["PYTHONPYCACHEPREFIX"] = _PYCACHE[0]
    return env


def _write_suite(root: Path, files: int, tests_per_file: int) -> None:
    (root / "pytest.ini").write_text("[pytest]\n")
    tests = root / "tests"
    tests.mkdir()
    for f in range(files):
        body = ["import pytest", ""]
        for t in range(tests_per_file):
            if t % 5 == 0:
                body += [
                    "@pytest.mark.parametrize('x', [1, 2])",
                    f"def test_param_{t}(x):",
                    "    assert x",
                    "",
                ]
            else:
                body += [f"def test_{t}():", f"    assert {t} + 1 == {t + 1}", ""]
        (tests / f"test_mod_{f}.py").write_text("\n".join(body))


def _collect(root: Path, *extra: str) -> tuple[float, float, str]:
    """Wall seconds, child CPU seconds and output of one ``pytest --collect-only`` run."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [*command, *extra], cwd=root, env=_env(), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"pytest {' '.join(extra)} exited {done.returncode}:\n{done.stdout}")
    return wall, cpu, done.stdout


def _importtime(code: str) -> dict[str, tuple[int, int]]:
    """``{module: (self us, cumulative us)}`` from ``python -X importtime -c CODE``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    modules: dict[str, tuple[int, int]] = {}
    for line in done.stderr.splitlines():
        match = _LINE.match(line)
        if match:
            modules[match.group(4)] = (int(match.group(1)), int(match.group(2)))
    return modules


def _profile_import() -> dict[str, Any]:
    import pytest  # noqa: F401 - imported first: only the plugin's own cost is profiled

    def load() -> None:
        import pytest_llmwb.plugin  # noqa: F401

    return profile_top(load, limit=12)


def _suite_rows(quick: bool, result: BenchResult) -> None:
    files, per_file = (2, 10) if quick else (10, 20)
    pairs = 1 if quick else 15
    with tempfile.TemporaryDirectory(prefix="llmwb-suite-") as tmp:
        root = Path(tmp)
        _write_suite(root, files, per_file)
        # warm-up, and proof of what is measured: the plugin is loaded in one variant
        # (its option parses) and blocked in the other (the same option is unknown)
        _, _, out = _collect(root, "--llmwb-mode=replay")
        collected = int(re.findall(r"(\d+) tests? collected", out)[-1])
        try:
            _collect(root, "-p", "no:llmwb", "--llmwb-mode=replay")
        except RuntimeError:
            pass
        else:
            raise RuntimeError("-p no:llmwb did not block the plugin")
        samples: dict[str, list[tuple[float, float]]] = {"with": [], "without": []}
        rng = random.Random(3)
        for _ in range(pairs):
            order = ["with", "without"]
            rng.shuffle(order)
            for variant in order:
                wall, cpu, _ = _collect(root, *(() if variant == "with" else ("-p", "no:llmwb")))
                samples[variant].append((wall, cpu))
    walls = {k: [w for w, _ in v] for k, v in samples.items()}
    cpus = {k: [c for _, c in v] for k, v in samples.items()}
    for label, values, goal in (("wall", walls, 1.05), ("CPU", cpus, None)):
        result.rows.append(
            Row(
                bench=NAME,
                metric=f"collect {collected} plain tests, {label} time",
                figure=median(values["with"]),
                unit="s",
                baseline_name="-p no:llmwb",
                baseline=median(values["without"]),
                baseline_unit="s",
                ratio=median(paired_ratios(values["with"], values["without"])),
                goal=goal,
                note=f"median of {pairs} interleaved pairs",
            )
        )
    result.details["suite"] = {
        "tests_collected": collected,
        "pairs": pairs,
        "wall_s": walls,
        "cpu_s": cpus,
        "ratio_of_min_wall": min(walls["with"]) / min(walls["without"]),
    }


def _importtime_rows(quick: bool, result: BenchResult) -> None:
    repeats = 1 if quick else 7
    own: list[float] = []
    pytest_cum: list[float] = []
    plugin_cum: list[float] = []
    extra: set[str] = set()
    per_module: dict[str, list[int]] = {}
    _importtime("import pytest_llmwb.plugin")  # warm-up: fills the bytecode cache
    for _ in range(repeats):
        base = _importtime("import pytest")
        plugin = _importtime("import pytest_llmwb.plugin")
        mine = {m: t for m, t in plugin.items() if m.split(".")[0] == "pytest_llmwb"}
        for module, (self_us, _) in mine.items():
            per_module.setdefault(module, []).append(self_us)
        own.append(sum(s for s, _ in mine.values()))
        pytest_cum.append(plugin["pytest"][1])
        plugin_cum.append(plugin["pytest_llmwb.plugin"][1])
        extra |= set(plugin) - set(base) - set(mine)
    result.rows.append(
        Row(
            bench=NAME,
            metric="import pytest_llmwb.plugin, self time of pytest_llmwb.*",
            figure=median(own) / 1000,
            unit="ms",
            baseline_name="import pytest (cumulative, same process)",
            baseline=median(pytest_cum) / 1000,
            baseline_unit="ms",
            ratio=median(own) / median(pytest_cum),
            note="modules beyond pytest's own: " + (", ".join(sorted(extra)) or "none"),
        )
    )
    result.details["importtime"] = {
        "repeats": repeats,
        "self_us_per_module": {m: median(v) for m, v in sorted(per_module.items())},
        "pytest_llmwb_self_us": median(own),
        "pytest_cumulative_us": median(pytest_cum),
        "plugin_cumulative_us": median(plugin_cum),
        "modules_not_imported_by_pytest": sorted(extra),
    }
    done = subprocess.run(
        [sys.executable, str(HERE / "bench_import.py"), "profile-import"],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result.details["import_profile"] = json.loads(done.stdout)


def run(quick: bool) -> BenchResult:
    result = BenchResult(NAME)
    try:
        _suite_rows(quick, result)
        _importtime_rows(quick, result)
    finally:
        if _PYCACHE:
            shutil.rmtree(_PYCACHE.pop(), ignore_errors=True)
    return result


if __name__ == "__main__":
    if sys.argv[1:] != ["profile-import"]:
        raise SystemExit("usage: bench_import.py profile-import (run by run.py)")
    sys.stdout.write(json.dumps(_profile_import()))
