"""Tests for :mod:`halp.tap`: ``twistd halp`` options and service tree."""

from __future__ import annotations

import os
import random
import resource
import sqlite3
from typing import Any
from unittest import SkipTest

import twisted.test

from twisted.application.internet import TimerService
from twisted.application.service import IServiceCollection
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint
from twisted.internet.testing import EventLoggingObserver, MemoryReactor
from twisted.logger import globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from halp.core import Admission, HALPCore
from halp.model import Limits
from halp.server import HALPServerFactory
from halp.store import StoreSpec
from halp.store.memory import MemoryStore
from halp.store.redis import RedisStore
from halp.store.sqlite import SQLiteStore
from halp.client.servers import ServerAddress
from halp.federation import PUSH_DELAY, Federation
from halp.tap import (
    FD_RESERVE,
    Assembly,
    ListenerService,
    Options,
    StoreService,
    assemble,
    fit_fd_limit,
    makeService,
    parse_duration,
)
from halp.testing import FakeNetwork, FakeProber


#: A key and certificate that ship with Twisted's tests, for TLS endpoints.
SERVER_PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The default store is a file in the working directory: use a fresh one.
        path = self.mktemp()
        os.makedirs(path)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(path)

    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(
            {k: options[k] for k in (
                "ports",
                "store",
                "max-entries",
                "ttl",
                "idle-timeout",
                "purge-interval",
                "no-request-log",
                "no-federation",
                "peers",
                "public-address",
                "fanout",
                "sync-interval",
                "peer-test-interval",
                "push-delay",
                "http",
                "public-http",
            )},
            {
                "ports": ["tcp:7100"],
                "store": "sqlite:halp.sqlite3",
                "max-entries": 1000,
                "ttl": 86400,
                "idle-timeout": 60.0,
                "purge-interval": 60.0,
                "no-request-log": False,
                "no-federation": False,
                "peers": [],
                "public-address": None,
                "fanout": 5,
                "sync-interval": 250.0,
                "peer-test-interval": 3.0,
                "push-delay": 0.0,
                "http": [],
                "public-http": None,
            },
        )
        self.assertEqual(
            options["store-spec"], StoreSpec("sqlite", "halp.sqlite3", {"synchronous": "full"})
        )
        self.assertEqual(options.limits(), Limits(max_entries=1000, ttl=86400))

    def test_everything(self) -> None:
        options = parse(
            "--port", "7101",
            "--port", "tcp6:7101:interface=\\:\\:1",
            "--store", "memory",
            "--max-entries", "50",
            "--ttl", "90m",
            "--idle-timeout", "5.5",
            "--purge-interval", "10",
            "--no-request-log",
        )
        self.assertEqual(options["ports"], ["tcp:7101", "tcp6:7101:interface=\\:\\:1"])
        self.assertEqual(options["store-spec"], StoreSpec("memory"))
        self.assertEqual(options.limits(), Limits(max_entries=50, ttl=5400))
        self.assertEqual((options["idle-timeout"], options["purge-interval"]), (5.5, 10.0))
        self.assertTrue(options["no-request-log"])
        (listener, _) = [
            s for s in IServiceCollection(makeService(options)) if isinstance(s, ListenerService)
        ]
        factory = listener.factory
        assert isinstance(factory, HALPServerFactory)
        self.assertFalse(factory.log_requests)

    def test_sqlite_options(self) -> None:
        options = parse("--store", "sqlite:x.db?synchronous=normal")
        self.assertEqual(options["store-spec"], StoreSpec("sqlite", "x.db", {"synchronous": "normal"}))

    def test_bad_values_name_the_option(self) -> None:
        for argv, text in [
            (["--max-entries", "nope"], "--max-entries: expected an integer from 1 to 10000000, not 'nope'"),
            (["--max-entries", "0"], "from 1 to"),
            (["--ttl", "0"], "--ttl: expected a duration"),
            (["--ttl", "5y"], "--ttl: expected a duration"),
            (["--idle-timeout", "-1"], "--idle-timeout: expected seconds"),
            (["--purge-interval", "x"], "--purge-interval: expected seconds"),
            (["--port", "notanendpoint"], "--port: not a valid endpoint"),
            (["--port", "99999"], "--port: port 99999 out of range"),
            (["--store", "bogus:x"], "--store: unknown store 'bogus:x'"),
            (["--store", "sqlite:x?journal=off"], "--store: unknown SQLite option 'journal'"),
            (["--store", "sqlite:x?synchronous=off"], "--store: synchronous must be"),
            (["--nonsense"], "nonsense"),
            (["--peer", "nohost"], "--peer: bad server 'nohost': expected HOST:PORT"),
            (["--peer", "libhalp://192.0.2.1:7100"], "--peer: a libhalp server cannot federate"),
            (["--public-address", "192.0.2.1:0"], "--public-address: bad server"),
            (["--public-address", "halp://192.0.2.1:1"], "--public-address: expected HOST:PORT"),
            (["--fanout", "0"], "--fanout: expected an integer from 1 to 64"),
            (["--sync-interval", "0"], "--sync-interval: expected seconds"),
            (["--peer-test-interval", "x"], "--peer-test-interval: expected seconds"),
            (["--push-delay", "-1"], "--push-delay: expected seconds (0 <= s <= 86400), not '-1'"),
            (["--push-delay", "soon"], "--push-delay: expected seconds (0 <= s <= 86400), not 'soon'"),
            (["--no-federation", "--peer", "192.0.2.1:7100"], "cannot be combined"),
            (["--peer", "http://192.0.2.1:8080/"], "--peer: servers federate over HALP/1"),
            (["--public-address", "http://192.0.2.1:80"], "--public-address: expected HOST:PORT"),
            (
                ["--public-address", "10.1.2.3:7100"],
                "--public-address: 10.1.2.3 is not globally routable: private-use (RFC 1918); "
                "add --allow-private for a server on a LAN",
            ),
            (["--http", "notanendpoint"], "--http: not a valid endpoint"),
            (["--http", "70000"], "--http: port 70000 out of range"),
            (["--public-http", "192.0.2.1:80"], "--public-http: expected http://HOST:PORT/"),
            (["--public-http", "http://192.0.2.1/x"], "--public-http: bad server"),
            (["--public-http", "http://192.0.2.1/"], "--public-http: needs --http"),
            (
                ["--http", "8080", "--public-http", "http://192.0.2.1/"],
                "--public-http: needs --public-address",
            ),
            (
                ["--no-federation", "--http", "8080", "--public-http", "http://192.0.2.1/"],
                "cannot be combined",
            ),
        ]:
            options = Options()
            e = self.assertRaises(UsageError, options.parseOptions, argv)
            self.assertIn(text, str(e))
            self.assertEqual(str(e).count("\n"), 0)
            self.assertEqual(options.getUsage(), "Run 'twistd halp --help' for the options.")

    def test_options_touch_no_file(self) -> None:
        parse("--store", "sqlite:x.sqlite3")
        self.assertEqual(os.listdir("."), [])

    def test_usage_lists_options(self) -> None:
        usage = Options().getUsage()
        for option in ("--port", "--store", "--max-entries", "--ttl", "--idle-timeout"):
            self.assertIn(option, usage)

    def test_durations(self) -> None:
        self.assertEqual(
            [parse_duration(t) for t in ("90", "90s", "15m", "6h", "7d")],
            [90, 90, 900, 21600, 604800],
        )


