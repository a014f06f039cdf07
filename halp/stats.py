# -*- test-case-name: halp.test.test_stats -*-
"""
A server's counters: what the ``stats`` request answers, what the logs
summarize, and what ``/metrics`` and the status page show.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from dataclasses import dataclass
from typing import Iterator

__all__ = ["COUNTERS", "RecentError", "Stats", "Traffic", "client_network"]

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
    "inserts-throttled": "inserts refused because the client inserted more than its rate",
    "entries-verified": "entries stored once a probe reached a host another sender named",
    "entries-unverified": "entries dropped: their host could not be reached, or not in time",
    "verify-probes-sent": "probes sent to hosts named by someone else (TCP connect or hello)",
    "verify-probes-ok": "probes that reached their host",
    "verify-probes-failed": "probes that did not",
    "verify-claims-queued": "entries that waited for a probe of their host",
    "verify-claims-confirmed": "waiting entries whose host a probe reached",
    "verify-claims-unreachable": "waiting entries whose host a probe could not reach",
    "verify-claims-expired": "waiting entries dropped after waiting too long for a probe",
    "verify-claims-refused-busy": "entries refused because too many hosts (of their network) wait",
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


@dataclass(frozen=True, slots=True)
class RecentError:
    """A request that was answered with an error, as the status page lists it."""

    #: POSIX seconds.
    time: int
    #: ``halp1`` (the line protocol) or ``http``.
    frontend: str
    #: The client's network, not its address (see :func:`client_network`).
    network: str
    #: What was asked, in a few words (no request bodies).
    request: str
    #: The error code (``bad-label``, ``unavailable``, ``not-found``...).
    code: str
    message: str


#: Results that are not errors.
OK_RESULTS = frozenset({"ok", "not-modified"})


def client_network(host: str) -> str:
    """
    The network a client is in, for pages that others may read: its IPv4
    /24 or IPv6 /48, not its address; a name or an unknown host is
    ``"?"``.
    """
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        return "?"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client of a dual-stack listener
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class Traffic:
    """
    What the server's front ends answered: requests by front end, kind and
    result (for ``/metrics``), open connections, and the latest errors (for
    the status page).

    :param recent: how many errors to remember.
    """

    def __init__(self, recent: int = 50) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.connections: Counter[str] = Counter()
        self.recent: deque[RecentError] = deque(maxlen=recent)

    def record(
        self,
        frontend: str,
        kind: str,
        result: str,
        *,
        when: int,
        peer: str = "",
        request: str = "",
        message: str = "",
    ) -> None:
        """
        Count one answered request; ``result`` is ``ok``, ``not-modified``
        or an error code.  An error is also remembered, with ``peer`` (a
        host) reduced to its network.
        """
        self.requests[(frontend, kind, result)] += 1
        if result not in OK_RESULTS:
            self.recent.append(
                RecentError(
                    when, frontend, client_network(peer), request or kind, result, message
                )
            )

    def connected(self, frontend: str, change: int) -> None:
        """A connection to ``frontend`` opened (``+1``) or closed (``-1``)."""
        self.connections[frontend] += change
