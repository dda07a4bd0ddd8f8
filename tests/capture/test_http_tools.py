"""Calls to other HTTP endpoints (a tool's REST API) become tool_call facts."""

from __future__ import annotations

import asyncio
import gzip
import importlib.metadata
import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests

from pytest_llmwb import Run, ToolCallFact
from pytest_llmwb.capture import CaptureConfig, capture
from pytest_llmwb.capture.exchange import Exchange
from pytest_llmwb.exceptions import LiveCallBlockedError

from .conftest import ToolServer, record_then_replay, send_json


def tools(run: Run) -> list[ToolCallFact]:
    return run.tool_calls


def test_requests_calls_become_tool_facts(tmp_path: Path, tool_server: ToolServer) -> None:
    def agent(base: str) -> Any:
        with requests.Session() as s:
            order = s.get(f"{base}/orders/A-1", headers={"Authorization": "Bearer secret-x"})
            missing = s.get(f"{base}/orders/missing")
            refund = s.post(f"{base}/refunds", json={"order_id": "A-1", "amount": 42.5})
            moved = s.get(f"{base}/old/B-2")  # a redirect, followed by requests
        return [
            (r.status_code, r.json(), r.headers.get("content-type"))
            for r in (order, missing, refund, moved)
        ]

    recorded, replayed, run, _ = record_then_replay(tmp_path, tool_server, agent)

    assert replayed == recorded
    assert recorded[0] == (200, {"id": "A-1", "status": "shipped"}, "application/json")
    assert recorded[1][0] == 404
    facts = tools(run)
    assert [f.tool for f in facts] == [
        "GET 127.0.0.1/orders/A-1",
        "GET 127.0.0.1/orders/missing",
        "POST 127.0.0.1/refunds",
        "GET 127.0.0.1/old/B-2",
        "GET 127.0.0.1/orders/B-2",
    ]
    assert {f.node for f in facts} == {"http:127.0.0.1"}
    assert [f.ordinal for f in facts] == [0, 1, 2, 3, 4]
    assert facts[0].arguments == {"method": "GET", "url": "http://127.0.0.1:*/orders/A-1"}
    assert facts[0].result == {"status": 200, "body": {"id": "A-1", "status": "shipped"}}
    assert facts[2].arguments["body"] == {"order_id": "A-1", "amount": 42.5}
    assert facts[3].result == {"status": 302, "body": None}
    exchange = Exchange.from_blob(run.blob(facts[0].exchange or ""))
    assert "authorization" not in dict(exchange.request_headers)
    assert "set-cookie" not in dict(exchange.response_headers)


def test_aiohttp_calls_become_tool_facts(tmp_path: Path, tool_server: ToolServer) -> None:
    def agent(base: str) -> Any:
        async def main() -> Any:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{base}/orders/A-1") as r:
                    order = (r.status, await r.json())
                async with s.post(f"{base}/refunds", json={"order_id": "A-1"}) as r:
                    refund = (r.status, await r.json())
                async with s.get(f"{base}/old/C-3") as r:
                    moved = (r.status, await r.json(), len(r.history))
            return order, refund, moved

        return asyncio.run(main())

    recorded, replayed, run, _ = record_then_replay(tmp_path, tool_server, agent)

    assert replayed == recorded
    assert recorded[2] == (200, {"id": "C-3", "status": "shipped"}, 1)
    assert [f.tool for f in tools(run)] == [
        "GET 127.0.0.1/orders/A-1",
        "POST 127.0.0.1/refunds",
        "GET 127.0.0.1/old/C-3",
        "GET 127.0.0.1/orders/C-3",
    ]


def test_urllib_and_plain_httpx_calls_become_tool_facts(
    tmp_path: Path, tool_server: ToolServer
) -> None:
    def agent(base: str) -> Any:
        with urllib.request.urlopen(f"{base}/orders/A-1") as response:
            first = json.loads(response.read())
        with httpx.Client() as c:
            second = c.get(f"{base}/orders/B-2").json()
        return first, second

    recorded, replayed, run, _ = record_then_replay(tmp_path, tool_server, agent)

    assert replayed == recorded
    assert len(tools(run)) == 2


@pytest.mark.skipif(
    int(importlib.metadata.version("vcrpy").split(".")[0]) < 9,
    reason="vcrpy < 9 (Python 3.10) lets requests resolve the host before the cassette "
    "answers: the call is still blocked, by its DNS lookup",
)
def test_an_unrecorded_request_in_replay_is_a_blocked_live_call(
    tmp_path: Path, tool_server: ToolServer
) -> None:
    def agent(base: str) -> Any:
        return requests.get(f"{base}/orders/A-1", timeout=5).json()

    with Run("tools") as run, capture(run):
        agent(tool_server.url)
    run.save(tmp_path / "bundle")
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record test_x.py")
    with replay, capture(replay), pytest.raises(LiveCallBlockedError) as raised:
        agent(tool_server.url)
        requests.get("https://orders.example.com/orders/Z-9", timeout=5)
    message = str(raised.value)
    assert "GET https://orders.example.com/orders/Z-9" in message
    assert "fix: pytest --llmwb-record test_x.py" in message


def test_allowed_hosts_pass_through_unrecorded(tmp_path: Path, tool_server: ToolServer) -> None:
    config = CaptureConfig(allow_hosts=("127.0.0.1",))
    with Run("tools") as run, capture(run, config):
        assert requests.get(f"{tool_server.url}/orders/A-1", timeout=5).status_code == 200
    assert run.facts == []
    run.save(tmp_path / "bundle")
    replay = Run.replay(tmp_path / "bundle")
    with replay, capture(replay, config):  # live in replay too: the server still runs
        assert requests.get(f"{tool_server.url}/orders/A-1", timeout=5).status_code == 200


