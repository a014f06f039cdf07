"""
The Redis store, against a real ``redis-server`` (see
:mod:`halp.test.redis_server`): the store contract unchanged, its URL, its
keys, and what it does while Redis is away, slow, or keeps nothing on disk.
"""

from __future__ import annotations

import atexit
import itertools
import os
import random
from typing import Any, Generator

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from halp.core import HALPCore
from halp.error import StoreError
from halp.interfaces import IConnectedStore, IHostStore
from halp.model import Change, Entry, Merged
from halp.store import insert_entries, parse_store_spec
from halp.store.memory import MemoryStore
from halp.store.redis import (
    RedisStore,
    RedisURL,
    parse_redis_url,
    config_warnings,
)
from halp.test.redis_server import RedisServer, require_redis
from halp.test.test_store import StoreContractMixin

Gen = Generator[Deferred[Any], Any, None]

_shared: RedisServer | None = None
_ids = itertools.count()


def shared_redis() -> RedisServer:
    """One redis-server for the contract suite; each store gets its own prefix."""
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        _shared = RedisServer().start()
        atexit.register(_shared.close)
    return _shared


def fresh_url(server: RedisServer, **query: str) -> RedisURL:
    options = {"prefix": f"t{os.getpid()}-{next(_ids)}:", **query}
    return parse_redis_url(server.url + "?" + "&".join(f"{k}={v}" for k, v in options.items()))


class RedisStoreTests(StoreContractMixin, TestCase):
    """The store contract, unchanged, on a real redis-server."""

    def make_store(self) -> IHostStore:
        return RedisStore(reactor, fresh_url(shared_redis()))

    def reopen_store(self, store: IHostStore) -> IHostStore:
        assert isinstance(store, RedisStore)
        return RedisStore(reactor, store.url)


class URLTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        url = parse_redis_url("redis://localhost")
        self.assertEqual(
            (url.host, url.port, url.db, url.tls, url.password, url.prefix),
            ("localhost", 6379, 0, False, None, "halp:"),
        )
        self.assertEqual(url.key_prefix, "halp:{halp}:")

    def test_everything(self) -> None:
        url = parse_redis_url(
            "rediss://app:s%40cret@[2001:db8::1]:6380/3?prefix=prod:&timeout=1.5&ca=/etc/ca.pem"
        )
        self.assertEqual(
            url,
            RedisURL(
                host="2001:db8::1",
                port=6380,
                db=3,
                tls=True,
                username="app",
                password="s@cret",
                prefix="prod:",
                timeout=1.5,
                ca="/etc/ca.pem",
            ),
        )
        self.assertEqual(url.key_prefix, "prod:{prod}:")

    def test_password_forms(self) -> None:
        self.assertEqual(parse_redis_url("redis://:pw@h/0").password, "pw")
        self.assertEqual(parse_redis_url("redis://h/0?password=pw").password, "pw")
        self.assertIsNone(parse_redis_url("redis://h/0").username)

    def test_empty_prefix_still_has_a_hash_tag(self) -> None:
        self.assertEqual(parse_redis_url("redis://h/0?prefix=").key_prefix, "{halp}:")

    def test_describe_hides_the_password(self) -> None:
        for text in ("redis://:hunter2@h:1/2", "redis://h:1/2?password=hunter2", "redis://u:hunter2@h:1/2"):
            described = parse_redis_url(text).describe()
            self.assertNotIn("hunter2", described)
            self.assertIn("h:1/2", described)
        spec = parse_store_spec("redis://:hunter2@h:1/2")
        self.assertNotIn("hunter2", spec.describe())
        self.assertEqual(spec.kind, "redis")

    def test_errors_are_one_line_without_the_password(self) -> None:
        for text, expected in [
            ("redis://", "names no host"),
            ("redis://h:99999/0", "bad Redis URL"),
            ("redis://:hunter2@h:x/0", "bad Redis URL"),
            ("redis://h/zero", "must be a number"),
            ("redis://h/0?prefix=a{b}", "no braces"),
            ("redis://h/0?prefix=" + "x" * 65, "up to 64"),
            ("redis://h/0?timeout=soon", "timeout must be a number"),
            ("redis://h/0?timeout=0", "between"),
            ("redis://h/0?color=blue", "unknown Redis URL option 'color'"),
            ("redis://h/0?ca=/x", "only applies to rediss"),
            ("redis://h/0#top", "no #fragment"),
            ("redis://user@h/0", "needs a password"),
        ]:
            with self.assertRaises(ValueError) as raised:
                parse_store_spec(text)
            message = str(raised.exception)
            self.assertIn(expected, message, text)
            self.assertNotIn("\n", message)
            self.assertNotIn("hunter2", message)


