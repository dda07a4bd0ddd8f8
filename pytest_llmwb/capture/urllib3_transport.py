"""Capture for urllib3 2 (and so requests), streaming intact.

vcrpy's urllib3 stubs read a response to the end before urllib3 sees a byte, and
replay it as one piece: a streamed answer (``requests.post(..., stream=True)`` and
``iter_lines()``) reaches the caller only when it is over, a stream the caller stops
reading is drained, and a transport error mid-stream is lost. So urllib3 is ours, at
the place where one attempt becomes one response: ``HTTPConnectionPool._make_request``.
Retries and redirects stay urllib3's, each attempt a call of its own, as live.

Recording wraps the live response's readers (``read``, ``read1``, ``stream``,
``read_chunked``) so that every piece is passed to the caller as it is read while the
call records it; ``close()`` or ``release_conn()`` before the end records a stream the
caller stopped reading. In replay the response is built from the recorded exchange:
each read returns at most one recorded chunk (one server-sent event), ``stream()``
yields them one by one, and the body ends as the recording did.

Only urllib3 2 is handled here; with urllib3 1.26 vcrpy's stubs capture it (buffered).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import time
from collections.abc import Callable, Generator
from http.client import HTTPMessage
from typing import Any

from .session import (
    Call,
    SharedPatch,
    active_session,
    end_of_replay,
    forwarding,
    host_allowed,
    is_forwarded,
    paced_chunks,
)

__all__ = ["handles_urllib3", "installed"]

# (pool class, attribute) -> (original, ours)
_wrappers: dict[tuple[type, str], tuple[Any, Any]] = {}


def handles_urllib3() -> bool:
    """Whether urllib3 2 is importable, so that this module captures it."""
    if "urllib3" not in sys.modules and importlib.util.find_spec("urllib3") is None:
        return False
    import urllib3

    return int(str(getattr(urllib3, "__version__", "0")).split(".", 1)[0]) >= 2


def _install() -> None:
    if not handles_urllib3():
        return
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    for cls, attr, make in (
        (HTTPConnectionPool, "_make_request", _make_wrapper),
        (HTTPSConnectionPool, "_prepare_proxy", _proxy_wrapper),
    ):
        current = cls.__dict__[attr]
        entry = _wrappers.get((cls, attr))
        if entry is not None and current is entry[1]:
            continue
        # the same original keeps the same function (see httpx_transport)
        ours = entry[1] if entry is not None and entry[0] is current else make(current)
        _wrappers[(cls, attr)] = (current, ours)
        setattr(cls, attr, ours)


def _uninstall() -> None:
    for (cls, attr), (original, ours) in _wrappers.items():
        if cls.__dict__.get(attr) is ours:
            setattr(cls, attr, original)


def _proxy_wrapper(original: Any) -> Any:
    def _prepare_proxy(pool: Any, conn: Any) -> Any:
        """In replay no tunnel is opened: the bundle answers, or the request is blocked."""
        session = active_session()
        if (
            session is not None
            and session.run.mode == "replay"
            and not host_allowed(str(pool.host), pool.port, session.config.allow_hosts)
        ):
            return None
        return original(pool, conn)

    return _prepare_proxy


#: Patch urllib3's pools while the block runs (nested blocks share it).
installed = SharedPatch(_install, _uninstall).installed


def _make_wrapper(original: Any) -> Any:
    signature = inspect.signature(original)

    def _make_request(
        pool: Any, conn: Any, method: str, url: str, *args: Any, **kwargs: Any
    ) -> Any:
        __tracebackhide__ = True
        session = active_session()
        if session is None or is_forwarded():
            return original(pool, conn, method, url, *args, **kwargs)
        bound = signature.bind(pool, conn, method, url, *args, **kwargs)
        bound.apply_defaults()
        options = bound.arguments
        body, data = _materialized(options.get("body"))
        options["body"] = body
        headers = options.get("headers") or {}
        absolute = url.startswith(("http://", "https://"))
        full_url = url if absolute else f"{pool.scheme}://{_netloc(pool)}{url}"
        call = session.begin(method, full_url, list(headers.items()), data)
        if call is None:
            return original(*bound.args, **bound.kwargs)
        if call.served is not None:
            response = _replayed(call, method, full_url, options)
            response._connection = options.get("response_conn")  # as _make_request does
            response._pool = pool
            return response
        try:
            with forwarding():
                response = original(*bound.args, **bound.kwargs)
        except BaseException as exc:
            call.finish("error", exc)
            raise
        call.headers(response.status, response.reason or "", response.headers.items())
        if options.get("preload_content", True):  # read whole, as the caller asked
            call.decoded = bool(options.get("decode_content", True))
            call.chunk(response.data)
            call.finish("eof")
        else:
            _Recorder(response, call).install()
        return response

    _make_request.__llmwb__ = True  # type: ignore[attr-defined]
    return _make_request


def _netloc(pool: Any) -> str:
    host = str(pool.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = 443 if pool.scheme == "https" else 80
    return host if pool.port in (None, default) else f"{host}:{pool.port}"


def _materialized(body: Any) -> tuple[Any, bytes]:
    """The body to send (a stream read once is handed on as bytes) and its bytes."""
    if body is None:
        return None, b""
    if isinstance(body, str):
        return body, body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return body, bytes(body)
    if hasattr(body, "read"):
        data = body.read()
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return data, data
    parts = [p.encode("utf-8") if isinstance(p, str) else bytes(p) for p in body]
    return parts, b"".join(parts)  # an iterable (a chunked upload) stays one


# --- recording a live response ------------------------------------------------------------


class _Recorder:
    """Wraps one live response's readers: what the caller reads is what is recorded."""

    def __init__(self, response: Any, call: Call) -> None:
        self.response = response
        self.call = call
        self.inner = 0  # > 0 while a wrapped reader runs: the readers it uses are not
        self.noted = False

    def install(self) -> None:
        response = self.response
        cls = type(response)
        response.read = self._reader(cls.read, whole=True)
        response.read1 = self._reader(cls.read1, whole=False)
        response.stream = self._generator(cls.stream)
        response.read_chunked = self._generator(cls.read_chunked)
        response.release_conn = self._closer(cls.release_conn)
        response.close = self._closer(cls.close)

    def _note(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.noted:  # whether the caller reads the body decoded
            self.noted = True
            decode = kwargs.get("decode_content", args[1] if len(args) > 1 else None)
            if decode is None:
                decode = self.response.decode_content
            self.call.decoded = bool(decode)

    def _reader(self, method: Callable[..., bytes], *, whole: bool) -> Callable[..., bytes]:
        def read(*args: Any, **kwargs: Any) -> bytes:
            __tracebackhide__ = True
            if self.inner:
                return method(self.response, *args, **kwargs)
            self._note(args, kwargs)
            self.inner += 1
            try:
                data = method(self.response, *args, **kwargs)
            except BaseException as exc:
                self.call.finish("error", exc)
                raise
            finally:
                self.inner -= 1
            amt = kwargs.get("amt", args[0] if args else None)
            if data:
                self.call.chunk(data)
            if (not data and amt != 0) or (whole and amt is None):
                self.call.finish("eof")
            return data

        return read

    def _generator(
        self, method: Callable[..., Generator[bytes]]
    ) -> Callable[..., Generator[bytes]]:
        def generate(*args: Any, **kwargs: Any) -> Generator[bytes]:
            __tracebackhide__ = True
            if self.inner:
                yield from method(self.response, *args, **kwargs)
                return
            self._note(args, kwargs)
            parts = method(self.response, *args, **kwargs)
            call = self.call
            while True:
                self.inner += 1
                try:
                    data = next(parts)
                except StopIteration:
                    call.finish("eof")
                    return
                except BaseException as exc:
                    call.finish("error", exc)
                    raise
                finally:
                    self.inner -= 1
                call.chunk(data)
                try:
                    yield data
                except GeneratorExit:  # the consumer stopped reading
                    call.finish("closed")  # first: closing the reader releases the body
                    parts.close()
                    raise

        return generate

    def _closer(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def close(*args: Any, **kwargs: Any) -> Any:
            # urllib3 releases the connection itself inside a read that ends or fails:
            # that read records how the body ended; only the caller's own close counts
            if not self.call.done and not self.inner:
                from urllib3.util.response import is_fp_closed

                response = self.response
                fp = getattr(response, "_fp", None)
                ended = response.length_remaining == 0 or fp is None or is_fp_closed(fp)
                self.call.finish("eof" if ended else "closed")
            return method(self.response, *args, **kwargs)

        return close


# --- replaying -------------------------------------------------------------------------------


class _RecordedBody:
    """The recorded response body as a file: each read returns at most one chunk."""

    def __init__(self, call: Call, method: str) -> None:
        served = call.served
        assert served is not None
        self.call = call
        # what urllib3 and requests read of http.client's response
        self._method = method
        self.msg = HTTPMessage()
        for name, value in served.response_headers:
            self.msg[name] = value
        self.chunks = paced_chunks(call)
        self.pending = b""
        self.closed = False

    def _next(self) -> bytes:
        __tracebackhide__ = True
        found = next(self.chunks, None)
        if found is None:
            self.closed = True
            end_of_replay(self.call, sys.modules.get("urllib3.exceptions"))
            return b""
        wait, chunk = found
        if wait:
            time.sleep(wait)
        return chunk

    def read(self, amt: int | None = None) -> bytes:
        __tracebackhide__ = True
        if amt is None or amt < 0:
            parts = [self.pending]
            self.pending = b""
            while True:
                part = self._next()
                if not part:
                    return b"".join(parts)
                parts.append(part)
        if not self.pending:
            self.pending = self._next()
        data, self.pending = self.pending[:amt], self.pending[amt:]
        return data

    def read1(self, amt: int | None = None) -> bytes:
        __tracebackhide__ = True
        if not self.pending:
            self.pending = self._next()
        if amt is None or amt < 0:
            amt = len(self.pending)
        data, self.pending = self.pending[:amt], self.pending[amt:]
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def isclosed(self) -> bool:
        return self.closed


_classes: dict[type, type] = {}


def _response_class(base: type) -> type:
    """urllib3's ``HTTPResponse`` whose ``stream()`` yields the recorded chunks one by one.

    The stock ``stream(amt)`` gathers ``amt`` bytes before it yields (right for a file,
    not for server-sent events); ``read1`` returns what one read of the body gives.
    """
    found = _classes.get(base)
    if found is None:

        class ReplayedResponse(base):  # type: ignore[misc]
            def stream(self, amt: int | None = 2**16, decode_content: bool | None = None) -> Any:
                while True:
                    data = self.read1(amt, decode_content=decode_content)
                    if not data:
                        return
                    yield data

        found = _classes[base] = ReplayedResponse
    return found


def _replayed(call: Call, method: str, url: str, options: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    from urllib3 import HTTPHeaderDict
    from urllib3.response import HTTPResponse

    from .session import rebuild_error

    served = call.served
    assert served is not None
    if served.status is None:  # the attempt itself failed when recorded
        error = served.error or ("urllib3.exceptions.ProtocolError", "connection failed")
        raise rebuild_error(error[0], error[1], sys.modules.get("urllib3.exceptions"))
    headers = HTTPHeaderDict()
    for name, value in served.response_headers:
        headers.add(name, value)
    body = _RecordedBody(call, method)
    return _response_class(HTTPResponse)(
        body=body,
        original_response=body,  # closed at the end: urllib3 then releases the connection
        headers=headers,
        status=served.status,
        version=11,
        version_string="HTTP/1.1",
        reason=served.reason,
        preload_content=options.get("preload_content", True),
        decode_content=options.get("decode_content", True),
        retries=options.get("retries"),
        enforce_content_length=False,
        request_method=method,
        request_url=url,
    )
