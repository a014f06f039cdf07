"""Tests for :mod:`halp.core`: the rules, on a memory store and a fake clock."""

from __future__ import annotations

from typing import Sequence

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from halp.core import (
    FEATURES,
    REPLICATION_SKEW,
    HALPCore,
    Page,
    PeerStatus,
    Refused,
    Replicated,
    Stored,
)
from halp.error import ErrorCode, ProtocolError, StoreError
from halp.model import Change, Entry, LabelInfo, Limits, RejectedEntry, Window
from halp.stats import COUNTERS
from halp.store.memory import MemoryStore
from halp.testing import StaticPeers

NOW = 1_800_000_000


#: The hosts the push tests push from, as known peers.
PEER_HOSTS = ("p", "q", "203.0.113.5")


def make_core(**limits: int) -> tuple[HALPCore, Clock]:
    """A core whose federation (faked) knows the hosts of :data:`PEER_HOSTS`."""
    clock = Clock()
    clock.advance(NOW)
    core = HALPCore(MemoryStore(), clock, Limits(**limits))
    core.peer_source = StaticPeers([], trusted=PEER_HOSTS)
    return core, clock


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

    def test_store_failures_are_logged_at_most_every_ten_seconds(self) -> None:
        core, clock = make_core()
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        for i in range(50):
            core.store_failed(f"get a{i}", StoreError("Redis is away"))
            clock.advance(0.1)
        # One line for the first failure; the next, 10 s later, counts the rest.
        texts = [formatEvent(e) for e in events]
        self.assertEqual(texts, ["Store failed answering get a0: Redis is away"])
        clock.advance(5.1)
        core.store_failed("get b", StoreError("Redis is away"))
        texts = [formatEvent(e) for e in events]
        self.assertEqual(
            texts[1],
            "Store failed answering get b: Redis is away (50 failed requests since the last such line)",
        )
        core.store_failed("get c", StoreError("Redis is away"))
        self.assertEqual(len(events), 2)
        clock.advance(10)
        core.store_failed("get d", StoreError("Redis is away"))
        self.assertEqual(
            formatEvent(events[2]),
            "Store failed answering get d: Redis is away (2 failed requests since the last such line)",
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


# -- provenance, observers and federation ----------------------------------------


class Recorder:
    """A change observer that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Change], bool]] = []

    def __call__(self, changes: list[Change], relay: bool) -> None:
        self.calls.append((changes, relay))


class FeedTestCase(SynchronousTestCase):
    def feed(self, core: HALPCore) -> list[Change]:
        """Everything in the change feed of ``core``'s store that has not expired."""
        page = self.successResultOf(core.store.changes("0", 1000, core.oldest_served()))
        return page.changes


class ProvenanceTests(FeedTestCase):
    def test_insert_records_the_source(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.insert(["a", "b"], [Entry(NOW, "h", 1)], "192.0.2.1"))
        self.assertEqual(
            self.feed(core),
            [
                Change("a", Entry(NOW, "h", 1), "192.0.2.1", ""),
                Change("b", Entry(NOW, "h", 1), "192.0.2.1", ""),
            ],
        )

    def test_insert_without_a_source(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)]))
        self.assertEqual(self.feed(core), [Change("a", Entry(NOW, "h", 1))])

    def test_a_later_confirmation_takes_over_the_provenance(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.insert(["a"], [Entry(NOW - 5, "h", 1)], "192.0.2.1"))
        self.successResultOf(core.insert(["a"], [Entry(NOW - 9, "h", 1)], "192.0.2.2"))
        self.assertEqual(self.feed(core), [Change("a", Entry(NOW - 5, "h", 1), "192.0.2.1")])
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)], "192.0.2.3"))
        self.assertEqual(self.feed(core), [Change("a", Entry(NOW, "h", 1), "192.0.2.3")])


