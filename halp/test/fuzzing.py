"""
Hostile HALP/1 input for fuzz tests.

One generator of near-valid hostile requests, written once against a
small :class:`Pick` interface so that two drivers share it: a seeded
:class:`random.Random` (:class:`RandomPick`: the plain deterministic
harness of :mod:`halp.test.test_fuzz` and the end-to-end test
``tests/test_hostile_e2e.py``) and Hypothesis (:class:`DrawPick` and the
strategies at the end, which shrink).  Besides it: a corpus of valid
requests, byte-level mutation of them, the edge values of every field,
hostile server lines for client-side parsers, and :func:`expect`, the
oracle that says what a server answers to a byte stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random
from typing import Callable, Protocol, Sequence, TypeVar

from hypothesis import strategies as st

from halp.error import ErrorCode, ProtocolError
from halp.model import MAX_LABEL_DEPTH, MAX_LABEL_LENGTH, MAX_SEGMENT_LENGTH, Limits
from halp.wire import (
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
    Stats,
    parse_change_line,
    parse_changes_status,
    parse_entry_line,
    parse_field_line,
    parse_insert_line,
    parse_label_line,
    parse_status,
    summarize,
)

__all__ = [
    "CORPUS",
    "DrawPick",
    "Expected",
    "LIMITS",
    "Pick",
    "RandomPick",
    "check_answer",
    "expect",
    "hostile_request",
    "hostile_requests",
    "hostile_response_line",
    "hostile_response_lines",
    "hostile_streams",
    "mutate",
]

T = TypeVar("T")

#: The limits every fuzz test runs with: the defaults, as a server has them.
LIMITS = Limits()


class Pick(Protocol):
    """Where a generator's choices come from."""

    def num(self, low: int, high: int) -> int:
        """An integer from ``low`` to ``high``, both included."""

    def one(self, choices: Sequence[T]) -> T:
        """One of ``choices``."""

    def chance(self, percent: int) -> bool:
        """True ``percent`` times in 100."""

    def bytes(self, size: int) -> bytes:
        """``size`` arbitrary bytes."""


class RandomPick:
    """Choices from a seeded :class:`random.Random`."""

    def __init__(self, rng: Random) -> None:
        self._rng = rng

    def num(self, low: int, high: int) -> int:
        return self._rng.randint(low, high)

    def one(self, choices: Sequence[T]) -> T:
        return choices[self._rng.randrange(len(choices))]

    def chance(self, percent: int) -> bool:
        return self._rng.randrange(100) < percent

    def bytes(self, size: int) -> bytes:
        return self._rng.randbytes(size)


class DrawPick:
    """Choices drawn by Hypothesis (inside ``st.composite``), so they shrink."""

    def __init__(self, draw: Callable[[st.SearchStrategy[T]], T]) -> None:
        self._draw: Callable[[st.SearchStrategy[object]], object] = draw  # type: ignore[assignment]

    def num(self, low: int, high: int) -> int:
        value = self._draw(st.integers(low, high))
        assert isinstance(value, int)
        return value

    def one(self, choices: Sequence[T]) -> T:
        return choices[self.num(0, len(choices) - 1)]

    def chance(self, percent: int) -> bool:
        return self.num(0, 99) < percent

    def bytes(self, size: int) -> bytes:
        value = self._draw(st.binary(min_size=size, max_size=size))
        assert isinstance(value, bytes)
        return value


# -- edge values ---------------------------------------------------------------


