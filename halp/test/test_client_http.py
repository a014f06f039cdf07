"""
Tests for servers' HTTP faces as servers of :class:`~halp.client.HALPClient`
(:mod:`halp.client.http`): real :class:`~halp.web.HALPSite` objects and
HALP/1 servers on a :class:`~halp.testing.FakeNetwork`, in memory, with
time only from the network's clock.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, TypeVar

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost, DNSLookupError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, RequestTransmissionFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from halp.client import HALPClient, ServerAddress, ServerRecord
from halp.client.client import STATE_KEY
from halp.client.http import MAX_HTTP_ANSWER, HTTPExchange
from halp.client.servers import BACKOFF_BASE, INITIAL_QUALITY, SERVER_LABELS
from halp.error import (
    BadResponse,
    ClientError,
    ConnectionClosed,
    NoServerAvailable,
    ServerRefused,
    StoreError,
    Timeout,
)
from halp.model import Change, Entry, LabelInfo, Merged
from halp.stats import COUNTERS
from halp.store import insert_entries
from halp.store.memory import MemoryStore
from halp.testing import FakeNetwork
from halp.web import HALPSite
from halp.wire import Changes, Get, Hello, ListLabels, Stats, parse_field_line

T = TypeVar("T")

NOW = 1_700_000_000

#: An HTTP face, as a user names it and as the client keeps it.
WEB_URL = "http://192.0.2.1:8080/"
WEB = ServerAddress("192.0.2.1", 8080, "http")
#: A HALP/1 server.
LINE = ServerAddress("192.0.2.2", 7100)
#: Another HTTP face, learned rather than given.
LEARNED_WEB = ServerAddress("192.0.2.60", 8080, "http")


def entry(age: int, n: int, port: int = 6881) -> Entry:
    """A peer ``198.51.100.n`` confirmed ``age`` seconds before NOW."""
    return Entry(NOW - age, f"198.51.100.{n}", port)


def put(store: MemoryStore, label: str, *entries: Entry) -> None:
    insert_entries(store, [label], list(entries), 1000)


class _Page(Resource):
    """Answers every request with ``body`` as ``kind``, with ``code``."""

    isLeaf = True

    def __init__(self, body: bytes, kind: bytes, code: int = 200) -> None:
        super().__init__()
        self.body = body
        self.kind = kind
        self.code = code
        self.requests: list[bytes] = []

    def render(self, request: Request) -> bytes:
        self.requests.append(request.uri)
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", self.kind)
        return self.body


class _FailingStore(MemoryStore):
    """A server's store whose reads and writes fail, as a broken disk would."""

    def get(self, label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        return fail(StoreError("disk on fire"))

    def merge(
        self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        return fail(StoreError("disk on fire"))


@implementer(IAgent)
class _Failing:
    """An agent whose every request fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        return fail(self.error)


class HTTPClientTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = FakeNetwork()
        self.network.clock.advance(NOW)
        self.cache = MemoryStore()
        self.sites: dict[ServerAddress, HALPSite] = {}
        self.stores: dict[ServerAddress, MemoryStore] = {}

    def web(
        self, address: ServerAddress = WEB, *entries: Entry, label: str = "app"
    ) -> MemoryStore:
        """Run a HALP HTTP face at ``address`` holding ``entries`` under ``label``."""
        store = MemoryStore()
        if entries:
            put(store, label, *entries)
        self.sites[address] = self.network.http_server(address, store)
        self.stores[address] = store
        return store

    def line(
        self, address: ServerAddress = LINE, *entries: Entry, label: str = "app"
    ) -> MemoryStore:
        """Run a HALP/1 server at ``address`` holding ``entries`` under ``label``."""
        store = MemoryStore()
        if entries:
            put(store, label, *entries)
        self.network.halp_server(address, store)
        self.stores[address] = store
        return store

    def garbage(self, address: ServerAddress, page: Resource) -> None:
        """Serve a plain twisted.web site (not HALP) at ``address``."""
        self.network.listen(address, Site(page))

    def client(
        self, *seeds: ServerAddress | str, cache: MemoryStore | None = None, **options: Any
    ) -> HALPClient:
        return HALPClient(
            self.network.clock,
            cache if cache is not None else self.cache,
            seeds,
            endpoint=self.network.endpoint,
            http=self.network.http_client(),
            **options,
        )

    def done(self, d: Deferred[T]) -> T:
        """Deliver all traffic, then the Deferred's result."""
        self.network.flush()
        return self.successResultOf(d)

    def record(self, client: HALPClient, address: ServerAddress) -> ServerRecord:
        for record in self.successResultOf(client.servers()):
            if record.address == address:
                return record
        raise AssertionError(f"{address} is not known")

    def known(self, client: HALPClient) -> set[ServerAddress]:
        return {r.address for r in self.successResultOf(client.servers())}

    def cached(self, label: str) -> list[Entry]:
        return self.successResultOf(self.cache.get(label, 0, 1000, 0))

    def stored(self, address: ServerAddress, label: str) -> list[Entry]:
        """What the server at ``address`` holds in ``label``."""
        site = self.sites.get(address)
        store = site.core.store if site is not None else self.stores[address]
        return self.successResultOf(store.get(label, 0, 1000, 0))


# -- lookup ----------------------------------------------------------------------


class LookupTests(HTTPClientTestCase):
    def test_newest_first_and_cached(self) -> None:
        """
        A lookup through an HTTP seed answers the server's entries newest
        first, keeps them in the cache, and lists the server under
        ``halp/http``.
        """
        self.web(WEB, entry(300, 3), entry(100, 1), entry(200, 2))
        client = self.client(WEB_URL)
        self.assertEqual(client.seeds, (WEB,))
        peers = self.done(client.lookup("app"))
        expected = [entry(100, 1), entry(200, 2), entry(300, 3)]
        self.assertEqual(list(peers), expected)
        self.assertFalse(peers.from_cache)
        self.assertEqual(
            [(r.server, r.ok, r.dialect) for r in peers.results], [(WEB, True, "halp1")]
        )
        self.assertEqual(str(peers.results[0].server), WEB_URL)
        self.assertEqual(self.cached("app"), expected)
        self.assertEqual(self.cached("halp/http"), [Entry(NOW, "192.0.2.1", 8080)])
        self.assertEqual(self.cached("halp"), [])
        record = self.record(client, WEB)
        self.assertEqual((record.scheme, record.successes, record.entries), ("http", 1, 3))
        self.assertEqual(record.quality, INITIAL_QUALITY + 100 + 3)

        # With the server gone, a new client answers from the cache.
        self.network.refuse(WEB)
        later = self.client(WEB_URL)
        peers = self.done(later.lookup("app"))
        self.assertEqual(list(peers), expected)
        self.assertTrue(peers.from_cache)

    def test_limit(self) -> None:
        """
        The window asks for four times the limit (candidates for
        fair_merge): the server answers its 7, the lookup keeps 3.
        """
        self.web(WEB, *(entry(i, i) for i in range(1, 8)))
        client = self.client(WEB)
        peers = self.done(client.lookup("app", 3))
        self.assertEqual(list(peers), [entry(1, 1), entry(2, 2), entry(3, 3)])
        self.assertEqual(self.record(client, WEB).entries, 7)

    def test_sublabel(self) -> None:
        """A label with segments is asked for at its path."""
        self.web(WEB, entry(10, 1), label="game/chess")
        client = self.client(WEB)
        peers = self.done(client.lookup("game/chess"))
        self.assertEqual(list(peers), [entry(10, 1)])

    def test_ipv6(self) -> None:
        """An HTTP face at an IPv6 address is asked at ``http://[ADDRESS]:PORT/``."""
        address = ServerAddress("2001:db8::5", 8080, "http")
        self.web(address, entry(10, 1))
        client = self.client("http://[2001:DB8::5]:8080/")
        self.assertEqual(client.seeds, (address,))
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertEqual(str(peers.results[0].server), "http://[2001:db8::5]:8080/")
        self.assertEqual(self.cached("halp/http"), [Entry(NOW, "2001:db8::5", 8080)])

    def test_mixed_seeds_fair_merge(self) -> None:
        """
        A HALP/1 server and an HTTP face are asked together and their
        answers fair-merged: the liar gets its share only.
        """
        liar = [Entry(NOW - i, f"203.0.113.{i}", 1) for i in range(1, 11)]
        honest = [entry(1000, 1), entry(2000, 2), entry(3000, 3)]
        self.line(LINE, *liar)
        self.web(WEB, *honest)
        client = self.client(LINE, WEB_URL)
        peers = self.done(client.lookup("app", 4))
        self.assertEqual(list(peers), liar[:2] + honest[:2])
        self.assertEqual({r.server for r in peers.results if r.ok}, {LINE, WEB})
        peers = self.done(client.lookup("app", 10))
        self.assertEqual(list(peers), liar[:7] + honest)
        # Each server is listed under the label of its scheme.
        self.assertEqual(self.cached("halp"), [Entry(NOW, LINE.host, LINE.port)])
        self.assertEqual(self.cached("halp/http"), [Entry(NOW, WEB.host, WEB.port)])

    def test_disagreeing_servers_merged(self) -> None:
        """An address both report takes the newer time."""
        self.line(LINE, entry(1000, 1), entry(500, 2))
        self.web(WEB, entry(100, 1), entry(300, 3))
        client = self.client(LINE, WEB)
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(100, 1), entry(300, 3), entry(500, 2)])

    def test_down_fails_over_with_backoff(self) -> None:
        """
        An HTTP face that refuses connections fails over to the next
        server and goes into backoff as a HALP/1 server would: it loses
        quality, counts failures in a row, and is asked last until its
        backoff is over.
        """
        self.line(LINE, entry(10, 1))
        client = self.client(WEB, LINE, queries=1)
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertFalse(peers.from_cache)
        self.assertEqual(self.network.attempts, [WEB, LINE])
        failed, answered = peers.results
        self.assertEqual((failed.server, answered.server), (WEB, LINE))
        self.assertIsInstance(failed.error, ConnectionClosed)
        self.assertIn("unreachable", failed.describe())
        self.assertTrue(failed.describe().startswith(WEB_URL))
        record = self.record(client, WEB)
        self.assertEqual(
            (record.failures, record.failures_in_row, record.quality, record.retry_at),
            (1, 1, INITIAL_QUALITY - 100, NOW + BACKOFF_BASE),
        )
        self.assertTrue(record.in_backoff(NOW))

        # Down again: a second failure in a row doubles the wait.
        self.network.advance(BACKOFF_BASE)
        self.network.refuse(LINE)
        peers = self.done(client.lookup("app"))
        self.assertTrue(peers.from_cache)
        record = self.record(client, WEB)
        now = NOW + BACKOFF_BASE
        self.assertEqual(
            (record.failures_in_row, record.quality, record.retry_at),
            (2, INITIAL_QUALITY - 200, now + 2 * BACKOFF_BASE),
        )

        # Back up: one answer ends the backoff.
        self.web(WEB, entry(5, 2))
        self.network.advance(2 * BACKOFF_BASE)
        peers = self.done(client.lookup("app"))
        self.assertFalse(peers.from_cache)
        self.assertEqual(peers[0], entry(5, 2))
        record = self.record(client, WEB)
        self.assertEqual((record.failures_in_row, record.retry_at, record.failures), (0, 0, 2))

    def test_backoff_asked_last(self) -> None:
        """An HTTP face in backoff is asked after a HALP/1 server that answered later."""
        self.line(LINE, entry(10, 1))
        self.web(WEB, entry(20, 2))
        client = self.client(WEB, LINE, queries=1)
        self.network.refuse(WEB)
        self.done(client.lookup("app"))
        self.assertEqual(self.network.attempts, [WEB, LINE])
        self.web(WEB, entry(20, 2))
        self.network.advance(10)
        peers = self.done(client.lookup("app"))
        self.assertEqual(self.network.attempts[2:], [LINE])
        self.assertEqual([r.server for r in peers.results], [LINE])

    def test_error_answer_fails_over(self) -> None:
        """
        An HTTP face answering with a HALP error (its store is broken:
        503 ``unavailable``) counts as failed; the next server answers.
        """
        self.sites[WEB] = self.network.http_server(WEB, _FailingStore())
        self.line(LINE, entry(10, 1))
        client = self.client(WEB, LINE, queries=1)
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        failed = [r for r in peers.results if not r.ok]
        self.assertEqual([r.server for r in failed], [WEB])
        self.assertIsInstance(failed[0].error, ServerRefused)
        self.assertIn("unavailable", str(failed[0].error))
        self.assertEqual(self.record(client, WEB).failures_in_row, 1)