class ObserverTests(FeedTestCase):
    def test_insert_tells_what_changed_to_relay(self) -> None:
        core, _ = make_core()
        seen = Recorder()
        core.watch(seen)
        self.successResultOf(core.insert(["a"], [Entry(NOW - 5, "h", 1)], "192.0.2.1"))
        self.successResultOf(
            core.insert(
                ["a"],
                [Entry(NOW - 9, "h", 1), Entry(NOW, "g", 2), RejectedEntry("x", "y")],
                "192.0.2.2",
            )
        )
        self.assertEqual(
            seen.calls,
            [
                ([Change("a", Entry(NOW - 5, "h", 1), "192.0.2.1")], True),
                ([Change("a", Entry(NOW, "g", 2), "192.0.2.2")], True),
            ],
        )

    def test_nothing_changed_calls_no_one(self) -> None:
        core, _ = make_core(ttl=100)
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)]))
        seen = Recorder()
        core.watch(seen)
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1), Entry(NOW - 101, "g", 1)]))
        self.successResultOf(core.insert(["a"], [RejectedEntry("x", "y")]))
        self.successResultOf(core.push([Change("a", Entry(NOW, "h", 1))], "p:1", "p"))
        self.successResultOf(core.apply_pulled([], "p:1"))
        self.assertEqual(seen.calls, [])

    def test_evicted_at_once_is_not_a_change(self) -> None:
        core, _ = make_core(max_entries=1)
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)]))
        seen = Recorder()
        core.watch(seen)
        self.successResultOf(core.insert(["a"], [Entry(NOW - 1, "g", 1)]))
        self.assertEqual(seen.calls, [])

    def test_push_is_relayed_and_pull_is_not(self) -> None:
        core, _ = make_core()
        seen = Recorder()
        core.watch(seen)
        self.successResultOf(core.push([Change("a", Entry(NOW, "h", 1), "s")], "p:1", "p"))
        self.successResultOf(core.apply_pulled([Change("b", Entry(NOW, "h", 1))], "q:2"))
        self.assertEqual(
            seen.calls,
            [
                ([Change("a", Entry(NOW, "h", 1), "s", "p:1")], True),
                ([Change("b", Entry(NOW, "h", 1), "", "q:2")], False),
            ],
        )

    def test_every_observer_is_called(self) -> None:
        core, _ = make_core()
        first, second = Recorder(), Recorder()
        core.watch(first)
        core.watch(second)
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)]))
        self.assertEqual(len(first.calls), 1)
        self.assertEqual(first.calls, second.calls)

    def test_an_observer_that_raises_breaks_nothing(self) -> None:
        core, _ = make_core()

        def broken(changes: list[Change], relay: bool) -> None:
            raise ZeroDivisionError("observer bug")

        after = Recorder()
        core.watch(broken)
        core.watch(after)
        outcomes = self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)]))
        self.assertEqual(outcomes, [Stored("a", Entry(NOW, "h", 1))])
        self.assertEqual(len(after.calls), 1)
        self.assertEqual(core.stats["entries-inserted"], 1)
        result = self.successResultOf(core.push([Change("b", Entry(NOW, "h", 1))], "p:1", "p"))
        self.assertEqual(result, Replicated(1, 0, []))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)


def make_pushing_core(
    rate: float = 1.0, burst: float = 10.0, **limits: int
) -> tuple[HALPCore, Clock]:
    clock = Clock()
    clock.advance(NOW)
    limits.setdefault("max_gossip_entries", 10)
    core = HALPCore(MemoryStore(), clock, Limits(**limits), push_rate=rate, push_burst=burst)
    return core, clock


def batch(n: int, label: str = "a") -> list[Change]:
    return [Change(label, Entry(NOW, "h", i + 1)) for i in range(n)]