def _label_of(length: int, segments: int) -> bytes:
    """A label of ``segments`` segments and ``length`` characters in all."""
    letters = length - (segments - 1)
    sizes = [letters // segments + (i < letters % segments) for i in range(segments)]
    return b"/".join(bytes([0x61 + i % 26]) * n for i, n in enumerate(sizes))


#: A few labels that every valid request uses, so that what a server
#: stores while being fuzzed stays small.
POOL_LABELS: tuple[bytes, ...] = (b"fuzz", b"fuzz/a", b"fuzz/b/c", b"x", b"halp")

LONGEST_LABEL = _label_of(MAX_LABEL_LENGTH, 4)
DEEPEST_LABEL = b"/".join([b"s"] * MAX_LABEL_DEPTH)
LABELS: tuple[bytes, ...] = (
    # valid, at the limits
    b"a",
    b"A-_.9",
    b"...a",
    b"a" * MAX_SEGMENT_LENGTH,
    DEEPEST_LABEL,
    LONGEST_LABEL,
    # over the limits, or not labels at all
    b"",
    b"a" * (MAX_SEGMENT_LENGTH + 1),
    DEEPEST_LABEL + b"/s",
    _label_of(MAX_LABEL_LENGTH + 1, 5),
    _label_of(2000, 30),
    b"labels",
    b"labels/x",
    b".",
    b"..",
    b"a/./b",
    b"a/../b",
    b"a//b",
    b"/a",
    b"a/",
    b"/",
    b"caf\xc3\xa9",
    "\uff21".encode(),  # fullwidth A
    "\u212a".encode(),  # Kelvin sign, which lower-cases to ASCII k
    b"a\x00b",
    b"a\x7f",
    b"a\xff",
    b"a[1:2]",
    b"a]",
    b"a:b",
    b"a%2Fb",
    b"*",
    b"a\\b",
    b"a\rb",
    b"a\x0bb",
)

POOL_HOSTS: tuple[bytes, ...] = (b"198.51.100.7", b"2001:db8::1", b"peer.example")
HOSTS: tuple[bytes, ...] = (
    # valid
    b"192.0.2.1",
    b"0.0.0.0",
    b"255.255.255.255",
    b"2001:DB8:0:0::1",
    b"::ffff:192.0.2.1",
    b"::FFFF:c000:0201",
    b"::",
    b"::1",
    b"Peer.Example.NET.",
    b"a",
    b"x" * 63 + b".example",
    b".".join([b"h" * 63] * 4)[:253],
    # invalid
    b"fe80::1%eth0",
    b"fe80::1%25eth0",
    b"::ffff:1.2.3.4%1",
    b"[2001:db8::1]",
    b"[::1]:80",
    b"2001:db8::1/64",
    b"1.2.3",
    b"256.1.1.1",
    b"01.2.3.4",
    b"1.2.3.4.",
    b"0x7f.0.0.1",
    b"host.123",
    b"-a.example",
    b"a-.example",
    b"a..b",
    b"a_b.example",
    b"h" * 64,
    b".".join([b"h" * 63] * 4)[:254],
    b"1::2::3",
    b"1:2:3:4:5:6:7:8:9",
    b"::ffff:1.2.3.256",
    b":",
    b":::",
    b"",
    b"*",
    b"caf\xc3\xa9.example",
    "\u0661.\u0662.\u0663.\u0664".encode(),  # Arabic-Indic digits
    "\uff11.\uff12.\uff13.\uff14".encode(),  # fullwidth digits
    "\u212a.example".encode(),
    b"localhost\x00",
    b"a\xff",
)

#: Timestamps a server stores (one in the future is stored as "now").
POOL_TIMESTAMPS: tuple[bytes, ...] = (b"999999999999", b"1999999999")
POOL_PORTS: tuple[bytes, ...] = (b"1", b"6881", b"65535")

NUMBERS: tuple[bytes, ...] = (
    b"0",
    b"1",
    b"7",
    b"00",
    b"007",
    b"06881",
    b"65535",
    b"65536",
    b"99999",
    b"100000",
    b"999999999",
    b"1000000000",
    b"0000000001",
    b"999999999999",
    b"1000000000000",
    b"0000000000001",
    b"1700000000",
    b"9" * 20,
    b"9" * 400,
    b"-1",
    b"-0",
    b"+1",
    b"1.5",
    b"1e3",
    b"0x10",
    b"1_000",
    b"1,000",
    b"NaN",
    b"inf",
    b"",
    "\u0661\u0662\u0663".encode(),  # Arabic-Indic digits
    "\uff11\uff12".encode(),  # fullwidth digits
    "\u00b2".encode(),  # superscript two
    "\u09e9".encode(),  # Bengali three
    "\U0001d7ce".encode(),  # mathematical bold zero
    b"\x00",
    b"1\x00",
    b"\xff",
)

WINDOWS: tuple[bytes, ...] = (
    b"[0:0]",
    b"[:]",
    b"[0:]",
    b"[:5]",
    b"[5:1]",
    b"[1:1]",
    b"[999999999:999999999]",
    b"[0:999999999]",
    b"[999999999:]",
    b"[1000000000:]",
    b"[:1000000000]",
    b"[0000000001:2]",
    b"[-1:5]",
    b"[1:-5]",
    b"[1:2:3]",
    b"[",
    b"]",
    b"[]",
    b"[1",
    b"[1:2",
    b"1:2]",
    b"[[1:2]]",
    b"[1:2][3:4]",
    "[\u0661:\u0662]".encode(),
    "[\uff10:\uff11]".encode(),
    b"[0x1:2]",
    b"[ 1:2]",
    b"[1:2]x",
    b"[+1:2]",
    b"[1.5:2]",
    b"[\x00:1]",
    b"[a:b]",
    b"[" + b"9" * 30 + b":]",
)

CURSORS: tuple[bytes, ...] = (
    b"0",
    b"abc:123",
    b"a" * 64,
    b"a" * 65,
    b"-",
    b"::",
    b"a/b",
    b"",
    b"\xff",
    "\uff11".encode(),
    b"0\x00",
)

SERVERS: tuple[bytes, ...] = (
    b"198.51.100.7:7100",
    b"[2001:db8::1]:7100",
    b"2001:db8::1:7100",
    b"[fe80::1%eth0]:1",
    b"[192.0.2.1]:1",
    b"host:0",
    b"host:65536",
    b"host:",
    b":7100",
    b"host",
    b"[::1]",
    b"[]:1",
    b"a:b:c",
    b"\xff:1",
    b"host:" + b"9" * 30,
)

#: What may stand between words: the separators, and things that are not.
SEPARATORS: tuple[bytes, ...] = (b"  ", b"\t", b" \t ", b"\x0b", b"\x0c", b"\x00", b"\xc2\xa0", b"\r")

COMMANDS: tuple[bytes, ...] = (
    b"get",
    b"insert",
    b"push",
    b"changes",
    b"hello",
    b"stats",
    b"peers",
    b"GET",
    b"Get",
    b"INSERT",
    b"get\x00",
    b"g\xc3\xa9t",
    b"ge",
    b"gett",
    b"\x00",
    b"\xff\xfe",
    b"quit!",
    b"hello2",
    b"labels",
    b"ok",
    b"error",
    b"success:",
)

#: Bytes that make a token hostile when put into it.
JUNK: tuple[bytes, ...] = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\r",
    b"\t",
    b" ",
    b"\\",
    b"[",
    b"]",
    b":",
    b"/",
    b"%",
    b";",
    b"\xc3\xa9",
    "\u0661".encode(),
    "\uff11".encode(),
    b"\x1b[31m",
)


