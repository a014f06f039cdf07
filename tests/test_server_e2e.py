"""
End-to-end tests of the HALP server: each test starts the real
``twistd --nodaemon halp`` and talks HALP/1 to it over TCP sockets.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.halpserver import TWISTD, HALPServer, Reply, StartServer, run_twistd

pytestmark = pytest.mark.e2e

#: The default TTL of a server, in seconds.
DAY = 86400


def insert_block(labels: str, *entries: str) -> bytes:
    """An ``insert`` request: header, entry lines, empty line."""
    return ("insert %s\n%s\n" % (labels, "".join(e + "\n" for e in entries))).encode("ascii")


def fields(reply: Reply) -> dict[str, str]:
    """The ``KEY VALUE`` lines of a ``hello`` answer."""
    return {key: value for key, _, value in (line.partition(" ") for line in reply.lines)}


# -- 1. inserting and reading back ----------------------------------------------


def test_insert_and_get(halp_server: HALPServer) -> None:
    """
    Entries come back newest first, as exact ``TIMESTAMP HOST PORT`` lines,
    with their hosts in canonical form, under each label they were put in.
    """
    now = int(time.time())
    with halp_server.connect() as c:
        reply = c.reply(
            insert_block(
                "myapp/v2 other",
                f"{now - 300} 198.51.100.7 6881",
                f"{now - 100} 2001:DB8:0::1 7000",
                f"{now - 200} Peer.Example.COM. 80",
            )
        )
        assert reply == Reply(
            [
                f"success: myapp/v2 {now - 300} 198.51.100.7 6881",
                f"success: myapp/v2 {now - 100} 2001:db8::1 7000",
                f"success: myapp/v2 {now - 200} peer.example.com 80",
                f"success: other {now - 300} 198.51.100.7 6881",
                f"success: other {now - 100} 2001:db8::1 7000",
                f"success: other {now - 200} peer.example.com 80",
            ],
            "ok 6 stored 0 failed",
        )
        expected = [
            f"{now - 100} 2001:db8::1 7000",
            f"{now - 200} peer.example.com 80",
            f"{now - 300} 198.51.100.7 6881",
        ]
        assert c.reply(b"get myapp/v2\n") == Reply(expected, "ok 3")
        assert c.reply(b"get other\n") == Reply(expected, "ok 3")
        # The same host on another port is another entry.
        assert c.request(insert_block("other", f"{now - 150} 198.51.100.7 6882")) == [
            f"success: other {now - 150} 198.51.100.7 6882",
            "ok 1 stored 0 failed",
        ]
        assert c.reply(b"get other\n").lines == [
            f"{now - 100} 2001:db8::1 7000",
            f"{now - 150} 198.51.100.7 6882",
            f"{now - 200} peer.example.com 80",
            f"{now - 300} 198.51.100.7 6881",
        ]
        # Labels are case-sensitive, and one nobody used is empty.
        assert c.reply(b"get MyApp/v2\n") == Reply([], "ok 0")
        assert c.reply(b"get myapp\n") == Reply([], "ok 0")


def test_future_times_are_clamped_to_now(halp_server: HALPServer) -> None:
    now = int(time.time())
    with halp_server.connect() as c:
        before = int(time.time())
        reply = c.reply(insert_block("clock", f"{now + 100000} 192.0.2.1 1", "99999999999 192.0.2.2 2"))
        after = int(time.time())
        assert reply.status == "ok 2 stored 0 failed"
        stored = []
        for line, host in zip(reply.lines, ["192.0.2.1 1", "192.0.2.2 2"]):
            word, label, ts, rest = line.split(" ", 3)
            assert (word, label, rest) == ("success:", "clock", host), reply
            assert before <= int(ts) <= after, f"{line!r} not clamped to [{before}, {after}]"
            stored.append(int(ts))
        got = c.reply(b"get clock\n")
        assert got.status == "ok 2"
        assert sorted(got.lines) == sorted(
            [f"{stored[0]} 192.0.2.1 1", f"{stored[1]} 192.0.2.2 2"]
        )
        # The server's own clock, as hello announces it, agrees.
        assert int(fields(c.reply(b"hello\n"))["time"]) >= max(stored)


def test_confirmed_time_only_moves_forward(halp_server: HALPServer) -> None:
    now = int(time.time())
    with halp_server.connect() as c:
        c.reply(insert_block("fwd", f"{now - 300} 192.0.2.1 10", f"{now - 200} 192.0.2.2 20"))
        # An older confirmation keeps the newer time, and says so.
        assert c.request(insert_block("fwd", f"{now - 500} 192.0.2.1 10")) == [
            f"success: fwd {now - 300} 192.0.2.1 10",
            "ok 1 stored 0 failed",
        ]
        assert c.reply(b"get fwd\n") == Reply(
            [f"{now - 200} 192.0.2.2 20", f"{now - 300} 192.0.2.1 10"], "ok 2"
        )
        # A newer one moves the entry up.
        assert c.request(insert_block("fwd", f"{now - 50} 192.0.2.1 10")) == [
            f"success: fwd {now - 50} 192.0.2.1 10",
            "ok 1 stored 0 failed",
        ]
        assert c.reply(b"get fwd\n") == Reply(
            [f"{now - 50} 192.0.2.1 10", f"{now - 200} 192.0.2.2 20"], "ok 2"
        )
        # The same host written differently is the same entry.
        assert c.request(insert_block("fwd", f"{now - 40} 2001:0DB8::0:1 5", f"{now - 30} 2001:db8::1 5")) == [
            f"success: fwd {now - 40} 2001:db8::1 5",
            f"success: fwd {now - 30} 2001:db8::1 5",
            "ok 2 stored 0 failed",
        ]
        assert c.reply(b"get fwd\n").lines == [
            f"{now - 30} 2001:db8::1 5",
            f"{now - 50} 192.0.2.1 10",
            f"{now - 200} 192.0.2.2 20",
        ]


def test_slices(halp_server: HALPServer) -> None:
    now = int(time.time())
    # Entry i was confirmed at now - 1000 + i: entry 14 is the newest.
    entries = [f"{now - 1000 + i} 10.0.0.{i} {1000 + i}" for i in range(15)]
    newest_first = entries[::-1]
    with halp_server.connect() as c:
        assert c.reply(insert_block("many", *entries)).status == "ok 15 stored 0 failed"
        assert c.reply(b"get many\n") == Reply(newest_first[:10], "ok 10")
        assert c.reply(b"get many[3:6]\n") == Reply(newest_first[3:6], "ok 3")
        assert c.reply(b"get many[:2]\n") == Reply(newest_first[:2], "ok 2")
        assert c.reply(b"get many[10:]\n") == Reply(newest_first[10:], "ok 5")
        assert c.reply(b"get many[13:100]\n") == Reply(newest_first[13:], "ok 2")
        assert c.reply(b"get many[:]\n") == Reply(newest_first, "ok 15")
        assert c.reply(b"get many[4:4]\n") == Reply([], "ok 0")
        assert c.reply(b"get many[20:30]\n") == Reply([], "ok 0")
        # A window wider than the maximum slice (100) is cut, and says so.
        assert c.reply(b"get many[0:500]\n") == Reply(newest_first, "ok 15 capped-at 100")


def test_label_listing(halp_server: HALPServer) -> None:
    now = int(time.time())
    with halp_server.connect() as c:
        for request in [
            insert_block("myapp/v1", f"{now - 400} 192.0.2.1 1"),
            insert_block("myapp/v2", f"{now - 300} 192.0.2.2 2"),
            insert_block("other", f"{now - 200} 192.0.2.3 3"),
            insert_block("deep/a/b", f"{now - 500} 192.0.2.4 4"),
            insert_block("deep/c", f"{now - 600} 192.0.2.5 5"),
        ]:
            assert c.reply(request).status == "ok 1 stored 0 failed"
        # Newest activity first; a parent's time is its subtree's newest.
        assert c.reply(b"get labels\n") == Reply(
            [f"{now - 200} other", f"{now - 300} myapp", f"{now - 500} deep"], "ok 3"
        )
        assert c.reply(b"get myapp/\n") == Reply([f"{now - 300} v2", f"{now - 400} v1"], "ok 2")
        # Sublabels are listed by their last segment.
        assert c.reply(b"get deep/\n") == Reply([f"{now - 500} a", f"{now - 600} c"], "ok 2")
        assert c.reply(b"get deep/a/\n") == Reply([f"{now - 500} b"], "ok 1")
        assert c.reply(b"get myapp/v2/\n") == Reply([], "ok 0")
        assert c.reply(b"get nothing/\n") == Reply([], "ok 0")
        assert c.reply(b"get labels[1:2]\n") == Reply([f"{now - 300} myapp"], "ok 1")
        # New activity in a sublabel moves its ancestors up.
        assert c.reply(insert_block("deep/c", f"{now - 10} 192.0.2.5 5")).status.startswith("ok 1 ")
        assert c.reply(b"get labels\n") == Reply(
            [f"{now - 10} deep", f"{now - 200} other", f"{now - 300} myapp"], "ok 3"
        )
        assert c.reply(b"get deep/\n") == Reply([f"{now - 10} c", f"{now - 500} a"], "ok 2")


# -- 2. pipelining -----------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(halp_server: HALPServer) -> None:
    now = int(time.time())
    pipeline = (
        b"hello\n"
        + insert_block("pipe", f"{now - 10} 192.0.2.1 1000")
        + b"get pipe\n"
        + b"bogus request\n"
        + b"get pipe[0:1]\r\n"
        + b"\n"  # blank lines between requests are ignored
        + insert_block("pipe", f"{now - 5} 192.0.2.2 1001")
        + b"get pipe\n"
        + b"get bad!label\n"
        + b"quit\n"
    )
    with halp_server.connect() as c:
        c.send(pipeline)
        hello = c.read_reply()
        assert hello.status == "ok"
        assert "protocol HALP/1" in hello.lines
        assert c.read_reply() == Reply([f"success: pipe {now - 10} 192.0.2.1 1000"], "ok 1 stored 0 failed")
        assert c.read_reply() == Reply([f"{now - 10} 192.0.2.1 1000"], "ok 1")
        bogus = c.read_reply()
        assert bogus.lines == [] and bogus.status.startswith("error unknown-command "), bogus
        assert c.read_reply() == Reply([f"{now - 10} 192.0.2.1 1000"], "ok 1")
        assert c.read_reply() == Reply([f"success: pipe {now - 5} 192.0.2.2 1001"], "ok 1 stored 0 failed")
        assert c.read_reply() == Reply([f"{now - 5} 192.0.2.2 1001", f"{now - 10} 192.0.2.1 1000"], "ok 2")
        bad = c.read_reply()
        assert bad.lines == [] and bad.status.startswith("error bad-label "), bad
        assert c.read_reply() == Reply([], "ok bye")
        assert c.read_until_close() == []


def test_a_thousand_pipelined_gets(halp_server: HALPServer) -> None:
    now = int(time.time())
    entries = [f"{now - i} 10.1.0.{i} {2000 + i}" for i in range(100)]  # newest first
    assert halp_server.reply(insert_block("seq", *entries)).status == "ok 100 stored 0 failed"
    with halp_server.connect() as c:
        c.send(b"".join(b"get seq[%d:%d]\n" % (i % 100, i % 100 + 1) for i in range(1000)))
        for i in range(1000):
            assert c.read_reply() == Reply([entries[i % 100]], "ok 1"), f"reply {i}"
        # Nothing more was sent, and the connection still works.
        assert c.reply(b"get seq[99:]\n") == Reply([entries[99]], "ok 1")


def test_pipeline_of_get_then_many_synchronous_requests(start_server: StartServer) -> None:
    # A short idle timeout turns the stall into a prompt close.
    server = start_server("--idle-timeout", "3")
    with server.connect() as c:
        c.send(b"get seq\n" + b"hello\n" * 100 + b"nonsense\n" * 100 + b"get seq\n")
        assert c.read_reply() == Reply([], "ok 0")
        for i in range(100):
            assert c.read_reply().status == "ok", f"hello {i}"
        for i in range(100):
            assert c.read_reply().status.startswith("error unknown-command "), f"nonsense {i}"
        assert c.read_reply() == Reply([], "ok 0")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_peer_that_never_reads_holds_bounded_memory(start_server: StartServer) -> None:
    """
    A peer pipelines requests with big answers and reads nothing: the server
    stops answering and reading, instead of buffering every answer.
    """
    server = start_server("--store", "memory", "--no-request-log")
    assert server.process is not None
    now = int(time.time())
    server.reply(insert_block("big", *(f"{now} 10.9.0.{i} {1000 + i}" for i in range(1, 101))))
    before = _rss_kib(server.process.pid)
    request = b"get big[0:100]\n" * 1000  # about 300 times as many bytes come back
    sent = checked = 0
    limit = 64_000_000  # well above what the kernel's socket buffers hold
    with socket.create_connection(("127.0.0.1", server.port or 0)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.setblocking(False)
        while sent < limit:
            try:
                sent += sock.send(request)
            except BlockingIOError:
                # The server has stopped reading once this stays unwritable.
                _, writable, _ = select.select([], [sock], [], 2.0)
                if not writable:
                    break
            if sent - checked > 1_000_000:
                checked = sent
                grown = _rss_kib(server.process.pid) - before
                assert grown < 30_000, f"server RSS grew by {grown} KiB for {sent} bytes sent"
        grown = _rss_kib(server.process.pid) - before
        assert sent < limit, "the server kept reading from a peer that reads nothing"
        assert grown < 30_000, f"server RSS grew by {grown} KiB for {sent} bytes of requests"
        # Meanwhile, other peers are served.
        assert server.reply(b"get big[0:1]\n").status == "ok 1"


# -- 3. libhalp clients ------------------------------------------------------------


def test_libhalp_get_without_newline(halp_server: HALPServer) -> None:
    now = int(time.time())
    halp_server.reply(insert_block("lib", f"{now - 2} 192.0.2.1 1", f"{now - 1} 192.0.2.2 2"))
    with halp_server.connect() as c:
        c.send(b"get lib")
        # Data lines only, no status line, then the server closes.
        assert c.read_until_close() == [f"{now - 1} 192.0.2.2 2", f"{now - 2} 192.0.2.1 1"]


def test_libhalp_insert_without_newline(halp_server: HALPServer) -> None:
    now = int(time.time())
    with halp_server.connect() as c:
        c.send(b"insert lib2 lib3\n%d 203.0.113.9 4000" % (now - 5))
        assert c.read_until_close() == [
            f"success: lib2 {now - 5} 203.0.113.9 4000",
            f"success: lib3 {now - 5} 203.0.113.9 4000",
        ]
    assert halp_server.reply(b"get lib2\n") == Reply([f"{now - 5} 203.0.113.9 4000"], "ok 1")
    assert halp_server.reply(b"get lib3\n") == Reply([f"{now - 5} 203.0.113.9 4000"], "ok 1")


def test_libhalp_get_then_half_close(halp_server: HALPServer) -> None:
    now = int(time.time())
    halp_server.reply(insert_block("lib", f"{now - 3} 192.0.2.3 3"))
    with halp_server.connect() as c:
        c.send(b"get lib")
        c.shutdown_write()
        assert c.read_until_close() == [f"{now - 3} 192.0.2.3 3"]


def test_libhalp_request_with_an_error_gets_the_error_line(halp_server: HALPServer) -> None:
    with halp_server.connect() as c:
        c.send(b"get bad!label")
        (line,) = c.read_until_close()
        assert line.startswith("error bad-label ")


def test_complete_request_then_half_close_gets_status(halp_server: HALPServer) -> None:
    now = int(time.time())
    halp_server.reply(insert_block("lib", f"{now - 3} 192.0.2.3 3"))
    with halp_server.connect() as c:
        c.send(b"get lib\n")
        c.shutdown_write()
        assert c.read_until_close() == [f"{now - 3} 192.0.2.3 3", "ok 1"]
    with halp_server.connect() as c:
        c.send(b"get lib\nget nothing\nhello")
        c.shutdown_write()
        lines = c.read_until_close()
        assert lines[:4] == [f"{now - 3} 192.0.2.3 3", "ok 1", "ok 0", "protocol HALP/1"]
        assert lines[-1] == "ok"


# -- 4. malformed requests ------------------------------------------------------------

MALFORMED = [
    pytest.param(b"get bad!label\n", "bad-label", id="bad-label"),
    pytest.param(b"get labels/x\n", "bad-label", id="reserved-label"),
    pytest.param(b"get labels/\n", "bad-label", id="reserved-parent"),
    pytest.param(b"get a//b\n", "bad-label", id="empty-segment"),
    pytest.param(b"get ..\n", "bad-label", id="dots-only"),
    pytest.param(b"get " + b"x" * 65 + b"\n", "bad-label", id="long-segment"),
    pytest.param(b"get a[5:2]\n", "bad-range", id="backwards-range"),
    pytest.param(b"get a[1:2]x\n", "bad-range", id="junk-after-range"),
    pytest.param(b"get a[1234567890:]\n", "bad-range", id="huge-range"),
    pytest.param(b"frobnicate now\n", "unknown-command", id="unknown-command"),
    pytest.param(b"GET a\n", "unknown-command", id="upper-case-command"),
    pytest.param(b"get\n", "bad-request", id="get-no-argument"),
    pytest.param(b"get a b\n", "bad-request", id="get-two-arguments"),
    pytest.param(b"quit now\n", "bad-request", id="quit-argument"),
    pytest.param(b"get caf\xc3\xa9\n", "bad-label", id="non-ascii-label"),
    pytest.param(b"\xff\xfe\x00\n", "unknown-command", id="non-ascii-command"),
    pytest.param(b"insert bad!label\n%d 192.0.2.1 1\n\n", "bad-label", id="insert-bad-label"),
    pytest.param(b"insert\n%d 192.0.2.1 1\nget x\n\n", "bad-request", id="insert-no-label"),
    pytest.param(
        b"insert " + b" ".join(b"l%d" % i for i in range(17)) + b"\n%d 192.0.2.1 1\n\n",
        "too-many-labels",
        id="insert-17-labels",
    ),
    pytest.param(
        b"insert crowd\n" + b"".join(b"%%d 10.2.0.%d 1\n" % i for i in range(101)) + b"\n",
        "too-many-entries",
        id="insert-101-entries",
    ),
]


@pytest.mark.parametrize(("request_bytes", "code"), MALFORMED)
def test_malformed_request_keeps_connection_usable(
    halp_server: HALPServer, request_bytes: bytes, code: str
) -> None:
    now = int(time.time())
    known = Reply([f"{now} 192.0.2.99 9"], "ok 1")
    with halp_server.connect() as c:
        c.reply(insert_block("known", f"{now} 192.0.2.99 9"))
        # Entry lines of a refused insert are consumed with it, not taken
        # for commands: the next answer is the get's.
        request = request_bytes.replace(b"%d", b"%d" % now)
        error, after = c.replies(request + b"get known\n", 2)
        assert error.lines == [], error
        assert error.status.startswith(f"error {code} "), error
        assert len(error.status) > len(f"error {code} "), "no message"
        assert after == known
        # Nothing of a refused insert was stored.
        assert c.reply(b"get labels\n") == Reply([f"{now} known"], "ok 1")


def test_bad_entry_lines_are_refused_one_by_one(halp_server: HALPServer) -> None:
    now = int(time.time())
    old = now - 2 * DAY
    bad = [
        (f"{now} 192.0.2.1 0", "bad port"),
        (f"{now} 192.0.2.1 70000", "bad port"),
        (f"{now} 192.0.2.1 http", "bad port"),
        ("abc 192.0.2.1 1", "bad timestamp"),
        ("-5 192.0.2.1 1", "bad timestamp"),
        ("1.5 192.0.2.1 1", "bad timestamp"),
        (f"{now} 999.1.1.1 1", "bad host"),
        (f"{now} a..b 1", "bad host"),
        (f"{now} [2001:db8::1] 1", "bad host"),
        (f"{now} host.123 1", "bad host"),
        (f"{now} 192.0.2.1", "expected 3 fields"),
        (f"{now} 192.0.2.1 1 extra", "expected 3 fields"),
    ]
    lines = [entry for entry, _ in bad]
    request = insert_block("vals", *lines, f"{old} 192.0.2.7 7", f"{now} 192.0.2.50 50")
    # A non-ASCII entry line is refused too, and echoed as printable ASCII.
    request = request.replace(b"\n\n", b"\n%d caf\xc3\xa9.example 1\n\n" % now)
    with halp_server.connect() as c:
        reply = c.reply(request)
        assert reply.status == "ok 1 stored 14 failed", reply
        assert len(reply.lines) == 15, reply
        for line, (entry, reason) in zip(reply.lines, bad):
            assert line.startswith(f"failure: vals {entry} ; "), (line, entry)
            assert reason in line.partition(" ; ")[2], (line, reason)
        assert reply.lines[12].startswith(f"failure: vals {old} 192.0.2.7 7 ; expired"), reply
        assert reply.lines[13] == f"success: vals {now} 192.0.2.50 50", reply
        assert reply.lines[14].startswith(f"failure: vals {now} caf\\xc3\\xa9.example 1 ; "), reply
        assert c.reply(b"get vals\n") == Reply([f"{now} 192.0.2.50 50"], "ok 1")


def test_overlong_line_without_newline_closes_only_that_connection(
    halp_server: HALPServer,
) -> None:
    with halp_server.connect() as c:
        c.send(b"x" * 5000)
        (line,) = c.read_until_close()
        assert line.startswith("error line-too-long "), line
    assert halp_server.reply(b"get known\n") == Reply([], "ok 0")


def test_overlong_line_after_requests(halp_server: HALPServer) -> None:
    now = int(time.time())
    halp_server.reply(insert_block("known", f"{now} 192.0.2.99 9"))
    with halp_server.connect() as c:
        # The request before the long line is answered; the one after is not.
        c.send(b"get known\n" + b"get " + b"y" * 2000 + b"\nget known\n")
        lines = c.read_until_close()
        assert lines[:2] == [f"{now} 192.0.2.99 9", "ok 1"], lines
        assert len(lines) == 3 and lines[2].startswith("error line-too-long "), lines
    with halp_server.connect() as c:
        # An overlong entry line inside an insert block.
        c.send(b"insert known\n%d 192.0.2.1 1%s\n\n" % (now, b" " * 1100))
        (line,) = c.read_until_close()
        assert line.startswith("error line-too-long "), line
    assert halp_server.reply(b"get known\n") == Reply([f"{now} 192.0.2.99 9"], "ok 1")


def test_longest_line_is_accepted(halp_server: HALPServer) -> None:
    now = int(time.time())
    max_line = int(fields(halp_server.reply(b"hello\n"))["max-line"])
    entry = b"%d 192.0.2.1 1" % now
    longest = entry + b" " * (max_line - len(entry))
    assert len(longest) == max_line
    with halp_server.connect() as c:
        assert c.request(b"insert long\n" + longest + b"\r\n\n") == [
            f"success: long {now} 192.0.2.1 1",
            "ok 1 stored 0 failed",
        ]
        assert c.request(b"insert long\n" + longest + b"\n\n") == [
            f"success: long {now} 192.0.2.1 1",
            "ok 1 stored 0 failed",
        ]


def test_line_one_byte_too_long_is_refused(halp_server: HALPServer) -> None:
    now = int(time.time())
    entry = b"%d 192.0.2.1 1" % now
    too_long = entry + b" " * (1025 - len(entry))
    with halp_server.connect() as c:
        reply = c.reply(b"insert long\n" + too_long + b"\n\n")
        assert reply.lines == [] and reply.status.startswith("error line-too-long "), reply
        assert c.read_until_close() == []


# -- 5. persistence -------------------------------------------------------------------


def test_entries_survive_a_restart(halp_server: HALPServer) -> None:
    now = int(time.time())
    assert halp_server.reply(
        insert_block("keep/a keep/b", f"{now - 1} 192.0.2.1 1", f"{now - 2} keep.example 2")
    ).status == "ok 4 stored 0 failed"
    expected = Reply([f"{now - 1} 192.0.2.1 1", f"{now - 2} keep.example 2"], "ok 2")
    assert halp_server.reply(b"get keep/a\n") == expected
    halp_server.restart()
    assert halp_server.reply(b"get keep/a\n") == expected
    assert halp_server.reply(b"get keep/b\n") == expected
    assert halp_server.reply(b"get labels\n") == Reply([f"{now - 1} keep"], "ok 1")
    assert halp_server.reply(b"get keep/\n") == Reply([f"{now - 1} a", f"{now - 1} b"], "ok 2")


def test_acknowledged_inserts_survive_kill_9(halp_server: HALPServer) -> None:
    now = int(time.time())
    count = 200
    entries = [f"{now - i} 10.3.{i // 256}.{i % 256} {3000 + i}" for i in range(count)]
    with halp_server.connect() as c:
        c.send(b"".join(insert_block("crash", e) for e in entries))
        for entry in entries:
            assert c.read_reply() == Reply([f"success: crash {entry}"], "ok 1 stored 0 failed")
        # Right after the last acknowledgement.
        assert halp_server.kill() == -9
    halp_server.start()
    got = halp_server.request(b"get crash[0:100]\nget crash[100:200]\nget crash[200:]\n", 3)
    assert got == entries[:100] + ["ok 100"] + entries[100:] + ["ok 100", "ok 0"]


# -- 6. README ----------------------------------------------------------------------


def test_readme_session(start_server: StartServer) -> None:
    """README.md's Quick start, one connection per ``nc`` run, on a server
    with ``make run``'s options."""
    halp_server = start_server("--allow-private", "--verify", "none", public=True)
    now = int(time.time())
    assert halp_server.request(b"insert myapp/v2\n%d 198.51.100.7 6881\n\n" % now) == [
        f"success: myapp/v2 {now} 198.51.100.7 6881",
        "ok 1 stored 0 failed",
    ]
    assert halp_server.request(b"get myapp/v2\n") == [f"{now} 198.51.100.7 6881", "ok 1"]
    # printf 'get labels\n' | nc -q1 127.0.0.1 7100
    with halp_server.connect() as c:
        c.send(b"get labels\n")
        assert c.read_reply() == Reply([f"{now} myapp"], "ok 1")
    # And as a client that half-closes after its request.
    with halp_server.connect() as c:
        c.send(b"get labels\n")
        c.shutdown_write()
        assert c.read_until_close() == [f"{now} myapp", "ok 1"]


