"""
Tests for :mod:`halp.web`, the HTTP face, in memory: the real
:class:`~halp.web.HALPSite` served over ``iosim`` transports by
:class:`~halp.testing.FakeNetwork` and driven with treq, or fed bytes over a
``StringTransport`` where the exact bytes on the wire matter.  Time is a
:class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import treq
from treq.client import HTTPClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer, IProtocol, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.client import Agent
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from halp import __version__
from halp.client.servers import ServerAddress
from halp.connlimit import ConnectionLimiter, Refusal
from halp.core import HALPCore, PeerStatus
from halp.error import StoreError
from halp.model import Census, Change, Entry, LabelInfo, Limits, Merged
from halp.server import HALPServerFactory
from halp.stats import COUNTERS, RecentError
from halp.store import insert_entries
from halp.store.memory import MemoryStore
from halp.testing import CLIENT_ADDRESS, FakeNetwork, StaticPeers
from halp.web import (
    HOSTLIST_CAP,
    HOSTLIST_MAX_AGE,
    HOSTLIST_MIN_AGE,
    MAX_BODY,
    STATUS_LABELS,
    HALPResource,
    HALPSite,
    make_site,
)

#: A realistic "now" (November 2023).
NOW = 1_700_000_000

SERVER = ServerAddress("192.0.2.1", 8080, "http")
BASE = "http://192.0.2.1:8080"

#: How FakeNetwork's clients appear to the server, and the network that
#: pages may show instead.
CLIENT = CLIENT_ADDRESS.host
CLIENT_NETWORK = "198.51.100.0/24"

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"

ETAG = re.compile(r'"[0-9a-f]{32}"\Z')


def http_date(when: int) -> str:
    value: bytes = datetimeToString(when)
    return value.decode("ascii")


def halp1_connection(core: HALPCore, clock: Clock, host: str, data: bytes) -> StringTransport:
    """A HALP/1 line-protocol connection to ``core`` from ``host``, that sent ``data``."""
    factory = HALPServerFactory(core, clock, log_requests=False)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
    protocol = factory.buildProtocol(transport.getPeer())
    assert protocol is not None
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return transport


def log_events(case: SynchronousTestCase) -> EventLoggingObserver:
    """Every event logged until the end of ``case``."""
    events = EventLoggingObserver()
    globalLogPublisher.addObserver(events)
    case.addCleanup(globalLogPublisher.removeObserver, events)
    return events


@dataclass
class Reply:
    """A response as the client saw it, with its whole body."""

    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        if values is None:
            return None
        assert len(values) == 1, (name, values)
        return values[0]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawResponse:
    """The first response on a ``StringTransport``, parsed by hand."""

    status_line: str
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> int:
        return int(self.status_line.split()[1])


def parse_raw(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(lines[0], headers, body)


class RawConnection:
    """One HTTP connection to ``site`` over a ``StringTransport``."""

    def __init__(self, site: HALPSite, host: str = "198.51.100.7") -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
        protocol = site.buildProtocol(self.transport.getPeer())
        assert protocol is not None
        self.protocol: IProtocol = protocol
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def response(self) -> RawResponse:
        value: bytes = self.transport.value()
        return parse_raw(value)

    def close(self) -> None:
        """The connection ends (and frees its place under the caps)."""
        self.protocol.connectionLost(Failure(ConnectionDone()))


@implementer(IBodyProducer)
class ChunkedBody:
    """A request body of unknown length: treq sends it chunked."""

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes, size: int = 4096) -> None:
        self.data = data
        self.size = size

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        for i in range(0, len(self.data), self.size):
            consumer.write(self.data[i : i + self.size])
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Every URL to :data:`SERVER` on ``network``."""

    def __init__(self, network: FakeNetwork) -> None:
        self.network = network

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return self.network.endpoint(SERVER)


class FailingStore(MemoryStore):
    """A memory store whose reads and writes fail with :attr:`error` when set."""

    def __init__(self) -> None:
        super().__init__()
        self.error: Exception | None = None

    def _fail(self, d: Deferred[Any]) -> Deferred[Any]:
        return fail(self.error) if self.error is not None else d

    def get(self, label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        return self._fail(super().get(label, start, stop, since))

    def list_labels(
        self, parent: str, start: int, stop: int, since: int
    ) -> Deferred[list[LabelInfo]]:
        return self._fail(super().list_labels(parent, start, stop, since))

    def merge(
        self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        return self._fail(super().merge(changes, max_entries, max_per_group))

    def census(self, since: int, limit: int) -> Deferred[Census]:
        return self._fail(super().census(since, limit))


class WebTestCase(SynchronousTestCase):
    """A HALP HTTP face on a FakeNetwork, a treq client, and helpers."""

    limits = Limits()

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.network = FakeNetwork(self.clock)
        self.store = FailingStore()
        self.site = self.network.http_server(SERVER, self.store, self.limits)
        self.core: HALPCore = self.site.core
        self.client = self.network.http_client()

    # -- requests --------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        d = self.client.request(method, BASE + path, **kwargs)
        self.network.flush()
        response: IResponse = self.successResultOf(d)
        content = treq.content(response)
        self.network.flush()
        return Reply(response.code, response.headers, self.successResultOf(content))

    def get(self, path: str, **headers: str) -> Reply:
        names = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.request("GET", path, headers=names)

    def post(self, path: str, document: object) -> Reply:
        return self.request("POST", path, json=document)

    def post_bytes(self, path: str, body: bytes, content_type: str = JSON) -> Reply:
        return self.request("POST", path, data=body, headers={"Content-Type": content_type})

    # -- the store -------------------------------------------------------------

    def insert(self, label: str, *entries: Entry, source: str = "") -> None:
        self.successResultOf(self.core.insert([label], list(entries), source))

    # -- assertions ------------------------------------------------------------

    def assertError(
        self, reply: Reply, code: int, error: str, message: str | None = None
    ) -> dict[str, Any]:
        """``reply`` is the JSON error ``error`` with status ``code``."""
        self.assertEqual(reply.code, code, reply.body)
        self.assertEqual(reply.header("Content-Type"), JSON)
        document: dict[str, Any] = reply.json()
        self.assertEqual(document["error"], error)
        self.assertIsInstance(document["message"], str)
        if message is not None:
            self.assertEqual(document["message"], message)
        return document


def entry(age: int, host: str = "192.0.2.10", port: int = 7100) -> Entry:
    return Entry(NOW - age, host, port)


def entry_json(e: Entry) -> dict[str, object]:
    return {"timestamp": e.timestamp, "host": e.host, "port": e.port}


# -- GET /v1/labels/LABEL ------------------------------------------------------


class GetLabelTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        # Inserted out of order: answers are newest first.
        self.entries = [
            entry(30, "192.0.2.3", 3),
            entry(10, "192.0.2.1", 1),
            entry(20, "192.0.2.2", 2),
        ]
        self.insert("myapp", *self.entries)
        self.newest_first = [self.entries[1], self.entries[2], self.entries[0]]

    def test_json_by_default(self) -> None:
        reply = self.get("/v1/labels/myapp")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), JSON)
        self.assertEqual(reply.header("Vary"), "Accept")
        self.assertEqual(reply.header("Cache-Control"), "public, max-age=30")
        self.assertEqual(reply.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW - 10))
        self.assertIsNone(reply.header("HALP-Capped-At"))
        self.assertRegex(reply.header("ETag") or "", ETAG)
        self.assertEqual(
            reply.json(),
            {
                "label": "myapp",
                "offset": 0,
                "limit": 10,
                "capped": False,
                "entries": [entry_json(e) for e in self.newest_first],
            },
        )

    def test_json_is_compact_sorted_and_ends_with_a_newline(self) -> None:
        reply = self.get("/v1/labels/myapp?limit=1")
        self.assertEqual(
            reply.body,
            b'{"capped":false,"entries":[{"host":"192.0.2.1","port":1,"timestamp":%d}],'
            b'"label":"myapp","limit":1,"offset":0}\n' % (NOW - 10),
        )

    def test_json_with_treq_json_content(self) -> None:
        d = self.client.get(BASE + "/v1/labels/myapp")
        self.network.flush()
        document = treq.json_content(self.successResultOf(d))
        self.network.flush()
        self.assertEqual(self.successResultOf(document)["label"], "myapp")

    def test_text_by_accept(self) -> None:
        reply = self.get("/v1/labels/myapp", Accept="text/plain")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), TEXT)
        self.assertEqual(reply.header("Vary"), "Accept")
        self.assertEqual(
            reply.body,
            b"%d 192.0.2.1 1\n%d 192.0.2.2 2\n%d 192.0.2.3 3\n" % (NOW - 10, NOW - 20, NOW - 30),
        )

    def test_text_by_format(self) -> None:
        reply = self.get("/v1/labels/myapp?format=text")
        self.assertEqual(reply.header("Content-Type"), TEXT)
        self.assertEqual(reply.body.splitlines()[0], b"%d 192.0.2.1 1" % (NOW - 10))

    def test_format_json_overrides_accept(self) -> None:
        reply = self.get("/v1/labels/myapp?format=json", Accept="text/plain")
        self.assertEqual(reply.header("Content-Type"), JSON)
        self.assertEqual(reply.json()["label"], "myapp")

    def test_accept_naming_json_too_gives_json(self) -> None:
        for accept in (
            "application/json, text/plain",
            "text/plain, application/json;q=0.5",
            "*/*",
            "text/html",
        ):
            reply = self.get("/v1/labels/myapp", Accept=accept)
            self.assertEqual(reply.header("Content-Type"), JSON, accept)

    def test_text_and_json_have_different_etags(self) -> None:
        text = self.get("/v1/labels/myapp", Accept="text/plain")
        document = self.get("/v1/labels/myapp")
        self.assertNotEqual(text.header("ETag"), document.header("ETag"))

    def test_empty_text_list(self) -> None:
        reply = self.get("/v1/labels/nothing?format=text")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.body, b"")

    def test_unknown_label_is_an_empty_list(self) -> None:
        reply = self.get("/v1/labels/nothing")
        self.assertEqual(reply.code, 200)
        self.assertEqual(
            reply.json(),
            {"label": "nothing", "offset": 0, "limit": 10, "capped": False, "entries": []},
        )
        self.assertIsNone(reply.header("Last-Modified"))
        self.assertRegex(reply.header("ETag") or "", ETAG)

    def test_default_limit_is_the_default_slice(self) -> None:
        self.insert("many", *[entry(100 + i, port=i + 1) for i in range(15)])
        reply = self.get("/v1/labels/many")
        document = reply.json()
        self.assertEqual(document["limit"], 10)
        self.assertEqual([e["port"] for e in document["entries"]], list(range(1, 11)))

    def test_limit_and_offset(self) -> None:
        self.insert("many", *[entry(100 + i, port=i + 1) for i in range(15)])
        document = self.get("/v1/labels/many?limit=3&offset=4").json()
        self.assertEqual(document["offset"], 4)
        self.assertEqual(document["limit"], 3)
        self.assertFalse(document["capped"])
        self.assertEqual([e["port"] for e in document["entries"]], [5, 6, 7])
        text = self.get("/v1/labels/many?offset=13&format=text").body
        self.assertEqual(text, b"%d 192.0.2.10 14\n%d 192.0.2.10 15\n" % (NOW - 113, NOW - 114))
        beyond = self.get("/v1/labels/many?offset=15").json()
        self.assertEqual(beyond["entries"], [])

    def test_limit_over_max_slice_is_capped(self) -> None:
        self.insert("many", *[entry(100 + i, port=i + 1) for i in range(150)])
        reply = self.get("/v1/labels/many?limit=500&offset=20")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("HALP-Capped-At"), "100")
        document = reply.json()
        self.assertTrue(document["capped"])
        self.assertEqual(document["limit"], 100)
        self.assertEqual(document["offset"], 20)
        self.assertEqual([e["port"] for e in document["entries"]], list(range(21, 121)))
        text = self.get("/v1/labels/many?limit=500&format=text")
        self.assertEqual(text.header("HALP-Capped-At"), "100")
        self.assertEqual(len(text.body.splitlines()), 100)

    def test_limit_of_max_slice_is_not_capped(self) -> None:
        reply = self.get("/v1/labels/myapp?limit=100")
        self.assertFalse(reply.json()["capped"])
        self.assertIsNone(reply.header("HALP-Capped-At"))

    def test_sublabels(self) -> None:
        self.insert("myapp/v2", entry(5, "192.0.2.20", 20))
        for path in ("/v1/labels/myapp/v2", "/v1/labels/myapp/v2/", "/v1/labels/myapp%2Fv2"):
            document = self.get(path).json()
            self.assertEqual(document["label"], "myapp/v2", path)
            self.assertEqual(document["entries"], [entry_json(entry(5, "192.0.2.20", 20))], path)
        # The parent keeps its own entries only.
        parent = self.get("/v1/labels/myapp").json()
        self.assertEqual(parent["entries"], [entry_json(e) for e in self.newest_first])

    def test_labels_are_case_sensitive(self) -> None:
        self.assertEqual(self.get("/v1/labels/MyApp").json()["entries"], [])

    def test_bad_labels(self) -> None:
        cases = {
            "/v1/labels/bad!label": "bad label segment 'bad!label': allowed are A-Z a-z 0-9 _ - .",
            "/v1/labels/a//b": "empty label segment",
            "/v1/labels/%2E%2E": "bad label segment '..': dots only",
            "/v1/labels/" + "x" * 65: f"bad label segment {'x' * 65!r}: longer than 64 characters",
            "/v1/labels/" + "/".join("a" * 17): "label deeper than 16 segments",
            "/v1/labels/caf%C3%A9": "bad label segment 'café': allowed are A-Z a-z 0-9 _ - .",
        }
        for path, message in cases.items():
            reply = self.get(path)
            self.assertError(reply, 400, "bad-label", message)
            self.assertEqual(set(reply.json()), {"error", "message"})

    def test_reserved_label(self) -> None:
        for path in ("/v1/labels/labels", "/v1/labels/labels/x"):
            self.assertError(self.get(path), 400, "bad-label", "label 'labels' is reserved")
        # Only as the first segment.
        self.assertEqual(self.get("/v1/labels/x/labels").code, 200)

    def test_bad_limit_and_offset(self) -> None:
        for query, name, low in [
            ("limit=0", "limit", 1),
            ("limit=-1", "limit", 1),
            ("limit=x", "limit", 1),
            ("limit=", "limit", 1),
            ("limit=1.5", "limit", 1),
            ("limit=1234567890", "limit", 1),
            ("limit=%2B5", "limit", 1),
            ("offset=-1", "offset", 0),
            ("offset=x", "offset", 0),
            ("offset=%201", "offset", 0),
        ]:
            self.assertError(
                self.get("/v1/labels/myapp?" + query),
                400,
                "bad-range",
                f"{name} must be a whole number of at least {low}",
            )

    def test_offset_zero_is_fine(self) -> None:
        self.assertEqual(self.get("/v1/labels/myapp?offset=0&limit=1").code, 200)

    def test_repeated_parameters(self) -> None:
        for query, name in [
            ("limit=1&limit=2", "limit"),
            ("offset=1&offset=1", "offset"),
            ("format=text&format=text", "format"),
        ]:
            self.assertError(
                self.get("/v1/labels/myapp?" + query),
                400,
                "bad-request",
                f"{name} given more than once",
            )

    def test_parameter_not_utf8(self) -> None:
        self.assertError(
            self.get("/v1/labels/myapp?limit=%FF"), 400, "bad-request", "limit is not UTF-8"
        )

    def test_bad_format(self) -> None:
        for query in ("format=xml", "format=TEXT", "format="):
            self.assertError(
                self.get("/v1/labels/myapp?" + query),
                400,
                "bad-request",
                "format must be text or json",
            )

    def test_unknown_parameters_are_ignored(self) -> None:
        self.assertEqual(self.get("/v1/labels/myapp?utm_source=x").code, 200)

    def test_expired_entries_are_not_served(self) -> None:
        # The oldest entry (30 s old) expires first.
        self.clock.advance(self.limits.ttl - 25)
        document = self.get("/v1/labels/myapp").json()
        self.assertEqual(
            document["entries"], [entry_json(self.entries[1]), entry_json(self.entries[2])]
        )
        self.clock.advance(100)
        reply = self.get("/v1/labels/myapp")
        self.assertEqual(reply.json()["entries"], [])
        self.assertIsNone(reply.header("Last-Modified"))

    def test_head(self) -> None:
        got = self.get("/v1/labels/myapp")
        head = self.request("HEAD", "/v1/labels/myapp")
        self.assertEqual(head.code, 200)
        self.assertEqual(head.body, b"")
        self.assertEqual(head.header("Content-Type"), JSON)
        self.assertEqual(head.header("ETag"), got.header("ETag"))
        self.assertEqual(head.header("Last-Modified"), got.header("Last-Modified"))

    def test_head_raw(self) -> None:
        """A HEAD answer has the length of the GET body, and no body."""
        body = self.get("/v1/labels/myapp").body
        raw = RawConnection(self.site)
        raw.send(b"HEAD /v1/labels/myapp HTTP/1.1\r\nHost: x\r\n\r\n")
        response = raw.response()
        self.assertEqual(response.status_line, "HTTP/1.1 200 OK")
        self.assertEqual(response.headers["content-length"], str(len(body)))
        self.assertEqual(response.headers["content-type"], JSON)
        self.assertEqual(response.body, b"")


