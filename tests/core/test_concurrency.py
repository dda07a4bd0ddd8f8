"""Runs whose calls are made from threads or asyncio tasks record and replay deterministically."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pytest_llmwb import (
    ModelResponse,
    OrderDriftError,
    PayloadDriftError,
    Run,
    load_bundle,
)

QUESTIONS = ["where is A1?", "refund B2", "where is A1?", "cancel C3", "hello", "refund B2"]


def ask(run: Run, question: str, jitter: random.Random | None) -> str:
    """One task of the fan-out: a tool call, then a model call, on shared nodes."""

    def pause() -> None:
        if jitter is not None:
            time.sleep(jitter.random() / 200)

    def lookup() -> dict[str, str]:
        pause()
        return {"order": question.split()[-1]}

    order = run.tool_call("lookup", {"q": question}, lookup)

    def answer(request: Any) -> ModelResponse:
        pause()
        return ModelResponse(content=f"answer to {request.messages[0].content}")

    response = run.model_io(
        {"model": "m-1", "messages": [{"role": "user", "content": f"{question} {order}"}]},
        answer,
        node="answer",
    )
    return response.content or ""


def threaded(run: Run, jitter: random.Random | None, questions: list[str] = QUESTIONS) -> list[str]:
    """Sequential planning, a fan-out over a thread pool, a sequential summary."""
    run.tool_call("plan", {"n": len(questions)}, lambda: {"ok": True})
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda q: ask(run, q, jitter), questions))
    run.model_io(
        {"model": "m-1", "messages": [{"role": "user", "content": " | ".join(answers)}]},
        lambda request: ModelResponse(content="summary"),
        node="summary",
    )
    return answers


async def aask(run: Run, question: str, jitter: random.Random | None) -> str:
    async def lookup() -> dict[str, str]:
        if jitter is not None:
            await asyncio.sleep(jitter.random() / 200)
        return {"order": question.split()[-1]}

    order = await run.atool_call("lookup", {"q": question}, lookup)

    async def answer(request: Any) -> ModelResponse:
        if jitter is not None:
            await asyncio.sleep(jitter.random() / 200)
        return ModelResponse(content=f"answer to {request.messages[0].content}")

    response = await run.amodel_io(
        {"model": "m-1", "messages": [{"role": "user", "content": f"{question} {order}"}]},
        answer,
        node="answer",
    )
    return response.content or ""


def gathered(run: Run, jitter: random.Random | None, questions: list[str] = QUESTIONS) -> list[str]:
    """The same workflow with asyncio.gather."""

    async def main() -> list[str]:
        await run.atool_call("plan", {"n": len(questions)}, _ok)
        answers = await asyncio.gather(*(aask(run, q, jitter) for q in questions))
        await run.amodel_io(
            {"model": "m-1", "messages": [{"role": "user", "content": " | ".join(answers)}]},
            _summary,
            node="summary",
        )
        return list(answers)

    return asyncio.run(main())


async def _ok() -> dict[str, bool]:
    return {"ok": True}


async def _summary(request: Any) -> ModelResponse:
    return ModelResponse(content="summary")


Workflow = Callable[..., list[str]]
WORKFLOWS = [pytest.param(threaded, id="threads"), pytest.param(gathered, id="asyncio")]


def record(path: Path, workflow: Workflow, seed: int) -> list[str]:
    with Run("fanout") as run:
        answers = workflow(run, random.Random(seed))
    run.save(path)
    return answers


def files(path: Path) -> tuple[bytes, bytes]:
    return (path / "facts.jsonl").read_bytes(), (path / "dag.json").read_bytes()


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_recording_a_concurrent_run_again_gives_the_same_bytes(
    tmp_path: Path, workflow: Workflow
) -> None:
    recorded = {files(p) for seed in range(5) if record(p := tmp_path / str(seed), workflow, seed)}
    assert len(recorded) == 1
    facts = load_bundle(tmp_path / "0").facts
    # the sequential calls around the fan-out keep their place and are not marked
    assert (facts[0].node, facts[0].concurrent) == ("plan", False)
    assert (facts[-1].node, facts[-1].concurrent) == ("summary", False)
    middle = facts[1:-1]
    assert len(middle) == 2 * len(QUESTIONS) and all(f.concurrent for f in middle)
    assert [f.seq for f in facts] == list(range(1, len(facts) + 1))
    for node in ("lookup", "answer"):
        ordinals = [f.ordinal for f in facts if f.node == node]
        assert ordinals == list(range(len(QUESTIONS)))


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_a_concurrent_run_replays_whatever_order_its_calls_come_in(
    tmp_path: Path, workflow: Workflow
) -> None:
    expected = record(tmp_path / "b", workflow, 1)
    for seed in range(3):
        with Run.replay(tmp_path / "b") as run:
            assert workflow(run, random.Random(100 + seed)) == expected
            run.check_complete()
        assert run.drifts == []
        assert files(tmp_path / "b") == files(run.save(tmp_path / f"again{seed}").path)


def test_identical_concurrent_requests_pair_up_and_each_is_served_once(tmp_path: Path) -> None:
    questions = ["same", "other", "same", "same", "other", "same"]
    with Run("same") as run:
        expected = threaded(run, random.Random(3), questions)
    run.save(tmp_path / "b")
    for seed in range(5):
        # the live calls come in another order than the canonical one: a call whose own
        # ordinal was already taken by an identical request must take another one
        with Run.replay(tmp_path / "b") as run:
            assert gathered(run, random.Random(seed), questions[::-1]) == expected[::-1]
            run.check_complete()
        served = sorted(f.ordinal for f in run.facts if f.node == "answer")
        assert served == list(range(len(questions)))


def test_a_changed_concurrent_request_is_request_drift(tmp_path: Path) -> None:
    record(tmp_path / "b", threaded, 1)
    changed = [*QUESTIONS[:-1], "refund B9"]
    with Run.replay(tmp_path / "b") as run, pytest.raises(PayloadDriftError) as info:
        threaded(run, None, changed)
    assert "refund B9" in str(info.value)


def test_sequential_calls_keep_their_strict_order(tmp_path: Path) -> None:
    def calls(run: Run, order: list[str]) -> None:
        for question in order:
            ask(run, question, None)

    with Run("seq") as run:
        calls(run, ["first", "second"])
    bundle = run.save(tmp_path / "b")
    assert not any(getattr(f, "concurrent", False) for f in bundle.facts)
    with Run.replay(tmp_path / "b") as run, pytest.raises(OrderDriftError):
        calls(run, ["second", "first"])


def test_one_thread_started_with_the_runs_context_is_sequential(tmp_path: Path) -> None:
    def both() -> None:
        ask(run, "only", None)
        ask(run, "then", None)

    with Run("one") as run:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(both,))
        worker.start()
        worker.join()
    facts = run.save(tmp_path / "b").facts
    assert [f.node for f in facts] == ["lookup", "answer", "lookup", "answer"]
    assert [f.arguments for f in facts if f.kind == "tool_call"] == [{"q": "only"}, {"q": "then"}]
    assert not any(f.concurrent for f in facts)


def test_pool_threads_do_not_make_the_task_that_waits_for_them_concurrent(
    tmp_path: Path,
) -> None:
    async def main(run: Run) -> None:
        ask(run, "first", None)
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=2) as pool:  # its threads carry no context
            await asyncio.gather(
                *(
                    loop.run_in_executor(pool, ask, run, q, random.Random(i))
                    for i, q in enumerate("xy")
                )
            )
        ask(run, "last", None)

    with Run("mixed") as run:
        asyncio.run(main(run))
    facts = run.save(tmp_path / "b").facts
    sequential = [f.arguments["q"] for f in facts if f.kind == "tool_call" and not f.concurrent]
    assert sequential == ["first", "last"]
    assert [f.concurrent for f in facts] == [False, False, *[True] * 4, False, False]


def test_artifact_references_follow_the_canonical_order(tmp_path: Path) -> None:
    def task(run: Run, name: str, jitter: random.Random) -> None:
        time.sleep(jitter.random() / 200)
        run.tool_call("lookup", {"q": name}, lambda: {"n": name})
        seq = next(f.seq for f in run.tool_calls if f.arguments == {"q": name})
        run.artifact(name, {"n": name}, node="lookup", derived_from=[seq])

    stored = set()
    for seed in range(3):
        jitter = random.Random(seed)
        with Run("refs") as run, ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(functools.partial(task, run, jitter=jitter), ["a", "b", "c"]))
        bundle = run.save(tmp_path / str(seed))
        stored.add(files(bundle.path))
        by_seq = {f.seq: f for f in bundle.facts}
        for fact in bundle.facts:
            if fact.kind == "artifact":
                (source,) = fact.derived_from
                assert by_seq[source].arguments == {"q": fact.name}
    assert len(stored) == 1


def test_concurrent_openai_calls_captured_over_http_record_and_replay_deterministically(
    tmp_path: Path,
) -> None:
    """The real openai async client, five requests at once through asyncio.gather."""
    openai = pytest.importorskip("openai")
    from pytest_llmwb.capture import capture
    from pytest_llmwb.testing import Reply, ScriptedLLMServer

    questions = ["b?", "a?", "c?", "a?", "d?"]

    def answer(request: Any) -> Reply:
        question = request.json["messages"][-1]["content"]
        return Reply(text=f"re: {question}", chunk_size=2)

    async def ask_all(base: str, order: list[str]) -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0)
        async with client:

            async def one(question: str) -> str:
                messages: Any = [{"role": "user", "content": question}]
                if question == "c?":  # one streamed call among them
                    stream = await client.chat.completions.create(
                        model="m-1", messages=messages, stream=True
                    )
                    return "".join([c.choices[0].delta.content or "" async for c in stream])
                reply = await client.chat.completions.create(model="m-1", messages=messages)
                return reply.choices[0].message.content or ""

            return list(await asyncio.gather(*(one(q) for q in order)))

    expected = [f"re: {q}" for q in questions]
    stored = set()
    with ScriptedLLMServer(answer, chunk_delay=0.001) as server:
        base = server.base_url
        for attempt in range(3):
            order = questions if attempt % 2 == 0 else questions[::-1]
            with Run("openai") as run, capture(run):
                answers = asyncio.run(ask_all(base, order))
            assert sorted(answers) == sorted(expected)
            bundle = run.save(tmp_path / str(attempt))
            # the scripted server numbers its response ids in arrival order (as a real
            # provider's ids differ on every call): all else must be the same bytes
            stored.add(
                tuple(
                    (
                        f.seq,
                        f.ordinal,
                        f.concurrent,
                        f.request_digest,
                        f.response.model_dump_json(exclude={"id"}),
                    )
                    for f in bundle.facts
                )
            )
    assert len(stored) == 1
    (facts,) = stored
    assert [f[1] for f in facts] == [0, 1, 2, 3, 4] and all(f[2] for f in facts)
    # replay, the server stopped, the requests made in yet another order
    shuffled = [questions[i] for i in (2, 4, 0, 3, 1)]
    with Run.replay(tmp_path / "0") as run, capture(run):
        assert asyncio.run(ask_all(base, shuffled)) == [f"re: {q}" for q in shuffled]
        run.check_complete()


FAN_TEST = """
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest_llmwb as llmwb
from pytest_llmwb import Dag