class GarbageTests(HTTPClientTestCase):
    """Something that is not a HALP HTTP face answers at the address."""

    def assertGarbage(self, page: Resource, *parts: str) -> None:
        """
        A lookup fails over past ``page`` (served at WEB) to LINE; WEB's
        result is a :class:`BadResponse` naming ``parts``, and WEB is in
        backoff.
        """
        self.garbage(WEB, page)
        self.line(LINE, entry(10, 1))
        client = self.client(WEB, LINE, queries=1)
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertFalse(peers.from_cache)
        bad, good = peers.results
        self.assertEqual((bad.server, good.server), (WEB, LINE))
        self.assertIsInstance(bad.error, BadResponse)
        for part in parts:
            self.assertIn(part, str(bad.error))
        record = self.record(client, WEB)
        self.assertEqual((record.failures_in_row, record.successes), (1, 0))
        self.assertLess(record.quality, INITIAL_QUALITY)
        # Nothing of the garbage reached the cache.
        self.assertEqual(self.cached("app"), [entry(10, 1)])
        # The client still works (and the broken server is asked last).
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertIsNone(self.done(client.close()))

    def test_html_page(self) -> None:
        """An HTML page answered with 200 is not a HALP answer."""
        page = _Page(b"<html><body>Welcome to nginx!</body></html>", b"text/html")
        self.assertGarbage(page, "text/html")
        self.assertTrue(page.requests[0].startswith(b"/v1/labels/app?"))

    def test_redirect_is_not_followed(self) -> None:
        """
        A redirect to another HALP face is not followed: the answer would
        be credited to the server that redirected.
        """
        other = ServerAddress("192.0.2.99", 8080, "http")
        self.network.http_server(other)
        page = _Page(b"", b"text/html", 302)
        original = page.render

        def render(request: Request) -> bytes:
            request.setHeader(b"location", other.url.encode("ascii") + b"v1/labels/app")
            return original(request)

        page.render = render  # type: ignore[method-assign]
        self.assertGarbage(page, "302", "text/html")
        self.assertNotIn(other, self.network.attempts)

    def test_answer_without_a_length_is_not_trusted(self) -> None:
        """An answer ended by a close may be cut short: it is not used."""

        class Cut(Protocol):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Connection: close\r\n\r\n%d 198.51.100.1 68" % (NOW - 10)
                )
                self.transport.loseConnection()

        self.network.listen(WEB, Factory.forProtocol(Cut))
        self.line(LINE, entry(10, 1))
        client = self.client(WEB, LINE, queries=1)
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertIsInstance(peers.results[0].error, BadResponse)
        self.assertIn("without a length", str(peers.results[0].error))

    def test_not_found_page(self) -> None:
        """A web server without the HALP API answers 404 with HTML."""
        self.assertGarbage(Resource(), "404", "text/html")

    def test_error_without_halp_error(self) -> None:
        """An error answer in JSON that is not a HALP error."""
        self.assertGarbage(_Page(b'{"detail": "no"}', b"application/json", 500), "500")

    def test_error_not_json(self) -> None:
        self.assertGarbage(_Page(b"{nope", b"application/json", 502), "not JSON")

    def test_text_that_is_not_entries(self) -> None:
        """A text answer whose lines are not entries."""
        self.assertGarbage(_Page(b"hello world\n", b"text/plain"), "bad entry line")

    def test_too_many_entries(self) -> None:
        """A text answer with more entries than asked for."""
        body = b"".join(b"%d 198.51.100.%d 1\n" % (NOW, i) for i in range(1, 42))
        self.assertGarbage(_Page(body, b"text/plain"), "41 entries sent, 40 asked for")

    def test_answer_too_long(self) -> None:
        """An answer over MAX_HTTP_ANSWER bytes is refused, not read whole."""
        line = b"%d 198.51.100.1 1\n" % NOW
        body = line * (MAX_HTTP_ANSWER // len(line) + 1)
        self.assertGreater(len(body), MAX_HTTP_ANSWER)
        self.assertGarbage(_Page(body, b"text/plain"), f"more than {MAX_HTTP_ANSWER} bytes")

    def test_answer_at_the_limit_is_read(self) -> None:
        """An answer of exactly MAX_HTTP_ANSWER bytes is read (and judged on its lines)."""
        body = b"x" * MAX_HTTP_ANSWER
        self.assertGarbage(_Page(body, b"text/plain"), "bad entry line")

    def test_insert_answer_garbage(self) -> None:
        """An announcement answered with a page that is not an insert answer."""
        self.garbage(WEB, _Page(b'{"stored": [{"host": 1}]}', b"application/json"))
        client = self.client(WEB)
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        (bad,) = result
        self.assertIsInstance(bad.error, BadResponse)
        self.assertFalse(bad.stored)
        self.assertEqual(self.record(client, WEB).failures_in_row, 1)

    def test_insert_answer_html(self) -> None:
        self.garbage(WEB, Resource())
        client = self.client(WEB)
        (bad,) = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertIsInstance(bad.error, BadResponse)
        self.assertIn("404", str(bad.error))


class _Vanishing(Protocol):
    """Closes the connection on the first bytes, unanswered."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class _CutShort(Protocol):
    """Starts an answer of 100 bytes, sends part of it and closes."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
            b"%d 198.51.100.1 1\n" % NOW
        )
        self.transport.loseConnection()