class ConditionalTests(WebTestCase):
    """ETag, Last-Modified, If-None-Match, If-Modified-Since and 304."""

    def setUp(self) -> None:
        super().setUp()
        self.insert("myapp", entry(10, "192.0.2.1", 1), entry(20, "192.0.2.2", 2))
        self.first = self.get("/v1/labels/myapp")
        etag = self.first.header("ETag")
        assert etag is not None
        self.etag = etag

    def assertNotModified(self, reply: Reply) -> None:
        self.assertEqual(reply.code, 304, reply.body)
        self.assertEqual(reply.body, b"")
        self.assertEqual(reply.header("ETag"), self.etag)
        self.assertEqual(reply.header("Cache-Control"), "public, max-age=30")
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW - 10))
        self.assertIsNone(reply.header("Content-Type"))

    def test_etag_is_stable(self) -> None:
        self.assertRegex(self.etag, ETAG)
        self.assertEqual(self.get("/v1/labels/myapp").header("ETag"), self.etag)
        self.clock.advance(60)
        self.assertEqual(self.get("/v1/labels/myapp").header("ETag"), self.etag)

    def test_if_none_match_exact(self) -> None:
        self.assertNotModified(self.get("/v1/labels/myapp", If_None_Match=self.etag))

    def test_if_none_match_weak(self) -> None:
        self.assertNotModified(self.get("/v1/labels/myapp", If_None_Match="W/" + self.etag))

    def test_if_none_match_list(self) -> None:
        for header in (
            f'"aaaa", {self.etag}',
            f'"aaaa",{self.etag} , "bbbb"',
            f'W/"aaaa", W/{self.etag}',
        ):
            self.assertNotModified(self.get("/v1/labels/myapp", If_None_Match=header))

    def test_if_none_match_star(self) -> None:
        self.assertNotModified(self.get("/v1/labels/myapp", If_None_Match="*"))

    def test_if_none_match_other(self) -> None:
        for header in ('"0123"', self.etag.strip('"'), "", 'W/"x"'):
            reply = self.get("/v1/labels/myapp", If_None_Match=header)
            self.assertEqual(reply.code, 200, header)
            self.assertEqual(reply.body, self.first.body)

    def test_304_on_the_wire(self) -> None:
        raw = RawConnection(self.site)
        raw.send(
            b"GET /v1/labels/myapp HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n\r\n"
            % self.etag.encode("ascii")
        )
        response = raw.response()
        self.assertEqual(response.status_line, "HTTP/1.1 304 Not Modified")
        self.assertEqual(response.body, b"")
        self.assertEqual(response.headers["etag"], self.etag)
        self.assertNotIn("content-type", response.headers)
        self.assertNotIn("content-length", response.headers)
        self.assertNotIn("transfer-encoding", response.headers)

    def test_304_for_text(self) -> None:
        text = self.get("/v1/labels/myapp", Accept="text/plain")
        tag = text.header("ETag")
        assert tag is not None
        reply = self.get("/v1/labels/myapp", Accept="text/plain", If_None_Match=tag)
        self.assertEqual(reply.code, 304)
        # The JSON form has another tag.
        self.assertEqual(self.get("/v1/labels/myapp", If_None_Match=tag).code, 200)

    def test_changed_label_has_a_new_etag(self) -> None:
        self.insert("myapp", entry(5, "192.0.2.3", 3))
        reply = self.get("/v1/labels/myapp", If_None_Match=self.etag)
        self.assertEqual(reply.code, 200)
        self.assertNotEqual(reply.header("ETag"), self.etag)
        self.assertEqual(len(reply.json()["entries"]), 3)
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW - 5))

    def test_late_older_confirmation_changes_the_etag(self) -> None:
        """An entry older than the newest changes the list but not its time."""
        self.insert("myapp", entry(15, "192.0.2.3", 3))
        reply = self.get("/v1/labels/myapp", If_None_Match=self.etag)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW - 10))

    def test_if_modified_since(self) -> None:
        for since in (NOW - 10, NOW - 5, NOW):
            self.assertNotModified(self.get("/v1/labels/myapp", If_Modified_Since=http_date(since)))
        for since in (NOW - 11, NOW + 1, NOW + 3600):
            # Older than the newest entry; or later than the server's
            # clock, which is invalid (RFC 9110, 13.1.3) and ignored.
            reply = self.get("/v1/labels/myapp", If_Modified_Since=http_date(since))
            self.assertEqual(reply.code, 200, since)
            self.assertEqual(reply.body, self.first.body)

    def test_if_modified_since_after_a_newer_entry(self) -> None:
        since = http_date(NOW - 10)
        self.clock.advance(1)
        self.insert("myapp", Entry(NOW + 1, "192.0.2.3", 3))
        reply = self.get("/v1/labels/myapp", If_Modified_Since=since)
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW + 1))

    def test_bad_if_modified_since_is_ignored(self) -> None:
        for since in ("yesterday", "", "Tue, 99 Foo 2023 99:99:99 GMT"):
            self.assertEqual(self.get("/v1/labels/myapp", If_Modified_Since=since).code, 200, since)

    def test_if_modified_since_on_an_empty_list(self) -> None:
        reply = self.get("/v1/labels/nothing", If_Modified_Since=http_date(NOW))
        self.assertEqual(reply.code, 200)

    def test_if_none_match_takes_precedence(self) -> None:
        fresh = http_date(NOW)
        stale = http_date(NOW - 3600)
        reply = self.get("/v1/labels/myapp", If_None_Match='"other"', If_Modified_Since=fresh)
        self.assertEqual(reply.code, 200)
        self.assertNotModified(
            self.get("/v1/labels/myapp", If_None_Match=self.etag, If_Modified_Since=stale)
        )

    def test_head_not_modified(self) -> None:
        reply = self.request("HEAD", "/v1/labels/myapp", headers={"If-None-Match": self.etag})
        self.assertEqual(reply.code, 304)
        self.assertEqual(reply.body, b"")

    def test_not_modified_is_counted(self) -> None:
        self.get("/v1/labels/myapp", If_None_Match=self.etag)
        self.assertEqual(self.core.traffic.requests[("http", "get", "not-modified")], 1)
        self.assertEqual(self.core.traffic.requests[("http", "get", "ok")], 1)
        self.assertEqual(list(self.core.traffic.recent), [])


# -- POST /v1/labels/LABEL -----------------------------------------------------


