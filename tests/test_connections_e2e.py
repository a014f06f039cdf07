"""
End-to-end tests of the server's connection hygiene (tests 11, 13, 14, 15
and 16 of the hardening issue's reliability anchors): real ``twistd halp``
processes on loopback, attacked over real sockets, and watched from
``/proc``: their memory (``VmRSS``), their file descriptors and their CPU
time.

Clients that stand for other hosts bind to other loopback addresses
(``127.0.0.2``, ``127.0.1.7``...), which Linux routes like ``127.0.0.1``.
Timeouts are made small with the server's options so that each test takes
a few seconds; every wait is a blocking read, ``select`` or log wait with
a deadline.  Wall-clock figures are asserted with wide margins only; the
figures measured on the development machine (2 shared cores) are quoted in
each docstring.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from tests.halpserver import (
    IO_TIMEOUT,
    HALPClient,
    HALPServer,
    StartServer,
    eventually,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs Linux /proc"),
]

#: A memory store, no federation and no request log: the server does
#: nothing but what a test makes it do.
QUIET = ("--store", "memory", "--no-federation", "--no-request-log")

LINE_TOO_LONG = "error line-too-long request lines are at most 1024 bytes"


# -- watching the server ---------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return targets


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # Fields 14 and 15 (utime, stime), counted from 1 with pid and comm.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(server: HALPServer) -> int:
    assert server.process is not None
    return server.process.pid


def settled_fds(server: HALPServer) -> int:
    """
    The server's descriptors once it has served a connection and every
    connection so far is closed (the reactor opens some descriptors of its
    own only once it runs).
    """
    assert server.reply(b"hello\n").status == "ok"

    def all_closed() -> int | None:
        log = server.run_output()
        if log.count(" connected\n") + log.endswith(" connected") == log.count(" disconnected"):
            return fd_count(pid_of(server))
        return None

    return eventually(all_closed, server, timeout=IO_TIMEOUT, step=0.05)


def back_to(server: HALPServer, baseline: int, timeout: float = 15.0) -> int:
    """Wait until the server holds no more descriptors than ``baseline``."""
    pid = pid_of(server)
    deadline = time.monotonic() + timeout
    while True:
        count = fd_count(pid)
        if count <= baseline:
            return count
        assert time.monotonic() < deadline, (
            f"{count} descriptors, not {baseline}, after {timeout} s: {sorted(fd_targets(pid))}"
        )
        server.wait_for_more_output(0.1)


def _hex(address: tuple[str, int]) -> str:
    host, port = address[:2]
    return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(host))[0], port)


def tcp_queues(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int]:
    """
    The send and receive queues (bytes not yet acknowledged by the peer,
    bytes not yet read by the owner) of the IPv4 TCP socket ``local`` ->
    ``remote``, from ``/proc/net/tcp``.
    """
    wanted = [_hex(local), _hex(remote)]
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1:3] == wanted:
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no socket {local} -> {remote}")


def p99(latencies: Sequence[float]) -> float:
    ordered = sorted(latencies)
    return ordered[int(0.99 * (len(ordered) - 1))]


# -- talking to it -----------------------------------------------------------------


def connect_from(server: HALPServer, source: str, port: int | None = None) -> socket.socket:
    """A connection to the server's HALP/1 port (or ``port``) from ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(IO_TIMEOUT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port if port is not None else server.port or 0))
    return sock


def client_from(server: HALPServer, source: str) -> HALPClient:
    return HALPClient(connect_from(server, source), server)


def read_to_close(sock: socket.socket, timeout: float = IO_TIMEOUT) -> bytes:
    """
    Everything the server sends until it closes.  A server that closes with
    input it did not read sends a reset after its last bytes; Linux still
    hands those bytes over first.
    """
    sock.settimeout(timeout)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def send_until_blocked(sock: socket.socket, data: bytes, stall: float = 1.0) -> int:
    """
    Send ``data`` without reading anything; stop when it is all sent, the
    server closes, or the socket stays unwritable for ``stall`` seconds
    (the server stopped reading).  The bytes sent.
    """
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            try:
                sent += sock.send(data[sent : sent + 65536])
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], stall)
                if not writable:
                    break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.setblocking(True)
        sock.settimeout(IO_TIMEOUT)
    return sent


