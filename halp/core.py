# -*- test-case-name: halp.test.test_core -*-
"""
The HALP core: the one object that holds the rules.

Every front end (the HALP/1 line protocol, and later HTTP) turns requests
into calls on :class:`HALPCore`; the core validates what the grammar cannot,
applies the server's limits, clamps times, decides what has expired and asks
the store.  It never touches a transport and reads the time only from the
clock it was given.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, Sequence, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from halp import __version__
from halp.error import ErrorCode, ProtocolError, StoreError
from halp.interfaces import IConnectedStore, IHostStore
from halp.model import (
    Change,
    ChangePage,
    Entry,
    LabelInfo,
    Limits,
    Merged,
    RejectedEntry,
    Window,
)
from halp.ratelimit import KeyedLimiter
from halp.stats import Stats, Traffic

__all__ = ["HALPCore", "Page", "Refused", "Replicated", "Stored", "PROTOCOL_VERSION"]

#: The protocol this core speaks, as announced by ``hello``.
PROTOCOL_VERSION = "HALP/1"

#: The optional requests this server answers, as ``hello`` lists them.
FEATURES = ("changes", "push", "stats", "peers")

#: Seconds ahead of this server's clock that a replicated entry's time may
#: be: peers' clocks differ a little, and clamping every copy to its own
#: "now" would make copies that arrive by different paths look newer than
#: each other, and be forwarded again.
REPLICATION_SKEW = 300

#: Entries per second one peer address may push, on average, and in a
#: burst.  A peer that pushes more is answered ``error busy``.
PUSH_RATE = 200.0
PUSH_BURST = 10_000.0

#: Seconds between two log lines about requests the store failed.
STORE_FAILURE_LOG_INTERVAL = 10.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """
    One window of a newest-first list.

    :ivar items: the entries or label rows, newest first.
    :ivar capped: whether the window asked for was wider than
        :attr:`~halp.model.Limits.max_slice` and was cut to it.
    """

    items: list[T]
    capped: bool


@dataclass(frozen=True, slots=True)
class Stored:
    """An entry now in ``label``, with its stored confirmed time."""

    label: str
    entry: Entry


@dataclass(frozen=True, slots=True)
class Refused:
    """
    An entry that was not stored in ``label``, with the reason.  ``label``
    is ``""`` for a replicated line that could not be parsed; ``raw`` is
    then the whole line.
    """

    label: str
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A peer server as ``peers`` lists it."""

    address: str
    #: ``trusted`` (used for replication), ``untested`` (learned, not
    #: tested yet), ``backoff`` (failing, tried again later) or ``banned``
    #: (answered with something that is not HALP/1).
    state: str
    quality: int
    pinned: bool


class PeerSource(Protocol):
    """What knows this server's peers: the federation, when it runs."""

    def peers(self) -> list[PeerStatus]:
        """The peer servers, best first."""
        ...

    def is_peer(self, host: str) -> bool:
        """Whether a connection from ``host`` comes from a peer server."""
        ...


@dataclass(frozen=True, slots=True)
class Replicated:
    """What merging replicated entries (a push, or a pulled page) did."""

    changed: int
    unchanged: int
    refused: list[Refused]


def _raw(entry: Entry) -> str:
    return f"{entry.timestamp} {entry.host} {entry.port}"


