"""Benchmark 2: replaying a large synthetic bundle, its linearity and its peak memory.

A child process records a synthetic run (a deterministic mix of model_io and tool_call
facts over 20 nodes, small realistic payloads) with ``Run`` + ``save`` at each size.
Then, for each size and repetition, a *fresh* child process replays it:

1. load: ``Run(..., mode="replay", replay=path)`` (reads, validates and indexes the bundle);
2. serve: the same calls, in the same order, through ``run.model_io(request, call=...)``
   and ``run.tool_call(...)`` with calls that raise if invoked;
3. ``run.check_complete()``.

Peak memory is the growth of the peak RSS over the replay, measured in that fresh
process after a warm-up replay of a small bundle (imports, pydantic schemas and caches
are excluded), as a ratio to the bundle's size on disk. On Linux the peak is reset
first (``/proc/self/clear_refs``), so that an earlier, higher peak (the imports) cannot
stand in for the replay's; elsewhere ``ru_maxrss`` is used and a replay that stayed
under the earlier peak reports an upper bound. Time per fact is compared
across sizes (linearity), and with ``orjson.loads`` of every line of the same
``facts.jsonl`` in the same process (the floor any loader pays).

Run ``python bench_replay.py generate|replay ...`` only through ``run.py``.
"""

from __future__ import annotations

import gc
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from bench_stats import BenchResult, Row, median, profile_top, stats_summary

NAME = "replay"
HERE = Path(__file__).resolve().parent
WARM_FACTS = 200

MODEL_NODES = [f"llm.{name}" for name in ("plan", "route", "draft", "critique", "summarize")]
MODEL_NODES += [f"llm.{name}" for name in ("extract", "classify", "answer")]
TOOL_NODES = [
    "search_kb",
    "fetch_order",
    "fetch_customer",
    "lookup_policy",
    "refund_quote",
    "send_email",
    "create_ticket",
    "update_ticket",
    "geo_lookup",
    "currency_rate",
    "inventory",
    "calendar",
]
_WORDS = (  # noqa: SIM905 - a sentence reads better than a list of 47 words
    "the customer asked about a refund for order shipped late damaged box please check "
    "policy window days eligible store credit original payment method agent should reply "
    "politely summarize facts cite ticket history escalate when unsure weather invoice "
    "address tracking number carrier warehouse stock replacement discount coupon apology"
).split()


class Call(NamedTuple):
    kind: str  # "model_io" or "tool_call"
    node: str
    request: dict[str, Any]  # the model request, or the tool arguments
    result: Any  # the live response / tool result (None when only requests are needed)


def _text(i: int, words: int) -> str:
    n = len(_WORDS)
    return " ".join(_WORDS[(i * 7 + k * 3) % n] for k in range(words))


