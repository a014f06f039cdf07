# -*- test-case-name: halp.test.test_simnet -*-
"""
A simulated network: real HALP protocols talking over in-memory TCP
connections with latency and loss, on one :class:`~halp.sim.clock.SimClock`.

It plugs into the project's code where the tests' ``FakeNetwork`` does:
``Federation(endpoint=net.endpoint_from(address))`` and
``HALPClient(endpoint=...)``.  Unlike ``FakeNetwork``, nothing is
delivered until its time comes:

- a connection's SYN reaches the listener one link latency after
  ``connect``, and the connecting side has its protocol one round trip
  after it (a refused connection also fails after one round trip; a
  black-holed one never completes);
- bytes written arrive one latency later, in order; writes made while
  earlier ones are in flight travel with them;
- with ``loss``, a segment (or SYN) is lost with that probability and sent
  again after a retransmission timeout (1 s, doubling), as TCP does, so
  loss shows as delay, never as lost data.

Latency between two hosts is fixed for a run: ``base + jitter * u`` with
``u`` in [0, 1) drawn from the pair's names and the run's seed (never
``hash()``), so a run is the same every time.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from halp.client.servers import ServerAddress
from halp.sim.clock import SimClock

__all__ = ["Counters", "SimNetwork"]

#: Retransmission timeout for a lost segment or SYN, doubled on each loss.
RTO = 1.0


@dataclass
class Counters:
    """What crossed the network."""

    connections: int = 0
    refused: int = 0
    #: Deliveries (a write, or writes travelling together) and their bytes.
    messages: int = 0
    bytes: int = 0
    lost: int = 0
    #: ``[messages, bytes]`` by what the connection was for: the first word
    #: the connecting side wrote (``push``, ``changes``, ``hello``, ``get``,
    #: ``insert``...).
    kinds: dict[str, list[int]] = field(default_factory=dict)

    def kind(self, name: str) -> list[int]:
        """The ``[messages, bytes]`` of connections opened for ``name``."""
        return self.kinds.get(name, [0, 0])


def _address(host: str, port: int) -> IPv4Address | IPv6Address:
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


class _Transport(iosim.FakeTransport):
    """One end of a simulated connection."""

    def __init__(
        self, network: SimNetwork, protocol: IProtocol, server: bool,
        host: IPv4Address | IPv6Address, peer: IPv4Address | IPv6Address, latency: float,
    ) -> None:
        super().__init__(protocol, server, host, peer)
        self.network = network
        self.latency = latency
        self.other: _Transport | None = None
        self._due = False
        #: What the connection is for, shared by both ends: see Counters.kinds.
        self.purpose: list[str] = [""]

    def write(self, data: bytes) -> None:
        if self.disconnecting or self.disconnected:
            return
        if not self.purpose[0] and not self.isServer:
            self.purpose[0] = data.split(None, 1)[0].decode("ascii", "replace")[:16] if data.strip() else ""
        self.stream.append(data)
        self._schedule()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self._schedule()

    def abortConnection(self) -> None:
        self.stream = []
        self.disconnecting = True
        self._close(ConnectionLost())

    def _schedule(self) -> None:
        if not self._due:
            self._due = True
            self.network.clock.callLater(self.network.delay(self.latency), self._deliver)

    def _deliver(self) -> None:
        self._due = False
        other = self.other
        data = b"".join(self.stream)
        self.stream = []
        if data and other is not None and not other.disconnected:
            counters = self.network.counters
            counters.messages += 1
            counters.bytes += len(data)
            tally = counters.kinds.get(self.purpose[0])
            if tally is None:
                tally = counters.kinds[self.purpose[0]] = [0, 0]
            tally[0] += 1
            tally[1] += len(data)
            other.protocol.dataReceived(data)
        if self.stream:
            self._schedule()  # written while delivering
        elif self.disconnecting and not self.disconnected:
            self._close(ConnectionDone())

    def _close(self, why: Exception) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        if self.producer is not None:
            self.unregisterProducer()
        self.protocol.connectionLost(Failure(why))
        other = self.other
        if other is not None and not other.disconnected:
            other.disconnected = True
            other.stream = []
            self.network.clock.callLater(
                self.latency, other.protocol.connectionLost, Failure(why)
            )


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self, network: SimNetwork, source: str, address: ServerAddress) -> None:
        self.network, self.source, self.address = network, source, address

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self.network.connect(self.source, self.address, factory)


class SimNetwork:
    """
    Listeners by address, and the connections between them (see the
    module docstring).

    :param clock: the run's clock.
    :param seed: makes the latencies and losses of a run.
    :param base: the least one-way latency, in seconds.
    :param jitter: how much more a link may take.
    :param loss: the probability that a segment or SYN is lost.
    """

    def __init__(
        self, clock: SimClock, seed: int = 0, base: float = 0.02, jitter: float = 0.08,
        loss: float = 0.0,
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.base, self.jitter, self.loss = base, jitter, loss
        self._random = random.Random(seed)
        self._listeners: dict[ServerAddress, IProtocolFactory | None] = {}
        self.counters = Counters()

    def listen(self, address: ServerAddress, factory: IProtocolFactory) -> None:
        """Serve ``factory`` at ``address``."""
        self._listeners[address] = factory

    def refuse(self, address: ServerAddress) -> None:
        """Make ``address`` refuse connections (a host that is up, a server that is not)."""
        self._listeners.pop(address, None)

    def blackhole(self, address: ServerAddress) -> None:
        """Make connections to ``address`` hang (a host that is gone)."""
        self._listeners[address] = None

    def latency(self, a: str, b: str) -> float:
        """The one-way latency between hosts ``a`` and ``b``."""
        pair = f"{self.seed}|{min(a, b)}|{max(a, b)}".encode()
        return self.base + self.jitter * (zlib.crc32(pair) / 2**32)

    def delay(self, latency: float) -> float:
        """``latency``, plus a timeout for each time the segment is lost."""
        extra, rto = 0.0, RTO
        while self.loss and self._random.random() < self.loss:
            self.counters.lost += 1
            extra += rto
            rto *= 2
        return latency + extra

    def endpoint_from(self, source: ServerAddress | str) -> Callable[[ServerAddress], IStreamClientEndpoint]:
        """Endpoints for connections from ``source``'s host: pass as
        ``Federation(endpoint=...)`` or ``HALPClient(endpoint=...)``."""
        host = source if isinstance(source, str) else source.host
        return lambda address: _Endpoint(self, host, address)

    def connect(self, source: str, address: ServerAddress, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect from host ``source`` to ``address``; fires with the client protocol."""
        self.counters.connections += 1
        latency = self.latency(source, address.host)
        d: Deferred[IProtocol] = Deferred()
        self.clock.callLater(self.delay(latency), self._syn, source, address, factory, d, latency)
        return d

    def _syn(
        self, source: str, address: ServerAddress, factory: IProtocolFactory,
        d: Deferred[IProtocol], latency: float,
    ) -> None:
        if address not in self._listeners:
            self.counters.refused += 1
            self.clock.callLater(latency, d.errback, Failure(ConnectionRefusedError(str(address))))
            return
        listener = self._listeners[address]
        if listener is None or d.called:
            return  # black-holed, or given up on
        origin, target = _address(source, 40000), _address(address.host, address.port)
        server = listener.buildProtocol(origin)
        if server is None:
            self.clock.callLater(latency, d.errback, Failure(ConnectionRefusedError(str(address))))
            return
        server_end = _Transport(self, server, True, target, origin, latency)
        server.makeConnection(server_end)
        self.clock.callLater(self.delay(latency), self._syn_ack, server_end, factory, d, origin, target)

    def _syn_ack(
        self, server_end: _Transport, factory: IProtocolFactory, d: Deferred[IProtocol],
        origin: IPv4Address | IPv6Address, target: IPv4Address | IPv6Address,
    ) -> None:
        client = factory.buildProtocol(target)
        if d.called or client is None or server_end.disconnected:
            # Given up on (a timeout cancelled the Deferred), or refused.
            if not server_end.disconnected:
                server_end.abortConnection()
            if not d.called:
                d.errback(Failure(ConnectionRefusedError()))
            return
        client_end = _Transport(self, client, False, origin, target, server_end.latency)
        client_end.purpose = server_end.purpose
        client_end.other, server_end.other = server_end, client_end
        client.makeConnection(client_end)
        d.callback(client)
        if server_end.stream:
            server_end._schedule()  # the server spoke first
