"""HTTP capture for one run: what every patched client asks when a request goes out.

:class:`CaptureSession` is the one place that decides, for each intercepted request,
whether it is let through (an allowed host, or traffic inside an instrumented
function, whose decorator records the call), served from the bundle, or sent live and
recorded. The transports (:mod:`.httpx_transport`, :mod:`.vcr_cassette`) only move
bytes; they call :meth:`CaptureSession.begin` with the request and feed the returned
:class:`Call` with the response as it arrives.

A request becomes a **model_io** fact when a provider adapter reads it (OpenAI Chat
Completions and Responses, Anthropic Messages, and the adapters returned by the
``pytest_llmwb_adapters`` hook), otherwise a **tool_call** fact (a tool's REST API).
The fact belongs to the enclosing step's node, else to ``<provider>.<operation>``
(``openai.chat``) or ``http:<host>``. Its request digest is computed over the
normalized, scrubbed request, minus volatile values, so matching ignores headers,
transport details, UUIDs and the fields the test lists in ``volatile``.

The session is process-global (a stack, for nested runs): SDK calls made from worker
threads the host starts are captured too.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import ipaddress
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

from ..adapters import ADAPTERS, AdapterError, ProviderAdapter, find_adapter
from ..codec import digest
from ..exceptions import (
    BundleCorruptError,
    CaptureWarning,
    LiveCallBlockedError,
    ReplayDriftError,
    ReplayStreamError,
    SecretFoundError,
    UnexpectedCallError,
)
from ..recording import in_instrumented_call
from ..schema import ErrorInfo, ModelIOFact, ModelRequest, ModelResponse, ToolCallFact
from .exchange import End, Exchange, chunk_times, decode_body, segment_body

if TYPE_CHECKING:
    from ..recording import Run
    from ..scrub import Scrubber
    from .network import NetworkGuard

__all__ = ["Call", "CaptureConfig", "CaptureSession", "active_session", "capture"]

_stack: list[CaptureSession] = []
_stack_lock = threading.Lock()
# set while an outer capture layer forwards a request it captures itself (the openai/
# anthropic aiohttp transport over aiohttp): inner layers let it through untouched
_forwarding: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "llmwb_forwarding", default=False
)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# starts with a literal, so the regex engine skips ahead fast on long bodies
_UUID_BYTES = re.compile(rb"-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-")
_ERRNO = re.compile(r"\[Errno (-?\d+)\] (.*)", re.DOTALL)
_MULTIPART = re.compile(r"multipart/[\w-]+;.*boundary=\"?([^\";]+)\"?", re.IGNORECASE)
#: Response headers kept on top of the scrubber's allowlist: replay needs them.
_RESPONSE_HEADERS = frozenset({"location", "content-type"})


class SharedPatch:
    """A patch that nested capture sessions share: the first applies it, the last undoes it.

    ``install`` and ``uninstall`` run under a lock; ``installed()`` is the context
    manager a session enters.
    """

    def __init__(self, install: Callable[[], None], uninstall: Callable[[], None]) -> None:
        self._install = install
        self._uninstall = uninstall
        self._lock = threading.Lock()
        self._depth = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Apply the patch while the block runs."""
        with self._lock:
            if self._depth == 0:
                self._install()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._uninstall()


def active_session() -> CaptureSession | None:
    """The innermost active capture session of this process, or ``None``."""
    return _stack[-1] if _stack else None


@contextmanager
def forwarding() -> Iterator[None]:
    """Mark a request this layer captures, so the layers under it let it through."""
    token = _forwarding.set(True)
    try:
        yield
    finally:
        _forwarding.reset(token)


def is_forwarded() -> bool:
    """Whether an outer capture layer is forwarding the current request."""
    return _forwarding.get()


@dataclass(frozen=True)
class CaptureConfig:
    """How a run captures HTTP traffic.

    - ``http``: patch the HTTP clients (httpx, httpx2, requests/urllib3/http.client,
      aiohttp); ``False`` leaves them alone.
    - ``allow_hosts``: hosts (``name``, ``name:port``, IPs; ``*.example.com``) whose
      traffic is neither captured nor blocked: a local service the test must reach.
    - ``volatile``: JSON pointers into the normalized request (``/extra/metadata/trace``,
      ``*`` matches one level) whose values do not count when matching in replay.
    - ``replay_timing``: replay streamed chunks at the pace they were recorded.
    - ``adapters``: extra provider adapters, tried before the built-in ones.
    - ``block_network``: install the network guard (default: in replay).
    """

    http: bool = True
    allow_hosts: tuple[str, ...] = ()
    volatile: tuple[str, ...] = ()
    replay_timing: bool = False
    adapters: tuple[ProviderAdapter, ...] = ()
    block_network: bool | None = None


