# -*- test-case-name: halp.test.test_simclock -*-
"""
A simulated clock for thousands of servers in one process.

:class:`twisted.internet.task.Clock` keeps its calls in a list that it
sorts again on every ``callLater`` and ``advance``, and removes cancelled
calls with ``list.remove``: with the 10,000 timers of a thousand servers,
scheduling one call and running it costs milliseconds.  :class:`SimClock`
keeps them in a heap: ``O(log n)`` per call, with the same
:class:`~twisted.internet.base.DelayedCall` objects and the same order
(calls due at the same time run in the order they were first scheduled,
however they were reset), so that code written against ``Clock`` runs
unchanged and a simulation is deterministic.  Unlike ``Clock``, which
runs every call at the time its ``advance`` ends, each call runs at its
due time: a simulation's timestamps are when things happened.
"""

from __future__ import annotations

import heapq
from itertools import count
from typing import Any, Callable

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

__all__ = ["SimClock"]


@implementer(IReactorTime)
class SimClock:
    """
    An :class:`~twisted.internet.interfaces.IReactorTime` whose time moves
    only when told to (:meth:`advance`, :meth:`run_until`), running the
    calls that fall due in time order.

    A cancelled call stays in the heap until it comes up (or until the
    cancelled calls are half of the heap, when they are swept out); a call
    reset to a later time moves when it comes up; one reset to an earlier
    time is pushed again, and its older place is skipped.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._order = count()
        #: Each call's place in scheduling order, which breaks ties.
        self._places: dict[int, int] = {}
        self._cancelled = 0
        #: Calls run so far.
        self.calls_run = 0

    def seconds(self) -> float:
        return self._now

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        call = DelayedCall(
            self._now + delay, callable, args, kw, self._cancel, self._push, self.seconds
        )
        self._places[id(call)] = next(self._order)
        self._push(call)
        return call

    def getDelayedCalls(self) -> list[IDelayedCall]:
        return sorted(
            {id(c): c for _, _, c in self._heap if c.active()}.values(),
            key=lambda c: c.getTime(),
        )

    def advance(self, amount: float) -> None:
        """Move time ``amount`` seconds on, running what falls due."""
        self.run_until(self._now + amount)

    def run_until(self, when: float) -> None:
        """
        Run the calls due at or before ``when``, in time order (and in the
        order they were scheduled at equal times), then set the time to
        ``when``.  A call may schedule more; those due by ``when`` run too.
        An exception from a call propagates, with the time at that call.
        """
        heap = self._heap
        while heap and heap[0][0] <= when:
            at, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or call.time != at:
                continue  # cancelled, ran already, or pushed again earlier
            if call.delayed_time > 0:
                call.activate_delay()  # reset to later: its place moves
                self._push(call)
                continue
            self._now = at
            del self._places[id(call)]
            call.called = 1
            self.calls_run += 1
            call.func(*call.args, **call.kw)
        if when > self._now:
            self._now = when

    def next_time(self) -> float | None:
        """When the next active call is due, or ``None`` if none is."""
        heap = self._heap
        while heap:
            at, _, call = heap[0]
            if call.cancelled or call.called or call.time != at:
                heapq.heappop(heap)
            elif call.delayed_time > 0:
                heapq.heappop(heap)
                call.activate_delay()
                self._push(call)
            else:
                return at
        return None

    def _push(self, call: DelayedCall) -> None:
        heapq.heappush(self._heap, (call.time, self._places[id(call)], call))

    def _cancel(self, call: DelayedCall) -> None:
        del self._places[id(call)]
        # Cancellations since the last sweep (some may have come up since).
        self._cancelled += 1
        if self._cancelled > 1024 and self._cancelled * 2 > len(self._heap):
            # In place: run_until holds the list while calls cancel others.
            self._heap[:] = [item for item in self._heap if not item[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0
