"""
Hostile input, end to end: a real ``twistd halp`` (memory store) is sent
10,000 seeded hostile HALP/1 requests (the generator of
:mod:`halp.test.fuzzing`) over many connections, and its HTTP face a few
thousand hostile HTTP requests.

Every HALP/1 request must get the answer the codec promises (an ``error``
line, or a well-formed ``ok`` answer), or the server must close the
connection for a stated reason (``line-too-long``, ``quit``, the end of
the input); every HTTP request must get a 4xx.  The server must log no
traceback and no unexpected error, keep its memory bounded, and still
answer normal requests afterwards.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from random import Random
from typing import TypeVar
from urllib.parse import quote

import pytest

from halp.test.fuzzing import LABELS, RandomPick, check_answer, expect, hostile_request
from halp.error import ProtocolError
from halp.model import check_label
from halp.wire import parse_status
from tests.halpserver import IO_TIMEOUT, HALPServer, Reply, StartServer

pytestmark = pytest.mark.e2e

#: The seed of every run: CI sends the same requests each time.
SEED = 20_251_121
#: Hostile HALP/1 requests sent after the warm-up.
REQUESTS = 10_000
#: Requests sent first, from another seed, before memory is measured.
WARM_UP = 1_000
#: How much the server's resident memory may grow over the 10,000
#: requests, in KiB.  Measured: 0.8 to 1.0 MiB, then 0.2 MiB or less for
#: each further 10,000 (the store keeps what the valid inserts among them
#: add: entries of a small pool of labels and hosts); the bound leaves
#: room for allocator noise.
RSS_GROWTH_KIB = 5 * 1024
#: Hostile HTTP requests.
HTTP_REQUESTS = 3_000

#: What the server must never print.
_BAD_OUTPUT = re.compile(r"Traceback|Unhandled|Unexpected error")


def rss_kib(server: HALPServer) -> int:
    """The server process's resident memory, in KiB (``VmRSS``)."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/PID/status")


def assert_clean_output(server: HALPServer) -> None:
    output = server.run_output()
    bad = [line for line in output.splitlines() if _BAD_OUTPUT.search(line)]
    assert not bad, "\n".join(bad[:20]) + "\n" + server.output_tail()


C = TypeVar("C", bound="Connection")


class Connection:
    """
    One raw TCP connection, read line by line, that reports (rather than
    fails on) the server closing or resetting it.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buffer = bytearray()
        self.closed = False
        self.reset = False

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.reset = True

    def _fill(self) -> bool:
        if self.closed or self.reset:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            return False
        except socket.timeout:
            raise AssertionError(
                f"the server sent nothing for {IO_TIMEOUT} s after {bytes(self.buffer[-200:])!r}"
            ) from None
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def line(self) -> bytes | None:
        """The next line, without its LF; ``None`` if the server closed first."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line
            if not self._fill():
                return None

    def reply(self) -> tuple[list[bytes], bytes] | None:
        """Data lines and their status line; ``None`` if the server closed first."""
        lines: list[bytes] = []
        while (line := self.line()) is not None:
            if parse_status(line) is not None:
                return lines, line
            lines.append(line)
        assert not lines and not self.buffer, f"an unfinished answer {lines[:3]!r} {self.buffer!r}"
        return None

    def rest(self) -> bytes:
        """Everything until the server closes."""
        while self._fill():
            pass
        data, self.buffer = bytes(self.buffer), bytearray()
        return data


@dataclass
class Tally:
    """What a run sent and saw, for the assertions and the report."""

    requests: int = 0
    connections: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)

    def answered(self, item: object, status: bytes) -> None:
        words = status.decode("ascii").split()
        result = " ".join(words[:2]) if words[0] == "error" else "ok"
        self.answers[f"{type(item).__name__}: {result}"] += 1


