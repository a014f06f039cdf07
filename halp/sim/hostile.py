# -*- test-case-name: halp.test.test_simhostile -*-
"""
Hostile servers for the simulator: :class:`~halp.core.HALPCore`
subclasses that keep the real codec, protocols, store and federation and
change only what a lying server would change.

- :class:`DroppingCore` (``drop``) answers every insert, push and pull
  as stored and merges none of it: what reaches it goes no further, and
  it serves the entries it had when the run began.
- ``stale`` is a dropping server whose store the simulator fills with the
  entries of some hours before: it serves peers that have mostly left.
- :class:`LyingCore` (``attacker``) answers every ``get`` with addresses
  the attacker controls, confirmed now: sybil hosts for any label, the
  hostile servers for the ``halp`` label (so that clients learn only
  them).  It drops what it is sent.
- ``flood`` is an honest core whose simulator inserts batches of sybil
  entries into it now and then, which its real federation pushes on.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, succeed

from halp.core import HALPCore, Page
from halp.federation import SERVERS_LABEL
from halp.model import Change, Entry, Merged, Window

__all__ = ["DroppingCore", "LyingCore"]


class DroppingCore(HALPCore):
    """A server that acknowledges what it is sent and keeps none of it."""

    def _merge(self, changes: list[Change]) -> Deferred[list[Merged]]:
        return succeed([Merged(c.entry.timestamp, False) for c in changes])


class LyingCore(DroppingCore):
    """
    A server whose every answer is the attacker's.

    :param sybils: ``sybils(count, now)`` gives ``count`` attacker
        addresses as entries confirmed ``now``.
    :param accomplices: the hostile servers' addresses, as ``halp`` entries.
    """

    def __init__(
        self,
        *args: Any,
        sybils: Callable[[int, int], list[Entry]],
        accomplices: Callable[[int], list[Entry]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._sybils = sybils
        self._accomplices = accomplices

    def get(self, label: str, window: Window | None = None) -> Deferred[Page[Entry]]:
        start, stop, capped = self.bounds(window)
        now = self.now()
        entries: Sequence[Entry]
        if label == SERVERS_LABEL:
            entries = self._accomplices(now)
        else:
            entries = self._sybils(stop, now)
        return succeed(Page(list(entries[start:stop]), capped))
