# -*- test-case-name: halp.test.test_server -*-
"""
The HALP/1 server: a thin line protocol and the factory that answers it.

:class:`HALPServerProtocol` frames lines, feeds them to the codec's
:class:`~halp.wire.RequestDecoder`, and writes replies in request order;
:class:`HALPServerFactory` owns the connections and turns each request into
a call on the :class:`~halp.core.HALPCore` and the result into a
:class:`~halp.wire.Reply`.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Union, cast

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from halp.answers import Answer, AnswerCache
from halp.connlimit import ConnectionLimiter, Refusal
from halp.core import UNKNOWN_SOURCE, HALPCore, Page, Pending, Refused, Replicated, Stored
from halp.error import ErrorCode, ProtocolError, StoreError
from halp.model import ChangePage, Entry, LabelInfo, check_host
from halp.wire import (
    Changes,
    Get,
    Hello,
    Peers,
    Push,
    Stats,
    Insert,
    LineBuffer,
    ListLabels,
    Quit,
    Reply,
    Request,
    RequestDecoder,
    format_change,
    format_changes_status,
    format_entry,
    format_error,
    format_failure,
    format_field,
    format_label,
    format_ok,
    format_peer,
    format_pending,
    format_success,
    summarize,
)

__all__ = ["HALPServerFactory", "HALPServerProtocol", "address_host", "admit", "describe_address"]


#: The kind of each request, as metrics count them.
_KINDS: dict[type, str] = {
    Get: "get",
    ListLabels: "labels",
    Insert: "insert",
    Hello: "hello",
    Quit: "quit",
    Changes: "changes",
    Push: "push",
    Stats: "stats",
    Peers: "peers",
}


class _Burst:
    """Says that the fast path wrote a burst of answers and may go on."""


_BURST = _Burst()


class _Close:
    """Marks the end of a connection's input in its request queue."""


_CLOSE = _Close()
_Item = Union[Request, ProtocolError, _Close]


def describe_address(address: IAddress) -> str:
    """``host:port`` (``[v6]:port``) of a TCP address, else its ``str``."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def address_host(address: object) -> str:
    """
    The canonical host of a connection's TCP address, as an entry's
    source; ``""`` for one that has none (a UNIX socket, a scoped IPv6
    address).
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return ""
    try:
        host = check_host(host)
    except ProtocolError:
        return ""
    # An IPv4 client of a dual-stack (tcp6) listener is its IPv4 address.
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


def admit(
    core: HALPCore, limiter: ConnectionLimiter, clock: IReactorTime, frontend: str,
    addr: IAddress | None,
) -> tuple[str | None, str | None]:
    """
    Ask ``limiter`` whether a connection from ``addr`` to ``frontend``
    (``halp1`` or ``http``) may open: its limiter key, and why not (counted
    and remembered as a ``busy`` connection in the core's traffic), or
    ``None``.
    """
    key, message = limiter.check(addr, clock.seconds())
    if message is not None:
        core.traffic.record(
            frontend,
            "connection",
            ErrorCode.BUSY.value,
            when=core.now(),
            peer=address_host(addr),
            request="(connection)",
            message=message,
        )
    return key, message