def check_answers(conn: Connection, stream: bytes, eof: bool, tally: Tally) -> None:
    """
    Read the answers to ``stream`` and check them against what the codec
    promises; then, if the server should close, that it does and sends
    nothing more.
    """
    expected = expect(stream, eof=eof)
    for item in expected.answers:
        reply = conn.reply()
        if reply is None:
            # Only a server closing after a line too long may reset the
            # connection (it did not read the rest of the input), and so
            # lose its last answers in flight.
            assert conn.reset and expected.close == "line-too-long", (
                f"no answer to {item!r}: the server {'reset' if conn.reset else 'closed'} "
                f"the connection (expected {expected.close})"
            )
            tally.closes["reset after line-too-long"] += 1
            return
        lines, status = reply
        check_answer(item, lines, status)
        tally.answered(item, status)
    if expected.close is not None:
        rest = conn.rest()
        assert rest == b"", f"{rest[:200]!r} after the last answer"
        assert conn.closed or conn.reset, "not closed"
        tally.closes[expected.close if conn.closed else f"reset after {expected.close}"] += 1


def run_pipelined(port: int, batch: list[bytes], tally: Tally) -> None:
    """Send a batch of requests at once, then read every answer."""
    # The first request marks the connection as HALP/1 at once: an
    # unfinished first request would be answered the libhalp way if the
    # rest of it came late.
    stream = b"hello\n" + b"".join(batch)
    stays_open = expect(stream).close is None
    if stays_open:
        stream += b"\n\n"  # ends an open block and an unterminated line
    with Connection(port) as conn:
        conn.send(stream)
        check_answers(conn, stream, False, tally)
        if stays_open:
            # Nothing more was sent than the answers counted.
            conn.send(b"quit\n")
            assert conn.reply() == ([], b"ok bye")
            assert conn.rest() == b"" and conn.closed


def run_half_closed(port: int, batch: list[bytes], tally: Tally) -> None:
    """Send requests and half-close: everything is answered, then the server closes."""
    stream = b"hello\n" + b"".join(batch)
    with Connection(port) as conn:
        conn.send(stream)
        conn.sock.shutdown(socket.SHUT_WR)
        check_answers(conn, stream, True, tally)


def run_libhalp(port: int, request: bytes, tally: Tally) -> None:
    """
    One request without its line ending, then a half-close: if it was
    still unfinished, the libhalp form (data lines only, and an error line
    for a failure), then close.
    """
    request = request.rstrip(b"\n")
    expected = expect(request, eof=True)
    with Connection(port) as conn:
        conn.send(request)
        conn.sock.shutdown(socket.SHUT_WR)
        if not expected.libhalp:
            check_answers(conn, request, True, tally)
            return
        data = conn.rest()
    assert conn.closed, data[:300]
    lines = data.split(b"\n")
    assert lines.pop() == b"", f"an unterminated line: {data[-100:]!r}"
    statuses = [status for line in lines if (status := parse_status(line)) is not None]
    assert not any(s.ok for s in statuses), data[:300]
    codes = Counter(s.code or "" for s in statuses)
    promised = Counter(a.code.value for a in expected.answers if isinstance(a, ProtocolError))
    assert not promised - codes, (promised, data[:300])
    assert len(statuses) <= len(expected.answers), data[:300]
    tally.closes["libhalp answer, then close"] += 1


def run_cut(port: int, batch: list[bytes], rng: Random, tally: Tally) -> None:
    """Send part of a batch, cut anywhere, and close (perhaps reading first)."""
    stream = b"hello\n" + b"".join(batch)
    with Connection(port) as conn:
        conn.send(stream[: rng.randint(6, len(stream))])
        if rng.random() < 0.5:
            assert conn.line() is not None  # hello's first line at least
    tally.closes["closed by the client mid-request"] += 1


def flood(port: int, tally: Tally) -> None:
    """1 MiB without a line ending: refused as too long, and closed."""
    with Connection(port) as conn:
        conn.send(b"get " + b"x" * (1 << 20))
        line = conn.line()
        assert line is None or line.startswith(b"error line-too-long "), line
        conn.rest()
        assert conn.closed or conn.reset
    tally.closes["1 MiB flood"] += 1


