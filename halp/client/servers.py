# -*- test-case-name: halp.test.test_servers -*-
"""
Which HALP servers to ask: the table of known servers, their quality,
their backoff, and what is learned about new ones.

This is pure logic: no I/O, and the time comes in as an argument.  The
client (:mod:`halp.client.client`) keeps the table in step with the
``halp`` label of its cache and saves it as a state document of the cache
store; the rules follow libhalp ("bring the first working server to the
top") and GNUnet's hostlist client (quality score, bounded learned list,
pinned seeds, exponential backoff).
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Iterable, Literal, NamedTuple, Sequence, TypeVar
from urllib.parse import urlsplit

from halp.error import ProtocolError
from halp.model import Entry, check_host, check_port, format_host_port, parse_host_port

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "Dialect",
    "INITIAL_QUALITY",
    "Listed",
    "MAX_LEARNED",
    "SERVER_LABELS",
    "ServerAddress",
    "ServerRecord",
    "ServerTable",
    "parse_server",
]

#: GNUnet's starting quality, and its steps: +100 for an answer, +1 per
#: valid entry delivered, -100 for a failure.
INITIAL_QUALITY = 10_000
QUALITY_ANSWER = 100
QUALITY_ENTRY = 1
QUALITY_FAILURE = 100

#: Learned (not pinned) servers kept at most; GNUnet keeps 30.
MAX_LEARNED = 30

#: A failing server is tried again after BACKOFF_BASE * 2**(n-1) seconds
#: (n failures in a row), at most BACKOFF_CAP.
BACKOFF_BASE = 60
BACKOFF_CAP = 86_400

#: A server that answers with something that is not HALP/1 loses this much
#: quality.  A learned one is forgotten and not learned again for BAN_TIME
#: seconds (Bitcoin bans a misbehaving peer for a day); a pinned one is not
#: asked again for PINNED_BAN_TIME seconds at least.
QUALITY_MISBEHAVED = 1000
BAN_TIME = 86_400
PINNED_BAN_TIME = 3600
#: Bans kept at most; the one that ends first goes when more are needed.
MAX_BANNED = 10_000

#: A learned server that failed this many times in a row, and has not
#: answered for FORGET_AFTER seconds, is forgotten.
FORGET_FAILURES = 10
FORGET_AFTER = 7 * 86_400

#: How a server speaks: ``halp1`` (HALP/1: pipelining, status lines),
#: ``libhalp`` (one request per connection, answered by closing), or
#: ``None`` when not known yet.
Dialect = Literal["halp1", "libhalp"]

#: The label that lists the servers of each scheme: HALP/1 servers in
#: ``halp``, HTTP faces (``docs/http.rst``) in ``halp/http`` and
#: ``halp/https``, each entry standing for ``SCHEME://HOST:PORT/``.
SERVER_LABELS = {"halp": "halp", "http": "halp/http", "https": "halp/https"}

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, order=True, slots=True)
class ServerAddress:
    """
    Where a HALP server listens: a host (canonical form), a port, and the
    scheme: ``halp`` for the HALP/1 line protocol, ``http`` or ``https``
    for an HTTP face at the root of ``SCHEME://HOST:PORT/``.
    """

    host: str
    port: int
    scheme: str = "halp"

    def __str__(self) -> str:
        if self.scheme == "halp":
            return format_host_port(self.host, self.port)
        return self.url

    @property
    def url(self) -> str:
        """``SCHEME://HOST:PORT/``."""
        return f"{self.scheme}://{format_host_port(self.host, self.port)}/"

    @property
    def label(self) -> str:
        """The label that lists servers of this scheme."""
        return SERVER_LABELS[self.scheme]

    @classmethod
    def of(cls, entry: Entry, scheme: str = "halp") -> ServerAddress:
        """The server an entry of a servers label names."""
        return cls(entry.host, entry.port, scheme)


class Listed(NamedTuple):
    """A server as a servers label lists it, with its confirmed time."""

    address: ServerAddress
    confirmed: int

    @property
    def entry(self) -> Entry:
        return Entry(self.confirmed, self.address.host, self.address.port)