def calls(count: int, *, results: bool) -> Iterator[Call]:
    """The deterministic call sequence of a synthetic run: 40% model_io, 60% tool_call."""
    for i in range(count):
        if i % 5 < 2:
            node = MODEL_NODES[(i // 5) % len(MODEL_NODES)]
            request: dict[str, Any] = {
                "model": "gpt-4o-mini",
                "system": "You are a support agent. " + _text(i, 20),
                "messages": [
                    {"role": "user", "content": _text(i + 1, 40)},
                    {"role": "assistant", "content": _text(i + 2, 25)},
                    {"role": "user", "content": f"turn {i}: {_text(i + 3, 15)}"},
                ],
                "tools": [
                    {
                        "name": "search_kb",
                        "description": "Search the knowledge base",
                        "parameters": {
                            "type": "object",
                            "properties": {"q": {"type": "string"}},
                            "required": ["q"],
                        },
                    }
                ],
                "params": {"temperature": 0.2, "max_tokens": 512},
            }
            response: dict[str, Any] | None = None
            if results:
                response = {
                    "id": f"chatcmpl-{i}",
                    "model": "gpt-4o-mini-2024-07-18",
                    "content": _text(i + 4, 35),
                    "finish_reason": "stop",
                    "usage": {"input_tokens": 180 + i % 50, "output_tokens": 40 + i % 30},
                }
                if i % 4 == 0:
                    response["tool_calls"] = [
                        {"id": f"call_{i}", "name": "search_kb", "arguments": {"q": _text(i, 4)}}
                    ]
                    response["finish_reason"] = "tool_calls"
            yield Call("model_io", node, request, response)
        else:
            node = TOOL_NODES[i % len(TOOL_NODES)]
            arguments = {"query": _text(i, 6), "limit": 5, "page": i % 7}
            result = None
            if results:
                result = {
                    "items": [
                        {"id": i * 10 + k, "title": _text(i + k, 5), "score": 3 - k}
                        for k in range(3)
                    ],
                    "total": 3,
                }
            yield Call("tool_call", node, arguments, result)


class _Live:
    """A live call that answers with a fixed result, whatever it is passed."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def __call__(self, *_: object) -> Any:
        return self.result


def _never(*_: object) -> NoReturn:
    raise AssertionError("a replayed call went live")


def _bundle_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- child processes ------------------------------------------------------------------------


def _generate(out: Path, sizes: list[int]) -> dict[str, Any]:
    from pytest_llmwb import Run

    info: dict[str, Any] = {}
    for size in sizes:
        start = time.perf_counter()
        with Run(f"synthetic-{size}") as run:
            for call in calls(size, results=True):
                live = _Live(call.result)
                if call.kind == "model_io":
                    run.model_io(call.request, live, node=call.node, provider="openai")
                else:
                    run.tool_call(call.node, call.request, live, node=call.node)
        recorded = time.perf_counter()
        path = out / f"bundle-{size}"
        run.save(path)
        info[str(size)] = {
            "path": str(path),
            "facts": size,
            "bytes": _bundle_bytes(path),
            "facts_jsonl_bytes": (path / "facts.jsonl").stat().st_size,
            "record_s": recorded - start,
            "save_s": time.perf_counter() - recorded,
        }
        del run
        gc.collect()
    return info


def _replay(path: Path, count: int) -> None:
    from pytest_llmwb import Run

    run = Run("bench-replay", mode="replay", replay=path)
    _serve(run, count)
    run.check_complete()


def _serve(run: Any, count: int) -> None:
    with run:
        for call in calls(count, results=False):
            if call.kind == "model_io":
                run.model_io(call.request, _never, node=call.node, provider="openai")
            else:
                run.tool_call(call.node, call.request, _never, node=call.node)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_bytes() -> int:
    """The process's peak resident set size (since :func:`_reset_peak`, where it works)."""
    try:  # Linux: VmHWM, which /proc/self/clear_refs can reset
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); whether that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _measure(path: Path, count: int, warm: Path, *, collect: bool = True) -> dict[str, Any]:
    from pytest_llmwb import Run

    _replay(warm, WARM_FACTS)
    gc.collect()
    if not collect:
        gc.disable()
    reset = _reset_peak()  # so that the peak is the replay's own, not the imports'
    rss_before = _rss_bytes()
    peak_before = _maxrss_bytes()
    start = time.perf_counter()
    run = Run("bench-replay", mode="replay", replay=path)
    loaded = time.perf_counter()
    rss_loaded = _rss_bytes()
    _serve(run, count)
    served = time.perf_counter()
    run.check_complete()
    checked = time.perf_counter()
    peak_after = _maxrss_bytes()
    del run
    gc.enable()
    gc.collect()

    # baselines, after the measured replay: the request driver alone, and bare JSON parsing
    start_driver = time.perf_counter()
    for _ in calls(count, results=False):
        pass
    driver = time.perf_counter() - start_driver
    import orjson

    start_json = time.perf_counter()
    for line in (path / "facts.jsonl").read_bytes().splitlines():
        orjson.loads(line)
    json_s = time.perf_counter() - start_json
    return {
        "facts": count,
        "load_s": loaded - start,
        "serve_s": served - loaded,
        "check_s": checked - served,
        "total_s": checked - start,
        "driver_s": driver,
        "orjson_parse_s": json_s,
        # growth over the memory in use when the replay started; if the replay never
        # exceeded the earlier peak (imports, warm-up), this is an upper bound
        "peak_rss_delta_bytes": peak_after - (peak_before if rss_before is None else rss_before),
        "peak_exceeded_earlier_peak": reset or peak_after > peak_before,
        "rss_after_load_delta_bytes": (
            rss_loaded - rss_before if rss_loaded is not None and rss_before is not None else None
        ),
    }


def _profile(path: Path, count: int, warm: Path) -> dict[str, Any]:
    _replay(warm, WARM_FACTS)
    return profile_top(lambda: _replay(path, count), per=count, limit=20)


def _trace_memory(path: Path, count: int, warm: Path) -> dict[str, Any]:
    from pytest_llmwb import Run

    _replay(warm, WARM_FACTS)
    gc.collect()
    tracemalloc.start()
    run = Run("bench-replay", mode="replay", replay=path)
    after_load = tracemalloc.take_snapshot()
    _, load_peak = tracemalloc.get_traced_memory()
    _serve(run, count)
    run.check_complete()
    after_serve = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    def top(snapshot: tracemalloc.Snapshot, base: tracemalloc.Snapshot | None) -> list[Any]:
        stats = (snapshot.compare_to(base, "lineno") if base else snapshot.statistics("lineno"))[
            :10
        ]
        out = []
        for stat in stats:
            frame = stat.traceback[0]
            parts = Path(frame.filename).parts
            where = "/".join(parts[-2:]) + f":{frame.lineno}"
            size = stat.size_diff if isinstance(stat, tracemalloc.StatisticDiff) else stat.size
            out.append({"where": where, "bytes_per_fact": round(size / count, 1)})
        return out

    return {
        "traced_peak_bytes": peak,
        "traced_peak_during_load_bytes": load_peak,
        "retained_after_load_bytes": sum(s.size for s in after_load.statistics("filename")),
        "retained_after_serve_bytes": current,
        "top_after_load": top(after_load, None),
        "top_added_by_serve": top(after_serve, after_load),
    }


def _child(argv: list[str]) -> None:
    command = argv[0]
    if command == "generate":
        result = _generate(Path(argv[1]), [int(a) for a in argv[2:]])
    else:
        path, count, warm = Path(argv[1]), int(argv[2]), Path(argv[3])
        if command == "replay-nogc":
            result = _measure(path, count, warm, collect=False)
        else:
            task = {"replay": _measure, "profile": _profile, "tracemalloc": _trace_memory}
            result = task[command](path, count, warm)
    sys.stdout.write(json.dumps(result))


def _spawn(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, str(HERE / "bench_replay.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench_replay.py {args[0]} failed:\n{done.stderr}")
    return json.loads(done.stdout)


# --- the benchmark ----------------------------------------------------------------------------


def run(quick: bool) -> BenchResult:
    sizes = [300, 900, 3000] if quick else [10_000, 30_000, 100_000]
    repeats = 1 if quick else 3
    result = BenchResult(NAME)
    with tempfile.TemporaryDirectory(prefix="llmwb-bench-") as tmp:
        bundles = _spawn("generate", tmp, str(WARM_FACTS), *map(str, sizes))
        warm = bundles[str(WARM_FACTS)]["path"]
        samples: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        rng = random.Random(2)
        for _ in range(repeats):
            order = list(sizes)
            rng.shuffle(order)
            for size in order:
                samples[size].append(_spawn("replay", bundles[str(size)]["path"], str(size), warm))
        small, large = sizes[0], sizes[-1]
        # diagnostic: the same replay with the cyclic garbage collector disabled
        no_gc = {
            size: _spawn("replay-nogc", bundles[str(size)]["path"], str(size), warm)
            for size in (small, large)
        }
        profile = _spawn("profile", bundles[str(small)]["path"], str(small), warm)
        memory = _spawn("tracemalloc", bundles[str(small)]["path"], str(small), warm)

    per_size: dict[str, Any] = {}
    for size in sizes:
        runs = samples[size]
        disk = bundles[str(size)]["bytes"]
        per_fact = [r["total_s"] / size * 1e6 for r in runs]
        per_size[str(size)] = {
            "bundle_bytes": disk,
            "facts_jsonl_bytes": bundles[str(size)]["facts_jsonl_bytes"],
            "record_s": bundles[str(size)]["record_s"],
            "save_s": bundles[str(size)]["save_s"],
            "total_s": stats_summary([r["total_s"] for r in runs]),
            "load_s": stats_summary([r["load_s"] for r in runs]),
            "serve_s": stats_summary([r["serve_s"] for r in runs]),
            "check_s": stats_summary([r["check_s"] for r in runs]),
            "driver_s": stats_summary([r["driver_s"] for r in runs]),
            "orjson_parse_s": stats_summary([r["orjson_parse_s"] for r in runs]),
            "us_per_fact": stats_summary(per_fact),
            "peak_rss_delta_bytes": median([r["peak_rss_delta_bytes"] for r in runs]),
            "peak_exceeded_earlier_peak": [r["peak_exceeded_earlier_peak"] for r in runs],
            "rss_after_load_delta_bytes": [r["rss_after_load_delta_bytes"] for r in runs],
        }
    head = per_size[str(large)]
    totals = [r["total_s"] for r in samples[large]]
    parses = [r["orjson_parse_s"] for r in samples[large]]
    result.rows.append(
        Row(
            bench=NAME,
            metric=f"load+serve+check {large} facts",
            figure=median(totals),
            unit="s",
            baseline_name="orjson.loads of every facts.jsonl line",
            baseline=median(parses),
            baseline_unit="s",
            ratio=median([t / p for t, p in zip(totals, parses, strict=True)]),
            note=(
                f"load {head['load_s']['median']:.2f}s, serve {head['serve_s']['median']:.2f}s"
                f" (of which request driver {head['driver_s']['median']:.2f}s), "
                f"check {head['check_s']['median']:.3f}s"
            ),
        )
    )
    base_per_fact = per_size[str(small)]["us_per_fact"]["median"]
    for size in sizes[1:]:
        result.rows.append(
            Row(
                bench=NAME,
                metric=f"time per fact, {size} vs {small} facts",
                figure=per_size[str(size)]["us_per_fact"]["median"],
                unit="us/fact",
                baseline_name=f"{small} facts",
                baseline=base_per_fact,
                baseline_unit="us/fact",
                ratio=per_size[str(size)]["us_per_fact"]["median"] / base_per_fact,
                goal=1.5,
                note="linearity: 1.0 is perfectly linear (goal 1.5 is ours, not DESIGN.md's)",
            )
        )
    gc_on = median(totals)
    result.rows.append(
        Row(
            bench=NAME,
            metric=f"load+serve+check {large} facts, gc disabled (diagnostic)",
            figure=no_gc[large]["total_s"],
            unit="s",
            baseline_name="gc enabled, same size",
            baseline=gc_on,
            baseline_unit="s",
            ratio=no_gc[large]["total_s"] / gc_on,
            note=(
                f"gc disabled: load {no_gc[large]['load_s']:.2f}s, "
                f"serve {no_gc[large]['serve_s']:.2f}s; one run"
            ),
        )
    )
    off_small = no_gc[small]["total_s"] / small * 1e6
    off_large = no_gc[large]["total_s"] / large * 1e6
    result.rows.append(
        Row(
            bench=NAME,
            metric=f"time per fact, {large} vs {small} facts, gc disabled (diagnostic)",
            figure=off_large,
            unit="us/fact",
            baseline_name=f"{small} facts, gc disabled",
            baseline=off_small,
            baseline_unit="us/fact",
            ratio=off_large / off_small,
            note="linearity without the garbage collector's full collections",
        )
    )
    for size in sizes:
        entry = per_size[str(size)]
        peak = entry["peak_rss_delta_bytes"]
        result.rows.append(
            Row(
                bench=NAME,
                metric=f"peak memory, {size} facts",
                figure=peak / 2**20,
                unit="MiB",
                baseline_name="bundle size on disk",
                baseline=entry["bundle_bytes"] / 2**20,
                baseline_unit="MiB",
                ratio=peak / entry["bundle_bytes"],
                goal=3.0,
                note="peak RSS growth in a fresh process, after a warm-up replay "
                "(the peak reset first on Linux)",
            )
        )
    result.details.update(
        {
            "sizes": sizes,
            "repeats": repeats,
            "per_size": per_size,
            "gc_disabled": {str(k): v for k, v in no_gc.items()},
            "profile_facts": small,
            "profile": profile,
            "tracemalloc_facts": small,
            "tracemalloc": memory,
        }
    )
    return result


if __name__ == "__main__":
    _child(sys.argv[1:])
