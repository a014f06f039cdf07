"""
Tests for :mod:`halp.client.protocol`: one client connection, driven by
hand through a ``StringTransport`` (no sockets, no waiting).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from halp.client.protocol import MAX_RESPONSE_LINE, HALPClientProtocol
from halp.error import BadResponse, ConnectionClosed
from halp.model import Entry, Window
from halp.wire import Get, Hello, Insert, Response, Status


@implementer(IHalfCloseableDescriptor)
class HalfClosingTransport(StringTransport):
    """A ``StringTransport`` that can half-close, like a TCP connection."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def writeConnectionLost(self, reason: Failure) -> None:
        pass

    def readConnectionLost(self, reason: Failure) -> None:
        pass


def connect(
    transport: StringTransport | None = None,
) -> tuple[HALPClientProtocol, StringTransport]:
    transport = transport if transport is not None else StringTransport()
    proto = HALPClientProtocol()
    proto.makeConnection(transport)
    return proto, transport


def aborted(transport: StringTransport) -> bool:
    # StringTransport.abortConnection sets ``disconnected``; loseConnection
    # sets only ``disconnecting``.
    return bool(transport.disconnected)


OK = Status(True, None, "")


class RequestTests(SynchronousTestCase):
    def test_pipelined_answers_in_order(self) -> None:
        """
        Requests written back to back are answered in order, each
        Deferred firing only when its own status line arrives.
        """
        proto, transport = connect()
        first = proto.request(Get("app", Window(0, 2)))
        second = proto.request(Hello())
        third = proto.request(Get("other"))
        self.assertEqual(transport.value(), b"get app[0:2]\nhello\nget other\n")

        proto.dataReceived(b"1700000000 192.0.2.1 7100\n1699999999 h 1\nok 2\nprotocol HALP/1\n")
        self.assertEqual(
            self.successResultOf(first),
            Response(
                (b"1700000000 192.0.2.1 7100", b"1699999999 h 1"),
                Status(True, None, "2"),
            ),
        )
        self.assertNoResult(second)
        proto.dataReceived(b"ok\nok 0\n")
        self.assertEqual(self.successResultOf(second), Response((b"protocol HALP/1",), OK))
        self.assertEqual(self.successResultOf(third), Response((), Status(True, None, "0")))
        self.assertFalse(transport.disconnecting)

    def test_insert_request_bytes(self) -> None:
        """An insert is written as its header, entry lines and an empty line."""
        proto, transport = connect()
        proto.request(Insert(("a", "b"), (Entry(1700000000, "192.0.2.9", 6881),)))
        self.assertEqual(transport.value(), b"insert a b\n1700000000 192.0.2.9 6881\n\n")

    def test_answer_split_into_many_chunks(self) -> None:
        """A response fed one byte at a time, CRLF line endings included, is reassembled."""
        proto, _ = connect()
        d = proto.request(Get("app"))
        data = b"1700000000 192.0.2.1 7100\r\n1 h 2\nok 2\r\n"
        for i in range(len(data) - 1):
            proto.dataReceived(data[i : i + 1])
            self.assertNoResult(d)
        proto.dataReceived(data[-1:])
        self.assertEqual(
            self.successResultOf(d),
            Response((b"1700000000 192.0.2.1 7100", b"1 h 2"), Status(True, None, "2")),
        )

    def test_error_status(self) -> None:
        """An ``error`` status line is a Response whose status is not ok."""
        proto, transport = connect()
        d = proto.request(Get("app"))
        later = proto.request(Hello())
        proto.dataReceived(b"error bad-label label 'x y' is bad\nok\n")
        response = self.successResultOf(d)
        self.assertEqual(response.lines, ())
        assert response.status is not None
        self.assertFalse(response.status.ok)
        self.assertEqual(response.status.code, "bad-label")
        self.assertEqual(response.status.text, "label 'x y' is bad")
        # The connection goes on.
        self.assertEqual(self.successResultOf(later), Response((), OK))
        self.assertFalse(transport.disconnecting)

    def test_close(self) -> None:
        """close() closes the connection gracefully (not an abort)."""
        proto, transport = connect()
        proto.close()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(aborted(transport))


