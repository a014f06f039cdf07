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
from halp.interfaces import IConnectedStore, IHostStore, IProber
from halp.model import (
    Change,
    ChangePage,
    Entry,
    LabelInfo,
    Limits,
    Merged,
    RejectedEntry,
    Window,
    address_group,
    check_routable,
    network_key,
    parse_host_port,
)
from halp.ratelimit import KeyedLimiter
from halp.stats import Stats, Traffic
from halp.verify import Claim, Verifier

__all__ = [
    "Admission",
    "HALPCore",
    "OPEN",
    "Page",
    "Pending",
    "Refused",
    "Replicated",
    "Stored",
    "PROTOCOL_VERSION",
    "UNKNOWN_SOURCE",
    "VERIFY_POLICIES",
]

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

#: What ``--verify`` accepts: probe every entry that names someone else
#: (``all``), only those in clients' inserts, trusting peer servers
#: (``inserts``), or none.
VERIFY_POLICIES = ("all", "inserts", "none")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Admission:
    """
    What a server lets in from the network (``docs/security.md``).

    The defaults are those of a public server, which ``twistd halp``
    uses; :data:`OPEN` admits everything, for a client's cache and closed
    networks.

    :ivar allow_private: accept hosts that are not globally routable
        (private, loopback, link-local, CGNAT, documentation, reserved);
        multicast, broadcast and unspecified addresses are refused anyway.
    :ivar verify: which entries naming a host other than the connection
        that delivered them wait for this server's own probe before they
        are stored and served: one of :data:`VERIFY_POLICIES`.
    :ivar insert_rate: entries (times labels) per second one source
        address may insert, on average; 0 for no limit.
    :ivar insert_burst: ... and at once.
    :ivar group_share: one source network (IPv4 /16, IPv6 /32) may fill at
        most ``1/group_share`` of a label's cap; 0 for no limit.
    :ivar spread: answer a ``get`` without a window with entries spread
        over networks (at most a quarter from one) rather than strictly the
        newest.
    """

    allow_private: bool = False
    verify: str = "all"
    insert_rate: float = 0.1
    insert_burst: float = 1000.0
    group_share: int = 64
    spread: bool = True

    def __post_init__(self) -> None:
        if self.verify not in VERIFY_POLICIES:
            raise ValueError(f"verify: one of {', '.join(VERIFY_POLICIES)}")


#: Admit everything: no address rules, no verification, no quotas.
OPEN = Admission(
    allow_private=True, verify="none", insert_rate=0, group_share=0, spread=False
)

#: A source network (IPv4 /16, IPv6 /32) may insert this many times as
#: much as one address.
NETWORK_RATE_FACTOR = 16

#: The source of a request whose connection has no IP address (a UNIX
#: socket): verified and rate-limited like any client, as one.
UNKNOWN_SOURCE = "unknown.invalid"

