"""Tests for :mod:`halp.wire`, the sans-IO HALP/1 codec."""

from __future__ import annotations

from typing import get_args

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from halp.error import ErrorCode, ProtocolError
from halp.model import Entry, LabelInfo, Limits, RejectedEntry, Window
from halp.wire import (
    Get,
    Hello,
    Insert,
    LineBuffer,
    ListLabels,
    Quit,
    Request,
    RequestDecoder,
    Status,
    format_entry,
    format_error,
    format_failure,
    format_field,
    format_label,
    format_ok,
    format_request,
    format_success,
    parse_entry_line,
    parse_status,
    printable,
    summarize,
)


def decode(*lines: bytes, limits: Limits = Limits()) -> list[Request | ProtocolError]:
    decoder = RequestDecoder(limits)
    out = []
    for line in lines:
        item = decoder.feed(line)
        if item is not None:
            out.append(item)
    return out


def one(line: bytes) -> Request | ProtocolError:
    (item,) = decode(line)
    return item


class GetTests(SynchronousTestCase):
    def test_get(self) -> None:
        self.assertEqual(one(b"get bittorrent"), Get("bittorrent"))
        self.assertEqual(one(b"get myapp/v2"), Get("myapp/v2"))

    def test_crlf_and_spacing(self) -> None:
        self.assertEqual(one(b"get a\r"), Get("a"))
        self.assertEqual(one(b"  get \t a  "), Get("a"))

    def test_slices(self) -> None:
        self.assertEqual(one(b"get a[2:5]"), Get("a", Window(2, 5)))
        self.assertEqual(one(b"get a[2:]"), Get("a", Window(2, None)))
        self.assertEqual(one(b"get a[:5]"), Get("a", Window(0, 5)))
        self.assertEqual(one(b"get a[:]"), Get("a", Window(0, None)))
        self.assertEqual(one(b"get a[3:3]"), Get("a", Window(3, 3)))

    def test_label_listings(self) -> None:
        self.assertEqual(one(b"get labels"), ListLabels(""))
        self.assertEqual(one(b"get labels[10:20]"), ListLabels("", Window(10, 20)))
        self.assertEqual(one(b"get myapp/"), ListLabels("myapp"))
        self.assertEqual(one(b"get a/b/[0:3]"), ListLabels("a/b", Window(0, 3)))

    def assertError(self, item: object, code: ErrorCode, text: str = "") -> None:
        assert isinstance(item, ProtocolError), item
        self.assertEqual(item.code, code)
        self.assertIn(text, item.message)

    def test_bad_gets(self) -> None:
        self.assertError(one(b"get"), ErrorCode.BAD_REQUEST, "usage: get")
        self.assertError(one(b"get a b"), ErrorCode.BAD_REQUEST, "usage: get")
        self.assertError(one(b"get a[5:2]"), ErrorCode.BAD_RANGE, "ends before")
        self.assertError(one(b"get a[x:2]"), ErrorCode.BAD_RANGE)
        self.assertError(one(b"get a[-1:2]"), ErrorCode.BAD_RANGE)
        self.assertError(one(b"get a[1:2"), ErrorCode.BAD_RANGE)
        self.assertError(one(b"get a[1]"), ErrorCode.BAD_RANGE)
        self.assertError(one(b"get a[1:2]x"), ErrorCode.BAD_RANGE)
        self.assertError(one(b"get a[1234567890:]"), ErrorCode.BAD_RANGE, "too large")
        self.assertError(one(b"get bad!label"), ErrorCode.BAD_LABEL)
        self.assertError(one(b"get labels/x"), ErrorCode.BAD_LABEL, "reserved")
        self.assertError(one(b"get labels//"), ErrorCode.BAD_LABEL)
        self.assertError(one(b"get /"), ErrorCode.BAD_LABEL)
        self.assertError(one(b"get caf\xc3\xa9"), ErrorCode.BAD_LABEL, "not ASCII")

    def test_unknown_command(self) -> None:
        self.assertError(one(b"GET a"), ErrorCode.UNKNOWN_COMMAND, "'GET'")
        self.assertError(one(b"delete a"), ErrorCode.UNKNOWN_COMMAND)
        self.assertError(one(b"\xff\x00"), ErrorCode.UNKNOWN_COMMAND, "\\xff\\x00")

    def test_blank_lines_are_ignored(self) -> None:
        self.assertEqual(decode(b"", b"  ", b"\r", b"get a", b""), [Get("a")])

    def test_hello_and_quit(self) -> None:
        self.assertEqual(one(b"hello"), Hello())
        self.assertEqual(one(b"hello HALP/2"), Hello())
        self.assertEqual(one(b"quit"), Quit())
        self.assertError(one(b"quit now"), ErrorCode.BAD_REQUEST)


NOW = 1_700_000_000