class _Stalling(Resource):
    """Sends the headers and ``start`` of a body, then nothing more."""

    isLeaf = True

    def __init__(self, start: bytes) -> None:
        super().__init__()
        self.start = start
        self.requests: list[Request] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        if self.start:
            request.setHeader(b"content-type", b"text/plain")
            request.setHeader(b"content-length", b"1000")
            request.write(self.start)
        return NOT_DONE_YET


@implementer(IAgentEndpointFactory)
class _Unresolvable:
    """Endpoints whose host names do not resolve."""

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return _UnresolvableEndpoint()


@implementer(IStreamClientEndpoint)
class _UnresolvableEndpoint:
    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return fail(DNSLookupError("no results for hostname lookup: halp.invalid"))


class BrokenConnectionTests(HTTPClientTestCase):
    """
    The connection fails, or does not carry HTTP: each is a failure with
    a :class:`ClientError` of its own, not an unexpected error (which
    would be logged, and fail the test).
    """

    def assertFails(self, kind: type[ClientError], *parts: str) -> None:
        """A lookup fails over past WEB to LINE; WEB's error is ``kind``."""
        self.line(LINE, entry(10, 1))
        client = self.client(WEB, LINE, queries=1)
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        bad, good = peers.results
        self.assertEqual((bad.server, good.server), (WEB, LINE))
        self.assertIsInstance(bad.error, kind)
        for part in parts:
            self.assertIn(part, str(bad.error))
        self.assertNotIn("unexpected", str(bad.error))
        self.assertEqual(self.record(client, WEB).failures_in_row, 1)

    def test_closed_unanswered(self) -> None:
        self.network.listen(WEB, Factory.forProtocol(_Vanishing))
        self.assertFails(ConnectionClosed, "closed the connection before answering")

    def test_cut_short(self) -> None:
        self.network.listen(WEB, Factory.forProtocol(_CutShort))
        self.assertFails(ConnectionClosed, "in the middle of the HTTP answer")

    def test_halp1_server_at_the_address(self) -> None:
        """A HALP/1 server where an HTTP face was expected answers with no HTTP."""
        self.network.halp_server(WEB)
        self.assertFails(BadResponse, "not an HTTP answer")

    def test_unresolvable(self) -> None:
        """A host name that does not resolve is a server that cannot be reached."""
        client = HALPClient(
            self.network.clock,
            self.cache,
            ["http://halp.invalid:8080/"],
            endpoint=self.network.endpoint,
            http=HTTPClient(Agent.usingEndpointFactory(self.network.clock, _Unresolvable())),
        )
        peers = self.done(client.lookup("app"))
        (bad,) = peers.results
        self.assertEqual(str(bad.server), "http://halp.invalid:8080/")
        self.assertIsInstance(bad.error, ConnectionClosed)
        self.assertIn("cannot connect", str(bad.error))
        self.assertTrue(peers.from_cache)

    def test_unresolvable_halp1(self) -> None:
        """The same for a HALP/1 server."""
        client = HALPClient(
            self.network.clock,
            self.cache,
            ["halp.invalid:7100"],
            endpoint=lambda address: _UnresolvableEndpoint(),
            http=self.network.http_client(),
        )
        (bad,) = self.done(client.lookup("app")).results
        self.assertIsInstance(bad.error, ConnectionClosed)
        self.assertIn("no results for hostname lookup", str(bad.error))

    def assertTimesOut(self, page: _Stalling) -> None:
        """
        A lookup gives WEB half the timeout, then asks LINE; WEB's
        connection is closed, not left open.
        """
        self.garbage(WEB, page)
        self.line(LINE, entry(10, 1))
        client = self.client(WEB, LINE, queries=1, timeout=4.0)
        d = client.lookup("app")
        self.network.advance(1.999)
        self.assertNoResult(d)
        (request,) = page.requests
        self.assertFalse(request._disconnected)
        self.network.advance(0.001)
        peers = self.successResultOf(d)
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertIsInstance(peers.results[0].error, Timeout)
        self.assertTrue(request._disconnected)

    def test_timeout_before_the_answer(self) -> None:
        self.assertTimesOut(_Stalling(b""))

    def test_blackholed(self) -> None:
        """A face that never accepts the connection times out like a HALP/1 server."""
        self.network.blackhole(WEB)
        self.line(LINE, entry(10, 1))
        client = self.client(WEB, LINE, queries=1, timeout=4.0)
        d = client.lookup("app")
        self.network.advance(1.999)
        self.assertNoResult(d)
        self.network.advance(0.001)
        peers = self.successResultOf(d)
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertIsInstance(peers.results[0].error, Timeout)
        self.assertEqual(str(peers.results[0].error), "no answer within 2.0 s")

    def test_timeout_in_the_body(self) -> None:
        """A body that never ends: the connection is closed at the timeout."""
        self.assertTimesOut(_Stalling(b"%d 198.51.100.1 1\n" % NOW))


