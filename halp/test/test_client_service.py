"""
Tests for :mod:`halp.client.service`: the refresh schedule, and
:class:`HALPClientService` driving a real client against in-memory servers,
with all time on a :class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from halp.client.client import HALPClient, PeerList
from halp.client.servers import ServerAddress
from halp.client.service import HOUR, HALPClientService, RefreshSchedule
from halp.core import HALPCore
from halp.error import ProtocolError
from halp.model import Entry
from halp.store import insert_entries
from halp.server import HALPServerFactory
from halp.store.memory import MemoryStore
from halp.testing import FakeNetwork

#: The time the tests start at.
NOW = 1_700_000_000

SERVER = ServerAddress("192.0.2.1", 7100)

#: Slack for comparing times that went through float arithmetic.
EPSILON = 1e-6


class TimingTestCase(SynchronousTestCase):
    def assertBetween(self, value: float, low: float, high: float) -> None:
        if not low - EPSILON <= value <= high + EPSILON:
            raise self.failureException(f"{value!r} not within [{low}, {high}]")


# -- RefreshSchedule -----------------------------------------------------------


class RefreshScheduleTests(TimingTestCase):
    def schedule(self, seed: int = 0) -> RefreshSchedule:
        return RefreshSchedule(rng=random.Random(seed))

    def test_base_interval_is_jittered(self) -> None:
        """
        While servers answer and the program has few connections, each
        delay is drawn anew from 200 to 300 seconds.
        """
        schedule = self.schedule()
        delays = [schedule.next_delay(answered=True, connections=3) for _ in range(50)]
        for delay in delays:
            self.assertBetween(delay, 200, 300)
        self.assertGreater(max(delays) - min(delays), 50)
        self.assertEqual(schedule.doublings, 0)

    def test_same_seed_same_delays(self) -> None:
        """The injected random source decides the jitter."""
        first = [self.schedule(7).next_delay(True, 0) for _ in range(3)]
        second = [self.schedule(7).next_delay(True, 0) for _ in range(3)]
        self.assertEqual(first, second)

    def test_doubles_with_enough_connections(self) -> None:
        """
        With at least ``min_connections`` connections the interval doubles
        at every round, up to the number of connections times one hour.
        """
        schedule = self.schedule()
        delays = [schedule.next_delay(answered=True, connections=4) for _ in range(12)]
        for i, delay in enumerate(delays[:6]):
            self.assertBetween(delay, 200 * 2 ** (i + 1), 300 * 2 ** (i + 1))
        # 200 * 2**7 = 25,600 is past the cap of 4 hours.
        self.assertEqual(delays[7:], [4 * HOUR] * 5)

    def test_cap_grows_with_connections(self) -> None:
        """Ten connections allow intervals of up to ten hours."""
        schedule = self.schedule()
        delays = [schedule.next_delay(answered=True, connections=10) for _ in range(12)]
        self.assertBetween(delays[6], 200 * 2**7, 300 * 2**7)
        self.assertGreater(delays[6], 4 * HOUR)
        self.assertEqual(delays[-1], 10 * HOUR)

    def test_doubles_when_no_server_answers(self) -> None:
        """
        A round that no server answered doubles the interval even with no
        connections, up to one hour.
        """
        schedule = self.schedule()
        delays = [schedule.next_delay(answered=False, connections=0) for _ in range(8)]
        self.assertBetween(delays[0], 400, 600)
        self.assertBetween(delays[1], 800, 1200)
        self.assertBetween(delays[2], 1600, 2400)
        self.assertBetween(delays[3], 3200, HOUR)
        self.assertEqual(delays[4:], [HOUR] * 4)

    def test_failure_cap_follows_connections(self) -> None:
        """Without answers, the cap is the number of connections in hours."""
        schedule = self.schedule()
        delays = [schedule.next_delay(answered=False, connections=2) for _ in range(8)]
        self.assertBetween(delays[3], 3200, 4800)
        self.assertEqual(delays[-1], 2 * HOUR)

    def test_answer_with_few_connections_resets(self) -> None:
        """
        After doubling, one answered round with few connections brings the
        interval back to the base range.
        """
        schedule = self.schedule()
        for _ in range(5):
            schedule.next_delay(answered=False, connections=0)
        self.assertEqual(schedule.doublings, 5)
        self.assertBetween(schedule.next_delay(answered=True, connections=3), 200, 300)
        self.assertEqual(schedule.doublings, 0)

    def test_answer_with_many_connections_keeps_doubling(self) -> None:
        """An answered round does not reset the doubling while peers abound."""
        schedule = self.schedule()
        for _ in range(3):
            schedule.next_delay(answered=False, connections=0)
        self.assertBetween(schedule.next_delay(answered=True, connections=4), 3200, 4 * HOUR)
        self.assertEqual(schedule.doublings, 4)

    def test_reset(self) -> None:
        """:meth:`RefreshSchedule.reset` forgets the doublings."""
        schedule = self.schedule()
        for _ in range(6):
            schedule.next_delay(answered=False, connections=0)
        schedule.reset()
        self.assertEqual(schedule.doublings, 0)
        # The next failed round doubles once from the base again.
        self.assertBetween(schedule.next_delay(answered=False, connections=0), 400, 600)

    def test_custom_range(self) -> None:
        schedule = RefreshSchedule(10, 20, min_connections=2, rng=random.Random(1))
        self.assertBetween(schedule.next_delay(True, 1), 10, 20)
        self.assertBetween(schedule.next_delay(True, 2), 20, 40)

    def test_bad_range(self) -> None:
        self.assertRaises(ValueError, RefreshSchedule, 0, 10)
        self.assertRaises(ValueError, RefreshSchedule, 300, 200)


# -- HALPClientService ---------------------------------------------------------


class Harness:
    """
    A client over a :class:`FakeNetwork` with one pinned server, recording
    the time (since :data:`NOW`) of every connection attempt.
    """

    def __init__(self, seed: int = 0, announce_interval: float = HOUR) -> None:
        self.network = FakeNetwork(Clock())
        self.clock = self.network.clock
        self.clock.advance(NOW)
        self.attempts: list[float] = []
        self.peers: list[tuple[float, PeerList]] = []
        self.client = HALPClient(
            self.clock, MemoryStore(), [str(SERVER)], endpoint=self._endpoint
        )
        self.service = HALPClientService(
            self.client, announce_interval=announce_interval, rng=random.Random(seed)
        )

    def _endpoint(self, address: ServerAddress) -> IStreamClientEndpoint:
        self.attempts.append(self.elapsed())
        return self.network.endpoint(address)

    def elapsed(self) -> float:
        return self.clock.seconds() - NOW

    def on_peers(self, peers: PeerList) -> None:
        self.peers.append((self.elapsed(), peers))

    def serve(self) -> MemoryStore:
        """Start a HALP server at :data:`SERVER`; return its store."""
        store = MemoryStore()
        self.network.halp_server(SERVER, store)
        return store

    def serve_skewed(self) -> MemoryStore:
        """
        Start a HALP server whose clock is two days ahead: it answers, but
        refuses every entry this client confirms as expired.
        """
        store = MemoryStore()
        skewed = Clock()
        skewed.advance(NOW + 2 * 86_400)
        factory = HALPServerFactory(HALPCore(store, skewed), skewed, log_requests=False)
        self.network.listen(SERVER, factory)
        return store

    def pass_time(self, seconds: float) -> None:
        """
        Let ``seconds`` pass, stopping at every delayed call so that it
        runs at its own time, and delivering data in between.
        """
        end = self.clock.seconds() + seconds
        while True:
            self.network.flush()
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= end]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        self.clock.advance(end - self.clock.seconds())
        self.network.flush()

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.attempts, self.attempts[1:])]


def stored(store: MemoryStore, label: str) -> list[Entry]:
    d = store.get(label, 0, 100, 0)
    result: list[Entry] = []
    d.addCallback(result.extend)
    return result


class FollowTests(TimingTestCase):
    def test_refresh_at_start_then_every_base_interval(self) -> None:
        """
        A followed label is looked up when the service starts, then every
        200 to 300 seconds, at random, while the server answers.
        """
        h = Harness()
        h.serve()
        h.service.follow("myapp", on_peers=h.on_peers)
        h.service.startService()
        h.pass_time(0)
        self.assertEqual(h.attempts, [0])
        h.pass_time(3000)
        self.assertGreaterEqual(len(h.attempts), 11)
        gaps = h.gaps()
        for gap in gaps:
            self.assertBetween(gap, 200, 300)
        self.assertGreater(max(gaps) - min(gaps), 30)
        self.assertEqual(h.network.attempts, [SERVER] * len(h.attempts))

    def test_on_peers_gets_peer_lists(self) -> None:
        """``on_peers`` receives the :class:`PeerList` of every refresh."""
        h = Harness()
        server_store = h.serve()
        insert_entries(
            server_store,
            ["myapp"],
            [Entry(NOW - 10, "198.51.100.7", 4000), Entry(NOW - 5, "198.51.100.8", 4001)],
            1000,
        )
        h.service.follow("myapp", limit=5, on_peers=h.on_peers)
        h.service.startService()
        h.pass_time(301)
        self.assertEqual([t for t, _ in h.peers], h.attempts)
        self.assertEqual(len(h.peers), 2)
        for _, peers in h.peers:
            self.assertIsInstance(peers, PeerList)
            self.assertEqual(peers.label, "myapp")
            self.assertFalse(peers.from_cache)
            self.assertEqual(
                [(e.host, e.port) for e in peers],
                [("198.51.100.8", 4001), ("198.51.100.7", 4000)],
            )

    def test_on_peers_error_is_logged(self) -> None:
        """An ``on_peers`` that raises is logged; refreshing goes on."""
        h = Harness()
        h.serve()
        h.service.follow("myapp", on_peers=lambda peers: 1 // 0)
        h.service.startService()
        h.pass_time(301)
        self.assertEqual(len(h.attempts), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_servers_down_interval_grows(self) -> None:
        """
        While no server answers, the interval doubles at every round, up to
        one hour (the program has no connections).
        """
        h = Harness()
        h.service.follow("myapp", on_peers=h.on_peers)
        h.service.startService()
        h.pass_time(5 * HOUR)
        self.assertEqual(h.attempts[0], 0)
        gaps = h.gaps()
        self.assertGreaterEqual(len(gaps), 6)
        self.assertBetween(gaps[0], 400, 600)
        self.assertBetween(gaps[1], 800, 1200)
        self.assertBetween(gaps[2], 1600, 2400)
        self.assertBetween(gaps[3], 3200, HOUR)
        for gap in gaps[4:]:
            self.assertBetween(gap, HOUR, HOUR)
        # Every round still reports the cache.
        self.assertEqual(len(h.peers), len(h.attempts))
        self.assertTrue(all(peers.from_cache for _, peers in h.peers))

    def test_server_back_resets_interval(self) -> None:
        """When a server answers again, the base interval comes back."""
        h = Harness()
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(2000)
        self.assertEqual(len(h.attempts), 3)
        h.serve()
        h.pass_time(3000)
        gaps = h.gaps()
        self.assertBetween(gaps[2], 1600, 2400)  # the round that found the server
        for gap in gaps[3:]:
            self.assertBetween(gap, 200, 300)
        self.assertGreaterEqual(len(gaps), 5)

    def test_many_connections_double_the_interval(self) -> None:
        """With ``set_connections(10)`` the interval doubles at every round."""
        h = Harness()
        h.serve()
        h.service.set_connections(10)
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(8 * HOUR)
        gaps = h.gaps()
        self.assertGreaterEqual(len(gaps), 5)
        for i, gap in enumerate(gaps[:5]):
            self.assertBetween(gap, 200 * 2 ** (i + 1), 300 * 2 ** (i + 1))

    def test_dropping_connections_pulls_refresh_in(self) -> None:
        """
        When connections fall below ``min_connections``, the next refresh
        comes within one base interval, and the base interval returns.
        """
        h = Harness()
        h.serve()
        h.service.set_connections(10)
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(0)
        for _ in range(10_000):
            if len(h.attempts) == 5:
                break
            h.pass_time(1)
        self.assertEqual(len(h.attempts), 5)
        # Just after the fifth refresh: the next is 3200 s or more away.
        (call,) = h.clock.getDelayedCalls()
        self.assertGreater(call.getTime() - h.clock.seconds(), 3000)
        dropped = h.elapsed()
        h.service.set_connections(3)
        h.pass_time(HOUR)
        self.assertBetween(h.attempts[5] - dropped, 0, 300)
        for gap in h.gaps()[5:]:
            self.assertBetween(gap, 200, 300)

    def test_fewer_but_enough_connections_change_nothing(self) -> None:
        """Going from 10 to 4 connections keeps the long interval."""
        h = Harness()
        h.serve()
        h.service.set_connections(10)
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(0)
        h.pass_time(650)
        self.assertEqual(len(h.attempts), 2)
        (call,) = h.clock.getDelayedCalls()
        when = call.getTime()
        h.service.set_connections(4)
        self.assertEqual(call.getTime(), when)

    def test_follow_while_running_starts_at_once(self) -> None:
        h = Harness()
        h.serve()
        h.service.startService()
        h.pass_time(100)
        self.assertEqual(h.attempts, [])
        h.service.follow("myapp")
        h.pass_time(0)
        self.assertEqual(h.attempts, [100])

    def test_unfollow(self) -> None:
        """After ``unfollow`` the label is no longer looked up."""
        h = Harness()
        h.serve()
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(0)
        h.service.unfollow("myapp")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.pass_time(HOUR)
        self.assertEqual(h.attempts, [0])

    def test_unfollow_unknown(self) -> None:
        """Unfollowing a label that is not followed does nothing."""
        h = Harness()
        h.service.unfollow("myapp")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_follow_bad_label(self) -> None:
        h = Harness()
        self.assertRaises(ProtocolError, h.service.follow, "no spaces")


class AnnounceTests(TimingTestCase):
    def test_announce_at_start_and_reannounce(self) -> None:
        """
        ``announce_self`` announces when the service starts, then again
        every ``announce_interval`` less up to a tenth at random.
        """
        h = Harness()
        store = h.serve()
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(0)
        self.assertEqual(h.attempts, [0])
        self.assertEqual(stored(store, "myapp"), [Entry(NOW, "198.51.100.7", 4000)])
        h.pass_time(6 * HOUR)
        gaps = h.gaps()
        self.assertEqual(len(gaps), 6)
        for gap in gaps:
            self.assertBetween(gap, 0.9 * HOUR, HOUR)
        self.assertGreater(max(gaps) - min(gaps), 60)
        # Each announcement confirmed the entry anew.
        (entry,) = stored(store, "myapp")
        self.assertEqual(entry.timestamp, NOW + int(h.attempts[-1]))

    def test_custom_interval(self) -> None:
        h = Harness(announce_interval=600.0)
        h.serve()
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(1200)
        self.assertGreaterEqual(len(h.attempts), 2)
        for gap in h.gaps():
            self.assertBetween(gap, 540, 600)

    def test_retry_when_unreachable(self) -> None:
        """
        When no server can be reached, the announcement is retried after
        60, 120, 240 ... seconds, up to ``announce_interval``; once stored,
        the interval is back, and a later failure starts again at 60.
        """
        h = Harness()
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(6 * HOUR)
        self.assertEqual(h.gaps()[:8], [60, 120, 240, 480, 960, 1920, HOUR, HOUR])
        h.serve()
        h.pass_time(HOUR)
        stored_at = h.attempts[-1]
        h.network.refuse(SERVER)
        h.pass_time(HOUR + 200)
        after = [t - stored_at for t in h.attempts if t > stored_at]
        self.assertBetween(after[0], 0.9 * HOUR, HOUR)
        self.assertEqual([b - a for a, b in zip(after, after[1:])][:2], [60, 120])

    def test_retry_when_refused(self) -> None:
        """A server that answers but does not store the entry counts as a failure."""
        h = Harness()
        store = h.serve_skewed()
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(500)
        self.assertEqual(h.attempts, [0, 60, 180, 420])
        self.assertEqual(stored(store, "myapp"), [])

    def test_withdraw_stops(self) -> None:
        """After ``withdraw`` the entry is not announced again."""
        h = Harness()
        h.serve()
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(0)
        h.service.withdraw("myapp", "198.51.100.7", 4000)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.pass_time(3 * HOUR)
        self.assertEqual(h.attempts, [0])

    def test_withdraw_during_retries(self) -> None:
        h = Harness()
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(200)
        self.assertEqual(h.attempts, [0, 60, 180])
        h.service.withdraw("myapp", "198.51.100.7", 4000)
        h.pass_time(HOUR)
        self.assertEqual(h.attempts, [0, 60, 180])

    def test_announce_twice_is_once(self) -> None:
        """
        On a running service, ``announce_self`` announces at once; the same
        entry again is not announced twice.
        """
        h = Harness()
        h.serve()
        h.service.startService()
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.pass_time(0)
        self.assertEqual(h.attempts, [0])
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)

    def test_announce_bad_entry(self) -> None:
        h = Harness()
        self.assertRaises(ProtocolError, h.service.announce_self, "myapp", "not a host", 4000)
        self.assertRaises(ProtocolError, h.service.announce_self, "myapp", "198.51.100.7", 0)


class LifecycleTests(SynchronousTestCase):
    def test_nothing_before_start(self) -> None:
        """
        ``follow`` and ``announce_self`` do nothing until the service
        starts; then both run at once.
        """
        h = Harness()
        store = h.serve()
        h.service.follow("myapp", on_peers=h.on_peers)
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.pass_time(1000)
        self.assertEqual(h.attempts, [])
        h.service.startService()
        h.pass_time(0)
        self.assertEqual(h.attempts, [1000, 1000])
        self.assertEqual(len(h.peers), 1)
        self.assertEqual(stored(store, "myapp"), [Entry(NOW + 1000, "198.51.100.7", 4000)])
        # A refresh and an announcement are scheduled.
        self.assertEqual(len(h.clock.getDelayedCalls()), 2)

    def test_no_peers_after_unfollow(self) -> None:
        """A lookup still in flight when its label is unfollowed is not reported."""
        h = Harness()
        h.network.blackhole(SERVER)
        h.service.follow("myapp", on_peers=h.on_peers)
        h.service.startService()
        h.pass_time(0)
        self.assertEqual(h.attempts, [0])
        h.service.unfollow("myapp")
        h.pass_time(10)
        self.assertEqual(h.peers, [])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_stop_cancels_timers(self) -> None:
        """
        ``stopService`` cancels every timer: nothing is asked afterwards.
        """
        h = Harness()
        h.serve()
        h.service.follow("myapp")
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(1000)
        count = len(h.attempts)
        self.assertGreaterEqual(count, 5)
        d = h.service.stopService()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.pass_time(10 * HOUR)
        self.assertEqual(len(h.attempts), count)

    def test_stop_waits_for_lookup_in_flight(self) -> None:
        """
        ``stopService`` fires only when the lookup in flight has ended, and
        schedules no refresh after it.
        """
        h = Harness()
        h.network.blackhole(SERVER)
        peers: list[PeerList] = []
        h.service.follow("myapp", on_peers=peers.append)
        h.service.startService()
        h.pass_time(0)
        self.assertEqual(h.attempts, [0])
        d = h.service.stopService()
        self.assertNoResult(d)
        h.network.advance(h.client.timeout)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(peers), 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.pass_time(HOUR)
        self.assertEqual(h.attempts, [0])

    def test_stop_waits_for_announcement_in_flight(self) -> None:
        h = Harness()
        h.network.blackhole(SERVER)
        h.service.announce_self("myapp", "198.51.100.7", 4000)
        h.service.startService()
        h.pass_time(0)
        d = h.service.stopService()
        self.assertNoResult(d)
        h.network.advance(h.client.timeout)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """A stopped service starts refreshing again when restarted."""
        h = Harness()
        h.serve()
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(0)
        self.successResultOf(h.service.stopService())
        h.pass_time(HOUR)
        h.service.startService()
        h.pass_time(0)
        self.assertEqual(h.attempts, [0, HOUR])

    def test_restart_while_lookup_in_flight(self) -> None:
        """
        Started again before the lookup in flight ended, the service goes
        on refreshing once it ends.
        """
        h = Harness()
        h.network.blackhole(SERVER)
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(0)
        stopped = h.service.stopService()
        h.service.startService()
        h.pass_time(0)
        self.assertEqual(h.attempts, [0])
        h.pass_time(h.client.timeout)
        self.assertIsNone(self.successResultOf(stopped))
        h.pass_time(HOUR)
        self.assertGreater(len(h.attempts), 1)

    def test_stop_does_not_close_client(self) -> None:
        h = Harness()
        h.serve()
        h.service.follow("myapp")
        h.service.startService()
        h.pass_time(0)
        self.successResultOf(h.service.stopService())
        d: Deferred[PeerList] = h.client.lookup("myapp")
        h.network.flush()
        self.assertEqual(self.successResultOf(d).label, "myapp")

    def test_clock_defaults_to_client_reactor(self) -> None:
        h = Harness()
        self.assertIs(h.service.clock, h.clock)
        other = Clock()
        service = HALPClientService(h.client, clock=other)
        self.assertIs(service.clock, other)