class InsertTests(SynchronousTestCase):
    def test_block(self) -> None:
        items = decode(
            b"insert a b/c", b"1700000000 198.51.100.7 6881", b"1700000001\tExample.COM  80\r", b""
        )
        self.assertEqual(
            items,
            [
                Insert(
                    ("a", "b/c"),
                    (Entry(NOW, "198.51.100.7", 6881), Entry(NOW + 1, "example.com", 80)),
                )
            ],
        )

    def test_block_lines_are_not_commands(self) -> None:
        items = decode(b"insert a", b"get a", b"", b"get b")
        self.assertEqual(
            items,
            [
                Insert(("a",), (RejectedEntry("get a", "expected 3 fields: TIMESTAMP HOST PORT"),)),
                Get("b"),
            ],
        )

    def test_duplicate_labels_collapse(self) -> None:
        self.assertEqual(decode(b"insert a b a", b""), [Insert(("a", "b"), ())])

    def test_bad_entry_lines_are_kept_with_their_reason(self) -> None:
        (item,) = decode(
            b"insert a",
            b"1 h 0",
            b"1 h 70000",
            b"x h 1",
            b"-5 h 1",
            b"1.5 h 1",
            b"1 999.1.1.1 1",
            b"1 a..b 1",
            b"1 h",
            b"1 h 1 extra",
            b"1 caf\xc3\xa9 1",
            b"",
        )
        assert isinstance(item, Insert)
        self.assertEqual(
            [(e.raw, e.reason.split(":")[0]) for e in item.entries if isinstance(e, RejectedEntry)],
            [
                ("1 h 0", "bad port"),
                ("1 h 70000", "bad port"),
                ("x h 1", "bad timestamp"),
                ("-5 h 1", "bad timestamp"),
                ("1.5 h 1", "bad timestamp"),
                ("1 999.1.1.1 1", "bad host"),
                ("1 a..b 1", "bad host"),
                ("1 h", "expected 3 fields"),
                ("1 h 1 extra", "expected 3 fields"),
                ("1 caf\\xc3\\xa9 1", "entry is not ASCII"),
            ],
        )

    def test_bad_header_still_consumes_block(self) -> None:
        items = decode(b"insert bad!label", b"1 h 1", b"get x", b"", b"get y")
        self.assertEqual(len(items), 2)
        assert isinstance(items[0], ProtocolError)
        self.assertEqual(items[0].code, ErrorCode.BAD_LABEL)
        self.assertEqual(items[1], Get("y"))

    def test_insert_without_labels(self) -> None:
        (item,) = decode(b"insert", b"1 h 1", b"")
        assert isinstance(item, ProtocolError)
        self.assertEqual(item.code, ErrorCode.BAD_REQUEST)

    def test_too_many_labels(self) -> None:
        (item,) = decode(b"insert a b c", b"", limits=Limits(max_insert_labels=2))
        assert isinstance(item, ProtocolError)
        self.assertEqual(item.code, ErrorCode.TOO_MANY_LABELS)

    def test_too_many_entries_buffers_no_more_than_the_limit(self) -> None:
        decoder = RequestDecoder(Limits(max_insert_entries=3))
        self.assertIsNone(decoder.feed(b"insert a"))
        for i in range(1000):
            self.assertIsNone(decoder.feed(b"1 h %d" % (i + 1)))
        self.assertEqual(len(decoder._entries), 3)
        item = decoder.feed(b"")
        assert isinstance(item, ProtocolError)
        self.assertEqual(item.code, ErrorCode.TOO_MANY_ENTRIES)
        self.assertIn("1000 entry lines", item.message)
        self.assertEqual(decoder.feed(b"get a"), Get("a"))

    def test_end_closes_an_open_block(self) -> None:
        decoder = RequestDecoder(Limits())
        self.assertIsNone(decoder.end())
        decoder.feed(b"insert a")
        decoder.feed(b"1700000000 h 1")
        self.assertTrue(decoder.in_block)
        self.assertEqual(decoder.end(), Insert(("a",), (Entry(NOW, "h", 1),)))
        self.assertFalse(decoder.in_block)


class ResponseTests(SynchronousTestCase):
    def test_lines(self) -> None:
        self.assertEqual(format_entry(Entry(5, "2001:db8::1", 80)), b"5 2001:db8::1 80\n")
        self.assertEqual(format_label(LabelInfo(5, "myapp/v2")), b"5 v2\n")
        self.assertEqual(
            format_success("a/b", Entry(5, "h", 1)), b"success: a/b 5 h 1\n"
        )
        self.assertEqual(
            format_failure("a", "1 h 0", "bad port: expected 1-65535"),
            b"failure: a 1 h 0 ; bad port: expected 1-65535\n",
        )
        self.assertEqual(format_field("ttl", 86400), b"ttl 86400\n")
        self.assertEqual(format_ok(), b"ok\n")
        self.assertEqual(format_ok("3"), b"ok 3\n")
        self.assertEqual(
            format_error(ErrorCode.BAD_LABEL, "x"), b"error bad-label x\n"
        )

    def test_status_lines_are_one_line(self) -> None:
        self.assertEqual(
            format_error(ErrorCode.INTERNAL, "a\nb\r\x00\u00e9"),
            b"error internal a\\x0ab\\x0d\\x00\\xe9\n",
        )

    def test_printable(self) -> None:
        self.assertEqual(printable(b"a b\\\n\xff~"), "a b\\x5c\\x0a\\xff~")

    def test_parse_status(self) -> None:
        self.assertEqual(parse_status(b"ok"), Status(True, None, ""))
        self.assertEqual(parse_status(b"ok 3 stored 0 failed\r"), Status(True, None, "3 stored 0 failed"))
        self.assertEqual(
            parse_status(b"error bad-label no good"), Status(False, "bad-label", "no good")
        )
        self.assertIsNone(parse_status(b"5 h 1"))
        self.assertIsNone(parse_status(b"okay"))

    def test_parse_entry_line(self) -> None:
        self.assertEqual(parse_entry_line(b"5 H.example 1"), Entry(5, "h.example", 1))
        self.assertRaises(ProtocolError, parse_entry_line, b"5 h")

    def test_summarize(self) -> None:
        self.assertEqual(summarize(Get("a", Window(1, None))), "get a[1:]")
        self.assertEqual(summarize(ListLabels("")), "get labels")
        self.assertEqual(
            summarize(Insert(("a", "b"), (Entry(1, "h", 1),))), "insert a b (1 entries)"
        )


class LineBufferTests(SynchronousTestCase):
    def drain(self, buffer: LineBuffer) -> list[bytes]:
        lines = []
        while (line := buffer.next_line()) is not None:
            lines.append(line)
        return lines

    def test_lines_and_partial(self) -> None:
        buffer = LineBuffer(10)
        buffer.feed(b"get a\r\nget b\nget")
        self.assertEqual(self.drain(buffer), [b"get a\r", b"get b"])
        self.assertTrue(buffer.partial)
        buffer.feed(b" c\n")
        self.assertFalse(buffer.partial)
        self.assertEqual(self.drain(buffer), [b"get c"])

    def test_end_completes_the_last_line(self) -> None:
        buffer = LineBuffer(10)
        buffer.feed(b"a\nb")
        buffer.end()
        self.assertEqual(self.drain(buffer), [b"a", b"b"])
        buffer.end()
        self.assertEqual(self.drain(buffer), [])

    def test_limits(self) -> None:
        buffer = LineBuffer(5)
        buffer.feed(b"12345\n12345\r\n")
        self.assertEqual(self.drain(buffer), [b"12345", b"12345\r"])
        buffer.feed(b"12345\r")  # may still become a valid CRLF line
        self.assertIsNone(buffer.next_line())
        buffer.feed(b"\n123456\n")
        self.assertEqual(buffer.next_line(), b"12345\r")
        e = self.assertRaises(ProtocolError, buffer.next_line)
        self.assertEqual(e.code, ErrorCode.LINE_TOO_LONG)

    def test_overlong_partial_line_is_refused_without_waiting(self) -> None:
        buffer = LineBuffer(5)
        buffer.feed(b"123456")
        self.assertRaises(ProtocolError, buffer.next_line)
        buffer = LineBuffer(5)
        buffer.feed(b"x" * 100_000)
        self.assertRaises(ProtocolError, buffer.next_line)
        self.assertEqual(len(buffer._data), 0)

    @given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=20))
    def test_any_chunking_gives_the_same_lines(self, stream: bytes, cuts: list[int]) -> None:
        expected = stream.split(b"\n")[:-1]
        buffer = LineBuffer(1000)
        got: list[bytes] = []
        rest = stream
        for cut in cuts + [len(stream)]:
            buffer.feed(rest[:cut])
            rest = rest[cut:]
            got.extend(self.drain(buffer))
        self.assertEqual(got, expected)
        self.assertEqual(buffer.partial, not stream.endswith(b"\n") and stream != b"")


