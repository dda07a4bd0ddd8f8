"""Server-sent events: an incremental parser and a serializer.

The parser follows the WHATWG HTML "event stream interpretation" algorithm: lines end
with CRLF, LF or CR; a line starting with ``:`` is a comment; ``event``, ``data``,
``id`` and ``retry`` fields build an event, which a blank line dispatches; several
``data`` lines join with LF; an event with no ``data`` is not dispatched; one leading
UTF-8 BOM is skipped; bytes that are not UTF-8 decode to U+FFFD.

It works on bytes fed in arbitrary chunks and gives every event the byte offsets it
spans in the stream, so the same events (offsets included) come out however the
stream was split. A CR at the very end of the fed bytes is held back until the next
byte (or :meth:`SSEParser.close`) tells whether it is a lone CR or the first half of
CRLF; that keeps offsets exact.

:class:`AdapterError` lives here, in the lowest module of :mod:`pytest_llmwb.adapters`,
so that every adapter raises the same class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_llmwb.exceptions import LlmwbError

__all__ = ["AdapterError", "SSEEvent", "SSEParser", "encode_event", "parse_sse", "serialize_sse"]

_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"\r\n?|\n")
_TEXT_EOL = re.compile(r"\r\n?|\n")


class AdapterError(LlmwbError, ValueError):
    """A provider wire payload could not be parsed into a receipt.

    Raised for bodies that are not JSON, truncated or malformed server-sent event
    streams and payloads of the wrong shape. Callers catch it and keep the raw
    exchange. ``offset`` is the byte offset in the body where the problem was found,
    when known.
    """

    def __init__(self, message: str, *, offset: int | None = None, fix: str | None = None) -> None:
        self.offset = offset
        super().__init__(message, fix=fix)


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event.

    ``event`` is the event type (``"message"`` when the stream gave none), ``data``
    the data lines joined with LF, ``id`` the stream's last event id when the event
    was dispatched (ids persist across events, as in the spec) and ``retry`` the
    reconnection time set inside this event's block, if any. ``start`` and ``end``
    are the byte offsets of the event's block in the stream, ``end`` just past its
    terminating blank line; they take no part in equality.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None
    start: int = field(default=0, compare=False)
    end: int = field(default=0, compare=False)


class SSEParser:
    """Incremental event-stream parser: :meth:`feed` bytes, then :meth:`close`.

    After :meth:`close`, :attr:`truncated` tells whether the stream ended inside an
    event (an unterminated line, or field lines without the blank line that
    dispatches them) and :attr:`tail` holds the bytes after the last blank line.
    """

    def __init__(self) -> None:
        self._buf = bytearray()  # the stream from the start of the current block on
        self._base = 0  # stream offset of self._buf[0]
        self._pos = 0  # index in _buf of the next unread line
        self._scan = 0  # index in _buf from which to look for a line end
        self._bom_checked = False
        self._closed = False
        self._data: list[str] = []
        self._type = ""
        self._retry: int | None = None
        self._fields = False  # the current block has a field line
        #: The last event id seen in the stream (the spec's "last event ID buffer").
        self.last_event_id = ""
        #: The last valid ``retry`` value seen in the stream, in milliseconds.
        self.retry: int | None = None
        #: After :meth:`close`: the bytes after the last blank line.
        self.tail = b""
        #: After :meth:`close`: the stream ended inside an event.
        self.truncated = False

    @property
    def position(self) -> int:
        """Number of stream bytes fed so far."""
        return self._base + len(self._buf)

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Parse the next chunk of the stream; return the events it completed."""
        if self._closed:
            raise ValueError("SSEParser.feed() called after close()")
        self._buf += data
        return self._parse(final=False)

    def close(self, *, strict: bool = False) -> list[SSEEvent]:
        """End the stream; return the events only its end completed.

        With ``strict``, raise :class:`AdapterError` when the stream was truncated.
        """
        if self._closed:
            return []
        events = self._parse(final=True)
        self._closed = True
        self.tail = bytes(self._buf)
        self.truncated = self._fields or self._pos < len(self._buf)
        if strict and self.truncated:
            raise AdapterError(
                f"event stream truncated: the {len(self.tail)} bytes from offset {self._base} "
                f"do not end with a blank line: {_preview(self.tail)}",
                offset=self._base,
            )
        return events

    def _parse(self, *, final: bool) -> list[SSEEvent]:
        buf = self._buf
        if not self._bom_checked:
            if not final and len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
                self._base += len(_BOM)
            self._bom_checked = True
        events: list[SSEEvent] = []
        pos = self._pos
        block = 0  # index in buf where the current block starts
        while True:
            match = _EOL.search(buf, self._scan)
            if match is None:
                self._scan = len(buf)
                break
            eol_start, eol_end = match.span()
            if not final and eol_end == len(buf) and buf[eol_start:eol_end] == b"\r":
                self._scan = eol_start  # CR or CRLF? the next byte will tell
                break
            line = bytes(buf[pos:eol_start])
            pos = self._scan = eol_end
            if line:
                self._field(line)
                continue
            event = self._dispatch(self._base + block, self._base + eol_end)
            if event is not None:
                events.append(event)
            block = pos
        # drop the finished blocks once per call, so a large chunk costs linear time
        del buf[:block]
        self._base += block
        self._pos = pos - block
        self._scan -= block
        return events

    def _field(self, line: bytes) -> None:
        if line[0] == 0x3A:  # ":" starts a comment
            return
        self._fields = True
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        text = value.decode("utf-8", "replace")
        if name == b"data":
            self._data.append(text)
        elif name == b"event":
            self._type = text
        elif name == b"id":
            if "\x00" not in text:
                self.last_event_id = text
        elif name == b"retry" and text.isascii() and text.isdigit():
            self.retry = self._retry = int(text)

    def _dispatch(self, start: int, end: int) -> SSEEvent | None:
        event = None
        if self._data:
            event = SSEEvent(
                event=self._type or "message",
                data="\n".join(self._data),
                id=self.last_event_id,
                retry=self._retry,
                start=start,
                end=end,
            )
        self._data = []
        self._type = ""
        self._retry = None
        self._fields = False
        return event