#: Valid requests, one of each kind and shape.
CORPUS: tuple[bytes, ...] = (
    b"get fuzz\n",
    b"get fuzz[0:5]\n",
    b"get fuzz[3:]\n",
    b"get fuzz[:2]\n",
    b"get labels\n",
    b"get labels[0:100]\n",
    b"get fuzz/\n",
    b"get fuzz/b/[1:2]\n",
    b"get " + LONGEST_LABEL + b"[999999999:]\n",
    b"insert fuzz fuzz/a\n999999999999 198.51.100.7 6881\n1700000000 2001:db8::1 7000\n\n",
    b"insert x\r\n1999999999 Peer.Example. 065535\r\n\r\n",
    b"insert halp\n\n",
    b"push 198.51.100.9:7100\nfuzz 999999999999 198.51.100.7 6881 198.51.100.8\n"
    b"fuzz/a 1700000000 peer.example 1 -\n\n",
    b"push [2001:db8::2]:7100\nx 1999999999 ::ffff:192.0.2.1 1\n\n",
    b"push\n\n",
    b"changes 0\n",
    b"changes 0 10\n",
    b"changes abc:123 999999999\n",
    b"hello\n",
    b"stats\n",
    b"peers\n",
    b"  \t hello \t \r\n",
    b"\n\nhello\n",
)


# -- the generator ---------------------------------------------------------------


def _sep(p: Pick) -> bytes:
    return b" " if p.chance(85) else p.one(SEPARATORS)