def test_hello_and_quit(halp_server: HALPServer) -> None:
    with halp_server.connect() as c:
        hello = c.reply(b"hello\n")
        assert hello.status == "ok"
        announced = fields(hello)
        assert announced["protocol"] == "HALP/1"
        assert announced["max-line"] == "1024"
        assert announced["max-entries"] == "1000"
        assert announced["ttl"] == "86400"
        assert abs(int(announced["time"]) - int(time.time())) < DAY
        assert c.reply(b"quit\n") == Reply([], "ok bye")
        assert c.read_until_close() == []


# -- 7. options -----------------------------------------------------------------------

BAD_OPTIONS = [
    pytest.param(["--max-entries", "nope"], "nope", id="max-entries"),
    pytest.param(["--store", "bogus:x"], "bogus:x", id="store"),
    pytest.param(["--port", "notanendpoint"], "notanendpoint", id="port"),
    pytest.param(["--ttl", "0"], "'0'", id="ttl"),
    pytest.param(["--idle-timeout", "-1"], "-1", id="idle-timeout"),
    pytest.param(["--store", "sqlite:x.sqlite3?synchronous=off"], "synchronous", id="store-option"),
]


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize(("args", "value"), BAD_OPTIONS)
def test_bad_option_exits_cleanly(tmp_path: Path, args: list[str], value: str) -> None:
    result = run_twistd(args, tmp_path)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    assert "listening" not in result.stdout, result.stdout
    assert value in _last_line(result.stdout), result.stdout
    assert list(tmp_path.iterdir()) == [], "a refused start left files behind"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--max-entries", "nope"], id="max-entries"),
        pytest.param(["--ttl", "0"], id="ttl"),
        pytest.param(["--idle-timeout", "0"], id="idle-timeout"),
        pytest.param(["--purge-interval", "0"], id="purge-interval"),
        pytest.param(["--store", "bogus:x"], id="store"),
        pytest.param(["--port", "notanendpoint"], id="port"),
    ],
)
def test_bad_option_message_names_the_option(tmp_path: Path, args: list[str]) -> None:
    result = run_twistd(args, tmp_path)
    assert result.returncode != 0, result.stdout
    assert args[0] in _last_line(result.stdout), result.stdout