class LatencyProbe(threading.Thread):
    """
    Another host's client: one connection from ``source``, sending
    ``request`` and reading its answer over and over until :meth:`stop`,
    recording how long each took.
    """

    def __init__(self, server: HALPServer, source: str, request: bytes = b"get a\n") -> None:
        super().__init__(name=f"probe-{source}", daemon=True)
        self.client = client_from(server, source)
        self.request = request
        self.latencies: list[float] = []
        self.statuses: set[str] = set()
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                started = time.monotonic()
                reply = self.client.reply(self.request)
                self.latencies.append(time.monotonic() - started)
                self.statuses.add(reply.status)
        except BaseException as e:  # reported by stop()
            self.error = e

    def stop(self) -> list[float]:
        self._halt.set()
        self.join(IO_TIMEOUT * 2)
        self.client.close()
        assert not self.is_alive(), "the probe hangs"
        if self.error is not None:
            raise AssertionError(f"the probe failed: {self.error!r}") from self.error
        assert self.latencies, "the probe made no request"
        return self.latencies


@pytest.fixture
def probe() -> Iterator[Callable[[HALPServer, str], LatencyProbe]]:
    """``probe(server, source)`` starts a :class:`LatencyProbe`, stopped at the end."""
    probes: list[LatencyProbe] = []

    def start(server: HALPServer, source: str) -> LatencyProbe:
        p = LatencyProbe(server, source)
        probes.append(p)
        p.start()
        return p

    yield start
    for p in probes:
        if p.is_alive():
            p._halt.set()
            p.client.close()
            p.join(IO_TIMEOUT)


# -- 1. the line limit (anchors test 11) -----------------------------------------------


def test_mebibyte_without_a_line_ending(start_server: StartServer) -> None:
    """
    1 MiB without a line ending is answered ``error line-too-long`` and the
    connection closed, after the server read about one 64 KiB read of it
    (the rest is never read).  Twenty such connections, one after the
    other, leave the server's RSS within 1 MiB of where it was, and other
    clients are served meanwhile.

    Measured: RSS growth 24 to 28 KiB over the twenty connections.
    """
    server = start_server(*QUIET)
    pid = pid_of(server)
    mebibyte = b"x" * (1 << 20)

    def attack() -> None:
        with connect_from(server, "127.0.0.2") as sock:
            sent = send_until_blocked(sock, mebibyte)
            answer = read_to_close(sock)
            assert answer.decode("ascii").splitlines() == [LINE_TOO_LONG], (sent, answer)

    attack()  # once first, so that one-time allocations are not counted
    before = rss_kib(pid)
    for _ in range(20):
        attack()
        assert server.reply(b"get a\n").status == "ok 0"
    grown = rss_kib(pid) - before
    assert grown < 1024, f"server RSS grew by {grown} KiB"


# -- 2. the request deadline, slowloris (anchors test 13) -------------------------------


