"""Capture for http.client (urllib), aiohttp and boto3 through vcrpy (and urllib3 1.26).

vcrpy patches these clients and asks its cassette, for each request, whether it can
play a response, and hands it each live response to record. :class:`BundleCassette`
answers those questions from the run instead of a YAML file: every lookup is the
session's O(1) ``(node, ordinal)`` + digest check, every recorded response becomes a
fact and a blob of the bundle, and misses raise our own errors rather than
``CannotOverwriteExistingCassetteException``.

vcrpy's httpx, httpx2, urllib3 and requests patchers are skipped: :mod:`.httpx_transport`
and :mod:`.urllib3_transport` handle those clients without buffering streams (with
urllib3 1.26, vcrpy's stubs still capture urllib3 and requests). aiohttp stays on
vcrpy's patch, with the bodies streamed by :mod:`.aiohttp_stream`. The other clients
left to vcrpy are buffered by it (a streamed body is read whole before the caller sees
it); their exchanges are stored and replayed the same way as the others.

A transport error (connection refused, a timeout, a dropped connection) never reaches
a vcrpy cassette, so the connection stubs and the aiohttp request are wrapped to hand
it over: it is recorded as the exchange's ``error`` and raised again in replay, as the
same exception class at the same layer, so that the client above (urllib3, requests,
aiohttp) turns it into the same exception the caller saw live.
"""

from __future__ import annotations

import contextvars
import functools
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from vcr.cassette import Cassette
from vcr.patch import CassettePatcherBuilder
from vcr.record_mode import RecordMode
from vcr.stubs import VCRConnection

from .session import Call, is_forwarded, rebuild_error
from .urllib3_transport import handles_urllib3

if TYPE_CHECKING:
    from .session import CaptureSession

__all__ = ["BundleCassette", "installed"]

# the call whose recorded response vcrpy is playing in this task (aiohttp)
_played: contextvars.ContextVar[Call | None] = contextvars.ContextVar("llmwb_played", default=None)
# the call the cassette was last asked about in this task (aiohttp: the one that failed)
_asked: contextvars.ContextVar[Call | None] = contextvars.ContextVar("llmwb_asked", default=None)
# whether aiohttp undoes the content encoding of the request being made in this task
# (None: not an aiohttp request; vcrpy hands the other clients' bodies over as sent)
_decompress: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "llmwb_decompress", default=None
)


def _body(request: Any) -> bytes:
    """A vcr request body as bytes (aiohttp hands ``json=`` over as the object itself)."""
    body = getattr(request, "_body", None)
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, list) and all(isinstance(part, (bytes, bytearray)) for part in body):
        return b"".join(body)
    if isinstance(body, (dict, list)):
        return json.dumps(body).encode("utf-8")  # what aiohttp sends for json=
    return str(body).encode("utf-8")