class PushTests(FeedTestCase):
    def test_merges_with_provenance(self) -> None:
        core, _ = make_core()
        result = self.successResultOf(
            core.push(
                [Change("a", Entry(NOW - 5, "h", 1), "192.0.2.1"), Change("b/c", Entry(NOW, "g", 2))],
                "203.0.113.5:7100",
                "203.0.113.5",
            )
        )
        self.assertEqual(result, Replicated(2, 0, []))
        self.assertEqual(
            self.feed(core),
            [
                Change("a", Entry(NOW - 5, "h", 1), "192.0.2.1", "203.0.113.5:7100"),
                Change("b/c", Entry(NOW, "g", 2), "", "203.0.113.5:7100"),
            ],
        )
        self.assertEqual(self.successResultOf(core.get("b/c")).items, [Entry(NOW, "g", 2)])
        self.assertEqual(
            self.successResultOf(core.list_labels("")).items,
            [LabelInfo(NOW, "b"), LabelInfo(NOW - 5, "a")],
        )

    def test_future_times_are_clamped_to_the_skew_allowance(self) -> None:
        core, _ = make_core()
        result = self.successResultOf(
            core.push(
                [Change("a", Entry(NOW + 10**6, "h", 1)), Change("a", Entry(NOW + 100, "h", 2))],
                "p:1",
                "p",
            )
        )
        self.assertEqual(result, Replicated(2, 0, []))
        # A peer's clock a little ahead is believed, so that copies of one
        # entry keep one time however they travel; beyond that, clamped.
        self.assertEqual(
            self.successResultOf(core.get("a")).items,
            [Entry(NOW + REPLICATION_SKEW, "h", 1), Entry(NOW + 100, "h", 2)],
        )

    def test_a_push_from_a_stranger_is_its_own_insert(self) -> None:
        core, _ = make_core()
        core.peer_source = StaticPeers([], trusted=["203.0.113.5"])
        self.successResultOf(
            core.push([Change("a", Entry(NOW, "h", 1), "192.0.2.1")], "x.example:7100", "198.51.100.66")
        )
        self.successResultOf(
            core.push([Change("b", Entry(NOW, "h", 1), "192.0.2.1")], "203.0.113.5:7100", "203.0.113.5")
        )
        self.assertEqual(
            self.feed(core),
            [
                Change("a", Entry(NOW, "h", 1), "198.51.100.66", "198.51.100.66"),
                Change("b", Entry(NOW, "h", 1), "192.0.2.1", "203.0.113.5:7100"),
            ],
        )

    def test_expired_and_unparsed_are_refused(self) -> None:
        core, _ = make_core(ttl=3600)
        result = self.successResultOf(
            core.push(
                [
                    RejectedEntry("junk", "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
                    Change("a", Entry(NOW - 3601, "h", 1), "s"),
                    Change("a", Entry(NOW - 3600, "g", 1)),
                ],
                "p:1",
                "p",
            )
        )
        self.assertEqual(
            result,
            Replicated(
                1,
                0,
                [
                    Refused("", "junk", "expected LABEL TIMESTAMP HOST PORT [SOURCE]"),
                    Refused("a", f"{NOW - 3601} h 1", "expired: confirmed more than 3600 s ago"),
                ],
            ),
        )
        self.assertEqual(self.successResultOf(core.get("a")).items, [Entry(NOW - 3600, "g", 1)])
        self.assertEqual(core.stats["entries-rejected"], 2)
        self.assertEqual(core.stats["entries-replicated"], 1)

    def test_unchanged_entries_are_counted(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)], "192.0.2.1"))
        result = self.successResultOf(
            core.push(
                [Change("a", Entry(NOW - 1, "h", 1), "s"), Change("a", Entry(NOW, "h", 1), "s")],
                "p:1",
                "p",
            )
        )
        self.assertEqual(result, Replicated(0, 2, []))
        # The older or equal confirmation does not take over the provenance.
        self.assertEqual(self.feed(core), [Change("a", Entry(NOW, "h", 1), "192.0.2.1", "")])
        self.assertEqual(core.stats["entries-replicated"], 0)

    def test_counters(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.push(batch(3), "p:1", "p"))
        self.successResultOf(core.push(batch(4), "p:1", "p"))
        self.successResultOf(core.push([], "p:1", "p"))
        self.assertEqual(core.stats["push-received"], 3)
        self.assertEqual(core.stats["entries-replicated"], 4)
        self.assertEqual(core.stats["entries-inserted"], 0)
        self.assertEqual(core.stats["entries-pulled"], 0)
        self.assertEqual(core.stats["push-throttled"], 0)

    def test_an_empty_push_touches_no_store(self) -> None:
        core, _ = make_core()
        self.assertEqual(self.successResultOf(core.push([], "p:1", "p")), Replicated(0, 0, []))
        self.assertEqual(self.feed(core), [])


