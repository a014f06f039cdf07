# -*- test-case-name: halp.test.test_client -*-
"""
:class:`HALPClient`: look up and announce peers through HALP servers, with
a local cache that answers when no server can.
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Iterable, Sequence, TypeVar

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    TimeoutError as DeferredTimeout,
    fail,
    gatherResults,
    succeed,
)
from treq.client import HTTPClient
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from halp.client.http import HTTPExchange
from halp.client.protocol import HALPClientProtocol
from halp.client.servers import (
    MAX_LEARNED,
    SERVER_LABELS,
    Dialect,
    Listed,
    ServerAddress,
    ServerRecord,
    ServerTable,
    parse_server,
)
from halp.core import HALPCore, Refused, Stored
from halp.error import (
    BadResponse,
    ClientError,
    ConnectionClosed,
    ErrorCode,
    HALPError,
    NoServerAvailable,
    ProtocolError,
    ServerRefused,
    StoreError,
    StoreSchemaError,
    Timeout,
)
from halp.interfaces import IHostStore
from halp.model import (
    Entry,
    address_group,
    LabelInfo,
    Limits,
    Window,
    check_host,
    check_label,
    check_port,
)
from halp.wire import (
    Get,
    Insert,
    InsertOutcome,
    ListLabels,
    Request,
    Response,
    Stats,
    parse_entry_line,
    parse_field_line,
    parse_insert_line,
    parse_label_line,
)

__all__ = [
    "AnnounceResult",
    "open_cache",
    "CACHE_LIMITS",
    "HALPClient",
    "LabelList",
    "PeerList",
    "ServerResult",
    "ServerStats",
    "SERVERS_LABEL",
    "candidates",
    "fair_merge",
    "group_cap",
]

#: The label that lists HALP servers.
SERVERS_LABEL = "halp"

#: The limits of a client's cache: it keeps entries for 30 days, since an
#: old address is still worth a try when no server can be reached.
CACHE_LIMITS = Limits(ttl=30 * 86_400)

#: The cache database that :func:`open_cache` makes in its directory.
CACHE_FILE = "cache.sqlite3"

#: Where the table of known servers is saved in the cache store.
STATE_KEY = "client/servers"

#: How many ``halp`` entries to ask a server for when learning servers.
LEARN_WIDTH = 10

#: The scheme of the servers each servers label lists.
_SCHEMES = {label: scheme for scheme, label in SERVER_LABELS.items()}

T = TypeVar("T")


@dataclass(frozen=True)
class ServerResult:
    """
    What one server did for one operation.

    :ivar error: why the server could not be used, or ``None`` if it
        answered.
    :ivar entries: for a lookup, the valid entries it sent.
    :ivar labels: for a label listing, the rows it sent.
    :ivar outcomes: for an announcement, its ``success:``/``failure:``/
        ``pending:`` lines.
    :ivar dialect: how it answered: ``halp1``, or ``libhalp`` for a server
        that answered the 2011 way.
    """

    server: ServerAddress
    error: ClientError | None = None
    entries: tuple[Entry, ...] = ()
    labels: tuple[LabelInfo, ...] = ()
    outcomes: tuple[InsertOutcome, ...] = ()
    dialect: Dialect | None = None

    @property
    def ok(self) -> bool:
        """Whether the server answered."""
        return self.error is None

    @property
    def stored(self) -> bool:
        """For an announcement: whether the server stored the entry."""
        return self.ok and any(o.stored for o in self.outcomes)

    def describe(self) -> str:
        """One line for people: the server and what happened."""
        if self.error is not None:
            return f"{self.server} unreachable: {self.error}"
        if self.outcomes:
            failures = [o for o in self.outcomes if not o.stored and not o.pending]
            if failures:
                return f"{self.server} refused: {failures[0].reason or 'no reason given'}"
            if not any(o.stored for o in self.outcomes):
                return f"{self.server} will store it once it has reached the host itself"
            return f"{self.server} stored"
        return f"{self.server} answered"


@dataclass(frozen=True)
class ServerStats:
    """
    The answer of :meth:`HALPClient.stats`: one server's counters.

    :ivar fields: ``(name, value)`` in the order the server sent them.
    """

    server: ServerAddress
    fields: tuple[tuple[str, str], ...]


class PeerList(list[Entry]):
    """
    The answer of :meth:`HALPClient.lookup`: entries, newest first, with
    how they were obtained.

    :ivar label: the label looked up.
    :ivar results: what each server asked did.
    """

    def __init__(
        self, entries: Iterable[Entry], label: str, results: Sequence[ServerResult] = ()
    ) -> None:
        super().__init__(entries)
        self.label = label
        self.results = tuple(results)

    @property
    def from_cache(self) -> bool:
        """True when no server answered: the entries come from the cache only."""
        return not any(r.ok for r in self.results)


class LabelList(list[LabelInfo]):
    """The answer of :meth:`HALPClient.labels`: label rows, newest first."""

    def __init__(
        self, rows: Iterable[LabelInfo], prefix: str, results: Sequence[ServerResult] = ()
    ) -> None:
        super().__init__(rows)
        self.prefix = prefix
        self.results = tuple(results)

    @property
    def from_cache(self) -> bool:
        """True when no server answered: the rows come from the cache only."""
        return not any(r.ok for r in self.results)


class AnnounceResult(list[ServerResult]):
    """The answer of :meth:`HALPClient.announce`: one result per server asked."""

    def __init__(self, results: Iterable[ServerResult], entry: Entry) -> None:
        super().__init__(results)
        self.entry = entry

    @property
    def reached(self) -> int:
        """How many servers answered."""
        return sum(1 for r in self if r.ok)

    @property
    def stored(self) -> int:
        """How many servers stored the entry."""
        return sum(1 for r in self if r.stored)


_cache_log = Logger()


def open_cache(
    reactor: Any, directory: str, *, warn: Callable[[str], object] | None = None
) -> IHostStore:
    """
    The usual cache of a client: an SQLite file, ``cache.sqlite3``, in
    ``directory`` (created, private to the user, if missing).  Pass
    ``close_cache=True`` to :class:`HALPClient` to have it closed with the
    client.

    The cache holds nothing that servers cannot tell again, so a cache
    file that is damaged (truncated, overwritten), not a HALP database, or
    written by a newer HALP is not fatal: it is moved aside to
    ``cache.sqlite3.bak`` (with its ``-wal``, ``-shm`` or ``-journal``
    file, replacing any older ``.bak``) and an empty cache takes its
    place.  That is logged as a warning and told to ``warn``, in one line.
    A cache that cannot be used for any other reason (permissions, a lock,
    a full disk) is left alone.

    :raises ~halp.error.StoreError: with a one-line explanation, if the
        directory or the database cannot be used.
    """
    import os

    from halp.store.sqlite import SQLiteStore, open_database

    if os.path.exists(directory) and not os.path.isdir(directory):
        raise StoreError(f"cache {directory!r} is not a directory")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create cache directory {directory!r}: {e.strerror}") from None
    path = os.path.join(directory, CACHE_FILE)
    try:
        try:
            open_database(path, check=True).close()
        except StoreSchemaError as e:
            backup = _move_aside(path)
            # "'PATH' is ...; what to do" -> "is ...": the what-to-do is done.
            why = str(e).removeprefix(f"{path!r} ").split("; ")[0]
            moved = "cache {path!r} {why}; moved it to {backup!r} and started an empty cache"
            _cache_log.warn(moved, path=path, why=why, backup=backup)
            if warn is not None:
                warn(moved.format(path=path, why=why, backup=backup))
            open_database(path, check=True).close()
    except StoreError as e:
        raise StoreError(f"cannot use cache {path!r}: {e}") from None
    return SQLiteStore(reactor, path)


def _move_aside(path: str) -> str:
    """
    Rename the database ``path`` and the files SQLite keeps beside it to
    ``PATH.bak``, ``PATH.bak-wal``, ...: a stale ``-journal`` or ``-wal``
    left at ``path`` would be applied to the next database made there.

    :return: the new name of the database.
    :raises StoreError: if a file cannot be renamed.
    """
    import os

    backup = path + ".bak"
    suffixes = ("-wal", "-shm", "-journal")
    try:
        # An older backup's log must not be taken for this one's.
        for suffix in suffixes:
            if os.path.exists(backup + suffix):
                os.remove(backup + suffix)
        for suffix in ("", *suffixes):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, backup + suffix)
    except OSError as e:
        raise StoreError(f"cannot move {path!r} aside to {backup!r}: {e.strerror}") from None
    return backup


def group_cap(limit: int) -> int:
    """
    How many places of an answer of ``limit`` entries one network (IPv4
    /16, IPv6 /32: :func:`~halp.model.address_group`) may take while
    others have entries to offer: one in ten, at least one.
    """
    return max(1, limit // 10)


#: A lookup of ``limit`` entries asks each server for this many times as
#: many (up to the servers' largest window, 100), so that
#: :func:`fair_merge` has entries of other networks to choose from.
CANDIDATES = 4


def candidates(limit: int, limits: Limits) -> int:
    """How many entries a lookup of ``limit`` asks each server for."""
    return max(limit, min(limit * CANDIDATES, limits.max_slice))


def fair_merge(answers: Sequence[Sequence[Entry]], limit: int) -> list[Entry]:
    """
    Merge the answers of several servers, newest first, so that no single
    server, and no single network, decides the result alone.

    An entry reported by two or more servers takes its latest time and is
    always eligible.  An entry reported by one server only counts against
    that server's share, ``ceil(limit / len(answers))``; entries over their
    server's share are used only when the shares leave room, and then taken
    from the servers in turn (each server's newest first), not by time: so
    a server that lies (fresh times on addresses nobody else knows) fills
    at most its share of the answer while the others have entries to offer,
    and no more than its turn of what they leave.

    Whoever reports them, the entries of one network beyond
    :func:`group_cap` places come last (those several servers reported
    first): servers that lie together, agreeing on addresses in a few
    networks (sybils), are corroborated by each other, but still take only
    a few places of each network while other networks' entries are on
    offer.  (The simulator found two colluding servers of three filling 14
    of 20 places with sybils before this rule.)  So a lying server fills
    its share, or ``group_cap`` places in each of its networks if that is
    more, while the others have entries to offer.
    """
    best: dict[tuple[str, int], int] = {}
    reporters: dict[tuple[str, int], set[int]] = {}
    for i, answer in enumerate(answers):
        for entry in answer:
            address = entry.address
            best[address] = max(best.get(address, entry.timestamp), entry.timestamp)
            reporters.setdefault(address, set()).add(i)
    order = sorted(best, key=lambda a: (-best[a], a))
    share = math.ceil(limit / max(1, len(answers)))
    cap = group_cap(limit)
    groups: dict[str, int] = {}
    used = [0] * len(answers)
    chosen: list[tuple[str, int]] = []
    over: list[list[tuple[str, int]]] = [[] for _ in answers]
    # Entries of full networks, by the server that reported them (the last
    # list: those several servers reported).
    crowded: list[list[tuple[str, int]]] = [[] for _ in range(len(answers) + 1)]

    def take(address: tuple[str, int]) -> bool:
        group = address_group(address[0])
        if groups.get(group, 0) >= cap:
            sources = reporters[address]
            crowded[next(iter(sources)) if len(sources) == 1 else -1].append(address)
            return False
        groups[group] = groups.get(group, 0) + 1
        chosen.append(address)
        return True

    for address in order:
        if len(chosen) == limit:
            break
        sources = reporters[address]
        if len(sources) == 1:
            (only,) = sources
            if used[only] >= share:
                over[only].append(address)
            elif take(address):
                used[only] += 1
        else:
            take(address)
    # Room left: each server's surplus in turn, newest first, within the
    # networks' caps.
    turn = 0
    while len(chosen) < limit and any(over):
        if over[turn]:
            take(over[turn].pop(0))
        turn = (turn + 1) % len(over)
    # Then the entries of full networks: those several servers reported
    # first, newest first; then each server's in turn.
    several = crowded.pop()
    chosen.extend(several[: limit - len(chosen)])
    turn = 0
    while len(chosen) < limit and any(crowded):
        if crowded[turn]:
            chosen.append(crowded[turn].pop(0))
        turn = (turn + 1) % len(crowded)
    chosen.sort(key=lambda a: (-best[a], a))
    return [Entry(best[a], *a) for a in chosen]


class HALPClient:
    """
    Finds peers through HALP servers and remembers them.

    Every method returns a :class:`~twisted.internet.defer.Deferred`; from
    ``async def`` code, ``await`` it directly (inside a coroutine driven by
    :meth:`Deferred.fromCoroutine
    <twisted.internet.defer.Deferred.fromCoroutine>` or
    :func:`~twisted.internet.defer.ensureDeferred`).

    :param reactor: for connections and time.
    :param cache: where entries, the ``halp`` server list and the table of
        server statistics are kept; any :class:`~halp.interfaces.IHostStore`.
        The caller owns it unless ``close_cache`` is true.
    :param seeds: pinned servers, asked in addition to the cached ``halp``
        list and never forgotten: :class:`ServerAddress` objects or strings
        as :func:`~halp.client.servers.parse_server` reads them
        (``HOST:PORT``, ``libhalp://HOST:PORT``, or the URL of a server's
        HTTP face, ``http://HOST:PORT/`` or ``https://...``).
    :param queries: how many servers a lookup asks in parallel.
    :param fanout: how many servers an announcement is sent to.
    :param timeout: seconds an operation may take in all; when it runs
        out, servers that have not answered count as failed.
    :param endpoint: makes the client endpoint for a server (default: a
        :class:`~twisted.internet.endpoints.HostnameEndpoint`).
    :param learn_interval: seconds between asking one server for its
        ``halp`` list, alongside a lookup.
    :param http: the :class:`treq.client.HTTPClient` for servers' HTTP
        faces (default: one over an :class:`~twisted.web.client.Agent`
        that checks TLS certificates).
    :param rng: draws which untested server to try next (see
        :meth:`ServerTable.choose <halp.client.servers.ServerTable.choose>`).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        cache: IHostStore,
        seeds: Iterable[ServerAddress | str] = (),
        *,
        queries: int = 4,
        fanout: int = 5,
        timeout: float = 5.0,
        cache_limits: Limits = CACHE_LIMITS,
        max_learned: int = MAX_LEARNED,
        learn_interval: float = 3600.0,
        endpoint: Callable[[ServerAddress], IStreamClientEndpoint] | None = None,
        close_cache: bool = False,
        http: HTTPClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if queries < 1 or fanout < 1:
            raise ValueError("queries and fanout must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._reactor = reactor
        #: The reactor (or clock) the client runs on.
        self.reactor = reactor
        self.cache = cache
        self.core = HALPCore(cache, reactor, cache_limits)
        self.queries = queries
        self.fanout = fanout
        self.timeout = timeout
        self.learn_interval = learn_interval
        self._close_cache = close_cache
        pinned: list[tuple[ServerAddress, Dialect | None]] = []
        for seed in seeds:
            pinned.append(parse_server(seed) if isinstance(seed, str) else (seed, None))
        self.seeds = tuple(address for address, _ in pinned)
        self._table = ServerTable(pinned, max_learned, rng=rng)
        self._endpoint = endpoint or self._tcp_endpoint
        self._http = HTTPExchange(http) if http is not None else None
        self._pool: HTTPConnectionPool | None = None
        self._loaded = False
        self._loading: list[Deferred[None]] | None = None
        self._running: set[Deferred[Any]] = set()
        self._saving: Deferred[None] | None = None
        self._save_waiters: list[Deferred[None]] = []
        self._closed = False

    def _tcp_endpoint(self, address: ServerAddress) -> IStreamClientEndpoint:
        return HostnameEndpoint(self._reactor, address.host, address.port, timeout=self.timeout)

    def _http_exchange(self) -> HTTPExchange:
        if self._http is None:
            self._pool = HTTPConnectionPool(self._reactor, persistent=False)
            agent = Agent(self._reactor, pool=self._pool, connectTimeout=self.timeout)
            self._http = HTTPExchange(HTTPClient(agent))
        return self._http

    # -- the API -------------------------------------------------------------

    def lookup(self, label: str, limit: int = 10) -> Deferred[PeerList]:
        """
        Ask servers for the newest ``limit`` entries of ``label``.

        Asks :attr:`queries` servers at once (failing over to the next
        known server when one fails), merges their answers into the cache,
        and fires with a :class:`PeerList`: the merged view, newest first
        (see :func:`fair_merge`), topped up from the cache.  When no server
        answers, it fires with the cached entries and
        :attr:`PeerList.from_cache` set; it fails only for a bad label or
        limit (:class:`~halp.error.ProtocolError`, :class:`ValueError`) or
        a broken cache (:class:`~halp.error.StoreError`).
        """
        try:
            check_label(label)
            self._check_limit(limit)
        except (ProtocolError, ValueError):
            return fail()
        return self._run(self._lookup(label, limit))

    def announce(
        self, label: str, host: str, port: int, timestamp: int | None = None
    ) -> Deferred[AnnounceResult]:
        """
        Insert ``host port`` into ``label`` at up to :attr:`fanout` servers
        (libhalp's broadcast insert), confirmed at ``timestamp`` (default:
        now).  Fires with an :class:`AnnounceResult`, one
        :class:`ServerResult` per server asked; it does not fail because
        servers did.
        """
        try:
            entry = self._entry(label, host, port, timestamp)
        except (ProtocolError, ValueError):
            return fail()
        return self._run(self._announce(label, entry))

    def labels(self, prefix: str = "") -> Deferred[LabelList]:
        """
        The labels (``prefix`` empty) or the sublabels of ``prefix``,
        newest activity first, from :attr:`queries` servers merged, or
        from the cache when none answers.
        """
        prefix = prefix.rstrip("/")
        try:
            if prefix:
                check_label(prefix)
        except ProtocolError:
            return fail()
        return self._run(self._labels(prefix))

    def insert(
        self, label: str, host: str, port: int, timestamp: int | None = None
    ) -> Deferred[Entry]:
        """
        Put an entry into the local cache only (libhalp's ``client.py
        insert``).  ``insert("halp", HOST, PORT)`` is how a server is added
        by hand.  Fires with the entry as stored, or fails with
        :class:`~halp.error.ProtocolError` if it cannot be (for example,
        confirmed longer ago than the cache keeps entries).
        """
        try:
            entry = self._entry(label, host, port, timestamp)
        except (ProtocolError, ValueError):
            return fail()
        return self._run(self._insert(label, entry))

    def cached(self, label: str, limit: int = 10) -> Deferred[PeerList]:
        """The newest ``limit`` cached entries of ``label``, asking no server."""
        try:
            check_label(label)
            self._check_limit(limit)
        except (ProtocolError, ValueError):
            return fail()
        return self._run(self._cached(label, limit))

    def servers(self) -> Deferred[list[ServerRecord]]:
        """Every known server, best first, with its statistics."""
        return self._run(self._servers())

    def stats(self, server: ServerAddress | str | None = None) -> Deferred[ServerStats]:
        """
        The counters of ``server`` (a pinned seed or a known server), or
        of the first known server that answers: a ``stats`` request.
        Fails with :class:`~halp.error.NoServerAvailable` when none
        answers, with :class:`ValueError` for a server that is not known.
        """
        try:
            address = parse_server(server)[0] if isinstance(server, str) else server
        except ValueError:
            return fail()
        return self._run(self._stats(address))

    def close(self) -> Deferred[None]:
        """
        Wait for running operations and for the server table to be saved;
        close the cache too if the client owns it.
        """
        self._closed = True
        return Deferred.fromCoroutine(self._close())

    # -- argument checks -----------------------------------------------------

    def _check_limit(self, limit: int) -> None:
        widest = self.core.limits.max_slice
        if not 1 <= limit <= widest:
            raise ValueError(f"limit must be between 1 and {widest}")

    def _entry(self, label: str, host: str, port: int, timestamp: int | None) -> Entry:
        check_label(label)
        host = check_host(host)
        port = check_port(str(port))
        if timestamp is None:
            timestamp = self.core.now()
        if timestamp < 0:
            raise ValueError("timestamp must not be negative")
        return Entry(timestamp, host, port)

    # -- running operations --------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
        if self._closed:
            coroutine.close()
            return fail(ClientError("the client is closed"))
        d = Deferred.fromCoroutine(coroutine)
        self._running.add(d)

        def finished(result: object) -> object:
            self._running.discard(d)
            return result

        d.addBoth(finished)
        return d

    async def _close(self) -> None:
        while self._running:
            waiting = [d for d in self._running]
            for d in waiting:
                try:
                    await _quiet(d)
                except Exception:
                    pass
        await self._persist()
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        if self._close_cache:
            await self.cache.close()

    def _ready(self) -> Deferred[None]:
        if self._loaded:
            return succeed(None)
        d: Deferred[None] = Deferred()
        if self._loading is None:
            self._loading = [d]
            Deferred.fromCoroutine(self._load()).addBoth(self._load_finished)
        else:
            self._loading.append(d)
        return d

    def _load_finished(self, result: None | Failure) -> None:
        waiting, self._loading = self._loading or [], None
        if not isinstance(result, Failure):
            self._loaded = True
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(None)

    async def _load(self) -> None:
        await self.core.purge()
        document = await self.cache.get_state(STATE_KEY)
        since = self.core.oldest_served()
        known: list[Listed] = []
        for label, scheme in _SCHEMES.items():
            entries: list[Entry] = []
            while True:
                page = await self.cache.get(label, len(entries), len(entries) + 1000, since)
                entries.extend(page)
                if len(page) < 1000:
                    break
            known.extend(Listed(ServerAddress.of(e, scheme), e.timestamp) for e in entries)
        dropped = self._table.load(document, known, self.core.now())
        await self._unlist(dropped)

    async def _unlist(self, servers: Sequence[ServerAddress]) -> None:
        """Remove servers from the servers labels of the cache."""
        for label in _SCHEMES:
            gone = [(a.host, a.port) for a in servers if a.label == label]
            if gone:
                await self.cache.remove(label, gone)

    async def _list(self, servers: Sequence[Listed]) -> None:
        """Add (or confirm) servers in the servers labels of the cache."""
        for label in _SCHEMES:
            entries = [s.entry for s in servers if s.address.label == label]
            if entries:
                await self.core.insert([label], entries)

    def _persist(self) -> Deferred[None]:
        """Save the server table; a save already running is followed by one more."""
        d: Deferred[None] = Deferred()
        self._save_waiters.append(d)
        if self._saving is None:
            self._save_next()
        return d

    def _save_next(self) -> None:
        waiters, self._save_waiters = self._save_waiters, []
        if not waiters:
            self._saving = None
            return
        if not self._loaded:
            # Nothing was loaded, so nothing changed: do not overwrite.
            self._saving = None
            for d in waiters:
                d.callback(None)
            return
        saving = self.cache.put_state(STATE_KEY, self._table.dump())
        self._saving = saving

        def saved(result: None | Failure) -> None:
            if isinstance(result, Failure):
                self._log.failure("Saving the HALP server table failed", result)
            for d in waiters:
                d.callback(None)
            self._save_next()

        saving.addBoth(saved)

    # -- talking to servers --------------------------------------------------

    def _ask(
        self,
        requests_for: Callable[[ServerRecord, Dialect | None], list[Request]],
        interpret: Callable[[ServerAddress, list[Response], Dialect], ServerResult],
        want: int,
        only: ServerAddress | None = None,
    ) -> Deferred[list[ServerResult]]:
        """
        Ask servers, best first, until ``want`` have answered, every known
        server was tried, or :attr:`timeout` runs out.  ``want`` servers
        are asked at once; each failure starts the next one.  Fires with
        the result of every server asked.  With ``only``, that server alone
        is asked.
        """
        now = self.core.now()
        waiting = deque(
            r for r in self._table.choose(now, want) if only is None or r.address == only
        )
        deadline = self._reactor.seconds() + self.timeout
        results: list[ServerResult] = []
        done: Deferred[list[ServerResult]] = Deferred()
        counts = {"running": 0, "answered": 0}

        def launch() -> None:
            while waiting and counts["running"] + counts["answered"] < want:
                remaining = deadline - self._reactor.seconds()
                if remaining <= 0:
                    break
                record = waiting.popleft()
                counts["running"] += 1
                # One server gets at most half the time, so that a server
                # that never answers leaves time to ask another one.
                allowed = min(remaining, self.timeout / 2)
                self._attempt(record, requests_for, interpret, allowed).addCallback(
                    finished
                )
            if counts["running"] == 0 and not done.called:
                done.callback(results)

        def finished(result: ServerResult) -> None:
            counts["running"] -= 1
            results.append(result)
            if result.ok:
                counts["answered"] += 1
            launch()

        launch()
        return done

    def _attempt(
        self,
        record: ServerRecord,
        requests_for: Callable[[ServerRecord, Dialect | None], list[Request]],
        interpret: Callable[[ServerAddress, list[Response], Dialect], ServerResult],
        timeout: float,
    ) -> Deferred[ServerResult]:
        """Talk to one server; never fails: problems become the result's error."""
        address = record.address
        dialect = self._table.dialect(address, self.core.now())
        requests = requests_for(record, dialect)
        d = Deferred.fromCoroutine(self._talk(address, requests, dialect))
        d.addTimeout(timeout, self._reactor)

        def answered(outcome: tuple[list[Response], Dialect]) -> ServerResult:
            responses, spoken = outcome
            result = interpret(address, responses, spoken)
            count = len(result.entries) + len(result.labels)
            self._table.succeeded(address, self.core.now(), count, spoken)
            return result

        def failed(failure: Failure) -> ServerResult:
            error = _client_error(failure, timeout)
            if error is None:
                self._log.failure("Unexpected error talking to {server}", failure, server=str(address))
                error = ClientError("unexpected error (logged)")
            forgotten = self._table.failed(address, self.core.now())
            if forgotten:
                self._forget(forgotten)
            return ServerResult(address, error)

        return d.addCallback(answered).addErrback(failed)

    async def _talk(
        self, address: ServerAddress, requests: list[Request], dialect: Dialect | None
    ) -> tuple[list[Response], Dialect]:
        if address.scheme != "halp":
            return await self._http_exchange().exchange(address, requests), "halp1"
        proto = await connectProtocol(self._endpoint(address), HALPClientProtocol())
        try:
            if dialect == "libhalp":
                responses = [await proto.request_libhalp(requests[0])]
            elif dialect is None:
                # Until the server is known to speak HALP/1, send one request
                # only: a libhalp server reads one request per connection.
                responses = [await proto.request(requests[0])]
            else:
                responses = await gatherResults(
                    [proto.request(r) for r in requests], consumeErrors=True
                )
        finally:
            proto.close()
        if dialect == "halp1" and responses[0].status is None:
            # A server known to speak HALP/1 that closes without a status
            # line did not answer (it may be shutting down); only while the
            # dialect is unknown is such a close a libhalp answer.
            raise ConnectionClosed("the server closed the connection before answering")
        spoken: Dialect = "libhalp" if responses[0].status is None else "halp1"
        return responses, spoken

    def _forget(self, servers: Sequence[ServerAddress]) -> None:
        self._log.info(
            "Forgetting HALP servers {servers}", servers=", ".join(map(str, servers))
        )
        d = Deferred.fromCoroutine(self._unlist(servers))
        d.addErrback(lambda f: self._log.failure("Removing forgotten servers failed", f))

    def _learning(self, record: ServerRecord, dialect: Dialect | None) -> list[Request]:
        """
        The ``get halp``, ``get halp/http`` and ``get halp/https`` to
        pipeline after a request, when it is time to learn.
        """
        if dialect != "halp1":
            return []
        if self.core.now() - record.learned_at < self.learn_interval:
            return []
        return [Get(label, Window(0, LEARN_WIDTH)) for label in _SCHEMES]

    def _learned(
        self, server: ServerAddress, responses: Sequence[Response], into: list[Listed]
    ) -> None:
        """Read the answers to :meth:`_learning`'s requests."""
        found: list[Listed] = []
        try:
            for label, response in zip(_SCHEMES, responses):
                scheme = _SCHEMES[label]
                entries = _entries(response, LEARN_WIDTH, strict=True)
                found.extend(Listed(ServerAddress.of(e, scheme), e.timestamp) for e in entries)
        except ClientError:
            return  # the request itself was answered; learn next time
        into.extend(found)
        self._table.learned_from(server, self.core.now())

    async def _remember(
        self, results: Sequence[ServerResult], learned: Sequence[Listed]
    ) -> None:
        """Record the servers that answered and those learned, in the cache."""
        now = self.core.now()
        answered = [Listed(r.server, now) for r in results if r.ok]
        keep, evicted = self._table.learn(learned, now)
        await self._unlist(evicted)
        await self._list(answered + keep)
        await self._persist()

    # -- lookup --------------------------------------------------------------

    async def _lookup(self, label: str, limit: int) -> PeerList:
        await self._ready()
        learned: list[Listed] = []
        plain: set[ServerAddress] = set()
        # Looking up a servers label is learning servers.
        servers_of = _SCHEMES.get(label)
        # Candidates from more networks than the newest ``limit`` offer:
        # the newest entries of a label may all be one attacker's few
        # networks (see fair_merge).
        width = limit if servers_of is not None else candidates(limit, self.core.limits)
        request = Get(label, Window(0, width))

        def requests_for(record: ServerRecord, dialect: Dialect | None) -> list[Request]:
            if dialect != "halp1":
                # The plainest form, which libhalp's server understands: it
                # has no windows (a slice crashed it), and both kinds of
                # server answer it with their newest 10 entries.
                plain.add(record.address)
                return [Get(label)]
            if servers_of is not None:
                return [request]
            return [request] + self._learning(record, dialect)

        def interpret(
            server: ServerAddress, responses: list[Response], dialect: Dialect
        ) -> ServerResult:
            # A plain "get LABEL" is answered with the server's default
            # number of entries, which may be more than the limit.
            most = self.core.limits.max_slice if server in plain else width
            entries = _entries(responses[0], most, strict=dialect == "halp1")[:width]
            if len(responses) > 1:
                self._learned(server, responses[1:], learned)
            return ServerResult(server, entries=tuple(entries), dialect=dialect)

        results = await self._ask(requests_for, interpret, self.queries)
        answers = [list(r.entries) for r in results if r.ok]
        if servers_of is not None:
            learned.extend(
                Listed(ServerAddress.of(e, servers_of), e.timestamp) for a in answers for e in a
            )
        merged: dict[tuple[str, int], Entry] = {}
        for answer in answers:
            for entry in answer:
                old = merged.get(entry.address)
                if old is None or old.timestamp < entry.timestamp:
                    merged[entry.address] = entry
        stored_times: dict[tuple[str, int], int] = {}
        if merged and servers_of is None:
            outcomes = await self.core.insert([label], list(merged.values()))
            for outcome in outcomes:
                if isinstance(outcome, Stored):
                    stored_times[outcome.entry.address] = outcome.entry.timestamp
        await self._remember(results, learned)
        # Times as the cache now has them (it may know a later confirmation).
        now = self.core.now()
        fresh = [
            [Entry(min(now, stored_times.get(e.address, e.timestamp)), e.host, e.port) for e in a]
            for a in answers
        ]
        chosen = fair_merge(fresh, limit) if fresh else []
        if len(chosen) < limit:
            seen = {e.address for e in chosen}
            page = await self.core.get(label, Window(0, limit + len(chosen)))
            chosen.extend(e for e in page.items if e.address not in seen)
            chosen.sort(key=lambda e: (-e.timestamp, e.host, e.port))
            chosen = chosen[:limit]
        return PeerList(chosen, label, results)

    async def _cached(self, label: str, limit: int) -> PeerList:
        await self._ready()
        page = await self.core.get(label, Window(0, limit))
        return PeerList(page.items, label)

    # -- announce ------------------------------------------------------------

    async def _announce(self, label: str, entry: Entry) -> AnnounceResult:
        await self._ready()
        request = Insert((label,), (entry,))

        def interpret(
            server: ServerAddress, responses: list[Response], dialect: Dialect
        ) -> ServerResult:
            response = responses[0]
            _raise_for_status(response)
            outcomes = []
            for line in response.lines:
                if dialect != "halp1":
                    outcomes.extend(_libhalp_outcomes(line))
                    continue
                try:
                    outcomes.append(parse_insert_line(line))
                except ProtocolError:
                    raise BadResponse(f"not an insert answer line: {line[:80]!r}") from None
            return ServerResult(server, outcomes=tuple(outcomes), dialect=dialect)

        results = await self._ask(lambda r, d: [request], interpret, self.fanout)
        await self._remember(results, ())
        return AnnounceResult(results, entry)

    # -- labels --------------------------------------------------------------

    async def _labels(self, prefix: str) -> LabelList:
        await self._ready()
        widest = self.core.limits.max_slice
        request = ListLabels(prefix, Window(0, widest))

        def interpret(
            server: ServerAddress, responses: list[Response], dialect: Dialect
        ) -> ServerResult:
            response = responses[0]
            _raise_for_status(response)
            rows = []
            for line in response.lines[:widest]:
                try:
                    rows.append(parse_label_line(line, prefix))
                except ProtocolError:
                    if dialect == "halp1":
                        raise BadResponse(f"not a label line: {line[:80]!r}") from None
            return ServerResult(server, labels=tuple(rows), dialect=dialect)

        def requests_for(record: ServerRecord, dialect: Dialect | None) -> list[Request]:
            # No window until the server is known to speak HALP/1: a slice
            # crashed libhalp's server.
            return [request if dialect == "halp1" else ListLabels(prefix)]

        results = await self._ask(requests_for, interpret, self.queries)
        await self._remember(results, ())
        newest: dict[str, int] = {}
        for result in results:
            for row in result.labels:
                newest[row.name] = max(newest.get(row.name, 0), min(row.timestamp, self.core.now()))
        if not any(r.ok for r in results):
            page = await self.core.list_labels(prefix, Window(0, widest))
            for row in page.items:
                newest[row.name] = row.timestamp
        rows = sorted((LabelInfo(t, n) for n, t in newest.items()), key=lambda r: (-r.timestamp, r.name))
        return LabelList(rows[:widest], prefix, results)

    # -- the cache -----------------------------------------------------------

    async def _insert(self, label: str, entry: Entry) -> Entry:
        await self._ready()
        scheme = _SCHEMES.get(label)
        if scheme is not None:
            listed = Listed(ServerAddress.of(entry, scheme), entry.timestamp)
            _, evicted = self._table.learn([listed], self.core.now(), insist=True)
            await self._unlist(evicted)
        (outcome,) = await self.core.insert([label], [entry])
        if scheme is not None:
            await self._persist()
        if not isinstance(outcome, Stored):
            # The cache's core admits everything (OPEN): nothing waits.
            raise ProtocolError(ErrorCode.BAD_ENTRY, outcome.reason)
        return outcome.entry

    async def _servers(self) -> list[ServerRecord]:
        await self._ready()
        return self._table.records()

    # -- stats ---------------------------------------------------------------

    async def _stats(self, server: ServerAddress | None) -> ServerStats:
        await self._ready()
        if server is not None and server not in self._table:
            raise ValueError(f"{server} is not a known server (give it as a seed)")
        fields: dict[ServerAddress, tuple[tuple[str, str], ...]] = {}

        def interpret(
            address: ServerAddress, responses: list[Response], dialect: Dialect
        ) -> ServerResult:
            response = responses[0]
            if dialect != "halp1":
                raise ServerRefused("unknown-command", "a libhalp server keeps no counters")
            _raise_for_status(response)
            try:
                fields[address] = tuple(parse_field_line(line) for line in response.lines)
            except ProtocolError:
                raise BadResponse("not a stats answer") from None
            return ServerResult(address, dialect=dialect)

        def requests_for(record: ServerRecord, dialect: Dialect | None) -> list[Request]:
            return [Stats()]

        results = await self._ask(requests_for, interpret, 1, only=server)
        await self._remember(results, ())
        for result in results:
            if result.ok:
                return ServerStats(result.server, fields[result.server])
        raise NoServerAvailable(
            unreached(results) if results else "no HALP server known"
        )


async def _quiet(d: Deferred[Any]) -> None:
    """Wait for ``d`` without taking its result away from its owner."""
    waiter: Deferred[None] = Deferred()

    def passed(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(passed)
    await waiter


def unreached(results: Sequence[ServerResult]) -> str:
    """One line on why none of the servers asked answered."""
    details = "; ".join(r.describe() for r in results[:3])
    more = f" (and {len(results) - 3} more)" if len(results) > 3 else ""
    return f"no HALP server could be reached: {details}{more}"


def _raise_for_status(response: Response) -> None:
    status = response.status
    if status is not None and not status.ok:
        raise ServerRefused(status.code or "", status.text)


#: Where an outcome starts in a libhalp server's insert answer.
_OUTCOME_START = re.compile(rb"(?=(?:success|failure): )")


def _libhalp_outcomes(line: bytes) -> list[InsertOutcome]:
    """
    The outcomes in a line of a libhalp server's ``insert`` answer.  That
    server wrote its ``success:``/``failure:`` texts one after the other,
    without line endings, and answered every line of the request after the
    first, so the empty line that ends a HALP/1 insert block (sent before
    the server was known to be a libhalp one) earns a ``failure:`` with no
    entry, which is skipped.  Text that does not parse is skipped too.
    """
    outcomes = []
    for piece in _OUTCOME_START.split(line):
        try:
            outcome = parse_insert_line(piece)
        except ProtocolError:
            continue
        if outcome.stored or outcome.offered:
            outcomes.append(outcome)
    return outcomes


def _entries(response: Response, limit: int, strict: bool) -> list[Entry]:
    """
    The entries of a ``get`` answer.  A HALP/1 answer must be all valid;
    from a libhalp answer, lines that do not parse are skipped.
    """
    _raise_for_status(response)
    if strict and len(response.lines) > limit:
        raise BadResponse(f"{len(response.lines)} entries sent, {limit} asked for")
    entries = []
    for line in response.lines[:limit]:
        try:
            entries.append(parse_entry_line(line))
        except ProtocolError as e:
            if strict:
                raise BadResponse(f"bad entry line {line[:80]!r}: {e.message}") from None
    return entries


def _client_error(failure: Failure, timeout: float) -> ClientError | None:
    """Turn a failed exchange into the error to report, or ``None`` for a bug."""
    if failure.check(FirstError):
        failure = failure.value.subFailure  # type: ignore[union-attr]
    if failure.check(DeferredTimeout, CancelledError):
        return Timeout(f"no answer within {timeout:.1f} s")
    if failure.check(ClientError):
        return failure.value  # type: ignore[return-value]
    if failure.check(ConnectError, DNSLookupError):
        return ConnectionClosed(f"cannot connect: {failure.getErrorMessage().rstrip('.')}")
    if failure.check(HALPError):
        return ClientError(str(failure.value))
    return None