def test_slowloris_is_cut_off_by_the_request_deadline(
    start_server: StartServer, probe: Callable[[HALPServer, str], LatencyProbe]
) -> None:
    """
    300 connections from 20 hosts (15 each, under the per-host cap of 16)
    each send ``hello`` and then the start of a request, one more byte every
    0.5 s: never idle (``--idle-timeout 3``), they are all closed by the
    request deadline (``--request-timeout 2``) with an error line, while
    another host keeps being served; the server's descriptors come back
    to what they were.

    Measured: connections closed 2.0 to 5.1 s after the client sent its
    first bytes (the server reads some of them late: 300 connections at
    once overflow its listen backlog of 50, and the kernel completes those
    handshakes on a later retransmission); the other host's p99 latency
    0.2 to 3 ms (largest 30 to 44 ms, over 30,000 to 70,000 requests);
    descriptors back to the baseline by the time the last client saw its
    close.
    """
    server = start_server(*QUIET, "--request-timeout", "2", "--idle-timeout", "3")
    pid = pid_of(server)
    baseline = settled_fds(server)
    other = probe(server, "127.0.0.1")
    sockets: dict[socket.socket, float] = {}
    for i in range(300):
        sock = connect_from(server, f"127.0.1.{i % 20 + 1}")
        sock.sendall(b"hello\nget")
        sockets[sock] = time.monotonic()
    received: dict[socket.socket, bytearray] = {sock: bytearray() for sock in sockets}
    lasted: list[float] = []
    deadline = time.monotonic() + 20
    trickle = time.monotonic() + 0.5
    open_ = set(sockets)
    while open_:
        now = time.monotonic()
        assert now < deadline, f"{len(open_)} connections still open"
        if now >= trickle:
            trickle = now + 0.5
            for sock in open_:  # never idle
                try:
                    sock.send(b"x")
                except OSError:
                    pass  # closed by the server: select says so
        readable, _, _ = select.select(list(open_), [], [], max(0.0, trickle - now))
        for sock in readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[sock] += chunk
            else:
                lasted.append(time.monotonic() - sockets[sock])
                open_.discard(sock)
                sock.close()
    latencies = other.stop()
    for data in received.values():
        lines = data.decode("ascii").splitlines()
        assert lines[-1] == "error bad-request request not complete within 2 s", lines
    assert max(lasted) < 15, f"slowest close after {max(lasted):.1f} s"
    assert min(lasted) >= 1.9, f"a connection closed after {min(lasted):.1f} s"
    assert p99(latencies) < 2.0, f"p99 {p99(latencies):.3f} s over {len(latencies)} requests"
    back_to(server, baseline)
    assert len(server.wait_for_lines(r"127\.0\.1\.\d+:\d+ connected", 300)) == 300
    assert len(server.wait_for_lines("did not complete a request within 2.0 s", 300)) == 300


def test_peer_that_reads_nothing_is_aborted(start_server: StartServer) -> None:
    """
    A peer pipelines requests with big answers and reads nothing: once the
    server's output is full it stops answering, closes the connection after
    ``--idle-timeout`` (1 s) and, since the peer still takes nothing, aborts
    it ``--abort-timeout`` (1 s) later: the descriptor is freed although
    the peer keeps its end open.

    Measured: the descriptor freed 2.0 s after the client found it could
    send no more.
    """
    server = start_server(*QUIET, "--idle-timeout", "1", "--abort-timeout", "1")
    pid = pid_of(server)
    now = int(time.time())
    server.reply(
        b"insert big\n"
        + b"".join(b"%d 10.9.0.%d %d\n" % (now, i, 1000 + i) for i in range(1, 101))
        + b"\n"
    )
    baseline = settled_fds(server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port or 0))
    try:
        requests = b"get big[0:100]\n" * 4_000_000  # 60 MB, more than socket buffers hold
        sent = send_until_blocked(sock, requests, stall=0.25)
        stalled = time.monotonic()
        assert sent < len(requests), "the server read everything from a peer that reads nothing"
        assert fd_count(pid) == baseline + 1
        back_to(server, baseline, timeout=10)
        freed = time.monotonic() - stalled
        assert freed < 8, f"freed {freed:.1f} s after the stall"
        server.wait_for_lines(r"idle for 1\.0 s, closing")
        # Aborted, not closed: what the server had not sent is dropped and
        # the peer, whenever it reads, finds a reset.
        sock.settimeout(IO_TIMEOUT)
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
    finally:
        sock.close()


# -- 3. connection caps (anchors test 14) ---------------------------------------------------


BUSY_HOST = "error busy too many connections from 127.0.0.2 (at most 16 at once); try again in 10 s"