class PostLabelTests(WebTestCase):
    def test_one_entry(self) -> None:
        reply = self.post(
            "/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881, "timestamp": NOW - 30}
        )
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), JSON)
        self.assertEqual(
            reply.json(),
            {
                "label": "myapp",
                "stored": [{"host": "192.0.2.5", "port": 6881, "timestamp": NOW - 30}],
                "refused": [],
            },
        )
        self.assertIsNone(reply.header("ETag"))

    def test_stored_entry_is_served(self) -> None:
        self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881, "timestamp": NOW - 30})
        document = self.get("/v1/labels/myapp").json()
        self.assertEqual(document["entries"], [entry_json(entry(30, "192.0.2.5", 6881))])
        # ... over the line protocol too: the same core.
        page = self.successResultOf(self.core.get("myapp"))
        self.assertEqual(page.items, [entry(30, "192.0.2.5", 6881)])
        self.assertEqual(self.core.stats["entries-inserted"], 1)

    def test_source_is_the_client_address(self) -> None:
        self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881})
        changes = self.successResultOf(self.store.changes("", 10, 0)).changes
        self.assertEqual(
            changes, [Change("myapp", Entry(NOW, "192.0.2.5", 6881), source=CLIENT, via="")]
        )
        self.assertEqual(changes[0].source, "198.51.100.1")

    def test_inserts_are_relayed(self) -> None:
        seen: list[tuple[list[Change], bool]] = []
        self.core.watch(lambda changes, relay: seen.append((changes, relay)))
        self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881})
        self.assertEqual(seen, [([Change("myapp", Entry(NOW, "192.0.2.5", 6881), CLIENT)], True)])

    def test_array(self) -> None:
        reply = self.post(
            "/v1/labels/myapp/v2",
            [
                {"host": "192.0.2.5", "port": 1, "timestamp": NOW - 3},
                {"host": "2001:DB8:0::1", "port": 2, "timestamp": NOW - 1},
                {"host": "Peer.Example.NET.", "port": 3, "timestamp": NOW - 2},
            ],
        )
        self.assertEqual(reply.code, 200)
        self.assertEqual(
            reply.json(),
            {
                "label": "myapp/v2",
                "stored": [
                    {"host": "192.0.2.5", "port": 1, "timestamp": NOW - 3},
                    {"host": "2001:db8::1", "port": 2, "timestamp": NOW - 1},
                    {"host": "peer.example.net", "port": 3, "timestamp": NOW - 2},
                ],
                "refused": [],
            },
        )
        text = self.get("/v1/labels/myapp/v2?format=text").body
        self.assertEqual(
            text,
            b"%d 2001:db8::1 2\n%d peer.example.net 3\n%d 192.0.2.5 1\n"
            % (NOW - 1, NOW - 2, NOW - 3),
        )

    def test_timestamp_defaults_to_now(self) -> None:
        self.clock.advance(42)
        reply = self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881})
        self.assertEqual(
            reply.json()["stored"], [{"host": "192.0.2.5", "port": 6881, "timestamp": NOW + 42}]
        )

    def test_future_timestamp_is_clamped_to_now(self) -> None:
        reply = self.post(
            "/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881, "timestamp": NOW + 86400}
        )
        self.assertEqual(reply.json()["stored"][0]["timestamp"], NOW)
        self.assertEqual(
            self.successResultOf(self.core.get("myapp")).items, [Entry(NOW, "192.0.2.5", 6881)]
        )

    def test_confirmation_answers_the_stored_time(self) -> None:
        self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881, "timestamp": NOW - 5})
        reply = self.post(
            "/v1/labels/myapp", {"host": "192.0.2.5", "port": 6881, "timestamp": NOW - 50}
        )
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json()["stored"][0]["timestamp"], NOW - 5)

    def test_malformed_json(self) -> None:
        for body in (b"{not json", b"", b'{"host": "192.0.2.5", "port": 1', b"\xff\xfe"):
            reply = self.post_bytes("/v1/labels/myapp", body)
            document = self.assertError(reply, 400, "bad-request")
            self.assertTrue(document["message"].startswith("the body is not JSON: "), document)
        self.assertEqual(self.successResultOf(self.core.get("myapp")).items, [])

    def test_deeply_nested_json(self) -> None:
        """
        Valid JSON nested deeper than Python parses (or dumps again) is a
        bad request, not an internal error, whatever the stack depth is.
        """
        limit = sys.getrecursionlimit()
        for depth in range(limit - 300, limit + 20):
            raw = RawConnection(self.site)
            body = b"[" * depth + b"]" * depth
            raw.send(
                b"POST /v1/labels/myapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            response = raw.response()
            raw.close()
            self.assertEqual(response.code, 400, (depth, response.body))
            self.assertIn(json.loads(response.body)["error"], ("bad-request", "bad-entry"))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.core.traffic.requests[("http", "insert", "internal")], 0)

    def test_wrong_content_type(self) -> None:
        body = b'{"host": "192.0.2.5", "port": 1}'
        for content_type, named in [
            ("text/plain", "text/plain"),
            ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
            ("Text/Plain; charset=utf-8", "text/plain"),
        ]:
            self.assertError(
                self.post_bytes("/v1/labels/myapp", body, content_type),
                415,
                "unsupported-media-type",
                f"send the entry as application/json, not {named}",
            )
        self.assertEqual(self.successResultOf(self.core.get("myapp")).items, [])

    def test_json_content_type_with_parameters(self) -> None:
        body = b'{"host": "192.0.2.5", "port": 1}'
        for content_type in ("application/json; charset=utf-8", "Application/JSON"):
            self.assertEqual(self.post_bytes("/v1/labels/myapp", body, content_type).code, 200)

    def test_no_content_type_is_taken_as_json(self) -> None:
        raw = RawConnection(self.site)
        body = b'{"host": "192.0.2.5", "port": 1}'
        raw.send(
            b"POST /v1/labels/myapp HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.assertEqual(raw.response().code, 200)
        self.assertEqual(
            self.successResultOf(self.core.get("myapp")).items, [Entry(NOW, "192.0.2.5", 1)]
        )

    def test_empty_array(self) -> None:
        self.assertError(self.post("/v1/labels/myapp", []), 400, "bad-request", "no entry given")

    def test_too_many_entries(self) -> None:
        entries = [{"host": "192.0.2.5", "port": i + 1} for i in range(101)]
        self.assertError(
            self.post("/v1/labels/myapp", entries),
            400,
            "too-many-entries",
            "at most 100 entries per request",
        )
        self.assertEqual(self.successResultOf(self.core.get("myapp")).items, [])
        reply = self.post("/v1/labels/myapp", entries[:100])
        self.assertEqual(reply.code, 200)
        self.assertEqual(len(reply.json()["stored"]), 100)

    def test_bad_entries(self) -> None:
        items: list[Any] = [
            {"host": 5, "port": 1},
            {"port": 1},
            {"host": "192.0.2.5", "port": "1"},
            {"host": "192.0.2.5"},
            {"host": "192.0.2.5", "port": True},
            {"host": "192.0.2.5", "port": 1.0},
            {"host": "192.0.2.5", "port": 1, "timestamp": 1.5},
            {"host": "192.0.2.5", "port": 1, "timestamp": "1700000000"},
            {"host": "192.0.2.5", "port": 1, "timestamp": True},
            {"host": "192.0.2.5", "port": 1, "timestamp": None},
            {"host": "192.0.2.5", "port": 1, "timestamp": -1},
            {"host": "192.0.2.5", "port": 1, "timestamp": 10**13},
            {"host": "bad host", "port": 1},
            {"host": "[2001:db8::1]", "port": 1},
            {"host": "192.0.2.5", "port": 0},
            {"host": "192.0.2.5", "port": 65536},
            "192.0.2.5 1",
            ["192.0.2.5", 1],
            None,
        ]
        reasons = [
            "host must be a string",
            "host must be a string",
            "port must be a number",
            "port must be a number",
            "port must be a number",
            "port must be a number",
            "timestamp must be a whole number of seconds",
            "timestamp must be a whole number of seconds",
            "timestamp must be a whole number of seconds",
            "timestamp must be a whole number of seconds",
            "bad timestamp: expected integer POSIX seconds",
            "bad timestamp: expected integer POSIX seconds",
            "bad host: not a valid DNS name",
            "bad host: write IPv6 without brackets or zone",
            "bad port: expected 1-65535",
            "bad port: expected 1-65535",
            'expected an object {"host": ..., "port": ...}',
            'expected an object {"host": ..., "port": ...}',
            'expected an object {"host": ..., "port": ...}',
        ]
        reply = self.post("/v1/labels/myapp", items)
        document = self.assertError(reply, 400, "bad-entry", "host must be a string")
        self.assertEqual(
            document,
            {
                "error": "bad-entry",
                "message": "host must be a string",
                "label": "myapp",
                "stored": [],
                "refused": [
                    {"entry": json.dumps(item, sort_keys=True), "reason": reason}
                    for item, reason in zip(items, reasons)
                ],
            },
        )
        self.assertEqual(self.successResultOf(self.core.get("myapp")).items, [])

    def test_one_bad_entry_alone(self) -> None:
        document = self.assertError(
            self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 0}),
            400,
            "bad-entry",
            "bad port: expected 1-65535",
        )
        self.assertEqual(
            document["refused"],
            [{"entry": '{"host": "192.0.2.5", "port": 0}', "reason": "bad port: expected 1-65535"}],
        )

    def test_refused_entry_text_is_cut(self) -> None:
        document = self.post("/v1/labels/myapp", {"host": "x" * 1000, "port": 1}).json()
        self.assertEqual(len(document["refused"][0]["entry"]), 200)

    def test_expired_timestamp(self) -> None:
        old = NOW - self.limits.ttl - 1
        reply = self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 1, "timestamp": old})
        self.assertEqual(
            self.assertError(reply, 422, "bad-entry"),
            {
                "error": "bad-entry",
                "message": "expired: confirmed more than 86400 s ago",
                "label": "myapp",
                "stored": [],
                "refused": [
                    {
                        "entry": f"{old} 192.0.2.5 1",
                        "reason": "expired: confirmed more than 86400 s ago",
                    }
                ],
            },
        )

    def test_expired_and_malformed_is_400(self) -> None:
        old = NOW - self.limits.ttl - 1
        reply = self.post(
            "/v1/labels/myapp",
            [{"host": "192.0.2.5", "port": 1, "timestamp": old}, {"host": "192.0.2.5"}],
        )
        document = self.assertError(
            reply, 400, "bad-entry", "expired: confirmed more than 86400 s ago"
        )
        self.assertEqual(len(document["refused"]), 2)

    def test_mixed_good_and_bad(self) -> None:
        old = NOW - self.limits.ttl - 1
        reply = self.post(
            "/v1/labels/myapp",
            [
                {"host": "192.0.2.5", "port": 1},
                {"host": 7, "port": 1},
                {"host": "192.0.2.6", "port": 2, "timestamp": old},
                {"host": "192.0.2.7", "port": 3, "timestamp": NOW - 9},
            ],
        )
        self.assertEqual(reply.code, 200)
        self.assertEqual(
            reply.json(),
            {
                "label": "myapp",
                "stored": [
                    {"host": "192.0.2.5", "port": 1, "timestamp": NOW},
                    {"host": "192.0.2.7", "port": 3, "timestamp": NOW - 9},
                ],
                "refused": [
                    {"entry": '{"host": 7, "port": 1}', "reason": "host must be a string"},
                    {
                        "entry": f"{old} 192.0.2.6 2",
                        "reason": "expired: confirmed more than 86400 s ago",
                    },
                ],
            },
        )
        self.assertEqual(
            self.successResultOf(self.core.get("myapp")).items,
            [Entry(NOW, "192.0.2.5", 1), Entry(NOW - 9, "192.0.2.7", 3)],
        )

    def test_bad_label(self) -> None:
        self.assertError(
            self.post("/v1/labels/bad!", {"host": "192.0.2.5", "port": 1}), 400, "bad-label"
        )
        self.assertError(
            self.post("/v1/labels/labels", {"host": "192.0.2.5", "port": 1}),
            400,
            "bad-label",
            "label 'labels' is reserved",
        )
        self.assertEqual(self.core.traffic.requests[("http", "insert", "bad-label")], 2)

    def test_post_elsewhere_is_not_allowed(self) -> None:
        for path, allow in [
            ("/v1/hello", "GET, HEAD"),
            ("/v1/labels", "GET, HEAD"),
            ("/v1/stats", "GET, HEAD"),
            ("/v1/peers", "GET, HEAD"),
            ("/hostlist", "GET, HEAD"),
            ("/metrics", "GET, HEAD"),
            ("/", "GET, HEAD"),
        ]:
            reply = self.post(path, {"host": "192.0.2.5", "port": 1})
            self.assertError(
                reply, 405, "method-not-allowed", f"POST is not allowed here; use {allow}"
            )
            self.assertEqual(reply.header("Allow"), allow, path)


