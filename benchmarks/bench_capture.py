"""Benchmark 4: HTTP capture of the real openai SDK, against vcrpy, and its record overhead.

Everything runs in one child process (``python bench_capture.py child``), so that vcrpy's
patches and the loopback server never touch the other benchmarks.

1. **Replay against vcrpy.** ``CALLS`` chat completions (1,000; realistic requests of
   2-14 KB, one in five streamed) are sent through the ``openai`` SDK to a
   :class:`~pytest_llmwb.testing.ScriptedLLMServer` and recorded three ways: a
   pytest-llmwb bundle (``Run`` + ``capture``), a vcrpy YAML cassette and a vcrpy JSON
   cassette (pytest-recording's ``vcr`` fixture is vcrpy with these same defaults). The
   server is stopped; each is then replayed through the SDK in this process, load
   included: pytest-llmwb (network guard on), vcrpy with its default matchers (YAML and
   JSON) and vcrpy with the body matcher added (YAML). **Goals: at most 1/5 of vcrpy's
   defaults, 1/20 of vcrpy with the body matcher.** The same calls answered with the
   recorded bodies by an in-memory ``httpx2.MockTransport`` give the SDK's own cost,
   the floor of any replay.
2. **Flat cost per call.** Bundles of 100 to 100,000 recorded calls (built from the
   recorded exchanges, each recorded call at its own ordinal) are replayed through a plain
   ``httpx2.Client``, every call: time per call at each size against 100 (**goal <= 1.5**),
   and load time per recorded call.
3. **Record overhead.** The same SDK calls to the loopback server in batches, capture off
   and capture on (record mode), interleaved: **goal: < 10% of the round trip**, as the
   calling code sees it (while a call is in flight, capture only copies its bytes). The
   work done when capture ends (parsing, scrubbing, digests, prices, blobs: the
   receipts) is reported with it as a second row, the whole capture against the same
   baseline; the time spent in the scrubber (``pytest_llmwb.scrub``) is reported apart.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_stats import BenchResult, Row, interleaved, median, paired_ratios, stats_summary

NAME = "capture"
HERE = Path(__file__).resolve().parent
MODEL = "bench-model-1"
_WORDS = (  # noqa: SIM905 - a sentence reads better than a list
    "the customer asked about a refund for order shipped late damaged box please check "
    "policy window days eligible store credit original payment method agent should reply "
    "politely summarize facts cite ticket history escalate when unsure weather invoice"
).split()


def requests_mix(count: int, seed: int = 7) -> list[tuple[list[dict[str, str]], bool]]:
    """``count`` chat requests of 2-14 KB (system, history, question); every 5th streamed."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = rng.randint(2000, 14000)
        words: list[str] = []
        length = 0
        while length < size:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        cut = len(words) // 3
        messages = [
            {"role": "system", "content": "You are a support agent for an online shop."},
            {"role": "user", "content": " ".join(words[:cut])},
            {"role": "assistant", "content": " ".join(words[cut : 2 * cut])},
            {"role": "user", "content": f"{' '.join(words[2 * cut :])} (ticket {i})"},
        ]
        out.append((messages, i % 5 == 0))
    return out


def _answer(request: Any) -> Any:
    from pytest_llmwb.testing import Reply

    return Reply(text="Thanks, we are looking into your ticket.", chunk_size=12)


def _sdk_calls(base: str, calls: list[tuple[list[dict[str, str]], bool]], **kwargs: Any) -> None:
    import openai

    with openai.OpenAI(
        base_url=f"{base}/v1", api_key="sk-bench-not-a-key", max_retries=0, **kwargs
    ) as client:
        for messages, stream in calls:
            if stream:
                for _ in client.chat.completions.create(
                    model=MODEL,
                    messages=messages,  # type: ignore[arg-type]
                    stream=True,
                ):
                    pass
            else:
                client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]


