"""Tests for :mod:`halp.wire`, the sans-IO HALP/1 codec."""

from __future__ import annotations

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
            self.assertIsInstance(item, (Get, ListLabels, Insert, Hello, Quit, ProtocolError, type(None)))
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
