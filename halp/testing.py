"""
In-memory fakes for testing programs that use HALP, and HALP itself.

:class:`FakeNetwork` connects :class:`~halp.client.HALPClient` objects to
real HALP servers (the real :class:`~halp.server.HALPServerFactory` over a
:class:`~halp.store.memory.MemoryStore`) without sockets, with a
:class:`~twisted.internet.task.Clock` for time::

    network = FakeNetwork()
    network.halp_server(ServerAddress("192.0.2.1", 7100))
    client = HALPClient(network.clock, MemoryStore(), ["192.0.2.1:7100"],
                        endpoint=network.endpoint)
    d = client.lookup("myapp")
    network.flush()
    peers = successResultOf(d)

:class:`LibhalpServerFactory` behaves like the 2011 libhalp server: it
reads one request, answers without a status line and closes.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from zope.interface import implementer

from treq.client import HTTPClient
from treq.testing import _SynchronousProducer
from twisted.web.client import Agent
from twisted.web.iweb import IAgentEndpointFactory

from halp.client.servers import ServerAddress
from halp.core import HALPCore, PeerStatus
from halp.interfaces import IHostStore, IProber
from halp.model import Limits
from halp.server import HALPServerFactory, HALPServerProtocol
from halp.store.memory import MemoryStore
from halp.web import HALPSite, make_site

__all__ = ["FakeNetwork", "FakeProber", "LibhalpServerFactory", "StaticPeers", "connect"]

#: The client side of every fake connection.
CLIENT_ADDRESS = IPv4Address("TCP", "198.51.100.1", 40000)


def connect(factory: HALPServerFactory) -> tuple[HALPServerProtocol, StringTransport]:
    """A server protocol of ``factory`` connected to a :class:`StringTransport`."""
    transport = StringTransport()
    proto = factory.buildProtocol(transport.getPeer())
    assert isinstance(proto, HALPServerProtocol)
    proto.makeConnection(transport)
    return proto, transport


def _address(server: ServerAddress) -> IPv4Address | IPv6Address:
    if ":" in server.host:
        return IPv6Address("TCP", server.host, server.port)
    return IPv4Address("TCP", server.host, server.port)


class FakeNetwork:
    """
    Servers reachable by address, in memory.

    An address nothing listens on refuses connections; a
    :meth:`blackhole` address accepts nothing and never answers, so only a
    timeout ends an attempt to reach it.

    :ivar attempts: every address a connection was attempted to, in order.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else Clock()
        self._listeners: dict[ServerAddress, IProtocolFactory | None] = {}
        self._pumps: list[iosim.IOPump] = []
        self.attempts: list[ServerAddress] = []

    def listen(self, address: ServerAddress, factory: IProtocolFactory) -> None:
        """Serve ``factory`` at ``address``."""
        self._listeners[address] = factory

    def halp_server(
        self,
        address: ServerAddress,
        store: IHostStore | None = None,
        limits: Limits = Limits(),
    ) -> HALPServerFactory:
        """Start a real HALP server at ``address`` and return its factory."""
        core = HALPCore(store if store is not None else MemoryStore(), self.clock, limits)
        factory = HALPServerFactory(core, self.clock, log_requests=False)
        self.listen(address, factory)
        return factory

    def http_server(
        self,
        address: ServerAddress,
        store: IHostStore | None = None,
        limits: Limits = Limits(),
    ) -> HALPSite:
        """
        Start a real HALP HTTP face at ``address`` (give it the ``http``
        scheme) and return its site; ``site.core`` is its core.
        """
        core = HALPCore(store if store is not None else MemoryStore(), self.clock, limits)
        site = make_site(core, self.clock, log_requests=False)
        self.listen(address, site)
        return site

    def http_client(self, source: ServerAddress | None = None) -> HTTPClient:
        """
        A treq client whose connections go over this network (from
        ``source``'s host, if given): pass to ``HALPClient(http=...)``, or
        drive an HTTP face with it, calling :meth:`flush` to deliver.
        """
        origin = CLIENT_ADDRESS if source is None else _address(ServerAddress(source.host, 40000))
        agent = Agent.usingEndpointFactory(self.clock, _EndpointFactory(self, origin))
        # Bodies are written at once, not by a cooperator on the reactor.
        return HTTPClient(agent, data_to_body_producer=_SynchronousProducer)

    def refuse(self, address: ServerAddress) -> None:
        """Make ``address`` refuse connections (a server that is down)."""
        self._listeners.pop(address, None)

    def blackhole(self, address: ServerAddress) -> None:
        """Make connections to ``address`` hang until cancelled."""
        self._listeners[address] = None

    def endpoint(self, address: ServerAddress) -> IStreamClientEndpoint:
        """The client endpoint for ``address``; pass as ``HALPClient(endpoint=...)``."""
        return _Endpoint(self, address, CLIENT_ADDRESS)

    def endpoint_from(self, source: ServerAddress) -> Callable[[ServerAddress], IStreamClientEndpoint]:
        """
        Like :meth:`endpoint`, for connections that come from ``source``'s
        host, as a server sees them: pass as ``Federation(endpoint=...)``.
        """
        origin = _address(ServerAddress(source.host, 40000))
        return lambda address: _Endpoint(self, address, origin)

    def connect(
        self,
        address: ServerAddress,
        factory: IProtocolFactory,
        source: IPv4Address | IPv6Address = CLIENT_ADDRESS,
    ) -> Deferred[IProtocol]:
        self.attempts.append(address)
        if address not in self._listeners:
            return fail(ConnectionRefusedError(str(address)))
        server_factory = self._listeners[address]
        if server_factory is None:
            return Deferred()
        host = _address(address)
        server = server_factory.buildProtocol(source)
        client = factory.buildProtocol(host)
        if server is None or client is None:
            return fail(ConnectionRefusedError(str(address)))
        server_transport = iosim.FakeTransport(server, True, host, source)
        client_transport = iosim.FakeTransport(client, False, source, host)
        self._pumps.append(
            iosim.connect(server, server_transport, client, client_transport, greet=False, clock=self.clock)
        )
        return succeed(client)

    def flush(self) -> None:
        """Deliver everything written, on every connection, until all is quiet."""
        moved = True
        while moved:
            moved = False
            for pump in list(self._pumps):
                if pump.flush():
                    moved = True
            self._pumps = [
                p for p in self._pumps if not (p.clientIO.disconnected and p.serverIO.disconnected)
            ]

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, delivering data before and after."""
        self.flush()
        self.clock.advance(seconds)
        self.flush()


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    def __init__(self, network: FakeNetwork, source: IPv4Address | IPv6Address) -> None:
        self._network = network
        self._source = source

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii").strip("[]")
        address = ServerAddress(host, uri.port, uri.scheme.decode("ascii"))
        return _Endpoint(self._network, address, self._source)


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(
        self,
        network: FakeNetwork,
        address: ServerAddress,
        source: IPv4Address | IPv6Address,
    ) -> None:
        self._network = network
        self._address = address
        self._source = source

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return self._network.connect(self._address, protocolFactory, self._source)


class StaticPeers:
    """
    A :class:`~halp.core.PeerSource` that lists ``peers`` and knows the
    hosts ``trusted`` as peer servers: set it as a core's ``peer_source``
    to test what a federating server does without running a federation.
    """

    def __init__(self, peers: Sequence[PeerStatus], trusted: Iterable[str] = ()) -> None:
        self._peers = list(peers)
        self._trusted = frozenset(trusted)

    def peers(self) -> list[PeerStatus]:
        return list(self._peers)

    def is_peer(self, host: str) -> bool:
        return host in self._trusted


@implementer(IProber)
class FakeProber:
    """
    An :class:`~halp.interfaces.IProber` without a network: the hosts
    in ``reachable`` (``host`` or ``(host, port)``) answer, the others
    do not.  Answers come at once, or, with ``delay`` and ``clock``, that
    many seconds later.  Every probe is recorded in :attr:`probes` as
    ``(time, host, port, halp)``.
    """

    def __init__(
        self,
        reachable: Iterable[str | tuple[str, int]] = (),
        clock: Clock | None = None,
        delay: float = 0.0,
    ) -> None:
        self.reachable = set(reachable)
        self.clock = clock
        self.delay = delay
        self.probes: list[tuple[float, str, int, bool]] = []

    def probe(self, host: str, port: int, halp: bool) -> Deferred[None]:
        from halp.verify import ProbeFailed

        self.probes.append((self.clock.seconds() if self.clock else 0.0, host, port, halp))
        ok = host in self.reachable or (host, port) in self.reachable
        if not self.delay or self.clock is None:
            return succeed(None) if ok else fail(ProbeFailed("connection refused"))
        if ok:
            call = self.clock.callLater(self.delay, lambda: d.callback(None))
        else:
            call = self.clock.callLater(
                self.delay, lambda: d.errback(ProbeFailed("no answer in time"))
            )
        d: Deferred[None] = Deferred(lambda _: call.cancel())
        return d


# -- a libhalp server --------------------------------------------------------

_GET = re.compile(r"get (\w+)$")
_INSERT = re.compile(r"insert(( [a-z0-9_\.]+)*)\n")
_ENTRY = re.compile(r"(\d+) (\S+) ?(\d+)?$")


class _LibhalpServer(Protocol):
    factory: LibhalpServerFactory

    def __init__(self) -> None:
        self._answered = False

    def dataReceived(self, data: bytes) -> None:
        # libhalp's server made one recv() call, answered and closed.
        if self._answered:
            return
        self._answered = True
        self.factory.queries.append(data)
        answer = self.factory.answer(data.decode("ascii", "replace"))
        if answer is None:
            # libhalp's server crashed on anything else (a slice, a
            # pipelined request, an unknown command): the connection closes
            # with no answer.
            self.factory.crashes += 1
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.transport.write(answer.encode("ascii"))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class LibhalpServerFactory(Factory):
    """
    A server that speaks only the 2011 libhalp form: ``get LABEL`` (its
    newest 10 entries, joined by newlines, no final newline, no status),
    ``insert LABELS`` with entry lines (a ``success:``/``failure:`` text
    per entry, not even newline-separated), one request per connection.

    :ivar labels: label -> {(host, port): timestamp}
    :ivar queries: every request received, as bytes.
    :ivar crashes: requests the 2011 server would have crashed on.
    """

    protocol = _LibhalpServer  # type: ignore[assignment]

    def __init__(self) -> None:
        self.labels: dict[str, dict[tuple[str, int], int]] = {}
        self.queries: list[bytes] = []
        self.crashes = 0

    def answer(self, query: str) -> str | None:
        match = _GET.match(query)
        if match:
            entries = self.labels.get(match.group(1), {})
            newest = sorted(entries.items(), key=lambda item: -item[1])[:10]
            return "\n".join(f"{ts} {host} {port}" for (host, port), ts in newest)
        match = _INSERT.match(query)
        if match:
            message = ""
            for label in match.group(1).split():
                table = self.labels.setdefault(label, {})
                for line in query.split("\n")[1:]:
                    entry = _ENTRY.match(line)
                    if entry and entry.group(3):
                        key = (entry.group(2), int(entry.group(3)))
                        table[key] = max(table.get(key, 0), int(entry.group(1)))
                        message += f"success: {label} {line}"
                    else:
                        message += f"failure: {label} {line}"
            return message
        return None

    def buildProtocol(self, addr: Any) -> Protocol:
        proto = _LibhalpServer()
        proto.factory = self
        return proto
