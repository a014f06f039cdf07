"""
Tests for :mod:`halp.server`: the line protocol and its factory, in memory
(``StringTransport`` and a ``Clock``; no sockets, no waiting).
"""

from __future__ import annotations

from typing import Any, Sequence, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from halp.connlimit import ConnectionLimiter, Refusal, host_key
from halp.core import REPLICATION_SKEW, HALPCore, PeerStatus
from halp.error import StoreError
from halp.model import Change, Entry, LabelInfo, Limits, Merged
from halp.server import HALPServerFactory, HALPServerProtocol, describe_address
from halp.stats import COUNTERS
from halp.store.memory import MemoryStore
from halp.testing import StaticPeers, connect
from halp.wire import ChangesStatus, parse_changes_status, parse_status

NOW = 1_800_000_000


class HeldStore(MemoryStore):
    """A memory store whose answers wait until :meth:`release`."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.waiting: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def _maybe_hold(self, d: Deferred[Any]) -> Deferred[Any]:
        if not self.hold:
            return d
        later: Deferred[Any] = Deferred()
        self.waiting.append((d, later))
        return later

    def get(self, label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        return self._maybe_hold(super().get(label, start, stop, since))

    def merge(
        self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        return self._maybe_hold(super().merge(changes, max_entries, max_per_group))

    def release_one(self) -> None:
        d, later = self.waiting.pop(0)
        d.chainDeferred(later)


class ServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = HeldStore()
        self.core = HALPCore(self.store, self.clock, Limits(max_line=100))
        self.factory = HALPServerFactory(self.core, self.clock, idle_timeout=60, compat_window=0.3)
        self.proto, self.transport = self.connect()

    def connect(self) -> tuple[HALPServerProtocol, StringTransport]:
        return connect(self.factory)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def lines(self) -> list[bytes]:
        value: bytes = self.transport.value()
        self.transport.clear()
        return value.splitlines()


class RequestTests(ServerTestCase):
    def test_insert_then_get(self) -> None:
        self.send(b"insert a b\n%d 198.51.100.7 6881\n%d Example.com 80\n\n" % (NOW - 1, NOW + 99))
        self.assertEqual(
            self.lines(),
            [
                b"success: a %d 198.51.100.7 6881" % (NOW - 1),
                b"success: a %d example.com 80" % NOW,
                b"success: b %d 198.51.100.7 6881" % (NOW - 1),
                b"success: b %d example.com 80" % NOW,
                b"ok 4 stored 0 failed",
            ],
        )
        self.send(b"get a\r\n")
        self.assertEqual(
            self.lines(),
            [b"%d example.com 80" % NOW, b"%d 198.51.100.7 6881" % (NOW - 1), b"ok 2"],
        )

    def test_insert_failures_keep_libhalp_shape_with_reason(self) -> None:
        self.send(b"insert a\n%d h 0\n5 h 1\n\n" % NOW)
        self.assertEqual(
            self.lines(),
            [
                b"failure: a %d h 0 ; bad port: expected 1-65535" % NOW,
                b"failure: a 5 h 1 ; expired: confirmed more than 86400 s ago",
                b"ok 0 stored 2 failed",
            ],
        )

    def test_labels_and_sublabels(self) -> None:
        self.send(b"insert app/v1 app/v2 bt\n%d h 1\n\n" % NOW)
        self.lines()
        self.send(b"get labels\nget app/\nget app/v1/\n")
        self.assertEqual(
            self.lines(),
            [b"%d app" % NOW, b"%d bt" % NOW, b"ok 2", b"%d v1" % NOW, b"%d v2" % NOW, b"ok 2", b"ok 0"],
        )

    def test_capped_slice(self) -> None:
        self.send(b"get a[0:500]\nget a[0:100]\n")
        self.assertEqual(self.lines(), [b"ok 0 capped-at 100", b"ok 0"])

    def test_hello(self) -> None:
        self.send(b"hello\n")
        lines = self.lines()
        self.assertEqual(lines[0], b"protocol HALP/1")
        self.assertIn(b"max-line 100", lines)
        self.assertIn(b"time %d" % NOW, lines)
        self.assertEqual(lines[-1], b"ok")

    def test_errors_keep_the_connection_usable(self) -> None:
        self.send(b"bogus\nget bad!label\nget a[5:2]\nget\nget ok\n")
        lines = self.lines()
        self.assertEqual(
            [line.split(b" ")[:2] for line in lines],
            [
                [b"error", b"unknown-command"],
                [b"error", b"bad-label"],
                [b"error", b"bad-range"],
                [b"error", b"bad-request"],
                [b"ok", b"0"],
            ],
        )
        self.assertFalse(self.transport.disconnecting)

    def test_quit(self) -> None:
        self.send(b"quit\nget a\n")
        self.assertEqual(self.lines(), [b"ok bye"])
        self.assertTrue(self.transport.disconnecting)

    def test_store_failure_is_unavailable(self) -> None:
        self.store.get = lambda *a: fail(StoreError("disk gone"))  # type: ignore[method-assign]
        self.send(b"get a\n")
        self.assertEqual(self.lines(), [b"error unavailable store unavailable, try again later"])

    def test_unexpected_failure_is_internal_and_logged(self) -> None:
        self.store.get = lambda *a: fail(ZeroDivisionError("bug"))  # type: ignore[method-assign]
        self.send(b"get a\nget a\n")
        self.assertEqual(self.lines(), [b"error internal internal server error"] * 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_every_request_is_logged(self) -> None:
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.send(b"get a\nbogus\n")
        logged = [(e["request"], e["status"]) for e in events if "request" in e]
        self.assertEqual(
            logged,
            [
                ("get a", "ok 0"),
                ("(malformed request)", "error unknown-command unknown command 'bogus'; "
                 "known: get, insert, hello, quit, changes, push, stats, peers"),
            ],
        )
        self.assertTrue(all(e["peer"] == "192.168.1.1:54321" for e in events if "request" in e))

    def test_request_log_can_be_turned_off(self) -> None:
        self.factory.log_requests = False
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.send(b"get a\nbogus\n")
        self.proto.connectionLost()
        self.assertEqual([e for e in events if "request" in e], [])
        self.assertEqual([e["log_format"] for e in events], ["{peer} disconnected"])


class PipelineTests(ServerTestCase):
    def test_answers_in_order_while_the_store_is_slow(self) -> None:
        self.store.hold = True
        self.send(b"insert a\n%d h 1\n\nbogus\nget a\nhello\n" % NOW)
        self.assertEqual(self.transport.value(), b"")
        self.store.release_one()
        self.assertEqual(self.lines(), [b"success: a %d h 1" % NOW, b"ok 1 stored 0 failed", b"error unknown-command unknown command 'bogus'; known: get, insert, hello, quit, changes, push, stats, peers"])
        self.store.release_one()
        lines = self.lines()
        self.assertEqual(lines[:2], [b"%d h 1" % NOW, b"ok 1"])
        self.assertEqual(lines[2], b"protocol HALP/1")

    def test_one_request_at_a_time(self) -> None:
        self.store.hold = True
        self.send(b"get a\nget b\nget c\n")
        self.assertEqual(len(self.store.waiting), 1)
        self.store.release_one()
        self.assertEqual(len(self.store.waiting), 1)

    def test_stops_reading_when_too_many_requests_wait(self) -> None:
        self.store.hold = True
        limit = HALPServerProtocol.MAX_QUEUED
        self.send(b"get a\n" * (limit + 50))
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(len(self.proto._queue), limit + 1)
        while self.store.waiting:
            self.store.release_one()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.lines().count(b"ok 0"), limit + 50)

    def test_answers_synchronous_requests_past_the_queue_limit(self) -> None:
        """Requests answered at once never leave the connection paused."""
        self.store.hold = True
        self.send(b"get a\n" + b"hello\n" * 1000 + b"bogus\n" * 1000)
        self.assertEqual(self.transport.producerState, "paused")
        self.store.release_one()
        lines = self.lines()
        self.assertEqual(lines.count(b"protocol HALP/1"), 1000)
        self.assertEqual(lines.count(b"ok"), 1000)
        self.assertEqual(sum(line.startswith(b"error unknown-command") for line in lines), 1000)
        self.assertEqual(self.transport.producerState, "producing")

    def test_many_pipelined_requests(self) -> None:
        self.send(b"insert a\n%d h 1\n\n" % NOW + b"get a\n" * 1000)
        lines = self.lines()
        self.assertEqual(lines.count(b"ok 1"), 1000)
        self.assertEqual(lines.count(b"%d h 1" % NOW), 1000)


class BackpressureTests(ServerTestCase):
    """A peer that does not read cannot make the server buffer without bound."""

    def test_registered_as_streaming_producer(self) -> None:
        self.assertIs(self.transport.producer, self.proto)
        self.assertTrue(self.transport.streaming)

    def test_full_output_stops_answers_and_reading(self) -> None:
        self.proto.pauseProducing()  # as the transport does when its buffer is full
        self.assertEqual(self.transport.producerState, "paused")
        self.send(b"hello\n" * 3)
        self.assertEqual(self.transport.value(), b"")
        self.proto.resumeProducing()
        self.assertEqual(self.lines().count(b"ok"), 3)
        self.assertEqual(self.transport.producerState, "producing")

    def test_queue_is_bounded_while_output_is_full(self) -> None:
        self.proto.pauseProducing()
        self.send(b"get a\n" * 10000)
        # LineReceiver holds the rest of what was read; the queue is bounded.
        self.assertLessEqual(len(self.proto._queue), HALPServerProtocol.MAX_QUEUED + 1)
        self.assertEqual(self.transport.value(), b"")
        self.proto.resumeProducing()
        self.assertEqual(self.lines().count(b"ok 0"), 10000)

    def test_resume_from_the_transport_does_not_read_past_a_full_queue(self) -> None:
        self.store.hold = True
        self.send(b"get a\n" * (HALPServerProtocol.MAX_QUEUED + 10))
        self.assertTrue(self.proto._paused)
        self.proto.pauseProducing()
        self.proto.resumeProducing()
        self.assertTrue(self.proto._paused)
        self.assertEqual(self.transport.producerState, "paused")

    def test_idle_peer_that_does_not_read_is_closed_then_aborted(self) -> None:
        self.proto.pauseProducing()
        self.send(b"get a\n" * 100)
        self.clock.advance(60)
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNone(self.transport.producer)
        self.clock.advance(15)
        self.assertTrue(self.transport.disconnected)

    def test_close_unregisters_the_producer(self) -> None:
        self.send(b"quit\n")
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)


class LineLengthTests(ServerTestCase):
    def test_overlong_line_without_newline(self) -> None:
        self.send(b"get a\n" + b"x" * 500)
        self.assertEqual(
            self.lines(), [b"ok 0", b"error line-too-long request lines are at most 100 bytes"]
        )
        self.assertTrue(self.transport.disconnecting)

    def test_overlong_complete_line(self) -> None:
        self.send(b"get " + b"x" * 200 + b"\nget a\n")
        self.assertEqual(self.lines(), [b"error line-too-long request lines are at most 100 bytes"])
        self.assertTrue(self.transport.disconnecting)
        self.send(b"get a\n")
        self.assertEqual(self.lines(), [])

    def test_one_byte_too_long_with_bare_lf(self) -> None:
        label = b"a" * 60 + b"/" + b"b" * (101 - len(b"get ") - 61)
        self.send(b"get " + label + b"\n")
        self.assertEqual(self.lines(), [b"error line-too-long request lines are at most 100 bytes"])

    def test_nothing_after_an_overlong_line_is_acted_on_at_half_close(self) -> None:
        # 101 bytes: over max-line, not yet over LineReceiver's MAX_LENGTH.
        self.send(b"get a\ninsert a\n%d h 1\n" % NOW + b"x" * 101)
        self.proto.readConnectionLost()
        self.assertEqual(
            self.lines(), [b"ok 0", b"error line-too-long request lines are at most 100 bytes"]
        )
        self.assertEqual(self.successResultOf(self.store.get("a", 0, 10, 0)), [])

    def test_nothing_after_an_overlong_line_is_acted_on_in_libhalp_mode(self) -> None:
        self.send(b"insert a\n%d h 1\n" % NOW + b"x" * 101)
        self.clock.advance(0.3)
        self.assertEqual(self.lines(), [b"error line-too-long request lines are at most 100 bytes"])
        self.assertEqual(self.successResultOf(self.store.get("a", 0, 10, 0)), [])

    def test_longest_line_with_crlf_is_fine(self) -> None:
        label = b"a" * 60 + b"/" + b"b" * (100 - len(b"get ") - 61)
        self.send(b"get " + label + b"\r\n")
        self.assertEqual(self.lines(), [b"ok 0"])


class TimeoutTests(ServerTestCase):
    def test_idle_connection_is_closed(self) -> None:
        self.clock.advance(59)
        self.send(b"get a\n")
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_closing_peer_that_does_not_read_is_aborted(self) -> None:
        self.clock.advance(60)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(self.factory.abort_timeout)
        self.assertTrue(self.transport.disconnected)

    def test_close_is_idempotent(self) -> None:
        self.send(b"quit\n")
        self.assertTrue(self.transport.disconnecting)
        self.clock.advance(60)
        self.assertEqual(len(self.clock.getDelayedCalls()), 0)
        self.assertTrue(self.transport.disconnected)

    def test_no_idle_close_while_a_request_is_in_flight(self) -> None:
        self.store.hold = True
        self.send(b"get a\n")
        self.clock.advance(120)
        self.assertFalse(self.transport.disconnecting)
        self.store.release_one()
        self.assertEqual(self.lines(), [b"ok 0"])
        self.clock.advance(60)
        self.assertTrue(self.transport.disconnecting)

    def test_timers_are_cancelled_on_disconnect(self) -> None:
        self.send(b"get a")
        self.proto.connectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LibhalpTests(ServerTestCase):
    """The 2011 libhalp client sends one unterminated request and reads until close."""

    def setUp(self) -> None:
        super().setUp()
        self.send(b"insert bt\n%d 198.51.100.7 6881\n\n" % NOW)
        self.proto, self.transport = self.connect()

    def test_unterminated_get_then_quiet(self) -> None:
        self.send(b"get bt")
        self.clock.advance(0.29)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.01)
        self.assertEqual(self.lines(), [b"%d 198.51.100.7 6881" % NOW])
        self.assertTrue(self.transport.disconnecting)

    def test_unterminated_get_in_pieces(self) -> None:
        self.send(b"ge")
        self.clock.advance(0.2)
        self.send(b"t bt")
        self.clock.advance(0.2)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.1)
        self.assertEqual(self.lines(), [b"%d 198.51.100.7 6881" % NOW])

    def test_unterminated_insert(self) -> None:
        self.send(b"insert x\n%d h 1" % NOW)
        self.clock.advance(0.3)
        self.assertEqual(self.lines(), [b"success: x %d h 1" % NOW])
        self.assertTrue(self.transport.disconnecting)
        self.proto, self.transport = self.connect()
        self.send(b"get x\n")
        self.assertEqual(self.lines(), [b"%d h 1" % NOW, b"ok 1"])

    def test_unterminated_error_still_says_what_is_wrong(self) -> None:
        self.send(b"get bad!")
        self.clock.advance(0.3)
        (line,) = self.lines()
        self.assertTrue(line.startswith(b"error bad-label "))
        self.assertTrue(self.transport.disconnecting)

    def test_half_close(self) -> None:
        self.send(b"get bt")
        self.proto.readConnectionLost()
        self.assertEqual(self.lines(), [b"%d 198.51.100.7 6881" % NOW])
        self.assertTrue(self.transport.disconnecting)

    def test_half_close_after_complete_request_is_normal(self) -> None:
        self.send(b"get bt\n")
        self.proto.readConnectionLost()
        self.assertEqual(self.lines(), [b"%d 198.51.100.7 6881" % NOW, b"ok 1"])
        self.assertTrue(self.transport.disconnecting)

    def test_half_close_with_later_unterminated_request_is_normal(self) -> None:
        self.send(b"get bt\nget bt")
        self.proto.readConnectionLost()
        self.assertEqual(self.lines(), [b"%d 198.51.100.7 6881" % NOW, b"ok 1"] * 2)
        self.assertTrue(self.transport.disconnecting)

    def test_half_close_mid_insert_block(self) -> None:
        self.send(b"insert y\n%d h 2\n" % NOW)
        self.proto.readConnectionLost()
        self.assertEqual(self.lines(), [b"success: y %d h 2" % NOW])

    def test_terminated_request_waits(self) -> None:
        self.send(b"get bt\n")
        self.assertEqual(self.lines(), [b"%d 198.51.100.7 6881" % NOW, b"ok 1"])
        self.send(b"get bt")
        self.clock.advance(10)
        self.assertEqual(self.lines(), [])
        self.assertFalse(self.transport.disconnecting)

    def test_slow_modern_client_is_not_mistaken(self) -> None:
        """A terminated request line never triggers the libhalp window."""
        self.send(b"insert z\n")
        self.clock.advance(5)
        self.send(b"%d h 3\n" % NOW)
        self.clock.advance(5)
        self.send(b"\n")
        self.assertEqual(self.lines(), [b"success: z %d h 3" % NOW, b"ok 1 stored 0 failed"])


class CrashTests(ServerTestCase):
    def test_a_bug_while_answering_aborts_only_that_connection(self) -> None:
        def broken(lines: Sequence[bytes]) -> None:
            raise ZeroDivisionError("bug")

        self.transport.writeSequence = broken  # type: ignore[method-assign]
        self.send(b"get a\n")
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class FactoryTests(ServerTestCase):
    def test_tracks_connections(self) -> None:
        self.assertEqual(self.factory.connections, {self.proto})
        other, _ = self.connect()
        self.assertEqual(len(self.factory.connections), 2)
        self.proto.connectionLost()
        self.assertEqual(self.factory.connections, {other})

    def test_describe_address(self) -> None:
        self.assertEqual(describe_address(IPv6Address("TCP", "::1", 7100)), "[::1]:7100")
        self.assertEqual(describe_address(self.transport.getPeer()), "192.168.1.1:54321")

    def test_index_lines_show_last_segment(self) -> None:
        self.successResultOf(self.core.insert(["a/b/c"], [Entry(NOW, "h", 1)]))
        self.send(b"get a/b/\n")
        self.assertEqual(self.lines(), [b"%d c" % NOW, b"ok 1"])
        self.assertEqual(LabelInfo(NOW, "a/b/c").segment, "c")


# -- federation requests -------------------------------------------------------


class FederationRequestTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        # The tests push from the connection's host, and from "p": peers.
        self.core.peer_source = StaticPeers([], trusted=["192.168.1.1", "p"])

    def feed(self) -> list[Change]:
        return self.successResultOf(self.store.changes("0", 1000, 0)).changes

    def changes_status(self, line: bytes) -> ChangesStatus:
        status = parse_status(line)
        assert status is not None and status.ok, line
        return parse_changes_status(status)

    def test_changes(self) -> None:
        self.send(b"insert a\n%d 198.51.100.7 6881\n\n" % (NOW - 1))
        self.successResultOf(self.core.push([Change("b", Entry(NOW, "h", 1), "192.0.2.9")], "p:1", "p"))
        self.lines()
        self.send(b"changes 0\n")
        *data, status = self.lines()
        self.assertEqual(
            data, [b"a %d 198.51.100.7 6881 192.168.1.1" % (NOW - 1), b"b %d h 1 192.0.2.9" % NOW]
        )
        parsed = self.changes_status(status)
        self.assertEqual((parsed.count, parsed.more), (2, False))
        self.send(b"changes %s\n" % parsed.cursor.encode())
        self.assertEqual(self.lines(), [b"ok 0 next %s end" % parsed.cursor.encode()])

    def test_changes_in_pages(self) -> None:
        self.send(b"insert a\n%d h 1\n%d h 2\n%d h 3\n\n" % (NOW, NOW, NOW))
        self.lines()
        self.send(b"changes 0 2\n")
        *data, status = self.lines()
        self.assertEqual(data, [b"a %d h 1 192.168.1.1" % NOW, b"a %d h 2 192.168.1.1" % NOW])
        first = self.changes_status(status)
        self.assertEqual((first.count, first.more), (2, True))
        self.send(b"changes %s 2\n" % first.cursor.encode())
        *data, status = self.lines()
        self.assertEqual(data, [b"a %d h 3 192.168.1.1" % NOW])
        second = self.changes_status(status)
        self.assertEqual((second.count, second.more), (1, False))
        self.assertNotEqual(first.cursor, second.cursor)

    def test_changes_of_an_empty_store(self) -> None:
        self.send(b"changes 0\n")
        (status,) = self.lines()
        empty = self.changes_status(status)
        self.assertEqual((empty.count, empty.more), (0, False))
        self.send(b"insert a\n%d h 1\n\n" % NOW)
        self.lines()
        self.send(b"changes %s\n" % empty.cursor.encode())
        self.assertEqual(self.lines()[0], b"a %d h 1 192.168.1.1" % NOW)

    def test_bad_changes_requests(self) -> None:
        self.send(b"changes\nchanges a/b\nchanges 0 0\n")
        self.assertEqual(
            self.lines(),
            [
                b"error bad-request usage: changes CURSOR [LIMIT]",
                b"error bad-request a cursor is 0 or a word a changes answer gave",
                b"error bad-range the limit is a positive number",
            ],
        )
        self.assertEqual(self.core.stats["changes-served"], 0)

    def test_push(self) -> None:
        self.send(
            b"push 203.0.113.5:7100\n"
            b"a %d 198.51.100.7 6881 192.0.2.1\n"
            b"junk\n"
            b"a 5 h 1\n"
            b"b %d h 2 -\n"
            b"\n" % (NOW + 10**6, NOW - 1)
        )
        self.assertEqual(
            self.lines(),
            [
                b"failure: junk ; expected LABEL TIMESTAMP HOST PORT [SOURCE]",
                b"failure: a 5 h 1 ; expired: confirmed more than 86400 s ago",
                b"ok 2 changed 0 unchanged 2 refused",
            ],
        )
        self.assertEqual(
            self.feed(),
            [
                Change(
                    "a",
                    Entry(NOW + REPLICATION_SKEW, "198.51.100.7", 6881),
                    "192.0.2.1",
                    "203.0.113.5:7100",
                ),
                Change("b", Entry(NOW - 1, "h", 2), "", "203.0.113.5:7100"),
            ],
        )
        self.send(b"push 203.0.113.5:7100\nb %d h 2 -\n\n" % (NOW - 1))
        self.assertEqual(self.lines(), [b"ok 0 changed 1 unchanged 0 refused"])
        self.assertEqual(self.core.stats["push-received"], 2)
        self.assertEqual(self.core.stats["entries-replicated"], 2)
        self.assertEqual(self.core.stats["entries-rejected"], 2)

    def test_push_without_a_name_is_via_the_connection_address(self) -> None:
        self.send(b"push\na %d h 1 192.0.2.1\n\n" % NOW)
        self.assertEqual(self.lines(), [b"ok 1 changed 0 unchanged 0 refused"])
        self.assertEqual(self.feed(), [Change("a", Entry(NOW, "h", 1), "192.0.2.1", "192.168.1.1")])

    def test_bad_push_header_merges_nothing(self) -> None:
        self.send(b"push 203.0.113.5\na %d h 1\n\nget a\n" % NOW)
        lines = self.lines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(lines[0].startswith(b"error "), lines[0])
        self.assertEqual(lines[1], b"ok 0")
        self.assertEqual(self.feed(), [])
        self.assertEqual(self.core.stats["push-received"], 0)

    def test_too_many_push_lines(self) -> None:
        self.core.limits = Limits(max_line=100, max_gossip_entries=2)
        self.proto, self.transport = self.connect()
        self.send(b"push\na %d h 1\na %d h 2\na %d h 3\n\n" % (NOW, NOW, NOW))
        self.assertEqual(
            self.lines(), [b"error too-many-entries 3 entry lines; at most 2 per push"]
        )
        self.assertEqual(self.feed(), [])

    def test_throttled_push_is_busy(self) -> None:
        self.core = HALPCore(
            self.store, self.clock, Limits(max_line=100, max_gossip_entries=2),
            push_rate=1.0, push_burst=2.0,
        )
        self.factory = HALPServerFactory(self.core, self.clock)
        self.proto, self.transport = self.connect()
        self.send(b"push\na %d h 1\na %d h 2\n\n" % (NOW, NOW))
        self.assertEqual(self.lines(), [b"ok 2 changed 0 unchanged 0 refused"])
        self.send(b"push\nb %d h 1\n\nget b\n" % NOW)
        self.assertEqual(
            self.lines(), [b"error busy too many entries pushed; try again in 1 s", b"ok 0"]
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.core.stats["push-throttled"], 1)
        # Another connection from the same address shares the bucket.
        self.proto, self.transport = self.connect()
        self.send(b"push\nb %d h 1\n\n" % NOW)
        self.assertEqual(self.lines(), [b"error busy too many entries pushed; try again in 1 s"])
        self.clock.advance(1)
        self.send(b"push\nb %d h 1\n\n" % NOW)
        self.assertEqual(self.lines(), [b"ok 1 changed 0 unchanged 0 refused"])

    def test_insert_records_the_client_address_as_source(self) -> None:
        self.send(b"insert a b\n%d h 1\n\n" % NOW)
        self.lines()
        self.assertEqual(
            self.feed(),
            [
                Change("a", Entry(NOW, "h", 1), "192.168.1.1", ""),
                Change("b", Entry(NOW, "h", 1), "192.168.1.1", ""),
            ],
        )

    def test_insert_over_ipv6_records_the_bare_host(self) -> None:
        transport = StringTransport(peerAddress=IPv6Address("TCP", "2001:db8::7", 40000))
        self.proto = cast(HALPServerProtocol, self.factory.buildProtocol(transport.getPeer()))
        self.proto.makeConnection(transport)
        self.transport = transport
        self.send(b"insert a\n%d h 1\n\nchanges 0\n" % NOW)
        self.assertEqual(self.lines()[2], b"a %d h 1 2001:db8::7" % NOW)

    def test_a_source_that_is_not_a_host_is_unknown_invalid(self) -> None:
        """Such a client is verified and rate-limited as one, named unknown.invalid."""
        for address in (
            IPv6Address("TCP", "fe80::1%eth0", 40000),
            UNIXAddress(None),
            UNIXAddress(b"/tmp/a socket"),
        ):
            transport = StringTransport(peerAddress=address)
            self.proto = cast(HALPServerProtocol, self.factory.buildProtocol(address))
            self.proto.makeConnection(transport)
            self.transport = transport
            self.send(b"insert u\n%d h 1\n\nchanges 0\n" % NOW)
            lines = self.lines()
            self.assertIn(b"u %d h 1 unknown.invalid" % NOW, lines, address)

    def test_stats(self) -> None:
        self.clock.advance(30)
        self.send(b"insert a\n%d h 1\n\n" % NOW)
        self.lines()
        self.send(b"stats\n")
        lines = self.lines()
        self.assertEqual(lines[0], b"uptime 30")
        self.assertEqual(lines[-1], b"ok")
        fields = [line.split(b" ") for line in lines[1:-1]]
        self.assertEqual([f[0].decode() for f in fields], list(COUNTERS))
        self.assertTrue(all(len(f) == 2 and f[1].isdigit() for f in fields))
        self.assertIn([b"entries-inserted", b"1"], fields)

    def test_stats_and_peers_take_no_arguments(self) -> None:
        self.send(b"stats now\npeers all\n")
        self.assertEqual(
            self.lines(), [b"error bad-request usage: stats", b"error bad-request usage: peers"]
        )

    def test_no_peers(self) -> None:
        self.send(b"peers\n")
        self.assertEqual(self.lines(), [b"ok 0"])

    def test_peers(self) -> None:
        self.core.peer_source = StaticPeers(
            [
                PeerStatus("192.0.2.1:7100", "trusted", 9, True),
                PeerStatus("[2001:db8::1]:7100", "backoff", 0, False),
            ]
        )
        self.send(b"peers\n")
        self.assertEqual(
            self.lines(),
            [b"192.0.2.1:7100 trusted 9 pinned", b"[2001:db8::1]:7100 backoff 0", b"ok 2"],
        )

    def test_hello_announces_federation(self) -> None:
        self.send(b"hello\n")
        lines = self.lines()
        self.assertIn(b"features changes push stats peers", lines)
        self.assertIn(b"node " + self.core.node_id.encode(), lines)
        self.assertIn(b"max-gossip-entries 1000", lines)

    def test_federation_requests_pipeline_in_order(self) -> None:
        self.store.hold = True
        self.send(b"push\na %d h 1\n\nstats\nchanges 0\n" % NOW)
        self.assertEqual(self.transport.value(), b"")
        self.store.release_one()
        lines = self.lines()
        self.assertEqual(lines[0], b"ok 1 changed 0 unchanged 0 refused")
        self.assertEqual(lines[1], b"uptime 0")
        self.assertIn(b"entries-replicated 1", lines)
        self.assertEqual(lines[-2], b"a %d h 1 -" % NOW)
        self.assertTrue(lines[-1].startswith(b"ok 1 next "))


# -- the request deadline ------------------------------------------------------


LATE = b"error bad-request request not complete within 30 s"


class RequestDeadlineTests(ServerTestCase):
    """
    A request must arrive whole within ``request_timeout`` (30 s by
    default) of the read that brought its first byte: a slowloris that
    trickles bytes is cut off, although it is never idle.
    """

    def setUp(self) -> None:
        super().setUp()
        self.send(b"hello\n")  # past the libhalp rule, which applies to a first request
        self.lines()

    def test_default(self) -> None:
        self.assertEqual(self.factory.request_timeout, 30.0)

    def test_partial_line_is_refused_after_the_deadline(self) -> None:
        self.send(b"get")
        self.clock.advance(20)
        self.send(b" a")  # more bytes of the same line do not extend it
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(self.lines(), [LATE])
        self.assertTrue(self.transport.disconnecting)
        # A peer that does not take the answer is cut off.
        self.clock.advance(self.factory.abort_timeout)
        self.assertTrue(self.transport.disconnected)

    def test_trickle_is_never_idle_but_meets_the_deadline(self) -> None:
        for _ in range(29):
            self.send(b"x")
            self.clock.advance(1)
        self.assertFalse(self.transport.disconnecting)
        self.send(b"x")
        self.clock.advance(1)
        self.assertEqual(self.lines(), [LATE])
        self.assertTrue(self.transport.disconnecting)

    def test_first_request_trickled_faster_than_the_libhalp_window(self) -> None:
        """The libhalp rule waits for 0.3 s of silence, which never comes."""
        proto, transport = self.connect()
        proto.dataReceived(b"insert a\n")
        trickle = b"%d 192.0.2.1 1\n" % NOW * 10
        for i in range(150):
            proto.dataReceived(trickle[i : i + 1])
            self.clock.advance(0.2)
        self.assertEqual(transport.value().splitlines(), [LATE])
        self.assertTrue(transport.disconnecting)

    def test_insert_block_is_one_request(self) -> None:
        self.send(b"insert a\n")
        for i in range(2):
            self.clock.advance(10)
            self.send(b"%d 192.0.2.%d 1\n" % (NOW, i + 1))
        self.clock.advance(9.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(self.lines(), [LATE])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.successResultOf(self.store.get("a", 0, 10, 0)), [])

    def test_push_block_is_one_request(self) -> None:
        self.send(b"push\n")
        self.clock.advance(15)
        self.send(b"a %d h 1\n" % NOW)
        self.clock.advance(15)
        self.assertEqual(self.lines(), [LATE])

    def test_each_request_has_its_own_deadline(self) -> None:
        self.send(b"get a")
        self.clock.advance(20)
        self.send(b"\nget b")  # the first is complete, the second begins
        self.assertEqual(self.lines(), [b"ok 0"])
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.send(b"\n")
        self.assertEqual(self.lines(), [b"ok 0"])
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)

    def test_no_deadline_between_requests(self) -> None:
        """A connection with no request under way is only subject to the idle timeout."""
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.lines(), [])  # the idle close says nothing

    def test_requests_before_the_late_one_are_answered(self) -> None:
        self.store.hold = True
        self.send(b"get a\nget b\nge")
        self.clock.advance(30)
        self.assertEqual(self.transport.value(), b"")
        self.store.release_one()
        self.store.release_one()
        self.assertEqual(self.lines(), [b"ok 0", b"ok 0", LATE])
        self.assertTrue(self.transport.disconnecting)

    def test_no_deadline_while_the_server_does_not_read(self) -> None:
        """
        While the peer's output is full the server reads nothing, so the
        peer cannot finish a request: its deadline starts again when
        reading resumes.  (The idle timeout still closes a peer that reads
        nothing.)
        """
        self.proto.pauseProducing()
        self.send(b"get a\nget")
        self.clock.advance(40)
        self.assertFalse(self.transport.disconnecting)
        self.proto.resumeProducing()
        self.assertEqual(self.lines(), [b"ok 0"])
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.lines(), [LATE])

    def test_configurable(self) -> None:
        factory = HALPServerFactory(self.core, self.clock, request_timeout=2.5)
        transport = StringTransport()
        proto = factory.buildProtocol(transport.getPeer())
        assert proto is not None
        proto.makeConnection(transport)
        proto.dataReceived(b"hello\nget")
        self.clock.advance(2.5)
        self.assertEqual(
            transport.value().splitlines()[-1],
            b"error bad-request request not complete within 2.5 s",
        )

    def test_logged(self) -> None:
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.send(b"get")
        self.clock.advance(30)
        self.assertIn(
            "192.168.1.1:54321 did not complete a request within 30.0 s, closing",
            [e["log_format"].format(**e) for e in events if "timeout" in e],
        )

    def test_deadline_cancelled_on_disconnect(self) -> None:
        self.send(b"get")
        self.proto.connectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadline_cancelled_by_half_close(self) -> None:
        self.send(b"get a")
        self.proto.readConnectionLost()
        self.assertEqual(self.lines(), [b"ok 0"])
        self.clock.advance(30)
        self.assertEqual(self.lines(), [])


class LineBufferBoundTests(ServerTestCase):
    """Test 11 of the reliability anchors: 1 MiB without a line ending."""

    def test_mebibyte_without_newline(self) -> None:
        """
        Fed in 64 KiB reads, as a TCP transport delivers it, a line without
        an end is refused at the first read, the buffer is emptied, and
        nothing more is held: the server never holds more than
        ``max_line`` + one read of it.
        """
        read = b"x" * 65536
        held = []
        for _ in range(16):
            self.send(read)
            held.append(len(self.proto._lines._data))
        self.assertEqual(
            self.lines(), [b"error line-too-long request lines are at most 100 bytes"]
        )
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(held, [0] * 16)

    def test_unfinished_line_at_the_limit_then_a_read(self) -> None:
        self.send(b"hello\n" + b"x" * 100)  # a whole max_line, not yet too long
        self.assertEqual(len(self.proto._lines._data) - self.proto._lines._pos, 100)
        self.assertFalse(self.transport.disconnecting)
        self.send(b"x" * 65536)
        self.assertEqual(
            self.lines()[-1], b"error line-too-long request lines are at most 100 bytes"
        )
        self.assertEqual(len(self.proto._lines._data), 0)


# -- connection caps -------------------------------------------------------------


class ConnectionCapTests(SynchronousTestCase):
    """
    The server's own connection count (test 14 of the reliability
    anchors): a cap in all and one per host, shared by its listeners.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.core = HALPCore(MemoryStore(), self.clock)
        self.limiter = ConnectionLimiter(max_connections=4, max_per_host=2)
        self.factory = HALPServerFactory(self.core, self.clock, limiter=self.limiter)

    def connect(self, host: str, port: int = 40000) -> tuple[Any, StringTransport]:
        kind = IPv6Address if ":" in host else IPv4Address
        transport = StringTransport(peerAddress=kind("TCP", host, port))
        proto = self.factory.buildProtocol(transport.getPeer())
        assert proto is not None
        proto.makeConnection(transport)
        return proto, transport

    def assertBusy(self, transport: StringTransport, message: bytes) -> None:
        self.assertEqual(transport.value(), b"error busy " + message + b"\n")
        self.assertTrue(transport.disconnecting)

    def test_defaults(self) -> None:
        limiter = HALPServerFactory(self.core, self.clock).limiter
        self.assertEqual((limiter.max_connections, limiter.max_per_host), (1024, 16))

    def test_per_host_cap(self) -> None:
        first, _ = self.connect("192.0.2.1")
        second, _ = self.connect("192.0.2.1", 40001)
        third, transport = self.connect("192.0.2.1", 40002)
        self.assertIsInstance(first, HALPServerProtocol)
        self.assertIsInstance(second, HALPServerProtocol)
        self.assertIsInstance(third, Refusal)
        self.assertBusy(
            transport, b"too many connections from 192.0.2.1 (at most 2 at once); try again in 10 s"
        )
        third.dataReceived(b"hello\n")  # a request sent anyway is not answered
        self.assertEqual(transport.value().count(b"\n"), 1)
        self.assertEqual(len(self.factory.connections), 2)
        self.assertEqual(self.core.traffic.connections["halp1"], 2)
        self.assertEqual(self.core.traffic.requests[("halp1", "connection", "busy")], 1)
        self.assertEqual((self.limiter.open, self.limiter.count("192.0.2.1")), (2, 2))

    def test_other_hosts_are_not_starved(self) -> None:
        self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        for port in range(100):
            proto, _ = self.connect("192.0.2.1", port)
            self.assertIsInstance(proto, Refusal)
        other, transport = self.connect("198.51.100.7")
        other.dataReceived(b"get a\n")
        self.assertEqual(transport.value(), b"ok 0\n")
        self.assertEqual(self.limiter.open, 3)

    def test_a_closed_connection_frees_its_place(self) -> None:
        first, _ = self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        self.assertIsInstance(self.connect("192.0.2.1")[0], Refusal)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.limiter.count("192.0.2.1"), 1)
        self.assertIsInstance(self.connect("192.0.2.1")[0], HALPServerProtocol)

    def test_refusals_hold_no_place(self) -> None:
        self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        refused, _ = self.connect("192.0.2.1")
        refused.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.limiter.open, self.limiter.count("192.0.2.1")), (2, 2))

    def test_total_cap(self) -> None:
        for i in range(4):
            self.connect(f"192.0.2.{i + 1}")
        proto, transport = self.connect("198.51.100.7")
        self.assertIsInstance(proto, Refusal)
        self.assertBusy(
            transport, b"the server has too many connections (4); try again in 10 s"
        )

    def test_ipv6_is_counted_by_its_56(self) -> None:
        self.connect("2001:db8:0:1::1")
        self.connect("2001:db8:0:ff::2")
        proto, transport = self.connect("2001:db8:0:7::3")
        self.assertBusy(
            transport,
            b"too many connections from 2001:db8::/56 (at most 2 at once); try again in 10 s",
        )
        self.assertIsInstance(self.connect("2001:db8:0:100::1")[0], HALPServerProtocol)

    def test_ipv4_mapped_is_the_ipv4_host(self) -> None:
        self.connect("::ffff:192.0.2.1")
        self.connect("192.0.2.1")
        self.assertIsInstance(self.connect("::ffff:192.0.2.1")[0], Refusal)

    def test_no_per_host_cap(self) -> None:
        self.limiter.max_per_host = 0
        for port in range(4):
            self.assertIsInstance(self.connect("192.0.2.1", port)[0], HALPServerProtocol)
        self.assertIsInstance(self.connect("192.0.2.1")[0], Refusal)  # the total still holds

    def test_unix_connections_count_towards_the_total_only(self) -> None:
        for _ in range(4):
            transport = StringTransport(peerAddress=UNIXAddress(None))
            proto = self.factory.buildProtocol(transport.getPeer())
            self.assertIsInstance(proto, HALPServerProtocol)
            assert proto is not None
            proto.makeConnection(transport)
        self.assertIsInstance(self.connect("192.0.2.1")[0], Refusal)

    def test_host_key(self) -> None:
        for address, key in [
            (IPv4Address("TCP", "192.0.2.1", 1), "192.0.2.1"),
            (IPv6Address("TCP", "::ffff:192.0.2.1", 1), "192.0.2.1"),
            (IPv6Address("TCP", "2001:DB8:0:1:2:3:4:5", 1), "2001:db8::/56"),
            (IPv6Address("TCP", "2001:db8:0:1234::1", 1), "2001:db8:0:1200::/56"),
            (IPv6Address("TCP", "fe80::1%eth0", 1), "fe80::/56"),
            (IPv6Address("TCP", "::1", 1), "::/56"),
            (UNIXAddress(b"/tmp/s"), None),
            (None, None),
        ]:
            self.assertEqual(host_key(address), key, address)

    def test_refusal_is_aborted_if_it_does_not_close(self) -> None:
        self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        proto, transport = self.connect("192.0.2.1")
        self.assertFalse(transport.disconnected)
        self.clock.advance(self.factory.abort_timeout)
        self.assertTrue(transport.disconnected)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(proto._abort_call)
        # Closed in time, it is not aborted.
        proto, transport = self.connect("192.0.2.1")
        proto.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(self.factory.abort_timeout)
        self.assertFalse(transport.disconnected)

    def test_refusals_are_logged_once_per_interval(self) -> None:
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        for _ in range(100):
            self.connect("192.0.2.1")
            self.clock.advance(0.05)
        self.clock.advance(6)
        self.connect("192.0.2.1")
        refusals = [e for e in events if "refused" in e]
        self.assertEqual([e["refused"] for e in refusals], [1, 100])
        self.assertEqual(
            refusals[0]["log_format"].format(**refusals[0]),
            "Refused a connection from 192.0.2.1: too many connections from 192.0.2.1 "
            "(at most 2 at once); try again in 10 s (1 refused since the last such line)",
        )
        self.assertEqual(self.limiter.refused, 101)

    def test_does_not_depend_on_LimitConnectionsByPeer(self) -> None:
        """
        Regression test: the caps are HALP's own count.  Twisted's
        ``LimitConnectionsByPeer`` (twisted/twisted#12183) indexes an
        ``IPv4Address`` as a tuple and decrements the port instead of the
        host; HALP's count neither wraps the factory in a policy nor
        depends on one, and stays exact over many connections from IPv4
        and IPv6 peers that come and go.
        """
        self.assertFalse(
            [c for c in type(self.factory).__mro__ if c.__module__ == policies.__name__]
        )
        self.assertNotIsInstance(self.factory, policies.WrappingFactory)
        for round in range(500):
            opened = [self.connect(host, round)[0] for host in ("192.0.2.1", "2001:db8::1")]
            self.assertEqual([type(p) for p in opened], [HALPServerProtocol] * 2)
            self.assertNotIsInstance(opened[0], policies.ProtocolWrapper)
            self.assertEqual(self.limiter.open, 2)
            for proto in opened:
                proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((self.limiter.open, self.limiter._hosts), (0, {}))