def _mutate_token(p: Pick, token: bytes) -> bytes:
    """``token`` with one hostile change."""
    at = p.num(0, len(token))
    how = p.num(0, 5)
    if how == 0:
        return token[:at] + p.one(JUNK) + token[at:]
    if how == 1:
        return token[:at] + p.bytes(p.num(1, 3)) + token[at + 1 :]
    if how == 2:
        return token[:at]
    if how == 3:
        return token.upper()
    if how == 4:
        return (token * p.num(2, 40))[: 3 * LIMITS.max_line]
    return p.one(JUNK) + token


def _pick_token(
    p: Pick, pool: Sequence[bytes], edges: Sequence[bytes], valid_percent: int = 50
) -> bytes:
    """A token from ``pool`` (valid), ``edges``, or one of them mutated."""
    roll = p.num(0, 99)
    if roll < valid_percent:
        return p.one(pool)
    if roll < valid_percent + (100 - valid_percent) * 2 // 3:
        return p.one(edges)
    return _mutate_token(p, p.one(pool) if p.chance(50) else p.one(edges))


def _number(p: Pick) -> bytes:
    if p.chance(70):
        return p.one(NUMBERS)
    if p.chance(50):
        return b"%d" % p.num(-(10**13), 10**13)
    return _mutate_token(p, p.one(NUMBERS))


def _label(p: Pick) -> bytes:
    return _pick_token(p, POOL_LABELS, LABELS)


def _host(p: Pick) -> bytes:
    return _pick_token(p, POOL_HOSTS, HOSTS)


def _timestamp(p: Pick) -> bytes:
    return p.one(POOL_TIMESTAMPS) if p.chance(60) else _number(p)


def _port(p: Pick) -> bytes:
    return p.one(POOL_PORTS) if p.chance(60) else _number(p)


def _fields(p: Pick, fields: list[bytes]) -> bytes:
    """Join ``fields``, now and then with one dropped, added or swapped."""
    roll = p.num(0, 99)
    if roll < 8 and fields:
        del fields[p.num(0, len(fields) - 1)]
    elif roll < 16:
        fields.insert(p.num(0, len(fields)), _number(p) if p.chance(50) else _host(p))
    elif roll < 22 and len(fields) > 1:
        i = p.num(0, len(fields) - 2)
        fields[i], fields[i + 1] = fields[i + 1], fields[i]
    out = b""
    for i, f in enumerate(fields):
        out += (_sep(p) if i else b"") + f
    return out


def _entry_line(p: Pick) -> bytes:
    return _fields(p, [_timestamp(p), _host(p), _port(p)])


def _change_line(p: Pick) -> bytes:
    fields = [_label(p), _timestamp(p), _host(p), _port(p)]
    roll = p.num(0, 2)
    if roll == 1:
        fields.append(b"-")
    elif roll == 2:
        fields.append(_host(p))
    return _fields(p, fields)


def _block(p: Pick, header: bytes, line: Callable[[Pick], bytes], limit: int) -> bytes:
    """A block request: ``header``, some lines, an empty line (or not)."""
    if p.chance(12):
        count = p.one((0, 1, limit - 1, limit, limit + 1, limit + 7))
    else:
        count = p.num(0, 4)
    # A few distinct lines, repeated: a long block costs little to make.
    distinct = [line(p) for _ in range(min(count, 6))]
    if any(len(d) > LIMITS.max_line for d in distinct):
        count = min(count, 8)  # the server stops reading at the first of them
    body = b"".join(distinct[i % len(distinct)] + b"\n" for i in range(count))
    end = p.one((b"\n", b"\n", b"\n", b"\r\n", b" \t\n", b"", b"\n\n"))
    return header + b"\n" + body + end


def _target(p: Pick) -> bytes:
    roll = p.num(0, 9)
    if roll == 0:
        name = b"labels"
    elif roll == 1:
        name = _label(p) + b"/"
    else:
        name = _label(p)
    if p.chance(50):
        name += p.one(WINDOWS) if p.chance(70) else b"[%d:%d]" % (p.num(-5, 10**10), p.num(-5, 10**10))
    return name