#: What :meth:`ServerTable.load` and :meth:`ServerTable.learn` take: an
#: entry of the ``halp`` label, or a server of any scheme.
L = TypeVar("L", bound="Entry | Listed")


def _listing(item: Entry | Listed) -> Listed:
    if isinstance(item, Listed):
        return item
    return Listed(ServerAddress.of(item), item.timestamp)


def parse_server(text: str) -> tuple[ServerAddress, Dialect | None]:
    """
    Parse a server as a user writes it: ``HOST:PORT``, ``[IPV6]:PORT``, or
    either prefixed by ``halp://`` (it speaks HALP/1) or ``libhalp://`` (it
    only speaks the 2011 libhalp form).  Without a prefix the dialect is
    found out on first contact.  ``http://HOST[:PORT][/]`` and
    ``https://...`` name a server's HTTP face, at the root of the URL.

    :raises ValueError: with a one-line explanation.
    """
    dialect: Dialect | None = None
    rest = text.strip()
    if rest.lower().startswith(("http://", "https://")):
        return _parse_url(text), "halp1"
    for prefix, name in (("halp://", "halp1"), ("libhalp://", "libhalp")):
        if rest.startswith(prefix):
            rest = rest[len(prefix) :].rstrip("/")
            dialect = name  # type: ignore[assignment]
            break
    if "://" in rest:
        raise ValueError(
            f"bad server {text!r}: expected HOST:PORT, halp://HOST:PORT, "
            "libhalp://HOST:PORT or http(s)://HOST:PORT/"
        )
    try:
        host, port = parse_host_port(rest)
        return ServerAddress(host, port), dialect
    except ProtocolError as e:
        raise ValueError(f"bad server {text!r}: {e.message}") from None


def _parse_url(text: str) -> ServerAddress:
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad server {text!r}: {e}") from None
    scheme = parts.scheme.lower()
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(
            f"bad server {text!r}: a HALP HTTP face is named by {scheme}://HOST:PORT/ "
            "alone (no path, query or user)"
        )
    if not parts.hostname:
        raise ValueError(f"bad server {text!r}: no host")
    try:
        host = check_host(parts.hostname)
        port = check_port(str(port if port is not None else _DEFAULT_PORTS[scheme]))
    except ProtocolError as e:
        raise ValueError(f"bad server {text!r}: {e.message}") from None
    return ServerAddress(host, port, scheme)


@dataclass
class ServerRecord:
    """
    What the client knows about one server.

    :ivar confirmed: the server's time in the ``halp`` label: when it last
        answered this client, or the confirmed time another server reported
        for it, whichever is later.
    :ivar retry_at: while it is in the future, the server is in backoff
        and is asked only when no other server is left.
    """

    host: str
    port: int
    confirmed: int = 0
    quality: int = INITIAL_QUALITY
    successes: int = 0
    failures: int = 0
    failures_in_row: int = 0
    entries: int = 0
    first_seen: int = 0
    last_success: int | None = None
    last_failure: int | None = None
    retry_at: int = 0
    dialect: Dialect | None = None
    #: Whether the dialect was found out (and may be checked again) rather
    #: than told.
    dialect_detected_at: int | None = None
    #: When this client last asked the server for its ``halp`` list.
    learned_at: int = 0
    #: ``halp``, ``http`` or ``https`` (see :class:`ServerAddress`).
    scheme: str = "halp"
    pinned: bool = field(default=False, compare=False)

    @property
    def address(self) -> ServerAddress:
        return ServerAddress(self.host, self.port, self.scheme)

    @property
    def tested(self) -> bool:
        return self.successes > 0 or self.failures > 0

    def in_backoff(self, now: int) -> bool:
        return self.failures_in_row > 0 and now < self.retry_at

    def rank(self, now: int) -> int:
        """0: answered last time; 1: untested, or its backoff is over; 2: in backoff."""
        if self.failures_in_row == 0 and self.last_success is not None:
            return 0
        if self.in_backoff(now):
            return 2
        return 1


#: Fields of a record that are saved (everything but ``pinned``, which
#: comes from the program's configuration on every start).
_SAVED = [name for name in ServerRecord.__dataclass_fields__ if name != "pinned"]

