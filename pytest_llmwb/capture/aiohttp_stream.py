"""aiohttp bodies, streaming intact, on top of vcrpy's aiohttp patch.

vcrpy answers ``ClientSession._request`` from the cassette and records what the server
sent, but it reads a live body to the end before the caller gets the response, and
replays it as one piece. Here, for the bundle's cassette:

- **recording**: the response is handed to the caller as soon as its head arrived; its
  body reader (aiohttp's own ``StreamReader``) records each piece as the connection
  feeds it, and how it ended: EOF, the caller's ``release()``/``close()`` before the
  end, or the connection's error;
- **replay**: ``response.content`` is a reader that is fed one recorded chunk (one
  server-sent event) each time the caller waits for data, at once or at the recorded
  pace, then ends as the recording did (EOF, the same error, or
  :class:`~pytest_llmwb.exceptions.ReplayStreamError` past the point where the
  recorded caller stopped reading).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aiohttp import ClientConnectionError
from aiohttp.streams import StreamReader

from .session import Call, end_of_replay, paced_chunks

if TYPE_CHECKING:
    from .vcr_cassette import BundleCassette

__all__ = ["forget", "record_response_patched", "recording_body", "replayed_body"]

# a live body being recorded: id(reader) -> (reader, call); the reader has no __dict__
_recording: dict[int, tuple[StreamReader, Call]] = {}
_lock = threading.Lock()


def _take(reader: StreamReader) -> Call | None:
    with _lock:
        entry = _recording.get(id(reader))
        if entry is None or entry[0] is not reader:
            return None
        del _recording[id(reader)]
    return entry[1]


class _RecordingReader(StreamReader):
    """aiohttp's ``StreamReader``, recording what the connection feeds it."""

    __slots__ = ()

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        entry = _recording.get(id(self))
        if entry is not None and entry[0] is self and data:
            entry[1].chunk(data)
        return super().feed_data(data, *args, **kwargs)

    def feed_eof(self) -> None:
        call = _take(self)
        if call is not None:
            call.finish("eof")
        super().feed_eof()

    def set_exception(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
        call = _take(self)
        if call is not None:
            # release()/close() before the end tell the reader "Connection closed"
            closed = type(exc) is ClientConnectionError and str(exc) == "Connection closed"
            if closed:
                call.finish("closed")
            else:
                call.finish("error", exc)
        super().set_exception(exc, *args, **kwargs)


def recording_body(response: Any, call: Call, *, decompressed: bool) -> None:
    """Record ``response``'s body (an aiohttp ``StreamReader``) as it arrives.

    ``decompressed``: whether aiohttp undoes the content encoding for this request.
    """
    reader = response.content
    call.headers(
        int(response.status),
        str(response.reason or ""),
        [(str(k), str(v)) for k, v in response.headers.items()],
        decoded=decompressed,
    )
    # what arrived with the head is already in the buffer
    for piece in list(reader._buffer):
        call.chunk(bytes(piece))
    error = reader.exception()
    if error is not None:
        call.finish("error", error)
    elif reader.is_eof():
        call.finish("eof")
    else:
        with _lock:
            _recording[id(reader)] = (reader, call)
        reader.__class__ = _RecordingReader


def forget(calls: set[Call]) -> None:
    """Stop recording the bodies of ``calls`` (their session ends)."""
    with _lock:
        for key, (_, call) in list(_recording.items()):
            if call in calls:
                del _recording[key]


class _NoConnection:
    """The protocol a ``StreamReader`` expects, for a body that comes from the bundle."""

    _reading_paused = False
    connected = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


class _ReplayReader(StreamReader):
    """A ``StreamReader`` fed one recorded chunk each time its reader waits for data."""

    __slots__ = ("_llmwb_call", "_llmwb_chunks")

    def __init__(self, call: Call) -> None:
        served = call.served
        assert served is not None
        size = max(sum(len(c) for c in served.chunks), 2**16)
        super().__init__(_NoConnection(), size, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
        self._llmwb_call = call
        self._llmwb_chunks = paced_chunks(call)

    async def _wait(self, func_name: str) -> None:
        __tracebackhide__ = True
        found = next(self._llmwb_chunks, None)
        if found is not None:
            wait, chunk = found
            if wait:
                await asyncio.sleep(wait)
            self.feed_data(chunk)
            return
        import aiohttp

        end_of_replay(self._llmwb_call, aiohttp)  # raises unless the body ended at EOF
        self.feed_eof()


def replayed_body(response: Any, call: Call) -> None:
    """Give the replayed ``response`` a body that streams the recorded chunks."""
    reader = _ReplayReader(call)
    response.content = reader
    served = call.served
    assert served is not None
    if not (served.end == "eof" or served.complete):
        # vcrpy's response answers read(), text() and json() from the whole recorded
        # body; here they read the body as far as it went, then end as it ended

        async def read() -> bytes:
            data: bytes = await reader.read()
            return data

        async def text(encoding: str | None = None, errors: str = "strict") -> str:
            return (await read()).decode(encoding or "utf-8", errors)

        async def json(*, encoding: str | None = None, loads: Any = None, **kwargs: Any) -> Any:
            import json as std_json

            body = (await read()).strip()
            return (loads or std_json.loads)(body.decode(encoding or "utf-8")) if body else None

        response.read, response.text, response.json = read, text, json


@contextmanager
def record_response_patched(cassette: BundleCassette) -> Iterator[None]:
    """Vcrpy's ``record_response``, streaming the bodies recorded for ``cassette``."""
    from vcr.stubs import aiohttp_stubs

    original = aiohttp_stubs.record_response

    async def record_response(target: Any, vcr_request: Any, response: Any) -> None:
        if (
            target is not cassette
            or response.connection is None
            or type(response.content) is not StreamReader
        ):
            # another cassette, or a body already over (a redirect hop, a short
            # answer): vcrpy reads it, as before
            await original(target, vcr_request, response)
            return
        call = cassette.live_call(vcr_request)
        if call is not None:
            recording_body(response, call, decompressed=cassette.decompressed())

    aiohttp_stubs.record_response = record_response
    try:
        yield
    finally:
        if aiohttp_stubs.record_response is record_response:
            aiohttp_stubs.record_response = original