class LabelsPostEvictionTests(WebTestCase):
    limits = Limits(max_entries=2)

    def test_evicted_at_once(self) -> None:
        self.insert("myapp", entry(1, "192.0.2.1", 1), entry(2, "192.0.2.2", 2))
        reply = self.post(
            "/v1/labels/myapp", {"host": "192.0.2.3", "port": 3, "timestamp": NOW - 3}
        )
        document = self.assertError(
            reply, 422, "bad-entry", "evicted: the label keeps its 2 newest entries"
        )
        self.assertEqual(
            document["refused"],
            [
                {
                    "entry": f"{NOW - 3} 192.0.2.3 3",
                    "reason": "evicted: the label keeps its 2 newest entries",
                }
            ],
        )


# -- the body limit ------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid JSON entry of exactly ``size`` bytes (spaces at the end)."""
    body = b'{"host": "192.0.2.5", "port": 6881}'
    return body + b" " * (size - len(body))


class BodyLimitTests(WebTestCase):
    def assertTooLarge(self, reply: Reply) -> None:
        self.assertEqual(reply.code, 413)
        self.assertEqual(reply.header("Content-Type"), JSON)
        self.assertEqual(
            reply.json(),
            {"error": "too-large", "message": f"the request body is over {MAX_BODY} bytes"},
        )
        self.assertEqual(self.core.traffic.connections["http"], 0)
        self.assertEqual(self.successResultOf(self.core.get("myapp")).items, [])

    def test_max_body(self) -> None:
        self.assertEqual(MAX_BODY, 16 * 1024)

    def test_length_at_the_limit(self) -> None:
        reply = self.post_bytes("/v1/labels/myapp", padded(MAX_BODY))
        self.assertEqual(reply.code, 200)

    def test_length_over_the_limit(self) -> None:
        self.assertTooLarge(self.post_bytes("/v1/labels/myapp", padded(MAX_BODY + 1)))
        self.assertEqual(self.core.traffic.requests, {("http", "insert", "too-large"): 1})
        self.assertEqual(
            list(self.core.traffic.recent),
            [
                RecentError(
                    NOW,
                    "http",
                    CLIENT_NETWORK,
                    "(request body too large)",
                    "too-large",
                    f"over {MAX_BODY} bytes",
                )
            ],
        )

    def test_length_over_the_limit_anywhere(self) -> None:
        """The limit holds before routing: a big body to any path is refused."""
        reply = self.request("PUT", "/nowhere", data=b"x" * (MAX_BODY + 1))
        self.assertEqual(reply.code, 413)

    def chunked(self, body: bytes) -> Reply:
        """POST ``body`` chunked, through treq."""
        client = HTTPClient(Agent.usingEndpointFactory(self.clock, _Endpoints(self.network)))
        d = client.request(
            "POST",
            BASE + "/v1/labels/myapp",
            data=ChunkedBody(body, 1000),
            headers=Headers({"Content-Type": [JSON]}),
        )
        self.network.flush()
        response: IResponse = self.successResultOf(d)
        content = treq.content(response)
        self.network.flush()
        return Reply(response.code, response.headers, self.successResultOf(content))

    def test_chunked_under_the_limit(self) -> None:
        reply = self.chunked(padded(MAX_BODY))
        self.assertEqual(reply.code, 200)
        self.assertEqual(
            reply.json()["stored"], [{"host": "192.0.2.5", "port": 6881, "timestamp": NOW}]
        )

    def test_chunked_over_the_limit(self) -> None:
        reply = self.chunked(padded(MAX_BODY + 1))
        self.assertTooLarge(reply)

    def test_chunked_far_over_the_limit(self) -> None:
        reply = self.chunked(b"[" + b" " * (10 * MAX_BODY) + b"]")
        self.assertTooLarge(reply)

    def test_refused_before_the_body_is_read(self) -> None:
        """
        A too large Content-Length is answered as soon as the headers are
        in: no ``100 Continue``, and the connection is closing.
        """
        raw = RawConnection(self.site)
        self.assertEqual(self.core.traffic.connections["http"], 1)
        raw.send(
            b"POST /v1/labels/myapp HTTP/1.1\r\n"
            b"Host: 192.0.2.1:8080\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n"
            b"Expect: 100-continue\r\n"
            b"\r\n"
        )
        value: bytes = raw.transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 413 "), value)
        self.assertNotIn(b"100 Continue", value)
        self.assertTrue(raw.transport.disconnecting)
        response = raw.response()
        self.assertEqual(response.status_line, "HTTP/1.1 413 Payload Too Large")
        self.assertEqual(response.headers["content-type"], JSON)
        self.assertEqual(response.headers["connection"], "close")
        self.assertEqual(response.headers["content-length"], str(len(response.body)))
        self.assertEqual(json.loads(response.body)["error"], "too-large")
        self.assertEqual(self.core.traffic.requests[("http", "insert", "too-large")], 1)

    def test_body_arriving_after_refusal_is_ignored(self) -> None:
        """
        What the transport still delivers after a 413 (it had read it
        already) is dropped, not parsed as a body or a next request.
        """
        raw = RawConnection(self.site)
        raw.send(
            b"POST /v1/labels/myapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        )
        answered: bytes = raw.transport.value()
        raw.send(padded(MAX_BODY + 1))
        raw.send(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(raw.transport.value(), answered)
        self.assertEqual(self.successResultOf(self.core.get("myapp")).items, [])
        self.assertEqual(self.core.traffic.requests, {("http", "insert", "too-large"): 1})

    def test_chunks_arriving_after_refusal_are_ignored(self) -> None:
        raw = RawConnection(self.site)
        raw.send(
            b"POST /v1/labels/myapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (MAX_BODY, b" " * MAX_BODY)
        raw.send(chunk)
        self.assertEqual(raw.transport.value(), b"")
        raw.send(chunk)
        answered: bytes = raw.transport.value()
        self.assertTrue(answered.startswith(b"HTTP/1.1 413 "), answered)
        self.assertTrue(raw.transport.disconnecting)
        raw.send(chunk + b"0\r\n\r\n")
        raw.send(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(raw.transport.value(), answered)
        self.assertEqual(self.core.traffic.requests, {("http", "insert", "too-large"): 1})


    def test_no_temporary_file(self) -> None:
        """
        twisted.web spools a body of unknown length (chunked), or of
        100,000 bytes or more, to a temporary file; the HTTP face keeps
        every body in memory, since it reads at most MAX_BODY bytes of one.
        """

        def no_file(*args: object, **kwargs: object) -> None:
            raise AssertionError("a temporary file was created")

        self.patch(tempfile, "TemporaryFile", no_file)
        self.assertTooLarge(self.chunked(b"[" + b" " * (10 * MAX_BODY) + b"]"))
        self.assertEqual(self.chunked(padded(MAX_BODY)).code, 200)
        raw = RawConnection(self.site)
        raw.send(
            b"POST /v1/labels/myapp HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 10000000\r\n\r\n" + b" " * 65536
        )
        self.assertEqual(raw.response().code, 413)
        self.assertEqual(self.flushLoggedErrors(), [])


# -- the request deadline and the connection caps -------------------------------


class HTTPConnectionTests(SynchronousTestCase):
    """
    The HTTP face's request deadline and connection caps, over
    ``StringTransport`` connections.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.core = HALPCore(MemoryStore(), self.clock)
        self.limiter = ConnectionLimiter(max_connections=4, max_per_host=2)
        self.site = make_site(self.core, self.clock, limiter=self.limiter, log_requests=False)

    def test_defaults(self) -> None:
        site = make_site(self.core, self.clock)
        self.assertEqual((site.request_timeout, site.abort_timeout), (30.0, 15.0))
        self.assertEqual((site.limiter.max_connections, site.limiter.max_per_host), (1024, 16))

    def test_slow_headers_are_answered_408(self) -> None:
        raw = RawConnection(self.site)
        raw.send(b"GET /v1/hello HTTP/1.1\r\n")
        for _ in range(29):
            self.clock.advance(1)
            raw.send(b"X")  # never idle
        self.assertEqual(raw.transport.value(), b"")
        self.clock.advance(1)
        response = raw.response()
        self.assertEqual(response.status_line, "HTTP/1.1 408 Request Timeout")
        self.assertEqual(response.headers["connection"], "close")
        self.assertEqual(
            json.loads(response.body),
            {"error": "request-timeout", "message": "the request did not arrive within 30 s"},
        )
        self.assertTrue(raw.transport.disconnecting)
        answered = raw.transport.value()
        raw.send(b"\r\n\r\n")
        self.assertEqual(raw.transport.value(), answered)
        self.assertEqual(self.core.traffic.requests[("http", "unknown", "request-timeout")], 1)
        # A client that does not take the answer is cut off.
        self.clock.advance(15)
        self.assertTrue(raw.transport.disconnected)

    def test_slow_body_is_answered_408(self) -> None:
        raw = RawConnection(self.site)
        body = b'{"host": "192.0.2.5", "port": 6881}'
        raw.send(
            b"POST /v1/labels/myapp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for byte in range(len(body) - 1):
            raw.send(body[byte : byte + 1])
            self.clock.advance(0.5)
        self.clock.advance(30)
        self.assertEqual(raw.response().code, 408)
        self.assertEqual(self.successResultOf(self.core.get("myapp")).items, [])

    def test_each_request_has_its_own_deadline(self) -> None:
        raw = RawConnection(self.site)
        for _ in range(3):
            self.clock.advance(20)
            raw.send(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n")
            self.clock.advance(20)
            raw.send(b"\r\n")
        self.assertEqual(raw.transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.assertFalse(raw.transport.disconnecting)

    def test_configurable_deadline(self) -> None:
        site = make_site(self.core, self.clock, request_timeout=2, log_requests=False)
        raw = RawConnection(site)
        raw.send(b"GET /")
        self.clock.advance(2)
        self.assertEqual(raw.response().code, 408)

    def test_deadline_cancelled_on_disconnect(self) -> None:
        raw = RawConnection(self.site)
        raw.send(b"GET /")
        raw.close()
        self.assertEqual(
            [c for c in self.clock.getDelayedCalls() if "_request_late" in repr(c)], []
        )

    def assertBusy(self, raw: RawConnection, message: str) -> None:
        response = raw.response()
        self.assertEqual(response.status_line, "HTTP/1.1 503 Service Unavailable")
        self.assertEqual(response.headers["retry-after"], "10")
        self.assertEqual(response.headers["content-type"], JSON)
        self.assertEqual(response.headers["connection"], "close")
        self.assertEqual(response.headers["content-length"], str(len(response.body)))
        self.assertEqual(json.loads(response.body), {"error": "busy", "message": message})
        self.assertTrue(raw.transport.disconnecting)

    def test_per_host_cap(self) -> None:
        RawConnection(self.site)
        RawConnection(self.site)
        refused = RawConnection(self.site)
        self.assertIsInstance(refused.protocol, Refusal)
        self.assertBusy(
            refused,
            "too many connections from 198.51.100.7 (at most 2 at once); try again in 10 s",
        )
        answered = refused.transport.value()
        refused.send(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(refused.transport.value(), answered)
        self.assertEqual(self.core.traffic.connections["http"], 2)
        self.assertEqual(self.core.traffic.requests[("http", "connection", "busy")], 1)
        # Another host is served.
        other = RawConnection(self.site, "192.0.2.9")
        other.send(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(other.response().code, 200)

    def test_a_closed_connection_frees_its_place(self) -> None:
        first = RawConnection(self.site)
        RawConnection(self.site)
        first.close()
        self.assertEqual(self.limiter.count("198.51.100.7"), 1)
        self.assertNotIsInstance(RawConnection(self.site).protocol, Refusal)

    def test_total_cap(self) -> None:
        for i in range(4):
            RawConnection(self.site, f"192.0.2.{i + 1}")
        self.assertBusy(
            RawConnection(self.site, "192.0.2.99"),
            "the server has too many connections (4); try again in 10 s",
        )

    def test_caps_are_shared_with_the_line_protocol(self) -> None:
        """One count for both faces: the caps bound the process's descriptors."""
        factory = HALPServerFactory(self.core, self.clock, limiter=self.limiter)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 40000))
        proto = factory.buildProtocol(transport.getPeer())
        assert proto is not None
        proto.makeConnection(transport)
        RawConnection(self.site)
        self.assertIsInstance(RawConnection(self.site).protocol, Refusal)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.7", 40001))
        refused = factory.buildProtocol(transport.getPeer())
        self.assertIsInstance(refused, Refusal)


# -- GET /v1/labels ------------------------------------------------------------


class ListLabelsTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.insert("myapp/v1", entry(20))
        self.insert("myapp/v2", entry(10))
        self.insert("other", entry(30))

    def test_top_level(self) -> None:
        reply = self.get("/v1/labels")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), JSON)
        self.assertEqual(reply.header("Cache-Control"), "public, max-age=30")
        self.assertEqual(reply.header("Vary"), "Accept")
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW - 10))
        self.assertRegex(reply.header("ETag") or "", ETAG)
        self.assertEqual(
            reply.json(),
            {
                "prefix": "",
                "offset": 0,
                "limit": 100,
                "capped": False,
                "labels": [
                    {"name": "myapp", "timestamp": NOW - 10},
                    {"name": "other", "timestamp": NOW - 30},
                ],
            },
        )
        self.assertEqual(self.get("/v1/labels/").body, reply.body)
        self.assertEqual(self.get("/v1/labels?prefix=").body, reply.body)

    def test_prefix_gives_full_names(self) -> None:
        for query in ("prefix=myapp", "prefix=%2Fmyapp%2F", "prefix=myapp/"):
            document = self.get("/v1/labels?" + query).json()
            self.assertEqual(document["prefix"], "myapp", query)
            self.assertEqual(
                document["labels"],
                [
                    {"name": "myapp/v2", "timestamp": NOW - 10},
                    {"name": "myapp/v1", "timestamp": NOW - 20},
                ],
            )

    def test_text(self) -> None:
        reply = self.get("/v1/labels?prefix=myapp", Accept="text/plain")
        self.assertEqual(reply.header("Content-Type"), TEXT)
        self.assertEqual(reply.body, b"%d myapp/v2\n%d myapp/v1\n" % (NOW - 10, NOW - 20))
        top = self.get("/v1/labels?format=text")
        self.assertEqual(top.body, b"%d myapp\n%d other\n" % (NOW - 10, NOW - 30))

    def test_no_sublabels(self) -> None:
        reply = self.get("/v1/labels?prefix=other")
        self.assertEqual(reply.json()["labels"], [])
        self.assertIsNone(reply.header("Last-Modified"))

    def test_bad_prefix(self) -> None:
        self.assertError(
            self.get("/v1/labels?prefix=bad!"),
            400,
            "bad-label",
            "bad label segment 'bad!': allowed are A-Z a-z 0-9 _ - .",
        )
        self.assertError(
            self.get("/v1/labels?prefix=labels"), 400, "bad-label", "label 'labels' is reserved"
        )
        self.assertError(
            self.get("/v1/labels?prefix=a//b"), 400, "bad-label", "empty label segment"
        )
        self.assertError(
            self.get("/v1/labels?prefix=a&prefix=b"),
            400,
            "bad-request",
            "prefix given more than once",
        )

    def test_limit_and_offset(self) -> None:
        document = self.get("/v1/labels?limit=1&offset=1").json()
        self.assertEqual(document["labels"], [{"name": "other", "timestamp": NOW - 30}])
        self.assertEqual((document["offset"], document["limit"]), (1, 1))
        self.assertError(self.get("/v1/labels?limit=0"), 400, "bad-range")
        self.assertError(self.get("/v1/labels?offset=x"), 400, "bad-range")

    def test_capped(self) -> None:
        reply = self.get("/v1/labels?limit=101")
        self.assertEqual(reply.header("HALP-Capped-At"), "100")
        document = reply.json()
        self.assertTrue(document["capped"])
        self.assertEqual(document["limit"], 100)

    def test_expired_labels_are_not_listed(self) -> None:
        self.clock.advance(self.limits.ttl - 15)
        self.assertEqual(
            self.get("/v1/labels").json()["labels"], [{"name": "myapp", "timestamp": NOW - 10}]
        )

    def test_not_modified(self) -> None:
        tag = self.get("/v1/labels").header("ETag")
        assert tag is not None
        self.assertEqual(self.get("/v1/labels", If_None_Match=tag).code, 304)
        self.insert("third", entry(1))
        self.assertEqual(self.get("/v1/labels", If_None_Match=tag).code, 200)

    def test_counted_as_labels(self) -> None:
        self.get("/v1/labels")
        self.get("/v1/labels?prefix=bad!")
        self.assertEqual(self.core.traffic.requests[("http", "labels", "ok")], 1)
        self.assertEqual(self.core.traffic.requests[("http", "labels", "bad-label")], 1)


