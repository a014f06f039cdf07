"""
Fuzz tests of the HALP/1 codec (:mod:`halp.wire`), of the client's
readers of server bytes, and of the line protocol in memory, with the
hostile input of :mod:`halp.test.fuzzing`.

Hypothesis runs with the ``halp-fuzz`` profile: derandomized and without
an example database, so that every run (and CI) tries the same examples;
the number in each test's name is its count of examples, 13,500 in all.
The plain harnesses are seeded loops over the same generator (and over
byte-level mutations of a corpus of valid requests), 20,000 cases more.
"""

from __future__ import annotations

from random import Random
from typing import Callable, Sequence, TypeVar, Union, cast, get_args

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from halp.client.protocol import MAX_RESPONSE_LINE, HALPClientProtocol
from halp.core import HALPCore
from halp.error import BadResponse, ConnectionClosed, ErrorCode, ProtocolError
from halp.model import (
    MAX_HOST_LENGTH,
    Change,
    Entry,
    Limits,
    RejectedEntry,
    Window,
    check_host,
    check_label,
    format_host_port,
    parse_host_port,
)
from halp.server import HALPServerFactory, HALPServerProtocol
from halp.store.memory import MemoryStore
from halp.test.fuzzing import (
    CORPUS,
    LIMITS,
    LONGEST_LABEL,
    RandomPick,
    check_answer,
    expect,
    hostile_request,
    hostile_requests,
    hostile_response_lines,
    hostile_streams,
    mutate,
)
from halp.wire import (
    MAX_SLICE_DIGITS,
    Changes,
    Get,
    Hello,
    Insert,
    LineBuffer,
    ListLabels,
    Peers,
    Push,
    Quit,
    Request,
    RequestDecoder,
    Response,
    ResponseReader,
    Stats,
    Status,
    format_error,
    format_request,
    parse_change_line,
    parse_changes_status,
    parse_entry_line,
    parse_field_line,
    parse_insert_line,
    parse_label_line,
    parse_status,
    summarize,
)

