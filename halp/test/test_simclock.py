"""
Tests for :mod:`halp.sim.clock`: :class:`SimClock` runs each call at the
time :class:`twisted.internet.task.Clock` would run it when moved on in
small steps, and breaks ties by first scheduling.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from halp.sim.clock import SimClock

#: One step of a schedule: ("later", delay, then) schedules a call that,
#: when it runs, schedules another after ``then`` seconds (if not None);
#: ("cancel", i), ("reset", i, s) and ("delay", i, s) act on the i-th call
#: scheduled so far (modulo their number), when it is still active;
#: ("advance", s) moves time on.
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("later"),
            st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5]),
            st.none() | st.sampled_from([0.0, 1.0, 2.5]),
        ),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("reset"), st.integers(0, 50), st.sampled_from([0.0, 0.5, 1.5, 4.0])),
        st.tuples(st.just("delay"), st.integers(0, 50), st.sampled_from([-1.0, 0.5, 2.0])),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
    ),
    max_size=60,
)


def play(clock: Any, program: list[tuple[Any, ...]]) -> tuple[list[tuple[float, int]], list[list[float]]]:
    """Run ``program`` on ``clock``: what ran when, and the pending times after each step."""
    ran: list[tuple[float, int]] = []
    calls: list[Any] = []
    pending: list[list[float]] = []

    def fire(tag: int, then: float | None) -> None:
        ran.append((clock.seconds(), tag))
        if then is not None:
            # Not a target of later steps: calls due at the same time may
            # run in another order (see test_ties_...).
            clock.callLater(then, fire, tag + 1000, None)

    for step in program:
        kind = step[0]
        if kind == "later":
            calls.append(clock.callLater(step[1], fire, len(calls), step[2]))
        elif kind == "advance":
            clock.advance(step[1])
        elif calls:
            call = calls[step[1] % len(calls)]
            if call.active():
                if kind == "cancel":
                    call.cancel()
                elif kind == "reset":
                    call.reset(step[2])
                elif kind == "delay" and call.getTime() + step[2] >= clock.seconds():
                    call.delay(step[2])
        pending.append(sorted(c.getTime() for c in clock.getDelayedCalls()))
    clock.advance(100)
    return sorted(ran), pending


class SteppedClock(Clock):
    """
    Twisted's ``Clock`` moved on in steps of 0.5 s: it runs every call at
    the end of the ``advance`` that reaches it, so with every delay a
    multiple of 0.5 each call runs at its due time, as in :class:`SimClock`.
    """

    def advance(self, amount: float) -> None:
        super().advance(0)
        for _ in range(round(amount / 0.5)):
            super().advance(0.5)


class SimClockTests(SynchronousTestCase):
    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IReactorTime, SimClock()))

    @settings(max_examples=600, deadline=None, derandomize=True)
    @given(steps)
    def test_same_as_twisted_clock(self, program: list[tuple[Any, ...]]) -> None:
        """Every call runs at the same time as with ``Clock``, and the same
        calls are pending after every step."""
        self.assertEqual(play(SimClock(), program), play(SteppedClock(), program))

    def test_equal_times_run_in_the_order_scheduled(self) -> None:
        clock = SimClock()
        ran: list[object] = []
        for tag in range(50):
            clock.callLater(1.0, ran.append, tag)
        clock.callLater(0.5, lambda: clock.callLater(0.5, ran.append, "late"))
        clock.advance(1)
        self.assertEqual(ran, list(range(50)) + ["late"])

    def test_ties_run_in_the_order_first_scheduled_however_reset(self) -> None:
        clock = SimClock()
        ran: list[str] = []
        a = clock.callLater(0.5, ran.append, "a")
        clock.callLater(0.0, ran.append, "b")
        c = clock.callLater(0.0, ran.append, "c")
        a.reset(0.0)  # sooner
        c.reset(0.0)  # the same time
        d = clock.callLater(-1.0, ran.append, "d")
        d.delay(1.0)  # later
        clock.advance(0)
        self.assertEqual(ran, ["a", "b", "c", "d"])

    def test_calls_scheduled_while_running_that_fall_due_run_too(self) -> None:
        clock = SimClock(start=10.0)
        ran: list[tuple[float, int]] = []

        def chain(n: int) -> None:
            ran.append((clock.seconds(), n))
            if n < 3:
                clock.callLater(0.25, chain, n + 1)

        clock.callLater(0, chain, 0)
        clock.advance(0.5)
        self.assertEqual(ran, [(10.0, 0), (10.25, 1), (10.5, 2)])
        self.assertEqual(clock.seconds(), 10.5)
        self.assertEqual(clock.next_time(), 10.75)

    def test_next_time_sees_through_cancelled_and_moved_calls(self) -> None:
        clock = SimClock()
        first = clock.callLater(1, lambda: None)
        second = clock.callLater(2, lambda: None)
        clock.callLater(3, lambda: None)
        first.cancel()
        second.reset(5)  # now due at 5
        self.assertEqual(clock.next_time(), 3)
        clock.advance(3)
        self.assertEqual(clock.next_time(), 5)
        clock.advance(2)
        self.assertIsNone(clock.next_time())
        self.assertEqual(clock.calls_run, 2)

    def test_many_cancelled_calls_are_swept(self) -> None:
        clock = SimClock()
        calls = [clock.callLater(i, lambda: None) for i in range(5000)]
        for call in calls[:4000]:
            call.cancel()
        self.assertLess(len(clock._heap), 3000)
        self.assertEqual(len(clock.getDelayedCalls()), 1000)
        clock.advance(5000)
        self.assertEqual(clock.calls_run, 1000)

    def test_a_sweep_while_running_loses_no_call(self) -> None:
        """
        A call that cancels enough others to sweep the heap, then schedules
        one: that one runs at its time in the same run, not at the next
        (the simulator's clients timed out on connections whose next step
        had been scheduled into a swept heap the running loop no longer saw).
        """
        clock = SimClock()
        pending = [clock.callLater(100 + i, lambda: None) for i in range(3000)]
        ran: list[float] = []

        def cancel_and_schedule() -> None:
            for call in pending:
                call.cancel()
            clock.callLater(0.5, lambda: ran.append(clock.seconds()))

        clock.callLater(1, cancel_and_schedule)
        clock.callLater(2, lambda: ran.append(clock.seconds()))
        clock.advance(10)
        self.assertEqual(ran, [1.5, 2.0])

    def test_an_exception_propagates_at_its_time(self) -> None:
        clock = SimClock()
        ran: list[str] = []
        clock.callLater(1, lambda: 1 / 0)
        clock.callLater(2, ran.append, "after")
        self.assertRaises(ZeroDivisionError, clock.advance, 5)
        self.assertEqual(clock.seconds(), 1)
        clock.advance(4)
        self.assertEqual(ran, ["after"])
