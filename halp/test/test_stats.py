"""Tests for :mod:`halp.stats`, the server's counters."""

from __future__ import annotations

from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from halp.stats import COUNTERS, OK_RESULTS, RecentError, Stats, Traffic, client_network


class StatsTests(SynchronousTestCase):
    def test_every_counter_starts_at_zero_in_order(self) -> None:
        self.assertEqual(list(Stats()), [(name, 0) for name in COUNTERS])

    def test_increment(self) -> None:
        stats = Stats()
        stats.increment("push-received")
        stats.increment("push-received")
        stats.increment("entries-pulled", 7)
        stats.increment("entries-pulled", 0)
        self.assertEqual(stats["push-received"], 2)
        self.assertEqual(stats["entries-pulled"], 7)
        self.assertEqual(
            [name for name, value in stats if value], ["push-received", "entries-pulled"]
        )

    def test_order_does_not_follow_use(self) -> None:
        stats = Stats()
        stats.increment("peer-tests-failed")
        self.assertEqual([name for name, _ in stats], list(COUNTERS))

    def test_unknown_counters(self) -> None:
        stats = Stats()
        self.assertRaises(KeyError, stats.increment, "no-such-counter")
        self.assertRaises(KeyError, stats.__getitem__, "no-such-counter")
        self.assertNotIn("no-such-counter", dict(stats))
        self.assertEqual(len(list(stats)), len(COUNTERS))

    def test_instances_are_independent(self) -> None:
        first, second = Stats(), Stats()
        first.increment("changes-served")
        self.assertEqual(second["changes-served"], 0)

    def test_counter_names_are_one_word(self) -> None:
        """A ``stats`` answer is ``NAME VALUE`` lines: names are one lower-case word."""
        for name, description in COUNTERS.items():
            self.assertRegex(name, r"\A[a-z][a-z-]*[a-z]\Z")
            self.assertTrue(description)
        self.assertNotIn("uptime", COUNTERS)


class DocumentedTests(SynchronousTestCase):
    def test_every_counter_is_documented(self) -> None:
        """docs/federation.rst lists every counter with the same text."""
        docs = Path(__file__).resolve().parents[2] / "docs" / "federation.rst"
        if not docs.exists():
            raise SkipTest("no docs/ beside the package")
        text = docs.read_text("utf-8")
        for name, meaning in COUNTERS.items():
            self.assertIn(f"``{name}``\n     - {meaning}", text)


class ClientNetworkTests(SynchronousTestCase):
    def test_ipv4_is_its_24(self) -> None:
        self.assertEqual(client_network("198.51.100.1"), "198.51.100.0/24")
        self.assertEqual(client_network("198.51.100.255"), "198.51.100.0/24")
        self.assertEqual(client_network("10.0.0.0"), "10.0.0.0/24")

    def test_ipv6_is_its_48(self) -> None:
        self.assertEqual(client_network("2001:db8:1:2::5"), "2001:db8:1::/48")
        self.assertEqual(client_network("2001:DB8:1:ffff:ffff::1"), "2001:db8:1::/48")
        self.assertEqual(client_network("::1"), "::/48")
        # An IPv4 client of a dual-stack listener is shown by its IPv4 /24.
        self.assertEqual(client_network("::ffff:198.51.100.1"), "198.51.100.0/24")

    def test_not_an_address(self) -> None:
        for host in ("", "peer.example.net", "localhost", "198.51.100", "2001:db8::g", "198.51.100.1:80", "?"):
            self.assertEqual(client_network(host), "?", host)

    def test_never_the_address_itself(self) -> None:
        for host in ("198.51.100.77", "2001:db8:1:2:3:4:5:6"):
            self.assertNotIn(host, client_network(host))


class TrafficTests(SynchronousTestCase):
    def test_starts_empty(self) -> None:
        traffic = Traffic()
        self.assertEqual(traffic.requests, {})
        self.assertEqual(traffic.connections["http"], 0)
        self.assertEqual(traffic.connections["halp1"], 0)
        self.assertEqual(list(traffic.recent), [])

    def test_counts_by_frontend_kind_and_result(self) -> None:
        traffic = Traffic()
        traffic.record("http", "get", "ok", when=1)
        traffic.record("http", "get", "ok", when=2)
        traffic.record("http", "get", "not-modified", when=3)
        traffic.record("halp1", "get", "ok", when=4)
        traffic.record("http", "insert", "bad-entry", when=5)
        self.assertEqual(
            dict(traffic.requests),
            {
                ("http", "get", "ok"): 2,
                ("http", "get", "not-modified"): 1,
                ("halp1", "get", "ok"): 1,
                ("http", "insert", "bad-entry"): 1,
            },
        )

    def test_only_errors_are_remembered(self) -> None:
        traffic = Traffic()
        for result in OK_RESULTS:
            traffic.record("http", "get", result, when=1, peer="198.51.100.1", request="GET /")
        self.assertEqual(list(traffic.recent), [])
        traffic.record(
            "halp1",
            "get",
            "bad-label",
            when=1_700_000_000,
            peer="198.51.100.1",
            request="get bad!",
            message="bad label",
        )
        self.assertEqual(
            list(traffic.recent),
            [
                RecentError(
                    1_700_000_000, "halp1", "198.51.100.0/24", "get bad!", "bad-label", "bad label"
                )
            ],
        )

    def test_error_defaults(self) -> None:
        """Without a peer the network is unknown; without a request, the kind stands in."""
        traffic = Traffic()
        traffic.record("http", "metrics", "unavailable", when=7)
        self.assertEqual(
            list(traffic.recent), [RecentError(7, "http", "?", "metrics", "unavailable", "")]
        )

    def test_recent_is_bounded_and_keeps_the_latest(self) -> None:
        traffic = Traffic(recent=3)
        for when in range(10):
            traffic.record("http", "get", "bad-range", when=when, peer="2001:db8::1")
        self.assertEqual([e.time for e in traffic.recent], [7, 8, 9])
        self.assertEqual({e.network for e in traffic.recent}, {"2001:db8::/48"})
        self.assertEqual(traffic.requests[("http", "get", "bad-range")], 10)

    def test_default_remembers_50(self) -> None:
        traffic = Traffic()
        for when in range(60):
            traffic.record("http", "get", "bad-range", when=when)
        self.assertEqual(len(traffic.recent), 50)
        self.assertEqual(traffic.recent[0].time, 10)

    def test_connections(self) -> None:
        traffic = Traffic()
        traffic.connected("http", 1)
        traffic.connected("http", 1)
        traffic.connected("halp1", 1)
        self.assertEqual((traffic.connections["http"], traffic.connections["halp1"]), (2, 1))
        traffic.connected("http", -1)
        traffic.connected("halp1", -1)
        self.assertEqual((traffic.connections["http"], traffic.connections["halp1"]), (1, 0))

    def test_instances_are_independent(self) -> None:
        first, second = Traffic(), Traffic()
        first.record("http", "get", "bad-label", when=1)
        first.connected("http", 1)
        self.assertEqual(second.requests, {})
        self.assertEqual(list(second.recent), [])
        self.assertEqual(second.connections["http"], 0)