# -- /v1/hello, /v1/stats, /v1/peers -------------------------------------------


class HelloTests(WebTestCase):
    def expected(self) -> dict[str, object]:
        return {
            "protocol": "HALP/1",
            "server": f"halp/{__version__}",
            "time": NOW,
            "max-line": 1024,
            "default-slice": 10,
            "max-slice": 100,
            "max-entries": 1000,
            "ttl": 86400,
            "max-insert-labels": 16,
            "max-insert-entries": 100,
            "max-gossip-entries": 1000,
            "node": self.core.node_id,
            "verify": "none",
            "features": ["changes", "push", "stats", "peers"],
        }

    def test_json(self) -> None:
        reply = self.get("/v1/hello")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), JSON)
        self.assertEqual(reply.header("Cache-Control"), "no-cache")
        self.assertIsNone(reply.header("ETag"))
        self.assertEqual(reply.json(), self.expected())

    def test_time_follows_the_clock(self) -> None:
        self.clock.advance(5)
        self.assertEqual(self.get("/v1/hello").json()["time"], NOW + 5)

    def test_http_urls(self) -> None:
        self.core.http_urls = ["http://192.0.2.1:8080/", "https://halp.example.org/"]
        self.assertEqual(
            self.get("/v1/hello").json(),
            {**self.expected(), "http": ["http://192.0.2.1:8080/", "https://halp.example.org/"]},
        )

    def test_text(self) -> None:
        self.core.http_urls = ["http://192.0.2.1:8080/"]
        reply = self.get("/v1/hello", Accept="text/plain")
        self.assertEqual(reply.header("Content-Type"), TEXT)
        self.assertEqual(
            reply.body.decode("ascii"),
            "protocol HALP/1\n"
            f"server halp/{__version__}\n"
            f"time {NOW}\n"
            "max-line 1024\n"
            "default-slice 10\n"
            "max-slice 100\n"
            "max-entries 1000\n"
            "ttl 86400\n"
            "max-insert-labels 16\n"
            "max-insert-entries 100\n"
            "max-gossip-entries 1000\n"
            f"node {self.core.node_id}\n"
            "verify none\n"
            "features changes push stats peers\n"
            "http http://192.0.2.1:8080/\n",
        )
        self.assertEqual(self.get("/v1/hello?format=text").body, reply.body)

    def test_head(self) -> None:
        reply = self.request("HEAD", "/v1/hello")
        self.assertEqual((reply.code, reply.body), (200, b""))

    def test_bad_format(self) -> None:
        self.assertError(self.get("/v1/hello?format=yaml"), 400, "bad-request")


class StatsTests(WebTestCase):
    def test_json(self) -> None:
        self.clock.advance(42)
        self.core.stats.increment("push-received", 3)
        reply = self.get("/v1/stats")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Cache-Control"), "no-cache")
        expected: dict[str, object] = {"uptime": 42, **dict.fromkeys(COUNTERS, 0)}
        expected["push-received"] = 3
        self.assertEqual(reply.json(), expected)

    def test_text(self) -> None:
        self.clock.advance(7)
        self.core.stats.increment("changes-served")
        reply = self.get("/v1/stats?format=text")
        self.assertEqual(reply.header("Content-Type"), TEXT)
        lines = reply.body.decode("ascii").splitlines()
        self.assertEqual(lines[0], "uptime 7")
        self.assertEqual(
            lines[1:], [f"{name} {1 if name == 'changes-served' else 0}" for name in COUNTERS]
        )


class PeersTests(WebTestCase):
    def test_no_federation(self) -> None:
        reply = self.get("/v1/peers")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Cache-Control"), "no-cache")
        self.assertEqual(reply.json(), {"peers": []})

    def test_peers(self) -> None:
        self.core.peer_source = StaticPeers(
            [
                PeerStatus("192.0.2.9:7100", "trusted", 12000, True),
                PeerStatus("[2001:db8::9]:7100", "backoff", 300, False),
            ]
        )
        self.assertEqual(
            self.get("/v1/peers").json(),
            {
                "peers": [
                    {
                        "address": "192.0.2.9:7100",
                        "state": "trusted",
                        "quality": 12000,
                        "pinned": True,
                    },
                    {
                        "address": "[2001:db8::9]:7100",
                        "state": "backoff",
                        "quality": 300,
                        "pinned": False,
                    },
                ]
            },
        )


# -- routing -------------------------------------------------------------------