class PushEvictionCountTests(FeedTestCase):
    def test_evicted_at_once_is_refused_not_unchanged(self) -> None:
        core, _ = make_core(max_entries=1)
        result = self.successResultOf(
            core.push(
                [Change("a", Entry(NOW, "h", 1)), Change("a", Entry(NOW - 5, "h", 2))],
                "203.0.113.5:7100",
                "203.0.113.5",
            )
        )
        self.assertEqual((result.changed, result.unchanged, len(result.refused)), (1, 0, 1))
        self.assertIn("evicted", result.refused[0].reason)


class PushThrottleTests(FeedTestCase):
    def assertBusy(
        self, core: HALPCore, changes: Sequence[Change | RejectedEntry], peer: str
    ) -> ProtocolError:
        e = self.assertRaises(ProtocolError, core.push, changes, "p:1", peer)
        assert isinstance(e, ProtocolError)
        self.assertEqual(e.code, ErrorCode.BUSY)
        return e

    def test_more_than_the_burst_is_busy(self) -> None:
        core, _ = make_pushing_core(rate=1.0, burst=10.0)
        self.successResultOf(core.push(batch(10), "p:1", "192.0.2.1"))
        e = self.assertBusy(core, batch(3, "b"), "192.0.2.1")
        self.assertEqual(e.message, "too many entries pushed; try again in 3 s")
        self.assertEqual(self.successResultOf(core.get("b")).items, [])
        self.assertEqual(core.stats["push-throttled"], 1)
        self.assertEqual(core.stats["push-received"], 1)
        self.assertEqual(core.stats["entries-replicated"], 10)

    def test_a_throttled_push_tells_no_observer(self) -> None:
        core, _ = make_pushing_core(burst=10.0)
        self.successResultOf(core.push(batch(10), "p:1", "192.0.2.1"))
        seen = Recorder()
        core.watch(seen)
        self.assertBusy(core, batch(1, "b"), "192.0.2.1")
        self.assertEqual(seen.calls, [])

    def test_an_empty_push_costs_one_token(self) -> None:
        core, _ = make_pushing_core(burst=10.0)
        for _ in range(10):
            self.successResultOf(core.push([], "p:1", "192.0.2.1"))
        self.assertBusy(core, [], "192.0.2.1")

    def test_unparsed_lines_cost_tokens_too(self) -> None:
        core, _ = make_pushing_core(burst=10.0)
        self.successResultOf(core.push([RejectedEntry("x", "y")] * 10, "p:1", "192.0.2.1"))
        self.assertBusy(core, batch(1), "192.0.2.1")

    def test_another_peer_is_not_throttled(self) -> None:
        core, _ = make_pushing_core(burst=10.0)
        self.successResultOf(core.push(batch(10), "p:1", "192.0.2.1"))
        self.assertBusy(core, batch(1), "192.0.2.1")
        result = self.successResultOf(core.push(batch(10, "b"), "p:1", "192.0.2.2"))
        self.assertEqual(result.changed, 10)

    def test_the_throttle_counts_the_address_not_the_name(self) -> None:
        core, _ = make_pushing_core(burst=10.0)
        self.successResultOf(core.push(batch(10), "one.example:1", "192.0.2.1"))
        e = self.assertRaises(ProtocolError, core.push, batch(1), "two.example:2", "192.0.2.1")
        self.assertEqual(e.code, ErrorCode.BUSY)

    def test_the_peer_may_push_again_later(self) -> None:
        core, clock = make_pushing_core(rate=2.0, burst=10.0)
        self.successResultOf(core.push(batch(10), "p:1", "192.0.2.1"))
        clock.advance(2.4)  # 4.8 tokens
        e = self.assertBusy(core, batch(5, "b"), "192.0.2.1")
        self.assertEqual(e.message, "too many entries pushed; try again in 1 s")
        clock.advance(0.1)
        result = self.successResultOf(core.push(batch(5, "b"), "p:1", "192.0.2.1"))
        self.assertEqual(result.changed, 5)
        self.assertBusy(core, batch(1, "c"), "192.0.2.1")

    def test_the_burst_is_at_least_one_full_push(self) -> None:
        """A push of max-gossip-entries lines always fits an unused bucket."""
        core, _ = make_pushing_core(rate=1.0, burst=2.0, max_gossip_entries=10)
        result = self.successResultOf(core.push(batch(10), "p:1", "192.0.2.1"))
        self.assertEqual(result.changed, 10)

    def test_a_push_larger_than_the_burst_never_fits(self) -> None:
        core, _ = make_pushing_core(rate=1.0, burst=10.0)
        e = self.assertBusy(core, batch(11), "192.0.2.1")
        self.assertEqual(e.message, "too many entries pushed; try again in 3600 s")
        # Nothing was taken: a push that fits still does.
        self.successResultOf(core.push(batch(10), "p:1", "192.0.2.1"))