def send_hostile(port: int, seed: int, count: int) -> Tally:
    """Send ``count`` hostile requests from ``seed``, in every way of :func:`run_*`."""
    rng = Random(seed)
    pick = RandomPick(rng)
    tally = Tally()
    while tally.requests < count:
        tally.connections += 1
        roll = rng.random()
        if roll < 0.004:
            flood(port, tally)
            continue
        if roll < 0.04:
            run_libhalp(port, hostile_request(pick), tally)
            tally.requests += 1
            continue
        batch: list[bytes] = []
        for _ in range(rng.randint(1, 50)):
            request = hostile_request(pick)
            batch.append(request)
            if expect(request).close is not None:
                break  # what closes the connection comes last
        batch = batch[: count - tally.requests]
        tally.requests += len(batch)
        if roll < 0.10:
            run_cut(port, batch, rng, tally)
        elif roll < 0.25:
            run_half_closed(port, batch, tally)
        else:
            run_pipelined(port, batch, tally)
    return tally


def test_hostile_halp1_requests(start_server: StartServer) -> None:
    """
    10,000 hostile requests: each answered as the codec promises, or the
    connection closed for a stated reason; no traceback, bounded memory,
    and the server still serves.
    """
    server = start_server(store="memory")
    assert server.port is not None
    send_hostile(server.port, SEED - 1, WARM_UP)
    before = rss_kib(server)
    started = time.monotonic()
    tally = send_hostile(server.port, SEED, REQUESTS)
    elapsed = time.monotonic() - started
    after = rss_kib(server)
    print(
        f"\n{tally.requests} hostile requests over {tally.connections} connections "
        f"in {elapsed:.1f} s; {sum(tally.answers.values())} answers checked; "
        f"RSS {before} -> {after} KiB ({after - before:+d} KiB)"
    )
    for what, n in sorted(tally.answers.items()):
        print(f"  {n:6d}  {what}")
    for what, n in sorted(tally.closes.items()):
        print(f"  {n:6d}  {what}")
    assert tally.requests == REQUESTS
    assert after - before < RSS_GROWTH_KIB, f"RSS grew from {before} to {after} KiB"
    with server.connect() as client:
        assert client.reply(b"get fuzz\n").status.startswith("ok ")
        assert client.reply(b"hello\n").status == "ok"
    assert_clean_output(server)


# -- HTTP ------------------------------------------------------------------------------


@dataclass
class HTTPReply:
    status: int
    headers: dict[str, str]
    body: bytes


class HTTPConnection(Connection):
    """A raw HTTP/1.1 connection: requests written as bytes, answers parsed by hand."""

    def response(self, head: bool = False) -> HTTPReply | None:
        """The next response (after any ``1xx``); ``None`` if the server closed first."""
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if not self._fill():
                    assert not self.buffer, f"a cut response: {bytes(self.buffer[:300])!r}"
                    return None
            end = self.buffer.index(b"\r\n\r\n")
            head_text = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            first, *header_lines = head_text.split("\r\n")
            match = re.match(r"HTTP/1\.[01] (\d{3})( |$)", first)
            assert match, f"not a status line: {first!r}"
            status = int(match.group(1))
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                continue
            if head or status in (204, 304):
                return HTTPReply(status, headers, b"")
            if "content-length" in headers:
                size = int(headers["content-length"])
                while len(self.buffer) < size and self._fill():
                    pass
                body, self.buffer = bytes(self.buffer[:size]), self.buffer[size:]
                assert len(body) == size, f"a cut body: {body[:200]!r}"
                return HTTPReply(status, headers, body)
            if headers.get("transfer-encoding", "").lower() == "chunked":
                return HTTPReply(status, headers, self._chunked())
            return HTTPReply(status, headers, self.rest())

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buffer:
                assert self._fill(), "a cut chunked body"
            end = self.buffer.index(b"\r\n")
            size = int(bytes(self.buffer[:end]).split(b";")[0], 16)
            del self.buffer[: end + 2]
            while len(self.buffer) < size + 2:
                assert self._fill(), "a cut chunk"
            body += bytes(self.buffer[:size])
            del self.buffer[: size + 2]
            if size == 0:
                return body


def _request(
    method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b"")


def _pct(raw: bytes) -> str:
    return quote(raw, safe="")


def _is_label(raw: bytes) -> bool:
    try:
        check_label(raw.decode("ascii"))
    except (UnicodeDecodeError, ProtocolError):
        return False
    return True