class AdmissionOptionTests(SynchronousTestCase):
    """The admission options, as a whole, and their errors."""

    def test_defaults_are_a_public_server(self) -> None:
        self.assertEqual(
            parse().admission(),
            Admission(
                allow_private=False, verify="all", insert_rate=0.1, insert_burst=1000,
                group_share=64, spread=True,
            ),
        )

    def test_test_bed(self) -> None:
        options = parse(
            "--allow-private", "--verify", "none", "--insert-rate", "0", "--group-share", "0"
        )
        self.assertEqual(
            options.admission(),
            Admission(allow_private=True, verify="none", insert_rate=0, group_share=0),
        )

    def test_tuned(self) -> None:
        options = parse("--verify", "inserts", "--insert-rate", "2.5", "--insert-burst", "50", "--group-share", "16")
        self.assertEqual(
            options.admission(),
            Admission(verify="inserts", insert_rate=2.5, insert_burst=50, group_share=16),
        )

    def test_errors(self) -> None:
        for argv, message in [
            (["--verify", "some"], "--verify: expected one of all, inserts, none, not 'some'"),
            (["--insert-rate", "-1"], "--insert-rate: expected a number from 0, not '-1'"),
            (["--insert-burst", "lots"], "--insert-burst: expected a number from 0, not 'lots'"),
            (["--group-share", "-2"], "--group-share: expected an integer from 0 to 1000000, not '-2'"),
        ]:
            with self.assertRaises(UsageError) as caught:
                parse(*argv)
            self.assertIn(message, str(caught.exception))

    def test_no_verification_no_prober_service(self) -> None:
        top = makeService(parse("--store", "memory", "--no-federation", "--verify", "none"))
        self.assertNotIn("_OnStop", [type(s).__name__ for s in IServiceCollection(top)])