# -- announce ----------------------------------------------------------------------


class AnnounceTests(HTTPClientTestCase):
    def test_stored(self) -> None:
        """An HTTP face stores the announced entry and says so."""
        self.web(WEB)
        client = self.client(WEB_URL)
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual(self.stored(WEB, "app"), [Entry(NOW, "198.51.100.99", 4000)])
        self.assertEqual((len(result), result.reached, result.stored), (1, 1, 1))
        (r,) = result
        self.assertTrue(r.stored)
        self.assertEqual(r.dialect, "halp1")
        self.assertEqual(r.describe(), f"{WEB_URL} stored")
        (outcome,) = r.outcomes
        self.assertEqual((outcome.label, outcome.entry), ("app", Entry(NOW, "198.51.100.99", 4000)))
        self.assertEqual(self.record(client, WEB).successes, 1)

    def test_sublabel_and_ipv6(self) -> None:
        self.web(WEB)
        client = self.client(WEB)
        result = self.done(client.announce("game/chess", "2001:db8::7", 4000, NOW - 5))
        self.assertEqual(result.stored, 1)
        self.assertEqual(self.stored(WEB, "game/chess"), [Entry(NOW - 5, "2001:db8::7", 4000)])

    def test_refused(self) -> None:
        """
        An entry the server will not store (expired: 422) is reported as
        answered but not stored, with the server's reason.
        """
        self.web(WEB)
        client = self.client(WEB)
        old = NOW - 2 * 86_400  # servers keep a day, the client a month
        result = self.done(client.announce("app", "198.51.100.99", 4000, old))
        self.assertEqual((result.reached, result.stored), (1, 0))
        (r,) = result
        self.assertTrue(r.ok)
        self.assertFalse(r.stored)
        (outcome,) = r.outcomes
        self.assertFalse(outcome.stored)
        self.assertIn("expired", outcome.reason)
        self.assertEqual(outcome.offered, f"{old} 198.51.100.99 4000")
        self.assertTrue(r.describe().startswith(f"{WEB_URL} refused: expired"), r.describe())
        self.assertEqual(self.stored(WEB, "app"), [])
        # A refusal is an answer: the server is not in backoff.
        record = self.record(client, WEB)
        self.assertEqual((record.successes, record.failures_in_row), (1, 0))

    def test_mixed_fanout(self) -> None:
        """An announcement reaches HALP/1 servers and HTTP faces alike."""
        self.web(WEB)
        self.line(LINE)
        client = self.client(WEB, LINE)
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual(result.stored, 2)
        want = [Entry(NOW, "198.51.100.99", 4000)]
        self.assertEqual(self.stored(WEB, "app"), want)
        self.assertEqual(self.stored(LINE, "app"), want)

    def test_fails_over_past_down_face(self) -> None:
        self.line(LINE)
        client = self.client(WEB, LINE, fanout=1)
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual([(r.server, r.stored) for r in result], [(WEB, False), (LINE, True)])
        self.assertIsInstance(result[0].error, ConnectionClosed)