def hostile_request(p: Pick) -> bytes:
    """
    One near-valid hostile request: every command, with arguments at and
    over every limit, then perhaps framed wrongly (CR without LF, NUL,
    overlong lines, no line ending...).  It may be valid.
    """
    roll = p.num(0, 99)
    if roll < 20:
        words = [b"get", _target(p)]
        if p.chance(8):
            words.append(_target(p))
        data = _fields(p, words) + b"\n"
    elif roll < 38:
        if p.chance(15):
            count = p.one((0, 2, LIMITS.max_insert_labels, LIMITS.max_insert_labels + 1, 40))
        else:
            count = p.num(1, 3)
        header = b" ".join([b"insert"] + [_label(p) for _ in range(count)])
        data = _block(p, header, _entry_line, LIMITS.max_insert_entries)
    elif roll < 50:
        header = b"push"
        if p.chance(70):
            header += _sep(p) + _pick_token(p, (b"198.51.100.9:7100",), SERVERS)
        if p.chance(5):
            header += b" " + p.one(SERVERS)
        data = _block(p, header, _change_line, LIMITS.max_gossip_entries)
    elif roll < 60:
        words = [b"changes"]
        if p.chance(90):
            words.append(_pick_token(p, (b"0",), CURSORS))
        if p.chance(60):
            words.append(_number(p))
        if p.chance(8):
            words.append(_number(p))
        data = _fields(p, words) + b"\n"
    elif roll < 69:
        words = [p.one((b"hello", b"stats", b"peers", b"hello", b"stats", b"peers", b"quit"))]
        if p.chance(30):
            words.append(_number(p) if p.chance(50) else _label(p))
        data = _fields(p, words) + b"\n"
    elif roll < 80:
        command = _pick_token(p, COMMANDS, COMMANDS, valid_percent=0)
        data = _fields(p, [command] + [_label(p) for _ in range(p.num(0, 3))]) + b"\n"
    elif roll < 88:
        junk = p.bytes(p.num(0, 120))
        data = junk.replace(b"\n", b"") + b"\n"
    else:
        data = p.one(CORPUS)
    return frame(p, data)


def frame(p: Pick, data: bytes) -> bytes:
    """``data``, now and then with its lines broken in a hostile way."""
    if p.chance(65) or not data:
        return data
    how = p.num(0, 8)
    at = p.num(0, len(data))
    if how == 0:
        return data.replace(b"\n", b"\r\n")
    if how == 1:
        # CR without LF: the line goes on past it.
        newline = data.find(b"\n")
        return data[:newline] + b"\r" + data[newline + 1 :] if newline >= 0 else data + b"\r"
    if how == 2:
        return data[:at] + b"\x00" * p.num(1, 3) + data[at:]
    if how == 3:
        return data[:-1] if data.endswith(b"\n") else data
    if how == 4:
        return p.one((b" \t", b"\n\n", b"\r\n", b" \n")) + data
    if how == 5:
        return data[:at] + p.one((b"\n", b"\r", b"\r\n", b"\n\n")) + data[at:]
    if how == 6:
        return data[:at]
    # A first line of exactly, or just over, or far over the limit.
    first, ending, rest = data.partition(b"\n")
    size = p.one(
        (
            LIMITS.max_line,
            LIMITS.max_line,
            LIMITS.max_line,
            LIMITS.max_line + 1,
            LIMITS.max_line + 2,
            2 * LIMITS.max_line,
        )
    )
    if p.chance(5):
        size = p.one((8000, 70_000))
    pad = b" " if p.chance(50) else b"a"
    cr = b"\r" if p.chance(30) else b""
    first = (first + pad * size)[:size]
    return first + cr + ending + rest


def mutate(p: Pick, data: bytes, corpus: Sequence[bytes] = CORPUS) -> bytes:
    """``data`` after one to four random byte-level mutations."""
    for _ in range(p.num(1, 4)):
        at = p.num(0, len(data))
        end = p.num(at, min(len(data), at + 16))
        how = p.num(0, 9)
        if how == 0 and data:
            i = min(at, len(data) - 1)
            data = data[:i] + bytes([data[i] ^ (1 << p.num(0, 7))]) + data[i + 1 :]
        elif how == 1:
            data = data[:at] + p.bytes(p.num(1, 4)) + data[at:]
        elif how == 2:
            data = data[:at] + data[end:]
        elif how == 3:
            data = data[:end] + data[at:end] * p.num(1, 8) + data[end:]
        elif how == 4:
            atom = p.one((JUNK, NUMBERS, LABELS, HOSTS, WINDOWS, SEPARATORS, COMMANDS))
            data = data[:at] + p.one(atom) + data[at:]
        elif how == 5:
            other = p.one(corpus)
            data = data[:at] + other[p.num(0, len(other)) :]
        elif how == 6:
            data = data[:at] + p.one(NUMBERS) + data[end:]
        elif how == 7:
            data = data[:at] + p.one((b"\n", b"\r", b"\r\n", b"\n\n", b"\x00")) + data[at:]
        elif how == 8:
            data = data[:at]
        else:
            data = frame(p, data)
    return data