class ConnectionLostTests(SynchronousTestCase):
    def test_lost_with_pending_requests(self) -> None:
        """Every request still waiting fails with ConnectionClosed."""
        proto, _ = connect()
        done = proto.request(Get("a"))
        first = proto.request(Get("b"))
        second = proto.request(Hello())
        proto.dataReceived(b"ok 0\n1 h 1\n")
        self.assertEqual(self.successResultOf(done), Response((), Status(True, None, "0")))
        proto.connectionLost(Failure(ConnectionLost("reset")))
        for d in (first, second):
            failure = self.failureResultOf(d, ConnectionClosed)
            self.assertIn("reset", str(failure.value))

    def test_request_after_loss(self) -> None:
        """A request on a closed connection fails at once."""
        proto, transport = connect()
        proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(proto.request(Hello()), ConnectionClosed)
        self.failureResultOf(proto.request_libhalp(Hello()), ConnectionClosed)
        self.assertEqual(transport.value(), b"")

    def test_clean_close_without_status_is_libhalp_answer(self) -> None:
        """
        The server closing cleanly after the only request, without any
        status line, answers it in the libhalp form: every line it sent,
        the unterminated last one included, and no status.
        """
        proto, _ = connect()
        d = proto.request(Get("app"))
        proto.dataReceived(b"1700000000 192.0.2.1 7100\n1699999")
        proto.dataReceived(b"000 192.0.2.2 3451")
        self.assertNoResult(d)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.successResultOf(d),
            Response((b"1700000000 192.0.2.1 7100", b"1699999000 192.0.2.2 3451"), None),
        )

    def test_clean_close_with_nothing_sent(self) -> None:
        """An empty libhalp answer (no entries) is an empty Response, not a failure."""
        proto, _ = connect()
        d = proto.request(Get("app"))
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(d), Response((), None))

    def test_libhalp_answer_ends_at_error_line(self) -> None:
        """
        A HALP/1 server answering the libhalp form sends an ``error`` line
        for a failed request; that line ends the answer.
        """
        proto, _ = connect()
        d = proto.request_libhalp(Get("app"))
        proto.dataReceived(b"error bad-label nope")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.successResultOf(d), Response((), Status(False, "bad-label", "nope"))
        )

    def test_unclean_close_is_not_libhalp_answer(self) -> None:
        """Data then a lost connection (not a clean close) is a failure."""
        proto, _ = connect()
        d = proto.request(Get("app"))
        proto.dataReceived(b"1700000000 192.0.2.1 7100\n")
        proto.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionClosed)

    def test_clean_close_after_status_line(self) -> None:
        """
        Once a status line was seen the server speaks HALP/1: a clean close
        leaves the later requests unanswered, not answered libhalp-style.
        """
        proto, _ = connect()
        first = proto.request(Get("a"))
        second = proto.request(Get("b"))
        proto.dataReceived(b"ok 0\n1700000000 192.0.2.1 7100\n")
        self.assertEqual(self.successResultOf(first), Response((), Status(True, None, "0")))
        proto.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(second, ConnectionClosed)
        self.assertIn("before answering", str(failure.value))

    def test_clean_close_with_two_pending(self) -> None:
        """With two requests sent, a close without status lines answers neither."""
        proto, _ = connect()
        first = proto.request(Get("a"))
        second = proto.request(Get("b"))
        proto.dataReceived(b"1700000000 192.0.2.1 7100")
        proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(first, ConnectionClosed)
        self.failureResultOf(second, ConnectionClosed)


