# -*- test-case-name: halp.test.test_store -*-
"""
An in-memory :class:`~halp.interfaces.IHostStore`: fast, and gone when the
process ends.  Used with ``--store memory``, as a client's scratch cache and
as the model the other stores are tested against.
"""

from __future__ import annotations

import secrets
from typing import Sequence

from sortedcontainers import SortedDict, SortedList
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

# Sort keys: (-timestamp, host, port) for entries and (-timestamp, name) for
# index rows, so that ascending order is newest first with stable ties.
_EntryKey = tuple[int, str, int]
_IndexKey = tuple[int, str]


class _Row:
    """An entry's confirmed time, change-feed position, provenance and
    network group (:func:`~halp.model.address_group` of its source)."""

    __slots__ = ("ts", "seq", "source", "via", "group")

    def __init__(self, ts: int, seq: int, source: str, via: str, group: str) -> None:
        self.ts = ts
        self.seq = seq
        self.source = source
        self.via = via
        self.group = group


class _Label:
    """
    A label's entries: by address, in serving order, and in serving order
    per network group (group ``""`` is exempt from quotas and not kept
    there), so that a group's count and oldest entry cost ``O(1)``.
    """

    __slots__ = ("rows", "order", "groups")

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], _Row] = {}
        self.order: SortedList[_EntryKey] = SortedList()
        self.groups: dict[str, SortedList[_EntryKey]] = {}

    def add(self, host: str, port: int, row: _Row) -> None:
        key = (-row.ts, host, port)
        self.rows[(host, port)] = row
        self.order.add(key)
        if row.group:
            members = self.groups.get(row.group)
            if members is None:
                members = self.groups[row.group] = SortedList()
            members.add(key)

    def remove(self, host: str, port: int) -> _Row | None:
        row = self.rows.pop((host, port), None)
        if row is not None:
            key = (-row.ts, host, port)
            self.order.remove(key)
            if row.group:
                members = self.groups[row.group]
                members.remove(key)
                if not members:
                    del self.groups[row.group]
        return row

    def oldest(self) -> tuple[str, int]:
        _, host, port = self.order[-1]
        return (host, port)

    def group_excess(self, group: str, limit: int) -> list[tuple[str, int]]:
        """The oldest entries of ``group`` beyond the first ``limit``."""
        members = self.groups.get(group)
        if members is None or len(members) <= limit:
            return []
        return [(host, port) for _, host, port in members[limit:]]


@implementer(IHostStore)
class MemoryStore:
    """
    Labels as sorted lists in a dict: every operation is ``O(log n)`` in the
    size of a label, and a ``get`` costs ``O(log n + width)``.  The change
    feed is a sorted map from change number to entry.
    """

    name = "memory"

    def __init__(self) -> None:
        self._labels: dict[str, _Label] = {}
        self._index: dict[str, int] = {}
        self._children: dict[str, SortedList[_IndexKey]] = {}
        self._state: dict[str, str] = {}
        # The change feed: seq -> (label, host, port), one item per entry.
        self._feed: SortedDict[int, tuple[str, str, int]] = SortedDict()
        self._seq = 0
        # A new store numbers its changes afresh: cursors of another
        # instance mean nothing here.
        self._epoch = secrets.token_hex(8)

    def _drop(self, label: str, table: _Label, host: str, port: int) -> None:
        row = table.remove(host, port)
        if row is not None:
            del self._feed[row.seq]

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
            address = entry.address
            if max_per_group > 0:
                where.setdefault((label, *address), []).append(i)
            row = table.rows.get(address)
            if row is not None and row.ts >= entry.timestamp:
                results.append(Merged(row.ts, False))
                continue
            if row is not None:
                self._drop(label, table, *address)
            self._seq += 1
            group = address_group(change.source)
            table.add(
                entry.host,
                entry.port,
                _Row(entry.timestamp, self._seq, change.source, change.via, group),
            )
            self._feed[self._seq] = (label, entry.host, entry.port)
            results.append(Merged(entry.timestamp, True))
            if max_per_group > 0 and group:
                for victim in table.group_excess(group, max_per_group):
                    self._drop(label, table, *victim)
                    for j in where.get((label, *victim), ()):
                        results[j] = Merged(None, False)
        for label, positions in touched.items():
            table = self._labels[label]
            evicted = set()
            while len(table.rows) > max_entries:
                address = table.oldest()
                self._drop(label, table, *address)
                evicted.add(address)
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
            for negative, host, port in table.order.islice(start, stop):
                if -negative < since:
                    break
                result.append(Entry(-negative, host, port))
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
        for seq in self._feed.irange(minimum=after + 1):
            label, host, port = self._feed[seq]
            row = self._labels[label].rows[(host, port)]
            if row.ts < since:
                continue
            if len(found) >= limit:
                more = True
                break
            found.append(Change(label, Entry(row.ts, host, port), row.source, row.via))
            last = seq
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
                if (host, port) in table.rows:
                    self._drop(label, table, host, port)
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
            while table.order and -table.order[-1][0] < before:
                self._drop(label, table, *table.oldest())
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