def _log(message: str) -> None:
    print(f"  capture: {message}", file=sys.stderr, flush=True)


# --- 1. replay against vcrpy ---------------------------------------------------------


def replay_vs_vcr(work: Path, count: int, repeats: int) -> dict[str, Any]:
    import httpx2
    import vcr

    from pytest_llmwb import Run
    from pytest_llmwb.capture import capture
    from pytest_llmwb.capture.exchange import Exchange
    from pytest_llmwb.testing import ScriptedLLMServer

    calls = requests_mix(count)
    bundle = work / "bundle"
    yaml_path, json_path = work / "cassette.yaml", work / "cassette.json"
    with ScriptedLLMServer(_answer) as server:
        base = server.base_url
        _log(f"recording {count} calls: bundle, YAML cassette, JSON cassette")
        with Run("bench") as run, capture(run):
            _sdk_calls(base, calls)
        run.save(bundle)
        with vcr.use_cassette(str(yaml_path), record_mode="all"):
            _sdk_calls(base, calls)
        with vcr.use_cassette(str(json_path), record_mode="all", serializer="json"):
            _sdk_calls(base, calls)
    # the server is stopped: every replay below is offline

    def ours() -> float:
        start = time.perf_counter()
        replay = Run.replay(bundle)
        with replay, capture(replay) as session:
            assert session.guard is not None
            _sdk_calls(base, calls)
        replay.check_complete()
        return time.perf_counter() - start

    def vcr_subject(path: Path, **options: Any) -> Callable[[], float]:
        def subject() -> float:
            start = time.perf_counter()
            with vcr.use_cassette(str(path), record_mode="none", **options):
                _sdk_calls(base, calls)
            return time.perf_counter() - start

        return subject

    body_matcher = ["method", "scheme", "host", "port", "path", "query", "body"]
    # the floor: the same recorded answers, handed to the SDK by an in-memory transport
    recorded = [Exchange.from_blob(run.blob(f.exchange or "")) for f in run.model_calls]
    answers: list[Any] = []

    def mock_handler(request: Any) -> Any:
        exchange = answers.pop()
        return httpx2.Response(
            exchange.status or 200, headers=exchange.response_headers, content=exchange.body
        )

    def sdk_floor() -> float:
        answers[:] = reversed(recorded)
        start = time.perf_counter()
        with httpx2.Client(transport=httpx2.MockTransport(mock_handler)) as http:
            _sdk_calls(base, calls, http_client=http)
        return time.perf_counter() - start

    subjects = {
        "llmwb": ours,
        "vcrpy_yaml": vcr_subject(yaml_path),
        "vcrpy_json": vcr_subject(json_path, serializer="json"),
        "sdk_floor": sdk_floor,
    }
    ours()  # warm-up: imports, first-use caches
    sdk_floor()
    _log(f"replaying ({repeats} interleaved rounds)")
    samples = interleaved(subjects, repeats, seed=3)
    _log("replaying with vcrpy's body matcher (once: it is quadratic)")
    body_ours = ours()
    body_vcr = vcr_subject(yaml_path, match_on=body_matcher)()
    sizes = {
        "bundle_bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        "yaml_bytes": yaml_path.stat().st_size,
        "json_bytes": json_path.stat().st_size,
    }
    return {
        "calls": count,
        "samples": samples,
        "body": {"llmwb": body_ours, "vcrpy_yaml_body": body_vcr},
        "sizes": sizes,
    }


# --- 2. flat cost per call -------------------------------------------------------------