#: Saved fields that hold a count or a time, and those that may also be null.
_COUNTS = frozenset(
    {
        "confirmed",
        "quality",
        "successes",
        "failures",
        "failures_in_row",
        "entries",
        "first_seen",
        "retry_at",
        "learned_at",
    }
)
_OPTIONAL_TIMES = frozenset({"last_success", "last_failure", "dialect_detected_at"})
_DIALECTS = (None, "halp1", "libhalp")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _restore(row: object) -> ServerRecord | None:
    """
    A saved row of :meth:`ServerTable.dump` as a record, or ``None`` if it
    is not one: a row of the wrong shape must not bring a ``None`` or a
    string into the arithmetic of a record.  Missing fields take their
    defaults; unknown ones are ignored.
    """
    if not isinstance(row, dict):
        return None
    values = {k: row[k] for k in _SAVED if k in row}
    host, port = values.get("host"), values.get("port")
    if not isinstance(host, str) or not _is_count(port):
        return None
    try:
        if check_host(host) != host or check_port(str(port)) != port:
            return None
    except ProtocolError:
        return None
    for name, value in values.items():
        if name in _COUNTS and not _is_count(value):
            return None
        if name in _OPTIONAL_TIMES and value is not None and not _is_count(value):
            return None
    if values.get("dialect") not in _DIALECTS:
        return None
    scheme = values.get("scheme", "halp")
    if not isinstance(scheme, str) or scheme not in SERVER_LABELS:
        return None
    return ServerRecord(**values)


#: After this long, a dialect found out by detection is checked again.
DIALECT_RECHECK = 86_400