# -- labels ------------------------------------------------------------------------


class LabelsTests(HTTPClientTestCase):
    def setUp(self) -> None:
        super().setUp()
        store = self.web(WEB)
        put(store, "app", entry(100, 1))
        put(store, "game/chess", entry(50, 1))
        put(store, "game/go/19x19", entry(20, 2))
        put(store, "game/go", entry(70, 3))

    def test_top_level(self) -> None:
        client = self.client(WEB)
        rows = self.done(client.labels())
        self.assertEqual(list(rows), [LabelInfo(NOW - 20, "game"), LabelInfo(NOW - 100, "app")])
        self.assertFalse(rows.from_cache)
        self.assertEqual([r.server for r in rows.results], [WEB])

    def test_sublabels(self) -> None:
        """
        The HTTP listing names labels in full; the client turns them into
        the full names under the prefix, as from a HALP/1 server.
        """
        client = self.client(WEB)
        rows = self.done(client.labels("game"))
        self.assertEqual(
            list(rows), [LabelInfo(NOW - 20, "game/go"), LabelInfo(NOW - 50, "game/chess")]
        )
        self.assertFalse(rows.from_cache)
        rows = self.done(client.labels("game/go/"))
        self.assertEqual(list(rows), [LabelInfo(NOW - 20, "game/go/19x19")])
        rows = self.done(client.labels("nothing"))
        self.assertEqual(list(rows), [])

    def test_merged_with_halp1(self) -> None:
        line = self.line(LINE)
        put(line, "game/poker", entry(10, 4))
        put(line, "chat", entry(500, 4))
        client = self.client(WEB, LINE)
        rows = self.done(client.labels())
        self.assertEqual(
            list(rows),
            [LabelInfo(NOW - 10, "game"), LabelInfo(NOW - 100, "app"), LabelInfo(NOW - 500, "chat")],
        )
        rows = self.done(client.labels("game"))
        self.assertEqual(
            [r.name for r in rows], ["game/poker", "game/go", "game/chess"]
        )

    def test_exchange_lists_last_segments(self) -> None:
        """HTTPExchange answers a label listing with HALP/1's data lines."""
        exchange = HTTPExchange(self.network.http_client())
        d = Deferred.fromCoroutine(
            exchange.exchange(WEB, [ListLabels("game"), ListLabels("")])
        )
        sub, top = self.done(d)
        self.assertEqual(
            sub.lines, (b"%d go" % (NOW - 20), b"%d chess" % (NOW - 50))
        )
        self.assertTrue(sub.status is not None and sub.status.ok)
        self.assertEqual(top.lines, (b"%d game" % (NOW - 20), b"%d app" % (NOW - 100)))