# -- properties ---------------------------------------------------------------

segments = st.from_regex(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,8}", fullmatch=True).filter(
    lambda s: s != "labels"
)
labels = st.lists(segments, min_size=1, max_size=4).map("/".join)
windows = st.none() | st.builds(
    lambda a, w: Window(a, None if w is None else a + w),
    st.integers(0, 10**6),
    st.none() | st.integers(0, 1000),
)
hosts = st.sampled_from(["198.51.100.7", "2001:db8::1", "h.example", "a", "::"])
entries = st.builds(Entry, st.integers(0, 10**12 - 1), hosts, st.integers(1, 65535))
requests = st.one_of(
    st.builds(Get, labels, windows),
    st.builds(ListLabels, st.just("") | labels, windows),
    st.builds(
        Insert,
        st.lists(labels, min_size=1, max_size=16, unique=True).map(tuple),
        st.lists(entries, max_size=20).map(tuple),
    ),
    st.just(Hello()),
    st.just(Quit()),
)


class PropertyTests(SynchronousTestCase):
    @given(requests)
    def test_format_then_parse_is_identity(self, request: Request) -> None:
        data = format_request(request)
        self.assertTrue(data.endswith(b"\n"))
        lines = data.split(b"\n")[:-1]
        self.assertEqual(decode(*lines), [request])

    @settings(max_examples=500)
    @given(st.lists(st.binary(max_size=80), max_size=12))
    def test_any_bytes_decode_to_requests_or_errors(self, lines: list[bytes]) -> None:
        """The decoder never raises, whatever it is fed."""
        decoder = RequestDecoder(Limits())
        for line in lines:
            item = decoder.feed(line)
            self.assertIsInstance(item, (*get_args(Request), ProtocolError, type(None)))
        decoder.end()

    @given(st.text(max_size=50))
    def test_error_lines_are_single_ascii_lines(self, message: str) -> None:
        line = format_error(ErrorCode.BAD_REQUEST, message)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertTrue(line.endswith(b"\n"))
        line.decode("ascii")
        self.assertEqual(parse_status(line[:-1]), Status(False, "bad-request", parse_status(line[:-1]).text))  # type: ignore[union-attr]

    @given(st.binary(max_size=60))
    def test_failure_lines_cannot_be_forged(self, raw: bytes) -> None:
        """Whatever a peer sends, its echo is one line that no client takes for a status."""
        line = format_failure("a", printable(raw), "why")
        self.assertEqual(line.count(b"\n"), 1)
        self.assertTrue(line.startswith(b"failure: a "))
        self.assertEqual(line.rsplit(b" ; ", 1)[1], b"why\n")


# -- responses, for clients ------------------------------------------------------
#
# The client's side of the codec: splitting what a server sends into
# responses, and parsing their data lines.

from dataclasses import FrozenInstanceError  # noqa: E402

from halp.model import label_parent  # noqa: E402
from halp.wire import (  # noqa: E402
    InsertOutcome,
    Response,
    ResponseReader,
    parse_field_line,
    parse_insert_line,
    format_pending,
    parse_label_line,
)


def read(data: bytes, close: bool = False) -> list[Response]:
    """What a client makes of ``data`` from a server, read as a stream."""
    buffer, reader = LineBuffer(10_000), ResponseReader()
    if close:
        buffer.feed(data)
        buffer.end()
    else:
        buffer.feed(data)
    out = []
    while (line := buffer.next_line()) is not None:
        response = reader.feed(line)
        if response is not None:
            out.append(response)
    if close:
        out.append(reader.end())
    return out


class ResponseReaderTests(SynchronousTestCase):
    def test_data_lines_then_a_status(self) -> None:
        reader = ResponseReader()
        self.assertIsNone(reader.feed(b"1700000000 198.51.100.7 6881"))
        self.assertIsNone(reader.feed(b"1700000001 h.example 80\r"))
        self.assertEqual(
            reader.feed(b"ok 2\r"),
            Response(
                (b"1700000000 198.51.100.7 6881", b"1700000001 h.example 80"),
                Status(True, None, "2"),
            ),
        )

    def test_status_only(self) -> None:
        reader = ResponseReader()
        self.assertEqual(reader.feed(b"ok"), Response((), Status(True, None, "")))
        self.assertEqual(
            reader.feed(b"error bad-label no good"),
            Response((), Status(False, "bad-label", "no good")),
        )
        self.assertEqual(
            reader.feed(b"error some-future-code"),
            Response((), Status(False, "some-future-code", "")),
        )

    def test_pipelined_responses_are_kept_apart(self) -> None:
        self.assertEqual(
            read(b"5 h 1\nok 1\nerror bad-range no\nprotocol HALP/1\nttl 86400\nok\n"),
            [
                Response((b"5 h 1",), Status(True, None, "1")),
                Response((), Status(False, "bad-range", "no")),
                Response((b"protocol HALP/1", b"ttl 86400"), Status(True, None, "")),
            ],
        )

    def test_data_lines_are_kept_as_sent(self) -> None:
        """Only ``ok`` and ``error`` as a whole first word end a response."""
        lines = [b"", b"  ", b"okay", b"OK", b"errors 1", b" ok", b"x\r\r", b"\xff\x00"]
        reader = ResponseReader()
        for line in lines:
            self.assertIsNone(reader.feed(line))
        response = reader.feed(b"ok")
        assert response is not None
        self.assertEqual(response.lines, tuple(lines[:6]) + (b"x\r", b"\xff\x00"))

    def test_end_gives_a_libhalp_answer(self) -> None:
        """libhalp answers with data lines and closes the connection."""
        reader = ResponseReader()
        reader.feed(b"1700000000 198.51.100.7 6881\r")
        reader.feed(b"1700000001 h.example 80")
        self.assertEqual(
            reader.end(),
            Response((b"1700000000 198.51.100.7 6881", b"1700000001 h.example 80"), None),
        )
        self.assertEqual(reader.end(), Response((), None))

    def test_end_after_a_status(self) -> None:
        self.assertEqual(
            read(b"5 h 1\nok 1\n", close=True),
            [Response((b"5 h 1",), Status(True, None, "1")), Response((), None)],
        )

    def test_an_unterminated_last_line(self) -> None:
        self.assertEqual(read(b"5 h 1\n6 h 2", close=True), [Response((b"5 h 1", b"6 h 2"), None)])

    def test_the_reader_starts_afresh(self) -> None:
        reader = ResponseReader()
        reader.feed(b"a")
        reader.feed(b"ok")
        reader.feed(b"b")
        self.assertEqual(reader.feed(b"ok"), Response((b"b",), Status(True, None, "")))

    def test_responses_are_frozen(self) -> None:
        response = Response((), None)
        self.assertRaises(FrozenInstanceError, setattr, response, "status", None)