settings.register_profile(
    "halp-fuzz",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: The profile of every test here; each sets its own number of examples.
FUZZ = settings.get_profile("halp-fuzz")

T = TypeVar("T")
Item = Union[Request, ProtocolError]
#: What a decoder may give for one line.
ITEM_TYPES = (*get_args(Request), ProtocolError)
#: The largest number a slice bound or a ``changes`` limit may be.
LARGEST = 10**MAX_SLICE_DIGITS - 1

_CURSOR_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._-")


def comparable(items: Sequence[Item]) -> list[object]:
    """``items`` with each error as its code and message (errors do not compare)."""
    return [(i.code, i.message) if isinstance(i, ProtocolError) else i for i in items]


def chunks(stream: bytes, sizes: Sequence[int]) -> list[bytes]:
    """``stream`` cut into pieces of ``sizes``, and the rest as one more."""
    out, at = [], 0
    for size in sizes:
        if at >= len(stream):
            break
        out.append(stream[at : at + size])
        at += size
    if at < len(stream):
        out.append(stream[at:])
    return out


def check_entry(entry: Entry) -> None:
    assert 0 <= entry.timestamp < 10**12, entry
    assert 1 <= entry.port <= 65535, entry
    assert check_host(entry.host) == entry.host, entry
    assert len(entry.host) <= MAX_HOST_LENGTH, entry


def check_window(window: Window | None) -> None:
    if window is None:
        return
    assert 0 <= window.start <= LARGEST, window
    assert window.stop is None or window.start <= window.stop <= LARGEST, window


def check_rejected(rejected: RejectedEntry) -> None:
    """What a server echoes of a bad line: printable ASCII, one line."""
    assert all(0x20 <= ord(c) < 0x7F for c in rejected.raw), rejected
    format_error(ErrorCode.BAD_ENTRY, rejected.reason).decode("ascii")


def check_item(item: object, limits: Limits = LIMITS) -> None:
    """
    ``item``, what a decoder gave for one line, is a request within every
    limit or a protocol error a server can answer with.
    """
    assert isinstance(item, ITEM_TYPES), item
    if isinstance(item, ProtocolError):
        assert item.code in ErrorCode, item
        assert item.code not in (ErrorCode.BUSY, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL)
        line = format_error(item.code, item.message)
        assert line.count(b"\n") == 1 and line.endswith(b"\n"), line
        status = parse_status(line[:-1])
        assert status == Status(False, item.code.value, status.text if status else ""), line
        return
    request = cast(Request, item)
    summarize(request).encode("ascii")
    if isinstance(request, Get):
        assert check_label(request.label) == request.label
        check_window(request.window)
    elif isinstance(request, ListLabels):
        assert request.parent == "" or check_label(request.parent) == request.parent
        check_window(request.window)
    elif isinstance(request, Insert):
        assert 1 <= len(request.labels) <= limits.max_insert_labels, request.labels
        assert len(set(request.labels)) == len(request.labels), request.labels
        for label in request.labels:
            assert check_label(label) == label
        assert len(request.entries) <= limits.max_insert_entries
        for entry in set(request.entries):  # a long block often repeats lines
            if isinstance(entry, RejectedEntry):
                check_rejected(entry)
            else:
                check_entry(entry)
    elif isinstance(request, Push):
        if request.server is not None:
            assert format_host_port(*parse_host_port(request.server)) == request.server
        assert len(request.changes) <= limits.max_gossip_entries
        for change in set(request.changes):
            if isinstance(change, RejectedEntry):
                check_rejected(change)
                continue
            assert isinstance(change, Change), change
            assert check_label(change.label) == change.label
            check_entry(change.entry)
            assert change.source == "" or check_host(change.source) == change.source
            assert change.via == ""
    elif isinstance(request, Changes):
        assert 1 <= len(request.cursor) <= 64 and set(request.cursor) <= _CURSOR_CHARS
        assert request.limit is None or 1 <= request.limit <= LARGEST, request.limit
    else:
        assert isinstance(request, (Hello, Quit, Stats, Peers)), request


def decode_stream(stream: bytes, sizes: Sequence[int] = (), limits: Limits = LIMITS) -> list[Item]:
    """
    Frame and decode ``stream``, fed in pieces of ``sizes``, as a server
    does (stopping at a line that is too long; the end of the input ends
    an open block), checking at every step that nothing but typed errors
    comes out and that no more is buffered than the limits allow.
    """
    lines = LineBuffer(limits.max_line)
    decoder = RequestDecoder(limits)
    items: list[Item] = []
    most = max(limits.max_insert_entries, limits.max_gossip_entries)

    def drain() -> bool:
        while True:
            try:
                line = lines.next_line()
            except ProtocolError as e:
                assert e.code == ErrorCode.LINE_TOO_LONG, e
                items.append(e)
                return False
            if line is None:
                # What is held of an unfinished line: at most max_line
                # bytes and a CR.
                assert len(lines._data) - lines._pos <= limits.max_line + 1
                return True
            assert len(line) - line.endswith(b"\r") <= limits.max_line, len(line)
            item = decoder.feed(line)
            assert len(decoder._entries) <= most
            if item is not None:
                check_item(item, limits)
                items.append(item)

    for piece in chunks(stream, sizes):
        lines.feed(piece)
        # Consumed bytes are dropped once they are half of the buffer.
        assert len(lines._data) <= 2 * (limits.max_line + 1) + len(piece)
        if not drain():
            return items
    lines.end()
    if drain():
        item = decoder.end()
        if item is not None:
            check_item(item, limits)
            items.append(item)
    return items


def reformat(request: Request) -> None:
    """A request decoded from hostile bytes formats back to bytes that decode to it."""
    if isinstance(request, Insert) and any(isinstance(e, RejectedEntry) for e in request.entries):
        return
    if isinstance(request, Push) and any(isinstance(c, RejectedEntry) for c in request.changes):
        return
    data = format_request(request)
    again = decode_stream(data)
    assert again == [request], (request, data, again)
    assert format_request(cast(Request, again[0])) == data


# -- 1. arbitrary bytes ----------------------------------------------------------------

sizes = st.lists(st.integers(1, 2000), max_size=12)
small_limits = st.sampled_from([Limits(max_line=16), Limits(max_line=100), LIMITS])


class ArbitraryBytesTests(SynchronousTestCase):
    @settings(FUZZ, max_examples=3000)
    @given(st.binary(max_size=4000), sizes, small_limits)
    def test_any_bytes_in_any_pieces_3000_examples(
        self, stream: bytes, cuts: list[int], limits: Limits
    ) -> None:
        """
        Arbitrary bytes, cut anywhere, decode to requests and typed
        errors only, never holding more than the limits allow, and to
        the same ones however they are cut.
        """
        items = decode_stream(stream, cuts, limits)
        self.assertEqual(comparable(items), comparable(decode_stream(stream, (), limits)))

    @settings(FUZZ, max_examples=2000)
    @given(hostile_streams, sizes)
    def test_hostile_streams_in_any_pieces_2000_examples(
        self, stream: bytes, cuts: list[int]
    ) -> None:
        items = decode_stream(stream, cuts)
        self.assertEqual(comparable(items), comparable(decode_stream(stream)))


# -- 2. near-valid hostile requests -----------------------------------------------------


class HostileRequestTests(SynchronousTestCase):
    @settings(FUZZ, max_examples=3000)
    @given(hostile_requests)
    def test_hostile_requests_3000_examples(self, data: bytes) -> None:
        """
        Every command with mutated arguments, broken framing and sizes at
        and over every limit: each decodes to requests within the limits
        or to errors a server can send.
        """
        for item in decode_stream(data):
            if not isinstance(item, ProtocolError):
                reformat(item)

    def test_edges(self) -> None:
        """A few of the generator's edges, by hand: what they must give."""
        limit = LIMITS.max_line
        for data, expected in [
            (b"get " + LONGEST_LABEL + b"[999999999:]\n", Get(LONGEST_LABEL.decode(), Window(LARGEST, None))),
            (b"get a[1000000000:]\n", ErrorCode.BAD_RANGE),
            (b"get a[\xd9\xa1:2]\n", ErrorCode.BAD_LABEL),
            (b"get a[\xef\xbc\x90:1]\n", ErrorCode.BAD_LABEL),
            (b"get a\rb\n", ErrorCode.BAD_LABEL),
            (b"changes 0 \xef\xbc\x91\n", ErrorCode.BAD_REQUEST),
            (b"changes 0 0\n", ErrorCode.BAD_RANGE),
            (b"push [fe80::1%eth0]:1\n\n", ErrorCode.BAD_REQUEST),
            (b"insert " + b" ".join(b"l%d" % i for i in range(17)) + b"\n\n", ErrorCode.TOO_MANY_LABELS),
            (b"insert a\n" + b"1 h 1\n" * 101 + b"\n", ErrorCode.TOO_MANY_ENTRIES),
            (b"get a" + b" " * (limit - 5) + b"\r\n", Get("a")),
            (b"get a" + b" " * (limit - 4) + b"\n", ErrorCode.LINE_TOO_LONG),
            (b"get\x00a\n", ErrorCode.UNKNOWN_COMMAND),
        ]:
            (item,) = decode_stream(data)
            if isinstance(expected, ErrorCode):
                assert isinstance(item, ProtocolError), (data, item)
                self.assertEqual(item.code, expected, data)
            else:
                self.assertEqual(item, expected)


# -- 3. round trips ---------------------------------------------------------------------

_SEGMENT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."


def segments(longest: int) -> st.SearchStrategy[str]:
    """Label segments of up to ``longest`` characters (not dots only, not "labels")."""
    return st.builds(
        str.__add__,
        st.sampled_from(_SEGMENT_CHARS[:-1]),
        st.text(_SEGMENT_CHARS, max_size=longest - 1),
    ).filter(lambda s: s != "labels")


labels = st.one_of(
    st.lists(segments(15), min_size=1, max_size=16).map("/".join),
    st.lists(segments(64), min_size=1, max_size=3).map("/".join),
    st.just(LONGEST_LABEL.decode()),
)
bounds = st.integers(0, LARGEST)
windows = st.none() | st.builds(
    lambda a, b, open_end: Window(min(a, b), None if open_end else max(a, b)),
    bounds,
    bounds,
    st.booleans(),
)
hosts = st.one_of(
    st.ip_addresses().map(str).map(check_host),
    st.sampled_from(["peer.example", "a", "x" * 63 + ".example", "::ffff:192.0.2.1"]),
)
entries = st.builds(Entry, st.integers(0, 10**12 - 1), hosts, st.integers(1, 65535))


def up_to(
    limit: int, items: st.SearchStrategy[T], at_least: int = 0
) -> st.SearchStrategy[tuple[T, ...]]:
    """A few ``items``, or (one time in eight) exactly ``limit`` of them, repeating."""
    few = st.lists(items, min_size=at_least, max_size=5).map(tuple)
    full = st.lists(items, min_size=1, max_size=3).map(lambda xs: tuple((xs * limit)[:limit]))
    return st.one_of(*[few] * 7, full)


cursors = st.from_regex(r"[A-Za-z0-9:._\-]{1,64}", fullmatch=True)
valid_requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(Get, labels, windows),
    st.builds(ListLabels, st.just("") | labels, windows),
    st.builds(
        Insert,
        st.lists(labels, min_size=1, max_size=LIMITS.max_insert_labels, unique=True).map(tuple),
        up_to(LIMITS.max_insert_entries, entries),
    ),
    st.builds(
        Push,
        st.none() | st.builds(format_host_port, hosts, st.integers(1, 65535)),
        up_to(LIMITS.max_gossip_entries, st.builds(Change, labels, entries, st.just("") | hosts)),
    ),
    st.builds(Changes, cursors, st.none() | st.integers(1, LARGEST)),
    st.sampled_from([Hello(), Quit(), Stats(), Peers()]),
)


