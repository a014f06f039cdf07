"""Tests for :mod:`halp.core`: the rules, on a memory store and a fake clock."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from halp.core import HALPCore, Page, Refused, Stored
from halp.error import StoreError
from halp.model import Entry, LabelInfo, Limits, RejectedEntry, Window
from halp.store.memory import MemoryStore

NOW = 1_800_000_000


def make_core(**limits: int) -> tuple[HALPCore, Clock]:
    clock = Clock()
    clock.advance(NOW)
    return HALPCore(MemoryStore(), clock, Limits(**limits)), clock


class WindowTests(SynchronousTestCase):
    def test_bounds(self) -> None:
        core, _ = make_core(default_slice=10, max_slice=100)
        self.assertEqual(core.bounds(None), (0, 10, False))
        self.assertEqual(core.bounds(Window(5, 20)), (5, 20, False))
        self.assertEqual(core.bounds(Window(5, None)), (5, 105, False))
        self.assertEqual(core.bounds(Window(5, 105)), (5, 105, False))
        self.assertEqual(core.bounds(Window(5, 106)), (5, 105, True))
        self.assertEqual(core.bounds(Window(7, 7)), (7, 7, False))


class InsertTests(SynchronousTestCase):
    def test_stores_and_serves(self) -> None:
        core, _ = make_core()
        outcomes = self.successResultOf(
            core.insert(["a", "b"], [Entry(NOW - 5, "h", 1), Entry(NOW - 1, "g", 2)])
        )
        self.assertEqual(
            outcomes,
            [
                Stored("a", Entry(NOW - 5, "h", 1)),
                Stored("a", Entry(NOW - 1, "g", 2)),
                Stored("b", Entry(NOW - 5, "h", 1)),
                Stored("b", Entry(NOW - 1, "g", 2)),
            ],
        )
        page = self.successResultOf(core.get("a"))
        self.assertEqual(page, Page([Entry(NOW - 1, "g", 2), Entry(NOW - 5, "h", 1)], False))

    def test_future_is_clamped_to_now(self) -> None:
        core, _ = make_core()
        outcomes = self.successResultOf(core.insert(["a"], [Entry(NOW + 10**9, "h", 1)]))
        self.assertEqual(outcomes, [Stored("a", Entry(NOW, "h", 1))])
        self.assertEqual(self.successResultOf(core.get("a")).items, [Entry(NOW, "h", 1)])

    def test_reports_stored_time_after_merge(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.insert(["a"], [Entry(NOW - 1, "h", 1)]))
        outcomes = self.successResultOf(core.insert(["a"], [Entry(NOW - 100, "h", 1)]))
        self.assertEqual(outcomes, [Stored("a", Entry(NOW - 1, "h", 1))])

    def test_expired_entries_are_refused(self) -> None:
        core, _ = make_core(ttl=3600)
        outcomes = self.successResultOf(
            core.insert(["a"], [Entry(NOW - 3601, "h", 1), Entry(NOW - 3600, "g", 1)])
        )
        self.assertEqual(
            outcomes,
            [
                Refused("a", f"{NOW - 3601} h 1", "expired: confirmed more than 3600 s ago"),
                Stored("a", Entry(NOW - 3600, "g", 1)),
            ],
        )

    def test_rejected_lines_are_refused_for_every_label(self) -> None:
        core, _ = make_core()
        outcomes = self.successResultOf(
            core.insert(["a", "b"], [RejectedEntry("1 h 0", "bad port"), Entry(NOW, "h", 1)])
        )
        self.assertEqual(
            outcomes,
            [
                Refused("a", "1 h 0", "bad port"),
                Stored("a", Entry(NOW, "h", 1)),
                Refused("b", "1 h 0", "bad port"),
                Stored("b", Entry(NOW, "h", 1)),
            ],
        )

    def test_nothing_valid_touches_no_store(self) -> None:
        core, _ = make_core()
        outcomes = self.successResultOf(core.insert(["a"], [RejectedEntry("x", "y")]))
        self.assertEqual(outcomes, [Refused("a", "x", "y")])
        self.assertEqual(self.successResultOf(core.list_labels("")).items, [])

    def test_evicted_at_once_is_refused(self) -> None:
        core, _ = make_core(max_entries=2)
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1), Entry(NOW, "h", 2)]))
        outcomes = self.successResultOf(core.insert(["a"], [Entry(NOW - 1, "h", 3)]))
        self.assertEqual(
            outcomes,
            [Refused("a", f"{NOW - 1} h 3", "evicted: the label keeps its 2 newest entries")],
        )


class ExpiryTests(SynchronousTestCase):
    def test_entries_stop_being_served_after_ttl(self) -> None:
        core, clock = make_core(ttl=100)
        self.successResultOf(core.insert(["a/b"], [Entry(NOW, "h", 1)]))
        clock.advance(100)
        self.assertEqual(len(self.successResultOf(core.get("a/b")).items), 1)
        self.assertEqual(
            self.successResultOf(core.list_labels("")).items, [LabelInfo(NOW, "a")]
        )
        clock.advance(1)
        self.assertEqual(self.successResultOf(core.get("a/b")).items, [])
        self.assertEqual(self.successResultOf(core.list_labels("")).items, [])
        self.assertEqual(self.successResultOf(core.list_labels("a")).items, [])

    def test_purge_deletes_what_expired(self) -> None:
        core, clock = make_core(ttl=100)
        self.successResultOf(core.insert(["a"], [Entry(NOW - 50, "h", 1), Entry(NOW, "h", 2)]))
        clock.advance(60)
        self.assertEqual(self.successResultOf(core.purge()), 1)
        self.assertEqual(
            self.successResultOf(core.store.get("a", 0, 10, 0)), [Entry(NOW, "h", 2)]
        )

    def test_purge_failure_is_logged_not_raised(self) -> None:
        core, _ = make_core()

        def broken(before: int) -> Deferred[int]:
            return fail(StoreError("disk on fire"))

        core.store.purge = broken  # type: ignore[method-assign]
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        self.assertEqual(self.successResultOf(core.purge()), 0)
        (event,) = [e for e in events if "log_failure" in e]
        failure = event["log_failure"]
        assert isinstance(failure, Failure)
        self.assertTrue(failure.check(StoreError))
        self.flushLoggedErrors(StoreError)


class GetTests(SynchronousTestCase):
    def test_capped_window(self) -> None:
        core, _ = make_core(max_slice=3)
        self.successResultOf(core.insert(["a"], [Entry(NOW - i, "h", i + 1) for i in range(6)]))
        page = self.successResultOf(core.get("a", Window(1, 10)))
        self.assertEqual(page.capped, True)
        self.assertEqual([e.port for e in page.items], [2, 3, 4])
        page = self.successResultOf(core.get("a", Window(4, None)))
        self.assertEqual((page.capped, [e.port for e in page.items]), (False, [5, 6]))

    def test_default_window(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.insert(["a"], [Entry(NOW - i, "h", i + 1) for i in range(25)]))
        self.assertEqual(
            [e.port for e in self.successResultOf(core.get("a")).items], list(range(1, 11))
        )

    def test_hello(self) -> None:
        core, _ = make_core(max_entries=7, ttl=99)
        fields = dict(core.hello())
        self.assertEqual(fields["protocol"], "HALP/1")
        self.assertEqual(fields["time"], NOW)
        self.assertEqual(fields["max-entries"], 7)
        self.assertEqual(fields["ttl"], 99)
        self.assertEqual(fields["max-slice"], 100)
        self.assertFalse(any(k.startswith(("ok", "error")) for k in fields))
