# -*- test-case-name: halp.test.test_client_service -*-
"""
:class:`HALPClientService`: keeps a program's labels fresh and its own
entries announced, for as long as the program runs.

The refresh rhythm follows libhalp and GNUnet's hostlist client: each
followed label is looked up every 200 to 300 seconds at random (libhalp's
updater) while the program has few peers; once it reports at least
``min_connections`` connections, or when no server answers, the interval
doubles at each round, up to the number of connections times one hour
(GNUnet: ``(1 + connections)`` hours).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from halp.client.client import AnnounceResult, HALPClient, PeerList
from halp.model import check_host, check_label, check_port

__all__ = ["HALPClientService", "RefreshSchedule"]

HOUR = 3600.0


class RefreshSchedule:
    """
    When to look a label up next.

    :param low: the shortest base interval (libhalp: 200 s).
    :param high: the longest base interval (libhalp: 300 s).
    :param min_connections: below this many connections the program needs
        peers, and refreshes at the base interval (GNUnet: 4).
    """

    def __init__(
        self,
        low: float = 200.0,
        high: float = 300.0,
        min_connections: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < low <= high:
            raise ValueError("need 0 < low <= high")
        self.low = low
        self.high = high
        self.min_connections = min_connections
        self._rng = rng if rng is not None else random.Random()
        #: How many times in a row the interval was doubled.
        self.doublings = 0

    def reset(self) -> None:
        """Back to the base interval (the program is short of peers again)."""
        self.doublings = 0

    def next_delay(self, answered: bool, connections: int) -> float:
        """
        The delay before the next refresh, after one that ``answered`` (some
        server answered) while the program had ``connections`` peers.
        """
        if answered and connections < self.min_connections:
            self.doublings = 0
        else:
            self.doublings = min(self.doublings + 1, 32)
        base = self._rng.uniform(self.low, self.high)
        cap = max(1, connections) * HOUR
        return min(base * 2.0**self.doublings, max(cap, self.high))


@dataclass
class _Followed:
    label: str
    limit: int
    on_peers: Callable[[PeerList], object] | None
    schedule: RefreshSchedule
    call: IDelayedCall | None = None
    running: Deferred[Any] | None = None


@dataclass
class _Announced:
    label: str
    host: str
    port: int
    call: IDelayedCall | None = None
    running: Deferred[Any] | None = None
    failures: int = 0
    last: AnnounceResult | None = field(default=None, repr=False)


class HALPClientService(Service):
    """
    Runs a :class:`~halp.client.HALPClient` in the background.

    :param client: the client to use; the service does not close it.
    :param refresh: the base refresh interval range, in seconds.
    :param min_connections: see :class:`RefreshSchedule`.
    :param announce_interval: seconds between announcements of the
        program's own entries (jittered by up to a tenth); keep it well
        below the servers' ``ttl`` (one day by default).
    :param retry: the first delay before retrying an announcement no
        server stored; it doubles up to ``announce_interval``.
    """

    _log = Logger()

    def __init__(
        self,
        client: HALPClient,
        *,
        refresh: tuple[float, float] = (200.0, 300.0),
        min_connections: int = 4,
        announce_interval: float = HOUR,
        retry: float = 60.0,
        clock: IReactorTime | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.clock: IReactorTime = clock if clock is not None else client.reactor
        self.refresh = refresh
        self.min_connections = min_connections
        self.announce_interval = announce_interval
        self.retry = retry
        self._rng = rng if rng is not None else random.Random()
        self.connections = 0
        self._followed: dict[str, _Followed] = {}
        self._announced: dict[tuple[str, str, int], _Announced] = {}

    # -- what to do ----------------------------------------------------------

    def follow(
        self,
        label: str,
        limit: int = 10,
        on_peers: Callable[[PeerList], object] | None = None,
    ) -> None:
        """
        Keep ``label`` fresh; ``on_peers`` is called with the
        :class:`~halp.client.PeerList` of every refresh.  While the service
        runs, the first refresh starts at once.
        """
        check_label(label)
        low, high = self.refresh
        followed = _Followed(
            label, limit, on_peers, RefreshSchedule(low, high, self.min_connections, self._rng)
        )
        self.unfollow(label)
        self._followed[label] = followed
        if self.running:
            self._schedule_refresh(followed, 0)

    def unfollow(self, label: str) -> None:
        """Stop refreshing ``label``."""
        followed = self._followed.pop(label, None)
        if followed is not None and followed.call is not None and followed.call.active():
            followed.call.cancel()

    def announce_self(self, label: str, host: str, port: int) -> None:
        """
        Announce ``host port`` under ``label`` now (if running) and every
        :attr:`announce_interval` seconds, retrying sooner when no server
        stored it.
        """
        check_label(label)
        key = (label, check_host(host), check_port(str(port)))
        if key in self._announced:
            return
        announced = self._announced[key] = _Announced(*key)
        if self.running:
            self._schedule_announce(announced, 0)

    def withdraw(self, label: str, host: str, port: int) -> None:
        """Stop announcing ``host port`` under ``label``."""
        announced = self._announced.pop((label, check_host(host), port), None)
        if announced is not None and announced.call is not None and announced.call.active():
            announced.call.cancel()

    def set_connections(self, count: int) -> None:
        """
        Tell the service how many peers the program is connected to.  When
        it drops below ``min_connections``, labels are refreshed at the
        base interval again, starting within one base interval.
        """
        was_short = self.connections < self.min_connections
        self.connections = max(0, count)
        if self.connections < self.min_connections and not was_short:
            for followed in self._followed.values():
                followed.schedule.reset()
                call = followed.call
                if call is not None and call.active():
                    soon = self._rng.uniform(*self.refresh)
                    if call.getTime() - self.clock.seconds() > soon:
                        call.reset(soon)

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for followed in self._followed.values():
            self._schedule_refresh(followed, 0)
        for announced in self._announced.values():
            self._schedule_announce(announced, 0)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        running: list[Deferred[None]] = []
        jobs: list[_Followed | _Announced] = [*self._followed.values(), *self._announced.values()]
        for job in jobs:
            if job.call is not None and job.call.active():
                job.call.cancel()
            job.call = None
            if job.running is not None:
                running.append(job.running)
        if not running:
            return succeed(None)
        return DeferredList(running, consumeErrors=True).addCallback(lambda _: None)

    # -- refreshing ----------------------------------------------------------

    def _schedule_refresh(self, followed: _Followed, delay: float) -> None:
        if followed.call is not None and followed.call.active():
            followed.call.cancel()
        followed.call = self.clock.callLater(delay, self._refresh, followed)

    def _refresh(self, followed: _Followed) -> None:
        followed.call = None
        if followed.running is not None:
            return
        d = self.client.lookup(followed.label, followed.limit)

        def done(result: PeerList | Failure) -> None:
            followed.running = None
            answered = not isinstance(result, Failure) and not result.from_cache
            if isinstance(result, Failure):
                self._log.failure("Refreshing {label} failed", result, label=followed.label)
            elif followed.on_peers is not None and self._followed.get(followed.label) is followed:
                try:
                    followed.on_peers(result)
                except Exception:
                    self._log.failure("on_peers for {label} failed", label=followed.label)
            if self.running and self._followed.get(followed.label) is followed:
                delay = followed.schedule.next_delay(answered, self.connections)
                self._schedule_refresh(followed, delay)

        # Set before adding done(), which clears it: a lookup that finishes
        # at once (every server refused at once) must not stay "running".
        followed.running = d
        d.addBoth(done)

    # -- announcing ----------------------------------------------------------

    def _schedule_announce(self, announced: _Announced, delay: float) -> None:
        if announced.call is not None and announced.call.active():
            announced.call.cancel()
        announced.call = self.clock.callLater(delay, self._announce, announced)

    def _announce(self, announced: _Announced) -> None:
        announced.call = None
        if announced.running is not None:
            return
        d = self.client.announce(announced.label, announced.host, announced.port)

        def done(result: AnnounceResult | Failure) -> None:
            announced.running = None
            if isinstance(result, Failure):
                self._log.failure("Announcing {label} failed", result, label=announced.label)
                stored = False
            else:
                announced.last = result
                stored = result.stored > 0
            if stored:
                announced.failures = 0
                delay = self.announce_interval * self._rng.uniform(0.9, 1.0)
            else:
                announced.failures += 1
                delay = min(self.retry * 2.0 ** (announced.failures - 1), self.announce_interval)
                self._log.warn(
                    "No HALP server stored {label} {host} {port}; retrying in {delay:.0f} s",
                    label=announced.label,
                    host=announced.host,
                    port=announced.port,
                    delay=delay,
                )
            key = (announced.label, announced.host, announced.port)
            if self.running and self._announced.get(key) is announced:
                self._schedule_announce(announced, delay)

        announced.running = d  # before done(), which clears it; see _refresh
        d.addBoth(done)