class RoundTripTests(SynchronousTestCase):
    @settings(FUZZ, max_examples=1000)
    @given(valid_requests)
    def test_format_then_parse_1000_examples(self, request: Request) -> None:
        """
        Valid requests, many at their limits, survive formatting and
        parsing; one whose header is longer than a line may be (sixteen
        long labels) is refused as too long.
        """
        if max(map(len, format_request(request).split(b"\n"))) > LIMITS.max_line:
            (item,) = decode_stream(format_request(request))
            assert isinstance(item, ProtocolError), item
            self.assertEqual(item.code, ErrorCode.LINE_TOO_LONG)
            return
        reformat(request)

    @settings(FUZZ, max_examples=1500)
    @given(hostile_streams)
    def test_parse_then_format_is_stable_1500_examples(self, data: bytes) -> None:
        """Whatever hostile bytes decode to, formats to bytes that decode to it."""
        for item in decode_stream(data):
            if not isinstance(item, ProtocolError):
                reformat(item)


# -- 4. what clients read --------------------------------------------------------------

server_lines = st.lists(st.binary(max_size=120), max_size=12) | hostile_response_lines


def only_protocol_errors(parse: Callable[[bytes], object], line: bytes) -> None:
    """``parse(line)`` returns, or raises :class:`ProtocolError`: nothing else."""
    try:
        parse(line)
    except ProtocolError:
        pass