class MakeServiceTests(SynchronousTestCase):
    def test_service_tree(self) -> None:
        options = parse("--store", "memory", "--port", "tcp:0", "--port", "tcp6:0", "--ttl", "1h")
        top = makeService(options)
        children = list(IServiceCollection(top))
        self.assertIsInstance(children[0], StoreService)
        assert isinstance(children[0], StoreService)
        self.assertIsInstance(children[0].store, MemoryStore)
        self.assertIsInstance(children[1], TimerService)
        self.assertIsInstance(children[2], Federation)
        listeners = children[3:-1]
        self.assertEqual([type(s) for s in listeners], [ListenerService, ListenerService])
        assert isinstance(listeners[0], ListenerService)
        self.assertEqual([s.description for s in listeners], ["tcp:0", "tcp6:0"])
        factory = listeners[0].factory
        assert isinstance(factory, HALPServerFactory)
        self.assertEqual(factory.core.limits.ttl, 3600)
        self.assertIs(factory.core.store, children[0].store)
        federation = children[2]
        assert isinstance(federation, Federation)
        self.assertIs(federation.core, factory.core)
        self.assertIs(factory.core.peer_source, federation)
        # A public server's admission rules, with a prober stopped last.
        self.assertEqual(factory.core.admission, Admission())
        self.assertIsNotNone(factory.core.verifier)
        self.assertEqual(type(children[-1]).__name__, "_OnStop")

    def test_federation_options_reach_the_federation(self) -> None:
        options = parse(
            "--store", "memory",
            "--public-address", "halp.example:7100",
            "--peer", "192.0.2.1:7100",
            "--peer", "halp://[2001:db8::1]:7101",
            "--fanout", "3",
            "--sync-interval", "2",
            "--peer-test-interval", "0.5",
            "--push-delay", "2.5",
        )
        (federation,) = [
            s for s in IServiceCollection(makeService(options)) if isinstance(s, Federation)
        ]
        self.assertEqual(federation.public, ServerAddress("halp.example", 7100))
        self.assertEqual(
            sorted(str(r.address) for r in federation.table.records() if r.pinned),
            ["192.0.2.1:7100", "[2001:db8::1]:7101"],
        )
        self.assertEqual(
            (
                federation.fanout,
                federation.sync_interval,
                federation.test_interval,
                federation.push_delay,
            ),
            (3, 2.0, 0.5, 2.5),
        )

    def test_push_delay(self) -> None:
        """The federation pushes at once by default; ``--push-delay 0`` says so too."""
        for argv in [(), ("--push-delay", "0")]:
            (federation,) = [
                s
                for s in IServiceCollection(makeService(parse("--store", "memory", *argv)))
                if isinstance(s, Federation)
            ]
            self.assertEqual(federation.push_delay, PUSH_DELAY, argv)

    def test_http_face(self) -> None:
        from halp.web import HALPSite

        options = parse(
            "--store", "memory", "--port", "tcp:0", "--http", "8080",
            "--http", "tcp6:8081", "--idle-timeout", "7", "--no-request-log",
        )
        self.assertEqual(options["http"], ["tcp:8080", "tcp6:8081"])
        listeners = [
            s for s in IServiceCollection(makeService(options)) if isinstance(s, ListenerService)
        ]
        self.assertEqual([s.what for s in listeners], ["HALP/1", "HTTP", "HTTP"])
        line, http, http6 = (s.factory for s in listeners)
        assert isinstance(line, HALPServerFactory) and isinstance(http, HALPSite)
        # One site for every HTTP endpoint, over the line protocol's core.
        self.assertIs(http, http6)
        self.assertIs(http.core, line.core)
        self.assertEqual(http.timeOut, 7)
        self.assertFalse(http.log_requests)
        self.assertEqual(line.core.http_urls, [])

    def test_http_url_is_advertised_once_listening(self) -> None:
        options = parse(
            "--store", "memory", "--public-address", "halp.example:7100",
            "--http", "tcp:0", "--http", f"ssl:0:privateKey={SERVER_PEM}",
        )
        services = list(IServiceCollection(makeService(options)))
        first, second = [s for s in services if isinstance(s, ListenerService) and s.what == "HTTP"]
        (federation,) = [s for s in services if isinstance(s, Federation)]
        relisted: list[bool] = []
        federation.relist = lambda: relisted.append(True)  # type: ignore[method-assign]
        # Only the first HTTP endpoint is advertised, with the port it got.
        self.assertIsNone(second.on_listening)
        assert first.on_listening is not None
        port = MemoryReactor().listenTCP(8123, first.factory)
        first.on_listening(port)
        self.assertEqual(federation.core.http_urls, ["http://halp.example:8123/"])
        self.assertEqual(relisted, [True])

    def test_tls_endpoint_is_advertised_as_https(self) -> None:
        options = parse(
            "--store", "memory", "--public-address", "192.0.2.7:7100", "--allow-private",
            "--http", f"ssl:0:privateKey={SERVER_PEM}",
        )
        services = list(IServiceCollection(makeService(options)))
        (listener,) = [s for s in services if isinstance(s, ListenerService) and s.what == "HTTP"]
        (federation,) = [s for s in services if isinstance(s, Federation)]
        assert listener.on_listening is not None
        listener.on_listening(MemoryReactor().listenTCP(8443, listener.factory))
        self.assertEqual(federation.core.http_urls, ["https://192.0.2.7:8443/"])

    def test_unix_and_loopback_faces_are_not_announced_at_the_public_host(self) -> None:
        from twisted.internet.address import IPv4Address, UNIXAddress

        class Listening:
            def __init__(self, address: object) -> None:
                self.address = address

            def getHost(self) -> object:
                return self.address

        for description, address in [
            ("unix:/run/halp.sock", UNIXAddress(b"/run/halp.sock")),
            ("tcp:8080:interface=127.0.0.1", IPv4Address("TCP", "127.0.0.1", 8080)),
        ]:
            options = parse(
                "--store", "memory", "--public-address", "192.0.2.7:7100", "--allow-private",
                "--http", description,
            )
            services = list(IServiceCollection(makeService(options)))
            (listener,) = [s for s in services if isinstance(s, ListenerService) and s.what == "HTTP"]
            assert listener.on_listening is not None
            events = EventLoggingObserver()
            globalLogPublisher.addObserver(events)
            self.addCleanup(globalLogPublisher.removeObserver, events)
            listener.on_listening(Listening(address))  # type: ignore[arg-type]
            (federation,) = [s for s in services if isinstance(s, Federation)]
            self.assertEqual(federation.core.http_urls, [], description)
            self.assertTrue(
                any("--public-http" in e.get("log_format", "") for e in events), description
            )

    def test_public_http_is_announced_as_given(self) -> None:
        options = parse(
            "--store", "memory", "--public-address", "192.0.2.7:7100", "--allow-private",
            "--http", "tcp:8080", "--public-http", "HTTPS://Halp.Example",
        )
        services = list(IServiceCollection(makeService(options)))
        (listener,) = [s for s in services if isinstance(s, ListenerService) and s.what == "HTTP"]
        (federation,) = [s for s in services if isinstance(s, Federation)]
        self.assertIsNone(listener.on_listening)
        self.assertEqual(federation.core.http_urls, ["https://halp.example:443/"])

    def test_no_federation(self) -> None:
        options = parse("--store", "memory", "--no-federation")
        services = list(IServiceCollection(makeService(options)))
        self.assertFalse([s for s in services if isinstance(s, Federation)])

    def test_store_is_checked_when_the_service_starts(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        with sqlite3.connect(os.path.join(path, "other.db")) as conn:
            conn.execute("CREATE TABLE t (x)")
        # The path is relative: it means the file in the directory that is
        # current when the server starts (twistd --rundir), not before.
        service = list(IServiceCollection(makeService(parse("--store", "sqlite:other.db"))))[0]
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(path)
        e = self.assertRaises(SystemExit, service.startService)
        self.assertEqual(str(e).count("\n"), 0)
        self.assertIn("twistd halp: --store: ", str(e))
        self.assertIn("not a HALP one", str(e))
        self.assertFalse(service.running)

    def test_unopenable_store_stops_the_server(self) -> None:
        options = parse("--store", "sqlite:/nonexistent/dir/x.db")
        service = list(IServiceCollection(makeService(options)))[0]
        e = self.assertRaises(SystemExit, service.startService)
        self.assertIn("--store: cannot use '/nonexistent/dir/x.db'", str(e))
        self.assertIn("'/nonexistent/dir' does not exist; create it", str(e))

    def test_new_database_is_created_at_start(self) -> None:
        path = self.mktemp() + ".sqlite3"
        service = list(IServiceCollection(makeService(parse("--store", f"sqlite:{path}"))))[0]
        self.assertFalse(os.path.exists(path))
        service.startService()
        self.assertTrue(os.path.exists(path))
        self.successResultOf(service.stopService())

    def test_sqlite_store(self) -> None:
        path = self.mktemp()
        top = makeService(parse("--store", f"sqlite:{path}"))
        service = list(IServiceCollection(top))[0]
        assert isinstance(service, StoreService)
        self.assertIsInstance(service.store, SQLiteStore)
        assert isinstance(service.store, SQLiteStore)
        self.assertEqual(service.store.path, path)

    def test_redis_store(self) -> None:
        top = makeService(parse("--store", "redis://:pw@127.0.0.1:1/3?prefix=a:"))
        service = list(IServiceCollection(top))[0]
        assert isinstance(service, StoreService)
        assert isinstance(service.store, RedisStore)
        self.assertEqual((service.store.url.db, service.store.url.password), (3, "pw"))

    def test_redis_store_url_errors(self) -> None:
        with self.assertRaises(UsageError) as raised:
            parse("--store", "redis://:hunter2@h/0?prefix={x}")
        self.assertIn("--store: prefix", str(raised.exception))
        self.assertNotIn("hunter2", str(raised.exception))


class OtherCore(HALPCore):
    """A core of another type, as the simulator's hostile servers have."""


class AssembleTests(SynchronousTestCase):
    """
    :func:`halp.tap.assemble` wires one server on the clock, store, network
    and seed it is given, and listens nowhere: the simulator's servers.
    """

    #: A peer the assembled server pins.
    PEER = ServerAddress("192.0.2.1", 7100)

    def assembly(self, clock: Clock, *argv: str, rng: random.Random | None = None) -> Assembly:
        """Assemble from ``argv`` on ``clock`` and a fresh memory store."""
        return assemble(
            parse("--store", "memory", *argv),
            clock,
            MemoryStore(),
            prober=FakeProber(clock=clock),
            rng=rng,
        )

    def test_parts(self) -> None:
        clock = Clock()
        clock.advance(1_800_000_000)
        network = FakeNetwork(clock)
        network.halp_server(self.PEER)
        connect = network.endpoint_from(ServerAddress("192.0.2.7", 7100))
        dialled: list[ServerAddress] = []

        def endpoint(address: ServerAddress) -> IStreamClientEndpoint:
            dialled.append(address)
            return connect(address)

        store = MemoryStore()
        parts = assemble(
            parse(
                "--store", "memory", "--peer", str(self.PEER), "--push-delay", "2",
                "--port", "tcp:7100", "--http", "tcp:8080",
            ),
            clock,
            store,
            prober=FakeProber(clock=clock),
            core_type=OtherCore,
            node_id="node-7",
            endpoint=endpoint,
        )
        core = parts.core
        self.assertIsInstance(core, OtherCore)
        self.assertEqual(core.node_id, "node-7")
        self.assertIs(core.clock, clock)
        self.assertIs(core.store, store)
        self.assertIsNotNone(core.verifier)
        self.assertIs(parts.factory.core, core)
        self.assertIs(parts.factory.limiter, parts.limiter)
        # The store, the purge timer on the clock, the federation: no listener.
        store_service, purge, federation = IServiceCollection(parts.service)
        assert isinstance(store_service, StoreService) and isinstance(purge, TimerService)
        self.assertIs(store_service.store, store)
        self.assertIs(purge.clock, clock)
        self.assertIs(federation, parts.federation)
        assert isinstance(federation, Federation)
        self.assertIs(federation.core, core)
        self.assertIs(federation.clock, clock)
        self.assertEqual(federation.push_delay, 2.0)

        parts.service.startService()
        self.addCleanup(lambda: self.successResultOf(parts.service.stopService()))
        d = federation.sync()
        network.flush()
        self.successResultOf(d)
        self.assertEqual(dialled, [self.PEER])
        self.assertEqual(core.stats["pull-sent"], 1)

    def test_the_seed_decides_the_schedule(self) -> None:
        """Started on a fresh clock, servers of one seed schedule the same calls."""

        def schedule(seed: int) -> list[float]:
            clock = Clock()
            parts = self.assembly(clock, rng=random.Random(seed))
            parts.service.startService()
            due = sorted(call.getTime() for call in clock.getDelayedCalls())
            self.successResultOf(parts.service.stopService())
            return due

        self.assertEqual(schedule(1), schedule(1))
        self.assertNotEqual(schedule(1), schedule(2))

    def test_no_federation(self) -> None:
        parts = self.assembly(Clock(), "--no-federation")
        self.assertIsNone(parts.federation)
        self.assertEqual(
            [type(s) for s in IServiceCollection(parts.service)], [StoreService, TimerService]
        )


class LaterEndpoint:
    """An endpoint whose listen() answers when told to."""

    def __init__(self) -> None:
        self.result: Deferred[IListeningPort] = Deferred()

    def listen(self, factory: object) -> Deferred[IListeningPort]:
        return self.result


class ListenerServiceTests(SynchronousTestCase):
    def factory(self) -> HALPServerFactory:
        clock = Clock()
        return HALPServerFactory(HALPCore(MemoryStore(), clock), clock)

    def test_listens_once_and_stops(self) -> None:
        reactor = MemoryReactor()
        service = ListenerService(
            "tcp:7100", TCP4ServerEndpoint(reactor, 7100), self.factory(), reactor
        )
        service.privilegedStartService()
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        self.assertIsNotNone(service.port)
        service.stopService()
        self.assertIsNone(service.port)

    def test_later_failure_is_logged_and_stops_the_reactor(self) -> None:
        reactor = MemoryReactor()
        reactor.running = True
        endpoint = LaterEndpoint()
        service = ListenerService("onion:7100", endpoint, self.factory(), reactor)  # type: ignore[arg-type]
        service.privilegedStartService()
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        endpoint.result.errback(OSError("no route"))
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(
            [e["endpoint"] for e in events if "log_failure" in e], ["onion:7100"]
        )
        self.assertIsNone(service.port)

    def test_failure_to_listen_exits_with_one_line(self) -> None:
        from twisted.internet.error import CannotListenError

        class Refusing(MemoryReactor):
            def listenTCP(self, *args: object, **kwargs: object) -> object:
                raise CannotListenError("", 7100, OSError("Address already in use"))

        refusing = Refusing()
        service = ListenerService(
            "tcp:7100", TCP4ServerEndpoint(refusing, 7100), self.factory(), refusing
        )
        e = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertIn("twistd halp: cannot listen on tcp:7100:", str(e))
        self.assertIn("Address already in use", str(e))
        self.assertEqual(str(e).count("\n"), 0)


class ConnectionOptionsTests(SynchronousTestCase):
    """The connection hygiene options: deadlines, abort, caps."""

    def setUp(self) -> None:
        path = self.mktemp()
        os.makedirs(path)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(path)

    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(
            {k: options[k] for k in (
                "request-timeout", "abort-timeout", "max-connections", "max-connections-per-host"
            )},
            {
                "request-timeout": 30.0,
                "abort-timeout": 15.0,
                "max-connections": 1024,
                "max-connections-per-host": 16,
            },
        )

    def test_options_reach_both_faces(self) -> None:
        from halp.web import HALPSite

        options = parse(
            "--store", "memory", "--port", "tcp:0", "--http", "tcp:0",
            "--idle-timeout", "3", "--request-timeout", "2", "--abort-timeout", "1.5",
            "--max-connections", "100", "--max-connections-per-host", "0",
        )
        listeners = [
            s for s in IServiceCollection(makeService(options)) if isinstance(s, ListenerService)
        ]
        line, http = (s.factory for s in listeners)
        assert isinstance(line, HALPServerFactory) and isinstance(http, HALPSite)
        self.assertEqual(
            (line.idle_timeout, line.request_timeout, line.abort_timeout), (3.0, 2.0, 1.5)
        )
        self.assertEqual((http.timeOut, http.request_timeout, http.abort_timeout), (3, 2.0, 1.5))
        # One count for both faces.
        self.assertIs(line.limiter, http.limiter)
        self.assertEqual((line.limiter.max_connections, line.limiter.max_per_host), (100, 0))

    def test_bad_values_name_the_option(self) -> None:
        for argv, text in [
            (["--request-timeout", "0"], "--request-timeout: expected seconds"),
            (["--request-timeout", "x"], "--request-timeout: expected seconds"),
            (["--abort-timeout", "-1"], "--abort-timeout: expected seconds"),
            (["--max-connections", "0"], "--max-connections: expected an integer from 1 to 1000000"),
            (["--max-connections", "many"], "--max-connections: expected an integer"),
            (
                ["--max-connections-per-host", "-1"],
                "--max-connections-per-host: expected an integer from 0 to 1000000",
            ),
        ]:
            options = Options()
            e = self.assertRaises(UsageError, options.parseOptions, argv)
            self.assertIn(text, str(e))

    def test_usage_lists_options(self) -> None:
        usage = Options().getUsage()
        for option in (
            "--request-timeout", "--abort-timeout", "--max-connections",
            "--max-connections-per-host",
        ):
            self.assertIn(option, usage)


class FitFdLimitTests(SynchronousTestCase):
    """:func:`halp.tap.fit_fd_limit` raises the soft limit on open files."""

    def limits(self, soft: int, hard: int) -> tuple[list[tuple[int, int]], Any, Any]:
        state = {"limits": (soft, hard)}
        set_calls: list[tuple[int, int]] = []

        def get(which: int) -> tuple[int, int]:
            self.assertEqual(which, resource.RLIMIT_NOFILE)
            return state["limits"]

        def put(which: int, limits: tuple[int, int]) -> None:
            self.assertEqual(which, resource.RLIMIT_NOFILE)
            set_calls.append(limits)
            state["limits"] = limits

        return set_calls, get, put

    def test_raised_to_what_is_wanted(self) -> None:
        calls, get, put = self.limits(1024, 524288)
        self.assertEqual(fit_fd_limit(1088, get, put), 1088)
        self.assertEqual(calls, [(1088, 524288)])

    def test_enough_already(self) -> None:
        calls, get, put = self.limits(4096, 4096)
        self.assertEqual(fit_fd_limit(1088, get, put), 4096)
        self.assertEqual(calls, [])

    def test_as_far_as_the_hard_limit(self) -> None:
        calls, get, put = self.limits(128, 256)
        self.assertEqual(fit_fd_limit(1088, get, put), 256)
        self.assertEqual(calls, [(256, 256)])

    def test_hard_limit_reached(self) -> None:
        calls, get, put = self.limits(128, 128)
        self.assertEqual(fit_fd_limit(1088, get, put), 128)
        self.assertEqual(calls, [])

    def test_refused(self) -> None:
        def put(which: int, limits: tuple[int, int]) -> None:
            raise ValueError("not allowed")

        self.assertEqual(fit_fd_limit(1088, lambda which: (100, 2000), put), 100)

    def test_warning_when_too_low(self) -> None:
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 1_000_000:
            raise SkipTest("no hard limit on open files below what --max-connections takes")
        parse_and_build = ["--store", "memory", "--port", "tcp:0", "--no-federation"]
        makeService(parse(*parse_and_build, "--max-connections", str(hard)))
        (warning,) = [e for e in events if "files" in e]
        self.assertEqual(warning["connections"], hard)
        self.assertEqual(warning["wanted"], hard + FD_RESERVE)
        self.assertIn("RLIMIT_NOFILE", warning["log_format"])