class HALPCore:
    """
    The rules of a HALP server over one store.

    :param store: where entries live.
    :param clock: the source of "now" (the reactor, or a
        :class:`~twisted.internet.task.Clock` in tests).
    :param limits: the server's limits.
    """

    _log = Logger()

    def __init__(
        self,
        store: IHostStore,
        clock: IReactorTime,
        limits: Limits = Limits(),
        *,
        node_id: str | None = None,
        push_rate: float = PUSH_RATE,
        push_burst: float = PUSH_BURST,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self._node_id = node_id if node_id is not None else secrets.token_hex(8)
        self.stats = Stats()
        #: What the front ends answered, for metrics and the status page.
        self.traffic = Traffic()
        #: The base URLs of this server's HTTP face that others may use
        #: (``http://HOST:PORT/``), announced by ``hello``; set by the
        #: service that serves it.
        self.http_urls: list[str] = []
        self.started = self.now()
        self._store_failures = 0
        self._store_failure_logged: float | None = None
        self._observers: list[Callable[[list[Change], bool], None]] = []
        #: Set by :class:`~halp.federation.Federation` to list its peers.
        self.peer_source: PeerSource | None = None
        self._push_limiter: KeyedLimiter[str] = KeyedLimiter(
            push_rate, max(push_burst, limits.max_gossip_entries)
        )

    def now(self) -> int:
        """The current time in whole POSIX seconds."""
        return int(self.clock.seconds())

    def oldest_served(self) -> int:
        """Entries confirmed before this time have expired."""
        return self.now() - self.limits.ttl

    def bounds(self, window: Window | None) -> tuple[int, int, bool]:
        """
        Turn a requested window into ``(start, stop, capped)``: no window
        means the default first slice; an open end means as many as allowed;
        a window wider than the maximum slice is cut to it.
        """
        if window is None:
            return 0, self.limits.default_slice, False
        start = window.start
        widest = start + self.limits.max_slice
        if window.stop is None:
            return start, widest, False
        if window.stop > widest:
            return start, widest, True
        return start, window.stop, False

    def get(self, label: str, window: Window | None = None) -> Deferred[Page[Entry]]:
        """
        The entries of ``label`` in ``window``, newest first, leaving out
        expired ones.  ``label`` must be valid.
        """
        start, stop, capped = self.bounds(window)
        d = self.store.get(label, start, stop, self.oldest_served())
        return d.addCallback(lambda items: Page(items, capped))

    def list_labels(
        self, parent: str, window: Window | None = None
    ) -> Deferred[Page[LabelInfo]]:
        """
        The sublabels of ``parent`` (``""``: the top-level labels) in
        ``window``, newest activity first, leaving out expired ones.
        """
        start, stop, capped = self.bounds(window)
        d = self.store.list_labels(parent, start, stop, self.oldest_served())
        return d.addCallback(lambda items: Page(items, capped))

    def watch(self, observer: Callable[[list[Change], bool], None]) -> None:
        """
        Call ``observer(changes, relay)`` after every merge that changed the
        store, with the changes that did: ``relay`` is true for client
        inserts and pushes from peers, which federation forwards, and false
        for pulled changes, which it does not (``docs/federation.rst``).
        """
        self._observers.append(observer)

    def _notify(self, changes: list[Change], relay: bool) -> None:
        if not changes:
            return
        for observer in self._observers:
            try:
                observer(changes, relay)
            except Exception:
                self._log.failure("A change observer failed")

    def _admit(self, entry: Entry, now: int, ahead: int = 0) -> Entry | str:
        """
        The entry with its time clamped to ``now + ahead``, or why it is
        refused.
        """
        if entry.timestamp < now - self.limits.ttl:
            return f"expired: confirmed more than {self.limits.ttl} s ago"
        if entry.timestamp > now + ahead:
            return Entry(now + ahead, entry.host, entry.port)
        return entry

    def insert(
        self,
        labels: Sequence[str],
        candidates: Sequence[Entry | RejectedEntry],
        source: str = "",
    ) -> Deferred[list[Stored | Refused]]:
        """
        Merge entries into labels: a client's ``insert``.

        A time in the future is stored as "now"; an entry that expired
        already is refused, as is one that the label's cap evicts at once.
        Entries the codec could not parse come in as :class:`~halp.model.RejectedEntry`
        and are refused with their reason, so that the answer accounts for
        every line offered.

        :param labels: valid labels, without duplicates.
        :param source: the address of the client that inserts.
        :return: a Deferred firing with one outcome per label per
            candidate, labels outermost, both in the order given.
        """
        now = self.now()
        refused: dict[int, tuple[str, str]] = {}
        accepted: list[Entry] = []
        positions: list[int] = []
        for i, candidate in enumerate(candidates):
            if isinstance(candidate, RejectedEntry):
                refused[i] = (candidate.raw, candidate.reason)
                continue
            admitted = self._admit(candidate, now)
            if isinstance(admitted, str):
                refused[i] = (_raw(candidate), admitted)
            else:
                accepted.append(admitted)
                positions.append(i)
        changes = [Change(label, entry, source) for label in labels for entry in accepted]
        d = self.store.merge(changes, self.limits.max_entries) if changes else succeed([])

        def outcomes(merged: list[Merged]) -> list[Stored | Refused]:
            self._notify([c for c, m in zip(changes, merged) if m.changed], True)
            self.stats.increment("entries-inserted", sum(m.changed for m in merged))
            result: list[Stored | Refused] = []
            n = len(accepted)
            for k, label in enumerate(labels):
                when = dict(zip(positions, merged[k * n : (k + 1) * n]))
                for i, candidate in enumerate(candidates):
                    if i in refused:
                        result.append(Refused(label, *refused[i]))
                        continue
                    assert isinstance(candidate, Entry)
                    t = when[i].stored
                    if t is None:
                        result.append(Refused(label, _raw(candidate), self._evicted()))
                    else:
                        result.append(Stored(label, Entry(t, candidate.host, candidate.port)))
            return result

        return d.addCallback(outcomes)

    def _evicted(self) -> str:
        return f"evicted: the label keeps its {self.limits.max_entries} newest entries"

    # -- federation ----------------------------------------------------------

    def push(
        self, candidates: Sequence[Change | RejectedEntry], via: str, peer: str
    ) -> Deferred[Replicated]:
        """
        Merge what a peer pushed: a ``push`` request.

        Only a known peer server (see :class:`PeerSource`) is believed about
        where entries come from; a push from anyone else is merged as that
        client's own insert: its address becomes the source and the via of
        every line.

        :param via: the server the entries come from, as it named itself,
            or else its address.
        :param peer: the network address of the connection, which the
            throttle counts against.
        :raises ProtocolError: ``busy`` when ``peer`` pushed more entries
            than its token bucket allows; nothing is merged then.
        """
        wait = self._push_limiter.take(peer, max(1, len(candidates)), self.clock.seconds())
        if wait:
            self.stats.increment("push-throttled")
            raise ProtocolError(
                ErrorCode.BUSY,
                f"too many entries pushed; try again in {math.ceil(min(wait, 3600))} s",
            )
        self.stats.increment("push-received")
        if self.peer_source is None or not self.peer_source.is_peer(peer):
            via = peer
            candidates = [
                c if isinstance(c, RejectedEntry) else Change(c.label, c.entry, peer)
                for c in candidates
            ]
        return self._replicate(candidates, via, relay=True, counter="entries-replicated")

    def apply_pulled(self, changes: Sequence[Change], via: str) -> Deferred[Replicated]:
        """Merge changes pulled from the peer ``via`` (a ``changes`` answer)."""
        return self._replicate(changes, via, relay=False, counter="entries-pulled")

    def _replicate(
        self,
        candidates: Sequence[Change | RejectedEntry],
        via: str,
        relay: bool,
        counter: str,
    ) -> Deferred[Replicated]:
        now = self.now()
        refused: list[Refused] = []
        accepted: list[Change] = []
        for candidate in candidates:
            if isinstance(candidate, RejectedEntry):
                refused.append(Refused("", candidate.raw, candidate.reason))
                continue
            admitted = self._admit(candidate.entry, now, REPLICATION_SKEW)
            if isinstance(admitted, str):
                refused.append(Refused(candidate.label, _raw(candidate.entry), admitted))
            else:
                accepted.append(Change(candidate.label, admitted, candidate.source, via))
        d = self.store.merge(accepted, self.limits.max_entries) if accepted else succeed([])

        def done(merged: list[Merged]) -> Replicated:
            changed = [c for c, m in zip(accepted, merged) if m.changed]
            evicted = 0
            for c, m in zip(accepted, merged):
                if m.stored is None:
                    evicted += 1
                    refused.append(Refused(c.label, _raw(c.entry), self._evicted()))
            self._notify(changed, relay)
            self.stats.increment(counter, len(changed))
            self.stats.increment("entries-rejected", len(refused))
            return Replicated(len(changed), len(accepted) - len(changed) - evicted, refused)

        return d.addCallback(done)

    def changes(self, cursor: str, limit: int | None = None) -> Deferred[ChangePage]:
        """
        The change feed after ``cursor``: at most :attr:`~halp.model.Limits.max_gossip_entries`
        (or ``limit``, if smaller) entries, leaving out expired ones.
        """
        widest = self.limits.max_gossip_entries
        limit = widest if limit is None else max(1, min(limit, widest))
        self.stats.increment("changes-served")
        return self.store.changes(cursor, limit, self.oldest_served())

    def hello(self) -> list[tuple[str, object]]:
        """The fields of a ``hello`` answer: protocol, server, time, limits."""
        limits = self.limits
        return [
            ("protocol", PROTOCOL_VERSION),
            ("server", f"halp/{__version__}"),
            ("time", self.now()),
            ("max-line", limits.max_line),
            ("default-slice", limits.default_slice),
            ("max-slice", limits.max_slice),
            ("max-entries", limits.max_entries),
            ("ttl", limits.ttl),
            ("max-insert-labels", limits.max_insert_labels),
            ("max-insert-entries", limits.max_insert_entries),
            ("max-gossip-entries", limits.max_gossip_entries),
            ("node", self.node_id),
            ("features", " ".join(FEATURES)),
            *([("http", " ".join(self.http_urls))] if self.http_urls else []),
        ]

    def peers(self) -> list[PeerStatus]:
        """The peer servers, best first; none when this server does not federate."""
        return self.peer_source.peers() if self.peer_source is not None else []

    def stats_fields(self) -> list[tuple[str, object]]:
        """The fields of a ``stats`` answer: uptime, then every counter."""
        return [("uptime", self.now() - self.started), *self.stats]

    @property
    def node_id(self) -> str:
        """
        This server's name, announced by ``hello``, so that federation
        recognises itself under another address: random for each process,
        unless the store is shared by several processes (Redis), which are
        then one server with the store's name for it.
        """
        connected = IConnectedStore(self.store, None)
        if connected is not None and connected.shared_node is not None:
            return str(connected.shared_node)
        return self._node_id

    def store_failed(self, request: str, error: StoreError) -> None:
        """
        Log that the store failed a request: the first failure at once,
        then at most one line per :data:`STORE_FAILURE_LOG_INTERVAL` seconds
        with the number of failures it stands for, so that an outage of the
        store (Redis down, disk full) does not write one line per request.
        """
        now = self.clock.seconds()
        self._store_failures += 1
        if self._store_failure_logged is not None and (
            now - self._store_failure_logged < STORE_FAILURE_LOG_INTERVAL
        ):
            return
        count, self._store_failures = self._store_failures, 0
        self._store_failure_logged = now
        if count == 1:
            self._log.warn("Store failed answering {request}: {error}", request=request, error=str(error))
        else:
            self._log.warn(
                "Store failed answering {request}: {error} ({count} failed requests"
                " since the last such line)",
                request=request,
                error=str(error),
                count=count,
            )

    def purge(self) -> Deferred[int]:
        """
        Delete what has expired.  Never fails: a store error is logged and
        counts as nothing purged, so that a periodic caller keeps going.
        """
        oldest = self.oldest_served()

        def done(removed: int) -> int:
            if removed:
                self._log.info("Purged {count} expired entries", count=removed)
            return removed

        def failed(failure: Failure) -> int:
            self._log.failure("Purging expired entries failed", failure)
            return 0

        return self.store.purge(oldest).addCallbacks(done, failed)