# -- learning ----------------------------------------------------------------------


class LearningTests(HTTPClientTestCase):
    def setUp(self) -> None:
        super().setUp()
        # The HALP/1 seed lists an HTTP face in halp/http.
        seed = self.line(LINE, entry(10, 1))
        put(seed, SERVER_LABELS["http"], Entry(NOW - 5, LEARNED_WEB.host, LEARNED_WEB.port))
        self.web(LEARNED_WEB, entry(20, 2))

    def test_learns_http_face(self) -> None:
        """
        A HALP/1 server's ``halp/http`` label makes the client learn
        ``http://HOST:PORT/``: it joins the table with scheme ``http``,
        the cache's ``halp/http`` label, and then the lookups.
        """
        client = self.client(LINE, queries=1)
        self.done(client.lookup("app"))  # detects HALP/1
        self.assertNotIn(LEARNED_WEB, self.known(client))
        self.done(client.lookup("app"))  # learns
        self.assertIn(LEARNED_WEB, self.known(client))
        record = self.record(client, LEARNED_WEB)
        self.assertEqual((record.scheme, record.pinned, record.confirmed), ("http", False, NOW - 5))
        self.assertEqual(str(record.address), "http://192.0.2.60:8080/")
        self.assertIn(Entry(NOW - 5, "192.0.2.60", 8080), self.cached("halp/http"))
        # Not mistaken for a HALP/1 server on that port.
        self.assertNotIn(ServerAddress("192.0.2.60", 8080), self.known(client))
        self.assertNotIn(Entry(NOW - 5, "192.0.2.60", 8080), self.cached("halp"))

        # The seed goes down: the learned face answers.
        self.network.refuse(LINE)
        self.network.advance(1)
        peers = self.done(client.lookup("app"))
        self.assertFalse(peers.from_cache)
        self.assertIn(entry(20, 2), list(peers))
        self.assertEqual([r.server for r in peers.results if r.ok], [LEARNED_WEB])
        self.assertEqual(self.record(client, LEARNED_WEB).successes, 1)

    def test_lookup_of_halp_http(self) -> None:
        """Looking up ``halp/http`` itself teaches the client HTTP faces."""
        client = self.client(LINE, queries=1)
        peers = self.done(client.lookup("halp/http"))
        self.assertEqual(list(peers), [Entry(NOW - 5, "192.0.2.60", 8080)])
        self.assertIn(LEARNED_WEB, self.known(client))

    def test_learns_through_http_face(self) -> None:
        """An HTTP face's own ``halp`` list teaches HALP/1 servers."""
        put(self.stores[LEARNED_WEB], "halp", Entry(NOW - 3, "192.0.2.70", 7100))
        client = self.client(LEARNED_WEB)
        self.done(client.lookup("app"))
        self.assertIn(ServerAddress("192.0.2.70", 7100), self.known(client))
        self.assertIn(Entry(NOW - 3, "192.0.2.70", 7100), self.cached("halp"))
        self.assertEqual(self.record(client, LEARNED_WEB).learned_at, NOW)

    def test_round_trip_across_restart(self) -> None:
        """
        The saved table keeps the scheme: a new client on the same cache
        knows the learned face as an HTTP face, with its statistics.
        """
        client = self.client(LINE, queries=1)
        self.done(client.lookup("app"))
        self.done(client.lookup("app"))
        self.network.refuse(LINE)
        self.done(client.lookup("app"))
        before = self.record(client, LEARNED_WEB)
        self.assertEqual(before.successes, 1)
        self.done(client.close())

        saved = json.loads(self.successResultOf(self.cache.get_state(STATE_KEY)) or "{}")
        rows = {(r["host"], r["port"], r["scheme"]) for r in saved["servers"]}
        self.assertIn(("192.0.2.60", 8080, "http"), rows)
        self.assertIn(("192.0.2.2", 7100, "halp"), rows)

        later = self.client()
        self.assertEqual(self.record(later, LEARNED_WEB), before)
        self.assertEqual(self.known(later), {LINE, LEARNED_WEB})
        self.network.attempts.clear()
        peers = self.done(later.lookup("app"))
        self.assertIn(LEARNED_WEB, self.network.attempts)
        self.assertIn(LEARNED_WEB, [r.server for r in peers.results if r.ok])

    def test_pinned_http_seed_round_trip(self) -> None:
        """A pinned HTTP seed's statistics survive a restart under its scheme."""
        client = self.client(LEARNED_WEB)
        self.done(client.lookup("app"))
        self.done(client.close())
        later = self.client("http://192.0.2.60:8080")
        self.assertEqual(later.seeds, (LEARNED_WEB,))
        record = self.record(later, LEARNED_WEB)
        self.assertEqual((record.pinned, record.successes, record.scheme), (True, 1, "http"))

    def test_same_host_and_port_two_schemes(self) -> None:
        """
        A HALP/1 server and an HTTP face at the same host and port are two
        servers: each is learned, listed, and forgotten on its own.
        """
        both = ServerAddress(LEARNED_WEB.host, LEARNED_WEB.port)
        put(self.stores[LINE], "halp", Entry(NOW - 7, both.host, both.port))
        client = self.client(LINE, queries=1)
        self.done(client.lookup("app"))
        self.done(client.lookup("app"))
        self.assertTrue({both, LEARNED_WEB} <= self.known(client))
        self.assertEqual(self.record(client, both).scheme, "halp")
        self.assertEqual(self.record(client, LEARNED_WEB).scheme, "http")