class LabelLineTests(SynchronousTestCase):
    def test_top_level(self) -> None:
        self.assertEqual(parse_label_line(b"1700000000 bittorrent", ""), LabelInfo(NOW, "bittorrent"))
        self.assertEqual(parse_label_line(b"0 a", ""), LabelInfo(0, "a"))

    def test_full_names_under_a_parent(self) -> None:
        self.assertEqual(parse_label_line(b"5 v2", "myapp"), LabelInfo(5, "myapp/v2"))
        self.assertEqual(parse_label_line(b"5 c", "a/b"), LabelInfo(5, "a/b/c"))
        # "labels" is reserved as a first segment only.
        self.assertEqual(parse_label_line(b"5 labels", "a"), LabelInfo(5, "a/labels"))

    def test_spacing(self) -> None:
        self.assertEqual(parse_label_line(b"  5 \t v2  ", "x"), LabelInfo(5, "x/v2"))

    def assertRefused(self, line: bytes, parent: str, code: ErrorCode, text: str = "") -> None:
        e = self.assertRaises(ProtocolError, parse_label_line, line, parent)
        self.assertEqual(e.code, code, (line, e))
        self.assertIn(text, e.message)

    def test_one_segment_only(self) -> None:
        for segment in [b"a/b", b"/", b"a/", b"/a", b"a//b"]:
            self.assertRefused(b"5 " + segment, "", ErrorCode.BAD_LABEL, "one segment")
            self.assertRefused(b"5 " + segment, "p", ErrorCode.BAD_LABEL, "one segment")

    def test_bad_rows(self) -> None:
        for line in [b"", b"5", b"5 a b", b"   "]:
            self.assertRefused(line, "", ErrorCode.BAD_ENTRY, "expected 2 fields")
        for line in [b"x a", b"-1 a", b"1.5 a", b"1234567890123 a", b"\xff a"]:
            self.assertRefused(line, "", ErrorCode.BAD_ENTRY)
        self.assertRefused(b"5 bad!segment", "", ErrorCode.BAD_LABEL, "bad label segment")
        self.assertRefused(b"5 ..", "p", ErrorCode.BAD_LABEL, "dots only")
        self.assertRefused(b"5 labels", "", ErrorCode.BAD_LABEL, "reserved")
        self.assertRefused(b"5 caf\xc3\xa9", "", ErrorCode.BAD_LABEL, "not ASCII")
        self.assertRefused(b"5 " + b"x" * 65, "", ErrorCode.BAD_LABEL, "longer than 64")

    def test_the_full_name_must_be_a_label(self) -> None:
        parent = "/".join(["p"] * 15)
        self.assertEqual(parse_label_line(b"5 x", parent).name, parent + "/x")
        self.assertRefused(b"5 x", parent + "/q", ErrorCode.BAD_LABEL, "deeper than 16")
        self.assertRefused(b"5 " + b"x" * 60, "y" * 200, ErrorCode.BAD_LABEL, "longer than 255")