#: Labels of the generator that are not labels, each refused wherever it
#: is given (an empty one is left out: ``/v1/labels/`` is the index).
BAD_LABELS = [label for label in LABELS if label and not _is_label(label)]
#: Those that ``?prefix=`` still refuses once it drops slashes at the ends.
BAD_PREFIXES = [b for b in BAD_LABELS if b.strip(b"/") and not _is_label(b.strip(b"/"))]

_BAD_NUMBERS = ["0", "-1", "abc", "1e3", "%00", "%ff", "1%00", "%", "", " 1", "1 ",
                "%D9%A1", "%EF%BC%91", "9999999999", "0x10", "1.5", "+1", "1_0"]

_BAD_BODIES: list[bytes] = [
    b"",
    b"{",
    b"[",
    b"]",
    b"nul",
    b"{}",
    b"[]",
    b"[1]",
    b"null",
    b"true",
    b"1",
    b'"x"',
    b"1e999",
    b'{"host": 1, "port": 1}',
    b'{"host": "198.51.100.1", "port": "1"}',
    b'{"host": "198.51.100.1", "port": 0}',
    b'{"host": "198.51.100.1", "port": 65536}',
    b'{"host": "198.51.100.1", "port": -1}',
    b'{"host": "198.51.100.1", "port": 1.5}',
    b'{"host": "198.51.100.1", "port": true}',
    b'{"host": "198.51.100.1", "port": null}',
    b'{"host": "198.51.100.1", "port": 1e400}',
    b'{"host": "198.51.100.1", "port": 1, "timestamp": -1}',
    b'{"host": "198.51.100.1", "port": 1, "timestamp": "1"}',
    b'{"host": "198.51.100.1", "port": 1, "timestamp": 1.5}',
    b'{"host": "198.51.100.1", "port": 1, "timestamp": 10000000000000}',
    b'{"host": "198.51.100.1", "port": 1, "timestamp": NaN}',
    b'{"host": "198.51.100.1", "port": 1, "timestamp": Infinity}',
    b'{"host": "198.51.100.1", "port": 1' + b"0" * 4400 + b"}",
    b'{"host": "fe80::1%eth0", "port": 1}',
    b'{"host": "[::1]", "port": 1}',
    b'{"host": "", "port": 1}',
    b'{"host": "' + b"a" * 300 + b'", "port": 1}',
    b'{"host": "1.2.3", "port": 1}',
    b'{"host": "caf\\u00e9.example", "port": 1}',
    b'{"host": "a\\u0000b", "port": 1}',
    b'{"host": "\\ud800", "port": 1}',
    b'{"host": "\xff", "port": 1}',
    b'\xef\xbb\xbf{"host": "198.51.100.1", "port": 1}',
    '{"host": "198.51.100.1", "port": 1}'.encode("utf-16"),
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b"[" + b",".join([b'{"host": "", "port": 1}'] * 101) + b"]",
    b'{"host": "198.51.100.1", "host": 5, "port": 1}',
    b'{"host": "198.51.100.1" "port": 1}',
    b"\x00" * 100,
]

#: Header values for :func:`hostile_http`; none with bytes that are not
#: UTF-8 (``test_header_not_utf8``).
_HEADER_JUNK = ["", "*", "\x7f", "a" * 8000, "text/plain;q=x", "W/\"x\", *, \"", "%ff",
                "application/openmetrics-text; version=9.9.9", "Sun, 06 Nov " + "9" * 5000 + " 08:49:37 GMT",
                "Sun, 06 Nov 1994 99:99:99 GMT", "bytes=0-1,5-", "\t"]


