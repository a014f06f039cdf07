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

from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from halp import __version__
from halp.interfaces import IHostStore
from halp.model import Entry, LabelInfo, Limits, RejectedEntry, Window

__all__ = ["HALPCore", "Page", "Refused", "Stored", "PROTOCOL_VERSION"]

#: The protocol this core speaks, as announced by ``hello``.
PROTOCOL_VERSION = "HALP/1"

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
    """An entry that was not stored in ``label``, with the reason."""

    label: str
    raw: str
    reason: str


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
        self, store: IHostStore, clock: IReactorTime, limits: Limits = Limits()
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits

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

    def insert(
        self, labels: Sequence[str], candidates: Sequence[Entry | RejectedEntry]
    ) -> Deferred[list[Stored | Refused]]:
        """
        Merge entries into labels.

        A time in the future is stored as "now"; an entry that expired
        already is refused, as is one that the label's cap evicts at once.
        Entries the codec could not parse come in as :class:`~halp.model.RejectedEntry`
        and are refused with their reason, so that the answer accounts for
        every line offered.

        :param labels: valid labels, without duplicates.
        :return: a Deferred firing with one outcome per label per
            candidate, labels outermost, both in the order given.
        """
        now = self.now()
        oldest = now - self.limits.ttl
        refused: dict[int, tuple[str, str]] = {}
        accepted: list[Entry] = []
        positions: list[int] = []
        for i, candidate in enumerate(candidates):
            if isinstance(candidate, RejectedEntry):
                refused[i] = (candidate.raw, candidate.reason)
            elif candidate.timestamp < oldest:
                refused[i] = (
                    _raw(candidate),
                    f"expired: confirmed more than {self.limits.ttl} s ago",
                )
            else:
                if candidate.timestamp > now:
                    candidate = Entry(now, candidate.host, candidate.port)
                accepted.append(candidate)
                positions.append(i)
        if accepted:
            d = self.store.insert(labels, accepted, self.limits.max_entries)
        else:
            d = succeed([[] for _ in labels])

        def outcomes(stored: list[list[int | None]]) -> list[Stored | Refused]:
            result: list[Stored | Refused] = []
            for label, times in zip(labels, stored):
                when = dict(zip(positions, times))
                for i, candidate in enumerate(candidates):
                    if i in refused:
                        result.append(Refused(label, *refused[i]))
                        continue
                    assert isinstance(candidate, Entry)
                    t = when[i]
                    if t is None:
                        result.append(
                            Refused(
                                label,
                                _raw(candidate),
                                f"evicted: the label keeps its "
                                f"{self.limits.max_entries} newest entries",
                            )
                        )
                    else:
                        result.append(Stored(label, Entry(t, candidate.host, candidate.port)))
            return result

        return d.addCallback(outcomes)

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
        ]

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