# -- hostile server lines, for client-side parsers ---------------------------------


def hostile_response_line(p: Pick) -> bytes:
    """One line a broken or hostile server might send (without its LF)."""
    roll = p.num(0, 9)
    if roll == 0:
        return b"ok" + (_sep(p) + _number(p) if p.chance(70) else b"")
    if roll == 1:
        count = _number(p) if p.chance(90) else b"9" * p.one((4300, 4301, 5000))
        words = [b"ok", count, b"next", _pick_token(p, (b"abc:1",), CURSORS)]
        words.append(p.one((b"more", b"end", b"MORE", b"", b"end\x00")))
        return _fields(p, words)
    if roll == 2:
        return _fields(p, [b"error", p.one(COMMANDS + (b"bad-request", b"")), _label(p)])
    if roll == 3:
        return _fields(p, [b"success:", _label(p), _timestamp(p), _host(p), _port(p)])
    if roll == 4:
        kind = p.one((b"failure:", b"pending:"))
        words = [kind, _label(p), _entry_line(p), p.one((b";", b" ; ", b"", b";;"))]
        return _fields(p, words + [_label(p)])
    if roll == 5:
        return _change_line(p)
    if roll == 6:
        return _fields(p, [_timestamp(p), _label(p)])
    if roll == 7:
        return _entry_line(p)
    if roll == 8:
        return _fields(p, [_label(p), _number(p)])
    return p.bytes(p.num(0, 80)).replace(b"\n", b"")


# -- the oracle --------------------------------------------------------------------


@dataclass
class Expected:
    """
    What a HALP/1 server answers to a byte stream.

    :ivar answers: one item per answer, in order: a request, or the
        protocol error its ``error`` line reports.
    :ivar close: why the server closes the connection after the last
        answer (``"line-too-long"``, ``"quit"``, ``"end of input"``), or
        ``None`` if it keeps it open.
    :ivar libhalp: whether the stream ended inside its first request, so
        that it is answered the libhalp way (no ``ok`` status lines).
    """

    answers: list[Request | ProtocolError] = field(default_factory=list)
    close: str | None = None
    libhalp: bool = False


def expect(stream: bytes, eof: bool = False, limits: Limits = LIMITS) -> Expected:
    """
    The answers to ``stream``, as the codec frames and decodes it; with
    ``eof``, the peer then half-closed (so an unfinished last line or
    block is answered too).
    """
    lines = LineBuffer(limits.max_line)
    decoder = RequestDecoder(limits)
    lines.feed(stream)
    result = Expected()
    ended = False
    while True:
        try:
            line = lines.next_line()
        except ProtocolError as e:
            assert e.code == ErrorCode.LINE_TOO_LONG
            result.answers.append(e)
            result.close = "line-too-long"
            return result
        if line is None:
            if not eof or ended:
                break
            result.libhalp = not result.answers and (decoder.in_block or lines.partial)
            lines.end()
            ended = True
            continue
        item = decoder.feed(line)
        if item is not None:
            result.answers.append(item)
            if isinstance(item, Quit):
                result.close = "quit"
                return result
    if eof:
        item = decoder.end()
        if item is not None:
            result.answers.append(item)
        result.close = "end of input"
    return result


# -- Hypothesis strategies -----------------------------------------------------------


@st.composite
def _drawn_request(draw: st.DrawFn) -> bytes:
    return hostile_request(DrawPick(draw))


@st.composite
def _drawn_stream(draw: st.DrawFn) -> bytes:
    p = DrawPick(draw)
    return b"".join(hostile_request(p) for _ in range(p.num(1, 6)))


@st.composite
def _drawn_mutation(draw: st.DrawFn) -> bytes:
    p = DrawPick(draw)
    return mutate(p, p.one(CORPUS))


@st.composite
def _drawn_response_lines(draw: st.DrawFn) -> list[bytes]:
    p = DrawPick(draw)
    return [hostile_response_line(p) for _ in range(p.num(0, 8))]