def hostile_http(rng: Random) -> tuple[bytes, bool]:
    """
    One hostile HTTP request that is framed well enough to be answered on
    a kept-alive connection, and whether it must fail with a 4xx (else it
    may be answered, but never with a 5xx).
    """
    roll = rng.random()
    if roll < 0.25:
        # Bad paths.
        target = rng.choice(
            [
                "/v1/labels/" + _pct(rng.choice(BAD_LABELS)),
                "/v1/labels/" + "/".join(_pct(rng.choice(BAD_LABELS)) for _ in range(2)),
                "/v1/labels/a%3Fb",
                "/v1/labels/a;b",
                "/v1/labels/" + "a" * rng.choice([65, 256, 2000]),
                "/v1/labels//a",
                "/v1/labels/a/..",
                "/v1/labels/./a",
                "/v1/labels/labels",
                "/v1/labels/%ff%fe",
                "/v1/labels/a%00b",
                "/v1",
                "/v1/",
                "/v2/labels/a",
                "/v1/nothing",
                "/v1/hello/x",
                "/hostlist/x",
                "/metrics/x",
                "/favicon.ico",
                "/%2e%2e/%2e%2e/etc/passwd",
                "/" + _pct(rng.randbytes(rng.randint(1, 40))) + "x",
            ]
        )
        return _request(rng.choice(["GET", "HEAD"]), target), True
    if roll < 0.45:
        # Bad query strings on good paths.
        bad = rng.choice(_BAD_NUMBERS)
        bad_offset = rng.choice(_BAD_NUMBERS[1:])  # 0 is an offset
        target = rng.choice(
            [
                f"/v1/labels/fuzz?limit={bad}",
                f"/v1/labels/fuzz?offset={bad_offset}",
                f"/v1/labels?limit={bad}",
                f"/v1/labels?offset={bad_offset}",
                "/v1/labels/fuzz?limit=1&limit=2",
                "/v1/labels/fuzz?format=" + rng.choice(["xml", "TEXT", "%ff", "", "text&format=json"]),
                "/v1/hello?format=" + rng.choice(["xml", "%ff", "json&format=json"]),
                "/v1/labels?prefix=" + _pct(rng.choice(BAD_PREFIXES)),
                "/hostlist?label=" + _pct(rng.choice(BAD_LABELS)),
                "/hostlist?label=a&label=b",
            ]
        )
        return _request("GET", target), True
    if roll < 0.55:
        # Methods a path does not take.
        method = rng.choice(
            ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "get", "BREW", "X" * 100]
        )
        target = rng.choice(["/", "/v1/hello", "/v1/labels/fuzz", "/hostlist", "/metrics", "/v1/labels"])
        if rng.random() < 0.3:
            method, target = "POST", rng.choice(["/", "/v1/hello", "/hostlist", "/metrics", "/v1/labels"])
        return _request(method, target, body=b"{}" if rng.random() < 0.3 else None), True
    if roll < 0.85:
        # Bad JSON bodies, and bad content types.
        label = rng.choice(["fuzz", "fuzz/a", "x"])
        body = rng.choice(_BAD_BODIES)
        content_type = "application/json"
        if rng.random() < 0.15:
            content_type = rng.choice(
                ["text/plain", "application/jsonx", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "*/*", "application/json\x7f"]
            )
            body = b'{"host": "198.51.100.1", "port": 1}'
        return _request("POST", f"/v1/labels/{label}", {"Content-Type": content_type}, body), True
    # Hostile headers on good requests: anything but a 5xx.
    name = rng.choice(["Accept", "If-None-Match", "If-Modified-Since", "Range", "Cookie",
                       "X-Forwarded-For", "Accept-Encoding", "Content-Type", "Origin"])
    target = rng.choice(["/", "/v1/hello", "/v1/labels/fuzz", "/v1/labels", "/hostlist",
                         "/metrics", "/v1/stats", "/v1/peers", "/hostlist?label=fuzz"])
    return _request(rng.choice(["GET", "HEAD"]), target, {name: rng.choice(_HEADER_JUNK)}), False


#: Requests that break HTTP itself, each on a connection of its own:
#: answered 4xx (Twisted's own ``400 Bad Request`` for most), then closed.
#: (A header continued on the next line, obsolete line folding, is not
#: among them: Twisted joins the lines, as RFC 9112 allows.  Lines over
#: 16 KiB are: ``test_overlong_http_lines``.)
BROKEN_HTTP: list[bytes] = [
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET / FOO/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x00\x01\x02\x03\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 100) for i in range(200)) + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(600)) + b"\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"1000\r\n" + b"a" * 0x1000 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /v1/labels/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
    b"GET /v1/hello\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"G\xc3\x89T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]