def flatness(work: Path, sizes: list[int], distinct: int) -> dict[str, Any]:
    import httpx2

    from pytest_llmwb import ModelIOFact, Run
    from pytest_llmwb.capture import capture
    from pytest_llmwb.capture.exchange import Exchange
    from pytest_llmwb.testing import ScriptedLLMServer

    calls = requests_mix(distinct, seed=11)
    with ScriptedLLMServer(_answer) as server, Run("seed") as seed, capture(seed):
        _sdk_calls(server.base_url, calls)
    seeds = seed.model_calls
    blobs = {f.exchange: seed.blob(f.exchange) for f in seeds if f.exchange}
    exchanges = [Exchange.from_blob(blobs[f.exchange]) for f in seeds if f.exchange]
    results: dict[str, Any] = {}
    for size in sizes:
        path = work / f"flat-{size}"
        run = Run("flat")
        for i in range(size):
            fact = seeds[i % distinct]
            fields = fact.model_dump(exclude={"seq", "ordinal", "kind", "trace_id", "span_id"})
            run.append(ModelIOFact, **{**fields, "ordinal": i})
        for ref, data in blobs.items():
            run._blobs[ref] = data  # the seed run's exchanges, shared by every call
        run.save(path)
        del run
        start = time.perf_counter()
        replay = Run.replay(path)
        loaded = time.perf_counter() - start
        with httpx2.Client(base_url="http://127.0.0.1:9") as http, replay, capture(replay):
            start = time.perf_counter()
            for i in range(size):
                exchange = exchanges[i % distinct]
                http.post(
                    "/v1/chat/completions",
                    content=exchange.request_body,
                    headers={"content-type": "application/json"},
                ).read()
            served = time.perf_counter() - start
        replay.check_complete()
        shutil.rmtree(path)
        results[str(size)] = {
            "load_s": loaded,
            "serve_s": served,
            "us_per_call": served / size * 1e6,
            "load_us_per_recorded_call": loaded / size * 1e6,
        }
        _log(f"flat: {size} calls, {served / size * 1e6:.1f} us/call, load {loaded:.2f} s")
    return results


# --- 3. record overhead ---------------------------------------------------------------


def record_overhead(batch: int, repeats: int) -> dict[str, Any]:
    from pytest_llmwb import Run
    from pytest_llmwb.capture import capture
    from pytest_llmwb.scrub import Scrubber
    from pytest_llmwb.testing import ScriptedLLMServer

    calls = requests_mix(batch, seed=5)
    with ScriptedLLMServer(_answer) as server:
        base = server.base_url

        def off() -> float:
            start = time.perf_counter()
            _sdk_calls(base, calls)
            return time.perf_counter() - start

        whole: list[float] = []

        def on() -> float:
            with Run("overhead") as run:
                begun = time.perf_counter()
                with capture(run):
                    start = time.perf_counter()
                    _sdk_calls(base, calls)
                    elapsed = time.perf_counter() - start
                # capture's end builds the receipts: parse, scrub, digest, price, blob
                whole.append(time.perf_counter() - begun)
            assert len(run.model_calls) == batch
            return elapsed

        off()
        on()
        whole.clear()
        samples = interleaved({"off": off, "on": on}, repeats, seed=5)
        samples["on_whole"] = list(whole)  # the scrubber-timed round below adds one more

        # the scrubber's share, timed apart (wrapping it distorts the rounds above)
        spent = [0.0]
        originals = {name: getattr(Scrubber, name) for name in ("scrub_value", "scrub_bytes")}

        def timed(original: Any) -> Any:
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return original(self, *args, **kwargs)
                finally:
                    spent[0] += time.perf_counter() - start

            return wrapper

        for name, original in originals.items():
            setattr(Scrubber, name, timed(original))
        try:
            on()
        finally:
            for name, original in originals.items():
                setattr(Scrubber, name, original)
    return {"batch": batch, "samples": samples, "scrub_s_per_batch": spent[0]}


# --- the child process and the rows ----------------------------------------------------


def child(quick: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="llmwb-bench-capture-"))
    try:
        replay = replay_vs_vcr(work, 40 if quick else 1000, 1 if quick else 3)
        flat = flatness(work, [100, 1000] if quick else [100, 1000, 10_000, 100_000], 100)
        overhead = record_overhead(20 if quick else 100, 2 if quick else 9)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"replay": replay, "flat": flat, "overhead": overhead}