#: At most this fraction of a spread answer comes from one network.
SPREAD_SHARE = 0.25
#: A spread answer is picked from this many times as many newest entries.
SPREAD_POOL = 4


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
class Pending:
    """
    An entry that names a host other than its sender: it waits for this
    server to reach that host, and is stored and served once it has.
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
    #: Entries waiting for this server's own probe of their host.
    pending: int = 0


def _raw(entry: Entry) -> str:
    return f"{entry.timestamp} {entry.host} {entry.port}"


def _is_halp(label: str) -> bool:
    """Whether entries of ``label`` claim HALP/1 servers (confirmed by ``hello``)."""
    return label == "halp"


def _rate_key(source: str) -> str:
    """What the insert rate counts against: an IPv4 address, an IPv6 /64."""
    return network_key(source, 64)


def spread(entries: Sequence[Entry], limit: int) -> list[Entry]:
    """
    Up to ``limit`` of ``entries`` (newest first), with at most a quarter
    (:data:`SPREAD_SHARE`, at least one) from any one network
    (:func:`~halp.model.address_group`), newest first; the newest of the
    rest fill what the networks leave empty.
    """
    share = max(1, int(limit * SPREAD_SHARE))
    used: dict[str, int] = {}
    chosen: list[Entry] = []
    rest: list[Entry] = []
    for entry in entries:
        if len(chosen) == limit:
            break
        group = address_group(entry.host)
        if used.get(group, 0) >= share:
            rest.append(entry)
            continue
        used[group] = used.get(group, 0) + 1
        chosen.append(entry)
    chosen.extend(rest[: limit - len(chosen)])
    chosen.sort(key=lambda e: (-e.timestamp, e.host, e.port))
    return chosen


class HALPCore:
    """
    The rules of a HALP server over one store.

    :param store: where entries live.
    :param clock: the source of "now" (the reactor, or a
        :class:`~twisted.internet.task.Clock` in tests).
    :param limits: the server's limits.
    :param admission: what it lets in; the default, :data:`OPEN`, admits
        everything: a public server passes :class:`Admission` (see
        ``docs/security.md``).
    :param prober: reaches the hosts of entries that wait for
        verification; needed unless ``admission.verify`` is ``none``.
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
        admission: Admission = OPEN,
        prober: IProber | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.admission = admission
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
        self._merge_observers: list[Callable[[set[str]], None]] = []
        #: Set by :class:`~halp.federation.Federation` to list its peers.
        self.peer_source: PeerSource | None = None
        self._push_limiter: KeyedLimiter[str] = KeyedLimiter(
            push_rate, max(push_burst, limits.max_gossip_entries)
        )
        self._insert_limiter: KeyedLimiter[str] | None = None
        self._network_limiter: KeyedLimiter[str] | None = None
        if admission.insert_rate > 0:
            burst = max(1.0, admission.insert_burst)
            self._insert_limiter = KeyedLimiter(admission.insert_rate, burst)
            # Addresses are cheap in one network (an IPv6 /48 holds 65,536
            # /64s), and a forgotten bucket comes back full: each network
            # also has a bucket, NETWORK_RATE_FACTOR times an address's.
            self._network_limiter = KeyedLimiter(
                admission.insert_rate * NETWORK_RATE_FACTOR, burst * NETWORK_RATE_FACTOR
            )
        #: Entries one source network may hold in a label (0: no limit).
        self.group_cap = (
            max(1, limits.max_entries // admission.group_share) if admission.group_share else 0
        )
        self.verifier: Verifier | None = None
        if admission.verify != "none":
            if prober is None:
                raise ValueError(f"verify={admission.verify} needs a prober")
            self.verifier = Verifier(
                prober, clock, self._verified, self._unverified, stats=self.stats
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
        if window is None and self.admission.spread:
            pool = min(stop * SPREAD_POOL, self.limits.max_slice * SPREAD_POOL)
            d = self.store.get(label, 0, pool, self.oldest_served())
            return d.addCallback(lambda items: Page(spread(items, stop), False))
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

    def watch_merges(self, observer: Callable[[set[str]], None]) -> None:
        """
        Call ``observer(labels)`` after every merge the store acknowledged,
        with the labels merged into, whether or not their entries changed:
        a merge whose new entry a quota evicts at once still evicts an
        older entry to make room (:meth:`watch` is told only of changed
        entries).
        """
        self._merge_observers.append(observer)

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
    ) -> Deferred[list[Stored | Refused | Pending]]:
        """
        Merge entries into labels: a client's ``insert``.

        A time in the future is stored as "now"; an entry that expired
        already is refused, as is one that the label's cap evicts at once.
        Entries the codec could not parse come in as :class:`~halp.model.RejectedEntry`
        and are refused with their reason, so that the answer accounts for
        every line offered.  Then the :class:`Admission` rules apply: hosts
        that are not globally routable are refused, a source over its
        insert rate is answered ``busy``, and an entry naming a host other
        than ``source`` waits (:class:`Pending`) until this server has
        reached that host.

        :param labels: valid labels, without duplicates.
        :param source: the address of the client that inserts; ``""`` for
            this server itself (trusted).
        :return: a Deferred firing with one outcome per label per
            candidate, labels outermost, both in the order given.
        :raises ProtocolError: ``busy`` when ``source`` inserted more than
            its rate allows; nothing is merged then.
        """
        self._throttle_insert(source, len(labels) * len(candidates))
        now = self.now()
        # Decisions per kind of label: a "halp" entry is confirmed by a
        # hello, any other by a connection.
        decided: dict[bool, list[Entry | Refused | str]] = {}
        for halp in {_is_halp(label) for label in labels}:
            decided[halp] = [
                Refused("", c.raw, c.reason)
                if isinstance(c, RejectedEntry)
                else self._decide(c, now, 0, source, source, halp)
                for c in candidates
            ]
        accepted = [
            Change(label, d, source)
            for label in labels
            for d in decided[_is_halp(label)]
            if isinstance(d, Entry)
        ]
        merging = self._merge(accepted)

        def outcomes(merged: list[Merged]) -> list[Stored | Refused | Pending]:
            self._notify([c for c, m in zip(accepted, merged) if m.changed], True)
            self.stats.increment("entries-inserted", sum(m.changed for m in merged))
            stored = iter(merged)
            result: list[Stored | Refused | Pending] = []
            for label in labels:
                for candidate, decision in zip(candidates, decided[_is_halp(label)]):
                    if isinstance(decision, Refused):
                        result.append(Refused(label, decision.raw, decision.reason))
                    elif isinstance(decision, str):
                        # Held only once the merge succeeded: a failed insert
                        # leaves nothing behind to be stored later.
                        assert isinstance(candidate, Entry)
                        claim = Claim(label, self._clamp(candidate, now), source, "", True)
                        result.append(self._hold(claim, source))
                    else:
                        t = next(stored).stored
                        if t is None:
                            result.append(Refused(label, _raw(decision), self._evicted()))
                        else:
                            result.append(Stored(label, Entry(t, decision.host, decision.port)))
            return result

        return merging.addCallback(outcomes)

    def _throttle_insert(self, source: str, cost: int) -> None:
        if self._insert_limiter is None or self._network_limiter is None or not source:
            return
        now = self.clock.seconds()
        wait = self._insert_limiter.take(_rate_key(source), max(1, cost), now)
        if not wait:
            wait = self._network_limiter.take(address_group(source), max(1, cost), now)
        if wait:
            self.stats.increment("inserts-throttled")
            if wait == float("inf"):
                raise ProtocolError(
                    ErrorCode.BUSY,
                    f"too many entries in one insert for this server's rate "
                    f"(at most {int(self._insert_limiter.burst)} entries times labels)",
                )
            raise ProtocolError(
                ErrorCode.BUSY,
                f"too many entries inserted from {source}; try again in "
                f"{math.ceil(min(wait, 86400))} s",
            )

    def _clamp(self, entry: Entry, now: int, ahead: int = 0) -> Entry:
        if entry.timestamp > now + ahead:
            return Entry(now + ahead, entry.host, entry.port)
        return entry

    def _decide(
        self, entry: Entry, now: int, ahead: int, source: str, sender: str, halp: bool
    ) -> Entry | Refused | str:
        """
        What to do with one entry: store it (the entry, its time clamped),
        refuse it (a :class:`Refused` with an empty label), or hold it for
        verification (``"pending"``).

        :param source: who first inserted it (a change's source).
        :param sender: the host of the connection that delivered it, which
            the entry may name to be trusted at once; ``""`` for this
            server itself, or a peer trusted without verification.
        """
        admitted = self._admit(entry, now, ahead)
        if isinstance(admitted, str):
            return Refused("", _raw(entry), admitted)
        try:
            check_routable(entry.host, self.admission.allow_private)
        except ProtocolError as e:
            return Refused("", _raw(entry), e.message)
        verifier = self.verifier
        if verifier is None or not sender:
            return admitted
        if entry.host == sender:
            verifier.confirm(entry.host, entry.port, halp, self.clock.seconds())
            return admitted
        if ":" not in entry.host and not entry.host.replace(".", "").isdigit():
            # A name could be pointed anywhere once checked (DNS rebinding):
            # a verifying server takes addresses only.
            return Refused(
                "", _raw(entry), "bad host: this server takes addresses, not names: "
                "a name cannot be verified (it can point elsewhere once checked)"
            )
        if verifier.confirmed_at(entry.host, entry.port, halp) is not None:
            return admitted
        failure = verifier.failure(entry.host, entry.port, halp)
        if failure is not None:
            return Refused("", _raw(entry), f"unreachable: this server could not reach it: {failure}")
        return "pending"

    def _hold(self, claim: Claim, source: str) -> Pending | Refused:
        assert self.verifier is not None
        busy = self.verifier.submit(claim, source)
        raw = _raw(claim.entry)
        if busy is not None:
            return Refused(claim.label, raw, busy)
        return Pending(
            claim.label,
            raw,
            "unverified: served once this server has reached "
            f"{claim.entry.host} {claim.entry.port} itself",
        )

    def _merge(self, changes: list[Change]) -> Deferred[list[Merged]]:
        if not changes:
            return succeed([])
        if self.group_cap:
            d = self.store.merge(changes, self.limits.max_entries, self.group_cap)
        else:
            d = self.store.merge(changes, self.limits.max_entries)
        return d.addCallback(self._merged_into, {c.label for c in changes})

    def _merged_into(self, merged: list[Merged], labels: set[str]) -> list[Merged]:
        for observer in self._merge_observers:
            try:
                observer(labels)
            except Exception:
                self._log.failure("A merge observer failed")
        return merged

    def _verified(self, claims: list[Claim], when: float) -> None:
        """
        Store the claims whose host a probe reached at ``when``.

        A client's insert is confirmed at ``when``: this server reached the
        host itself.  A replicated claim keeps the time it came with: every
        server that verifies it probes at a slightly different time, and
        each of those times would be a newer confirmation that floods the
        federation again (the simulator found one insert pushed on for as
        long as probes finished somewhere, a new version every second).
        """
        now = int(when)
        changes = {
            relay: [
                Change(
                    c.label,
                    c.entry if c.via else Entry(now, c.entry.host, c.entry.port),
                    c.source,
                    c.via,
                )
                for c in claims
                if c.relay == relay
            ]
            for relay in (True, False)
        }
        for relay, batch in changes.items():
            if not batch:
                continue

            def merged(result: list[Merged], batch: list[Change] = batch, relay: bool = relay) -> None:
                changed = [c for c, m in zip(batch, result) if m.changed]
                self.stats.increment("entries-verified", len(changed))
                self._notify(changed, relay)

            def failed(failure: Failure, batch: list[Change] = batch) -> None:
                self.stats.increment("entries-unverified", len(batch))
                if failure.check(StoreError):
                    assert isinstance(failure.value, StoreError)
                    self.store_failed("storing verified entries", failure.value)
                else:
                    self._log.failure("Storing verified entries failed", failure)

            self._merge(batch).addCallbacks(merged, failed)

    def _unverified(self, claims: list[Claim], why: str) -> None:
        self.stats.increment("entries-unverified", len(claims))

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
        every line, and the insert rules apply.

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
            self._throttle_insert(peer, len(candidates))
            via = peer
            candidates = [
                c if isinstance(c, RejectedEntry) else Change(c.label, c.entry, peer)
                for c in candidates
            ]
            sender = peer
        else:
            sender = peer if self.admission.verify == "all" else ""
        return self._replicate(candidates, via, sender, relay=True, counter="entries-replicated")

    def apply_pulled(self, changes: Sequence[Change], via: str) -> Deferred[Replicated]:
        """Merge changes pulled from the peer ``via`` (a ``changes`` answer)."""
        sender = ""
        if self.admission.verify == "all":
            try:
                sender = parse_host_port(via)[0]
            except ProtocolError:
                sender = via
        return self._replicate(changes, via, sender, relay=False, counter="entries-pulled")

    def _replicate(
        self,
        candidates: Sequence[Change | RejectedEntry],
        via: str,
        sender: str,
        relay: bool,
        counter: str,
    ) -> Deferred[Replicated]:
        now = self.now()
        refused: list[Refused] = []
        accepted: list[Change] = []
        pending = 0
        for candidate in candidates:
            if isinstance(candidate, RejectedEntry):
                refused.append(Refused("", candidate.raw, candidate.reason))
                continue
            decision = self._decide(
                candidate.entry,
                now,
                REPLICATION_SKEW,
                candidate.source,
                sender,
                _is_halp(candidate.label),
            )
            if isinstance(decision, Refused):
                refused.append(Refused(candidate.label, decision.raw, decision.reason))
            elif isinstance(decision, str):
                entry = self._clamp(candidate.entry, now, REPLICATION_SKEW)
                # Charged to the network the entry first came from, so that
                # a peer relaying many networks' entries is not one network.
                held = self._hold(
                    Claim(candidate.label, entry, candidate.source, via, relay),
                    candidate.source or sender,
                )
                if isinstance(held, Refused):
                    refused.append(held)
                else:
                    pending += 1
            else:
                accepted.append(Change(candidate.label, decision, candidate.source, via))
        d = self._merge(accepted)

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
            return Replicated(
                len(changed), len(accepted) - len(changed) - evicted, refused, pending
            )

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
            ("verify", self.admission.verify),
            ("features", " ".join(FEATURES)),
            *([("http", " ".join(self.http_urls))] if self.http_urls else []),
        ]

    def peers(self) -> list[PeerStatus]:
        """The peer servers, best first; none when this server does not federate."""
        return self.peer_source.peers() if self.peer_source is not None else []

    def stats_fields(self) -> list[tuple[str, object]]:
        """The fields of a ``stats`` answer: uptime, then every counter."""
        fields: list[tuple[str, object]] = [("uptime", self.now() - self.started), *self.stats]
        if self.verifier is not None:
            fields.append(("verify-pending", self.verifier.pending))
        return fields

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