class RoutingTests(WebTestCase):
    def test_unknown_paths(self) -> None:
        for path, shown in [
            ("/nope", "/nope"),
            ("/v1", "/v1"),
            ("/v1/", "/v1"),
            ("/v1/nope", "/v1/nope"),
            ("/v1/hello/more", "/v1/hello/more"),
            ("/v1/stats/x", "/v1/stats/x"),
            ("/v2/labels/myapp", "/v2/labels/myapp"),
            ("/hostlist/x", "/hostlist/x"),
            ("/metrics/x", "/metrics/x"),
            ("/labels/myapp", "/labels/myapp"),
            ("/index.html", "/index.html"),
        ]:
            reply = self.get(path)
            self.assertError(reply, 404, "not-found", f"no such resource: {shown}")
            self.assertEqual(reply.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(self.core.traffic.requests[("http", "unknown", "not-found")], 11)

    def test_unknown_path_with_any_method(self) -> None:
        for method in ("POST", "PUT", "DELETE"):
            self.assertError(self.request(method, "/nope"), 404, "not-found")

    def test_methods_not_allowed(self) -> None:
        expected: Counter[tuple[str, str, str]] = Counter()
        for method, path, allow, kind in [
            ("PUT", "/v1/labels/myapp", "GET, HEAD, POST", "get"),
            ("DELETE", "/v1/labels/myapp", "GET, HEAD, POST", "get"),
            ("PATCH", "/v1/stats", "GET, HEAD", "stats"),
            ("DELETE", "/hostlist", "GET, HEAD", "hostlist"),
            ("OPTIONS", "/metrics", "GET, HEAD", "metrics"),
            ("PUT", "/", "GET, HEAD", "status"),
            ("DELETE", "/v1/labels", "GET, HEAD", "labels"),
        ]:
            reply = self.request(method, path)
            self.assertError(
                reply, 405, "method-not-allowed", f"{method} is not allowed here; use {allow}"
            )
            self.assertEqual(reply.header("Allow"), allow)
            expected[("http", kind, "method-not-allowed")] += 1
        self.assertEqual(self.core.traffic.requests, expected)

    def test_trailing_slash(self) -> None:
        self.assertEqual(self.get("/v1/hello/").code, 200)
        self.assertEqual(self.get("/hostlist/").code, 200)
        self.assertEqual(self.get("/metrics/").code, 200)

    def test_path_not_utf8(self) -> None:
        self.assertError(self.get("/%FF"), 404, "not-found", "no such resource: /\ufffd")


# -- /hostlist -----------------------------------------------------------------


class FullBuffer(StringTransport):
    """
    A transport whose send buffer is full past ``limit`` bytes until
    :meth:`drain`, as a socket whose reader does not read: it pauses its
    producer (the HTTP channel) the way Twisted's TCP transport does.
    """

    limit = 4096

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.full = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if not self.full and len(self.value()) > self.limit and self.producer is not None:
            self.full = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        taken: bytes = self.value()
        self.clear()
        if self.full and self.producer is not None:
            self.full = False
            self.producer.resumeProducing()
        return taken


class BackpressureTests(WebTestCase):
    """A client that pipelines requests and reads nothing holds one answer."""

    def connect(self) -> tuple[FullBuffer, IProtocol]:
        transport = FullBuffer(peerAddress=IPv4Address("TCP", "198.51.100.7", 50000))
        protocol = self.site.buildProtocol(transport.getPeer())
        assert protocol is not None
        protocol.makeConnection(transport)
        return transport, protocol

    def test_pipelined_answers_wait_for_the_reader(self) -> None:
        hosts = [Entry(NOW - i, f"10.0.{i // 256}.{i % 256}", 7100) for i in range(1000)]
        self.successResultOf(insert_entries(self.store, ["big"], hosts, 1000))
        transport, protocol = self.connect()
        protocol.dataReceived(b"GET /hostlist HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        # One answer is in the buffer; the 49 others wait for the reader.
        first = transport.drain()
        self.assertEqual(first.count(b"HTTP/1.1 200 OK"), 1)
        self.assertGreater(len(first), 20_000)
        for _ in range(49):
            self.assertEqual(transport.drain().count(b"HTTP/1.1 200 OK"), 1)
        self.assertEqual(transport.drain(), b"")
        self.assertEqual(self.core.traffic.requests[("http", "hostlist", "ok")], 50)

    def test_small_answers_are_not_held(self) -> None:
        transport, protocol = self.connect()
        protocol.dataReceived(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3)

    def test_a_client_that_leaves_while_held(self) -> None:
        self.insert("a", *[Entry(NOW - i, f"10.1.{i // 256}.{i % 256}", 1) for i in range(500)])
        transport, protocol = self.connect()
        protocol.dataReceived(b"GET /hostlist HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        self.assertTrue(transport.full)
        protocol.connectionLost(Failure(ConnectionDone()))
        transport.drain()
        self.assertEqual(self.flushLoggedErrors(), [])


class HostlistTests(WebTestCase):
    def fill(self) -> None:
        self.insert("a", entry(10, "192.0.2.1", 1), entry(20, "192.0.2.2", 2))
        self.insert("a/b", entry(5, "192.0.2.3", 3))
        self.insert("a/b/c", entry(7, "peer.example.net", 4))
        self.insert("c", entry(1, "2001:db8::4", 4))
        self.insert("d/e", entry(40, "192.0.2.5", 5))

    def test_all_labels(self) -> None:
        self.fill()
        reply = self.get("/hostlist")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), TEXT)
        self.assertEqual(reply.header("HALP-Truncated"), "no")
        self.assertEqual(reply.header("Cache-Control"), "public, max-age=5")
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW - 1))
        self.assertRegex(reply.header("ETag") or "", ETAG)
        # Most recently active labels first (a label's activity counts
        # its sublabels'), depth first, each label's entries newest first.
        self.assertEqual(
            reply.body.decode("ascii"),
            f"c {NOW - 1} 2001:db8::4 4\n"
            f"a {NOW - 10} 192.0.2.1 1\n"
            f"a {NOW - 20} 192.0.2.2 2\n"
            f"a/b {NOW - 5} 192.0.2.3 3\n"
            f"a/b/c {NOW - 7} peer.example.net 4\n"
            f"d/e {NOW - 40} 192.0.2.5 5\n",
        )

    def test_one_label(self) -> None:
        self.fill()
        reply = self.get("/hostlist?label=a")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("HALP-Truncated"), "no")
        self.assertEqual(reply.header("Last-Modified"), http_date(NOW - 10))
        self.assertEqual(reply.body, b"%d 192.0.2.1 1\n%d 192.0.2.2 2\n" % (NOW - 10, NOW - 20))
        self.assertEqual(self.get("/hostlist?label=a/b").body, b"%d 192.0.2.3 3\n" % (NOW - 5))
        self.assertEqual(self.get("/hostlist?label=d").body, b"")

    def test_empty(self) -> None:
        reply = self.get("/hostlist")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.body, b"")
        self.assertEqual(reply.header("HALP-Truncated"), "no")
        self.assertIsNone(reply.header("Last-Modified"))

    def test_bad_label(self) -> None:
        for query, message in [
            ("label=bad!", "bad label segment 'bad!': allowed are A-Z a-z 0-9 _ - ."),
            ("label=labels", "label 'labels' is reserved"),
            ("label=", "empty label"),
        ]:
            self.assertError(self.get("/hostlist?" + query), 400, "bad-label", message)
        self.assertError(self.get("/hostlist?label=a&label=b"), 400, "bad-request")
        self.assertEqual(self.core.traffic.requests[("http", "hostlist", "bad-label")], 3)

    def test_expired_entries_are_left_out(self) -> None:
        self.fill()
        self.clock.advance(self.limits.ttl - 8)
        self.assertEqual(
            self.get("/hostlist").body.decode("ascii"),
            f"c {NOW - 1} 2001:db8::4 4\n"
            f"a/b {NOW - 5} 192.0.2.3 3\n"
            f"a/b/c {NOW - 7} peer.example.net 4\n",
        )

    def test_capped_at_500000_bytes(self) -> None:
        self.assertEqual(HOSTLIST_CAP, 500_000)
        hosts = [Entry(NOW - i % 3600, f"10.0.{i // 256}.{i % 256}", 7100) for i in range(1000)]
        for n in range(20):
            self.successResultOf(insert_entries(self.store, [f"label{n:02}"], hosts, 1000))
        reply = self.get("/hostlist")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("HALP-Truncated"), "yes")
        body = reply.body
        self.assertLessEqual(len(body), HOSTLIST_CAP)
        self.assertTrue(body.endswith(b"\n"))
        lines = body.decode("ascii").splitlines()
        # Whole lines, as many as fit.
        longest = max(len(line) + 1 for line in lines)
        self.assertGreater(len(body), HOSTLIST_CAP - longest)
        for line in lines:
            label, timestamp, host, port = line.split(" ")
            self.assertRegex(label, r"label[0-9]{2}\Z")
            self.assertTrue(NOW - 3600 < int(timestamp) <= NOW)
            self.assertEqual(port, "7100")
        self.assertEqual(len(lines), len(set(lines)))
        self.assertLess(len(lines), 20_000)
        # Labels equally active come by name.
        self.assertEqual(lines[0], f"label00 {NOW} 10.0.0.0 7100")
        self.assertEqual(lines[1000], f"label01 {NOW} 10.0.0.0 7100")

    def test_last_modified_is_the_newest_line_kept(self) -> None:
        """The lines the cap cuts off do not date the list."""
        # "p" is the most active label because of its sublabel's newer
        # entry, so its own (older) entries come first and fill the list.
        filler = [Entry(NOW - 100, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 7100) for i in range(20_000)]
        self.successResultOf(insert_entries(self.store, ["p"], filler, 20_000))
        self.successResultOf(
            insert_entries(self.store, ["p/new"], [Entry(NOW, "192.0.2.9", 1)], 1000)
        )
        reply = self.get("/hostlist")
        self.assertEqual(reply.header("HALP-Truncated"), "yes")
        self.assertNotIn(b"192.0.2.9", reply.body)
        self.assertEqual(reply.header("Last-Modified"), datetimeToString(NOW - 100).decode("ascii"))

    def test_concurrent_requests_share_one_build(self) -> None:
        self.insert("a", entry(10, "192.0.2.1", 1))
        held: list[Deferred[list[LabelInfo]]] = []
        real = self.store.list_labels

        rows: list[list[LabelInfo]] = []

        def slow(parent: str, start: int, stop: int, since: int) -> Deferred[list[LabelInfo]]:
            d: Deferred[list[LabelInfo]] = Deferred()
            held.append(d)
            rows.append(self.successResultOf(real(parent, start, stop, since)))
            return d

        self.store.list_labels = slow  # type: ignore[method-assign]
        pending = [self.client.get(BASE + "/hostlist") for _ in range(5)]
        self.network.flush()
        # Five requests, one walk of the label index.
        self.assertEqual(len(held), 1)
        while held:
            held.pop(0).callback(rows.pop(0))
            self.network.flush()
        for response in pending:
            self.assertEqual(self.successResultOf(response).code, 200)

    def test_label_lists_do_not_push_out_the_full_list(self) -> None:
        self.insert("a", entry(10, "192.0.2.1", 1))
        full = self.get("/hostlist")
        for i in range(100):
            self.get(f"/hostlist?label=x{i}")
        resource = self.site.resource
        assert isinstance(resource, HALPResource)
        self.assertLessEqual(len(resource._hostlists), 65)
        self.insert("a", entry(1, "192.0.2.2", 2))
        # Still within its minimum age: the full list was kept, not rebuilt.
        self.assertEqual(self.get("/hostlist").body, full.body)

    def test_built_at_most_every_min_age(self) -> None:
        self.insert("a", entry(10, "192.0.2.1", 1))
        first = self.get("/hostlist")
        self.insert("a", entry(1, "192.0.2.2", 2))
        self.clock.advance(HOSTLIST_MIN_AGE - 1)
        second = self.get("/hostlist")
        self.assertEqual(second.body, first.body)
        self.assertEqual(second.header("ETag"), first.header("ETag"))
        self.clock.advance(1)
        third = self.get("/hostlist")
        self.assertEqual(
            third.body, b"a %d 192.0.2.2 2\na %d 192.0.2.1 1\n" % (NOW - 1, NOW - 10)
        )
        self.assertNotEqual(third.header("ETag"), first.header("ETag"))

    def test_kept_up_to_max_age_without_changes(self) -> None:
        """A store that changes behind the core's back is seen after HOSTLIST_MAX_AGE."""
        self.insert("a", entry(10, "192.0.2.1", 1))
        first = self.get("/hostlist")
        self.successResultOf(insert_entries(self.store, ["a"], [entry(1, "192.0.2.2", 2)], 1000))
        self.clock.advance(HOSTLIST_MAX_AGE - 1)
        self.assertEqual(self.get("/hostlist").body, first.body)
        self.clock.advance(1)
        self.assertEqual(
            self.get("/hostlist").body,
            b"a %d 192.0.2.2 2\na %d 192.0.2.1 1\n" % (NOW - 1, NOW - 10),
        )

    def test_label_lists_are_cached_apart(self) -> None:
        self.insert("a", entry(10, "192.0.2.1", 1))
        self.insert("b", entry(20, "192.0.2.2", 2))
        self.assertEqual(self.get("/hostlist?label=a").body, b"%d 192.0.2.1 1\n" % (NOW - 10))
        self.assertEqual(self.get("/hostlist?label=b").body, b"%d 192.0.2.2 2\n" % (NOW - 20))
        self.assertEqual(self.get("/hostlist").body.count(b"\n"), 2)

    def test_not_modified(self) -> None:
        self.insert("a", entry(10, "192.0.2.1", 1))
        first = self.get("/hostlist")
        tag = first.header("ETag")
        assert tag is not None
        # From the cached list, and from a list built again.
        for advance in (0, HOSTLIST_MAX_AGE):
            self.clock.advance(advance)
            reply = self.get("/hostlist", If_None_Match=tag)
            self.assertEqual(reply.code, 304)
            self.assertEqual(reply.body, b"")
            self.assertEqual(reply.header("ETag"), tag)
        reply = self.get("/hostlist", If_Modified_Since=http_date(NOW - 10))
        self.assertEqual(reply.code, 304)
        self.assertEqual(self.core.traffic.requests[("http", "hostlist", "not-modified")], 3)
        # A cached answer is not changed by a 304 served from it.
        self.assertEqual(self.get("/hostlist").body, first.body)

    def test_head(self) -> None:
        self.insert("a", entry(10, "192.0.2.1", 1))
        reply = self.request("HEAD", "/hostlist")
        self.assertEqual((reply.code, reply.body), (200, b""))
        self.assertEqual(reply.header("HALP-Truncated"), "no")


