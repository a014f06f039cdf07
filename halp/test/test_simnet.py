"""
Tests for :mod:`halp.sim.net`: real HALP servers and federation over
simulated connections with latency and loss, on a :class:`SimClock`.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from halp.client.servers import ServerAddress
from halp.core import HALPCore, Stored
from halp.federation import Federation
from halp.model import Entry
from halp.server import HALPServerFactory
from halp.sim.clock import SimClock
from halp.sim.net import SimNetwork
from halp.store.memory import MemoryStore

START = 1_800_000_000
LABEL = "app"


class Recorder(Protocol):
    transport: Any

    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


class Greeter(Recorder):
    def connectionMade(self) -> None:
        self.transport.write(b"hello\n")


class SimNetworkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = SimClock(START)
        self.net = SimNetwork(self.clock, seed=7)

    def server(self, host: str) -> tuple[ServerAddress, HALPCore]:
        core = HALPCore(MemoryStore(), self.clock, node_id=host)
        address = ServerAddress(host, 7100)
        self.net.listen(address, HALPServerFactory(core, self.clock, log_requests=False))
        return address, core

    def test_a_request_takes_a_round_trip_after_the_handshake(self) -> None:
        address, core = self.server("198.51.100.1")
        self.successResultOf(core.insert([LABEL], [Entry(START - 5, "203.0.113.9", 6881)]))
        one_way = self.net.latency("192.0.2.1", address.host)
        self.assertEqual(one_way, self.net.latency(address.host, "192.0.2.1"))
        self.assertTrue(0.02 <= one_way < 0.1)
        d = self.net.endpoint_from("192.0.2.1")(address).connect(Factory.forProtocol(Recorder))
        self.clock.advance(2 * one_way - 1e-3)
        self.assertNoResult(d)
        self.clock.advance(2e-3)
        client = self.successResultOf(d)
        assert isinstance(client, Recorder)
        client.transport.write(b"get app\n")
        self.clock.advance(2 * one_way - 1e-3)
        self.assertEqual(client.data, b"")
        self.clock.advance(2e-3)
        self.assertEqual(client.data, b"%d 203.0.113.9 6881\nok 1\n" % (START - 5))
        client.transport.loseConnection()
        self.clock.advance(1)
        self.assertTrue(client.lost)
        self.assertEqual(self.net.counters.connections, 1)
        self.assertEqual(self.net.counters.messages, 2)

    def test_refused_after_a_round_trip_and_black_holes_hang(self) -> None:
        connect = self.net.endpoint_from("192.0.2.1")
        refused = connect(ServerAddress("198.51.100.2", 7100)).connect(Factory.forProtocol(Recorder))
        hole = ServerAddress("198.51.100.3", 7100)
        self.net.blackhole(hole)
        hanging = connect(hole).connect(Factory.forProtocol(Recorder))
        self.clock.advance(10)
        self.failureResultOf(refused, ConnectionRefusedError)
        self.assertNoResult(hanging)
        hanging.cancel()
        self.failureResultOf(hanging)

    def test_loss_delays_but_never_drops(self) -> None:
        lossy = SimNetwork(self.clock, seed=3, loss=0.3)
        address, core = self.server("198.51.100.1")
        lossy.listen(address, HALPServerFactory(core, self.clock, log_requests=False))
        clients: list[Deferred[IProtocol]] = []
        for n in range(40):
            clients.append(lossy.endpoint_from(f"192.0.2.{n + 1}")(address).connect(
                Factory.forProtocol(Greeter)
            ))
        self.clock.advance(50)
        protocols = [self.successResultOf(d) for d in clients]
        self.assertEqual(
            [p.data.endswith(b"\nok\n") for p in protocols if isinstance(p, Recorder)], [True] * 40
        )
        self.assertGreater(lossy.counters.lost, 0)

    def test_federation_pushes_an_insert_across_the_network(self) -> None:
        """Two real servers federate over the simulated network: an entry
        inserted at one is served by the other some round trips later."""
        a, core_a = self.server("198.51.100.1")
        b, core_b = self.server("198.51.100.2")
        feds = []
        for address, core, other in ((a, core_a, b), (b, core_b, a)):
            fed = Federation(
                core, self.clock, peers=[other], public=address,
                endpoint=self.net.endpoint_from(address), rng=random.Random(address.host),
            )
            fed.startService()
            self.addCleanup(fed.stopService)
            feds.append(fed)
        self.clock.advance(30)  # the peers test each other
        entry = Entry(int(self.clock.seconds()), "203.0.113.7", 6881)
        inserted_at = self.clock.seconds()
        outcome = self.successResultOf(core_a.insert([LABEL], [entry], "192.0.2.50"))
        self.assertIsInstance(outcome[0], Stored)
        arrived: list[float] = []
        core_b.watch(lambda changes, relay: arrived.append(self.clock.seconds()))
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(core_b.get(LABEL)).items, [entry])
        # A handshake, then the push: three one-way trips from a to b.
        self.assertAlmostEqual(arrived[0] - inserted_at, 3 * self.net.latency(a.host, b.host))
