"""Record an agent against a loopback server, stop the server, replay it offline."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_llmwb import Run
from pytest_llmwb.capture import CaptureConfig, CaptureSession, capture
from pytest_llmwb.testing import Script, ScriptedLLMServer

#: Looks like an OpenAI key to the scrubber; must never reach a bundle.
API_KEY = "sk-test-abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass
class RoundTrip:
    """What recording and then replaying one agent gave."""

    recorded: Any
    replayed: Any
    record_run: Run
    replay_run: Run
    record_session: CaptureSession
    replay_session: CaptureSession
    bundle: Path
    server: ScriptedLLMServer


def bundle_bytes(path: Path) -> bytes:
    """Every file of a bundle, concatenated (to look for leaked secrets)."""
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


@pytest.fixture
def roundtrip(tmp_path: Path) -> Callable[..., RoundTrip]:
    """``roundtrip(script, agent)``: record ``agent(base_url)``, stop the server, replay.

    The replay runs with the server stopped and the network guard on.
    """
    counter = iter(range(1000))

    def run(
        script: Script | None,
        agent: Callable[[str], Any],
        *,
        config: CaptureConfig | None = None,
        replay_agent: Callable[[str], Any] | None = None,
        **server_kwargs: Any,
    ) -> RoundTrip:
        path = tmp_path / f"bundle-{next(counter)}"
        with ScriptedLLMServer(script, **server_kwargs) as server:
            base = server.base_url
            record_run = Run("record", record_command="pytest --llmwb-record")
            with record_run, capture(record_run, config) as record_session:
                recorded = agent(base)
            record_run.save(path)
        replay_run = Run.replay(path, record_command="pytest --llmwb-record")
        with replay_run, capture(replay_run, config) as replay_session:
            assert replay_session.guard is not None  # the network is blocked
            replayed = (replay_agent or agent)(base)
        replay_run.check_complete()
        assert API_KEY.encode() not in bundle_bytes(path)
        return RoundTrip(
            recorded,
            replayed,
            record_run,
            replay_run,
            record_session,
            replay_session,
            path,
            server,
        )

    return run


# --- a small REST service for tool calls ------------------------------------------------


class _ToolHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/old/"):
            self.send_response(302)
            self.send_header("Location", "/orders/" + self.path.rsplit("/", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/orders/"):
            order = self.path.rsplit("/", 1)[1]
            if order == "missing":
                self._send(404, {"error": "no such order"})
                return
            self._send(200, {"id": order, "status": "shipped"}, {"Set-Cookie": "session=abc"})
            return
        self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self._send(200, {"refund": body, "reference": "RF-1"})


class ToolServer:
    """A loopback REST API: GET /orders/<id>, POST /refunds, GET /old/<id> redirects."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ToolHandler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ToolServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with ToolServer() as server:
        yield server


def record_then_replay(
    tmp_path: Path, server: ToolServer, agent: Any, config: CaptureConfig | None = None
) -> tuple[Any, Any, Run, Run]:
    """Record ``agent(server.url)``, stop the server, replay it: (recorded, replayed, runs)."""
    base = server.url
    with Run("tools") as run, capture(run, config):
        recorded = agent(base)
    run.save(tmp_path / "bundle")
    server.__exit__()
    replay = Run.replay(tmp_path / "bundle", record_command="pytest --llmwb-record")
    with replay, capture(replay, config):
        replayed = agent(base)
    replay.check_complete()
    return recorded, replayed, run, replay


def send_json(handler: BaseHTTPRequestHandler, payload: Any, *, gzipped: bool = False) -> None:
    """Answer 200 with ``payload`` as JSON, gzip-encoded on the wire if asked."""
    body = json.dumps(payload).encode()
    if gzipped:
        body = gzip.compress(body)
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    if gzipped:
        handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