class WideHostlistTests(WebTestCase):
    """Labels that hold more than a host list's worth of entries."""

    limits = Limits(max_entries=20_000)

    def test_one_label_capped(self) -> None:
        hosts = [Entry(NOW - i, f"10.0.{i // 256}.{i % 256}", 7100) for i in range(20_000)]
        self.successResultOf(insert_entries(self.store, ["big"], hosts, 20_000))
        reply = self.get("/hostlist?label=big")
        self.assertEqual(reply.header("HALP-Truncated"), "yes")
        body = reply.body
        self.assertLessEqual(len(body), HOSTLIST_CAP)
        self.assertGreater(len(body), HOSTLIST_CAP - 30)
        self.assertTrue(body.endswith(b"\n"))
        lines = body.splitlines()
        # Newest first, across the store's pages of 1000, none twice.
        self.assertEqual(lines[:2], [b"%d 10.0.0.0 7100" % NOW, b"%d 10.0.0.1 7100" % (NOW - 1)])
        self.assertEqual(lines[1000], b"%d 10.0.3.232 7100" % (NOW - 1000))
        self.assertEqual(
            [int(line.split()[0]) for line in lines], list(range(NOW, NOW - len(lines), -1))
        )

    def test_one_label_across_pages(self) -> None:
        hosts = [Entry(NOW - i, f"192.0.{i // 256}.{i % 256}", 1) for i in range(2500)]
        self.successResultOf(insert_entries(self.store, ["big"], hosts, 20_000))
        reply = self.get("/hostlist?label=big")
        self.assertEqual(reply.header("HALP-Truncated"), "no")
        self.assertEqual(len(reply.body.splitlines()), 2500)
        everything = self.get("/hostlist")
        self.assertEqual(len(everything.body.splitlines()), 2500)


# -- /metrics ------------------------------------------------------------------


def samples(families: dict[str, Any], name: str) -> list[Sample]:
    family = families[name]
    result: list[Sample] = family.samples
    return result


class MetricsTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.insert("myapp", entry(10, "192.0.2.1", 1), entry(20, "192.0.2.2", 2))
        self.insert("myapp/v2", entry(5, "192.0.2.3", 3))
        self.core.peer_source = StaticPeers(
            [
                PeerStatus("192.0.2.9:7100", "trusted", 12000, True),
                PeerStatus("192.0.2.10:7100", "untested", 10000, False),
                PeerStatus("192.0.2.11:7100", "banned", 0, False),
            ]
        )

    def line_protocol(self) -> StringTransport:
        """A HALP/1 connection to the same core, that asks two things."""
        return halp1_connection(self.core, self.clock, "203.0.113.9", b"get myapp\nget bad!label\n")

    def scrape(self, **headers: str) -> tuple[Reply, dict[str, Any]]:
        reply = self.get("/metrics", **headers)
        self.assertEqual(reply.code, 200)
        families = {f.name: f for f in text_string_to_metric_families(reply.body.decode("utf-8"))}
        return reply, families

    def test_prometheus_text(self) -> None:
        self.clock.advance(120)
        self.get("/v1/labels/myapp")
        self.get("/v1/labels/bad!")
        self.get("/nope")
        self.line_protocol()
        self.core.stats.increment("push-sent", 3)
        reply, families = self.scrape()
        self.assertEqual(reply.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8")
        self.assertEqual(reply.header("Cache-Control"), "no-cache")

        requests = families["halp_requests"]
        self.assertEqual(requests.type, "counter")
        self.assertEqual(
            {
                (s.labels["frontend"], s.labels["kind"], s.labels["result"]): s.value
                for s in requests.samples
                if s.name == "halp_requests_total"
            },
            {
                ("http", "get", "ok"): 1,
                ("http", "get", "bad-label"): 1,
                ("http", "unknown", "not-found"): 1,
                ("halp1", "get", "ok"): 1,
                ("halp1", "malformed", "bad-label"): 1,
            },
        )
        errors = families["halp_errors"]
        self.assertEqual(errors.type, "counter")
        self.assertEqual(
            {
                (s.labels["frontend"], s.labels["code"]): s.value
                for s in errors.samples
                if s.name == "halp_errors_total"
            },
            {("http", "bad-label"): 1, ("http", "not-found"): 1, ("halp1", "bad-label"): 1},
        )
        # The scrape's own connection, and the open HALP/1 one.
        self.assertEqual(
            {s.labels["frontend"]: s.value for s in samples(families, "halp_connections")},
            {"http": 1, "halp1": 1},
        )
        self.assertEqual(families["halp_connections"].type, "gauge")
        self.assertEqual(
            [(s.name, s.labels, s.value) for s in samples(families, "halp_entries")],
            [("halp_entries", {"store": "memory"}, 3)],
        )
        self.assertEqual(
            [(s.name, s.labels, s.value) for s in samples(families, "halp_labels")],
            [("halp_labels", {"store": "memory"}, 2)],
        )
        for name in COUNTERS:
            metric = "halp_" + name.replace("-", "_")
            family = families[metric]
            self.assertEqual(family.type, "counter", metric)
            totals = [s.value for s in family.samples if s.name == metric + "_total"]
            self.assertEqual(totals, [self.core.stats[name]], metric)
        self.assertEqual(samples(families, "halp_push_sent")[0].value, 3)
        self.assertEqual(samples(families, "halp_entries_inserted")[0].value, 3)
        self.assertEqual(
            {s.labels["state"]: s.value for s in samples(families, "halp_peers")},
            {"trusted": 1, "untested": 1, "backoff": 0, "banned": 1},
        )
        self.assertEqual(
            [(s.name, s.labels, s.value) for s in samples(families, "halp_info")],
            [
                (
                    "halp_info",
                    {"version": __version__, "node": self.core.node_id, "store": "memory"},
                    1,
                )
            ],
        )
        self.assertEqual(samples(families, "halp_uptime_seconds")[0].value, 120)
        if sys.platform.startswith("linux"):  # ProcessCollector reads /proc
            process = {name for name in families if name.startswith("process_")}
            self.assertIn("process_cpu_seconds", process)
            self.assertIn("process_resident_memory_bytes", process)
            self.assertIn("process_open_fds", process)

    def test_metrics_requests_are_counted(self) -> None:
        _, families = self.scrape()
        self.assertNotIn(("http", "metrics", "ok"), {
            (s.labels["frontend"], s.labels["kind"], s.labels["result"])
            for s in samples(families, "halp_requests")
        })
        _, families = self.scrape()
        self.assertIn(
            ("halp_requests_total", {"frontend": "http", "kind": "metrics", "result": "ok"}, 1.0),
            [(s.name, s.labels, s.value) for s in samples(families, "halp_requests")],
        )

    def test_census_is_read_for_each_scrape(self) -> None:
        _, families = self.scrape()
        self.assertEqual(samples(families, "halp_entries")[0].value, 3)
        self.insert("other", entry(1))
        _, families = self.scrape()
        self.assertEqual(samples(families, "halp_entries")[0].value, 4)
        self.assertEqual(samples(families, "halp_labels")[0].value, 3)

    def test_no_traffic(self) -> None:
        _, families = self.scrape()
        self.assertEqual(samples(families, "halp_requests"), [])
        self.assertEqual(samples(families, "halp_errors"), [])
        self.assertEqual(
            {s.labels["frontend"]: s.value for s in samples(families, "halp_connections")},
            {"http": 1, "halp1": 0},
        )

    def test_openmetrics(self) -> None:
        self.get("/v1/labels/myapp")
        reply = self.get(
            "/metrics", Accept="application/openmetrics-text; version=1.0.0; charset=utf-8"
        )
        self.assertEqual(reply.code, 200)
        content_type = reply.header("Content-Type") or ""
        self.assertTrue(content_type.startswith("application/openmetrics-text"), content_type)
        self.assertTrue(reply.body.endswith(b"# EOF\n"))
        families = {f.name: f for f in openmetrics_families(reply.body.decode("utf-8"))}
        self.assertEqual(families["halp"].type, "info")
        self.assertEqual(families["halp_requests"].type, "counter")
        self.assertIn(
            ("halp_requests_total", {"frontend": "http", "kind": "get", "result": "ok"}, 1.0),
            [(s.name, s.labels, s.value) for s in families["halp_requests"].samples],
        )

    def test_head(self) -> None:
        reply = self.request("HEAD", "/metrics")
        self.assertEqual((reply.code, reply.body), (200, b""))


# -- the status page -----------------------------------------------------------


class StatusPageTests(WebTestCase):
    def page(self) -> str:
        reply = self.get("/")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), HTML)
        self.assertEqual(reply.header("Cache-Control"), "no-cache")
        return reply.body.decode("utf-8")

    def test_empty_server(self) -> None:
        page = self.page()
        self.assertTrue(page.startswith("<!DOCTYPE html>"))
        self.assertIn('<meta name="viewport" content="width=device-width, initial-scale=1">', page)
        self.assertIn(f"halp {__version__}", page)
        self.assertIn(f"node <code>{self.core.node_id}</code>", page)
        self.assertIn("memory store", page)
        self.assertIn("No entries yet.", page)
        self.assertIn("No peer servers known", page)
        self.assertIn("No errors since the server started.", page)
        self.assertIn("Server time 2023-11-14T22:13:20Z.", page)
        self.assertNotIn("<script", page)
        self.assertTrue(page.endswith("</html>\n"))

    def test_summary(self) -> None:
        self.clock.advance(3700)
        self.insert("myapp", Entry(NOW + 3600, "192.0.2.1", 1), Entry(NOW + 3000, "192.0.2.2", 2))
        self.insert("myapp/v2", Entry(NOW + 3690, "192.0.2.3", 3))
        self.core.peer_source = StaticPeers(
            [
                PeerStatus("192.0.2.9:7100", "trusted", 12000, True),
                PeerStatus("[2001:db8::9]:7100", "banned", 0, False),
            ]
        )
        page = self.page()
        self.assertIn('<div class="card">Uptime<b>1 h 1 min</b></div>', page)
        self.assertIn('<div class="card">Labels<b>2</b></div>', page)
        self.assertIn('<div class="card">Entries<b>3</b></div>', page)
        self.assertIn('<div class="card">Peers<b>1 trusted / 2</b></div>', page)
        # The scrape's own connection.
        self.assertIn('<div class="card">Connections<b>1</b></div>', page)
        self.assertIn("Entries are served for 1 d 0 h after their last confirmation;", page)
        self.assertIn("each label keeps its 1,000 newest.", page)

    def test_labels_with_entry_counts(self) -> None:
        self.insert("myapp", entry(100, "192.0.2.1", 1), entry(7200, "192.0.2.2", 2))
        self.insert("myapp/v2", entry(60, "192.0.2.3", 3))
        self.insert("zeta", entry(5, "192.0.2.4", 4))
        page = self.page()
        self.assertIn(
            '<tr><td><a href="/v1/labels/zeta"><code>zeta</code></a></td>'
            '<td class="n">1</td>'
            '<td><time datetime="2023-11-14T22:13:15Z">5 s ago</time></td></tr>',
            page,
        )
        # A label is as active as its newest sublabel; ties by name.
        self.assertIn(
            '<tr><td><a href="/v1/labels/myapp"><code>myapp</code></a></td>'
            '<td class="n">2</td>'
            '<td><time datetime="2023-11-14T22:12:20Z">1 min ago</time></td></tr>',
            page,
        )
        self.assertIn(
            '<tr><td><a href="/v1/labels/myapp/v2"><code>myapp/v2</code></a></td>'
            '<td class="n">1</td>',
            page,
        )
        order = [page.index(f"<code>{name}</code>") for name in ("zeta", "myapp", "myapp/v2")]
        self.assertEqual(order, sorted(order))

    def test_many_labels(self) -> None:
        for n in range(STATUS_LABELS + 1):
            self.insert(f"label{n:03}", entry(n + 1))
        page = self.page()
        self.assertIn(f"The {STATUS_LABELS} most recently active of {STATUS_LABELS + 1:,}.", page)
        self.assertIn("<code>label000</code>", page)
        self.assertIn(f"<code>label{STATUS_LABELS - 1:03}</code>", page)
        self.assertNotIn(f"<code>label{STATUS_LABELS:03}</code>", page)

    def test_peers(self) -> None:
        self.core.peer_source = StaticPeers(
            [
                PeerStatus("192.0.2.9:7100", "trusted", 12000, True),
                PeerStatus("[2001:db8::9]:7100", "backoff", 250, False),
            ]
        )
        page = self.page()
        self.assertIn(
            '<tr><td><code>192.0.2.9:7100</code> (pinned)</td>'
            '<td class="trusted">trusted</td><td class="n">12,000</td></tr>',
            page,
        )
        self.assertIn(
            '<tr><td><code>[2001:db8::9]:7100</code></td>'
            '<td class="backoff">backoff</td><td class="n">250</td></tr>',
            page,
        )
        self.assertNotIn("No peer servers known", page)

    def test_recent_errors_are_escaped_and_show_networks(self) -> None:
        self.assertEqual(self.get("/<script>alert(1)</script>").code, 404)
        self.clock.advance(90)
        self.assertEqual(self.get("/v1/labels/bad<b>").code, 400)
        # A HALP/1 client from another network.
        halp1_connection(self.core, self.clock, "203.0.113.9", b"get bad&label\n")
        self.clock.advance(10)
        page = self.page()
        self.assertNotIn("<script>", page)
        self.assertNotIn("<b>\"", page)
        self.assertIn(
            "<td><code>198.51.100.0/24</code></td>"
            "<td>http: <code>GET /&lt;script&gt;alert(1)&lt;/script&gt;</code></td>"
            "<td><b>not-found</b> no such resource: /&lt;script&gt;alert(1)&lt;/script&gt;</td>",
            page,
        )
        self.assertIn(
            "<td>http: <code>GET /v1/labels/bad&lt;b&gt;</code></td>"
            "<td><b>bad-label</b> bad label segment &#x27;bad&lt;b&gt;&#x27;:",
            page,
        )
        self.assertIn(
            "<td><code>203.0.113.0/24</code></td>"
            "<td>halp1: <code>(malformed request)</code></td>"
            "<td><b>bad-label</b> bad label segment &#x27;bad&amp;label&#x27;:",
            page,
        )
        self.assertIn('<time datetime="2023-11-14T22:13:20Z">1 min ago</time>', page)
        # Newest first.
        self.assertLess(page.index("203.0.113.0/24"), page.index("bad&lt;b&gt;"))
        self.assertLess(page.index("bad&lt;b&gt;"), page.index("alert(1)"))
        # Networks only: never a client's address.
        self.assertNotIn(CLIENT, page)
        self.assertNotIn("203.0.113.9", page)
        self.assertNotIn("No errors since the server started.", page)

    def test_head(self) -> None:
        reply = self.request("HEAD", "/")
        self.assertEqual((reply.code, reply.body), (200, b""))
        self.assertEqual(reply.header("Content-Type"), HTML)