class InsertLineTests(SynchronousTestCase):
    def test_success(self) -> None:
        outcome = parse_insert_line(b"success: a/b 1700000000 198.51.100.7 6881")
        self.assertEqual(outcome, InsertOutcome("a/b", Entry(NOW, "198.51.100.7", 6881)))
        self.assertTrue(outcome.stored)
        self.assertEqual((outcome.offered, outcome.reason), ("", ""))
        self.assertEqual(parse_insert_line(b"success: a 5 h 1\r"), InsertOutcome("a", Entry(5, "h", 1)))
        self.assertEqual(parse_insert_line(b"success:  a  5 h 1 "), InsertOutcome("a", Entry(5, "h", 1)))

    def test_success_as_the_server_writes_it(self) -> None:
        for label, entry in [
            ("a", Entry(5, "h", 1)),
            ("myapp/v2", Entry(NOW, "2001:db8::1", 65535)),
            ("x", Entry(0, "::ffff:192.0.2.1", 80)),
        ]:
            line = format_success(label, entry)
            self.assertEqual(parse_insert_line(line[:-1]), InsertOutcome(label, entry))

    def test_failure(self) -> None:
        outcome = parse_insert_line(b"failure: a 1 h 0 ; bad port: expected 1-65535")
        self.assertEqual(outcome, InsertOutcome("a", None, "1 h 0", "bad port: expected 1-65535"))
        self.assertFalse(outcome.stored)

    def test_failure_as_the_server_writes_it(self) -> None:
        for label, raw, reason in [
            ("a", "1 h 0", "bad port: expected 1-65535"),
            ("a/b", "1700000000 h.example 80", "expired: confirmed more than 86400 s ago"),
            ("a", "1 caf\\xc3\\xa9 1", "entry is not ASCII"),
            ("a", "x ; y ; z", "expected 3 fields: TIMESTAMP HOST PORT"),
            ("a", "x ;", "why"),
            ("a", "1  h   1", "evicted: the label keeps its 1000 newest entries"),
        ]:
            line = format_failure(label, raw, reason)
            self.assertEqual(
                parse_insert_line(line[:-1]), InsertOutcome(label, None, raw, reason), line
            )

    def test_pending_as_the_server_writes_it(self) -> None:
        line = format_pending("a/b", "1700000000 11.2.3.45 4000", "unverified: served once reached")
        self.assertEqual(
            line, b"pending: a/b 1700000000 11.2.3.45 4000 ; unverified: served once reached\n"
        )
        outcome = parse_insert_line(line[:-1])
        self.assertEqual(
            outcome,
            InsertOutcome("a/b", None, "1700000000 11.2.3.45 4000", "unverified: served once reached", True),
        )
        self.assertFalse(outcome.stored)
        with self.assertRaises(ProtocolError):
            parse_insert_line(b"later: a 1 h 1 ; why")

    def test_failure_without_a_reason(self) -> None:
        self.assertEqual(parse_insert_line(b"failure: a 1 h 0"), InsertOutcome("a", None, "1 h 0"))
        self.assertEqual(
            parse_insert_line(format_failure("a", "1 h 0", "")[:-1]),
            InsertOutcome("a", None, "1 h 0"),
        )

    def test_junk(self) -> None:
        for line in [
            b"",
            b"ok 1 stored 0 failed",
            b"1700000000 h 1",
            b"Success: a 5 h 1",
            b"success:a 5 h 1",
            b"success",
            b"succeeded: a 5 h 1",
            b"\xff",
        ]:
            e = self.assertRaises(ProtocolError, parse_insert_line, line)
            self.assertEqual(e.code, ErrorCode.BAD_ENTRY, line)
        for line in [
            b"success:",
            b"success: a",
            b"success: a 5 h",
            b"success: a 5 h 0",
            b"success: a x h 1",
            b"success: a 5 h 1 extra",
            b"success: bad!label 5 h 1",
            b"success: caf\xc3\xa9 5 h 1",
            b"failure:",
            b"failure: bad!label 1 h 0 ; why",
            b"failure: labels 1 h 0 ; why",
        ]:
            self.assertRaises(ProtocolError, parse_insert_line, line)

    def test_an_insert_answer(self) -> None:
        """A whole answer, from the server's bytes to the client's outcomes."""
        stored = Entry(NOW, "198.51.100.7", 6881)
        data = (
            format_success("a", stored)
            + format_failure("a", "1 h 0", "bad port: expected 1-65535")
            + format_success("b", stored)
            + format_ok("2 stored 1 failed")
        )
        (response,) = read(data.replace(b"\n", b"\r\n"))
        self.assertEqual(response.status, Status(True, None, "2 stored 1 failed"))
        self.assertEqual(
            [parse_insert_line(line) for line in response.lines],
            [
                InsertOutcome("a", stored),
                InsertOutcome("a", None, "1 h 0", "bad port: expected 1-65535"),
                InsertOutcome("b", stored),
            ],
        )


class FieldLineTests(SynchronousTestCase):
    def test_fields(self) -> None:
        self.assertEqual(parse_field_line(b"protocol HALP/1"), ("protocol", "HALP/1"))
        self.assertEqual(parse_field_line(b"ttl 86400"), ("ttl", "86400"))
        self.assertEqual(parse_field_line(b"server halp 1.0 (twisted)"), ("server", "halp 1.0 (twisted)"))
        self.assertEqual(parse_field_line(b"ttl   86400  "), ("ttl", "86400"))
        self.assertEqual(parse_field_line(b"flag"), ("flag", ""))

    def test_as_the_server_writes_them(self) -> None:
        for key, value in [("ttl", 86400), ("protocol", "HALP/1"), ("empty", ""), ("x", "a\nb")]:
            self.assertEqual(
                parse_field_line(format_field(key, value)[:-1]),
                (key, str(value).replace("\n", "\\x0a")),
            )

    def test_bad_fields(self) -> None:
        for line, text in [
            (b"", "empty field name"),
            (b" ttl 5", "empty field name"),
            (b"ttl \xff", "not ASCII"),
        ]:
            e = self.assertRaises(ProtocolError, parse_field_line, line)
            self.assertEqual(e.code, ErrorCode.BAD_ENTRY)
            self.assertIn(text, e.message)


ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


class ClientSidePropertyTests(SynchronousTestCase):
    @given(st.lists(entries, max_size=10), st.booleans(), st.booleans())
    def test_entries_come_back(self, items: list[Entry], crlf: bool, libhalp: bool) -> None:
        """A ``get`` answer, in either dialect, reads back as the entries sent."""
        data = b"".join(format_entry(e) for e in items)
        if not libhalp:
            data += format_ok(str(len(items)))
        if crlf:
            data = data.replace(b"\n", b"\r\n")
        responses = read(data, close=True)
        if libhalp:
            self.assertEqual(len(responses), 1)
            self.assertIsNone(responses[0].status)
        else:
            self.assertEqual(responses[0].status, Status(True, None, str(len(items))))
            self.assertEqual(responses[1], Response((), None))
        self.assertEqual([parse_entry_line(line) for line in responses[0].lines], items)

    @given(labels, st.integers(0, 10**12 - 1))
    def test_label_lines_round_trip(self, name: str, timestamp: int) -> None:
        info = LabelInfo(timestamp, name)
        self.assertEqual(parse_label_line(format_label(info)[:-1], label_parent(name)), info)

    @given(labels, entries)
    def test_success_lines_round_trip(self, label: str, entry: Entry) -> None:
        self.assertEqual(
            parse_insert_line(format_success(label, entry)[:-1]), InsertOutcome(label, entry)
        )

    @given(
        labels,
        st.binary(min_size=1, max_size=60).map(lambda b: b.strip(b" \t")).filter(bool),
        ascii_text.filter(lambda r: (" ; " + r).rfind(" ; ") == 0),
    )
    def test_failure_lines_round_trip(self, label: str, raw: bytes, reason: str) -> None:
        """
        Whatever line a peer offered, the client reads back the server's
        echo of it and the reason (a reason does not contain `` ; ``).
        """
        echo = printable(raw)
        line = format_failure(label, echo, reason)[:-1]
        self.assertEqual(parse_insert_line(line), InsertOutcome(label, None, echo, reason.strip()))

    @given(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), ascii_text)
    def test_field_lines_round_trip(self, key: str, value: str) -> None:
        self.assertEqual(parse_field_line(format_field(key, value)[:-1]), (key, value.strip()))

    @settings(max_examples=300)
    @given(st.binary(max_size=80))
    def test_junk_raises_only_protocol_errors(self, line: bytes) -> None:
        for parse in (parse_insert_line, parse_field_line, lambda b: parse_label_line(b, "p")):
            try:
                parse(line)
            except ProtocolError:
                pass