def _headers(request: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in request.headers.items():
        if isinstance(value, (list, tuple)):
            value = value[0] if value else ""
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.append((str(name), str(value)))
    return out


class BundleCassette(Cassette):  # type: ignore[misc]
    """A vcrpy cassette whose store is the run: lookups by node, ordinal and digest."""

    def __init__(self, session: CaptureSession) -> None:
        super().__init__(path="<llmwb>", record_mode=RecordMode.ALL)
        self._session = session
        self._calls: dict[int, tuple[Any, Call | None]] = {}
        self._waiting: list[Call] = []  # live calls whose response is not recorded yet
        self._lock = threading.Lock()

    def _call(self, request: Any) -> Call | None:
        with self._lock:
            entry = self._calls.get(id(request))
        if entry is not None and entry[0] is request:
            _asked.set(entry[1])
            return entry[1]
        call = None
        if not is_forwarded():
            call = self._session.begin(
                request.method, request.uri, _headers(request), _body(request)
            )
        with self._lock:
            self._calls[id(request)] = (request, call)
            if call is not None and call.served is None:
                self._waiting.append(call)
        _asked.set(call)
        return call

    def can_play_response_for(self, request: Any) -> bool:
        """Whether replay answers ``request`` (decided once per request)."""
        call = self._call(request)
        return call is not None and call.served is not None

    def play_response(self, request: Any) -> dict[str, Any]:
        """The recorded response to ``request``, in vcrpy's shape."""
        __tracebackhide__ = True
        call = self._call(request)
        with self._lock:
            self._calls.pop(id(request), None)
        assert call is not None and call.served is not None
        served = call.served
        _played.set(call)
        if served.status is None:
            error = served.error or ("builtins.ConnectionError", "connection failed")
            raise rebuild_error(error[0], error[1])
        headers: dict[str, list[str]] = {}
        for name, value in served.response_headers:
            headers.setdefault(name, []).append(value)
        return {
            "status": {"code": served.status, "message": served.reason},
            "headers": headers,
            "body": {"string": served.body},
        }

    @property
    def write_protected(self) -> bool:
        """Never: misses raise the run's own errors in :meth:`can_play_response_for`."""
        return False

    def filter_request(self, request: Any) -> Any:
        """``request``, or ``None`` for traffic that passes unrecorded."""
        return request if self._call(request) is not None else None

    def append(self, request: Any, response: Any) -> None:
        """Record the live response to ``request``."""
        call = self.live_call(request)
        if call is None:
            return
        status = response.get("status", {})
        headers: list[tuple[str, str]] = []
        for name, values in (response.get("headers") or {}).items():
            for value in values if isinstance(values, list) else [values]:
                headers.append((str(name), str(value)))
        call.headers(
            int(status.get("code", 0)),
            str(status.get("message", "")),
            headers,
            decoded=self.decompressed(),
        )
        body = (response.get("body") or {}).get("string", b"")
        if isinstance(body, str):
            body = body.encode("utf-8")
        call.chunk(body or b"")
        call.finish("eof")

    def live_call(self, request: Any) -> Call | None:
        """The live call that ``request`` (whose response came) is, taken off the waiters."""
        with self._lock:
            entry = self._calls.pop(id(request), None)
        call = entry[1] if entry is not None and entry[0] is request else None
        if entry is None:
            # a request vcrpy made up to record a redirect hop: the first hop is the
            # request that was asked about (same method and URL), the others are new
            url = self._session.stored_url(request.uri)[0]
            with self._lock:
                for waiting in self._waiting:
                    if waiting.method == request.method.upper() and waiting.url == url:
                        call = waiting
                        break
            if call is None:
                call = self._call(request)
                with self._lock:
                    self._calls.pop(id(request), None)
        if call is None or call.served is not None:
            return None
        with self._lock:
            if call in self._waiting:
                self._waiting.remove(call)
        return call

    def failed(self, request: Any, error: Exception) -> None:
        """The live ``request`` failed in the transport: record the error."""
        with self._lock:
            entry = self._calls.pop(id(request), None)
        call = entry[1] if entry is not None and entry[0] is request else None
        self._fail(call, error)

    @staticmethod
    def decompressed() -> bool:
        """Whether the body vcrpy hands over for this task's request is decoded already.

        aiohttp decodes it unless ``auto_decompress=False``; http.client and urllib3 1.26
        hand it over as sent (gzip stays gzip): capture decodes it to scrub and store it.
        """
        return _decompress.get() is True

    def failed_call(self, call: Call | None, error: Exception) -> None:
        """A live call failed in the transport (aiohttp): record the error."""
        if call is not None:
            with self._lock:
                for key, (_, known) in list(self._calls.items()):
                    if known is call:
                        del self._calls[key]
        self._fail(call, error)

    def _fail(self, call: Call | None, error: Exception) -> None:
        if call is None or call.served is not None:
            return
        with self._lock:
            if call in self._waiting:
                self._waiting.remove(call)
        call.finish("error", error)

    def find_requests_with_most_matches(
        self, request: Any
    ) -> list[tuple[Any, list[Any], list[Any]]]:
        """The request itself: aiohttp replaying a redirect asks about each hop."""
        return [(request, [], [])]

    def _load(self) -> None:
        pass

    def _save(self, force: bool = False) -> None:
        pass


class _PatcherBuilder(CassettePatcherBuilder):  # type: ignore[misc]
    """vcrpy's patchers without httpx and httpx2: our own transports capture those.

    Overriding the two builders works with every vcrpy we support (``skip_patchers``
    only exists from vcrpy 9, which needs Python 3.11).
    """

    def _httpx(self) -> tuple[()]:
        return ()

    def _httpx2(self) -> tuple[()]:
        return ()

    def _urllib3(self) -> Any:
        return () if handles_urllib3() else super()._urllib3()

    def _requests(self) -> Any:
        return () if handles_urllib3() else super()._requests()

    def _build_cassette_subclass(self, base_class: type) -> type:
        """The connection stub vcrpy makes for the cassette, told of transport errors."""
        subclass: Any = super()._build_cassette_subclass(base_class)
        if issubclass(subclass, VCRConnection):
            original = subclass.getresponse

            def getresponse(conn: Any, *args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                try:
                    return original(conn, *args, **kwargs)
                except Exception as exc:  # connect and read errors surface here
                    request = conn.__dict__.get("_vcr_request")
                    if request is not None:
                        conn.cassette.failed(request, exc)
                    raise

            subclass.getresponse = getresponse
        built: type = subclass
        return built

    def _aiohttp(self) -> Iterator[Any]:
        """The aiohttp patch of vcrpy, telling the cassette of transport errors."""
        cassette = self._cassette
        for patcher in super()._aiohttp():
            inner = patcher.new

            @functools.wraps(inner)
            async def new_request(
                session: Any, method: str, url: Any, _inner: Any = inner, **kwargs: Any
            ) -> Any:
                __tracebackhide__ = True
                token, asked = _played.set(None), _asked.set(None)
                wanted = kwargs.get("auto_decompress")  # None: the session's setting
                default = getattr(session, "auto_decompress", True)
                decompress = _decompress.set(bool(default if wanted is None else wanted))
                try:
                    response = await _inner(session, method, url, **kwargs)
                    played = _played.get()
                except Exception as exc:
                    cassette.failed_call(_asked.get(), exc)
                    raise
                finally:
                    _played.reset(token)
                    _asked.reset(asked)
                    _decompress.reset(decompress)
                if played is not None and played.served is not None:
                    from .aiohttp_stream import replayed_body

                    replayed_body(response, played)
                return response

            patcher.new = new_request
            yield patcher


@contextmanager
def installed(session: CaptureSession) -> Iterator[BundleCassette]:
    """Apply vcrpy's patches, answered by a :class:`BundleCassette`, while the block runs."""
    cassette = BundleCassette(session)
    with ExitStack() as stack:
        for patcher in _PatcherBuilder(cassette).build():
            stack.enter_context(patcher)
        if "aiohttp" in sys.modules or importlib.util.find_spec("aiohttp") is not None:
            from . import aiohttp_stream

            stack.enter_context(aiohttp_stream.record_response_patched(cassette))
        yield cassette