# -- insert ------------------------------------------------------------------------


class InsertTests(HTTPClientTestCase):
    def test_insert_http_server(self) -> None:
        """``insert("halp/http", HOST, PORT)`` adds an HTTP face by hand."""
        self.web(WEB, entry(10, 1))
        client = self.client()
        stored = self.successResultOf(client.insert("halp/http", "192.0.2.1", 8080))
        self.assertEqual(stored, Entry(NOW, "192.0.2.1", 8080))
        self.assertEqual(self.known(client), {WEB})
        self.assertEqual(self.record(client, WEB).scheme, "http")
        self.assertEqual(self.cached("halp/http"), [Entry(NOW, "192.0.2.1", 8080)])
        peers = self.done(client.lookup("app"))
        # One connection per request: the lookup, and learning servers.
        self.assertEqual(set(self.network.attempts), {WEB})
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertFalse(peers.from_cache)
        # A new client on the cache knows it too.
        self.assertEqual(self.known(self.client()), {WEB})

    def test_insert_https_server(self) -> None:
        client = self.client()
        self.successResultOf(client.insert("halp/https", "halp.example", 443))
        (record,) = self.successResultOf(client.servers())
        self.assertEqual(record.address, ServerAddress("halp.example", 443, "https"))
        self.assertEqual(str(record.address), "https://halp.example:443/")


# -- stats -------------------------------------------------------------------------


class StatsTests(HTTPClientTestCase):
    def assertCounters(self, fields: tuple[tuple[str, str], ...], uptime: int) -> None:
        self.assertEqual([k for k, _ in fields], ["uptime", *COUNTERS])
        self.assertEqual(fields[0], ("uptime", str(uptime)))
        for _, value in fields:
            self.assertTrue(value.isdigit(), fields)

    def test_over_http(self) -> None:
        self.web(WEB)
        self.network.advance(42)
        client = self.client(WEB_URL)
        stats = self.done(client.stats())
        self.assertEqual(stats.server, WEB)
        self.assertCounters(stats.fields, 42)
        self.assertEqual(self.record(client, WEB).successes, 1)

    def test_over_halp1(self) -> None:
        self.line(LINE)
        self.network.advance(7)
        client = self.client(LINE)
        stats = self.done(client.stats())
        self.assertEqual(stats.server, LINE)
        self.assertCounters(stats.fields, 7)

    def test_counters_count(self) -> None:
        """The counters are the server's: an announcement shows."""
        self.web(WEB)
        client = self.client(WEB)
        self.done(client.announce("app", "198.51.100.99", 4000))
        fields = dict(self.done(client.stats()).fields)
        self.assertEqual(fields["entries-inserted"], "1")

    def test_named_server(self) -> None:
        """``stats(URL)`` asks that server, whichever is better ranked."""
        self.line(LINE)
        self.web(WEB)
        client = self.client(LINE, WEB)
        self.done(client.lookup("app"))
        self.network.attempts.clear()
        stats = self.done(client.stats(WEB_URL))
        self.assertEqual(stats.server, WEB)
        self.assertEqual(self.network.attempts, [WEB])
        stats = self.done(client.stats(LINE))
        self.assertEqual(stats.server, LINE)
        stats = self.done(client.stats("192.0.2.2:7100"))
        self.assertEqual(stats.server, LINE)

    def test_first_that_answers(self) -> None:
        """Without a server named, the first known server that answers."""
        down = ServerAddress("192.0.2.0", 7100)
        self.web(WEB)
        client = self.client(down, WEB)
        stats = self.done(client.stats())
        self.assertEqual(stats.server, WEB)
        self.assertEqual(self.network.attempts, [down, WEB])
        self.assertEqual(self.record(client, down).failures_in_row, 1)

    def test_unknown_server(self) -> None:
        self.web(WEB)
        client = self.client(WEB)
        failure = self.failureResultOf(client.stats("http://192.0.2.9:8080/"), ValueError)
        self.assertIn("not a known server", str(failure.value))
        # The same host and port as a HALP/1 server is another server.
        self.failureResultOf(client.stats("192.0.2.1:8080"), ValueError)
        self.failureResultOf(client.stats("ftp://192.0.2.1/"), ValueError)
        self.assertEqual(self.network.attempts, [])

    def test_nobody_reachable(self) -> None:
        client = self.client(WEB, LINE)
        failure = self.failureResultOf(client.stats(), NoServerAvailable)
        message = str(failure.value)
        self.assertIn("no HALP server could be reached", message)
        self.assertIn(WEB_URL, message)
        self.assertEqual(self.record(client, WEB).failures_in_row, 1)

    def test_named_server_down(self) -> None:
        """A named server that is down is not replaced by another one."""
        self.line(LINE)
        client = self.client(LINE, WEB)
        failure = self.failureResultOf(client.stats(WEB), NoServerAvailable)
        self.assertIn(WEB_URL, str(failure.value))
        self.assertEqual(self.network.attempts, [WEB])

    def test_garbage(self) -> None:
        self.garbage(WEB, _Page(b"<html></html>", b"text/html"))
        d = self.client(WEB).stats()
        self.network.flush()
        failure = self.failureResultOf(d, NoServerAvailable)
        self.assertIn("text/html", str(failure.value))

    def test_nobody_known(self) -> None:
        failure = self.failureResultOf(self.client().stats(), NoServerAvailable)
        self.assertEqual(str(failure.value), "no HALP server known")