def run(quick: bool) -> BenchResult:
    done = subprocess.run(
        [sys.executable, str(Path(__file__)), "child", *(["--quick"] if quick else [])],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])},
    )
    data = json.loads(done.stdout)
    result = BenchResult(NAME, details=data)
    replay = data["replay"]
    samples = replay["samples"]
    calls = replay["calls"]
    ours = median(samples["llmwb"])
    for baseline, goal, note in (
        ("vcrpy_yaml", 0.2, "vcrpy defaults: YAML cassette, default matchers (pytest-recording)"),
        ("vcrpy_json", None, "vcrpy, JSON serializer, default matchers"),
        ("sdk_floor", None, "the SDK alone: the recorded answers from httpx2.MockTransport"),
    ):
        result.rows.append(
            Row(
                bench=NAME,
                metric=f"replay {calls} SDK calls vs {baseline}",
                figure=ours,
                unit="s",
                baseline_name=baseline,
                baseline=median(samples[baseline]),
                baseline_unit="s",
                ratio=median(paired_ratios(samples["llmwb"], samples[baseline])),
                goal=goal,
                note=note,
            )
        )
    body = replay["body"]
    result.rows.append(
        Row(
            bench=NAME,
            metric=f"replay {calls} SDK calls vs vcrpy + body matcher",
            figure=body["llmwb"],
            unit="s",
            baseline_name="vcrpy_yaml_body",
            baseline=body["vcrpy_yaml_body"],
            baseline_unit="s",
            ratio=body["llmwb"] / body["vcrpy_yaml_body"],
            goal=0.05,
            note="vcrpy, YAML, match_on default + body; one round (quadratic)",
        )
    )
    flat = data["flat"]
    smallest = min(flat, key=int)
    for size in sorted(flat, key=int):
        if size == smallest:
            continue
        result.rows.append(
            Row(
                bench=NAME,
                metric=f"serve per call, {int(size):,} recorded vs {int(smallest):,}",
                figure=flat[size]["us_per_call"],
                unit="us/call",
                baseline_name=f"{int(smallest):,} recorded",
                baseline=flat[smallest]["us_per_call"],
                baseline_unit="us/call",
                ratio=flat[size]["us_per_call"] / flat[smallest]["us_per_call"],
                goal=1.5,
                note="through httpx2.Client, no SDK; load time per recorded call in details",
            )
        )
    overhead = data["overhead"]
    batch = overhead["batch"]
    per_call = {k: [s / batch * 1e3 for s in v] for k, v in overhead["samples"].items()}
    scrub_ms = overhead["scrub_s_per_batch"] / batch * 1e3
    for key, metric, goal, note in (
        (
            "on",
            "record mode: SDK call to the loopback server, capture on vs off",
            1.10,
            "while the call is in flight: the request and response bytes are copied, "
            "the node, ordinal and trace ids taken",
        ),
        (
            "on_whole",
            "record mode, whole capture incl. building the receipts at its end",
            None,
            "parse, scrub, digest, price and store each exchange; of which scrubbing: "
            f"{scrub_ms:.3f} ms/call",
        ),
    ):
        result.rows.append(
            Row(
                bench=NAME,
                metric=metric,
                figure=median(per_call[key]),
                unit="ms/call",
                baseline_name="capture off",
                baseline=median(per_call["off"]),
                baseline_unit="ms/call",
                ratio=median(paired_ratios(per_call[key], per_call["off"])),
                goal=goal,
                note=note,
            )
        )
    result.details["summary"] = {
        "replay_s": {name: stats_summary(values) for name, values in samples.items()},
        "record_ms_per_call": {name: stats_summary(v) for name, v in per_call.items()},
        "scrub_ms_per_call": scrub_ms,
    }
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "child":
        print(json.dumps(child("--quick" in sys.argv[2:])))
    else:
        print(__doc__)