def test_one_host_over_its_cap_does_not_starve_others(
    start_server: StartServer, probe: Callable[[HALPServer, str], LatencyProbe]
) -> None:
    """
    One host holds 16 connections (the default per-host cap) and tries 3000
    more, as fast as it can: each of those is answered with one ``error
    busy`` line and closed, its 16 stay served, another host is served
    throughout, and opens its own 16 connections afterwards.  Refusals are
    logged once every 10 s, not once each.

    Measured: 3000 refusals in 1.2 to 1.6 s; the other host's p99 latency
    during the flood 0.6 to 4 ms (largest 3 to 9 ms, over 2,600 to 4,800
    requests); one log line for the 3000 refusals.
    """
    server = start_server(*QUIET)
    pid = pid_of(server)
    baseline = settled_fds(server)
    held = [client_from(server, "127.0.0.2") for _ in range(16)]
    for client in held:
        assert client.reply(b"hello\n").status == "ok"
    other = probe(server, "127.0.0.3")
    refused = 0
    for _ in range(3000):
        with connect_from(server, "127.0.0.2") as sock:
            answer = read_to_close(sock)
        assert answer.decode("ascii") == BUSY_HOST + "\n", answer
        refused += 1
    latencies = other.stop()
    assert refused == 3000
    for client in held:
        assert client.reply(b"get a\n").status == "ok 0"
    assert p99(latencies) < 2.0, f"p99 {p99(latencies):.3f} s over {len(latencies)} requests"
    others = [client_from(server, "127.0.0.3") for _ in range(16)]
    for client in others:
        assert client.reply(b"get a\n").status == "ok 0"
    logged = server.wait_for_lines("Refused a connection from 127.0.0.2")
    assert len(logged) <= 3, f"{len(logged)} log lines for 3000 refusals"
    for client in held + others:
        client.close()
    back_to(server, baseline)


def test_total_cap(start_server: StartServer) -> None:
    """
    With ``--max-connections 20`` (and no per-host cap), the 21st
    connection is told the server is busy; once one closes, a new one is
    served.
    """
    server = start_server(*QUIET, "--max-connections", "20", "--max-connections-per-host", "0")
    clients = [client_from(server, "127.0.0.1") for _ in range(20)]
    for client in clients:
        assert client.reply(b"hello\n").status == "ok"
    with connect_from(server, "127.0.0.4") as sock:
        assert read_to_close(sock) == (
            b"error busy the server has too many connections (20); try again in 10 s\n"
        )
    clients.pop().close()
    server.wait_for_lines(r"127\.0\.0\.1:\d+ disconnected")
    with client_from(server, "127.0.0.4") as client:
        assert client.reply(b"get a\n").status == "ok 0"
    for client in clients:
        client.close()


