from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmwb.adapters import AdapterError, SSEEvent, SSEParser, parse_sse, serialize_sse
from pytest_llmwb.adapters.sse import encode_event

# Every rule of the WHATWG event-stream grammar in one stream: a BOM, comments, CRLF,
# CR and LF line ends, multi-line data, a field without a colon, an ignored field, an
# id that persists, an id with NUL (ignored), valid and invalid retry, an event with no
# data (not dispatched), multi-byte UTF-8, and a last event ended by a lone CR.
SAMPLE = (
    b"\xef\xbb\xbf: comment\r\n"
    b"event: greeting\r\n"
    b"data: h\xc3\xa9llo\r\n"
    b"data:  two spaces\r\n"
    b"\r\n"
    b"id: 7\n"
    b"data\n"
    b"unknown: x\n"
    b"\n"
    b"\n"
    b"event: ignored\n"
    b"id: 8\n"
    b"\n"
    b"retry: 1500\r"
    b"retry: 1x\r"
    b"id: bad\x00id\r"
    b'data:{"k": "\xe2\x82\xac\xf0\x9f\x98\x80"}\r'
    b"\r"
    b":\n"
    b"data: last\r"
    b"\r"
)
EXPECTED = [
    (SSEEvent(event="greeting", data="héllo\n two spaces"), 3, 66),
    (SSEEvent(data="", id="7"), 66, 89),
    (SSEEvent(data='{"k": "€😀"}', id="8", retry=1500), 112, 168),
    (SSEEvent(data="last", id="8"), 168, 182),
]


def events_with_offsets(events: list[SSEEvent]) -> list[tuple[SSEEvent, int, int]]:
    return [(event, event.start, event.end) for event in events]


def parse_chunked(data: bytes, cuts: list[int]) -> tuple[list[SSEEvent], SSEParser]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    previous = 0
    for cut in sorted(cuts):
        events += parser.feed(data[previous:cut])
        previous = cut
    events += parser.feed(data[previous:])
    events += parser.close()
    return events, parser


def test_sample_stream_gives_the_spec_events_with_offsets() -> None:
    assert len(SAMPLE) == 182
    events = parse_sse(SAMPLE)
    assert events_with_offsets(events) == EXPECTED
    assert [SAMPLE[event.start : event.end][-1:] for event in events] == [
        b"\n",
        b"\n",
        b"\r",
        b"\r",
    ]


def test_every_single_split_point_gives_identical_events() -> None:
    for cut in range(len(SAMPLE) + 1):
        events, parser = parse_chunked(SAMPLE, [cut])
        assert events_with_offsets(events) == EXPECTED, cut
        assert not parser.truncated


def test_byte_by_byte_feeding() -> None:
    events, parser = parse_chunked(SAMPLE, list(range(len(SAMPLE))))
    assert events_with_offsets(events) == EXPECTED
    assert parser.position == len(SAMPLE)
    assert parser.retry == 1500
    assert parser.last_event_id == "8"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=40))
def test_arbitrary_chunkings_give_identical_events(cuts: list[int]) -> None:
    events, _ = parse_chunked(SAMPLE, cuts)
    assert events_with_offsets(events) == EXPECTED


def test_lone_cr_at_the_end_of_a_chunk_waits_for_the_next_byte() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\r") == []  # the CR may be the first half of CRLF
    [event] = parser.feed(b"\n")
    assert (event.data, event.start, event.end) == ("a", 0, 10)
    parser = SSEParser()
    assert parser.feed(b"data: a\n\r") == []
    [event] = parser.close()  # the end of the stream settles it: a lone CR
    assert (event.data, event.end) == ("a", 9)
    assert not parser.truncated


def test_whatwg_examples() -> None:
    # from the HTML standard, section "Event stream interpretation"
    events = parse_sse(b"data\n\ndata\ndata\n\ndata:", strict=False)
    assert [event.data for event in events] == ["", "\n"]
    assert [event.data for event in parse_sse(b"data:test\n\ndata: test\n\n")] == ["test", "test"]
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    assert [(event.data, event.id) for event in parse_sse(stream)] == [
        ("first event", "1"),
        ("second event", ""),
        (" third event", ""),
    ]