def _refusing_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting is refused


def test_transport_errors_replay_as_the_same_exceptions(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        refused = f"http://127.0.0.1:{_refusing_port()}"
        slow = f"http://127.0.0.1:{silent.getsockname()[1]}"

        def agent() -> list[tuple[str, BaseException]]:
            seen: list[tuple[str, BaseException]] = []
            for name, url, timeout in (("refused", refused, 2.0), ("timeout", slow, 0.2)):
                try:
                    requests.get(f"{url}/orders/A-1", timeout=timeout)
                except requests.RequestException as exc:
                    seen.append((name, exc))

            async def fetch() -> None:
                async with aiohttp.ClientSession() as session:
                    try:
                        await session.get(f"{refused}/stock")
                    except aiohttp.ClientError as exc:
                        seen.append(("aiohttp refused", exc))

            asyncio.run(fetch())
            return seen

        with Run("errors") as run, capture(run):
            recorded = agent()
        run.save(tmp_path / "bundle")
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    with replay, capture(replay):
        replayed = agent()
    replay.check_complete()

    assert [(n, type(e).__name__) for n, e in recorded] == [
        ("refused", "ConnectionError"),
        ("timeout", "ReadTimeout"),
        ("aiohttp refused", "ClientConnectorError"),
    ]
    # the same exception classes, caught by the same except clauses
    assert [type(e).__name__ for _, e in replayed] == [type(e).__name__ for _, e in recorded]
    assert isinstance(replayed[0][1], requests.ConnectionError)
    assert isinstance(replayed[1][1], requests.Timeout)
    assert isinstance(replayed[2][1], aiohttp.ClientConnectorError)
    assert str(replayed[2][1]) == str(recorded[2][1])
    facts = run.tool_calls
    assert [f.tool for f in facts] == [
        "GET 127.0.0.1/orders/A-1",
        "GET 127.0.0.1/orders/A-1",
        "GET 127.0.0.1/stock",
    ]
    assert all(f.result is None and f.error is not None for f in facts)
    assert facts[1].error is not None and "timed out" in facts[1].error.message.lower()
    assert facts[2].error is not None
    assert facts[2].error.type == "aiohttp.client_exceptions.ClientConnectorError"


class _SlowAnswers(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.6)  # "A" gives up after 0.2 s, "B" waits
        out = json.dumps({"answer_to": json.loads(body)}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except OSError:
            pass


def test_concurrent_aiohttp_calls_keep_their_own_outcome(tmp_path: Path) -> None:
    async def ask(session: aiohttp.ClientSession, url: str, body: str, wait: float) -> str:
        try:
            timeout = aiohttp.ClientTimeout(total=wait)
            async with session.post(url, json=body, params={"v": "1"}, timeout=timeout) as r:
                return str((await r.json())["answer_to"])
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # 3.10: not TimeoutError
            return type(exc).__name__

    def agent(url: str) -> list[str]:
        async def main() -> list[str]:
            async with aiohttp.ClientSession() as session:
                return list(
                    await asyncio.gather(ask(session, url, "A", 0.2), ask(session, url, "B", 5))
                )

        return asyncio.run(main())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowAnswers)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/answer"
    try:
        with Run("concurrent") as run, capture(run):
            recorded = agent(url)
        run.save(tmp_path / "bundle")
    finally:
        httpd.shutdown()
        httpd.server_close()
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    with replay, capture(replay):
        replayed = agent(url)
    assert recorded == ["TimeoutError", "B"] or recorded == ["ServerTimeoutError", "B"]
    assert replayed == recorded
    outcomes = sorted((f.arguments["body"], f.error is None) for f in run.tool_calls)
    assert outcomes == [("A", False), ("B", True)]  # two calls, each with its own outcome


class _GzipCredentials(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    SECRET = "sk-proj-" + "Q7" * 20

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        send_json(self, {"token_for_user": self.SECRET}, gzipped=True)


def test_bodies_handed_over_compressed_are_decoded_and_scrubbed(tmp_path: Path) -> None:
    async def aio(url: str) -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, auto_decompress=False) as response,
        ):
            return await response.read()

    def agent(url: str) -> list[bytes]:
        request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request) as response:  # http.client: gzip as sent
            plain = response.read()
        return [plain, asyncio.run(aio(url))]

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _GzipCredentials)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with Run("gzip") as run, capture(run):
            live = agent(f"http://127.0.0.1:{httpd.server_address[1]}/creds")
        run.save(tmp_path / "bundle")
    finally:
        httpd.shutdown()
        httpd.server_close()
    secret = _GzipCredentials.SECRET.encode()
    assert all(secret in gzip.decompress(body) for body in live)  # the caller got it all
    for fact in run.tool_calls:
        assert fact.result is not None
        assert fact.result["body"]["token_for_user"].startswith("<secret:openai-key:")
    stored = [p.read_bytes() for p in (tmp_path / "bundle").rglob("*") if p.is_file()]
    assert not any(b"\x1f\x8b" in data or secret in data for data in stored)


def test_a_replayed_os_error_keeps_its_errno() -> None:
    from pytest_llmwb.capture.session import rebuild_error

    live = ConnectionRefusedError(111, "Connection refused")
    replayed = rebuild_error("builtins.ConnectionRefusedError", str(live))
    assert isinstance(replayed, ConnectionRefusedError)
    assert (replayed.errno, replayed.strerror, str(replayed)) == (
        111,
        "Connection refused",
        str(live),
    )
    # a class that needs more than a message: the same class, without what it cannot carry
    replayed = rebuild_error("aiohttp.client_exceptions.ClientConnectorError", "refused")
    assert isinstance(replayed, aiohttp.ClientConnectorError) and str(replayed) == "refused"
    assert not hasattr(replayed, "no_such_attribute")