# -- federation requests -----------------------------------------------------------
#
# changes, push, stats and peers: what servers send each other.

from halp.model import Change, format_host_port  # noqa: E402
from halp.wire import (  # noqa: E402
    Changes,
    ChangesStatus,
    Peers,
    Push,
    Stats,
    format_change,
    format_changes_status,
    format_peer,
    parse_change_line,
    parse_changes_status,
)


def assert_error(
    case: SynchronousTestCase, item: object, code: ErrorCode, text: str = ""
) -> ProtocolError:
    """``item`` is a :class:`ProtocolError` with ``code`` and ``text`` in its message."""
    case.assertIsInstance(item, ProtocolError)
    assert isinstance(item, ProtocolError)
    case.assertEqual(item.code, code)
    case.assertIn(text, item.message)
    return item


class ChangesRequestTests(SynchronousTestCase):
    def test_cursor_only(self) -> None:
        self.assertEqual(one(b"changes 0"), Changes("0"))
        self.assertEqual(one(b"changes 0"), Changes("0", None))

    def test_cursor_and_limit(self) -> None:
        self.assertEqual(one(b"changes 9f3a:17 50"), Changes("9f3a:17", 50))
        self.assertEqual(one(b"  changes\t0 \t1\r"), Changes("0", 1))

    def test_cursors_a_server_makes_are_accepted(self) -> None:
        cursor = "0123456789abcdef:" + "9" * 18
        self.assertEqual(one(b"changes " + cursor.encode()), Changes(cursor))
        self.assertEqual(one(b"changes A-Z_a.z:0"), Changes("A-Z_a.z:0"))

    def test_usage(self) -> None:
        for line in (b"changes", b"changes 0 5 extra"):
            assert_error(self, one(line), ErrorCode.BAD_REQUEST, "usage: changes CURSOR [LIMIT]")

    def test_bad_cursors(self) -> None:
        for line in (
            b"changes a/b",
            b"changes a;b",
            b"changes *",
            b"changes [0]",
            b"changes " + b"1" * 65,
        ):
            assert_error(self, one(line), ErrorCode.BAD_REQUEST, "a cursor is 0")

    def test_longest_cursor(self) -> None:
        self.assertEqual(one(b"changes " + b"a" * 64), Changes("a" * 64))

    def test_non_ascii_cursor(self) -> None:
        assert_error(self, one(b"changes caf\xc3\xa9"), ErrorCode.BAD_REQUEST, "cursor is not ASCII")

    def test_bad_limits(self) -> None:
        for line in (
            b"changes 0 0",
            b"changes 0 000",
            b"changes 0 -1",
            b"changes 0 +5",
            b"changes 0 ten",
            b"changes 0 1.5",
            b"changes 0 1000000000",
            b"changes 0 0000000001",
        ):
            assert_error(self, one(line), ErrorCode.BAD_RANGE, "the limit is a positive number")

    def test_non_ascii_limit(self) -> None:
        # A digit outside ASCII is not a digit on the wire.
        assert_error(self, one(b"changes 0 \xd9\xa3"), ErrorCode.BAD_REQUEST, "limit is not ASCII")

    def test_largest_limit_is_parsed_not_capped(self) -> None:
        """The codec leaves the cap to the core: nine digits are a limit."""
        self.assertEqual(one(b"changes 0 999999999"), Changes("0", 999_999_999))
        self.assertEqual(one(b"changes 0 000000007"), Changes("0", 7))