def test_hostile_http_requests(start_server: StartServer) -> None:
    """
    A few thousand hostile HTTP requests (bad paths, query strings,
    methods, JSON bodies, headers, framing): every one that must fail is
    answered 4xx, none 5xx; no traceback, and the face still serves.
    """
    server = start_server("--http", "tcp:0:interface=127.0.0.1", store="memory")
    assert server.http_port is not None
    rng = Random(SEED)
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    conn: HTTPConnection | None = None
    sent = 0

    def check(reply: HTTPReply | None, must_fail: bool, request: bytes) -> None:
        assert reply is not None, f"no answer to {request[:200]!r}"
        statuses[reply.status] += 1
        assert reply.status < 500, f"{reply.status} {reply.body[:300]!r} for {request[:200]!r}"
        if must_fail:
            assert 400 <= reply.status < 500, f"{reply.status} for {request[:200]!r}"
            if reply.headers.get("content-type", "").startswith("application/json") and reply.body:
                assert "error" in json.loads(reply.body), reply.body[:200]

    try:
        while sent < HTTP_REQUESTS - len(BROKEN_HTTP):
            request, must_fail = hostile_http(rng)
            if conn is None or conn.closed or conn.reset:
                if conn is not None:
                    conn.sock.close()
                conn = HTTPConnection(server.http_port)
            conn.send(request)
            check(conn.response(head=request.startswith(b"HEAD ")), must_fail, request)
            sent += 1
    finally:
        if conn is not None:
            conn.sock.close()
    for request in BROKEN_HTTP:
        with HTTPConnection(server.http_port) as broken:
            broken.send(request)
            reply = broken.response()
            if reply is None and broken.reset:
                # The server answered and closed before reading it all.
                statuses[0] += 1
            else:
                check(reply, True, request)
        sent += 1
    elapsed = time.monotonic() - started
    print(f"\n{sent} hostile HTTP requests in {elapsed:.1f} s: {dict(sorted(statuses.items()))}")
    assert statuses[0] <= 3, "too many connections reset unanswered"
    with HTTPConnection(server.http_port) as good:
        good.send(_request("GET", "/v1/hello"))
        reply = good.response()
        assert reply is not None and reply.status == 200, reply
    assert server.reply(b"get fuzz\n") == Reply([], "ok 0")
    assert_clean_output(server)



def test_header_not_utf8(start_server: StartServer) -> None:
    """A header value that is not UTF-8 (Latin-1 ``é``) is no reason for a 5xx."""
    server = start_server("--http", "tcp:0:interface=127.0.0.1", store="memory")
    assert server.http_port is not None
    for name in ("Accept", "If-None-Match", "Content-Type"):
        with HTTPConnection(server.http_port) as conn:
            conn.send(_request("GET", "/v1/labels", {name: "\u00e9"}))
            reply = conn.response()
            assert reply is not None and reply.status < 500, (name, reply)
    assert_clean_output(server)


def test_overlong_http_lines(start_server: StartServer) -> None:
    """A request line or a header line over 16 KiB is answered 414 or 431, then closed."""
    server = start_server("--http", "tcp:0:interface=127.0.0.1", store="memory")
    assert server.http_port is not None
    for request, status in [
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    ]:
        with HTTPConnection(server.http_port) as conn:
            conn.send(request)
            reply = conn.response()
            assert reply is not None and reply.status == status, (request[:40], reply)
    assert_clean_output(server)


def test_non_ascii_host_refused(start_server: StartServer) -> None:
    """A host that is not ASCII is refused over HTTP, as it is over HALP/1."""
    server = start_server("--http", "tcp:0:interface=127.0.0.1", store="memory")
    assert server.http_port is not None
    with HTTPConnection(server.http_port) as conn:
        conn.send(
            _request(
                "POST",
                "/v1/labels/k",
                {"Content-Type": "application/json"},
                b'{"host": "\\u212a.example", "port": 1}',
            )
        )
        reply = conn.response()
        assert reply is not None and reply.status == 400, reply
