# -*- test-case-name: halp.test.test_store -*-
"""
An in-memory :class:`~halp.interfaces.IHostStore`: fast, and gone when the
process ends.  Used with ``--store memory``, as a client's scratch cache and
as the model the other stores are tested against.
"""

from __future__ import annotations

import secrets
from array import array
from bisect import bisect_right
from itertools import compress
from operator import not_
from typing import Final, Sequence

from sortedcontainers import SortedList
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from halp.interfaces import IHostStore
from halp.model import (
    Census,
    Change,
    ChangePage,
    Entry,
    LabelCount,
    LabelInfo,
    Merged,
    address_group,
    label_ancestors,
    label_parent,
)
from halp.store.cursor import make_cursor, parse_cursor

__all__ = ["MemoryStore"]

#: An entry of a label, with what the store keeps about it:
#: ``(-timestamp, host, port, label, source, via)``.  As a plain tuple it
#: sorts newest first with stable ties (``(host, port)`` is unique within a
#: label), costs one object, and is what every index holds; the negative
#: timestamps and the ports are shared objects (see
#: :meth:`MemoryStore._shared`), so that an entry costs about 230 bytes.
_Row = tuple[int, str, int, str, str, str]
_NEG_TS: Final = 0
_HOST: Final = 1
_PORT: Final = 2
_LABEL: Final = 3
_SOURCE: Final = 4
_VIA: Final = 5
_IndexKey = tuple[int, str]


class _Label:
    """
    A label's entries: by address, in serving order, and in serving order
    per network group (group ``""`` is exempt from quotas and not kept
    there), so that a group's count and oldest entry cost ``O(1)``.

    By address, an entry is found under its host, or, when another port of
    the same host came first, under ``(host, port)``: one key object less
    for most entries.
    """

    __slots__ = ("rows", "order", "groups")

    def __init__(self) -> None:
        self.rows: dict[str | tuple[str, int], _Row] = {}
        self.order: SortedList[_Row] = SortedList()
        self.groups: dict[str, SortedList[_Row]] = {}

    def find(self, host: str, port: int) -> _Row | None:
        row = self.rows.get(host)
        if row is not None and row[_PORT] == port:
            return row
        return self.rows.get((host, port))

    def add(self, row: _Row) -> None:
        host = row[_HOST]
        if host in self.rows:
            self.rows[(host, row[_PORT])] = row
        else:
            self.rows[host] = row
        self.order.add(row)
        group = address_group(row[_SOURCE])
        if group:
            members = self.groups.get(group)
            if members is None:
                members = self.groups[group] = SortedList()
            members.add(row)

    def remove(self, row: _Row) -> None:
        host = row[_HOST]
        if self.rows.get(host) is row:
            del self.rows[host]
        else:
            del self.rows[(host, row[_PORT])]
        self.order.remove(row)
        group = address_group(row[_SOURCE])
        if group:
            members = self.groups[group]
            members.remove(row)
            if not members:
                del self.groups[group]

    def group_excess(self, group: str, limit: int) -> list[_Row]:
        """The oldest entries of ``group`` beyond the first ``limit``."""
        members = self.groups.get(group)
        if members is None or len(members) <= limit:
            return []
        return list(members[limit:])


#: Port numbers as shared objects (at most 65,536 of them).
_PORTS: dict[int, int] = {}


