# -*- test-case-name: halp.test.test_server -*-
"""
Connection caps: how many connections a server keeps open in all, and from
one source host.

The count is HALP's own.  Twisted's
:class:`~twisted.protocols.policies.LimitConnectionsByPeer` cannot be used:
it indexes an ``IPv4Address`` as a tuple and decrements the port instead
of the host (twisted/twisted#12183), and is untested.

One :class:`ConnectionLimiter` is shared by every listener of a server, the
HALP/1 ones and the HTTP face alike: the caps bound file descriptors and
memory, which are the process's, whatever protocol a connection speaks.
The listeners consult it in ``buildProtocol`` and answer a connection it
refuses with :class:`Refusal`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from halp.model import network_key

__all__ = [
    "BUSY_RETRY",
    "ConnectionLimiter",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_HOST",
    "IPV6_PREFIX",
    "Refusal",
    "host_key",
]

#: Open connections in all, by default.  Far below the file descriptors a
#: server can get (the server raises its soft ``RLIMIT_NOFILE`` to fit, see
#: ``halp.tap``), and far above what HALP's traffic needs: every HALP
#: client and every federating server opens one short connection per
#: exchange.
DEFAULT_MAX_CONNECTIONS = 1024
#: Open connections from one host, by default.  Tor allows 100 per address
#: (``DoSConnectionMaxConcurrentCount``), go-libp2p 8 per IPv4 address and
#: per IPv6 /56; HALP's own clients use one at a time, a federating server
#: a few, a browser on the status page about six.
DEFAULT_MAX_CONNECTIONS_PER_HOST = 16
#: IPv6 addresses are counted by this prefix, as go-libp2p does: one
#: subscriber commonly gets a /56 (or a /64) and can use any address in it.
IPV6_PREFIX = 56
#: Seconds a refused client is told to wait before trying again.
BUSY_RETRY = 10
#: Seconds between two log lines about refused connections: a flood of
#: connections does not write a line each.
REFUSAL_LOG_INTERVAL = 10.0


def host_key(address: object) -> str | None:
    """
    What connections from ``address`` are counted under: its IPv4 address
    (an IPv4-mapped IPv6 address counts as the IPv4 address), or the
    ``/56`` network of an IPv6 address (``"2001:db8:0:100::/56"``).
    ``None`` for an address without a host (a UNIX socket): such
    connections count only towards the total.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    host = host.split("%", 1)[0].lower()  # a zone, as in fe80::1%eth0
    return network_key(host, IPV6_PREFIX)


class ConnectionLimiter:
    """
    Counts open connections, in all and by :func:`host_key`, and admits a
    new one only below both caps.

    :param max_connections: open connections in all, at least 1.
    :param max_per_host: open connections under one key, or 0 for no
        per-host cap (behind a reverse proxy every client has its address).
    """

    _log = Logger()

    def __init__(
        self,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_host: int = DEFAULT_MAX_CONNECTIONS_PER_HOST,
    ) -> None:
        if max_connections < 1 or max_per_host < 0:
            raise ValueError("max_connections must be positive, max_per_host not negative")
        self.max_connections = max_connections
        self.max_per_host = max_per_host
        #: Connections open now.
        self.open = 0
        #: Connections refused since the server started.
        self.refused = 0
        self._hosts: dict[str, int] = {}
        self._unlogged = 0
        self._logged_at: float | None = None

    def count(self, key: str | None) -> int:
        """Connections open now under ``key``."""
        return 0 if key is None else self._hosts.get(key, 0)

    def admit(self, key: str | None) -> str | None:
        """
        Count a new connection under ``key`` if both caps allow it.

        :return: ``None`` when it was admitted (call :meth:`release` when
            it closes), else ``"total"`` or ``"host"``: the cap it hit.
        """
        if self.open >= self.max_connections:
            return "total"
        if key is not None:
            count = self._hosts.get(key, 0)
            if self.max_per_host and count >= self.max_per_host:
                return "host"
            self._hosts[key] = count + 1
        self.open += 1
        return None

    def release(self, key: str | None) -> None:
        """An admitted connection under ``key`` closed."""
        self.open = max(0, self.open - 1)
        if key is None:
            return
        count = self._hosts.get(key, 0) - 1
        if count > 0:
            self._hosts[key] = count
        else:
            self._hosts.pop(key, None)

    def check(self, address: object, now: float) -> tuple[str | None, str | None]:
        """
        Admit a connection from ``address`` (see :meth:`admit`), or log
        its refusal: the first at once, then at most one line every
        :data:`REFUSAL_LOG_INTERVAL` seconds, with the number refused
        since the previous line.

        :return: its :func:`host_key`, and ``None`` when it was admitted,
            else the message to refuse it with.
        """
        key = host_key(address)
        why = self.admit(key)
        if why is None:
            return key, None
        message = self.refusal(why, key)
        self.refused += 1
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_INTERVAL:
            self._logged_at = now
            count, self._unlogged = self._unlogged, 0
            self._log.warn(
                "Refused a connection from {peer}: {reason} "
                "({refused} refused since the last such line)",
                peer=key if key is not None else str(address),
                reason=message,
                refused=count,
            )
        return key, message

    def refusal(self, why: str, key: str | None) -> str:
        """A one-line message for a connection refused for ``why``."""
        if why == "host":
            return (
                f"too many connections from {key} (at most {self.max_per_host} at once); "
                f"try again in {BUSY_RETRY} s"
            )
        return (
            f"the server has too many connections ({self.max_connections}); "
            f"try again in {BUSY_RETRY} s"
        )


class Refusal(Protocol):
    """
    A refused connection: it writes ``answer`` (a HALP/1 ``error busy``
    line, or an HTTP 503 response), closes at once, and reads nothing.

    The answer goes into the new socket's empty send buffer, so the
    descriptor is released at once: the kernel delivers the answer and the
    FIN on its own.  Should the write not complete (it cannot, short of a
    broken transport), the connection is aborted after ``abort_timeout``.
    A client whose request had already arrived may see a reset after the
    answer (the server did not read the request); on Linux it still reads
    the answer first.

    :ivar transport: a TCP-like transport (``abortConnection``).
    """

    transport: Any

    def __init__(self, answer: bytes, clock: IReactorTime, abort_timeout: float) -> None:
        self.answer = answer
        self.clock = clock
        self.abort_timeout = abort_timeout
        self._abort_call: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.answer)
        self.transport.loseConnection()
        self._abort_call = self.clock.callLater(self.abort_timeout, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        pass  # the connection is closing; a request sent anyway is ignored

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