class ClientSideTests(SynchronousTestCase):
    @settings(FUZZ, max_examples=2000)
    @given(server_lines)
    def test_response_parsers_2000_examples(self, lines: list[bytes]) -> None:
        """
        Whatever lines a server sends, the client's parsers raise nothing
        but :class:`ProtocolError`.
        """
        reader = ResponseReader()
        for line in lines:
            for parse in (
                parse_entry_line,
                parse_change_line,
                parse_insert_line,
                parse_field_line,
                lambda b: parse_label_line(b, ""),
                lambda b: parse_label_line(b, "p/q"),
            ):
                only_protocol_errors(parse, line)
            status = parse_status(line)
            if status is not None:
                self.assertIsInstance(status, Status)
                only_protocol_errors(lambda _: parse_changes_status(status), line)
            response = reader.feed(line)
            self.assertIsInstance(response, (Response, type(None)))
        self.assertIsInstance(reader.end(), Response)

    @settings(FUZZ, max_examples=1000)
    @given(
        st.integers(1, 4),
        st.binary(max_size=3 * MAX_RESPONSE_LINE) | server_lines.map(b"\n".join),
        st.lists(st.integers(1, 5000), max_size=6),
        st.booleans(),
    )
    def test_client_protocol_1000_examples(
        self, requests: int, data: bytes, cuts: list[int], clean: bool
    ) -> None:
        """
        Whatever a server sends, then closes, every request of a client
        connection gets a response or a typed client error.
        """
        proto = HALPClientProtocol()
        proto.makeConnection(StringTransport())
        results: list[object] = []
        pending: list[Deferred[Response]] = [proto.request(Get("a")) for _ in range(requests)]
        for d in pending:
            d.addBoth(results.append)
        for piece in chunks(data, cuts):
            proto.dataReceived(piece)
        proto.connectionLost(Failure(ConnectionDone() if clean else ConnectionLost()))
        self.assertEqual(len(results), requests)
        for result in results:
            if isinstance(result, Failure):
                self.assertIsNotNone(result.check(BadResponse, ConnectionClosed), result)
            else:
                self.assertIsInstance(result, Response)

    def test_huge_changes_count(self) -> None:
        """A count of more digits than int() takes is a protocol error, not a crash."""
        status = parse_status(b"ok " + b"9" * 5000 + b" next abc end")
        assert status is not None
        self.assertRaises(ProtocolError, parse_changes_status, status)


