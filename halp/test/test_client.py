"""
Tests for :mod:`halp.client.client`: :class:`HALPClient` against real HALP
servers (and a libhalp emulation) on a :class:`~halp.testing.FakeNetwork`,
with time only from the network's clock.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from halp.client import (
    CACHE_LIMITS,
    SERVERS_LABEL,
    HALPClient,
    PeerList,
    ServerAddress,
    ServerRecord,
    fair_merge,
)
from halp.client.client import STATE_KEY
from halp.client.servers import BACKOFF_BASE, INITIAL_QUALITY
from halp.error import (
    ClientError,
    ConnectionClosed,
    ErrorCode,
    ProtocolError,
    StoreError,
    Timeout,
)
from halp.model import Entry, LabelInfo
from halp.store import insert_entries
from halp.server import HALPServerFactory
from halp.store.memory import MemoryStore
from halp.testing import FakeNetwork, LibhalpServerFactory

T = TypeVar("T")

NOW = 1_700_000_000


def server(n: int) -> ServerAddress:
    """The ``n``-th test server."""
    return ServerAddress(f"192.0.2.{n}", 7100)


def entry(age: int, n: int, port: int = 6881) -> Entry:
    """A peer ``198.51.100.n`` confirmed ``age`` seconds before NOW."""
    return Entry(NOW - age, f"198.51.100.{n}", port)


class RecordingStore(MemoryStore):
    """A server's store that records every ``get`` as (label, start, stop)."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[tuple[str, int, int]] = []
        #: When set, every ``get`` fails as a broken disk would.
        self.failing = False

    def get(self, label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        self.gets.append((label, start, stop))
        if self.failing:
            return fail(StoreError("disk on fire"))
        return super().get(label, start, stop, since)

    def entries(self, label: str) -> list[Entry]:
        result: list[Entry] = []
        super().get(label, 0, 10_000, 0).addCallback(result.extend)
        return result


class Vanishing(Protocol):
    """A server going away: it closes cleanly on the first request, unanswered."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class ClientTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = FakeNetwork()
        self.network.clock.advance(NOW)
        self.cache = MemoryStore()
        self.stores: dict[ServerAddress, RecordingStore] = {}
        self.factories: dict[ServerAddress, HALPServerFactory] = {}

    def start(self, address: ServerAddress, *entries: Entry, label: str = "app") -> RecordingStore:
        """Run a HALP/1 server at ``address`` holding ``entries`` under ``label``."""
        store = RecordingStore()
        if entries:
            insert_entries(store, [label], entries, 1000)
        self.stores[address] = store
        self.factories[address] = self.network.halp_server(address, store)
        return store

    def restart(self, address: ServerAddress) -> None:
        """Bring a refused server back, with its store."""
        self.network.listen(address, self.factories[address])

    def client(
        self, *seeds: ServerAddress | str, cache: MemoryStore | None = None, **options: Any
    ) -> HALPClient:
        return HALPClient(
            self.network.clock,
            cache if cache is not None else self.cache,
            seeds,
            endpoint=self.network.endpoint,
            **options,
        )

    def done(self, d: Deferred[T]) -> T:
        """Deliver all traffic, then the Deferred's result."""
        self.network.flush()
        return self.successResultOf(d)

    def peers(self, d: Deferred[PeerList]) -> PeerList:
        """Deliver all traffic, then the lookup's answer."""
        self.network.flush()
        return self.successResultOf(d)

    def entries(self, d: Deferred[PeerList]) -> list[Entry]:
        """The entries a lookup or cached() has fired with."""
        peers = self.successResultOf(d)
        return list(peers)

    def record(self, client: HALPClient, address: ServerAddress) -> ServerRecord:
        for record in self.successResultOf(client.servers()):
            if record.address == address:
                return record
        raise AssertionError(f"{address} is not known")

    def known(self, client: HALPClient) -> set[ServerAddress]:
        return {r.address for r in self.successResultOf(client.servers())}


class FairMergeTests(SynchronousTestCase):
    def test_nothing(self) -> None:
        self.assertEqual(fair_merge([], 10), [])
        self.assertEqual(fair_merge([[], []], 10), [])

    def test_one_answer(self) -> None:
        """One server: its newest ``limit`` entries, newest first."""
        answer = [entry(30, 3), entry(10, 1), entry(20, 2)]
        self.assertEqual(fair_merge([answer], 2), [entry(10, 1), entry(20, 2)])

    def test_same_address_takes_latest_time(self) -> None:
        a = [entry(100, 1), entry(50, 2)]
        b = [entry(10, 1), entry(70, 3)]
        self.assertEqual(
            fair_merge([a, b], 10), [entry(10, 1), entry(50, 2), entry(70, 3)]
        )

    def test_ties_by_address(self) -> None:
        a = [Entry(NOW, "b.example", 1), Entry(NOW, "a.example", 2)]
        b = [Entry(NOW, "a.example", 1)]
        self.assertEqual(
            fair_merge([a, b], 3),
            [Entry(NOW, "a.example", 1), Entry(NOW, "a.example", 2), Entry(NOW, "b.example", 1)],
        )

    def test_liar_gets_its_share(self) -> None:
        """
        A server with 10 fresh entries nobody else reports gets at most
        ceil(limit / servers) places while the honest one has entries.
        """
        liar = [Entry(NOW - i, f"203.0.113.{i}", 1) for i in range(1, 11)]
        honest = [entry(1000, 1), entry(2000, 2), entry(3000, 3)]
        self.assertEqual(fair_merge([liar, honest], 4), liar[:2] + honest[:2])
        # The shares leave room: the liar's surplus fills it, the honest
        # entries all stay.
        self.assertEqual(fair_merge([liar, honest], 10), liar[:7] + honest)

    def test_shared_entries_count_against_nobody(self) -> None:
        shared = [entry(1, 1), entry(2, 2), entry(3, 3)]
        a = shared + [entry(4, 4), entry(6, 6)]
        b = shared + [entry(5, 5)]
        self.assertEqual(fair_merge([a, b], 5), shared + [entry(4, 4), entry(5, 5)])

    def test_empty_answer_counts_as_a_server(self) -> None:
        """A server that knows nothing still takes a share; the rest is filled."""
        liar = [Entry(NOW - i, f"203.0.113.{i}", 1) for i in range(1, 5)]
        self.assertEqual(fair_merge([liar, []], 4), liar)


class LookupTests(ClientTestCase):
    def test_newest_first_and_cached(self) -> None:
        """
        A lookup answers the server's entries newest first and keeps them:
        cached() returns them, and so does a new client over the same cache
        when no server can be reached.
        """
        self.start(server(1), entry(300, 3), entry(100, 1), entry(200, 2))
        client = self.client(server(1))
        peers = self.done(client.lookup("app"))
        expected = [entry(100, 1), entry(200, 2), entry(300, 3)]
        self.assertEqual(list(peers), expected)
        self.assertEqual(peers.label, "app")
        self.assertFalse(peers.from_cache)
        self.assertEqual(
            [(r.server, r.ok, r.dialect) for r in peers.results], [(server(1), True, "halp1")]
        )

        cached = self.successResultOf(client.cached("app"))
        self.assertEqual(list(cached), expected)
        self.assertTrue(cached.from_cache)

        self.network.refuse(server(1))
        later = self.client(server(1))
        peers = self.done(later.lookup("app"))
        self.assertEqual(list(peers), expected)
        self.assertTrue(peers.from_cache)
        (result,) = peers.results
        self.assertIsInstance(result.error, ConnectionClosed)

    def test_limit(self) -> None:
        """
        A lookup answers at most ``limit`` entries, on first contact (when
        the server is asked plainly and sends its default 10) and later
        (when it is asked for a window).
        """
        store = self.start(server(1), *(entry(i, i) for i in range(1, 8)))
        client = self.client(server(1))
        peers = self.done(client.lookup("app", 3))
        self.assertEqual(list(peers), [entry(1, 1), entry(2, 2), entry(3, 3)])
        self.assertFalse(peers.from_cache)
        self.assertEqual(self.record(client, server(1)).failures, 0)
        peers = self.done(client.lookup("app", 2))
        self.assertEqual(list(peers), [entry(1, 1), entry(2, 2)])
        self.assertEqual(store.gets[0], ("app", 0, 10))
        # Four times as many candidates as asked for (see fair_merge).
        self.assertEqual(store.gets[1], ("app", 0, 8))

    def test_failover(self) -> None:
        """A server that refuses the connection is replaced by the next one."""
        self.start(server(2), entry(10, 1))
        self.start(server(3), entry(20, 2))
        client = self.client(server(1), server(2), server(3), queries=1)
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertEqual(self.network.attempts, [server(1), server(2)])
        self.assertEqual([r.ok for r in peers.results], [False, True])
        self.assertFalse(peers.from_cache)

    def test_disagreeing_servers_merged(self) -> None:
        """Two servers' answers merge by address, each at its newest time."""
        self.start(server(1), entry(1000, 1), entry(500, 2))
        self.start(server(2), entry(100, 1), entry(300, 3))
        client = self.client(server(1), server(2))
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(100, 1), entry(300, 3), entry(500, 2)])
        self.assertEqual(sorted(r.server for r in peers.results if r.ok), [server(1), server(2)])
        self.assertEqual(
            self.entries(client.cached("app")),
            [entry(100, 1), entry(300, 3), entry(500, 2)],
        )

    def test_lying_server(self) -> None:
        """
        A server inventing 10 fresh entries takes at most its share of
        the answer: the honest server's entries are in it.
        """
        liar = [Entry(NOW - i, f"203.0.113.{i}", 1) for i in range(1, 11)]
        honest = [entry(1000, 1), entry(2000, 2), entry(3000, 3)]
        self.start(server(1), *liar)
        self.start(server(2), *honest)
        client = self.client(server(1), server(2))
        self.assertEqual(list(self.peers(client.lookup("app", 4))), liar[:2] + honest[:2])
        self.assertEqual(list(self.peers(client.lookup("app", 10))), liar[:7] + honest)

    def test_every_server_refuses(self) -> None:
        """When every server refuses, the cached entries come at once."""
        client = self.client(server(1), server(2), server(3))
        self.successResultOf(client.insert("app", "198.51.100.1", 6881, NOW - 60))
        d = client.lookup("app")
        # No flush, no time: the refusals are immediate.
        peers = self.successResultOf(d)
        self.assertEqual(list(peers), [entry(60, 1)])
        self.assertTrue(peers.from_cache)
        self.assertEqual(self.network.attempts, [server(1), server(2), server(3)])
        self.assertEqual(
            [(r.server, type(r.error)) for r in peers.results],
            [(s, ConnectionClosed) for s in (server(1), server(2), server(3))],
        )

    def test_every_server_blackholed(self) -> None:
        """
        When no server answers, the lookup fires with the cache exactly
        when its timeout has elapsed.
        """
        for n in (1, 2, 3):
            self.network.blackhole(server(n))
        client = self.client(server(1), server(2), server(3), queries=2, timeout=5.0)
        self.successResultOf(client.insert("app", "198.51.100.1", 6881, NOW - 60))
        d = client.lookup("app")
        self.network.flush()
        self.network.clock.advance(4.999)
        self.network.flush()
        self.assertNoResult(d)
        self.network.clock.advance(0.001)
        self.network.flush()
        peers = self.successResultOf(d)
        self.assertEqual(self.network.clock.seconds(), NOW + 5)
        self.assertEqual(list(peers), [entry(60, 1)])
        self.assertTrue(peers.from_cache)
        # Each server gets half the timeout: the first two fail at 2.5 s,
        # and the third is asked for the 2.5 s that are left.
        self.assertEqual(self.network.attempts, [server(1), server(2), server(3)])
        self.assertEqual(len(peers.results), 3)
        for result in peers.results:
            self.assertIsInstance(result.error, Timeout)

    def test_a_silent_server_leaves_time_for_another(self) -> None:
        """A server that never answers holds its place for half the timeout only."""
        self.network.blackhole(server(1))
        self.start(server(2), entry(10, 1))
        client = self.client(server(1), server(2), queries=1, timeout=5.0)
        d = client.lookup("app")
        self.network.advance(2.499)
        self.assertNoResult(d)
        self.network.advance(0.001)
        peers = self.successResultOf(d)
        self.assertFalse(peers.from_cache)
        self.assertEqual(list(peers), [entry(10, 1)])

    def test_blackholed_and_refused(self) -> None:
        """Refusals fail over at once; the blackholed server ends at the timeout."""
        self.network.blackhole(server(1))
        self.start(server(3), entry(10, 1))
        client = self.client(server(1), server(2), server(3), timeout=2.0)
        d = client.lookup("app")
        self.network.flush()
        self.assertNoResult(d)
        self.network.advance(2.0)
        peers = self.successResultOf(d)
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertFalse(peers.from_cache)
        self.assertEqual(
            {(r.server, type(r.error)) for r in peers.results},
            {(server(1), Timeout), (server(2), ConnectionClosed), (server(3), type(None))},
        )

    def test_no_servers_known(self) -> None:
        client = self.client()
        peers = self.successResultOf(client.lookup("app"))
        self.assertEqual(list(peers), [])
        self.assertTrue(peers.from_cache)
        self.assertEqual(self.network.attempts, [])

    def test_error_status_fails_over(self) -> None:
        """A server answering ``error`` counts as failed; the next one answers."""
        self.start(server(1))
        self.start(server(2), entry(10, 1))
        client = self.client(server(1), server(2), queries=1)
        self.done(client.lookup("app"))
        self.stores[server(1)].failing = True
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1)])
        failed = [r for r in peers.results if not r.ok]
        self.assertEqual([r.server for r in failed], [server(1)])
        self.assertIn("unavailable", str(failed[0].error))