def test_memory_store(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(store="memory")
    assert "serving from the memory store" in server.run_output()
    now = int(time.time())
    assert server.reply(insert_block("mem", f"{now} 192.0.2.1 1")).status == "ok 1 stored 0 failed"
    assert server.reply(b"get mem\n") == Reply([f"{now} 192.0.2.1 1"], "ok 1")
    server.restart()
    assert server.reply(b"get mem\n") == Reply([], "ok 0")
    assert list(tmp_path.iterdir()) == [], "the memory store wrote files"


# -- 8. foreign databases -------------------------------------------------------------


def _foreign_database(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (42)")
        db.commit()
    finally:
        db.close()


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _foreign_database(path)
    result = run_twistd(["--store", f"sqlite:{path}"], tmp_path)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    # The store is opened after twistd changed directory and dropped
    # privileges, which is after the listeners bound their ports.
    last = _last_line(result.stdout)
    assert "--store" in last and str(path) in last and "not a HALP" in last, result.stdout
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
        assert db.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        db.close()


def test_relative_store_path_is_relative_to_rundir(tmp_path: Path) -> None:
    launch, run = tmp_path / "launch", tmp_path / "run"
    launch.mkdir()
    run.mkdir()
    _foreign_database(run / "h.sqlite3")
    result = subprocess.run(
        [TWISTD, "--nodaemon", "--pidfile=", f"--rundir={run}", "halp",
         "--port", "tcp:0:interface=127.0.0.1", "--store", "sqlite:h.sqlite3"],
        cwd=launch, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=60,
    )
    assert result.returncode != 0, result.stdout
    assert "not a HALP" in _last_line(result.stdout), result.stdout
    assert list(launch.iterdir()) == [], "the check must not create a file where twistd started"


def test_foreign_sqlite_file_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    _foreign_database(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = run_twistd(["--store", f"sqlite:{path}"], tmp_path)
    assert result.returncode != 0, result.stdout
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        db.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