#: One near-valid hostile request (:func:`hostile_request`).
hostile_requests: st.SearchStrategy[bytes] = _drawn_request()
#: A few hostile requests, one after the other.
hostile_streams: st.SearchStrategy[bytes] = _drawn_stream() | _drawn_mutation()
#: Lines a hostile server might send.
hostile_response_lines: st.SearchStrategy[list[bytes]] = _drawn_response_lines()


# -- checking answers ------------------------------------------------------------------

#: Error codes a server may answer a well-formed request with: what the
#: rules refuse (an unknown cursor, say) and a throttled peer.
_REQUEST_ERRORS = frozenset({"bad-request", "bad-range", "bad-label", "busy"})


def check_answer(
    item: Request | ProtocolError,
    lines: Sequence[bytes],
    status: bytes,
    limits: Limits = LIMITS,
) -> None:
    """
    Check that ``lines`` then ``status`` (without line endings) answer
    ``item`` as ``docs/protocol.rst`` says.

    :raises AssertionError: naming the request and the answer.
    """
    problem = _answer_problem(item, lines, status, limits)
    if problem is not None:
        raise AssertionError(
            f"{problem}: {summarize(item) if not isinstance(item, ProtocolError) else item} "
            f"answered {list(lines[:3])!r}{'...' if len(lines) > 3 else ''} {status!r}"
        )


def _counts(words: list[str], names: list[str]) -> list[int] | None:
    """The numbers of ``N name N name ...``, perhaps ending ``N pending``."""
    if words[1::2] not in (names, names + ["pending"]) or len(words) % 2:
        return None
    if not all(w.isdigit() and len(w) < 10 for w in words[::2]):
        return None
    return [int(w) for w in words[::2]]


def _answer_problem(
    item: Request | ProtocolError, lines: Sequence[bytes], status: bytes, limits: Limits
) -> str | None:
    for line in (*lines, status):
        if any(not 0x20 <= b < 0x7F for b in line):
            return "a line that is not printable ASCII"
    parsed = parse_status(status)
    if parsed is None:
        return "no status line"
    if any(parse_status(line) is not None for line in lines):
        return "a data line that reads as a status line"
    if isinstance(item, ProtocolError):
        if parsed.ok or parsed.code != item.code.value or lines:
            return f"expected only 'error {item.code.value}'"
        return None
    if not parsed.ok:
        if parsed.code not in _REQUEST_ERRORS or lines:
            return "an unexpected error"
        return None
    words = parsed.text.split()
    try:
        if isinstance(item, (Get, ListLabels)):
            if not (
                (len(words) == 1 or (len(words) == 3 and words[1] == "capped-at"))
                and words[0] == str(len(lines))
                and len(lines) <= limits.max_slice
            ):
                return "a bad count"
            for line in lines:
                if isinstance(item, Get):
                    parse_entry_line(line)
                else:
                    parse_label_line(line, item.parent)
        elif isinstance(item, Insert):
            # "S stored F failed", and " P pending" when some wait for a probe.
            counts = _counts(words, ["stored", "failed"])
            if counts is None or sum(counts) != len(lines):
                return "a bad insert status"
            if len(lines) != len(item.labels) * len(item.entries):
                return "not one line per label and entry"
            for line in lines:
                parse_insert_line(line)
        elif isinstance(item, Push):
            counts = _counts(words, ["changed", "unchanged", "refused"])
            if counts is None or counts[2] != len(lines) or sum(counts) != len(item.changes):
                return "a bad push status"
            for line in lines:
                if not line.startswith(b"failure: "):
                    return "not a failure line"
        elif isinstance(item, Changes):
            page = parse_changes_status(parsed)
            if page.count != len(lines):
                return "a bad changes count"
            for line in lines:
                parse_change_line(line)
        elif isinstance(item, (Hello, Stats)):
            if words:
                return "words after ok"
            for line in lines:
                parse_field_line(line)
        elif isinstance(item, Peers):
            if words != [str(len(lines))]:
                return "a bad peers count"
        elif isinstance(item, Quit):
            if words != ["bye"] or lines:
                return "not 'ok bye'"
    except (ProtocolError, ValueError) as e:
        return f"a line that does not parse ({e})"
    return None