# -- hello and the exchange --------------------------------------------------------


class ExchangeTests(HTTPClientTestCase):
    def exchange(self, *requests: Any) -> Any:
        exchange = HTTPExchange(self.network.http_client())
        return Deferred.fromCoroutine(exchange.exchange(WEB, list(requests)))

    def test_hello_http_field(self) -> None:
        """
        A server whose ``core.http_urls`` is set says so in the ``http``
        field of its hello, over HTTP as text and as JSON.
        """
        self.web(WEB)
        self.sites[WEB].core.http_urls = [WEB_URL, "https://halp.example/"]
        (hello,) = self.done(self.exchange(Hello()))
        fields = dict(parse_field_line(line) for line in hello.lines)
        self.assertEqual(fields["http"], f"{WEB_URL} https://halp.example/")
        self.assertEqual(fields["protocol"], "HALP/1")

        d = self.network.http_client().get(WEB_URL + "v1/hello")
        response = self.done(d)
        document = json.loads(self.done(response.content()))
        self.assertEqual(document["http"], [WEB_URL, "https://halp.example/"])

    def test_hello_without_http(self) -> None:
        self.web(WEB)
        (hello,) = self.done(self.exchange(Hello()))
        self.assertNotIn("http", dict(parse_field_line(line) for line in hello.lines))

    def test_several_requests(self) -> None:
        """Each request is answered in turn, as a pipeline would be."""
        self.web(WEB, entry(10, 1))
        get, stats = self.done(self.exchange(Get("app"), Stats()))
        self.assertEqual(get.lines, (b"%d 198.51.100.1 6881" % (NOW - 10),))
        self.assertEqual(stats.lines[0], b"uptime 0")

    def test_not_over_http(self) -> None:
        """A request the HTTP face has no form for fails, and says which."""
        self.web(WEB)
        failure = self.failureResultOf(self.exchange(Changes("0")), ClientError)
        self.assertIn("changes", str(failure.value))

    def test_insert_error(self) -> None:
        """An insert answered with a HALP error (a broken store: 503) is an ``error`` status."""
        self.sites[WEB] = self.network.http_server(WEB, _FailingStore())
        client = self.client(WEB)
        (r,) = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertIsInstance(r.error, ServerRefused)
        self.assertIn("unavailable", str(r.error))
        self.assertFalse(r.stored)

    def test_error_json_not_an_object(self) -> None:
        self.garbage(WEB, _Page(b"[]", b"application/json", 500))
        d = self.exchange(Stats())
        self.network.flush()
        failure = self.failureResultOf(d, BadResponse)
        self.assertIn("not an object", str(failure.value))

    def test_request_not_sent(self) -> None:
        """The connection failing while the request is sent."""
        error = RequestTransmissionFailed([Failure(ConnectionLost("reset by peer"))])
        exchange = HTTPExchange(HTTPClient(_Failing(error)))
        d = Deferred.fromCoroutine(exchange.exchange(WEB, [Hello()]))
        failure = self.failureResultOf(d, ConnectionClosed)
        self.assertIn("sending the request failed", str(failure.value))
        self.assertIn("reset by peer", str(failure.value))

    def test_no_answer(self) -> None:
        """No answer for another reason than a close (a TLS failure, say)."""
        error = ResponseNeverReceived([Failure(ValueError("certificate verify failed"))])
        exchange = HTTPExchange(HTTPClient(_Failing(error)))
        d = Deferred.fromCoroutine(exchange.exchange(WEB, [Hello()]))
        failure = self.failureResultOf(d, ConnectionClosed)
        self.assertEqual(str(failure.value), "no HTTP answer: certificate verify failed")

    def test_error_answer(self) -> None:
        """A HALP error over HTTP becomes an ``error`` status."""
        self.web(WEB)
        (response,) = self.done(self.exchange(Get("labels")))
        self.assertEqual(response.lines, ())
        assert response.status is not None
        self.assertFalse(response.status.ok)
        self.assertEqual(response.status.code, "bad-label")