class PullTests(FeedTestCase):
    def test_merges_with_via_and_counts(self) -> None:
        core, _ = make_core(ttl=100)
        result = self.successResultOf(
            core.apply_pulled(
                [
                    Change("a", Entry(NOW - 1, "h", 1), "192.0.2.1"),
                    Change("a", Entry(NOW + 10**6, "g", 1)),
                    Change("a", Entry(NOW - 101, "f", 1)),
                ],
                "203.0.113.5:7100",
            )
        )
        self.assertEqual(
            result,
            Replicated(2, 0, [Refused("a", f"{NOW - 101} f 1", "expired: confirmed more than 100 s ago")]),
        )
        self.assertEqual(
            self.feed(core),
            [
                Change("a", Entry(NOW - 1, "h", 1), "192.0.2.1", "203.0.113.5:7100"),
                Change("a", Entry(NOW + REPLICATION_SKEW, "g", 1), "", "203.0.113.5:7100"),
            ],
        )
        self.assertEqual(core.stats["entries-pulled"], 2)
        self.assertEqual(core.stats["entries-rejected"], 1)
        self.assertEqual(core.stats["entries-replicated"], 0)
        self.assertEqual(core.stats["push-received"], 0)

    def test_pulling_is_not_throttled(self) -> None:
        core, _ = make_pushing_core(rate=1.0, burst=10.0)
        for i in range(5):
            result = self.successResultOf(core.apply_pulled(batch(10, f"l{i}"), "p:1"))
            self.assertEqual(result.changed, 10)
        self.assertEqual(core.stats["entries-pulled"], 50)

    def test_a_pull_again_changes_nothing(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.apply_pulled([Change("a", Entry(NOW, "h", 1))], "p:1"))
        result = self.successResultOf(core.apply_pulled([Change("a", Entry(NOW, "h", 1))], "p:1"))
        self.assertEqual(result, Replicated(0, 1, []))
        self.assertEqual(core.stats["entries-pulled"], 1)