ITEMS = ["a", "b", "c", "d", "e", "f"]
DAG = Dag("fan").tool("fetch")


@llmwb.tool
def fetch(item: str) -> dict:
    time.sleep(random.random() / 100)  # live: the calls finish in any order
    return {"item": item, "ok": True}


def test_fan(llmwb):
    llmwb.declare(DAG)
    note = os.environ.get("FAN_NOTE")

    def task(item):
        out = fetch(item)
        if note:  # host-side facts, made from the pool threads too
            llmwb.artifact(f"seen-{item}", {"note": note}, node="fetch", derived_from=[])
        return out

    with ThreadPoolExecutor(int(os.environ["FAN_WORKERS"])) as pool:
        out = list(pool.map(task, ITEMS))
    assert [o["item"] for o in out] == ITEMS
"""


def test_a_pool_fan_out_replays_against_its_golden_bundle_however_many_workers_it_uses(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replayed calls are answered at once, so a pool often runs them all on one worker.

    That single pool thread is as concurrent as four: the replayed facts take the
    recorded canonical order, the golden check passes every time, and
    ``--snapshot-update`` writes the bytes a recording writes.
    """
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly -p no:hypothesispytest -p no:benchmark")
    pytester.makepyfile(test_fan=FAN_TEST)
    bundle = pytester.path / "llmwb_bundles" / "test_fan" / "test_fan"
    monkeypatch.setenv("FAN_WORKERS", "4")
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    recorded = files(bundle)
    assert all(f.concurrent for f in load_bundle(bundle).tool_calls())
    for workers in [1, 4, 1, 2, 1, 4, 1, 3]:
        monkeypatch.setenv("FAN_WORKERS", str(workers))
        pytester.runpytest().assert_outcomes(passed=1)  # and no GoldenMismatchError
    assert files(bundle) == recorded

    monkeypatch.setenv("FAN_NOTE", "seen")  # a host-side change, written offline
    monkeypatch.setenv("FAN_WORKERS", "1")
    updated = pytester.runpytest("--snapshot-update")
    updated.assert_outcomes(passed=1)
    updated.stdout.fnmatch_lines(["*1 bundle(s) written:*"])
    written = files(bundle)
    assert written != recorded
    monkeypatch.setenv("FAN_WORKERS", "4")
    pytester.runpytest("--llmwb-record").assert_outcomes(passed=1)
    assert files(bundle) == written


def fan_out(path: Path, workers: int) -> tuple[bytes, bytes]:
    """Six tool calls over a pool of ``workers`` threads, recorded and saved."""
    with Run("fan") as run, ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda q: run.tool_call("fetch", {"q": q}, lambda: {"q": q}), "abcdef"))
    return files(run.save(path).path)


def test_a_pool_records_the_same_bytes_on_one_worker_as_on_four(tmp_path: Path) -> None:
    assert fan_out(tmp_path / "one", 1) == fan_out(tmp_path / "four", 4)