@implementer(IHostStore)
class MemoryStore:
    """
    Labels as sorted lists in a dict: every operation is ``O(log n)`` in the
    size of a label, and a ``get`` costs ``O(log n + width)``.  The change
    feed is a list in change order, searched by bisection, compacted now
    and then (amortised ``O(1)`` per change).

    :param epoch: names this store's change numbers in its cursors (default:
        random, so that another instance's cursors are refused); the
        simulator passes one from its seed.
    """

    name = "memory"

    def __init__(self, epoch: str | None = None) -> None:
        self._labels: dict[str, _Label] = {}
        self._index: dict[str, int] = {}
        self._children: dict[str, SortedList[_IndexKey]] = {}
        self._state: dict[str, str] = {}
        # The change feed: rows in the order they were stored, with their
        # change numbers beside them.  It only grows at its end: rows
        # dropped from their label stay, their ids in _dead, until they are
        # a quarter of it, when it is compacted.
        self._feed: list[_Row] = []
        self._feed_seqs = array("q")
        self._dead: set[int] = set()
        self._seq = 0
        # Recent negative timestamps as shared objects (see _Row).
        self._stamps: dict[int, int] = {}
        # A new store numbers its changes afresh: cursors of another
        # instance mean nothing here.
        self._epoch = secrets.token_hex(8) if epoch is None else epoch

    def _shared(self, timestamp: int, port: int) -> tuple[int, int]:
        """``-timestamp`` and ``port`` as objects other rows share."""
        stamps = self._stamps
        negative = stamps.get(-timestamp)
        if negative is None:
            if len(stamps) >= 4096:
                stamps.clear()
            negative = stamps[-timestamp] = -timestamp
        shared = _PORTS.get(port)
        if shared is None:
            shared = _PORTS[port] = port
        return negative, shared

    def _add(self, table: _Label, row: _Row) -> None:
        table.add(row)
        self._seq += 1
        self._feed.append(row)
        self._feed_seqs.append(self._seq)

    def _drop(self, table: _Label, row: _Row) -> None:
        table.remove(row)
        # The feed holds the row until compaction: its id stays its own.
        self._dead.add(id(row))
        if len(self._dead) > 1024 and len(self._dead) * 4 > len(self._feed):
            self._compact()

    def _compact(self) -> None:
        """Leave the dead rows out of the change feed (in C loops: about
        0.1 s per million rows)."""
        feed = self._feed
        keep = list(map(not_, map(self._dead.__contains__, map(id, feed))))
        self._feed = list(compress(feed, keep))
        self._feed_seqs = array("q", compress(self._feed_seqs, keep))
        self._dead.clear()

    def merge(
        self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        results: list[Merged] = []
        touched: dict[str, list[int]] = {}
        # Where each (label, host, port) was merged so far, to report the
        # entries that the group quota evicts.
        where: dict[tuple[str, str, int], list[int]] = {}
        for i, change in enumerate(changes):
            label, entry = change.label, change.entry
            table = self._labels.get(label)
            if table is None:
                table = self._labels[label] = _Label()
            touched.setdefault(label, []).append(i)
            host, port = entry.host, entry.port
            if max_per_group > 0:
                where.setdefault((label, host, port), []).append(i)
            row = table.find(host, port)
            if row is not None and -row[_NEG_TS] >= entry.timestamp:
                results.append(Merged(-row[_NEG_TS], False))
                continue
            if row is not None:
                self._drop(table, row)
            negative, port = self._shared(entry.timestamp, port)
            self._add(table, (negative, host, port, label, change.source, change.via))
            results.append(Merged(entry.timestamp, True))
            group = address_group(change.source)
            if max_per_group > 0 and group:
                for victim in table.group_excess(group, max_per_group):
                    self._drop(table, victim)
                    for j in where.get((label, victim[_HOST], victim[_PORT]), ()):
                        results[j] = Merged(None, False)
        for label, positions in touched.items():
            table = self._labels[label]
            evicted = set()
            while len(table.rows) > max_entries:
                victim = table.order[-1]
                self._drop(table, victim)
                evicted.add((victim[_HOST], victim[_PORT]))
            if evicted:
                for i in positions:
                    if changes[i].entry.address in evicted:
                        results[i] = Merged(None, False)
            if not table.rows:
                del self._labels[label]
            kept = [t for i in positions if (t := results[i].stored) is not None]
            if kept:
                self._touch(label, max(kept))
        return succeed(results)

    def _touch(self, label: str, when: int) -> None:
        for name in label_ancestors(label):
            old = self._index.get(name)
            if old is not None and old >= when:
                continue
            siblings = self._children.get(label_parent(name))
            if siblings is None:
                siblings = self._children[label_parent(name)] = SortedList()
            if old is not None:
                siblings.remove((-old, name))
            siblings.add((-when, name))
            self._index[name] = when

    def get(
        self, label: str, start: int, stop: int, since: int
    ) -> Deferred[list[Entry]]:
        table = self._labels.get(label)
        result: list[Entry] = []
        if table is not None:
            make = tuple.__new__  # Entry(...) without its argument handling
            for row in table.order.islice(start, stop):
                if -row[_NEG_TS] < since:
                    break
                result.append(make(Entry, (-row[_NEG_TS], row[_HOST], row[_PORT])))
        return succeed(result)

    def list_labels(
        self, parent: str, start: int, stop: int, since: int
    ) -> Deferred[list[LabelInfo]]:
        siblings = self._children.get(parent)
        result: list[LabelInfo] = []
        if siblings is not None:
            for negative, name in siblings.islice(start, stop):
                if -negative < since:
                    break
                result.append(LabelInfo(-negative, name))
        return succeed(result)

    def changes(self, cursor: str, limit: int, since: int) -> Deferred[ChangePage]:
        after = parse_cursor(cursor, self._epoch)
        found: list[Change] = []
        last = after
        more = False
        feed, seqs = self._feed, self._feed_seqs
        for i in range(bisect_right(seqs, after), len(feed)):
            row = feed[i]
            if -row[_NEG_TS] < since or id(row) in self._dead:
                continue
            if len(found) >= limit:
                more = True
                break
            entry = Entry(-row[_NEG_TS], row[_HOST], row[_PORT])
            found.append(Change(row[_LABEL], entry, row[_SOURCE], row[_VIA]))
            last = seqs[i]
        return succeed(ChangePage(found, make_cursor(self._epoch, last), more))

    def census(self, since: int, limit: int) -> Deferred[Census]:
        counts = [
            LabelCount(name, len(table.rows), self._index[name])
            for name, table in self._labels.items()
            if self._index.get(name, since - 1) >= since
        ]
        counts.sort(key=lambda c: (-c.active, c.name))
        total = sum(c.entries for c in counts)
        return succeed(Census(len(counts), total, counts[: max(0, limit)]))

    def remove(self, label: str, addresses: Sequence[tuple[str, int]]) -> Deferred[int]:
        table = self._labels.get(label)
        removed = 0
        if table is not None:
            for host, port in addresses:
                row = table.find(host, port)
                if row is not None:
                    self._drop(table, row)
                    removed += 1
            if not table.rows:
                del self._labels[label]
        return succeed(removed)

    def get_state(self, key: str) -> Deferred[str | None]:
        return succeed(self._state.get(key))

    def put_state(self, key: str, value: str | None) -> Deferred[None]:
        if value is None:
            self._state.pop(key, None)
        else:
            self._state[key] = value
        return succeed(None)

    def purge(self, before: int) -> Deferred[int]:
        removed = 0
        for label in list(self._labels):
            table = self._labels[label]
            while table.order and -table.order[-1][_NEG_TS] < before:
                self._drop(table, table.order[-1])
                removed += 1
            if not table.rows:
                del self._labels[label]
        for parent in list(self._children):
            siblings = self._children[parent]
            while siblings and -siblings[-1][0] < before:
                _, name = siblings.pop()
                del self._index[name]
            if not siblings:
                del self._children[parent]
        return succeed(removed)

    def close(self) -> Deferred[None]:
        return succeed(None)