# -- failures ------------------------------------------------------------------


class StoreFailureTests(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.insert("myapp", entry(10))
        self.store.error = StoreError("disk on fire")

    def assertUnavailable(self, reply: Reply) -> None:
        self.assertError(reply, 503, "unavailable", "store unavailable, try again later")
        self.assertEqual(reply.header("Retry-After"), "5")

    def test_get(self) -> None:
        self.assertUnavailable(self.get("/v1/labels/myapp"))
        self.assertEqual(self.core.traffic.requests[("http", "get", "unavailable")], 1)
        self.store.error = None
        self.assertEqual(self.get("/v1/labels/myapp").code, 200)

    def test_insert(self) -> None:
        self.assertUnavailable(self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 1}))
        self.assertEqual(self.core.traffic.requests[("http", "insert", "unavailable")], 1)

    def test_everything_that_reads_the_store(self) -> None:
        for path in ("/v1/labels", "/hostlist", "/hostlist?label=myapp", "/metrics", "/"):
            self.assertUnavailable(self.get(path))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_logged_as_a_warning(self) -> None:
        events = log_events(self)
        self.get("/v1/labels/myapp")
        warnings = [e for e in events if e.get("error") == "disk on fire"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["request"], "GET /v1/labels/myapp")

    def test_failed_hostlist_is_not_cached(self) -> None:
        self.assertUnavailable(self.get("/hostlist"))
        self.store.error = None
        self.assertEqual(self.get("/hostlist").body, b"myapp %d 192.0.2.10 7100\n" % (NOW - 10))


class Boom(Exception):
    """A bug."""


class InternalErrorTests(WebTestCase):
    def test_unexpected_exception(self) -> None:
        self.store.error = Boom("oops")
        reply = self.get("/v1/labels/myapp")
        self.assertError(reply, 500, "internal", "internal server error")
        self.assertEqual(reply.json(), {"error": "internal", "message": "internal server error"})
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertEqual(self.core.traffic.requests[("http", "unknown", "internal")], 1)
        self.assertEqual(self.core.traffic.connections["http"], 0)
        # The server goes on.
        self.store.error = None
        self.assertEqual(self.get("/v1/labels/myapp").code, 200)


# -- traffic and logging -------------------------------------------------------


class TrafficTests(WebTestCase):
    def test_requests_by_kind_and_result(self) -> None:
        self.get("/v1/labels/myapp")
        self.request("HEAD", "/v1/labels/myapp")
        self.post("/v1/labels/myapp", {"host": "192.0.2.5", "port": 1})
        self.post("/v1/labels/myapp", [])
        self.get("/v1/labels")
        self.get("/v1/hello")
        self.get("/v1/stats")
        self.get("/v1/peers")
        self.get("/hostlist")
        self.get("/metrics")
        self.get("/")
        self.get("/nope")
        self.assertEqual(
            dict(self.core.traffic.requests),
            {
                ("http", "get", "ok"): 2,
                ("http", "insert", "ok"): 1,
                ("http", "insert", "bad-request"): 1,
                ("http", "labels", "ok"): 1,
                ("http", "hello", "ok"): 1,
                ("http", "stats", "ok"): 1,
                ("http", "peers", "ok"): 1,
                ("http", "hostlist", "ok"): 1,
                ("http", "metrics", "ok"): 1,
                ("http", "status", "ok"): 1,
                ("http", "unknown", "not-found"): 1,
            },
        )

    def test_recent_errors(self) -> None:
        self.get("/v1/labels/bad!?limit=3")
        self.clock.advance(1)
        self.post("/v1/labels/myapp", [])
        self.assertEqual(
            list(self.core.traffic.recent),
            [
                RecentError(
                    NOW,
                    "http",
                    CLIENT_NETWORK,
                    "GET /v1/labels/bad!",
                    "bad-label",
                    "bad label segment 'bad!': allowed are A-Z a-z 0-9 _ - .",
                ),
                RecentError(
                    NOW + 1,
                    "http",
                    CLIENT_NETWORK,
                    "POST /v1/labels/myapp",
                    "bad-request",
                    "no entry given",
                ),
            ],
        )

    def test_request_summary_is_short(self) -> None:
        self.get("/" + "x" * 500)
        (error,) = self.core.traffic.recent
        self.assertEqual(len(error.request), 120)
        self.assertTrue(error.request.startswith("GET /xxx"))

    def test_connection_gauge_over_treq(self) -> None:
        d = self.client.get(BASE + "/v1/hello")
        self.assertEqual(self.core.traffic.connections["http"], 1)
        self.network.flush()
        response = self.successResultOf(d)
        self.network.flush()
        self.successResultOf(treq.content(response))
        self.assertEqual(self.core.traffic.connections["http"], 0)

    def test_connection_gauge_raw(self) -> None:
        first = RawConnection(self.site)
        second = RawConnection(self.site)
        self.assertEqual(self.core.traffic.connections["http"], 2)
        first.protocol.connectionLost(Failure(Exception("gone")))
        self.assertEqual(self.core.traffic.connections["http"], 1)
        second.protocol.connectionLost(Failure(Exception("gone")))
        self.assertEqual(self.core.traffic.connections["http"], 0)
        self.assertEqual(self.core.traffic.connections["halp1"], 0)

    def test_client_gone_before_the_answer(self) -> None:
        """A request whose client left is neither answered nor counted."""
        held: Deferred[list[Entry]] = Deferred()
        self.patch(self.store, "get", lambda *args: held)
        raw = RawConnection(self.site)
        raw.send(b"GET /v1/labels/myapp HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.protocol.connectionLost(Failure(Exception("gone")))
        held.callback([])
        self.assertEqual(raw.transport.value(), b"")
        self.assertEqual(dict(self.core.traffic.requests), {})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_keep_alive(self) -> None:
        """Two requests on one connection are both answered and counted."""
        raw = RawConnection(self.site)
        raw.send(
            b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /v1/labels/myapp?format=text HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        value: bytes = raw.transport.value()
        self.assertEqual(value.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertEqual(self.core.traffic.requests[("http", "hello", "ok")], 1)
        self.assertEqual(self.core.traffic.requests[("http", "get", "ok")], 1)
        self.assertEqual(self.core.traffic.connections["http"], 1)


class SiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.core = HALPCore(MemoryStore(), self.clock)

    def test_make_site(self) -> None:
        site = make_site(self.core, self.clock, log_requests=False)
        self.assertIsInstance(site, HALPSite)
        self.assertIs(site.core, self.core)
        self.assertFalse(site.log_requests)

    def test_request_log(self) -> None:
        events = log_events(self)
        site = make_site(self.core, self.clock)
        raw = RawConnection(site, "198.51.100.7")
        raw.send(b"GET /v1/hello?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        logged = [e for e in events if e.get("log_format") == "{peer} {method} {uri} -> {code}"]
        self.assertEqual(len(logged), 1)
        self.assertEqual(
            (logged[0]["peer"], logged[0]["method"], logged[0]["uri"], logged[0]["code"]),
            ("198.51.100.7:50000", "GET", "/v1/hello?x=1", 200),
        )

    def test_no_request_log(self) -> None:
        events = log_events(self)
        site = make_site(self.core, self.clock, log_requests=False)
        raw = RawConnection(site)
        raw.send(b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(
            [e for e in events if e.get("log_format") == "{peer} {method} {uri} -> {code}"], []
        )

    def test_idle_connections_are_closed(self) -> None:
        site = make_site(self.core, self.clock, timeout=30, log_requests=False)
        raw = RawConnection(site)
        self.clock.advance(29)
        self.assertFalse(raw.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(raw.transport.disconnecting)