@implementer(IHalfCloseableProtocol, IPushProducer)
class HALPServerProtocol(Protocol):
    """
    One HALP/1 connection.

    Requests are answered one at a time, in order; while one waits for the
    store, later ones queue up, and past :attr:`MAX_QUEUED` queued requests
    the connection stops reading.  The protocol is also the transport's
    streaming producer: while the transport's write buffer is full (the
    peer does not read), no request is answered and nothing is read, so a
    peer that pipelines without reading holds a bounded amount of memory.

    A request must arrive whole within the factory's ``request_timeout``
    of the read that brought its first byte (an insert or push block is
    one request), else it is answered ``error bad-request`` and the
    connection closed: a peer that trickles bytes (a slowloris) is never
    idle, so the idle timeout alone would not close it.  Time while the
    server does not read does not count.

    The libhalp compatibility rule lives here too, because it is about
    framing: when the first request of a connection is left without its
    line ending and the peer then goes quiet for the factory's
    ``compat_window`` seconds (0.3 by default) or half-closes, that
    request is answered with its data lines only (an ``error`` line is
    still sent, as libhalp skips lines it cannot parse) and the connection
    closes.
    """

    factory: HALPServerFactory
    #: A TCP-like transport: ITCPTransport, IConsumer and IPushProducer.
    transport: Any
    _log = Logger()

    #: Requests waiting for their turn before the connection stops reading.
    MAX_QUEUED = 64
    #: Kept answers written at once, before the output buffer is looked at
    #: again.
    KEPT_BURST = 64

    def __init__(self) -> None:
        self._queue: deque[tuple[_Item, bytes]] = deque()
        self._busy = False
        self._pumping = False
        self._any_request = False
        self._paused = False  # not reading (and not taking buffered lines)
        self._eof = False  # the peer sent all it will send
        self._input_done = False  # every request of the peer is queued
        self._output_full = False
        self._lost = False
        self._libhalp = False
        self._compat_call: IDelayedCall | None = None
        self._idle_call: IDelayedCall | None = None
        self._abort_call: IDelayedCall | None = None
        self._request_call: IDelayedCall | None = None
        self.peer = "?"
        #: The peer's host as an entry's source: its canonical address, or
        #: "" when it has none (a UNIX socket, a scoped IPv6 address).
        self.peer_host = ""

    # -- connection lifecycle -----------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self._lines = LineBuffer(factory.core.limits.max_line)
        self._decoder = RequestDecoder(factory.core.limits)
        address = self.transport.getPeer()
        self.peer = describe_address(address)
        self.peer_host = address_host(address)
        self.transport.registerProducer(self, True)
        factory.connection_opened(self)
        self._reset_idle()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self._lost = True
        self._input_done = True
        self._queue.clear()
        for call in (self._compat_call, self._idle_call, self._abort_call, self._request_call):
            if call is not None and call.active():
                call.cancel()
        self._compat_call = self._idle_call = self._abort_call = self._request_call = None
        self.factory.connection_closed(self)

    def readConnectionLost(self) -> None:
        """The peer half-closed: answer what it sent, then close."""
        self._end_input(libhalp=self._first_request_unfinished())

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    # -- IPushProducer: the transport's write buffer -------------------------

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: answer nothing, read nothing."""
        self._output_full = True
        self._set_reading(False)

    def resumeProducing(self) -> None:
        """The transport's write buffer has drained."""
        self._output_full = False
        self._pump()

    def stopProducing(self) -> None:
        """The connection is going away: answer nothing more."""
        self._output_full = True
        self._paused = True

    def _set_reading(self, reading: bool) -> None:
        if reading != self._paused or self._lost:
            return
        self._paused = not reading
        if not self._eof:
            if reading:
                self.transport.resumeProducing()
            else:
                self.transport.pauseProducing()
        if reading:
            self._take_lines()
        else:
            # While the server does not read, the peer cannot finish its
            # request: its deadline starts again when reading resumes.
            self._cancel_request_deadline()

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._eof or self._input_done:
            return  # the connection is closing: nothing more is read
        self._reset_idle()
        self._lines.feed(data)
        self._take_lines()
        self._watch_for_libhalp()

    def _take_lines(self) -> None:
        """Decode buffered lines while reading is on."""
        while not self._paused and not self._input_done:
            line: bytes | _Burst | None
            try:
                if self._queue or self._busy or self._output_full or self._libhalp or self._decoder.in_block:
                    line = self._lines.next_line()
                else:
                    line = self._answer_kept()
                    if isinstance(line, _Burst):
                        continue  # the writes may have filled the output buffer
            except ProtocolError as e:
                self._set_reading(False)
                self._input_done = True  # nothing after this line is acted on
                self._enqueue(e)
                self._enqueue(_CLOSE)
                return
            if line is None:
                if self._eof:
                    self._input_done = True
                    item = self._decoder.end()
                    if item is not None:
                        self._enqueue(item)
                    self._enqueue(_CLOSE)
                else:
                    self._watch_request()
                return
            item = self._decoder.feed(line)
            if item is not None:
                self._cancel_request_deadline()
                self._enqueue(item, line)

    def _answer_kept(self) -> bytes | _Burst | None:
        """
        The fast path, for when nothing is ahead of the buffered lines:
        answer those the factory keeps answers for (``get`` lines answered
        before, see :mod:`halp.answers`) without parsing them, up to the
        first it does not, which is returned (``None`` when no complete line
        is left), or :data:`_BURST` after :attr:`KEPT_BURST` answers.
        """
        lines, answers = self._lines, self.factory.answers
        now = self.factory.clock.seconds()
        kept: list[Answer] = []
        try:
            while True:
                line = lines.next_line()  # line-too-long: after the writes
                if line is None:
                    return None
                answer = answers.lookup(line, now)
                if answer is None:
                    return line
                kept.append(answer)
                if len(kept) == self.KEPT_BURST:
                    return _BURST
        finally:
            if kept:
                self._any_request = True
                if self._request_call is not None:
                    self._cancel_request_deadline()
                self._write_kept(kept)

    def _write_kept(self, kept: list[Answer]) -> None:
        if len(kept) == 1:
            self.transport.write(kept[0].data)
        else:
            self.transport.writeSequence([answer.data for answer in kept])
        self._reset_idle()
        self.factory.log_answers(self, kept)

    # -- request deadline ----------------------------------------------------

    def _watch_request(self) -> None:
        """
        All complete lines are taken: if a request has begun (part of a
        line, or an open insert or push block), it must be complete within
        the factory's ``request_timeout`` of the read that began it.
        """
        if self._request_call is None and (self._lines.partial or self._decoder.in_block):
            self._request_call = self.factory.clock.callLater(
                self.factory.request_timeout, self._request_late
            )

    def _cancel_request_deadline(self) -> None:
        if self._request_call is not None and self._request_call.active():
            self._request_call.cancel()
        self._request_call = None

    def _request_late(self) -> None:
        """A request took too long to arrive (a slowloris): answer what
        came before it, then an error, and close."""
        self._request_call = None
        if self._input_done or self._lost:
            return
        self.factory.log_late(self)
        self._set_reading(False)
        self._input_done = True  # nothing more is acted on
        timeout = self.factory.request_timeout
        self._enqueue(
            ProtocolError(ErrorCode.BAD_REQUEST, f"request not complete within {timeout:g} s")
        )
        self._enqueue(_CLOSE)

    def _first_request_unfinished(self) -> bool:
        return not self._any_request and (self._decoder.in_block or self._lines.partial)

    def _watch_for_libhalp(self) -> None:
        if self._compat_call is not None and self._compat_call.active():
            self._compat_call.cancel()
        self._compat_call = None
        if self._lines.partial and self._first_request_unfinished() and not self._eof:
            self._compat_call = self.factory.clock.callLater(
                self.factory.compat_window, self._compat_timeout
            )

    def _compat_timeout(self) -> None:
        self._compat_call = None
        self._end_input(libhalp=True)

    def _end_input(self, libhalp: bool) -> None:
        """No more input will come: answer what is buffered, then close."""
        if self._eof:
            return
        self._eof = True
        self._libhalp = libhalp
        self._lines.end()
        self._take_lines()

    # -- answering -----------------------------------------------------------

    def _enqueue(self, item: _Item, line: bytes = b"") -> None:
        """Queue ``item``; ``line`` is the request line of a ``get``."""
        self._any_request = self._any_request or not isinstance(item, _Close)
        self._queue.append((item, line))
        if len(self._queue) > self.MAX_QUEUED:
            self._set_reading(False)
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._lost:
                while self._queue and not self._busy and not self._output_full:
                    if not self._answer_next():
                        return
                if (
                    self._paused
                    and not self._output_full
                    and not self._input_done
                    and len(self._queue) <= self.MAX_QUEUED // 2
                ):
                    # Reading again may queue (and answer) more requests.
                    self._set_reading(True)
                    continue
                return
        finally:
            self._pumping = False

    def _answer_next(self) -> bool:
        """Start answering the next queued item; ``False`` once closing."""
        item, line = self._queue.popleft()
        if isinstance(item, _Close):
            self._close()
            return False
        if isinstance(item, ProtocolError):
            self._send(item, Reply((), format_error(item.code, item.message)))
            return True
        if isinstance(item, Quit):
            self._send(item, Reply((), format_ok("bye")))
            self._close()
            return False
        if line and not self._libhalp:
            answer = self.factory.answers.lookup(line, self.factory.clock.seconds())
            if answer is not None:
                # Kept since the request was queued.
                self._write_kept([answer])
                return True
        self._busy = True
        self.factory.respond(item, self.peer_host, line).addCallback(self._replied, item).addErrback(
            self._crashed
        )
        return True

    def _replied(self, reply: Reply, request: Request) -> None:
        self._busy = False
        self._send(request, reply)
        self._pump()

    def _crashed(self, failure: Failure) -> None:
        self._log.failure("Connection {peer} failed", failure, peer=self.peer)
        if not self._lost:
            self.transport.abortConnection()

    def _send(self, request: Request | ProtocolError, reply: Reply) -> None:
        if self._lost:
            return
        if self._libhalp and reply.status.startswith(b"ok"):
            # libhalp clients read data lines until the server closes; an
            # error line still tells a human what went wrong.
            self.transport.writeSequence(reply.lines)
        else:
            self.transport.writeSequence(reply.lines + (reply.status,))
        self._reset_idle()
        self.factory.log_request(self, request, reply)

    def _close(self) -> None:
        self._input_done = True
        self._queue.clear()
        self._cancel_request_deadline()
        if self._abort_call is not None:
            return  # already closing
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        # A registered streaming producer would hold the close back.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        # loseConnection waits for the peer to read what is buffered; one
        # that never reads is cut off.
        self._abort_call = self.factory.clock.callLater(
            self.factory.abort_timeout, self.transport.abortConnection
        )

    # -- idle timeout --------------------------------------------------------

    def _reset_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self.factory.idle_timeout)
        elif not self._input_done:
            self._idle_call = self.factory.clock.callLater(
                self.factory.idle_timeout, self._idle
            )

    def _idle(self) -> None:
        self._idle_call = None
        if self._busy or self._lost:
            return
        self.factory.log_idle(self)
        self._close()