class LabelsTests(ClientTestCase):
    def test_labels_merged(self) -> None:
        self.start(server(1), entry(100, 1), label="app")
        self.start(server(2), entry(50, 1), label="game/chess")
        client = self.client(server(1), server(2))
        rows = self.done(client.labels())
        self.assertEqual(list(rows), [LabelInfo(NOW - 50, "game"), LabelInfo(NOW - 100, "app")])
        self.assertFalse(rows.from_cache)
        sub = self.done(client.labels("game"))
        self.assertEqual(list(sub), [LabelInfo(NOW - 50, "game/chess")])


class AnnounceTests(ClientTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.servers = [server(n) for n in range(1, 8)]
        for address in self.servers:
            self.start(address)

    def holders(self) -> list[ServerAddress]:
        """The servers whose store has the announced entry."""
        want = Entry(NOW, "198.51.100.99", 4000)
        return [a for a in self.servers if want in self.stores[a].entries("app")]

    def test_fanout(self) -> None:
        """Of 7 servers known, exactly ``fanout`` store the entry."""
        client = self.client(*self.servers, fanout=5)
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual(result.entry, Entry(NOW, "198.51.100.99", 4000))
        self.assertEqual(len(result), 5)
        self.assertEqual(result.stored, 5)
        self.assertEqual(result.reached, 5)
        self.assertEqual(len(self.holders()), 5)
        self.assertEqual(sorted(r.server for r in result), self.holders())
        for r in result:
            self.assertEqual(r.describe(), f"{r.server} stored")
            self.assertEqual(r.dialect, "halp1")

    def test_fails_over_past_down_servers(self) -> None:
        self.network.refuse(server(1))
        self.network.refuse(server(3))
        client = self.client(*self.servers, fanout=5)
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual(self.holders(), [server(2), server(4), server(5), server(6), server(7)])
        self.assertEqual(result.stored, 5)
        self.assertEqual(len(result), 7)
        down = [r for r in result if not r.ok]
        self.assertEqual(sorted(r.server for r in down), [server(1), server(3)])
        for r in down:
            self.assertIsInstance(r.error, ConnectionClosed)
            self.assertFalse(r.stored)
            self.assertIn("unreachable", r.describe())

    def test_refused_entry(self) -> None:
        """A server that answers but does not store says why, per server."""
        client = self.client(server(1), server(2), fanout=2)
        old = NOW - 2 * 86_400  # servers keep a day, the client a month
        result = self.done(client.announce("app", "198.51.100.99", 4000, old))
        self.assertEqual(result.reached, 2)
        self.assertEqual(result.stored, 0)
        for r in result:
            self.assertTrue(r.ok)
            (outcome,) = r.outcomes
            self.assertFalse(outcome.stored)
            self.assertIn("expired", outcome.reason)
            self.assertTrue(r.describe().startswith(f"{r.server} refused: expired"))

    def test_all_down(self) -> None:
        for address in self.servers:
            self.network.refuse(address)
        client = self.client(*self.servers)
        result = self.successResultOf(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual((len(result), result.reached, result.stored), (7, 0, 0))


class LibhalpTests(ClientTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.libhalp = LibhalpServerFactory()
        self.libhalp.labels["app"] = {
            ("198.51.100.1", 6881): NOW - 10,
            ("198.51.100.2", 6881): NOW - 20,
            ("198.51.100.3", 6881): NOW - 30,
        }
        self.address = ServerAddress("192.0.2.9", 3451)
        self.network.listen(self.address, self.libhalp)

    def test_lookup_detects_libhalp(self) -> None:
        """
        First contact is a plain ``get LABEL``, which the libhalp server
        answers; from then on the client talks the libhalp way: one request
        per connection, without its line ending.
        """
        client = self.client(self.address)
        expected = [entry(10, 1), entry(20, 2), entry(30, 3)]
        peers = self.done(client.lookup("app", 5))
        self.assertEqual(list(peers), expected)
        self.assertEqual(peers.results[0].dialect, "libhalp")
        self.assertFalse(peers.from_cache)
        self.assertEqual(self.libhalp.queries, [b"get app\n"])
        record = self.record(client, self.address)
        self.assertEqual((record.dialect, record.dialect_detected_at), ("libhalp", NOW))

        peers = self.done(client.lookup("app", 2))
        self.assertEqual(list(peers), expected[:2])
        self.assertEqual(self.libhalp.queries, [b"get app\n", b"get app"])
        self.assertEqual(self.libhalp.crashes, 0)

    def test_dialect_persisted(self) -> None:
        self.done(self.client(self.address).lookup("app"))
        later = self.client(self.address)
        self.assertEqual(self.record(later, self.address).dialect, "libhalp")
        self.done(later.lookup("app"))
        self.assertEqual(self.libhalp.queries, [b"get app\n", b"get app"])
        self.assertEqual(self.libhalp.crashes, 0)

    def test_labels_without_a_slice(self) -> None:
        """A label listing sends libhalp's plain ``get labels``: a slice crashed it."""
        self.libhalp.labels["labels"] = {("app", 0): NOW - 10}
        client = self.client(self.address)
        rows = self.done(client.labels())
        self.assertFalse(rows.from_cache)
        self.assertEqual(self.libhalp.queries, [b"get labels\n"])
        self.assertEqual(self.libhalp.crashes, 0)
        self.done(client.labels())
        self.assertEqual(self.libhalp.queries[1], b"get labels")
        self.assertEqual(self.libhalp.crashes, 0)

    def test_told_libhalp(self) -> None:
        """A ``libhalp://`` seed is never sent the HALP/1 form."""
        client = self.client(f"libhalp://{self.address}")
        self.assertEqual(len(self.done(client.lookup("app"))), 3)
        self.assertEqual(self.libhalp.queries, [b"get app"])

    def test_announce(self) -> None:
        client = self.client(self.address)
        self.done(client.lookup("app"))
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual(self.libhalp.queries[-1], b"insert app\n1700000000 198.51.100.99 4000")
        self.assertEqual(self.libhalp.labels["app"][("198.51.100.99", 4000)], NOW)
        self.assertEqual(result.stored, 1)
        self.assertEqual(result[0].describe(), f"{self.address} stored")
        self.assertEqual(self.libhalp.crashes, 0)

    def test_announce_first_contact(self) -> None:
        """An announcement as the first contact stores, and says so."""
        client = self.client(self.address)
        result = self.done(client.announce("app", "198.51.100.99", 4000))
        self.assertEqual(self.libhalp.labels["app"][("198.51.100.99", 4000)], NOW)
        self.assertEqual(result.stored, 1)
        self.assertEqual(result[0].dialect, "libhalp")
        self.assertEqual(result[0].describe(), f"{self.address} stored")
        self.assertEqual(self.record(client, self.address).dialect, "libhalp")

    def test_halp_server_told_libhalp(self) -> None:
        """
        A HALP/1 server answers the libhalp form too, once the client has
        gone quiet for 300 ms.
        """
        self.start(server(1), entry(10, 1))
        client = self.client(f"libhalp://{server(1)}")
        d = client.lookup("app")
        self.network.flush()
        self.assertNoResult(d)
        self.network.advance(0.3)
        peers = self.successResultOf(d)
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertEqual(peers.results[0].dialect, "libhalp")

    def test_halp1_detected_then_learns(self) -> None:
        """
        A HALP/1 server is detected as such on first contact; the next
        lookup pipelines ``get halp[0:10]`` (and the same of ``halp/http``
        and ``halp/https``) after the request, and lookups within
        ``learn_interval`` do not ask again.
        """
        store = self.start(server(1), entry(10, 1))
        client = self.client(server(1), learn_interval=600)
        self.done(client.lookup("app", 5))
        self.assertEqual(self.record(client, server(1)).dialect, "halp1")
        self.assertEqual(store.gets, [("app", 0, 10)])
        self.done(client.lookup("app", 5))
        self.assertEqual(
            store.gets[1:],
            [("app", 0, 20), ("halp", 0, 10), ("halp/http", 0, 10), ("halp/https", 0, 10)],
        )
        self.network.advance(599)
        self.done(client.lookup("app", 5))
        self.assertEqual(store.gets[5:], [("app", 0, 20)])
        self.network.advance(1)
        self.done(client.lookup("app", 5))
        self.assertEqual(
            store.gets[6:],
            [("app", 0, 20), ("halp", 0, 10), ("halp/http", 0, 10), ("halp/https", 0, 10)],
        )


    def test_halp1_server_closing_is_not_libhalp(self) -> None:
        """
        A server known to speak HALP/1 that closes without answering has
        failed; it did not answer the libhalp way.  Its dialect is found
        out again at the next contact, since something else may answer at
        that address now.
        """
        self.start(server(1), entry(10, 1))
        client = self.client(server(1))
        self.done(client.lookup("app"))  # detects HALP/1
        self.done(client.lookup("app"))  # learns; the next lookup sends one request
        self.network.listen(server(1), Factory.forProtocol(Vanishing))
        peers = self.done(client.lookup("app"))
        (result,) = peers.results
        self.assertIsInstance(result.error, ConnectionClosed)
        self.assertTrue(peers.from_cache)
        self.assertEqual(list(peers), [entry(10, 1)])
        record = self.record(client, server(1))
        self.assertIsNone(record.dialect)
        self.assertEqual((record.failures_in_row, record.successes), (1, 2))


class LearningTests(ClientTestCase):
    def test_lookup_of_halp_learns(self) -> None:
        """The servers in a ``halp`` answer join the table and the cache."""
        halp = [Entry(NOW - 10, "192.0.2.50", 7100), Entry(NOW - 20, "192.0.2.51", 7100)]
        self.start(server(1), *halp, label=SERVERS_LABEL)
        client = self.client(server(1), queries=1)
        peers = self.done(client.lookup(SERVERS_LABEL))
        self.assertEqual(list(peers), [Entry(NOW, "192.0.2.1", 7100)] + halp)
        self.assertEqual(self.known(client), {server(1)} | {ServerAddress.of(e) for e in halp})
        self.assertEqual(self.record(client, ServerAddress("192.0.2.50", 7100)).confirmed, NOW - 10)
        self.assertEqual(
            self.entries(client.cached(SERVERS_LABEL)),
            [Entry(NOW, "192.0.2.1", 7100)] + halp,
        )

    def test_learns_alongside_lookup(self) -> None:
        """The pipelined ``get halp`` teaches the client new servers."""
        self.start(server(1), entry(10, 1))
        insert_entries(self.stores[server(1)], [SERVERS_LABEL], [Entry(NOW - 5, "192.0.2.50", 7100)], 1000)
        new = self.start(ServerAddress("192.0.2.50", 7100), entry(20, 2))
        client = self.client(server(1))
        self.done(client.lookup("app"))  # detects HALP/1
        self.assertNotIn(ServerAddress("192.0.2.50", 7100), self.known(client))
        self.done(client.lookup("app"))  # learns
        self.assertIn(ServerAddress("192.0.2.50", 7100), self.known(client))
        self.assertIn(
            Entry(NOW - 5, "192.0.2.50", 7100),
            self.entries(client.cached(SERVERS_LABEL)),
        )
        # The learned server is asked next time, alongside the seed.
        peers = self.done(client.lookup("app"))
        self.assertEqual(list(peers), [entry(10, 1), entry(20, 2)])
        self.assertEqual(new.gets, [("app", 0, 10)])

    def test_learning_time_survives_a_restart(self) -> None:
        """A new client on the same cache does not ask for ``halp`` again within the hour."""
        self.start(server(1), entry(10, 1))
        self.done(self.client(server(1)).lookup("app"))  # detects HALP/1
        self.done(self.client(server(1)).lookup("app"))  # learns
        self.done(self.client(server(1)).lookup("app"))  # a restart, within the hour
        gets = self.stores[server(1)].gets
        self.assertEqual([g for g in gets if g[0] == SERVERS_LABEL], [(SERVERS_LABEL, 0, 10)])
        self.network.clock.advance(3600)
        self.done(self.client(server(1)).lookup("app"))
        self.assertEqual(len([g for g in gets if g[0] == SERVERS_LABEL]), 2)

    def test_learned_list_is_bounded(self) -> None:
        halp = [Entry(NOW - i, f"192.0.2.{100 + i}", 7100) for i in range(1, 7)]
        self.start(server(1), *halp, label=SERVERS_LABEL)
        client = self.client(server(1), max_learned=3, queries=1)
        self.done(client.lookup(SERVERS_LABEL))
        self.assertEqual(self.known(client), {server(1)} | {ServerAddress.of(e) for e in halp[:3]})
        self.assertEqual(
            self.entries(client.cached(SERVERS_LABEL)),
            [Entry(NOW, "192.0.2.1", 7100)] + halp[:3],
        )

    def test_pinned_seeds_never_evicted(self) -> None:
        """A pinned seed stays, however badly it does and however many are learned."""
        halp = [Entry(NOW - i, f"192.0.2.{100 + i}", 7100) for i in range(1, 7)]
        self.start(server(1), *halp, label=SERVERS_LABEL)
        client = self.client(server(1), server(2), max_learned=1, queries=1)
        for _ in range(3):
            self.done(client.lookup(SERVERS_LABEL))
            self.network.advance(3600)
        self.assertEqual(self.record(client, server(2)).failures, 0)  # not asked: server 1 answers
        self.network.refuse(server(1))
        for _ in range(3):
            self.done(client.lookup("app"))
            self.network.advance(3600)
        self.assertGreaterEqual(self.record(client, server(2)).failures, 3)
        self.start(server(1), *halp, label=SERVERS_LABEL)
        self.done(client.lookup(SERVERS_LABEL))
        learned = [r for r in self.successResultOf(client.servers()) if not r.pinned]
        self.assertEqual(len(learned), 1)
        self.assertIn(server(2), self.known(client))

    def test_newcomer_replaces_untested_but_not_answered(self) -> None:
        """
        With the learned list full, a fresher untested newcomer pushes out
        an untested server, but never one that has answered.
        """
        seed = self.start(server(1), Entry(NOW - 100, "192.0.2.50", 7100), label=SERVERS_LABEL)
        first = ServerAddress("192.0.2.50", 7100)
        client = self.client(server(1), max_learned=1, queries=1)
        self.done(client.lookup(SERVERS_LABEL))
        self.assertEqual(self.known(client), {server(1), first})

        insert_entries(seed, [SERVERS_LABEL], [Entry(NOW - 5, "192.0.2.51", 7100)], 1000)
        self.done(client.lookup(SERVERS_LABEL))
        second = ServerAddress("192.0.2.51", 7100)
        self.assertEqual(self.known(client), {server(1), second})

        # The second one answers a lookup (the seed is down for a moment);
        # then a fresher newcomer does not oust it.
        self.start(second, entry(10, 1))
        self.network.refuse(server(1))
        peers = self.done(client.lookup("app"))
        self.assertEqual([r.server for r in peers.results if r.ok], [second])
        self.assertGreater(self.record(client, second).quality, INITIAL_QUALITY)
        self.restart(server(1))
        newcomer = Entry(NOW, "192.0.2.52", 7100)
        for store in (seed, self.stores[second]):
            insert_entries(store, [SERVERS_LABEL], [newcomer], 1000)
        peers = self.done(client.lookup(SERVERS_LABEL))
        self.assertIn(newcomer, list(peers))
        self.assertEqual(self.known(client), {server(1), second})

    def test_future_times_clamped(self) -> None:
        """A server's clock ahead of ours does not put its servers first."""
        self.start(server(1), Entry(NOW + 10**6, "192.0.2.50", 7100), label=SERVERS_LABEL)
        client = self.client(server(1), queries=1)
        self.done(client.lookup(SERVERS_LABEL))
        self.assertEqual(self.record(client, ServerAddress("192.0.2.50", 7100)).confirmed, NOW)


class QualityTests(ClientTestCase):
    def test_success(self) -> None:
        self.start(server(1), entry(1, 1), entry(2, 2), entry(3, 3))
        client = self.client(server(1))
        self.done(client.lookup("app"))
        record = self.record(client, server(1))
        self.assertEqual(record.quality, INITIAL_QUALITY + 100 + 3)
        self.assertEqual(
            (record.successes, record.failures, record.entries), (1, 0, 3)
        )
        self.assertEqual((record.last_success, record.retry_at), (NOW, 0))
        self.assertEqual(record.confirmed, NOW)

    def test_failure_backoff(self) -> None:
        """Each failure in a row costs 100 and doubles the wait."""
        client = self.client(server(1))
        delays = []
        for n in range(1, 5):
            self.done(client.lookup("app"))
            record = self.record(client, server(1))
            now = int(self.network.clock.seconds())
            self.assertEqual(record.quality, INITIAL_QUALITY - 100 * n)
            self.assertEqual(record.failures_in_row, n)
            self.assertEqual(record.last_failure, now)
            delays.append(record.retry_at - now)
            self.network.advance(record.retry_at - now)
        self.assertEqual(delays, [BACKOFF_BASE * 2**i for i in range(4)])
        self.assertEqual(BACKOFF_BASE, 60)

        self.start(server(1), entry(1, 1))
        self.done(client.lookup("app"))
        record = self.record(client, server(1))
        self.assertEqual((record.failures_in_row, record.retry_at, record.failures), (0, 0, 4))
        self.assertEqual(record.quality, INITIAL_QUALITY - 400 + 101)

    def test_backoff_asked_last(self) -> None:
        """
        A server in backoff is asked after untested ones, even one that
        answered more recently, and still asked when no other is left.
        """
        for n in (1, 2, 3):
            self.start(server(n), entry(n, n))
        client = self.client(server(1), server(2), server(3), queries=1)
        self.done(client.lookup("app"))
        self.assertEqual(self.network.attempts, [server(1)])

        self.network.refuse(server(1))
        self.network.advance(10)
        self.done(client.lookup("app"))
        self.assertEqual(self.network.attempts[1:], [server(1), server(2)])
        self.assertTrue(self.record(client, server(1)).in_backoff(NOW + 10))

        # Server 1 is back but in backoff: untested server 3 comes first.
        self.restart(server(1))
        self.network.refuse(server(2))
        self.network.advance(10)
        peers = self.done(client.lookup("app"))
        self.assertEqual(self.network.attempts[3:], [server(2), server(3)])
        self.assertEqual([r.server for r in peers.results if r.ok], [server(3)])

        self.network.refuse(server(3))
        peers = self.done(client.lookup("app"))
        self.assertEqual(self.network.attempts[5:], [server(3), server(2), server(1)])
        self.assertEqual([r.server for r in peers.results if r.ok], [server(1)])
        self.assertEqual(peers[0], entry(1, 1))

    def test_table_persists(self) -> None:
        """A new client over the same cache has the same statistics."""
        self.start(server(1), entry(1, 1))
        client = self.client(server(1), server(2))
        self.done(client.lookup("app"))
        self.done(client.lookup("app"))
        before = self.successResultOf(client.servers())
        self.assertEqual([(r.address, r.successes, r.failures) for r in before],
                         [(server(1), 2, 0), (server(2), 0, 2)])
        later = self.client(server(1), server(2))
        after = self.successResultOf(later.servers())
        self.assertEqual(after, before)
        self.assertEqual([r.pinned for r in after], [True, True])


class InsertTests(ClientTestCase):
    def test_insert_server(self) -> None:
        """``insert("halp", ...)`` adds a server that the next lookup asks."""
        self.start(server(1), entry(10, 1))
        client = self.client()
        stored = self.successResultOf(client.insert(SERVERS_LABEL, "192.0.2.1", 7100))
        self.assertEqual(stored, Entry(NOW, "192.0.2.1", 7100))
        peers = self.done(client.lookup("app"))
        self.assertEqual(self.network.attempts, [server(1)])
        self.assertEqual(list(peers), [entry(10, 1)])
        self.assertFalse(peers.from_cache)

    def test_insert_too_old(self) -> None:
        client = self.client()
        ttl = CACHE_LIMITS.ttl
        failure = self.failureResultOf(
            client.insert("app", "198.51.100.1", 1, NOW - ttl - 1), ProtocolError
        )
        self.assertEqual(failure.value.code, ErrorCode.BAD_ENTRY)
        self.assertEqual(self.entries(client.cached("app")), [])
        self.assertEqual(
            self.successResultOf(client.insert("app", "198.51.100.1", 1, NOW - ttl)),
            Entry(NOW - ttl, "198.51.100.1", 1),
        )

    def test_insert_future_clamped(self) -> None:
        client = self.client()
        self.assertEqual(
            self.successResultOf(client.insert("app", "Example.COM", 80, NOW + 999)),
            Entry(NOW, "example.com", 80),
        )

    def test_bad_arguments_fail_the_deferred(self) -> None:
        client = self.client(server(1))
        cases: list[tuple[Deferred[Any], type[Exception]]] = [
            (client.lookup("bad label"), ProtocolError),
            (client.lookup("labels"), ProtocolError),
            (client.lookup("app", 0), ValueError),
            (client.lookup("app", 101), ValueError),
            (client.cached("", 5), ProtocolError),
            (client.cached("app", -1), ValueError),
            (client.announce("app", "not a host", 1), ProtocolError),
            (client.announce("app", "198.51.100.1", 0), ProtocolError),
            (client.announce("a//b", "198.51.100.1", 1), ProtocolError),
            (client.insert("app", "198.51.100.1", 70000), ProtocolError),
            (client.insert("app", "198.51.100.1", 1, -5), ValueError),
            (client.labels("bad label"), ProtocolError),
        ]
        for d, kind in cases:
            self.failureResultOf(d, kind)
        self.assertEqual(self.network.attempts, [])


class CloseTests(ClientTestCase):
    def test_close_waits_and_saves(self) -> None:
        self.network.blackhole(server(1))
        client = self.client(server(1), timeout=3.0)
        lookup = client.lookup("app")
        self.network.flush()
        closed = client.close()
        self.assertNoResult(closed)
        self.failureResultOf(client.lookup("app"), ClientError)
        self.network.advance(1.4)
        self.assertNoResult(closed)
        self.assertNoResult(lookup)
        self.network.advance(0.1)
        self.assertTrue(self.successResultOf(lookup).from_cache)
        self.assertIsNone(self.successResultOf(closed))

        saved = json.loads(self.successResultOf(self.cache.get_state(STATE_KEY)) or "{}")
        (row,) = saved["servers"]
        self.assertEqual((row["host"], row["failures"]), ("192.0.2.1", 1))
        self.assertEqual(self.record(self.client(server(1)), server(1)).failures, 1)

    def test_close_idle(self) -> None:
        client = self.client(server(1))
        self.assertIsNone(self.successResultOf(client.close()))
        self.failureResultOf(client.servers(), ClientError)


# -- the cache file --------------------------------------------------------------


def _make_cache(directory: str) -> str:
    """A good cache in ``directory`` holding one entry; its path."""
    import os
    import sqlite3
    from contextlib import closing

    from halp.client.client import CACHE_FILE
    from halp.store.sqlite import open_database

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CACHE_FILE)
    with closing(open_database(path)) as conn:
        conn.execute(
            "INSERT INTO state (key, value) VALUES (?, ?)", ("kept", "yes")
        )
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM state").fetchall() == [("yes",)]
    return path


class OpenCacheTests(SynchronousTestCase):
    """
    :func:`~halp.client.open_cache` moves a bad cache file aside to
    ``cache.sqlite3.bak`` and starts an empty one, saying so in one line;
    a good cache is kept, and a cache that is merely unusable where it is
    is reported and left alone.
    """

    def setUp(self) -> None:
        import os

        self.directory = self.mktemp()
        self.path = _make_cache(self.directory)
        self.backup = self.path + ".bak"
        self.warnings: list[str] = []
        self.exists = os.path.exists

    def open(self) -> None:
        from twisted.internet.task import Clock

        from halp.client import open_cache

        store = open_cache(Clock(), self.directory, warn=self.warnings.append)
        self.successResultOf(store.close())

    def assertMovedAside(self, original: bytes, *why: str) -> None:
        import sqlite3
        from contextlib import closing

        from halp.store.sqlite import SCHEMA_VERSION

        self.open()
        self.assertEqual(len(self.warnings), 1, self.warnings)
        (warning,) = self.warnings
        self.assertNotIn("\n", warning)
        for text in (repr(self.path), repr(self.backup), "started an empty cache", *why):
            self.assertIn(text, warning)
        with open(self.backup, "rb") as f:
            self.assertEqual(f.read(), original, "the bad file was changed")
        with closing(sqlite3.connect(self.path)) as conn:
            self.assertEqual(conn.execute("SELECT version FROM halp_version").fetchall(),
                             [(SCHEMA_VERSION,)])
            self.assertEqual(conn.execute("SELECT * FROM state").fetchall(), [])
        # The new cache is a good one: opened again, it is kept.
        self.open()
        self.assertEqual(len(self.warnings), 1)

    def damage(self, offset: int, data: bytes | None = None, *, size: int | None = None) -> bytes:
        with open(self.path, "r+b") as f:
            if size is not None:
                f.truncate(size)
            if data is not None:
                f.seek(offset)
                f.write(data)
        with open(self.path, "rb") as f:
            return f.read()

    def test_good_cache_is_kept(self) -> None:
        import sqlite3
        from contextlib import closing

        self.open()
        self.assertEqual(self.warnings, [])
        self.assertFalse(self.exists(self.backup))
        with closing(sqlite3.connect(self.path)) as conn:
            self.assertEqual(conn.execute("SELECT value FROM state").fetchall(), [("yes",)])

    def test_truncated(self) -> None:
        self.assertMovedAside(self.damage(0, size=100), "malformed")

    def test_bad_magic(self) -> None:
        self.assertMovedAside(self.damage(0, b"Not SQLite fmt 3\x00"), "not a database")

    def test_damaged_inside(self) -> None:
        import os

        last_page = (os.path.getsize(self.path) // 4096 - 1) * 4096
        self.assertMovedAside(self.damage(last_page, b"\xa5" * 4096), "malformed")

    def test_not_a_halp_database(self) -> None:
        import os
        import sqlite3
        from contextlib import closing

        os.remove(self.path)
        with closing(sqlite3.connect(self.path)) as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.commit()
        with open(self.path, "rb") as f:
            original = f.read()
        self.assertMovedAside(original, "not a HALP one")

    def test_future_version(self) -> None:
        import sqlite3
        from contextlib import closing

        from halp.store.sqlite import SCHEMA_VERSION

        with closing(sqlite3.connect(self.path)) as conn:
            conn.execute("UPDATE halp_version SET version = ?", (SCHEMA_VERSION + 1,))
            conn.commit()
        with open(self.path, "rb") as f:
            original = f.read()
        self.assertMovedAside(original, f"schema version {SCHEMA_VERSION + 1}")

    def test_log_files_move_with_the_database(self) -> None:
        """
        A cache left by a crash has a ``-wal`` with committed data (here: a
        newer schema version) and a ``-shm``: they move with it, so the
        ``.bak`` still reads as it was, and no stale log meets the new cache.
        """
        import os
        import shutil
        import sqlite3
        from contextlib import closing

        from halp.store.sqlite import SCHEMA_VERSION

        crashed = self.mktemp()
        os.makedirs(crashed)
        with closing(sqlite3.connect(self.path, isolation_level=None)) as conn:
            conn.execute("UPDATE halp_version SET version = ?", (SCHEMA_VERSION + 1,))
            self.assertTrue(self.exists(self.path + "-wal"))
            # Copy the files while the connection is open: a crash.
            for suffix in ("", "-wal", "-shm"):
                shutil.copy(self.path + suffix, os.path.join(crashed, "c" + suffix))
        for suffix in ("", "-wal", "-shm"):
            shutil.copy(os.path.join(crashed, "c" + suffix), self.path + suffix)
        self.open()
        self.assertEqual(len(self.warnings), 1)
        for suffix in ("-wal", "-shm"):
            self.assertTrue(self.exists(self.backup + suffix), suffix)
        with closing(sqlite3.connect(self.backup)) as conn:
            self.assertEqual(conn.execute("SELECT version FROM halp_version").fetchall(),
                             [(SCHEMA_VERSION + 1,)])

    def test_stale_backup_logs_are_removed(self) -> None:
        for suffix in ("-wal", "-shm", "-journal"):
            with open(self.backup + suffix, "wb") as f:
                f.write(b"an older backup's log")
        self.assertMovedAside(self.damage(0, b"Not SQLite fmt 3\x00"), "not a database")
        for suffix in ("-wal", "-shm", "-journal"):
            self.assertFalse(self.exists(self.backup + suffix), suffix)

    def test_unwritable_directory_is_reported_not_moved(self) -> None:
        import os

        if os.geteuid() == 0:
            from twisted.trial.unittest import SkipTest

            raise SkipTest("root writes to read-only directories")
        os.chmod(self.directory, 0o555)
        self.addCleanup(os.chmod, self.directory, 0o755)
        e = self.assertRaises(StoreError, self.open)
        self.assertIn("not writable", str(e))
        self.assertEqual(self.warnings, [])
        self.assertFalse(self.exists(self.backup))

    def test_log_says_it_too(self) -> None:
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.damage(0, b"Not SQLite fmt 3\x00")
        self.open()
        logged = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(logged, self.warnings)
