"""Capture for httpx and httpx2 (what the openai and anthropic SDKs use), streaming intact.

vcrpy's httpx stubs read a streamed body to the end before the caller sees a byte, and
replay it as one chunk: time-to-first-token, early ``close()`` and mid-stream errors are
lost. So httpx is ours and vcrpy keeps the other clients. We patch, in both ``httpx``
and ``httpx2``:

- ``HTTPTransport.handle_request`` and ``AsyncHTTPTransport.handle_async_request``,
  which return as soon as the headers arrive: wrapping the response stream passes
  every chunk to the caller as it comes, while the call records it;
- the aiohttp-backed transport the SDKs vendor (``DefaultAioHttpClient``), which is not
  an ``HTTPTransport``.

In replay a response is built from the recorded exchange; its stream yields the
recorded chunks one by one (server-sent events one event at a time), at once or, with
``replay_timing``, at the recorded pace; then it ends as the recording did: at EOF,
with :class:`~pytest_llmwb.exceptions.ReplayStreamError` if the caller reads past the
point where the recorded caller stopped, or with the same transport error.

In-process transports (``MockTransport``, ``ASGITransport``, ``WSGITransport``) are
left alone: they are deterministic and touch no network.

The functions installed are made once per class and kept: vcrpy remembers, when it is
imported, what it finds on the classes it knows (and puts it back for a moment while
it records a ``requests`` call), so what it remembers must stay valid.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .session import (
    Call,
    SharedPatch,
    active_session,
    end_of_replay,
    forwarding,
    paced_chunks,
    rebuild_error,
)

__all__ = ["installed"]

_VENDORED = (
    "openai._vendor.httpx_aiohttp.transport",
    "anthropic._vendor.httpx_aiohttp.transport",
    "httpx_aiohttp.transport",
)

# (class, attribute) -> (original, ours)
_wrappers: dict[tuple[type, str], tuple[Any, Any]] = {}
_stream_classes: dict[int, tuple[type, type, type, type]] = {}


def _targets() -> list[tuple[Any, type, str, bool]]:
    """``(httpx module, class, method name, is_async)`` for every transport to patch."""
    found: list[tuple[Any, type, str, bool]] = []
    for name in ("httpx2", "httpx"):
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            continue
        hx = importlib.import_module(name)
        found.append((hx, hx.HTTPTransport, "handle_request", False))
        found.append((hx, hx.AsyncHTTPTransport, "handle_async_request", True))
    for name in _VENDORED:
        module = sys.modules.get(name)
        if module is None:
            package = name.rsplit(".", 1)[0]
            if package not in sys.modules:
                continue
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
        transport = getattr(module, "AiohttpTransport", None)
        vendored_hx = getattr(module, "httpx", None)
        if isinstance(transport, type) and vendored_hx is not None:
            found.append((vendored_hx, transport, "handle_async_request", True))
    return found


def _install() -> None:
    for hx, cls, attr, is_async in _targets():
        key = (cls, attr)
        current = cls.__dict__.get(attr)
        entry = _wrappers.get(key)
        if entry is not None and current is entry[1]:
            continue
        original = current if current is not None else getattr(cls, attr)
        if entry is not None and entry[0] is original:
            ours = entry[1]
        else:
            ours = _make_async(hx, original) if is_async else _make_sync(hx, original)
        _wrappers[key] = (original, ours)
        setattr(cls, attr, ours)


def _uninstall() -> None:
    for (cls, attr), (original, ours) in _wrappers.items():
        if cls.__dict__.get(attr) is ours:  # leave alone what someone wrapped over ours
            setattr(cls, attr, original)


#: Patch the httpx/httpx2 transports while the block runs (nested blocks share it).
installed = SharedPatch(_install, _uninstall).installed


def _streams(hx: Any) -> tuple[type, type, type, type]:
    """The recording and replaying stream classes for one httpx module."""
    classes = _stream_classes.get(id(hx))
    if classes is not None:
        return classes

    class RecordingStream(hx.SyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, call: Call) -> None:
            self._inner = inner
            self._call = call

        def __iter__(self) -> Iterator[bytes]:
            call = self._call
            try:
                for part in self._inner:
                    call.chunk(part)
                    yield part
            except GeneratorExit:  # the consumer stopped reading
                call.finish("closed")
                raise
            except BaseException as exc:
                call.finish("error", exc)
                raise
            call.finish("eof")

        def close(self) -> None:
            self._call.finish("closed")
            self._inner.close()

    class AsyncRecordingStream(hx.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, call: Call) -> None:
            self._inner = inner
            self._call = call

        async def __aiter__(self) -> AsyncIterator[bytes]:
            call = self._call
            try:
                async for part in self._inner:
                    call.chunk(part)
                    yield part
            except GeneratorExit:
                call.finish("closed")
                raise
            except BaseException as exc:
                if _is_cancellation(exc):
                    call.finish("closed")
                else:
                    call.finish("error", exc)
                raise
            call.finish("eof")

        async def aclose(self) -> None:
            self._call.finish("closed")
            await self._inner.aclose()

    class ReplayStream(hx.SyncByteStream):  # type: ignore[misc]
        def __init__(self, call: Call) -> None:
            self._call = call

        def __iter__(self) -> Iterator[bytes]:
            for wait, chunk in paced_chunks(self._call):
                if wait:
                    time.sleep(wait)
                yield chunk
            end_of_replay(self._call, hx)

        def close(self) -> None:
            pass

    class AsyncReplayStream(hx.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, call: Call) -> None:
            self._call = call

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for wait, chunk in paced_chunks(self._call):
                if wait:
                    import anyio

                    await anyio.sleep(wait)
                yield chunk
            end_of_replay(self._call, hx)

        async def aclose(self) -> None:
            pass

    classes = (RecordingStream, AsyncRecordingStream, ReplayStream, AsyncReplayStream)
    _stream_classes[id(hx)] = classes
    return classes


def _is_cancellation(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError) or type(exc).__name__ == "Cancelled"


def _replayed(hx: Any, call: Call, stream_class: type) -> Any:
    __tracebackhide__ = True
    served = call.served
    assert served is not None
    if served.status is None:  # the request itself failed when recorded
        error = served.error or ("httpx.ConnectError", "connection failed")
        raise rebuild_error(error[0], error[1], hx)
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if served.reason:
        extensions["reason_phrase"] = served.reason.encode("ascii", "replace")
    return hx.Response(
        served.status,
        headers=served.response_headers,
        stream=stream_class(call),
        extensions=extensions,
    )


def _make_sync(hx: Any, original: Any) -> Any:
    def handle_request(self: Any, request: Any) -> Any:
        __tracebackhide__ = True
        session = active_session()
        if session is None:
            return original(self, request)
        body = request.read()
        call = session.begin(request.method, str(request.url), request.headers.multi_items(), body)
        if call is None:
            return original(self, request)
        recording, _, replaying, _ = _streams(hx)
        if call.served is not None:
            return _replayed(hx, call, replaying)
        try:
            with forwarding():
                response = original(self, request)
        except BaseException as exc:
            call.finish("error", exc)
            raise
        return _recorded(response, call, recording)

    handle_request.__llmwb__ = True  # type: ignore[attr-defined]
    return handle_request


def _recorded(response: Any, call: Any, recording: Any) -> Any:
    """Record the live response's head; its body is recorded as the caller reads it."""
    reason = response.extensions.get("reason_phrase", b"")
    call.headers(
        response.status_code,
        reason.decode("ascii", "replace") if isinstance(reason, bytes) else str(reason),
        response.headers.multi_items(),
    )
    response.stream = recording(response.stream, call)
    return response


def _make_async(hx: Any, original: Any) -> Any:
    async def handle_async_request(self: Any, request: Any) -> Any:
        __tracebackhide__ = True
        session = active_session()
        if session is None:
            return await original(self, request)
        body = await request.aread()
        call = session.begin(request.method, str(request.url), request.headers.multi_items(), body)
        if call is None:
            return await original(self, request)
        _, recording, _, replaying = _streams(hx)
        if call.served is not None:
            return _replayed(hx, call, replaying)
        try:
            with forwarding():
                response = await original(self, request)
        except BaseException as exc:
            if _is_cancellation(exc):
                call.finish("closed")
            else:
                call.finish("error", exc)
            raise
        return _recorded(response, call, recording)

    handle_async_request.__llmwb__ = True  # type: ignore[attr-defined]
    return handle_async_request