class HALPServerFactory(Factory):
    """
    Builds :class:`HALPServerProtocol` connections over one
    :class:`~halp.core.HALPCore` and answers their requests.

    :param core: the rules and the store.
    :param clock: for timeouts (the reactor, or a ``Clock`` in tests).
    :param idle_timeout: seconds of silence after which a connection is
        closed.
    :param compat_window: seconds of silence after an unterminated first
        request before it is answered the libhalp way.
    :param abort_timeout: seconds a closing connection may take to drain
        before it is aborted.
    :param request_timeout: seconds a request may take to arrive, from the
        read that brought its first byte to its line ending (for an insert
        or push block, to its empty line); a slower one is answered
        ``error bad-request`` and the connection closed.
    :param limiter: the connection caps, shared with the server's other
        listeners; by default one of its own with the default caps.  A
        connection over a cap is answered with one ``error busy`` line and
        closed.
    :param log_requests: whether to log every request with its result
        (connections, idle closes and unexpected failures are always
        logged).
    :param answer_cache: the longest, in seconds, that the encoded answer
        to a ``get`` line is written again without asking the store (see
        :mod:`halp.answers`); ``0`` asks the store every time.
    """

    protocol = HALPServerProtocol  # type: ignore[assignment]
    noisy = False
    _log = Logger()

    def __init__(
        self,
        core: HALPCore,
        clock: IReactorTime,
        *,
        idle_timeout: float = 60.0,
        compat_window: float = 0.3,
        abort_timeout: float = 15.0,
        request_timeout: float = 30.0,
        limiter: ConnectionLimiter | None = None,
        log_requests: bool = True,
        answer_cache: float = 1.0,
    ) -> None:
        self.core = core
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.compat_window = compat_window
        self.abort_timeout = abort_timeout
        self.request_timeout = request_timeout
        self.limiter = limiter if limiter is not None else ConnectionLimiter()
        self.log_requests = log_requests
        self.answers = AnswerCache(core, clock, answer_cache)
        self.connections: set[HALPServerProtocol] = set()
        #: The limiter key of each admitted connection, until it closes.
        self._admitted: dict[HALPServerProtocol, str | None] = {}

    # -- connection events ---------------------------------------------------

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """
        A :class:`HALPServerProtocol` for a connection from ``addr`` that
        the :attr:`limiter` admits, else a
        :class:`~halp.connlimit.Refusal` that answers ``error busy``.
        """
        key, message = admit(self.core, self.limiter, self.clock, "halp1", addr)
        if message is not None:
            return Refusal(
                format_error(ErrorCode.BUSY, message), self.clock, self.abort_timeout
            )
        proto = cast(HALPServerProtocol, super().buildProtocol(addr))
        self._admitted[proto] = key
        return proto

    def connection_opened(self, proto: HALPServerProtocol) -> None:
        self.connections.add(proto)
        self.core.traffic.connected("halp1", 1)
        self._log.info("{peer} connected", peer=proto.peer)

    def connection_closed(self, proto: HALPServerProtocol) -> None:
        if proto in self.connections:
            self.connections.discard(proto)
            self.core.traffic.connected("halp1", -1)
        if proto in self._admitted:
            self.limiter.release(self._admitted.pop(proto))
        self._log.info("{peer} disconnected", peer=proto.peer)

    def log_request(
        self, proto: HALPServerProtocol, request: Request | ProtocolError, reply: Reply
    ) -> None:
        what = (
            "(malformed request)" if isinstance(request, ProtocolError) else summarize(request)
        )
        status = reply.status.decode("ascii").rstrip("\n")
        if status.startswith("ok"):
            result, message = "ok", ""
        else:
            # "error CODE MESSAGE"
            _, _, rest = status.partition(" ")
            result, _, message = rest.partition(" ")
        self.core.traffic.record(
            "halp1",
            _KINDS.get(type(request), "malformed"),
            result or "internal",
            when=self.core.now(),
            peer=proto.peer_host,
            request=what,
            message=message,
        )
        if not self.log_requests:
            return
        self._log.info(
            "{peer} {request} -> {status}",
            peer=proto.peer,
            request=what,
            status=status,
            lines=len(reply.lines),
        )

    def log_answers(self, proto: HALPServerProtocol, answers: list[Answer]) -> None:
        """Count (and log) ``get`` requests answered from :attr:`answers`."""
        self.core.traffic.requests[("halp1", "get", "ok")] += len(answers)
        if self.log_requests:
            for answer in answers:
                self._log.info(
                    "{peer} {request} -> {status}",
                    peer=proto.peer,
                    request=answer.summary,
                    status=answer.status,
                    lines=answer.lines,
                )

    def log_late(self, proto: HALPServerProtocol) -> None:
        self._log.info(
            "{peer} did not complete a request within {timeout} s, closing",
            peer=proto.peer,
            timeout=self.request_timeout,
        )

    def log_idle(self, proto: HALPServerProtocol) -> None:
        self._log.info("{peer} idle for {timeout} s, closing", peer=proto.peer, timeout=self.idle_timeout)

    # -- answering -----------------------------------------------------------

    def respond(self, request: Request, peer: str = "", line: bytes = b"") -> Deferred[Reply]:
        """
        Answer one request from the client at address ``peer`` (a host).
        The Deferred never fails: every failure becomes an ``error`` status
        line.  The answer to a ``get`` sent as ``line`` is kept in
        :attr:`answers` for the next time that line comes.
        """
        return maybeDeferred(self._dispatch, request, peer, line).addErrback(
            self._failed, request
        )

    def _dispatch(self, request: Request, peer: str, line: bytes) -> Deferred[Reply]:
        core = self.core
        if isinstance(request, Get):
            d = core.get(request.label, request.window)
            if line:
                return d.addCallback(self._kept_entries, request, line, self.answers.generation)
            return d.addCallback(self._entries)
        if isinstance(request, ListLabels):
            return core.list_labels(request.parent, request.window).addCallback(
                self._labels
            )
        if isinstance(request, Insert):
            source = peer or UNKNOWN_SOURCE
            return core.insert(request.labels, request.entries, source).addCallback(
                self._inserted
            )
        if isinstance(request, Hello):
            return succeed(self._fields(core.hello()))
        if isinstance(request, Changes):
            return core.changes(request.cursor, request.limit).addCallback(self._changes)
        if isinstance(request, Push):
            peer = peer or UNKNOWN_SOURCE
            via = request.server or peer
            return core.push(request.changes, via, peer).addCallback(self._pushed)
        if isinstance(request, Stats):
            return succeed(self._fields(core.stats_fields()))
        if isinstance(request, Peers):
            lines = tuple(
                format_peer(p.address, p.state, p.quality, p.pinned) for p in core.peers()
            )
            return succeed(Reply(lines, format_ok(str(len(lines)))))
        raise AssertionError(f"no handler for {request!r}")

    @staticmethod
    def _page_status(page: Page[Entry] | Page[LabelInfo], limit: int) -> bytes:
        if page.capped:
            return format_ok(f"{len(page.items)} capped-at {limit}")
        return format_ok(str(len(page.items)))

    def _entries(self, page: Page[Entry]) -> Reply:
        lines = tuple(format_entry(e) for e in page.items)
        return Reply(lines, self._page_status(page, self.core.limits.max_slice))

    def _kept_entries(self, page: Page[Entry], request: Get, line: bytes, generation: int) -> Reply:
        reply = self._entries(page)
        self.answers.keep(line, request, reply, page.items, generation)
        return reply

    def _labels(self, page: Page[LabelInfo]) -> Reply:
        lines = tuple(format_label(info) for info in page.items)
        return Reply(lines, self._page_status(page, self.core.limits.max_slice))

    @staticmethod
    def _fields(fields: list[tuple[str, object]]) -> Reply:
        return Reply(tuple(format_field(k, v) for k, v in fields), format_ok())

    @staticmethod
    def _changes(page: ChangePage) -> Reply:
        lines = tuple(format_change(c) for c in page.changes)
        return Reply(lines, format_changes_status(len(lines), page.cursor, page.more))

    @staticmethod
    def _pushed(result: Replicated) -> Reply:
        lines = tuple(format_failure(r.label, r.raw, r.reason) for r in result.refused)
        pending = f" {result.pending} pending" if result.pending else ""
        return Reply(
            lines,
            format_ok(
                f"{result.changed} changed {result.unchanged} unchanged "
                f"{len(result.refused)} refused{pending}"
            ),
        )

    @staticmethod
    def _inserted(outcomes: list[Stored | Refused | Pending]) -> Reply:
        lines = []
        stored = pending = 0
        for outcome in outcomes:
            if isinstance(outcome, Stored):
                stored += 1
                lines.append(format_success(outcome.label, outcome.entry))
            elif isinstance(outcome, Pending):
                pending += 1
                lines.append(format_pending(outcome.label, outcome.raw, outcome.reason))
            else:
                lines.append(format_failure(outcome.label, outcome.raw, outcome.reason))
        failed = len(outcomes) - stored - pending
        waiting = f" {pending} pending" if pending else ""
        return Reply(tuple(lines), format_ok(f"{stored} stored {failed} failed{waiting}"))

    def _failed(self, failure: Failure, request: Request) -> Reply:
        if failure.check(ProtocolError):
            error = failure.value
            assert isinstance(error, ProtocolError)
            return Reply((), format_error(error.code, error.message))
        if failure.check(StoreError):
            error = failure.value
            assert isinstance(error, StoreError)
            self.core.store_failed(summarize(request), error)
            return Reply(
                (), format_error(ErrorCode.UNAVAILABLE, "store unavailable, try again later")
            )
        self._log.failure("Unexpected error answering {request}", failure, request=summarize(request))
        return Reply((), format_error(ErrorCode.INTERNAL, "internal server error"))