def http_request(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request and read its response (with a Content-Length)."""
    sock.sendall(request)
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {bytes(data)!r}"
        data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


GET_HELLO = b"GET /v1/hello HTTP/1.1\r\nHost: halp\r\n\r\n"


def test_http_face_shares_the_caps(start_server: StartServer) -> None:
    """
    The HTTP face counts in the same caps as HALP/1: with
    ``--max-connections-per-host 4``, a host with three HALP/1 connections
    and one HTTP connection open gets ``503`` (with ``Retry-After``) on the
    next HTTP connection and ``error busy`` on the next HALP/1 one; another
    host is served on both.
    """
    server = start_server(
        *QUIET, "--http", "tcp:0:interface=127.0.0.1", "--max-connections-per-host", "4"
    )
    lines = [client_from(server, "127.0.0.2") for _ in range(3)]
    for client in lines:
        assert client.reply(b"hello\n").status == "ok"
    with connect_from(server, "127.0.0.2", server.http_port) as web:
        assert http_request(web, GET_HELLO)[0] == 200
        with connect_from(server, "127.0.0.2", server.http_port) as refused:
            code, headers, body = http_request(refused, GET_HELLO)
            assert code == 503, body
            assert headers["retry-after"] == "10"
            assert headers["connection"] == "close"
            assert json.loads(body) == {
                "error": "busy",
                "message": "too many connections from 127.0.0.2 (at most 4 at once); "
                "try again in 10 s",
            }
        with connect_from(server, "127.0.0.2") as sock:
            assert read_to_close(sock).startswith(b"error busy too many connections")
        with connect_from(server, "127.0.0.3", server.http_port) as sock:
            assert http_request(sock, GET_HELLO)[0] == 200
        with client_from(server, "127.0.0.3") as client:
            assert client.reply(b"hello\n").status == "ok"
    for client in lines:
        client.close()


def test_http_slow_headers_are_cut_off(start_server: StartServer) -> None:
    """
    An HTTP slowloris (headers one byte at a time, never idle) is answered
    ``408`` when ``--request-timeout`` (2 s) is up.

    Measured: answered 2.00 s after its first byte.
    """
    server = start_server(
        *QUIET, "--http", "tcp:0:interface=127.0.0.1", "--request-timeout", "2",
        "--idle-timeout", "3",
    )
    with connect_from(server, "127.0.0.2", server.http_port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/hello HTTP/1.1\r\n")
        answer = b""
        while not answer:
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                answer = read_to_close(sock)
            else:
                sock.sendall(b"X")
            assert time.monotonic() - started < 10, "never answered"
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert time.monotonic() - started >= 1.9


# -- 4. backpressure and request bodies (anchors test 16) ------------------------------------------


def test_pipeliner_that_never_reads_does_not_slow_others(
    start_server: StartServer,
) -> None:
    """
    One client pipelines 100,000 ``get`` requests (10 entries in each
    answer, 30 MB of answers in all) and never reads: the server reads only
    as many as its output buffers hold and leaves the rest in its socket's
    receive queue, its RSS grows by less than 20 MB, and a second client is
    served meanwhile; once both go away, the server's descriptors are back
    to the baseline.

    Measured: the server read 16,384 of the 100,000 requests (two 64 KiB
    reads; their answers, 4.9 MB, fill the socket buffers) and left the
    rest unread; RSS growth 172 KiB; the second client's p99 latency 46 to
    78 ms (largest 84 ms) over 500 requests, measured while the server
    still works through the requests it read, about 64 KiB of answers to
    the first client per turn of its event loop; 3 ms once it is done.
    """
    server = start_server(*QUIET)
    pid = pid_of(server)
    now = int(time.time())
    server.reply(
        b"insert big\n" + b"".join(b"%d 10.9.1.%d 7000\n" % (now, i) for i in range(1, 11)) + b"\n"
    )
    baseline_fds = settled_fds(server)
    before = rss_kib(pid)
    hog = connect_from(server, "127.0.0.2")
    try:
        requests = b"get big\n" * 100_000
        sent = send_until_blocked(hog, requests)
        grown = rss_kib(pid) - before
        assert grown < 20_000, f"server RSS grew by {grown} KiB"
        latencies = []
        with client_from(server, "127.0.0.3") as other:
            for _ in range(500):
                started = time.monotonic()
                reply = other.reply(b"get big\n")
                latencies.append(time.monotonic() - started)
                assert reply.status == "ok 10"
        assert p99(latencies) < 2.0, f"p99 {p99(latencies):.3f} s"
        grown = rss_kib(pid) - before
        assert grown < 20_000, f"server RSS grew by {grown} KiB"
        # What the server has not read waits in the socket queues.
        listening = ("127.0.0.1", server.port or 0)
        unsent, _ = tcp_queues(hog.getsockname(), listening)
        _, unread = tcp_queues(listening, hog.getsockname())
        read = (sent - unsent - unread) // len(b"get big\n")
        assert unread > 0 and read < 100_000, (sent, unsent, unread)
    finally:
        hog.close()
    back_to(server, baseline_fds)


def test_big_bodies_are_refused_without_a_temporary_file(start_server: StartServer) -> None:
    """
    A body announced as 10 MB is answered ``413`` as soon as its headers
    are in; a chunked body of unknown length is kept in memory while it
    comes (no temporary file among the server's descriptors) and answered
    ``413`` once it passes the limit (16 KiB).
    """
    server = start_server(*QUIET, "--http", "tcp:0:interface=127.0.0.1")
    pid = pid_of(server)
    with connect_from(server, "127.0.0.2", server.http_port) as sock:
        code, headers, body = http_request(
            sock,
            b"POST /v1/labels/big HTTP/1.1\r\nHost: halp\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n",
        )
        assert code == 413 and json.loads(body)["error"] == "too-large"
    with connect_from(server, "127.0.0.2", server.http_port) as sock:
        sock.sendall(
            b"POST /v1/labels/big HTTP/1.1\r\nHost: halp\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b" " * 0x1000 + b"\r\n"
        )
        # Once the chunk is read (the server logs nothing for it, so ask it
        # something on another connection and wait for that answer), the
        # request is open, its body in memory.
        assert server.reply(b"get a\n").status == "ok 0"
        spooled = [t for t in fd_targets(pid) if "(deleted)" in t or "/tmp" in t]
        assert spooled == [], spooled
        sock.sendall((b"1000\r\n" + b" " * 0x1000 + b"\r\n") * 4)
        answer = read_to_close(sock)
        assert answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), answer


# -- 5. descriptor exhaustion (anchors test 15) -------------------------------------------------


#: Runs a command with its limit on open files set to argv[1] (soft and hard).
_WITH_NOFILE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


class LimitedServer(HALPServer):
    """A server process whose limit on open files is ``nofile``."""

    def __init__(self, workdir: Path, nofile: int, args: Sequence[str]) -> None:
        super().__init__(workdir, "memory", args)
        self.nofile = nofile

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-c", _WITH_NOFILE, str(self.nofile), *super().command]


def test_running_out_of_descriptors(tmp_path: Path, server_processes: list[HALPServer]) -> None:
    """
    A server limited to 128 open files (which it warns about at start-up)
    gets 400 connections, more than it can hold: it accepts what it can,
    closes the rest at once (Twisted's reserved descriptor), does not
    crash, does not spin while they sit there, and serves again as soon as
    they are gone.

    Measured: 118 connections held, 282 closed at once; 0.00 s of CPU over
    3 s of sitting; served again 15 to 25 ms after the clients closed.
    """
    server = LimitedServer(
        tmp_path,
        128,
        ("--no-federation", "--no-request-log", "--max-connections-per-host", "0",
         "--idle-timeout", "30"),
    )
    server_processes.append(server)
    server.start()
    pid = pid_of(server)
    server.wait_for_lines(r"This process may open 128 files \(RLIMIT_NOFILE\)")
    sockets = []
    for i in range(400):
        sock = connect_from(server, f"127.0.2.{i % 200 + 1}")
        sock.sendall(b"hello\n")
        sockets.append(sock)
    # Each connection is answered or closed.
    held = closed = 0
    for sock in sockets:
        sock.settimeout(IO_TIMEOUT)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if data.startswith(b"protocol HALP/1"):
            held += 1
        else:
            closed += 1
    assert 50 < held < 128 and held + closed == 400, (held, closed)
    # Sitting there, the held connections cost no CPU: select on them for 3 s.
    cpu = cpu_seconds(pid)
    readable, _, _ = select.select(sockets, [], [], 3.0)
    used = cpu_seconds(pid) - cpu
    assert used < 1.5, f"{used:.2f} s of CPU in 3 s"
    assert server.process_status() is None, "the server died"
    for sock in sockets:
        sock.close()
    gone = time.monotonic()
    reply = eventually(lambda: _hello(server), server, timeout=10, step=0.05)
    assert reply == "ok"
    assert time.monotonic() - gone < 5
    assert "Traceback" not in server.run_output()


def _hello(server: HALPServer) -> str | None:
    try:
        with server.connect() as client:
            return client.reply(b"hello\n").status
    except (AssertionError, OSError):
        return None