def test_invalid_utf8_decodes_to_replacement_characters() -> None:
    [event] = parse_sse(b"data: a\xffb\xe2\x82\n\n")
    assert event.data == "a\ufffdb\ufffd"


def test_only_a_leading_bom_is_skipped() -> None:
    assert parse_sse(b"\xef\xbb\xbf") == []
    # a second BOM is part of the first field name, which is then unknown
    assert parse_sse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []
    [event] = parse_sse(b"\xef\xbb\xbfdata: x\n\n")
    assert (event.data, event.start) == ("x", 3)


@pytest.mark.parametrize(
    ("tail", "truncated"),
    [
        (b"", False),
        (b"\n\n", False),
        (b": keep-alive\n", False),
        (b"data: partial", True),
        (b"data: no blank line\n", True),
        (b"event: x\n", True),
        (b": unterminated comment", True),
    ],
)
def test_truncated_stream_is_detected(tail: bytes, truncated: bool) -> None:
    stream = b"data: one\n\n" + tail
    parser = SSEParser()
    events = parser.feed(stream) + parser.close()
    assert [event.data for event in events] == ["one"]
    assert parser.truncated is truncated
    assert parser.tail == tail.lstrip(b"\n")
    if truncated:
        with pytest.raises(AdapterError, match="truncated") as excinfo:
            parse_sse(stream)
        assert excinfo.value.offset == 11
        assert isinstance(excinfo.value, ValueError)
    else:
        assert parse_sse(stream) == events


def test_every_prefix_of_the_sample_is_parsed_or_flagged() -> None:
    ends = [end for _, _, end in EXPECTED]
    for cut in range(len(SAMPLE)):
        parser = SSEParser()
        events = parser.feed(SAMPLE[:cut]) + parser.close()
        assert events == [event for event, _, end in EXPECTED[: len(events)]]
        assert SAMPLE[:cut].endswith(parser.tail)
        if cut in ends:
            assert (parser.truncated, parser.tail) == (False, b"")
        if 170 < cut < len(SAMPLE):  # inside the field lines of the last event
            assert parser.truncated
            assert parser.tail == SAMPLE[168:cut]


def test_close_is_idempotent_and_final() -> None:
    parser = SSEParser()
    parser.feed(b"data: x\n\n")
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(ValueError, match="after close"):
        parser.feed(b"data: y\n\n")


def test_serializer_round_trips_the_sample() -> None:
    events = parse_sse(SAMPLE)
    assert parse_sse(serialize_sse(events)) == events
    assert (
        serialize_sse([SSEEvent(data="a\nb", event="e", id="1")])
        == b"id: 1\nevent: e\ndata: a\ndata: b\n\n"
    )
    assert encode_event(SSEEvent(data=""), last_event_id="1") == b"id:\ndata:\n\n"


@pytest.mark.parametrize(
    "event",
    [
        SSEEvent(event="a\nb", data="x"),
        SSEEvent(id="a\rb", data="x"),
        SSEEvent(id="a\x00", data="x"),
        SSEEvent(retry=-1),
    ],
)
def test_serializer_rejects_what_cannot_be_encoded(event: SSEEvent) -> None:
    with pytest.raises(ValueError):
        encode_event(event)


_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=12)
_events = st.builds(
    SSEEvent,
    event=st.one_of(st.just("message"), _text.filter(bool)),
    data=st.lists(_text, min_size=1, max_size=3).map("\n".join),
    id=_text.filter(lambda value: "\x00" not in value),
    retry=st.none() | st.integers(min_value=0, max_value=10**6),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_events, max_size=6), st.data())
def test_serialized_events_parse_back_under_any_chunking(
    events: list[SSEEvent], data: st.DataObject
) -> None:
    stream = serialize_sse(events)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10))
    parsed, parser = parse_chunked(stream, cuts)
    assert parsed == events
    assert not parser.truncated
    assert [event.end for event in parsed] == [
        len(serialize_sse(events[: i + 1])) for i in range(len(events))
    ]
