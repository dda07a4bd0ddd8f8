r"""The stored form of one captured HTTP exchange: the bytes replay serves.

A captured call keeps its wire exchange out of line, as a content-addressed blob that
its fact names in ``exchange``. The blob is pretty-printed JSON with sorted keys, so a
reviewer can read it in a git diff::

    {
      "format": "llmwb-exchange/1",
      "request": {"method": "POST", "url": "https://api.openai.com/v1/chat/completions",
                  "headers": {"content-type": "application/json"}, "body": "{...}"},
      "response": {"status": 200, "reason": "OK",
                   "headers": {"content-type": "text/event-stream"},
                   "chunks": [{"offset": 0, "text": "data: {...}\\n\\n"}, ...],
                   "end": "eof"}
    }

Rules that keep replay byte-exact and re-recordings identical:

- Bodies are stored decoded (no ``content-encoding``), as text when they are UTF-8,
  else as ``{"base64": ...}``; headers (one value per name) are scrubbed and
  allowlisted before they get here.
- A server-sent event stream is stored one event per chunk, with the byte offset where
  each starts: event boundaries do not depend on how the network split the bytes, and
  replay yields the same events one by one. Any other body is one chunk.
- ``end`` says how the body ended: ``eof`` (read to the end), ``closed`` (the caller
  stopped reading: the chunks are what it had received) or ``error`` (the transport
  failed; ``error`` names the exception). ``"complete": true`` marks a closed stream
  whose last event ended it by its provider's protocol (``data: [DONE]``,
  ``message_stop``): replay ends it as at EOF, since no more bytes were coming. A request
  that got no response at all has ``"response": null`` and an ``error``.
- Arrival times are volatile, so they are not here: they are the fact's ``timing``.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from ..adapters.sse import SSEParser
from ..codec import dumps_pretty
from ..exceptions import BundleCorruptError

__all__ = ["FORMAT", "End", "Exchange", "decode_body", "segment_body"]

FORMAT = "llmwb-exchange/1"
End = Literal["eof", "closed", "error"]
_ENDS = ("eof", "closed", "error")


def _text_or_b64(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _bytes_of(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("base64"), str):
        return base64.b64decode(value["base64"])
    raise BundleCorruptError(
        f"exchange {where} must be text or {{'base64': ...}}", path="<exchange blob>"
    )


def _headers_of(value: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BundleCorruptError(
            f"exchange {where} headers must be an object of strings", path="<exchange blob>"
        )
    return list(value.items())


@dataclass
class Exchange:
    """One HTTP request and what came back, as stored (scrubbed, decoded)."""

    method: str
    url: str
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes = b""
    status: int | None = None  # None: no response arrived
    reason: str = ""
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    end: End = "eof"
    error: tuple[str, str] | None = None  # (qualified exception type, message)
    complete: bool = False  # a closed stream that had ended by its own protocol

    @property
    def body(self) -> bytes:
        """The response body (every chunk, joined)."""
        return b"".join(self.chunks)

    def header(self, name: str) -> str | None:
        """The first response header called ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for key, value in self.response_headers:
            if key.lower() == name:
                return value
        return None

    @property
    def content_type(self) -> str:
        """The response ``content-type``, or ``""``."""
        return self.header("content-type") or ""

    def to_blob(self) -> bytes:
        """The canonical stored bytes of this exchange."""
        request: dict[str, Any] = {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.request_headers),
        }
        if self.request_body:
            request["body"] = _text_or_b64(self.request_body)
        doc: dict[str, Any] = {"format": FORMAT, "request": request, "response": None}
        if self.status is not None:
            chunks = []
            offset = 0
            for chunk in self.chunks:
                entry = _text_or_b64(chunk)
                item = {"text": entry} if isinstance(entry, str) else entry
                chunks.append({"offset": offset, **item})
                offset += len(chunk)
            doc["response"] = {
                "status": self.status,
                "reason": self.reason,
                "headers": dict(self.response_headers),
                "chunks": chunks,
                "end": self.end,
            }
            if self.complete and self.end == "closed":
                doc["response"]["complete"] = True
        if self.error is not None:
            doc["error"] = {"type": self.error[0], "message": self.error[1]}
        return dumps_pretty(doc)

    @classmethod
    def from_blob(cls, data: bytes, *, where: str = "<exchange blob>") -> Exchange:
        """Read an exchange back; :class:`BundleCorruptError` when it is malformed."""
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError(f"not an exchange of format {FORMAT}")
            req = doc["request"]
            exchange = cls(
                method=str(req["method"]),
                url=str(req["url"]),
                request_headers=_headers_of(req.get("headers", {}), "request"),
                request_body=_bytes_of(req["body"], "request body") if "body" in req else b"",
            )
            resp = doc.get("response")
            if resp is not None:
                exchange.status = int(resp["status"])
                exchange.reason = str(resp.get("reason", ""))
                exchange.response_headers = _headers_of(resp.get("headers", {}), "response")
                exchange.chunks = [
                    _bytes_of(c.get("text", c), "response chunk") for c in resp.get("chunks", [])
                ]
                end = resp.get("end", "eof")
                if end not in _ENDS:
                    raise ValueError(f"unknown end {end!r}")
                exchange.end = end
                exchange.complete = resp.get("complete") is True
            err = doc.get("error")
            if err is not None:
                exchange.error = (str(err["type"]), str(err["message"]))
            return exchange
        except BundleCorruptError:
            raise
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            raise BundleCorruptError(
                f"captured exchange is malformed: {exc}",
                path=where,
                fix="record the test again (pytest --llmwb-record)",
            ) from None


