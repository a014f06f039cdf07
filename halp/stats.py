# -*- test-case-name: halp.test.test_stats -*-
"""
A server's counters: what the ``stats`` request answers, what the logs
summarize, and (later) what metrics export.
"""

from __future__ import annotations

from typing import Iterator

__all__ = ["COUNTERS", "Stats"]

#: Every counter, with what it counts.  Names are stable: operators graph
#: them.
COUNTERS: dict[str, str] = {
    "entries-inserted": "entries that client inserts added or confirmed here",
    "push-sent": "push requests sent to peers",
    "push-failed": "push requests to peers that failed (not answered, or refused)",
    "entries-pushed": "entries sent in push requests that peers answered",
    "push-received": "push requests received from peers",
    "push-throttled": "push requests refused because the peer sent too much",
    "entries-replicated": "entries from pushes that added or confirmed something here",
    "pull-sent": "changes requests sent to peers",
    "pull-failed": "changes requests to peers that failed",
    "entries-pulled": "entries from changes answers that added or confirmed something here",
    "entries-rejected": "replicated entries refused (malformed, expired, or evicted at once)",
    "changes-served": "changes requests answered",
    "peers-learned": "servers learned from the halp label",
    "peers-evicted": "learned servers evicted to make room for others",
    "peers-forgotten": "learned servers forgotten after failing for too long",
    "peers-banned": "servers banned for answering with something that is not HALP/1",
    "peer-tests": "tests of servers that were not trusted (a hello request)",
    "peer-tests-failed": "tests of servers that failed",
}


class Stats:
    """Counters that only go up, named in :data:`COUNTERS`."""

    def __init__(self) -> None:
        self._values = dict.fromkeys(COUNTERS, 0)

    def increment(self, name: str, by: int = 1) -> None:
        """Add ``by`` to the counter ``name``; :class:`KeyError` if unknown."""
        self._values[name] += by

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        """``(name, value)`` for every counter, in the documented order."""
        return iter(self._values.items())