class ChangesTests(FeedTestCase):
    def test_pages_through_the_feed(self) -> None:
        core, _ = make_core(max_gossip_entries=3)
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", i + 1) for i in range(5)], "s"))
        page = self.successResultOf(core.changes("0"))
        self.assertEqual([c.entry.port for c in page.changes], [1, 2, 3])
        self.assertTrue(page.more)
        page = self.successResultOf(core.changes(page.cursor))
        self.assertEqual([c.entry.port for c in page.changes], [4, 5])
        self.assertFalse(page.more)
        self.assertEqual(page.changes[0], Change("a", Entry(NOW, "h", 4), "s"))
        page = self.successResultOf(core.changes(page.cursor))
        self.assertEqual((page.changes, page.more), ([], False))

    def test_the_limit_is_capped(self) -> None:
        core, _ = make_core(max_gossip_entries=3)
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", i + 1) for i in range(5)]))
        self.assertEqual(len(self.successResultOf(core.changes("0", 10**9)).changes), 3)
        self.assertEqual(len(self.successResultOf(core.changes("0", 4)).changes), 3)
        self.assertEqual(len(self.successResultOf(core.changes("0", 3)).changes), 3)
        self.assertEqual(len(self.successResultOf(core.changes("0", 2)).changes), 2)
        self.assertEqual(len(self.successResultOf(core.changes("0", 0)).changes), 1)

    def test_expired_entries_are_left_out(self) -> None:
        core, clock = make_core(ttl=100)
        self.successResultOf(core.insert(["a"], [Entry(NOW - 50, "h", 1), Entry(NOW, "h", 2)]))
        clock.advance(50)
        self.assertEqual(
            [c.entry.port for c in self.successResultOf(core.changes("0")).changes], [1, 2]
        )
        clock.advance(1)
        page = self.successResultOf(core.changes("0"))
        self.assertEqual(page.changes, [Change("a", Entry(NOW, "h", 2))])

    def test_an_unknown_cursor_starts_from_the_beginning(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.insert(["a"], [Entry(NOW, "h", 1)]))
        for cursor in ("0", "ffff:99", "junk"):
            self.assertEqual(len(self.successResultOf(core.changes(cursor)).changes), 1)

    def test_counted(self) -> None:
        core, _ = make_core()
        self.successResultOf(core.changes("0"))
        self.successResultOf(core.changes("0", 5))
        self.assertEqual(core.stats["changes-served"], 2)


class IntrospectionTests(FeedTestCase):
    def test_hello_names_the_node_and_features(self) -> None:
        clock = Clock()
        core = HALPCore(MemoryStore(), clock, Limits(max_gossip_entries=77), node_id="n0de")
        fields = dict(core.hello())
        self.assertEqual(fields["node"], "n0de")
        self.assertEqual(fields["features"], "changes push stats peers")
        self.assertEqual(fields["features"], " ".join(FEATURES))
        self.assertEqual(fields["max-gossip-entries"], 77)
        keys = [k for k, _ in core.hello()]
        self.assertEqual(len(keys), len(set(keys)))

    def test_node_ids_are_random_by_default(self) -> None:
        first, _ = make_core()
        second, _ = make_core()
        self.assertNotEqual(first.node_id, second.node_id)
        self.assertRegex(first.node_id, r"\A[0-9a-f]{16}\Z")
        self.assertEqual(dict(first.hello())["node"], first.node_id)

    def test_stats_fields(self) -> None:
        core, clock = make_core()
        clock.advance(42.9)
        self.successResultOf(core.push(batch(2), "p:1", "p"))
        fields = core.stats_fields()
        self.assertEqual(fields[0], ("uptime", 42))
        self.assertEqual([k for k, _ in fields[1:]], list(COUNTERS))
        values = dict(fields)
        self.assertEqual(values["push-received"], 1)
        self.assertEqual(values["entries-replicated"], 2)
        self.assertEqual(values["changes-served"], 0)

    def test_no_peers_without_a_source(self) -> None:
        core, _ = make_core()
        core.peer_source = None
        self.assertEqual(core.peers(), [])

    def test_peers_come_from_the_source(self) -> None:
        core, _ = make_core()
        listed = [
            PeerStatus("192.0.2.1:7100", "trusted", 9, True),
            PeerStatus("[2001:db8::1]:7100", "untested", 0, False),
        ]
        core.peer_source = StaticPeers(listed)
        self.assertEqual(core.peers(), listed)
        core.peer_source = None
        self.assertEqual(core.peers(), [])
