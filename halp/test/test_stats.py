"""Tests for :mod:`halp.stats`, the server's counters."""

from __future__ import annotations

from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from halp.stats import COUNTERS, Stats


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