# -- plain seeded harnesses ----------------------------------------------------------


class SeededHarnessTests(SynchronousTestCase):
    def test_seeded_mutations_12000_cases(self) -> None:
        """
        Byte-level mutations of valid requests (bit flips, insertions,
        deletions, splices, edge values), seeded, each fed in random
        pieces: the same checks as the Hypothesis tests, in a fixed loop.
        """
        rng = Random(0x4A1F)
        pick = RandomPick(rng)
        requests = 0
        for _ in range(12_000):
            data = mutate(pick, pick.one(CORPUS))
            cuts = [rng.randint(1, 64) for _ in range(rng.randint(0, 4))]
            items = decode_stream(data, cuts)
            self.assertEqual(comparable(items), comparable(decode_stream(data)))
            for item in items:
                if not isinstance(item, ProtocolError):
                    requests += 1
                    reformat(item)
        # Mutated requests stay valid often enough to reach past the parser.
        self.assertGreater(requests, 2000)

    def test_server_answers_hostile_requests_8000_cases(self) -> None:
        """
        The real line protocol and core, over a memory store, answer
        8,000 seeded hostile requests (in batches, fed in random pieces)
        with exactly the answers the codec promises, and log no failure.
        """
        rng = Random(0x5EED)
        pick = RandomPick(rng)
        clock = Clock()
        clock.advance(1_800_000_000)
        core = HALPCore(MemoryStore(), clock, LIMITS)
        factory = HALPServerFactory(core, clock, log_requests=False)
        sent = answered = 0
        while sent < 8_000:
            batch = [hostile_request(pick) for _ in range(rng.randint(1, 20))]
            sent += len(batch)
            stream = b"hello\n" + b"".join(batch) + b"\n\n"
            eof = rng.random() < 0.2
            expected = expect(stream, eof=eof)
            transport = StringTransport()
            proto = cast(HALPServerProtocol, factory.buildProtocol(transport.getPeer()))
            proto.makeConnection(transport)
            for piece in chunks(stream, [rng.randint(1, 3000) for _ in range(5)]):
                proto.dataReceived(piece)
            if eof:
                proto.readConnectionLost()
            lines = transport.value().split(b"\n")
            self.assertEqual(lines.pop(), b"", "an unterminated last line")
            for item in expected.answers:
                data: list[bytes] = []
                while lines and parse_status(lines[0]) is None:
                    data.append(lines.pop(0))
                self.assertTrue(lines, f"no answer to {item!r}")
                check_answer(item, data, lines.pop(0))
                answered += 1
            self.assertEqual(lines, [], "answers to nothing")
            self.assertEqual(transport.disconnecting, expected.close is not None, expected.close)
            proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertGreater(answered, sent)