def _preview(data: bytes, limit: int = 80) -> str:
    text = repr(data[:limit])
    return text + "..." if len(data) > limit else text


def parse_sse(data: bytes, *, strict: bool = True) -> list[SSEEvent]:
    """All events of a complete stream.

    With ``strict`` (the default), raise :class:`AdapterError` when the stream ends
    inside an event.
    """
    parser = SSEParser()
    events = parser.feed(data)
    events += parser.close(strict=strict)
    return events


def _check_line(what: str, value: str) -> None:
    if _TEXT_EOL.search(value):
        raise ValueError(f"an event {what} cannot contain a line break: {value!r}")


def encode_event(event: SSEEvent, *, last_event_id: str = "") -> bytes:
    """One event as stream bytes (LF line ends, UTF-8).

    ``last_event_id`` is the id the stream already carries: an ``id`` line is written
    only when the event's id differs from it. The ``event`` line is left out for the
    default type ``message``. Line breaks inside ``data`` become separate ``data``
    lines, so CR and CRLF in data read back as LF.
    """
    lines: list[str] = []
    if event.id != last_event_id:
        _check_line("id", event.id)
        if "\x00" in event.id:
            raise ValueError(f"an event id cannot contain NUL: {event.id!r}")
        lines.append(f"id: {event.id}" if event.id else "id:")
    if event.event != "message":
        _check_line("type", event.event)
        lines.append(f"event: {event.event}")
    if event.retry is not None:
        if event.retry < 0:
            raise ValueError(f"an event retry must be a non-negative integer: {event.retry}")
        lines.append(f"retry: {event.retry}")
    lines.extend(f"data: {line}" if line else "data:" for line in _TEXT_EOL.split(event.data))
    return ("\n".join(lines) + "\n\n").encode()


def serialize_sse(events: Iterable[SSEEvent]) -> bytes:
    """A stream that :func:`parse_sse` reads back as ``events`` (offsets aside)."""
    out = bytearray()
    last_event_id = ""
    for event in events:
        out += encode_event(event, last_event_id=last_event_id)
        last_event_id = event.id
    return bytes(out)
