# -*- test-case-name: halp.test.test_client_protocol -*-
"""
One client connection to a HALP server.

:class:`HALPClientProtocol` only frames lines: it writes what
:func:`halp.wire.format_request` makes, hands each line to a
:class:`~halp.wire.ResponseReader` and fires one Deferred per request, in
order, so requests can be pipelined.  When the connection ends, every
request still waiting fails with :class:`~halp.error.ConnectionClosed`,
with one exception that is how a libhalp server is recognised: if the
server closes the connection cleanly after the first request without ever
sending a status line, what it sent is that request's answer, in the
libhalp form (:attr:`~halp.wire.Response.status` is ``None``).
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from halp.error import BadResponse, ConnectionClosed, ProtocolError
from halp.wire import LineBuffer, Request, Response, ResponseReader, format_request

__all__ = ["HALPClientProtocol", "MAX_RESPONSE_LINE", "MAX_RESPONSE_LINES"]

#: The longest response line a client accepts.  Answers are short lines;
#: the longest is a ``failure:`` line echoing a rejected request line.
MAX_RESPONSE_LINE = 8192
#: The most data lines one answer may have before its status line.  The
#: longest answers (an insert into 16 labels of 100 entries, a page of 1000
#: changes) are far shorter; a server that sends more is broken.
MAX_RESPONSE_LINES = 10_000


class HALPClientProtocol(Protocol):
    """
    Sends requests and matches the answers to them, in order.

    Use :meth:`request` any number of times (pipelining), or
    :meth:`request_libhalp` once, on a fresh connection, for a server that
    only speaks libhalp.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._buffer = LineBuffer(MAX_RESPONSE_LINE)
        self._reader = ResponseReader()
        self._pending: deque[Deferred[Response]] = deque()
        self._sent = 0
        self._libhalp = False
        self._lost: Failure | None = None
        #: Set when the server broke the protocol: the connection is being
        #: aborted and takes no more requests.
        self._broken_by: BadResponse | None = None

    # -- requests ------------------------------------------------------------

    def request(self, request: Request) -> Deferred[Response]:
        """
        Send ``request``; the Deferred fires with its :class:`~halp.wire.Response`.

        Cancelling it aborts the connection (the answers of a pipelined
        connection cannot be skipped).
        """
        if self._broken_by is not None:
            return fail(self._broken_by)
        if self._lost is not None or self._libhalp:
            return fail(ConnectionClosed("the connection is closed"))
        d: Deferred[Response] = Deferred(lambda _: self._abort())
        self._pending.append(d)
        self._sent += 1
        self.transport.write(format_request(request))  # type: ignore[union-attr]
        return d

    def request_libhalp(self, request: Request) -> Deferred[Response]:
        """
        Send ``request`` the way the 2011 libhalp client did: without its
        final line ending, then half-close the connection, and take
        everything the server sends until it closes as the answer.  A
        HALP/1 server answers this form too (``docs/protocol.rst``, section
        11), so this works with either kind of server.
        """
        if self._broken_by is not None:
            return fail(self._broken_by)
        if self._lost is not None or self._sent:
            return fail(ConnectionClosed("libhalp requests need a fresh connection"))
        d: Deferred[Response] = Deferred(lambda _: self._abort())
        self._pending.append(d)
        self._sent += 1
        self._libhalp = True
        transport = self.transport
        assert transport is not None
        transport.write(format_request(request).rstrip(b"\n"))
        if IHalfCloseableDescriptor.providedBy(transport):
            transport.loseWriteConnection()  # type: ignore[attr-defined]
        return d

    def close(self) -> None:
        """Close the connection once everything written has been sent."""
        if self._lost is None and self.transport is not None:
            self.transport.loseConnection()

    def _abort(self) -> None:
        if self._lost is None and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- answers -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._lost is not None or self._broken_by is not None:
            return
        self._buffer.feed(data)
        while True:
            try:
                line = self._buffer.next_line()
            except ProtocolError:
                self._broken(f"a response line is longer than {MAX_RESPONSE_LINE} bytes")
                return
            if line is None:
                return
            response = self._reader.feed(line)
            if response is None:
                if self._reader.pending > MAX_RESPONSE_LINES:
                    self._broken(f"an answer of more than {MAX_RESPONSE_LINES} lines")
                    return
                continue
            if not self._pending:
                self._broken("a response that answers no request")
                return
            self._pending.popleft().callback(response)

    def _broken(self, why: str) -> None:
        error = self._broken_by = BadResponse(why)
        pending, self._pending = self._pending, deque()
        for d in pending:
            if not d.called:
                d.errback(error)
        self._abort()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._lost = reason
        pending, self._pending = self._pending, deque()
        if not pending:
            return
        # One request sent and still waiting means no status line came: a
        # status would have answered it (or broken the connection).
        if (
            reason.check(ConnectionDone) is not None
            and self._sent == 1
            and not pending[0].called
        ):
            pending.popleft().callback(self._libhalp_answer())
            return
        error = ConnectionClosed(
            "the server closed the connection before answering"
            if reason.check(ConnectionDone)
            else f"connection lost: {reason.getErrorMessage()}"
        )
        for d in pending:
            if not d.called:
                d.errback(error)

    def _libhalp_answer(self) -> Response:
        # The server closed without a status line: everything it sent,
        # including an unterminated last line, answers the one request.  A
        # HALP/1 server answering this form sends a status line only for a
        # failed request; that ends the answer.
        self._buffer.end()
        while (line := self._buffer.next_line()) is not None:
            response = self._reader.feed(line)
            if response is not None:
                return response
        return self._reader.end()