def _is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, port: int | None, allow: Sequence[str]) -> bool:
    """Whether ``host[:port]`` is in an allowlist of names, ``name:port`` and ``*.suffix``."""
    host = host.strip("[]").lower()
    for entry in allow:
        entry = entry.strip().lower()
        name, _, want_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        name = name.strip("[]")
        if want_port and port is not None and want_port != str(port):
            continue
        if name == host or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _error_name(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _drop(value: Any, parts: list[str]) -> Any:
    """``value`` without what the pointer ``parts`` names (``*`` is any key or index)."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        keys = list(value) if head == "*" else [head]
        out = dict(value)
        for key in keys:
            if key in out:
                if rest:
                    out[key] = _drop(out[key], rest)
                else:
                    del out[key]
        return out
    if isinstance(value, list):
        indexes = range(len(value)) if head == "*" else [int(head)] if head.isdigit() else []
        out_list = list(value)
        for index in sorted(indexes, reverse=True):
            if index < len(out_list):
                if rest:
                    out_list[index] = _drop(out_list[index], rest)
                else:
                    out_list[index] = "<volatile>"
        return out_list
    return value


def _no_uuids(value: Any) -> Any:
    if isinstance(value, str):
        return (
            "<uuid>" if len(value) == 36 and _UUID.fullmatch(value) else _UUID.sub("<uuid>", value)
        )
    if isinstance(value, dict):
        return {k: _no_uuids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_uuids(v) for v in value]
    return value


class Call:
    """One intercepted request: served from the bundle, or live and being recorded.

    A transport reads :attr:`served` (the recorded :class:`Exchange`, when replayed)
    or feeds a live response with :meth:`headers`, :meth:`chunk` and :meth:`finish`.
    """

    def __init__(self, session: CaptureSession, method: str, url: str, host: str) -> None:
        self.session = session
        self.method = method
        self.url = url  # as stored: scrubbed, loopback port as '*'
        self.host = host
        self.node = ""
        self.ordinal = 0
        self.kind: Literal["model_io", "tool_call"] = "tool_call"
        self.started = time.perf_counter()
        self.wall = time.time()
        # the request as sent, kept until its fact is built (see CaptureSession.begin)
        self.sent: tuple[list[tuple[str, str]], bytes] | None = None
        self.trace: tuple[str | None, str | None] | None = None
        self.request_headers: list[tuple[str, str]] = []
        self.request_body = b""
        self.request_json: Any = None
        self.model_request: ModelRequest | None = None
        self.adapter: ProviderAdapter | None = None
        self.operation = "chat"
        self.digest = ""
        self.served: Exchange | None = None
        self.timing: list[float] | None = None  # recorded timing of a served call
        # the live response
        self.status: int | None = None
        self.reason = ""
        self.response_headers: list[tuple[str, str]] = []
        self.decoded = False  # the body arrives already decoded (urllib3, aiohttp)
        self.t_headers = 0.0
        self.raw: list[bytes] = []
        self.arrivals: list[tuple[float, int]] = []
        self.done = False
        self.duration = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Call {self.method} {self.url} node={self.node!r} ordinal={self.ordinal}>"

    @property
    def where(self) -> str:
        """``METHOD URL`` for messages."""
        return f"{self.method} {self.url}"

    def headers(
        self, status: int, reason: str, headers: Iterable[tuple[str, str]], *, decoded: bool = False
    ) -> None:
        """The live response's status line and headers arrived."""
        self.t_headers = time.perf_counter() - self.started
        self.status = status
        self.reason = reason
        self.response_headers = [(k.lower(), v) for k, v in headers]
        self.decoded = decoded

    def chunk(self, data: bytes) -> None:
        """A piece of the live response body arrived (passed on to the caller as is)."""
        if data and not self.done:  # what comes after the end is not the call's
            self.raw.append(bytes(data))
            self.arrivals.append((time.perf_counter() - self.started, len(data)))

    def finish(self, end: End, error: BaseException | None = None) -> None:
        """The live exchange ended (the first outcome wins): its fact takes its place.

        The fact is built later (see :meth:`CaptureSession.begin`); never raises.
        """
        with self._lock:
            if self.done:
                return
            self.done = True
        self.duration = time.perf_counter() - self.started
        failed = (_error_name(error), str(error)) if error is not None else None
        self.session._finished(self, end, failed)


class CaptureSession:
    """Captures the HTTP traffic of ``run`` while active (a context manager)."""

    def __init__(
        self, run: Run, config: CaptureConfig | None = None, *, record_command: str | None = None
    ) -> None:
        self.run = run
        self.config = config or CaptureConfig()
        self.record_command = record_command or run.record_command or "record the run again"
        self.adapters: tuple[ProviderAdapter, ...] = (*self.config.adapters, *ADAPTERS)
        self.warnings: list[str] = []
        self.guard: NetworkGuard | None = None
        self._blocked: list[str] = []
        self._pending: set[Call] = set()
        self._deferred: list[Any] = []  # facts of this session still to build
        self._unpriced: set[tuple[str, str]] = set()
        self._urls: dict[str, tuple[str, str]] = {}
        self._exchanges: dict[str, Exchange] = {}
        self._lock = threading.Lock()
        self._stack: ExitStack | None = None
        self._volatile = [
            [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]
            for pointer in self.config.volatile
        ]
        scrubber = getattr(run, "scrubber", None)
        if scrubber is None:
            from ..scrub import default_scrubber

            scrubber = default_scrubber()
        self.scrubber: Scrubber = scrubber
        self._response_allow = frozenset(scrubber.allow_headers | _RESPONSE_HEADERS)
        # the allowlists with a `*` pattern, which a plain name lookup cannot decide
        self._wildcards = {
            allow
            for allow in (scrubber.allow_headers, self._response_allow)
            if any("*" in name for name in allow)
        }

    # -- activation ---------------------------------------------------------------------

    def __enter__(self) -> CaptureSession:
        stack = ExitStack()
        try:
            if self.config.http:
                from . import httpx_transport

                # httpx first: vcr remembers what it finds on import (see httpx_transport)
                stack.enter_context(httpx_transport.installed())
                from . import urllib3_transport

                stack.enter_context(urllib3_transport.installed())
                from . import vcr_cassette

                stack.enter_context(vcr_cassette.installed(self))
            block = self.config.block_network
            if block is None:
                block = self.run.mode == "replay"
            if block:
                from .network import NetworkGuard

                self.guard = stack.enter_context(
                    NetworkGuard(
                        allow_hosts=self.config.allow_hosts, record_command=self.record_command
                    )
                )
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        with _stack_lock:
            _stack.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        __tracebackhide__ = True
        with _stack_lock:
            if self in _stack:
                _stack.remove(self)
        try:
            pending = set(self._pending)
            for call in pending:
                # a response the caller never closed: record what it had received
                call.finish("closed")
            if pending and "pytest_llmwb.capture.aiohttp_stream" in sys.modules:
                from .aiohttp_stream import forget

                forget(pending)
            self.build()
        finally:
            if self._stack is not None:
                self._stack.close()
                self._stack = None

    def build(self) -> None:
        """Build the facts of the calls that ended, now rather than when first read.

        Adapter and pricing problems become warnings now; a secret in strict mode raises
        :class:`~pytest_llmwb.exceptions.SecretFoundError`.
        """
        __tracebackhide__ = True
        with self._lock:
            entries, self._deferred = self._deferred, []
        for entry in entries:
            if not entry.failed:  # one that raised to the test already is not raised twice
                try:
                    entry.load()
                except SecretFoundError as exc:
                    raise _without_frames(exc) from None

    @property
    def blocked(self) -> list[str]:
        """Every live access replay blocked: requests (``METHOD URL``), then connections."""
        return [*self._blocked, *(self.guard.attempts if self.guard is not None else [])]

    def warn(self, message: str) -> None:
        """Keep a warning; the plugin issues it after the test (see :meth:`emit_warnings`)."""
        with self._lock:
            self.warnings.append(message)

    def emit_warnings(self, stacklevel: int = 2) -> None:
        """Issue the kept warnings as :class:`CaptureWarning`."""
        for message in self.warnings:
            warnings.warn(CaptureWarning(message), stacklevel=stacklevel)
        self.warnings = []

    # -- a request goes out -------------------------------------------------------------

    def begin(
        self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Call | None:
        """Decide what happens to a request; ``None`` means: let it through, unrecorded.

        Returns a :class:`Call` whose :attr:`~Call.served` exchange is the answer in
        replay, or which records the live response fed to it. Raises the run's drift
        errors, and :class:`LiveCallBlockedError` in replay for a request the bundle
        has no recording of.
        """
        __tracebackhide__ = True
        if _forwarding.get() or in_instrumented_call():
            return None
        parts = urlsplit(url)
        hostname = (parts.hostname or "").lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        if self.config.allow_hosts and host_allowed(hostname, port, self.config.allow_hosts):
            return None
        method = method.upper()
        stored, host = self.stored_url(url)
        call = Call(self, method, stored, host)
        run = self.run
        found = find_adapter(method, hostname, parts.path, self.adapters)
        if found is not None:
            call.adapter, call.operation = found
            call.kind = "model_io"
            default = f"{found[0].name}.{found[1]}"
        else:
            default = f"http:{host}"
        call.node = run.resolve_node(None, default, call.kind)
        call.ordinal = run.next_ordinal(call.node)
        call.trace = run.trace_ids()  # the span the request was made in
        if run.index is None or run.mode == "record":
            # nothing to match: the call path only copies the request; it is scrubbed,
            # parsed and digested when its fact is built
            call.sent = (list(headers), body)
            with self._lock:
                self._pending.add(call)
            return call
        if self._fast(call, body):
            return call
        try:
            self._request(call, headers, body)
        except SecretFoundError as exc:
            raise _without_frames(exc) from None
        try:
            recorded = self._served(call)
            if recorded is not None:
                self._serve(call, recorded)
            elif run.mode == "replay":  # serve() raises first; kept as a guarantee
                raise LiveCallBlockedError(f"replay blocked a live call: {call.where}")
        except ReplayDriftError as exc:
            # an SDK retries (after a back-off) or wraps what its transport raises; a
            # drift error dressed as the SDK's own error type reaches the test at once
            raise past_sdk_retries(
                exc, run.index.raised if run.index is not None else None
            ) from None
        if recorded is None:
            with self._lock:
                self._pending.add(call)
        return call

    def _served(self, call: Call) -> Any:
        """The recorded fact that answers ``call`` (``None``: go live); raises drift."""
        __tracebackhide__ = True
        run = self.run
        try:
            return run.serve(call.node, call.ordinal, call.kind, call.digest, call.request_json)
        except UnexpectedCallError as exc:
            if run.mode != "replay" or isinstance(exc, LiveCallBlockedError):
                raise
            with self._lock:
                self._blocked.append(call.where)  # reported as a blocked request instead
            if run.index is not None and exc in run.index.raised:
                run.index.raised.remove(exc)
            raise LiveCallBlockedError(
                f"replay blocked a live call: {call.where} has no recording in the bundle "
                f"(node {call.node!r}, ordinal {call.ordinal})\n  {exc.message}",
                attempt=call.where,
                fix=exc.fix,
            ) from None

    def stored_url(self, url: str) -> tuple[str, str]:
        """``url`` as stored (scrubbed, no fragment, a loopback port as ``*``) and its host.

        Loopback servers started by tests listen on a new port each run, so the port
        is left out of what is stored and matched.
        """
        known = self._urls.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2].lower()
        if _is_loopback_host(parts.hostname or "") and host.rpartition(":")[2].isdigit():
            host = host.rpartition(":")[0]
            netloc = f"{host}:*"
        else:
            netloc = host
        stored = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        found = self._urls[url] = (self.scrubber.scrub_url(stored), host)
        if len(self._urls) > 4096:  # URLs with ids in them: keep the cache bounded
            self._urls.clear()
        return found

    def _fast(self, call: Call, body: bytes) -> bool:
        """Serve a request whose bytes are exactly the recorded ones, without parsing it.

        The recorded request is stored scrubbed and normalized from those same bytes,
        so equal bytes (and method and URL) mean an equal digest: the call is served
        without reading its recorded fact or computing a digest.
        """
        run = self.run
        ref = run.exchange_ref(call.node, call.ordinal) if run.mode in ("replay", "new") else None
        if ref is None:
            return False
        exchange = self.exchange(ref)
        if (
            exchange.request_body != body
            or exchange.method != call.method
            or exchange.url != call.url
            or run.serve_exact(call.node, call.ordinal) is None
        ):
            return False
        call.served = exchange
        if self.config.replay_timing and run.index is not None:
            recorded = run.index.recorded(call.node, call.ordinal)
            call.timing = getattr(recorded, "timing", None)
        return True

    def _serve(self, call: Call, recorded: Any, exchange: Exchange | None = None) -> None:
        __tracebackhide__ = True
        ref = getattr(recorded, "exchange", None)
        if ref is None:
            raise LiveCallBlockedError(
                f"replay cannot serve {call.where}: the call recorded at node "
                f"{call.node!r}, ordinal {call.ordinal} was recorded without its HTTP "
                "exchange (by an instrumented function, not by HTTP capture)",
                attempt=call.where,
                fix=self.record_command,
            )
        call.served = exchange if exchange is not None else self.exchange(ref)
        call.timing = getattr(recorded, "timing", None)
        self.run.append_served(recorded)

    def exchange(self, ref: str) -> Exchange:
        """The stored exchange ``ref`` of the run (or the bundle it replays), parsed once."""
        found = self._exchanges.get(ref)
        if found is None:
            try:
                data = self.run.blob(ref)
            except BundleCorruptError:
                raise
            except Exception as exc:
                raise BundleCorruptError(
                    f"the captured exchange {ref} cannot be read: {exc}",
                    path=str(getattr(self.run.index, "source", "the bundle")),
                    fix=self.record_command,
                ) from None
            found = Exchange.from_blob(data, where=f"blob {ref}")
            self._exchanges[ref] = found
        return found

    def _request(self, call: Call, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Scrub, parse and digest the request (what record and the slow replay path do)."""
        scrubber = self.scrubber
        firsts: dict[str, str] = {}
        for name, value in headers:
            firsts.setdefault(name.lower(), value)
        call.request_headers = sorted(self._headers(firsts, scrubber.allow_headers).items())
        content_type = firsts.get("content-type", "")
        where = f"the request body of {call.where}"
        parsed: Any = None
        is_json = False
        if body and ("json" in content_type.lower() or body[:1] in (b"{", b"[")):
            try:
                parsed = orjson.loads(body)
                is_json = True
            except orjson.JSONDecodeError:
                pass
        if is_json:
            clean = scrubber.scrub_value(parsed, where=where)
            if clean is not parsed:
                parsed = clean
                body = orjson.dumps(clean)
        elif body:
            body = scrubber.scrub_bytes(body, where=where)
        call.request_body = body
        if call.adapter is not None:
            if isinstance(parsed, dict):
                try:
                    call.model_request = call.adapter.parse_request(parsed)
                except AdapterError as exc:
                    self.warn(
                        f"{call.where}: adapter {call.adapter.api} could not read the "
                        f"request ({exc.message}); the exchange is kept raw as a tool_call "
                        "fact"
                    )
            else:
                self.warn(
                    f"{call.where}: adapter {call.adapter.api} matched, but the request "
                    "body is not a JSON object; the exchange is kept raw as a tool_call fact"
                )
        if call.model_request is not None:
            call.request_json = call.model_request.model_dump(mode="json")
        else:
            call.kind = "tool_call"
            arguments: dict[str, Any] = {"method": call.method, "url": call.url}
            if is_json:
                arguments["body"] = parsed
            elif body:
                text = self._text(body)
                boundary = _MULTIPART.search(content_type)
                if boundary is not None and text is not None:
                    text = text.replace(boundary.group(1), "<boundary>")
                arguments["body"] = text if text is not None else f"<{len(body)} bytes>"
            call.request_json = {"tool": self._tool_name(call), "arguments": arguments}
        call.digest = digest(self._matchable(call.request_json, body))
        call.sent = None

    def _headers(self, headers: dict[str, str], allow: frozenset[str]) -> dict[str, str]:
        """The headers to store: the scrubber's choice among the allowlisted ones."""
        if allow not in self._wildcards:  # skip what cannot be kept, cheaply
            headers = {k: v for k, v in headers.items() if k in allow}
        return self.scrubber.scrub_headers(headers, allow=allow)

    def _message(self, message: str) -> str:
        """An exception's message, scrubbed (it may quote a URL or a header)."""
        text: str = self.scrubber.scrub_value(message, where="an exception message")
        return text

    @staticmethod
    def _text(data: bytes) -> str | None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @staticmethod
    def _tool_name(call: Call) -> str:
        path = urlsplit(call.url).path or "/"
        return f"{call.method} {call.host}{path}"

    def _matchable(self, request: Any, body: bytes) -> Any:
        """The request as matching sees it: UUIDs and the volatile fields left out."""
        if _UUID_BYTES.search(body):
            request = _no_uuids(request)
        for parts in self._volatile:
            request = _drop(request, parts)
        return request

    # -- the response ended: the fact -----------------------------------------------------

    def _finished(self, call: Call, end: End, error: tuple[str, str] | None) -> None:
        """Take the fact's place in the run; :meth:`_build` makes it when it is read."""
        entry = self.run.append_deferred(
            call.node, functools.partial(self._build, call, end, error), trace=call.trace
        )
        with self._lock:
            self._pending.discard(call)
            self._deferred.append(entry)

    def _build(
        self, call: Call, end: End, error: tuple[str, str] | None, fields: dict[str, Any]
    ) -> ModelIOFact | ToolCallFact:
        __tracebackhide__ = True
        try:
            if call.sent is not None:
                self._request(call, *call.sent)
            return self._record(call, end, error, fields)
        except SecretFoundError as exc:
            raise _without_frames(exc) from None
        except Exception as exc:  # pragma: no cover - defensive: keep the call's place
            message = (
                f"{call.where}: the exchange could not be recorded ({type(exc).__name__}: {exc})"
            )
            self.warn(message)
            return ToolCallFact(
                **fields,
                node=call.node,
                ordinal=call.ordinal,
                tool=self._tool_name(call),
                arguments={"method": call.method, "url": call.url},
                error=ErrorInfo(type="pytest_llmwb.CaptureError", message=message),
            )

    def _record(
        self, call: Call, end: End, error: tuple[str, str] | None, fields: dict[str, Any]
    ) -> ModelIOFact | ToolCallFact:
        scrubber = self.scrubber
        exchange = Exchange(
            method=call.method,
            url=call.url,
            request_headers=call.request_headers,
            request_body=call.request_body,
            end=end,
            error=(error[0], self._message(error[1])) if error is not None else None,
        )
        timing: list[float] | None = None
        content_type = ""
        if call.status is not None:
            firsts: dict[str, str] = {}
            for name, value in call.response_headers:
                firsts.setdefault(name, value)
            content_type = firsts.get("content-type", "")
            raw = b"".join(call.raw)
            body: bytes = raw
            encoding = firsts.get("content-encoding", "")
            kept_encoding = False
            if encoding and not call.decoded:
                decoded = decode_body(raw, encoding)
                if decoded is None:
                    kept_encoding = True
                    self.warn(
                        f"{call.where}: the response is {encoding}-encoded and cannot be "
                        "decoded here; it is kept encoded"
                    )
                else:
                    body = decoded
            headers = self._headers(firsts, self._response_allow)
            if kept_encoding:
                headers["content-encoding"] = encoding
            where = f"the response body of {call.where}"
            parsed: Any = None
            if not kept_encoding and "json" in content_type.lower() and end == "eof":
                try:
                    parsed = orjson.loads(body)
                except orjson.JSONDecodeError:
                    parsed = None
            if parsed is not None:  # field names count too (a "password" field)
                clean = scrubber.scrub_value(parsed, where=where)
                if clean is not parsed:
                    body = orjson.dumps(clean)
            else:
                if not kept_encoding and "event-stream" in content_type.lower():
                    # a secret streamed in pieces: scrubbed as the caller assembles it
                    body = scrubber.scrub_event_stream(body, where=where)
                body = scrubber.scrub_bytes(body, where=where)
            chunks = segment_body(body, content_type) if not kept_encoding else [body]
            exchange.status = call.status
            exchange.reason = self.scrubber.scrub_value(call.reason, where="a reason phrase")
            exchange.response_headers = sorted(headers.items())
            exchange.chunks = chunks
            scale = len(raw) / len(body) if body and raw and len(raw) != len(body) else 1.0
            times = chunk_times(chunks, call.arrivals, scale=scale)
            timing = [round(t, 6) for t in (call.t_headers, *times)]
        elif error is not None:
            exchange.end = "error"
        response: ModelResponse | None = None
        info: ErrorInfo | None = None
        if call.kind == "model_io":
            response, info = self._model_response(call, exchange, end, error, content_type)
            exchange.complete = end == "closed" and response is not None and info is None
        ref = self.run.add_blob(exchange.to_blob(), scrubbed=True)
        at = datetime.fromtimestamp(call.wall, timezone.utc).isoformat(timespec="microseconds")
        fields = {
            **fields,
            "node": call.node,
            "ordinal": call.ordinal,
            "request_digest": call.digest,
            "exchange": ref,
            "at": at,
            "duration_ms": call.duration * 1000,
            "timing": timing,
        }
        if call.kind == "model_io":
            adapter = call.adapter
            assert adapter is not None and call.model_request is not None
            cost = None
            if response is not None:
                cost = self._price(adapter.name, call, response, at)
            return ModelIOFact(
                provider=adapter.name,
                operation=call.operation,
                request=call.model_request,
                response=response,
                error=info,
                cost=cost,
                **fields,
            )
        return self._record_tool(call, exchange, error, content_type, fields)

    def _price(self, provider: str, call: Call, response: ModelResponse, when: str) -> Any:
        """Price a live receipt with the run's price table (never in replay)."""
        assert call.model_request is not None
        from ..pricing import price

        table = getattr(self.run, "prices", None)
        if table is None:
            return None
        at = datetime.fromisoformat(when)
        for model in dict.fromkeys(m for m in (response.model, call.model_request.model) if m):
            if (provider, model) in self._unpriced:
                continue
            try:
                cost = price(provider, model, response.usage, table=table, at=at)
            except Exception as exc:
                self.warn(f"{call.where}: pricing {provider}/{model} failed ({exc})")
                return None
            if cost is not None:
                return cost
            self._unpriced.add((provider, model))  # no table knows it: skip it next time
        return None

    def _model_response(
        self,
        call: Call,
        exchange: Exchange,
        end: End,
        error: tuple[str, str] | None,
        content_type: str,
    ) -> tuple[ModelResponse | None, ErrorInfo | None]:
        """The receipt's response and error, read by the call's adapter."""
        adapter = call.adapter
        assert adapter is not None
        response = None
        info = None
        if exchange.status is not None:
            body = exchange.body
            if end != "eof" and "event-stream" in content_type.lower():
                # what the caller had: the complete events (a cut-off one is in the blob)
                chunks = exchange.chunks
                if chunks and not chunks[-1].endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
                    chunks = chunks[:-1]
                body = b"".join(chunks)
            try:
                response, info = adapter.parse_response(exchange.status, body, content_type)
            except AdapterError as exc:
                info = ErrorInfo(type="pytest_llmwb.AdapterError", message=exc.message)
                if end == "closed" and 200 <= exchange.status < 300:
                    info = ErrorInfo(
                        type="stream_closed",
                        message=f"the caller stopped reading after {len(body)} bytes, before "
                        f"the stream ended ({exc.message})",
                    )
                elif end == "eof":
                    self.warn(
                        f"{call.where} (node {call.node!r}, ordinal {call.ordinal}): adapter "
                        f"{adapter.api} could not read the response ({exc.message}); the "
                        "raw exchange is kept in the bundle and replays as recorded"
                    )
        if error is not None:
            info = ErrorInfo(type=error[0], message=self._message(error[1]))
        return response, info

    def _record_tool(
        self,
        call: Call,
        exchange: Exchange,
        error: tuple[str, str] | None,
        content_type: str,
        fields: dict[str, Any],
    ) -> ToolCallFact:
        result: Any = None
        if exchange.status is not None:
            body = exchange.body
            value: Any = None
            if "json" in content_type.lower():
                try:
                    value = orjson.loads(body)
                except orjson.JSONDecodeError:
                    value = None
            if value is None and body:
                value = self._text(body)
                if value is None:
                    value = f"<{len(body)} bytes>"
            result = {"status": exchange.status, "body": value}
        request = call.request_json
        return ToolCallFact(
            tool=request["tool"],
            arguments=request["arguments"],
            result=result,
            error=ErrorInfo(type=error[0], message=self._message(error[1])) if error else None,
            **fields,
        )


#: The base error classes of SDKs that retry or wrap any other exception their HTTP
#: client raises, but pass their own errors through at once (read in their
#: ``_base_client.py``: openai re-raises ``OpenAIError`` as is, anthropic does not wrap
#: or retry an ``AnthropicError``).
SDK_ERRORS: tuple[tuple[str, str], ...] = (
    ("openai", "OpenAIError"),
    ("anthropic", "AnthropicError"),
)
_sdk_proof: dict[tuple[type, tuple[type, ...]], type] = {}


def past_sdk_retries(error: ReplayDriftError, raised: list[Any] | None = None) -> ReplayDriftError:
    """``error`` as an instance of its class that is also each loaded SDK's own error type.

    The openai and anthropic SDKs retry, after back-offs, and wrap in
    ``APIConnectionError`` whatever their transport raises, except their own errors.
    The class keeps the name, module and every attribute of the original, so
    ``pytest.raises(PayloadDriftError)`` and the summary still name the drift. ``raised``
    (the run's list of drift raised to the host) gets the new instance in place of the
    old one.
    """
    bases: list[type] = []
    for module_name, name in SDK_ERRORS:
        module = sys.modules.get(module_name)
        base = getattr(module, name, None) if module is not None else None
        if isinstance(base, type) and issubclass(base, Exception) and not isinstance(error, base):
            bases.append(base)
    if not bases:
        return error
    cls = type(error)
    key = (cls, tuple(bases))
    made = _sdk_proof.get(key)
    if made is None:
        made = _sdk_proof[key] = type(
            cls.__name__,
            (cls, *bases),
            {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
            },
        )
    proof: ReplayDriftError = made.__new__(made, *error.args)
    proof.__dict__.update(error.__dict__)
    if raised is not None:
        for i, item in enumerate(raised):
            if item is error:
                raised[i] = proof
    return proof


def _without_frames(error: SecretFoundError) -> SecretFoundError:
    """``error`` without the frames it passed through, to be raised again from here.

    Those frames hold the request as sent (its ``Authorization`` header, the body with
    the secret) in their arguments and locals, which pytest prints with ``-l`` or
    ``--tb=long``; the error itself names where the secret was, never the secret.
    """
    error.__context__ = None
    return error.with_traceback(None)


def replay_pace(call: Call) -> list[float] | None:
    """The recorded times (headers, then each chunk) to replay at, or ``None``: at once."""
    if not call.session.config.replay_timing or not call.timing:
        return None
    return call.timing


def paced_chunks(call: Call) -> Iterator[tuple[float, bytes]]:
    """The served call's chunks, each with the pause to make before it (0: at once).

    The pauses follow the recorded arrival times with ``replay_timing``; the transport
    sleeps them its own way (``time.sleep``, ``asyncio.sleep``).
    """
    served = call.served
    assert served is not None
    pace = replay_pace(call)
    for i, chunk in enumerate(served.chunks):
        wait = pace[i + 1] - pace[i] if pace and i + 1 < len(pace) else 0.0
        yield max(0.0, wait), chunk


def end_of_replay(call: Call, *modules: Any) -> None:
    """End a replayed body the way the recorded one ended (a transport reads past it).

    At EOF, or for a closed stream the provider had ended, this returns; a recorded
    transport error is raised again (its class looked up in ``modules`` first); a caller
    that reads past where the recorded caller stopped gets :class:`ReplayStreamError`.
    """
    __tracebackhide__ = True
    served = call.served
    assert served is not None
    if served.end == "eof" or served.complete:
        return
    if served.end == "error" and served.error is not None:
        raise rebuild_error(served.error[0], served.error[1], *modules)
    size = sum(len(c) for c in served.chunks)
    error = ReplayStreamError(
        f"{call.where} (node {call.node!r}, ordinal {call.ordinal}): the replayed caller "
        f"read past byte {size} of the response, where the recorded caller stopped "
        "reading; the code now consumes more of the stream than when it was recorded",
        fix=call.session.record_command,
    )
    index = call.session.run.index
    if index is not None:
        index.raised.append(error)
    raise error


def rebuild_error(type_name: str, message: str, *modules: Any) -> BaseException:
    """The recorded transport exception, rebuilt, else a ``RecordedCallError``.

    The class is looked up by name in ``modules`` first (httpx or httpx2, whichever
    replays), then in its own module.
    """
    from ..exceptions import RecordedCallError

    module_name, _, name = type_name.rpartition(".")
    candidates = [getattr(m, name, None) for m in modules if m is not None]
    with suppress(Exception):
        candidates.append(getattr(importlib.import_module(module_name), name, None))
    for cls in candidates:
        if isinstance(cls, type) and issubclass(cls, Exception):
            found = _ERRNO.fullmatch(message) if issubclass(cls, OSError) else None
            try:
                # "[Errno 111] Connection refused" comes back with its errno and strerror
                return cls(int(found[1]), found[2]) if found else cls(message)
            except Exception:
                return _same_class(cls, message)
    return RecordedCallError(type_name, message)


def _same_class(cls: type[Exception], message: str) -> Exception:
    """An instance of ``cls`` (a subclass of it) for classes built from more than a message.

    ``aiohttp.ClientConnectorError(key, os_error)`` or urllib3's
    ``NewConnectionError(conn, message)`` cannot be rebuilt from their message; a
    subclass made from the message alone is caught by every ``except`` the original is.
    What its message cannot carry (aiohttp's ``host``, ``os_error``) it does not have.
    """
    replayed = type(
        cls.__name__,
        (cls,),
        {
            "__init__": lambda self, *args: Exception.__init__(self, message),
            "__str__": lambda self: message,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        },
    )
    error: Exception = replayed()
    return error


@contextmanager
def capture(
    run: Run, config: CaptureConfig | None = None, *, record_command: str | None = None
) -> Iterator[CaptureSession]:
    """Capture the HTTP traffic of ``run`` inside the block (see :class:`CaptureSession`)."""
    with CaptureSession(run, config, record_command=record_command) as session:
        yield session