# --- what the recording side uses ---------------------------------------------------------


def decode_body(data: bytes, encoding: str) -> bytes | None:
    """``data`` with its ``content-encoding`` undone, or ``None`` when that is not possible.

    gzip and deflate always; br and zstd when ``brotli`` / ``zstandard`` is installed.
    A body cut short (a stream the caller closed early) decodes as far as it goes.
    """
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        try:
            if coding in ("gzip", "x-gzip"):
                data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
            elif coding == "deflate":
                try:
                    data = zlib.decompressobj().decompress(data)
                except zlib.error:
                    data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
            elif coding == "br":
                import brotli  # type: ignore[import-not-found,unused-ignore]

                data = bytes(brotli.decompress(data))
            elif coding == "zstd":
                import zstandard  # type: ignore[import-not-found,unused-ignore]

                data = bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))
            else:
                return None
        except Exception:
            return None
    return data


def segment_body(body: bytes, content_type: str) -> list[bytes]:
    """The stored chunks of a body: one per server-sent event, else the whole body.

    Bytes after the last complete event (a stream cut short) are a last chunk of
    their own.
    """
    if not body:
        return []
    if "event-stream" not in content_type.lower():
        return [body]
    parser = SSEParser()
    ends = [event.end for event in parser.feed(body)]
    ends += [event.end for event in parser.close()]
    chunks: list[bytes] = []
    start = 0
    for end in ends:
        if end > start:
            chunks.append(body[start:end])
            start = end
    if start < len(body):
        chunks.append(body[start:])
    return chunks


def chunk_times(
    chunks: Sequence[bytes], arrivals: Iterable[tuple[float, int]], *, scale: float = 1.0
) -> list[float]:
    """When each stored chunk had fully arrived, from the raw ``(time, size)`` arrivals.

    ``scale`` maps stored offsets to raw offsets (raw size / decoded size) when the
    body was decoded.
    """
    marks: list[tuple[int, float]] = []
    received = 0
    for at, size in arrivals:
        received += size
        marks.append((received, at))
    times: list[float] = []
    offset = 0
    i = 0
    last = marks[-1][1] if marks else 0.0
    for chunk in chunks:
        offset += len(chunk)
        need = offset * scale
        while i < len(marks) and marks[i][0] < need - 1e-9:
            i += 1
        times.append(marks[i][1] if i < len(marks) else last)
    return times