class PersistenceWarningTests(SynchronousTestCase):
    def test_nothing_on_disk(self) -> None:
        [warning] = config_warnings({"appendonly": "no", "save": ""})
        self.assertIn("keeps nothing on disk", warning)

    def test_snapshots_only(self) -> None:
        [warning] = config_warnings({"appendonly": "no", "save": "3600 1"})
        self.assertIn("only takes RDB snapshots", warning)

    def test_aof_every_second(self) -> None:
        [warning] = config_warnings({"appendonly": "yes", "appendfsync": "everysec", "save": ""})
        self.assertIn("appendfsync everysec", warning)

    def test_eviction_of_any_key(self) -> None:
        warnings = config_warnings(
            {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "allkeys-lru"}
        )
        self.assertEqual(len(warnings), 1)
        self.assertIn("maxmemory-policy allkeys-lru", warnings[0])
        # HALP's keys have no expiry: volatile-* policies never take them.
        self.assertEqual(
            config_warnings(
                {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "volatile-lru"}
            ),
            [],
        )

    def test_aof_always_is_quiet(self) -> None:
        self.assertEqual(
            config_warnings({"appendonly": "yes", "appendfsync": "always", "save": ""}), []
        )


class LogCatcher:
    def __init__(self, case: TestCase) -> None:
        self.events = EventLoggingObserver()
        globalLogPublisher.addObserver(self.events)
        case.addCleanup(globalLogPublisher.removeObserver, self.events)

    def text(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)


class RedisClusterTests(StoreContractMixin, TestCase):
    """
    The store contract on a one-node Redis Cluster: every script's keys
    share one hash slot (Redis refuses a script whose keys do not), and so
    does every key the store writes.
    """

    server: RedisServer | None = None

    def make_store(self) -> IHostStore:
        server = RedisClusterTests.server
        if server is None or server.process is None:
            server = RedisClusterTests.server = RedisServer(
                extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            ).start()
            atexit.register(server.close)
            server.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            server.wait_for(lambda: b"cluster_state:ok" in server.call("CLUSTER", "INFO"))
        self.url = fresh_url(server)
        return RedisStore(reactor, self.url)

    def reopen_store(self, store: IHostStore) -> IHostStore:
        assert isinstance(store, RedisStore)
        return RedisStore(reactor, store.url)

    def tearDown(self) -> None:
        server = RedisClusterTests.server
        assert server is not None
        keys = [k for k in server.call("KEYS", self.url.prefix + "*").decode().split("\r\n") if k.startswith(self.url.prefix)]
        slots = {server.call("CLUSTER", "KEYSLOT", k) for k in keys}
        self.assertLessEqual(len(slots), 1, slots)
        self.assertTrue(all(s.startswith(b":") for s in slots), slots)


