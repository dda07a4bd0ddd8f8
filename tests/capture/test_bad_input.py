"""Exchanges that do not read cleanly are still recorded raw, and replay as recorded."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from pytest_llmwb import Run
from pytest_llmwb.adapters import AdapterError, OpenAIChatAdapter
from pytest_llmwb.capture import CaptureConfig, capture
from pytest_llmwb.capture.exchange import Exchange, decode_body, segment_body
from pytest_llmwb.exceptions import BundleCorruptError, CaptureWarning

from .conftest import API_KEY, send_json

MODEL = "test-model-1"
USER: Any = [{"role": "user", "content": "hi"}]
CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": MODEL,
    "choices": [{"index": 0, "delta": {"content": "par"}, "finish_reason": None}],
}
COMPLETION = {
    "id": "c2",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "zipped"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answer = "html"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = type(self).answer
        if kind == "html":
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "gzip":
            send_json(self, COMPLETION, gzipped=True)
        else:  # a stream the server drops mid-event
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            event = b"data: " + json.dumps(CHUNK).encode() + b"\n\n"
            half = b'data: {"id": "c1", "obj'
            for part in (event, half):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.close_connection = True


class RawServer:
    def __init__(self, answer: str) -> None:
        handler = type("Handler", (_Handler,), {"answer": answer})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def raw_server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    server = RawServer(request.param)
    yield server
    server.stop()


def _call(url: str, *, stream: bool = False) -> Any:
    with openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0) as c:
        try:
            if stream:
                return [
                    chunk.choices[0].delta.content
                    for chunk in c.chat.completions.create(model=MODEL, messages=USER, stream=True)
                ]
            return c.chat.completions.create(model=MODEL, messages=USER)
        except openai.APIError as exc:
            return type(exc).__name__, str(exc)


def _roundtrip(tmp_path: Path, server: RawServer, **kwargs: Any) -> tuple[Any, Any, Run, Any]:
    with Run("bad") as run, capture(run, kwargs.pop("config", None)) as session:
        recorded = _call(server.url, **kwargs)
    run.save(tmp_path / "b")
    server.stop()
    replay = Run.replay(tmp_path / "b")
    with replay, capture(replay):
        replayed = _call(server.url, **kwargs)
    replay.check_complete()
    return recorded, replayed, run, session


@pytest.mark.parametrize("raw_server", ["html"], indirect=True)
def test_a_body_that_is_not_json_is_kept_raw_with_a_warning(
    tmp_path: Path, raw_server: RawServer
) -> None:
    recorded, replayed, run, session = _roundtrip(tmp_path, raw_server)

    assert recorded == replayed
    assert recorded[0] == "InternalServerError"
    [fact] = run.model_calls
    assert fact.response is None and fact.error is not None
    assert "not JSON" in fact.error.message
    exchange = Exchange.from_blob(run.blob(fact.exchange or ""))
    assert exchange.body == b"<html><body>502 Bad Gateway</body></html>"
    [warning] = session.warnings
    assert "could not read the response" in warning and "raw exchange is kept" in warning
    with pytest.warns(CaptureWarning, match="could not read the response"):
        session.emit_warnings()


@pytest.mark.parametrize("raw_server", ["truncated"], indirect=True)
def test_a_truncated_stream_replays_the_same_transport_error(
    tmp_path: Path, raw_server: RawServer
) -> None:
    recorded, replayed, run, _ = _roundtrip(tmp_path, raw_server, stream=True)

    assert recorded == replayed
    assert recorded[0] == "APIConnectionError"
    [fact] = run.model_calls
    assert fact.error is not None and fact.error.type == "httpx2.RemoteProtocolError"
    exchange = Exchange.from_blob(run.blob(fact.exchange or ""))
    assert exchange.end == "error"
    assert exchange.chunks[-1] == b'data: {"id": "c1", "obj'  # the cut-off event, kept


@pytest.mark.parametrize("raw_server", ["gzip"], indirect=True)
def test_a_compressed_body_is_stored_decoded_and_replays_equal(
    tmp_path: Path, raw_server: RawServer
) -> None:
    recorded, replayed, run, session = _roundtrip(tmp_path, raw_server)

    assert recorded == replayed and recorded.choices[0].message.content == "zipped"
    exchange = Exchange.from_blob(run.blob(run.model_calls[0].exchange or ""))
    assert json.loads(exchange.body) == COMPLETION
    assert "content-encoding" not in dict(exchange.response_headers)
    assert session.warnings == []


class RaisingAdapter(OpenAIChatAdapter):
    api = "acme.chat"

    def parse_request(self, body: Any) -> Any:
        raise AdapterError("acme bodies are not supported yet")


@pytest.mark.parametrize("raw_server", ["gzip"], indirect=True)
def test_an_adapter_that_raises_keeps_the_raw_exchange(
    tmp_path: Path, raw_server: RawServer
) -> None:
    config = CaptureConfig(adapters=(RaisingAdapter(),))
    recorded, replayed, run, session = _roundtrip(tmp_path, raw_server, config=config)

    assert recorded == replayed
    [fact] = run.tool_calls
    assert fact.tool == "POST 127.0.0.1/v1/chat/completions"
    assert fact.exchange is not None and fact.result is not None
    assert fact.result["status"] == 200
    [warning] = session.warnings
    assert "adapter acme.chat could not read the request" in warning
    assert "acme bodies are not supported yet" in warning


def test_segments_decoding_and_a_corrupt_blob() -> None:
    stream = b"data: a\n\n: ping\n\nevent: x\ndata: b\n\ndata: c"
    assert segment_body(stream, "text/event-stream") == [
        b"data: a\n\n",
        b": ping\n\nevent: x\ndata: b\n\n",
        b"data: c",
    ]
    assert segment_body(b'{"a": 1}', "application/json") == [b'{"a": 1}']
    assert decode_body(gzip.compress(b"hello"), "gzip") == b"hello"
    assert decode_body(gzip.compress(b"hello" * 100)[:40], "gzip") is not None  # cut short
    assert decode_body(b"x", "compress") is None
    exchange = Exchange("GET", "http://x/", status=200, chunks=[b"\xff\x00", b"ok"])
    assert Exchange.from_blob(exchange.to_blob()) == exchange
    with pytest.raises(BundleCorruptError, match="captured exchange is malformed"):
        Exchange.from_blob(b'{"format": "llmwb-exchange/1"}')
