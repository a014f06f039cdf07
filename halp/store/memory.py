# -*- test-case-name: halp.test.test_store -*-
"""
An in-memory :class:`~halp.interfaces.IHostStore`: fast, and gone when the
process ends.  Used with ``--store memory``, as a client's scratch cache and
as the model the other stores are tested against.
"""

from __future__ import annotations

from typing import Sequence

from sortedcontainers import SortedList
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from halp.interfaces import IHostStore
from halp.model import Entry, LabelInfo, label_ancestors, label_parent

__all__ = ["MemoryStore"]

# Sort keys: (-timestamp, host, port) for entries and (-timestamp, name) for
# index rows, so that ascending order is newest first with stable ties.
_EntryKey = tuple[int, str, int]
_IndexKey = tuple[int, str]


class _Label:
    __slots__ = ("times", "order")

    def __init__(self) -> None:
        self.times: dict[tuple[str, int], int] = {}
        self.order: SortedList[_EntryKey] = SortedList()

    def merge(self, entry: Entry) -> int:
        address = entry.address
        old = self.times.get(address)
        if old is not None:
            if old >= entry.timestamp:
                return old
            self.order.remove((-old, entry.host, entry.port))
        self.times[address] = entry.timestamp
        self.order.add((-entry.timestamp, entry.host, entry.port))
        return entry.timestamp

    def remove(self, host: str, port: int) -> bool:
        when = self.times.pop((host, port), None)
        if when is None:
            return False
        self.order.remove((-when, host, port))
        return True

    def evict_oldest(self) -> tuple[str, int]:
        _, host, port = self.order.pop()
        del self.times[(host, port)]
        return (host, port)

    def purge(self, before: int) -> int:
        removed = 0
        while self.order and -self.order[-1][0] < before:
            self.evict_oldest()
            removed += 1
        return removed


@implementer(IHostStore)
class MemoryStore:
    """
    Labels as sorted lists in a dict: every operation is ``O(log n)`` in the
    size of a label, and a ``get`` costs ``O(log n + width)``.
    """

    name = "memory"

    def __init__(self) -> None:
        self._labels: dict[str, _Label] = {}
        self._index: dict[str, int] = {}
        self._children: dict[str, SortedList[_IndexKey]] = {}
        self._state: dict[str, str] = {}

    def insert(
        self, labels: Sequence[str], entries: Sequence[Entry], max_entries: int
    ) -> Deferred[list[list[int | None]]]:
        results: list[list[int | None]] = []
        for label in labels:
            table = self._labels.get(label)
            if table is None:
                table = self._labels[label] = _Label()
            stored: list[int | None] = [table.merge(entry) for entry in entries]
            evicted = set()
            while len(table.times) > max_entries:
                evicted.add(table.evict_oldest())
            if evicted:
                stored = [
                    None if entry.address in evicted else when
                    for entry, when in zip(entries, stored)
                ]
            if not table.times:
                del self._labels[label]
            kept = [when for when in stored if when is not None]
            if kept:
                self._touch(label, max(kept))
            results.append(stored)
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

    def remove(self, label: str, addresses: Sequence[tuple[str, int]]) -> Deferred[int]:
        table = self._labels.get(label)
        removed = 0
        if table is not None:
            removed = sum(table.remove(host, port) for host, port in addresses)
            if not table.times:
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
            removed += table.purge(before)
            if not table.times:
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