class RedisServerTests(TestCase):
    """One store against its own redis-server: keys, logins, warnings."""

    def start_redis(self, **kwargs: Any) -> RedisServer:
        server = RedisServer(**kwargs).start()
        self.addCleanup(server.close)
        return server

    def make(self, url: RedisURL, clock: Any = reactor) -> RedisStore:
        store = RedisStore(reactor, url, clock=None if clock is reactor else clock)
        self.addCleanup(store.close)
        return store

    def test_provides_its_interfaces(self) -> None:
        store = RedisStore(reactor, parse_redis_url("redis://127.0.0.1:1/0"))
        self.assertTrue(IConnectedStore.providedBy(store))
        self.assertTrue(IHostStore.providedBy(store))

    @inlineCallbacks
    def test_keys_carry_the_prefix_and_one_hash_tag(self) -> Gen:
        server = shared_redis()
        url = fresh_url(server)
        store = self.make(url)
        yield insert_entries(store, ["app/v1"], [Entry(1000, "192.0.2.1", 7)], 10)
        yield store.put_state("k", "v")
        keys = server.call("KEYS", url.prefix + "*").decode().split("\r\n")
        names = sorted(k for k in keys if k.startswith(url.prefix))
        tag = url.key_prefix
        self.assertEqual(
            names,
            sorted(
                tag + k
                for k in ("meta", "feed", "ix", "low", "state", "e:app/v1", "d:app/v1", "i:", "i:app")
            ),
        )

    @inlineCallbacks
    def test_prefixes_and_databases_are_separate(self) -> Gen:
        server = shared_redis()
        a = self.make(parse_redis_url(server.url + "?prefix=sep-a:"))
        b = self.make(parse_redis_url(server.url + "?prefix=sep-b:"))
        c = self.make(parse_redis_url(server.url.replace("/0", "/1") + "?prefix=sep-a:"))
        for store in (a, b, c):
            yield store.purge(10**12)
        yield insert_entries(a, ["x"], [Entry(1, "192.0.2.1", 1)], 10)
        yield insert_entries(b, ["x"], [Entry(2, "192.0.2.2", 2)], 10)
        self.assertEqual((yield a.get("x", 0, 10, 0)), [Entry(1, "192.0.2.1", 1)])
        self.assertEqual((yield b.get("x", 0, 10, 0)), [Entry(2, "192.0.2.2", 2)])
        self.assertEqual((yield c.get("x", 0, 10, 0)), [])

    @inlineCallbacks
    def test_two_stores_on_one_prefix_share_everything(self) -> Gen:
        """Two processes' stores: one data set, one change numbering."""
        server = shared_redis()
        url = fresh_url(server)
        a, b = self.make(url), self.make(url)
        yield a.merge([Change("x", Entry(1000, "192.0.2.1", 1))], 10)
        yield b.merge([Change("x", Entry(2000, "192.0.2.2", 2))], 10)
        yield a.put_state("k", "from a")
        self.assertEqual(len((yield b.get("x", 0, 10, 0))), 2)
        self.assertEqual((yield b.get_state("k")), "from a")
        page = yield a.changes("", 10, 0)
        self.assertEqual(len(page.changes), 2)
        # A cursor from one process continues in the other.
        yield a.merge([Change("x", Entry(3000, "192.0.2.3", 3))], 10)
        later = yield b.changes(page.cursor, 10, 0)
        self.assertEqual([c.entry.port for c in later.changes], [3])

    @inlineCallbacks
    def test_processes_on_one_data_set_share_one_node(self) -> Gen:
        server = shared_redis()
        url = fresh_url(server)
        a, b, other = self.make(url), self.make(url), self.make(fresh_url(server))
        core = HALPCore(a, reactor)
        before = core.node_id
        self.assertIsNone(a.shared_node)
        for store in (a, b, other):
            yield store.get("x", 0, 1, 0)
        self.assertIsNotNone(a.shared_node)
        self.assertEqual(a.shared_node, b.shared_node)
        self.assertNotEqual(a.shared_node, other.shared_node)
        self.assertEqual(core.node_id, a.shared_node)
        self.assertNotEqual(core.node_id, before)

    @inlineCallbacks
    def test_a_wiped_data_set_gets_a_new_numbering(self) -> Gen:
        """Cursors into the old data set do not skip changes of the new one."""
        server = shared_redis()
        url = fresh_url(server)
        store = self.make(url)
        yield store.merge([Change("x", Entry(i, "192.0.2.1", i)) for i in range(1, 6)], 10)
        old = yield store.changes("", 10, 0)
        keys = [k for k in server.call("KEYS", url.prefix + "*").decode().split("\r\n") if k.startswith(url.prefix)]
        server.call("DEL", *keys)
        yield store.merge([Change("x", Entry(i, "192.0.2.2", i)) for i in range(1, 4)], 10)
        page = yield store.changes(old.cursor, 10, 0)
        self.assertEqual([c.entry.host for c in page.changes], ["192.0.2.2"] * 3)
        self.assertNotEqual(page.cursor.split(":")[0], old.cursor.split(":")[0])

    @inlineCallbacks
    def test_a_user_without_info_and_config(self) -> Gen:
        server = RedisServer()
        acl = os.path.join(server.directory, "users.acl")
        with open(acl, "w") as f:
            f.write("user default off\nuser halp on >pw ~* &* +@all -@dangerous\n")
        server.extra = ["--aclfile", acl]
        server.start()
        self.addCleanup(server.close)
        logs = LogCatcher(self)
        store = self.make(parse_redis_url(f"redis://halp:pw@127.0.0.1:{server.port}/0"))
        yield insert_entries(store, ["a"], [Entry(1, "192.0.2.1", 1)], 10)
        self.assertEqual(len((yield store.get("a", 0, 10, 0))), 1)
        self.assertIn("Using Redis unknown", logs.text())
        self.assertIn("Cannot read Redis's settings", logs.text())

    @inlineCallbacks
    def test_upgrade_from_layout_1_gives_old_entries_their_groups(self) -> Gen:
        server = shared_redis()
        url = fresh_url(server)
        p = url.key_prefix
        members = [f"192.0.2.1 {port:05d}" for port in range(1, 5)]
        # A data set as a HALP of layout 1 wrote it: provenance without a
        # group, and no P:g: keys.
        provenance = ["1.2.3.4\t", "1.2.200.9\t192.0.2.9:7100", "\t", "10.0.0.1\t"]
        server.call("HSET", p + "meta", "version", "1", "epoch", "0123456789abcdef", "node", "n1", "seq", "4")
        server.call("ZADD", p + "e:a", *(x for i, m in enumerate(members) for x in (str(-10 * (i + 1)), m)))
        server.call("HSET", p + "d:a", *(x for m, v in zip(members, provenance) for x in (m, v)))
        server.call("ZADD", p + "feed", *(x for i, m in enumerate(members) for x in (str(i + 1), "a\n" + m)))
        server.call("ZADD", p + "low", "10", "a")
        server.call("ZADD", p + "ix", "-40", "a")
        server.call("ZADD", p + "i:", "-40", "a")
        logs = LogCatcher(self)
        store = self.make(url)
        yield store.get("a", 0, 1, 0)
        yield store._regrouped()
        self.assertIn(
            f"Upgraded the data under prefix {url.prefix} to layout 2: 4 entries got their network group",
            logs.text(),
        )
        self.assertEqual(server.call("HGET", p + "meta", "version"), b"$1\r\n2\r\n")
        self.assertEqual(server.call("HEXISTS", p + "meta", "regroup"), b":0\r\n")
        self.assertEqual(
            server.call("HGET", p + "d:a", members[1]), b"$31\r\n1.2.200.9\t192.0.2.9:7100\tv4:1.2\r\n"
        )
        self.assertEqual(server.call("ZCARD", p + "g:a v4:1.2"), b":2\r\n")
        self.assertEqual(server.call("ZCARD", p + "g:a host:10.0.0.1"), b":1\r\n")
        # The old entries count: a third of v4:1.2 evicts the group's oldest.
        merged = yield store.merge([Change("a", Entry(50, "192.0.2.1", 5), "1.2.0.1")], 100, 2)
        self.assertEqual(merged, [Merged(50, True)])
        got = yield store.get("a", 0, 10, 0)
        self.assertEqual([e.port for e in got], [5, 4, 3, 2])
        page = yield store.changes("", 10, 0)
        self.assertEqual(
            page.changes,
            [
                Change("a", Entry(20, "192.0.2.1", 2), "1.2.200.9", "192.0.2.9:7100"),
                Change("a", Entry(30, "192.0.2.1", 3)),
                Change("a", Entry(40, "192.0.2.1", 4), "10.0.0.1"),
                Change("a", Entry(50, "192.0.2.1", 5), "1.2.0.1"),
            ],
        )
        # Another process finds nothing left to do.
        other = self.make(url)
        yield other.get("a", 0, 1, 0)
        self.assertFalse(other._regroup_wanted)

    @inlineCallbacks
    def test_agrees_with_the_memory_store(self) -> Gen:
        """Random merges (with quotas), removals and purges: the Lua scripts
        give the answers of the memory store, the model of every store."""
        rng = random.Random(20240611)
        store = self.make(fresh_url(shared_redis()))
        model = MemoryStore()
        labels = ["a", "b", "a/x"]
        sources = ["", "1.2.3.4", "1.2.9.9", "8.8.8.8", "10.0.0.1", "2a00:1450::1"]
        for step in range(400):
            kind = rng.random()
            if kind < 0.85:
                changes = [
                    Change(
                        rng.choice(labels),
                        Entry(rng.randrange(60), rng.choice(["192.0.2.1", "h.example"]), rng.randrange(1, 6)),
                        rng.choice(sources),
                    )
                    for _ in range(rng.randrange(10))
                ]
                cap, quota = rng.randrange(1, 8), rng.randrange(4)
                expected = yield model.merge(changes, cap, quota)
                actual = yield store.merge(changes, cap, quota)
            elif kind < 0.95:
                label = rng.choice(labels)
                addresses = [("192.0.2.1", rng.randrange(1, 6)) for _ in range(3)]
                expected = yield model.remove(label, addresses)
                actual = yield store.remove(label, addresses)
            else:
                before = rng.randrange(30)
                expected = yield model.purge(before)
                actual = yield store.purge(before)
            self.assertEqual(actual, expected, step)
            for label in labels:
                expected = yield model.get(label, 0, 100, 0)
                actual = yield store.get(label, 0, 100, 0)
                self.assertEqual(actual, expected, (step, label))
        expected = yield model.changes("", 1000, 0)
        actual = yield store.changes("", 1000, 0)
        self.assertEqual(actual.changes, expected.changes)

    @inlineCallbacks
    def test_state_text_that_looks_like_a_number_stays_text(self) -> Gen:
        store = self.make(fresh_url(shared_redis()))
        yield store.put_state("k", "0012")
        self.assertEqual((yield store.get_state("k")), "0012")

    @inlineCallbacks
    def test_purge_works_in_chunks(self) -> Gen:
        from halp.store import redis as module

        self.patch(module, "PURGE_CHUNK", 7)
        store = self.make(fresh_url(shared_redis()))
        entries = [Entry(100 + i, "192.0.2.1", i + 1) for i in range(30)]
        yield insert_entries(store, ["a", "b/c"], entries, 100)
        self.assertEqual((yield store.purge(120)), 40)
        self.assertEqual(len((yield store.get("a", 0, 100, 0))), 10)
        self.assertEqual((yield store.purge(10**6)), 20)
        self.assertEqual((yield store.list_labels("", 0, 10, 0)), [])

    @inlineCallbacks
    def test_password(self) -> Gen:
        server = self.start_redis(extra=["--requirepass", "s3cret"])
        good = self.make(parse_redis_url(f"redis://:s3cret@127.0.0.1:{server.port}/2"))
        yield insert_entries(good, ["a"], [Entry(1, "192.0.2.1", 1)], 10)
        self.assertEqual(len((yield good.get("a", 0, 10, 0))), 1)
        logs = LogCatcher(self)
        bad = self.make(parse_redis_url(f"redis://:wrong@127.0.0.1:{server.port}/2"))
        failure = yield self.assertFailure(bad.get("a", 0, 10, 0), StoreError)
        self.assertIn("unreachable", str(failure))
        self.assertIn("WRONGPASS", str(failure))
        self.assertNotIn("wrong@", logs.text())
        self.assertIn("Cannot use Redis at redis://***@127.0.0.1", logs.text())

    @inlineCallbacks
    def test_warns_when_redis_keeps_nothing_on_disk(self) -> Gen:
        server = self.start_redis(persistence="none")
        logs = LogCatcher(self)
        store = self.make(parse_redis_url(server.url))
        yield store.get("a", 0, 1, 0)
        self.assertIn("keeps nothing on disk", logs.text())

    @inlineCallbacks
    def test_quiet_when_every_write_is_on_disk(self) -> Gen:
        server = self.start_redis(persistence="aof")
        logs = LogCatcher(self)
        store = self.make(parse_redis_url(server.url))
        yield store.get("a", 0, 1, 0)
        self.assertIn("Using Redis", logs.text())
        self.assertNotIn("on disk", logs.text())
        self.assertNotIn("appendfsync", logs.text())

    @inlineCallbacks
    def test_nobody_listening_fails_at_once(self) -> Gen:
        require_redis()
        url = parse_redis_url(f"redis://127.0.0.1:{RedisServer().port}/0")
        store = self.make(url)
        failure = yield self.assertFailure(store.get("a", 0, 10, 0), StoreError)
        self.assertIn("unreachable", str(failure))
        # The next attempt is a backoff away: meanwhile, no waiting at all.
        self.failureResultOf(store.get("a", 0, 10, 0), StoreError)

    @inlineCallbacks
    def test_killed_redis_fails_fast_and_comes_back(self) -> Gen:
        server = self.start_redis()
        clock = Clock()
        store = self.make(parse_redis_url(server.url), clock)
        yield insert_entries(store, ["a"], [Entry(1, "192.0.2.1", 1)], 10)
        lost = store._protocol.whenDisconnected()
        server.kill()
        yield lost
        # The store tried again at once, and Redis refused: the operation
        # that waited for that attempt fails.
        failure = yield self.assertFailure(
            insert_entries(store, ["a"], [Entry(2, "192.0.2.2", 2)], 10), StoreError
        )
        self.assertIn("unreachable", str(failure))
        # The next attempt is a backoff away (on the fake clock): until then
        # every operation fails at once, nothing waits.
        self.failureResultOf(store.get("a", 0, 10, 0), StoreError)
        server.start()
        for _ in range(20):
            clock.advance(1.0)
            if store._attempt is not None:
                break
        self.assertIsNotNone(store._attempt)
        # While Redis stays away, no operation waits for an attempt: this
        # one fails at once, although an attempt is under way.
        self.failureResultOf(store.get("a", 0, 10, 0), StoreError)
        connected: Deferred[None] = Deferred()
        store._waiting.append(connected)
        yield connected
        got = yield store.get("a", 0, 10, 0)
        self.assertEqual(got, [Entry(1, "192.0.2.1", 1)])

    @inlineCallbacks
    def test_a_silent_redis_times_out_and_is_reconnected(self) -> Gen:
        server = self.start_redis()
        clock = Clock()
        store = self.make(parse_redis_url(server.url + "?timeout=2"), clock)
        yield store.get("a", 0, 10, 0)
        server.pause()
        self.addCleanup(server.resume)
        pending = store.get("a", 0, 10, 0)
        self.assertNoResult(pending)
        clock.advance(2)
        failure = self.failureResultOf(pending, StoreError)
        self.assertIn("did not answer within 2.0 s", str(failure.value))
        server.resume()
        for _ in range(20):
            clock.advance(1.0)
            if store._attempt is not None or store._protocol is not None:
                break
        self.assertEqual((yield store.get("a", 0, 10, 0)), [])

    @inlineCallbacks
    def test_close_fails_later_operations(self) -> Gen:
        store = RedisStore(reactor, fresh_url(shared_redis()))
        yield store.get("a", 0, 1, 0)
        yield store.close()
        self.failureResultOf(store.get("a", 0, 1, 0), StoreError)
        self.failureResultOf(store.merge([], 10), StoreError)