class BadResponseTests(SynchronousTestCase):
    def test_line_too_long(self) -> None:
        """
        A response line over MAX_RESPONSE_LINE fails every pending request
        with BadResponse as soon as that is certain, and aborts.
        """
        proto, transport = connect()
        first = proto.request(Get("a"))
        second = proto.request(Get("b"))
        proto.dataReceived(b"x" * MAX_RESPONSE_LINE)
        self.assertNoResult(first)
        self.assertFalse(aborted(transport))
        proto.dataReceived(b"xx")
        self.failureResultOf(first, BadResponse)
        self.failureResultOf(second, BadResponse)
        self.assertTrue(aborted(transport))

    def test_longest_line_accepted(self) -> None:
        """A line of exactly MAX_RESPONSE_LINE bytes is fine."""
        proto, transport = connect()
        d = proto.request(Get("a"))
        line = b"1 " + b"h" * (MAX_RESPONSE_LINE - 4) + b" 1"
        self.assertEqual(len(line), MAX_RESPONSE_LINE)
        proto.dataReceived(line + b"\r\nok 1\n")
        self.assertEqual(self.successResultOf(d), Response((line,), Status(True, None, "1")))
        self.assertFalse(aborted(transport))

    def test_status_with_nothing_pending(self) -> None:
        """
        A status line that answers no request breaks the connection: it
        is aborted, and a later request fails with BadResponse at once
        instead of being written to it.
        """
        proto, transport = connect()
        d = proto.request(Get("a"))
        proto.dataReceived(b"ok 0\nok 0\n")
        self.assertEqual(self.successResultOf(d), Response((), Status(True, None, "0")))
        self.assertTrue(aborted(transport))
        transport.clear()
        self.failureResultOf(proto.request(Hello()), BadResponse)
        self.assertEqual(transport.value(), b"")

    def test_status_before_any_request(self) -> None:
        """A server that speaks first breaks the connection too."""
        proto, transport = connect()
        proto.dataReceived(b"error internal hello?\n")
        self.assertTrue(aborted(transport))
        self.failureResultOf(proto.request(Hello()), BadResponse)


class LibhalpRequestTests(SynchronousTestCase):
    def test_get_without_line_ending(self) -> None:
        """request_libhalp writes the request without its line ending."""
        proto, transport = connect()
        d = proto.request_libhalp(Get("bittorrent"))
        self.assertEqual(transport.value(), b"get bittorrent")
        proto.dataReceived(b"1700000000 192.0.2.1 6881")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(d), Response((b"1700000000 192.0.2.1 6881",), None))

    def test_insert_without_final_newlines(self) -> None:
        """An insert loses both its entry line's LF and the empty line."""
        proto, transport = connect()
        proto.request_libhalp(Insert(("a",), (Entry(1700000000, "192.0.2.9", 1),)))
        self.assertEqual(transport.value(), b"insert a\n1700000000 192.0.2.9 1")

    def test_half_closes_when_it_can(self) -> None:
        """On a TCP-like transport the request is followed by a half-close."""
        transport = HalfClosingTransport()
        proto, _ = connect(transport)
        proto.request_libhalp(Get("app"))
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.disconnecting)

    def test_only_on_fresh_connection(self) -> None:
        """request_libhalp after request() fails, and writes nothing."""
        proto, transport = connect()
        proto.request(Hello())
        transport.clear()
        self.failureResultOf(proto.request_libhalp(Get("app")), ConnectionClosed)
        self.assertEqual(transport.value(), b"")

    def test_nothing_after_libhalp_request(self) -> None:
        """No request may follow a libhalp one on its connection."""
        proto, transport = connect()
        pending = proto.request_libhalp(Get("app"))
        transport.clear()
        self.failureResultOf(proto.request(Hello()), ConnectionClosed)
        self.failureResultOf(proto.request_libhalp(Hello()), ConnectionClosed)
        self.assertEqual(transport.value(), b"")
        self.assertNoResult(pending)


class CancelTests(SynchronousTestCase):
    def test_cancel_aborts(self) -> None:
        """Cancelling a request aborts the connection; the others fail too."""
        proto, transport = connect()
        first = proto.request(Get("a"))
        second = proto.request(Get("b"))
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertTrue(aborted(transport))
        self.assertNoResult(second)
        proto.connectionLost(Failure(ConnectionLost("aborted")))
        self.failureResultOf(second, ConnectionClosed)

    def test_cancel_libhalp_request(self) -> None:
        """A cancelled libhalp request is not answered by the close that follows."""
        proto, transport = connect()
        d = proto.request_libhalp(Get("a"))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(aborted(transport))
        # The abort may be reported as a clean close (as iosim does); the
        # cancelled request must not be fired a second time.
        proto.dataReceived(b"1 h 1")
        proto.connectionLost(Failure(ConnectionDone()))