class ServerTable:
    """
    The known servers: pinned seeds (never evicted) and up to
    ``max_learned`` learned ones.

    :param pinned: seed servers, with the dialect the user gave (if any).
    """

    def __init__(
        self,
        pinned: Sequence[tuple[ServerAddress, Dialect | None]] = (),
        max_learned: int = MAX_LEARNED,
        rng: random.Random | None = None,
    ) -> None:
        self.max_learned = max_learned
        self._rng = rng if rng is not None else random.Random()
        self._records: dict[ServerAddress, ServerRecord] = {}
        self._told: dict[ServerAddress, Dialect] = {}
        #: Servers that misbehaved, and until when they are not learned.
        self._banned: dict[ServerAddress, int] = {}
        self._ban_queue: deque[tuple[int, ServerAddress]] = deque()
        #: Addresses never learned (this program's own).
        self._ignored: set[ServerAddress] = set()
        for address, dialect in pinned:
            record = self._records.get(address)
            if record is None:
                record = self._records[address] = ServerRecord(
                    address.host, address.port, scheme=address.scheme
                )
            record.pinned = True
            if dialect is not None:
                self._told[address] = dialect
                record.dialect = dialect

    # -- persistence ---------------------------------------------------------

    def load(
        self, document: str | None, halp: Iterable[Entry | Listed], now: int
    ) -> list[ServerAddress]:
        """
        Restore the saved table, and add the servers of the cached ``halp``
        label.  A saved server that is no longer in the label (it expired,
        or was removed) is dropped unless pinned.

        :return: servers dropped to keep the learned list within bounds;
            the caller removes them from the ``halp`` label.
        """
        # A damaged document costs statistics only: rows that are not
        # records are skipped, and a document that is not one is ignored.
        saved: dict[ServerAddress, ServerRecord] = {}
        rows: object = []
        if document:
            try:
                parsed = json.loads(document)
                rows = parsed.get("servers", [])
                self._load_banned(parsed.get("banned", []), now)
            except (ValueError, AttributeError, RecursionError):
                rows = []
            for row in rows if isinstance(rows, list) else []:
                record = _restore(row)
                if record is not None:
                    saved[record.address] = record
        for address, record in list(self._records.items()):
            restored = saved.get(address)
            if record.pinned and restored is not None:
                restored.pinned = True
                if address in self._told:
                    restored.dialect = self._told[address]
                    restored.dialect_detected_at = None
                self._records[address] = restored
        for item in halp:
            address, confirmed = _listing(item)
            known = self._records.get(address)
            if known is None and self._refused(address, now):
                continue
            if known is None:
                known = saved.get(address) or ServerRecord(
                    address.host, address.port, first_seen=now, scheme=address.scheme
                )
                self._records[address] = known
            known.confirmed = max(known.confirmed, confirmed)
        for record in self._records.values():
            if not record.first_seen:
                record.first_seen = now
        return self._trim(now)

    def dump(self) -> str:
        """The table as a JSON document, for :meth:`load`."""
        rows = []
        for record in sorted(self._records.values(), key=lambda r: r.address):
            values = asdict(record)
            rows.append({k: values[k] for k in _SAVED})
        banned = [
            {"host": a.host, "port": a.port, "scheme": a.scheme, "until": until}
            for a, until in sorted(self._banned.items())
        ]
        return json.dumps({"version": 1, "servers": rows, "banned": banned}, sort_keys=True)

    def _load_banned(self, rows: object, now: int) -> None:
        bans: list[tuple[int, ServerAddress]] = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            host, port, until = row.get("host"), row.get("port"), row.get("until")
            scheme = row.get("scheme", "halp")
            if not isinstance(scheme, str) or scheme not in SERVER_LABELS:
                continue
            if not (isinstance(host, str) and _is_count(port) and isinstance(until, int)):
                continue
            try:
                address = ServerAddress(check_host(host), check_port(str(port)), scheme)
            except ProtocolError:
                continue
            if until > now:
                bans.append((until, address))
        for until, address in sorted(bans):
            self._ban(address, until, now)

    # -- reading -------------------------------------------------------------

    def __contains__(self, address: object) -> bool:
        return address in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, address: ServerAddress) -> ServerRecord | None:
        return self._records.get(address)

    def vouched_for(self, host: str) -> bool:
        """
        Whether a server at ``host`` is pinned or has answered: its pushes
        are believed.  Asked for every push a server receives, so it does
        not sort the table as :meth:`records` does.
        """
        return any(
            r.host == host and (r.pinned or r.successes > 0) for r in self._records.values()
        )

    def records(self) -> list[ServerRecord]:
        """Every known server, best first (the order :meth:`choose` uses)."""
        return sorted(self._records.values(), key=self._order_key(0))

    @staticmethod
    def _order_key(now: int):  # type: ignore[no-untyped-def]
        def key(r: ServerRecord) -> tuple[int, int, int, ServerAddress]:
            return (r.rank(now), -r.confirmed, -r.quality, r.address)

        return key

    def choose(self, now: int, width: int) -> list[ServerRecord]:
        """
        Every known server in the order to ask them, ``width`` being how
        many will be asked at once.

        Servers that answered last time come first, the most recently
        confirmed first (libhalp's "bring the first working server to the
        top"); then untested servers and those whose backoff is over; then
        those still in backoff, which are asked only when nothing else is
        left.  When ``width`` is 2 or more and an untested server exists,
        one of them, drawn at random, takes the last of the first ``width``
        places, so that new servers are tried one at a time (GNUnet tests
        learned servers the same way) without delaying the answer.  At
        random, not the most recently confirmed: a hostile server lists its
        accomplices as confirmed just now, and the simulator found cold
        clients trying only them, one lookup after another.
        """
        ordered = sorted(self._records.values(), key=self._order_key(now))
        if width >= 2 and len(ordered) > width:
            first = ordered[:width]
            if not any(not r.tested for r in first):
                untested = [
                    i
                    for i, record in enumerate(ordered[width:], width)
                    if not record.tested and not record.in_backoff(now)
                ]
                if untested:
                    ordered.insert(width - 1, ordered.pop(self._rng.choice(untested)))
        return ordered

    def dialect(self, address: ServerAddress, now: int) -> Dialect | None:
        """How to talk to a server: ``None`` means "find out"."""
        if address.scheme != "halp":
            return "halp1"  # an HTTP face: its answers are HALP/1's
        if address in self._told:
            return self._told[address]
        record = self._records[address]
        if (
            record.dialect == "libhalp"
            and record.dialect_detected_at is not None
            and now - record.dialect_detected_at >= DIALECT_RECHECK
        ):
            return None
        return record.dialect

    def usable(self, record: ServerRecord) -> bool:
        """
        Whether a server may be used for replication: a pinned server, or
        a learned one that passed a test, and in either case one whose
        last exchange did not fail.
        """
        return (record.pinned or record.successes > 0) and record.failures_in_row == 0

    def trusted(self) -> list[ServerRecord]:
        """The :meth:`usable` servers, highest quality first."""
        usable = [r for r in self._records.values() if self.usable(r)]
        return sorted(usable, key=lambda r: (-r.quality, r.address))

    def next_to_test(self, now: int, busy: Iterable[ServerAddress] = ()) -> ServerRecord | None:
        """
        The server to test next, or ``None``: one that is not
        :meth:`usable` and not in backoff, never tested ones first (the
        newest confirmed first), then the one whose backoff ended first.
        """
        skip = set(busy)
        waiting = [
            r
            for r in self._records.values()
            if not self.usable(r) and not r.in_backoff(now) and r.address not in skip
        ]
        if not waiting:
            return None
        return min(waiting, key=lambda r: (r.tested, r.retry_at, -r.confirmed, r.address))

    def banned(self, now: int) -> dict[ServerAddress, int]:
        """Servers banned for misbehaving, with the time their ban ends."""
        return {a: until for a, until in self._banned.items() if until > now}

    def ignore(self, address: ServerAddress) -> None:
        """Never learn ``address`` (it is this program), and forget it now."""
        self._ignored.add(address)
        self._records.pop(address, None)

    def _ban(self, address: ServerAddress, until: int, now: int) -> None:
        """Ban ``address`` until ``until``; drop bans that ended, and the oldest beyond MAX_BANNED."""
        # Bans are made in time order, so the queue is in order of their end.
        queue = self._ban_queue
        while queue and (queue[0][0] <= now or len(self._banned) >= MAX_BANNED):
            ends, banned = queue.popleft()
            if self._banned.get(banned) == ends:
                del self._banned[banned]
        self._banned[address] = until
        queue.append((until, address))

    def _refused(self, address: ServerAddress, now: int) -> bool:
        if address in self._ignored:
            return True
        until = self._banned.get(address)
        if until is None:
            return False
        if until <= now:
            del self._banned[address]
            return False
        return True

    # -- what happened -------------------------------------------------------

    def succeeded(
        self, address: ServerAddress, now: int, entries: int, dialect: Dialect
    ) -> None:
        """A server answered, delivering ``entries`` valid entries."""
        record = self._records.get(address)
        if record is None:
            return
        record.successes += 1
        record.failures_in_row = 0
        record.retry_at = 0
        record.last_success = now
        record.confirmed = max(record.confirmed, now)
        record.entries += entries
        record.quality += QUALITY_ANSWER + QUALITY_ENTRY * entries
        self.set_dialect(address, dialect, now)

    def set_dialect(self, address: ServerAddress, dialect: Dialect, now: int) -> None:
        record = self._records[address]
        if address in self._told:
            return
        if dialect == "libhalp":
            if record.dialect != "libhalp" or record.dialect_detected_at is None:
                record.dialect_detected_at = now
            elif now - record.dialect_detected_at >= DIALECT_RECHECK:
                record.dialect_detected_at = now
        else:
            record.dialect_detected_at = None
        record.dialect = dialect

    def learned_from(self, address: ServerAddress, now: int) -> None:
        """The server's ``halp`` list was just read."""
        record = self._records.get(address)
        if record is not None:
            record.learned_at = now

    def failed(self, address: ServerAddress, now: int) -> list[ServerAddress]:
        """
        A server could not be reached or gave a bad answer.

        :return: the server itself if it is now forgotten.
        """
        record = self._records.get(address)
        if record is None:
            return []
        record.failures += 1
        record.failures_in_row += 1
        record.last_failure = now
        record.quality = max(0, record.quality - QUALITY_FAILURE)
        delay = min(BACKOFF_BASE * 2 ** min(record.failures_in_row - 1, 30), BACKOFF_CAP)
        record.retry_at = now + delay
        if address not in self._told:
            # Whatever answers there next may be another program: find out
            # again, with the plain request that any HALP server takes.
            record.dialect = None
            record.dialect_detected_at = None
        last_heard = record.last_success if record.last_success is not None else record.first_seen
        if (
            not record.pinned
            and record.failures_in_row >= FORGET_FAILURES
            and now - last_heard >= FORGET_AFTER
        ):
            del self._records[address]
            return [address]
        return []

    def misbehaved(self, address: ServerAddress, now: int) -> list[ServerAddress]:
        """
        A server answered with something that is not HALP/1: garbage, a
        broken answer, or an answer that breaks the protocol's limits.

        It counts as a failure and costs :data:`QUALITY_MISBEHAVED`.  A
        learned server is forgotten and banned for :data:`BAN_TIME`; a
        pinned one is not asked for :data:`PINNED_BAN_TIME` at least.

        :return: the server itself if it is now forgotten.
        """
        record = self._records.get(address)
        if record is None:
            return []
        forgotten = self.failed(address, now)
        record.quality = max(0, record.quality - (QUALITY_MISBEHAVED - QUALITY_FAILURE))
        if record.pinned:
            record.retry_at = max(record.retry_at, now + PINNED_BAN_TIME)
            return forgotten
        self._ban(address, now + BAN_TIME, now)
        self._records.pop(address, None)
        return [address]

    def learn(
        self, entries: Iterable[L], now: int, *, insist: bool = False
    ) -> tuple[list[L], list[ServerAddress]]:
        """
        Take in ``halp`` entries (or :class:`Listed` servers of any scheme)
        that a server reported (or, with ``insist``, that the user added by
        hand).  Servers of every scheme share the table and its bounds.

        A known server's confirmed time moves forward (a time in the
        future counts as ``now``, as in the label store).  A new one is added
        while fewer than ``max_learned`` learned servers are known;
        otherwise it replaces the worst learned server (lowest quality,
        then oldest confirmed) only if it beats it, so untested newcomers
        can push out untested or failing servers but never one that has
        answered (its quality is above the starting value).  With
        ``insist`` the newcomer always gets in.

        :return: the entries (or listed servers) to store in their servers
            label, and the servers evicted, to remove from theirs.  Newcomers of one call may
            push each other out: only servers in the table at the end are
            kept, and only servers no longer in it are evicted.
        """
        keep: list[L] = []
        evicted: list[ServerAddress] = []
        for entry in entries:
            address, confirmed = _listing(entry)
            confirmed = min(confirmed, now)
            record = self._records.get(address)
            if record is not None:
                record.confirmed = max(record.confirmed, confirmed)
                keep.append(entry)
                continue
            if self._refused(address, now) and not insist:
                continue
            self._banned.pop(address, None)
            learned = [r for r in self._records.values() if not r.pinned]
            if len(learned) >= self.max_learned:
                if not learned:
                    continue  # max_learned is 0: only the seeds are kept
                # A server that ever answered is not pushed out by a
                # newcomer nobody tested (a flood of halp entries), even
                # while it fails for a while: it is forgotten by the
                # failure rule instead.
                unproven = [r for r in learned if r.successes == 0] or learned
                worst = min(unproven, key=lambda r: (r.quality, r.confirmed, r.address))
                if not insist and (
                    worst.successes > 0
                    or (worst.quality, worst.confirmed) >= (INITIAL_QUALITY, confirmed)
                ):
                    continue
                del self._records[worst.address]
                evicted.append(worst.address)
            self._records[address] = ServerRecord(
                address.host,
                address.port,
                confirmed=confirmed,
                first_seen=now,
                scheme=address.scheme,
            )
            keep.append(entry)
        keep = [e for e in keep if _listing(e).address in self._records]
        evicted = [a for a in dict.fromkeys(evicted) if a not in self._records]
        return keep, evicted

    def _trim(self, now: int) -> list[ServerAddress]:
        learned = sorted(
            (r for r in self._records.values() if not r.pinned),
            key=lambda r: (r.quality, r.confirmed, r.address),
        )
        dropped = []
        while len(learned) > self.max_learned:
            record = learned.pop(0)
            del self._records[record.address]
            dropped.append(record.address)
        return dropped