def _self_signed(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (and localhost), and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "halp test redis")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "redis.crt")
    key_path = os.path.join(directory, "redis.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class TLSTests(TestCase):
    """``rediss://``: TLS to a real redis-server, its certificate checked."""

    def setUp(self) -> None:
        require_redis()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.cert, key = _self_signed(directory)
        self.tls_port = RedisServer().port
        self.server = RedisServer(
            extra=[
                "--tls-port", str(self.tls_port),
                "--tls-cert-file", self.cert,
                "--tls-key-file", key,
                "--tls-ca-cert-file", self.cert,
                "--tls-auth-clients", "no",
            ]
        ).start()
        self.addCleanup(self.server.close)

    def store(self, query: str) -> RedisStore:
        url = parse_redis_url(f"rediss://127.0.0.1:{self.tls_port}/0?{query}")
        store = RedisStore(reactor, url)
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def test_trusted_certificate(self) -> Gen:
        store = self.store(f"ca={self.cert}")
        yield insert_entries(store, ["a"], [Entry(5, "192.0.2.1", 1)], 10)
        self.assertEqual((yield store.get("a", 0, 10, 0)), [Entry(5, "192.0.2.1", 1)])

    @inlineCallbacks
    def test_untrusted_certificate_is_refused(self) -> Gen:
        store = self.store("prefix=x:")
        failure = yield self.assertFailure(store.get("a", 0, 10, 0), StoreError)
        self.assertIn("unreachable", str(failure))
        self.assertIn("certificate verify failed", str(failure))

    def test_missing_ca_file(self) -> None:
        store = self.store("ca=/nonexistent/ca.pem")
        failure = self.failureResultOf(store.get("a", 0, 10, 0), StoreError)
        self.assertIn("cannot read the Redis CA file '/nonexistent/ca.pem'", str(failure.value))