class PushRequestTests(SynchronousTestCase):
    def test_block(self) -> None:
        items = decode(
            b"push 203.0.113.5:7100",
            b"a 1700000000 198.51.100.7 6881 192.0.2.1",
            b"b/c\t1700000001  Example.COM 80\r",
            b"a 1700000002 h 1 -",
            b"",
        )
        self.assertEqual(
            items,
            [
                Push(
                    "203.0.113.5:7100",
                    (
                        Change("a", Entry(NOW, "198.51.100.7", 6881), "192.0.2.1"),
                        Change("b/c", Entry(NOW + 1, "example.com", 80)),
                        Change("a", Entry(NOW + 2, "h", 1)),
                    ),
                )
            ],
        )

    def test_without_a_server(self) -> None:
        self.assertEqual(decode(b"push", b""), [Push(None, ())])

    def test_server_is_canonical(self) -> None:
        self.assertEqual(decode(b"push HALP.Example.:7100", b""), [Push("halp.example:7100", ())])
        self.assertEqual(
            decode(b"push [2001:DB8:0::1]:7100", b""), [Push("[2001:db8::1]:7100", ())]
        )

    def test_the_server_of_one_push_is_not_kept_for_the_next(self) -> None:
        items = decode(b"push 203.0.113.5:7100", b"", b"push", b"")
        self.assertEqual(items, [Push("203.0.113.5:7100", ()), Push(None, ())])

    def test_bad_headers_still_consume_the_block(self) -> None:
        for header, text in (
            (b"push 203.0.113.5", "HOST:PORT"),
            (b"push 203.0.113.5:0", "bad port"),
            (b"push 2001:db8::1:7100", "[ADDRESS]:PORT"),
            (b"push bad!host:7100", "bad host"),
            (b"push caf\xc3\xa9:1", "server is not ASCII"),
        ):
            items = decode(header, b"a 1700000000 h 1", b"get x", b"", b"get y")
            self.assertEqual(len(items), 2, header)
            error = items[0]
            assert isinstance(error, ProtocolError), header
            self.assertIn(text, error.message)
            # bad-entry never appears in a status line (docs/protocol.rst).
            self.assertEqual(error.code, ErrorCode.BAD_REQUEST, header)
            self.assertEqual(items[1], Get("y"))

    def test_two_servers_is_a_usage_error(self) -> None:
        items = decode(b"push 192.0.2.1:1 192.0.2.2:2", b"a 1700000000 h 1", b"", b"get y")
        assert_error(self, items[0], ErrorCode.BAD_REQUEST, "usage: push [HOST:PORT]")
        self.assertEqual(items[1:], [Get("y")])

    def test_block_lines_are_not_commands(self) -> None:
        self.assertEqual(
            decode(b"push", b"get a", b"quit", b"", b"quit"),
            [
                Push(
                    None,
                    (
                        RejectedEntry("get a", "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
                        RejectedEntry("quit", "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
                    ),
                ),
                Quit(),
            ],
        )

    def test_bad_change_lines_are_kept_with_their_reason(self) -> None:
        (item,) = decode(
            b"push",
            b"a 1 h 0",
            b"a x h 1",
            b"a 1 999.1.1.1 1",
            b"bad!label 1 h 1",
            b"labels 1 h 1",
            b"a 1 h 1 bad!source",
            b"a 1 h 1 ::1%eth0",
            b"a 1 h",
            b"a 1 h 1 s extra",
            b"caf\xc3\xa9 1 h 1",
            b"  a 1 h 1 src\\ \t",
            b"a 1 h 1 s.example",
            b"",
        )
        assert isinstance(item, Push)
        self.assertEqual(
            [
                (e.raw, e.reason.split(":")[0]) if isinstance(e, RejectedEntry) else e
                for e in item.changes
            ],
            [
                ("a 1 h 0", "bad port"),
                ("a x h 1", "bad timestamp"),
                ("a 1 999.1.1.1 1", "bad host"),
                ("bad!label 1 h 1", "bad label segment 'bad!label'"),
                ("labels 1 h 1", "label 'labels' is reserved"),
                ("a 1 h 1 bad!source", "bad host"),
                ("a 1 h 1 ::1%eth0", "bad host"),
                ("a 1 h", "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
                ("a 1 h 1 s extra", "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
                ("caf\\xc3\\xa9 1 h 1", "label is not ASCII"),
                ("a 1 h 1 src\\x5c", "bad host"),
                Change("a", Entry(1, "h", 1), "s.example"),
            ],
        )

    def test_too_many_lines(self) -> None:
        decoder = RequestDecoder(Limits(max_gossip_entries=3, max_insert_entries=100))
        self.assertIsNone(decoder.feed(b"push 192.0.2.1:7100"))
        for i in range(500):
            self.assertIsNone(decoder.feed(b"a 1 h %d" % (i + 1)))
        self.assertEqual(len(decoder._entries), 3)
        item = decoder.feed(b"")
        assert_error(self, item, ErrorCode.TOO_MANY_ENTRIES, "500 entry lines; at most 3 per push")
        self.assertFalse(decoder.in_block)
        self.assertEqual(decoder.feed(b"stats"), Stats())

    def test_bad_lines_count_against_the_limit(self) -> None:
        (item,) = decode(b"push", b"junk", b"a 1 h 1", b"", limits=Limits(max_gossip_entries=1))
        assert_error(self, item, ErrorCode.TOO_MANY_ENTRIES, "2 entry lines; at most 1 per push")

    def test_push_and_insert_have_their_own_limits(self) -> None:
        limits = Limits(max_gossip_entries=3, max_insert_entries=1)
        items = decode(
            b"push", b"a 1 h 1", b"a 1 h 2", b"a 1 h 3", b"",
            b"insert a", b"1 h 1", b"1 h 2", b"",
            limits=limits,
        )
        self.assertIsInstance(items[0], Push)
        assert_error(self, items[1], ErrorCode.TOO_MANY_ENTRIES, "2 entry lines; at most 1 per insert")
        limits = Limits(max_gossip_entries=1, max_insert_entries=3)
        items = decode(
            b"insert a", b"1 h 1", b"1 h 2", b"",
            b"push", b"a 1 h 1", b"a 1 h 2", b"",
            limits=limits,
        )
        self.assertIsInstance(items[0], Insert)
        assert_error(self, items[1], ErrorCode.TOO_MANY_ENTRIES, "at most 1 per push")

    def test_exactly_the_limit_is_fine(self) -> None:
        lines = [b"a 1 h %d" % (i + 1) for i in range(3)]
        (item,) = decode(b"push", *lines, b"", limits=Limits(max_gossip_entries=3))
        assert isinstance(item, Push)
        self.assertEqual(len(item.changes), 3)

    def test_end_closes_an_open_block(self) -> None:
        decoder = RequestDecoder(Limits())
        decoder.feed(b"push 192.0.2.1:7100")
        decoder.feed(b"a 1700000000 h 1")
        self.assertTrue(decoder.in_block)
        self.assertEqual(
            decoder.end(), Push("192.0.2.1:7100", (Change("a", Entry(NOW, "h", 1)),))
        )
        self.assertFalse(decoder.in_block)
        self.assertIsNone(decoder.end())


class StatsAndPeersRequestTests(SynchronousTestCase):
    def test_requests(self) -> None:
        self.assertEqual(one(b"stats"), Stats())
        self.assertEqual(one(b" peers \r"), Peers())

    def test_arguments_are_refused(self) -> None:
        assert_error(self, one(b"stats all"), ErrorCode.BAD_REQUEST, "usage: stats")
        assert_error(self, one(b"peers 10"), ErrorCode.BAD_REQUEST, "usage: peers")

    def test_commands_are_case_sensitive(self) -> None:
        assert_error(self, one(b"STATS"), ErrorCode.UNKNOWN_COMMAND, "'STATS'")
        assert_error(self, one(b"Changes 0"), ErrorCode.UNKNOWN_COMMAND)


class ChangeLineTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(
            parse_change_line(b"a/b 5 198.51.100.7 6881 192.0.2.1"),
            Change("a/b", Entry(5, "198.51.100.7", 6881), "192.0.2.1"),
        )
        self.assertEqual(parse_change_line(b"a 5 h 1"), Change("a", Entry(5, "h", 1)))
        self.assertEqual(parse_change_line(b"a 5 h 1 -"), Change("a", Entry(5, "h", 1)))
        self.assertEqual(
            parse_change_line(b"a\t5  H.Example 1 2001:DB8::0:1"),
            Change("a", Entry(5, "h.example", 1), "2001:db8::1"),
        )

    def test_via_is_never_read_from_the_wire(self) -> None:
        self.assertEqual(parse_change_line(b"a 5 h 1 s").via, "")

    def test_errors(self) -> None:
        for line, code, text in (
            (b"", ErrorCode.BAD_ENTRY, "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
            (b"a 5 h", ErrorCode.BAD_ENTRY, "expected LABEL"),
            (b"a 5 h 1 s t", ErrorCode.BAD_ENTRY, "expected LABEL"),
            (b"a/ 5 h 1", ErrorCode.BAD_LABEL, "empty label segment"),
            (b"\xff 5 h 1", ErrorCode.BAD_LABEL, "label is not ASCII"),
            (b"a 5 h 1 \xff", ErrorCode.BAD_ENTRY, "source is not ASCII"),
            (b"a 5 h 1 --", ErrorCode.BAD_ENTRY, "bad host"),
            (b"a 5 h 1 [::1]", ErrorCode.BAD_ENTRY, "bad host"),
            (b"a 5 h 65536", ErrorCode.BAD_ENTRY, "bad port"),
            (b"a 1234567890123 h 1", ErrorCode.BAD_ENTRY, "bad timestamp"),
        ):
            e = self.assertRaises(ProtocolError, parse_change_line, line)
            self.assertEqual(e.code, code, line)
            self.assertIn(text, e.message, line)

    def test_format(self) -> None:
        self.assertEqual(
            format_change(Change("a/b", Entry(5, "2001:db8::1", 80), "192.0.2.1")),
            b"a/b 5 2001:db8::1 80 192.0.2.1\n",
        )

    def test_an_unknown_source_is_a_dash(self) -> None:
        self.assertEqual(format_change(Change("a", Entry(5, "h", 1))), b"a 5 h 1 -\n")

    def test_via_stays_local(self) -> None:
        self.assertEqual(
            format_change(Change("a", Entry(5, "h", 1), "s", via="192.0.2.9:7100")),
            b"a 5 h 1 s\n",
        )


class FederationResponseTests(SynchronousTestCase):
    def test_changes_status(self) -> None:
        self.assertEqual(format_changes_status(3, "ab:12", True), b"ok 3 next ab:12 more\n")
        self.assertEqual(format_changes_status(0, "0", False), b"ok 0 next 0 end\n")

    def test_changes_status_reads_back(self) -> None:
        for count, cursor, more in ((0, "0", False), (1000, "9f3a:17", True)):
            status = parse_status(format_changes_status(count, cursor, more)[:-1])
            assert status is not None
            self.assertEqual(parse_changes_status(status), ChangesStatus(count, cursor, more))

    def test_bad_changes_status(self) -> None:
        for text in (
            "",
            "3",
            "3 next ab:1",
            "3 next ab:1 more extra",
            "x next ab:1 end",
            "-1 next ab:1 end",
            "3 after ab:1 end",
            "3 next a/b end",
            "3 next ab:1 done",
            "3 next ab:1 MORE",
            "3 stored 0 failed",
        ):
            e = self.assertRaises(
                ProtocolError, parse_changes_status, Status(True, None, text)
            )
            self.assertEqual(e.code, ErrorCode.BAD_ENTRY, text)
            self.assertIn("ok N next CURSOR more|end", e.message)

    def test_peer(self) -> None:
        self.assertEqual(
            format_peer("192.0.2.1:7100", "trusted", 7, True), b"192.0.2.1:7100 trusted 7 pinned\n"
        )
        self.assertEqual(
            format_peer("[2001:db8::1]:7100", "backoff", -2, False),
            b"[2001:db8::1]:7100 backoff -2\n",
        )

    def test_failure_of_an_unparsed_line_has_no_label(self) -> None:
        self.assertEqual(
            format_failure("", "junk line", "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
            b"failure: junk line ; expected LABEL TIMESTAMP HOST PORT [SOURCE]\n",
        )
        self.assertEqual(
            format_failure("a", "5 h 1", "expired: x"), b"failure: a 5 h 1 ; expired: x\n"
        )

    def test_failure_reason_is_one_line(self) -> None:
        self.assertEqual(format_failure("", "x", "a\nb"), b"failure: x ; a\\x0ab\n")

    def test_summarize(self) -> None:
        self.assertEqual(
            summarize(Push("192.0.2.1:7100", (Change("a", Entry(1, "h", 1)),))),
            "push 192.0.2.1:7100 (1 entries)",
        )
        self.assertEqual(summarize(Push(None, ())), "push (0 entries)")
        self.assertEqual(summarize(Changes("0", 5)), "changes 0 5")
        self.assertEqual(summarize(Stats()), "stats")
        self.assertEqual(summarize(Peers()), "peers")


class FederationRequestFormatTests(SynchronousTestCase):
    def test_format(self) -> None:
        self.assertEqual(format_request(Changes("0")), b"changes 0\n")
        self.assertEqual(format_request(Changes("ab:3", 10)), b"changes ab:3 10\n")
        self.assertEqual(format_request(Stats()), b"stats\n")
        self.assertEqual(format_request(Peers()), b"peers\n")
        self.assertEqual(format_request(Push(None, ())), b"push\n\n")
        self.assertEqual(
            format_request(
                Push("[2001:db8::1]:7100", (Change("a", Entry(5, "h", 1), "192.0.2.1"),))
            ),
            b"push [2001:db8::1]:7100\na 5 h 1 192.0.2.1\n\n",
        )

    def test_an_unparsed_change_cannot_be_sent(self) -> None:
        self.assertRaises(ValueError, format_request, Push(None, (RejectedEntry("x", "y"),)))


sources = st.just("") | hosts
changes = st.builds(Change, labels, entries, sources)
cursors = st.from_regex(r"[A-Za-z0-9:._\-]{1,64}", fullmatch=True)
federation_requests = st.one_of(
    st.builds(Changes, cursors, st.none() | st.integers(1, 999_999_999)),
    st.builds(
        Push,
        st.none() | st.builds(format_host_port, hosts, st.integers(1, 65535)),
        st.lists(changes, max_size=20).map(tuple),
    ),
    st.just(Stats()),
    st.just(Peers()),
)


class FederationPropertyTests(SynchronousTestCase):
    @given(federation_requests)
    def test_format_then_parse_is_identity(self, request: Request) -> None:
        data = format_request(request)
        self.assertTrue(data.endswith(b"\n"))
        self.assertEqual(decode(*data.split(b"\n")[:-1]), [request])

    @given(changes)
    def test_change_lines_round_trip(self, change: Change) -> None:
        line = format_change(change)
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(parse_change_line(line[:-1]), change)

    @given(st.integers(0, 10**6), cursors, st.booleans())
    def test_changes_status_round_trips(self, count: int, cursor: str, more: bool) -> None:
        status = parse_status(format_changes_status(count, cursor, more)[:-1])
        assert status is not None
        self.assertEqual(parse_changes_status(status), ChangesStatus(count, cursor, more))

    @settings(max_examples=300)
    @given(st.binary(max_size=80))
    def test_junk_change_lines_raise_only_protocol_errors(self, line: bytes) -> None:
        try:
            change = parse_change_line(line)
        except ProtocolError:
            return
        # Whatever parses formats back to a line that parses the same.
        self.assertEqual(parse_change_line(format_change(change)[:-1]), change)
