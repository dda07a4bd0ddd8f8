"""requests and urllib3: streams pass through while recorded, and replay event by event.

The SSE server here sends its first event, then waits until the test says it has read
it before it sends the rest: a client that buffered the body would never get there.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from pytest_llmwb import ModelIOFact, Run
from pytest_llmwb.capture import capture
from pytest_llmwb.capture.exchange import Exchange
from pytest_llmwb.exceptions import ReplayStreamError

from .conftest import API_KEY, ToolServer, record_then_replay


def _event(text: str, finish: str | None = None) -> bytes:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


EVENTS = [_event("Hello"), _event(" world"), _event("!", "stop"), b"data: [DONE]\n\n"]


class GatedStream:
    """POST /v1/chat/completions streams EVENTS; the second waits for ``read_first``.

    ``mode`` "cut" drops the connection after the first event.
    """

    def __init__(self, mode: str = "whole") -> None:
        self.read_first = threading.Event()
        self.waited: list[bool] = []  # per request: did the client read the first event first
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self._chunk(EVENTS[0])
                    if mode == "cut":
                        self.wfile.write(b"ff\r\ndata: {")  # a chunk that never completes
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    gate.waited.append(gate.read_first.wait(5))
                    for event in EVENTS[1:]:
                        self._chunk(event)
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client went away

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"

    def __enter__(self) -> GatedStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.read_first.set()
        self.httpd.shutdown()
        self.httpd.server_close()


REQUEST = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def _post(url: str) -> requests.Response:
    return requests.post(
        url, json=REQUEST, stream=True, headers={"Authorization": f"Bearer {API_KEY}"}
    )


def _record(tmp_path: Path, agent: Any, mode: str = "whole") -> tuple[Any, Run, GatedStream]:
    with GatedStream(mode) as server:
        run = Run("stream")
        with run, capture(run):
            recorded = agent(server.url, server.read_first)
        run.save(tmp_path / "bundle")
    return recorded, run, server


def _replay(tmp_path: Path, agent: Any, url: str) -> Any:
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    with replay, capture(replay) as session:
        assert session.guard is not None  # the network is blocked; the server is gone
        replayed = agent(url, threading.Event())
    return replayed


def test_a_requests_stream_reaches_the_caller_as_it_arrives(tmp_path: Path) -> None:
    def agent(url: str, read_first: threading.Event) -> list[bytes]:
        with _post(url) as response:
            lines = response.iter_lines()
            first = next(lines)
            read_first.set()  # only now does the server send the rest
            return [first, *(line for line in lines if line)]

    recorded, run, server = _record(tmp_path, agent)
    assert server.waited == [True]  # the first event reached the caller before the rest
    assert recorded[0].startswith(b"data: ") and recorded[-1] == b"data: [DONE]"
    (fact,) = run.model_calls
    assert isinstance(fact, ModelIOFact) and fact.response is not None
    assert fact.response.content == "Hello world!" and fact.response.finish_reason == "stop"
    assert fact.exchange is not None
    exchange = Exchange.from_blob(run.blob(fact.exchange))
    assert exchange.chunks == EVENTS and exchange.end == "eof"
    assert API_KEY.encode() not in b"".join(
        p.read_bytes() for p in (tmp_path / "bundle").rglob("*") if p.is_file()
    )

    assert _replay(tmp_path, agent, server.url) == recorded


def test_a_replayed_requests_stream_yields_the_recorded_events_one_by_one(
    tmp_path: Path,
) -> None:
    def agent(url: str, read_first: threading.Event) -> list[bytes]:
        with _post(url) as response:
            pieces = []
            for piece in response.iter_content(chunk_size=None):
                pieces.append(piece)
                read_first.set()
            return pieces

    recorded, _, _ = _record(tmp_path, agent)
    assert b"".join(recorded) == b"".join(EVENTS)
    replayed = _replay(tmp_path, agent, "http://127.0.0.1:9/v1/chat/completions")
    assert replayed == EVENTS  # one event a read, not the body in one piece


def test_a_requests_stream_closed_early_is_recorded_and_replayed_as_such(
    tmp_path: Path,
) -> None:
    def agent(url: str, read_first: threading.Event) -> bytes:
        response = _post(url)
        first = next(response.iter_lines())
        read_first.set()
        response.close()  # stop reading: the rest of the stream is not wanted
        return first

    recorded, run, _ = _record(tmp_path, agent)
    (fact,) = run.model_calls
    assert fact.exchange is not None
    exchange = Exchange.from_blob(run.blob(fact.exchange))
    assert exchange.end == "closed" and exchange.chunks == EVENTS[:1]
    assert fact.error is not None and fact.error.type == "stream_closed"

    url = "http://127.0.0.1:9/v1/chat/completions"
    assert _replay(tmp_path, agent, url) == recorded

    def greedy(url: str, read_first: threading.Event) -> list[bytes]:
        with _post(url) as response:
            return [line for line in response.iter_lines() if line]

    with pytest.raises(ReplayStreamError, match="read past byte"):
        _replay(tmp_path, greedy, url)


def test_a_stream_cut_by_the_server_replays_as_the_same_requests_error(
    tmp_path: Path,
) -> None:
    def agent(url: str, read_first: threading.Event) -> tuple[list[bytes], str]:
        lines: list[bytes] = []
        try:
            with _post(url) as response:
                lines.extend(line for line in response.iter_lines() if line)
        except requests.RequestException as exc:
            return lines, type(exc).__name__
        return lines, "no error"

    recorded, run, _ = _record(tmp_path, agent, mode="cut")
    assert recorded[1] == "ChunkedEncodingError"
    (fact,) = run.model_calls
    assert fact.exchange is not None
    exchange = Exchange.from_blob(run.blob(fact.exchange))
    assert exchange.end == "error" and exchange.error is not None
    assert exchange.error[0] == "urllib3.exceptions.ProtocolError"
    assert _replay(tmp_path, agent, "http://127.0.0.1:9/v1/chat/completions") == recorded


def test_urllib3_retries_and_preloaded_bodies_replay_attempt_by_attempt(
    tmp_path: Path, tool_server: ToolServer
) -> None:
    retry = urllib3.Retry(total=2, status_forcelist=[404], backoff_factor=0, raise_on_status=False)

    def agent(base: str) -> list[Any]:
        with urllib3.PoolManager() as http:
            found = http.request("GET", f"{base}/orders/A-1")
            # 404 is retried (to show attempts), then the last answer is returned
            missing = http.request("GET", f"{base}/orders/missing", retries=retry)
            refund = requests.post(
                f"{base}/refunds", data=io.BytesIO(b'{"order_id": "A-1"}'), timeout=5
            )
        return [found.status, found.json(), missing.status, refund.json()]

    recorded, replayed, run, _ = record_then_replay(tmp_path, tool_server, agent)

    assert replayed == recorded
    assert recorded[:3] == [200, {"id": "A-1", "status": "shipped"}, 404]
    assert recorded[3]["refund"] == {"order_id": "A-1"}
    assert [f.tool for f in run.tool_calls] == [
        "GET 127.0.0.1/orders/A-1",
        *["GET 127.0.0.1/orders/missing"] * 3,  # the first try and two retries
        "POST 127.0.0.1/refunds",
    ]


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield


def test_replayed_responses_give_their_connection_back_to_the_pool(
    tmp_path: Path, tool_server: ToolServer
) -> None:
    def agent(base: str) -> list[Any]:
        # one connection, blocking: a response that kept it would starve the next one
        with urllib3.PoolManager(maxsize=1, block=True) as http:
            return [
                http.request(
                    "GET", f"{base}/orders/A-{i}?next=https://example.test/cb", pool_timeout=2
                ).json()
                for i in range(3)
            ]

    recorded, replayed, run, _ = record_then_replay(tmp_path, tool_server, agent)
    assert replayed == recorded
    # a URL inside the query is not the request's URL
    assert {(f.node, f.tool) for f in run.tool_calls} == {
        ("http:127.0.0.1", "GET 127.0.0.1/orders/A-0"),
        ("http:127.0.0.1", "GET 127.0.0.1/orders/A-1"),
        ("http:127.0.0.1", "GET 127.0.0.1/orders/A-2"),
    }


def test_replay_opens_no_proxy_tunnel(tmp_path: Path) -> None:
    Run("empty").save(tmp_path / "bundle")
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    with replay, capture(replay) as session, urllib3.ProxyManager("http://127.0.0.1:9") as proxy:
        pool = proxy.connection_from_url("https://api.example.test/v1/models")
        pool._prepare_proxy(pool._new_conn())  # the guard would refuse a CONNECT to :9
        assert session.blocked == []
