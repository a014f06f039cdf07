# -*- test-case-name: halp.test.test_admission -*-
"""
Confirming entries that name someone else, before serving them.

A HALP server accepts writes from anyone, so an entry whose host is not the
connection that delivered it is a claim about a third party: served as it
is, it would turn HALP into a reflector (every client told to connect to a
victim, as BitTorrent trackers and Gnutella caches were used).  The
:class:`Verifier` holds such claims until this server has reached the
host itself, through an :class:`~halp.interfaces.IProber`: a TCP connect,
or a HALP ``hello`` for the ``halp`` labels.  Probes are rate-limited per
host, so that no pattern of inserts makes the server send more than one
probe to a host per :attr:`Verifier.host_interval`.

:class:`TCPProber` is the prober ``twistd halp`` uses; tests and the
simulator pass their own.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from halp.error import HALPError, ProtocolError
from halp.interfaces import IProber
from halp.model import Entry, address_group, check_host, check_routable, network_key
from halp.stats import Stats

__all__ = ["Claim", "ProbeFailed", "TCPProber", "Verifier"]

#: Seconds a confirmation lets later claims about the same ``host port``
#: in without a new probe.
CONFIRM_TTL = 1800.0
#: Seconds between two probes of one host, whatever its port.
HOST_INTERVAL = 60.0
#: Seconds a failed probe is remembered: claims about it are refused at
#: once meanwhile.
FAILURE_TTL = 600.0
#: Seconds a claim may wait for its probe before it is dropped.
PENDING_TTL = 600.0
#: Hosts with claims waiting, at most.
MAX_PENDING = 10_000
#: One source group may hold at most this fraction (1/n) of the waiting
#: hosts.
PENDING_GROUP_SHARE = 64
#: Probes under way at once.
CONCURRENCY = 16
#: Seconds a probe may take.
PROBE_TIMEOUT = 5.0
#: Confirmations and failures remembered, at most (the oldest go first).
MAX_REMEMBERED = 100_000
#: Ports of one host that may wait at once.
MAX_PORTS_PER_HOST = 4
#: Labels one waiting ``host port`` may be claimed for.
MAX_LABELS_PER_TARGET = 16


def host_key(host: str) -> str:
    """
    What the per-host probe slot counts against (see
    :func:`~halp.model.network_key`): an IPv4 address in any of its
    spellings, or an IPv6 /64.
    """
    return network_key(host, 64)


class ProbeFailed(HALPError):
    """A probe did not reach the host, or reached something that is not HALP/1."""


@dataclass(frozen=True, slots=True)
class Claim:
    """
    An entry waiting for its host to be confirmed.

    :ivar label: the label it goes in.
    :ivar entry: the entry as offered (its time clamped).
    :ivar source: who inserted it, as a change's source.
    :ivar via: the server it came through, as a change's via.
    :ivar relay: whether federation forwards it once stored (inserts and
        pushes yes, pulled changes no).
    """

    label: str
    entry: Entry
    source: str = ""
    via: str = ""
    relay: bool = True


#: A waiting target: ``(host, port, halp)``, where ``halp`` says that it
#: is confirmed by a HALP ``hello`` rather than a connection.
_Key = tuple[str, int, bool]


@dataclass(slots=True)
class _Target:
    host: str
    port: int
    halp: bool
    queued: float
    group: str
    slot: str
    claims: dict[str, Claim] = field(default_factory=dict)


class Verifier:
    """
    Holds claims about third parties until a probe confirms them.

    :param prober: sends the probes.
    :param clock: for time and timers.
    :param confirmed: called with the claims of a host that answered and
        the time it did; the caller stores them.
    :param failed: called with the claims dropped (unreachable host,
        expired wait) and why; for statistics.
    """

    _log = Logger()

    def __init__(
        self,
        prober: IProber,
        clock: IReactorTime,
        confirmed: Callable[[list[Claim], float], object],
        failed: Callable[[list[Claim], str], object] = lambda claims, why: None,
        *,
        confirm_ttl: float = CONFIRM_TTL,
        host_interval: float = HOST_INTERVAL,
        failure_ttl: float = FAILURE_TTL,
        pending_ttl: float = PENDING_TTL,
        max_pending: int = MAX_PENDING,
        group_share: int = PENDING_GROUP_SHARE,
        concurrency: int = CONCURRENCY,
        max_remembered: int = MAX_REMEMBERED,
        stats: Stats | None = None,
    ) -> None:
        self.prober = prober
        self.clock = clock
        self._on_confirmed = confirmed
        self._on_failed = failed
        self.confirm_ttl = confirm_ttl
        self.host_interval = host_interval
        self.failure_ttl = failure_ttl
        self.pending_ttl = pending_ttl
        self.max_pending = max_pending
        self.max_per_group = max(1, max_pending // group_share) if group_share else max_pending
        self.concurrency = concurrency
        self.max_remembered = max_remembered
        self._confirmed: OrderedDict[_Key, float] = OrderedDict()
        self._failures: OrderedDict[_Key, tuple[float, str]] = OrderedDict()
        self._next_probe: dict[str, float] = {}
        self._targets: dict[_Key, _Target] = {}
        self._groups: dict[str, int] = {}
        self._ports: dict[str, int] = {}
        self._queue: list[tuple[float, int, _Key]] = []
        self._seq = 0
        self._probing: dict[_Key, Deferred[None]] = {}
        self._timer: IDelayedCall | None = None
        self._stopped = False
        self._running = False
        self._again = False
        #: Where probes, by result, and claims, by fate, are counted
        #: (``verify-*`` counters).
        self.stats = stats if stats is not None else Stats()
        #: Probes sent to each host, for tests: never more than one per
        #: ``host_interval``.
        self.probe_log: list[tuple[float, str, int]] = []
        self.keep_probe_log = False

    def _count(self, name: str, n: int) -> None:
        self.stats.increment("verify-" + name, n)

    # -- what is known ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """Hosts (``host port`` pairs) with claims waiting for a probe."""
        return len(self._targets)

    def confirmed_at(self, host: str, port: int, halp: bool = False) -> float | None:
        """
        When ``host port`` was last confirmed (by a ``hello`` if ``halp``),
        if within :attr:`confirm_ttl`.
        """
        when = self._confirmed.get((host, port, halp))
        if when is None or self.clock.seconds() - when > self.confirm_ttl:
            return None
        return when

    def failure(self, host: str, port: int, halp: bool = False) -> str | None:
        """Why the last probe of ``host port`` failed, if within :attr:`failure_ttl`."""
        failed = self._failures.get((host, port, halp))
        if failed is None or self.clock.seconds() - failed[0] > self.failure_ttl:
            return None
        return failed[1]

    def confirm(self, host: str, port: int, halp: bool, when: float) -> None:
        """
        Record that ``host port`` is known to work at ``when`` (a
        self-insert; ``halp`` for one in the ``halp`` label).
        """
        key = (host, port, halp)
        self._confirmed[key] = max(when, self._confirmed.get(key, when))
        self._confirmed.move_to_end(key)
        self._failures.pop(key, None)
        while len(self._confirmed) > self.max_remembered:
            self._confirmed.popitem(last=False)

    # -- claims ----------------------------------------------------------------

    def submit(self, claim: Claim, source: str) -> str | None:
        """
        Hold ``claim`` until its host is probed.

        :param source: the address the claim came from, whose group's share
            of the queue it counts against.
        :return: ``None`` when it waits, else why it was refused (the
            queue, or this source group's share of it, is full).
        """
        entry = claim.entry
        halp = claim.label == "halp"
        key = (entry.host, entry.port, halp)
        target = self._targets.get(key)
        if target is not None:
            old = target.claims.get(claim.label)
            if old is None and len(target.claims) >= MAX_LABELS_PER_TARGET:
                self._count("claims-refused-busy", 1)
                return f"busy: {MAX_LABELS_PER_TARGET} labels already wait for this host"
            if old is not None:
                # The first provenance stays; a claim to relay stays one.
                claim = Claim(old.label, old.entry, old.source, old.via, old.relay or claim.relay)
            target.claims[claim.label] = claim
            self._count("claims-queued", 1)
            return None
        group = address_group(source)
        slot = host_key(entry.host)
        if self._ports.get(slot, 0) >= MAX_PORTS_PER_HOST:
            self._count("claims-refused-busy", 1)
            return f"busy: {MAX_PORTS_PER_HOST} ports of this host already wait for verification"
        if len(self._targets) >= self.max_pending:
            self._count("claims-refused-busy", 1)
            return f"busy: {self.max_pending} hosts already wait for verification"
        if self._groups.get(group, 0) >= self.max_per_group:
            self._count("claims-refused-busy", 1)
            return (
                f"busy: {self.max_per_group} hosts from your network already wait "
                "for verification"
            )
        now = self.clock.seconds()
        target = _Target(entry.host, entry.port, halp, now, group, slot, {claim.label: claim})
        self._targets[key] = target
        self._groups[group] = self._groups.get(group, 0) + 1
        self._ports[slot] = self._ports.get(slot, 0) + 1
        self._count("claims-queued", 1)
        self._push(key, max(now, self._next_probe.get(slot, now)))
        self._run()
        return None

    def _push(self, key: _Key, when: float) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, key))

    def _release(self, key: _Key) -> _Target | None:
        target = self._targets.pop(key, None)
        if target is not None:
            for counts, name in ((self._groups, target.group), (self._ports, target.slot)):
                left = counts.get(name, 0) - 1
                if left > 0:
                    counts[name] = left
                else:
                    counts.pop(name, None)
        return target

    def _run(self) -> None:
        """Start the probes that may start now; set a timer for the next."""
        if self._stopped:
            return
        if self._running:
            # A probe answered at once, from inside this loop.
            self._again = True
            return
        self._running = True
        try:
            self._again = True
            while self._again and not self._stopped:
                self._again = False
                self._start_due()
        finally:
            self._running = False

    def _start_due(self) -> None:
        now = self.clock.seconds()
        while self._queue and len(self._probing) < self.concurrency:
            when, _, key = self._queue[0]
            if when > now:
                break
            heapq.heappop(self._queue)
            target = self._targets.get(key)
            if target is None or key in self._probing:
                continue
            if now - target.queued > self.pending_ttl:
                self._release(key)
                self._drop(target, "expired: waited too long for verification")
                self._count("claims-expired", len(target.claims))
                continue
            allowed = self._next_probe.get(target.slot, now)
            if allowed > now:
                self._push(key, allowed)
                continue
            self._probe(key, target, now)
        self._set_timer(now)

    def _set_timer(self, now: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._queue and len(self._probing) < self.concurrency:
            delay = max(0.0, self._queue[0][0] - now)
            self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._run()

    def _probe(self, key: _Key, target: _Target, now: float) -> None:
        self._next_probe[target.slot] = now + self.host_interval
        if len(self._next_probe) > self.max_remembered:
            for host in [h for h, t in self._next_probe.items() if t <= now]:
                del self._next_probe[host]
        self._count("probes-sent", 1)
        if self.keep_probe_log:
            self.probe_log.append((now, target.host, target.port))
        d = self.prober.probe(target.host, target.port, target.halp)
        self._probing[key] = d
        d.addCallbacks(self._reached, self._missed, callbackArgs=(key,), errbackArgs=(key,))
        d.addErrback(lambda f: self._log.failure("Verifying a claim failed", f))

    def _reached(self, _: object, key: _Key) -> None:
        self._probing.pop(key, None)
        target = self._release(key)
        now = self.clock.seconds()
        self._count("probes-ok", 1)
        self.confirm(key[0], key[1], key[2], now)
        if target is not None and not self._stopped:
            self._count("claims-confirmed", len(target.claims))
            self._on_confirmed(list(target.claims.values()), now)
        self._run()

    def _missed(self, failure: Failure, key: _Key) -> None:
        self._probing.pop(key, None)
        target = self._release(key)
        self._count("probes-failed", 1)
        if failure.check(ProbeFailed):
            why = str(failure.value)
        else:
            why = failure.getErrorMessage() or repr(failure.value)
        self._failures[key] = (self.clock.seconds(), why)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_remembered:
            self._failures.popitem(last=False)
        if target is not None and not self._stopped:
            self._count("claims-unreachable", len(target.claims))
            self._drop(target, f"unreachable: {why}")
        self._run()

    def _drop(self, target: _Target, why: str) -> None:
        self._on_failed(list(target.claims.values()), why)

    def stop(self) -> None:
        """Send no more probes; forget what waits."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for d in list(self._probing.values()):
            d.cancel()
        self._probing.clear()
        self._targets.clear()
        self._groups.clear()
        self._ports.clear()
        self._queue.clear()


# -- the real prober -----------------------------------------------------------


class _Hello(Protocol):
    """Connects; for a HALP server, asks ``hello`` and checks the answer."""

    def __init__(self, halp: bool, done: Deferred[None]) -> None:
        self.halp = halp
        self.done = done
        self._data = b""

    def connectionMade(self) -> None:
        if not self.halp:
            self._finish(None)
            return
        self.transport.write(b"hello\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if len(self._data) > 16384:
            self._finish(ProbeFailed("answered hello with too much"))
            return
        for line in self._data.split(b"\n")[:-1]:
            if line.startswith(b"ok"):
                if b"\nprotocol HALP/1\n" in b"\n" + self._data:
                    self._finish(None)
                else:
                    self._finish(ProbeFailed("not a HALP/1 server"))
                return
            if line.startswith(b"error"):
                self._finish(ProbeFailed("not a HALP/1 server"))
                return

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self._finish(ProbeFailed("closed before answering hello"))

    def _finish(self, error: Exception | None) -> None:
        if self.transport is not None and self.connected:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        if self.done.called:
            return
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(Failure(error))


@implementer(IProber)
class TCPProber:
    """
    Probes with a TCP connection from ``reactor``: connected means
    confirmed, except that a host claimed to be a HALP server must answer
    ``hello`` as one.  Only IP addresses are probed (a verifying server
    refuses names, which could be pointed elsewhere once checked), and only
    globally routable ones unless ``allow_private``.

    :param clock: for the timeout (default: ``reactor``), which runs from
        the start of the probe.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        timeout: float = PROBE_TIMEOUT,
        allow_private: bool = False,
        clock: IReactorTime | None = None,
    ) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.timeout = timeout
        self.allow_private = allow_private

    def probe(self, host: str, port: int, halp: bool) -> Deferred[None]:
        try:
            address = check_host(host)
            if ":" not in address and not address.replace(".", "").isdigit():
                raise ProbeFailed(f"{host} is a name, not an address")
            check_routable(address, self.allow_private)
        except ProtocolError as e:
            return fail(ProbeFailed(e.message))
        except ProbeFailed:
            return fail()
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint = endpoint_type(self.reactor, address, port, timeout=self.timeout)
        protocol: _Hello

        def cancel(_: Deferred[None]) -> None:
            protocol._finish(ProbeFailed("cancelled"))
            if not connecting.called:
                connecting.cancel()

        done: Deferred[None] = Deferred(cancel)
        protocol = _Hello(halp, done)
        connecting = connectProtocol(endpoint, protocol)
        timer = self.clock.callLater(self.timeout, self._expire, connecting, protocol)

        def refused(failure: Failure) -> None:
            if not done.called:
                done.errback(Failure(ProbeFailed(f"cannot connect: {failure.getErrorMessage().rstrip('.')}")))

        connecting.addErrback(refused)

        def finished(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(finished)

    @staticmethod
    def _expire(connecting: Deferred[Protocol], protocol: _Hello) -> None:
        protocol._finish(ProbeFailed("no answer in time"))
        if not connecting.called:
            connecting.cancel()
