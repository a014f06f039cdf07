"""Tests for :mod:`halp.ratelimit`: token buckets, with the time passed in."""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from halp.ratelimit import KeyedLimiter, TokenBucket


class TokenBucketTests(SynchronousTestCase):
    def test_starts_full(self) -> None:
        bucket = TokenBucket(rate=2.0, burst=10.0, now=100.0)
        self.assertEqual(bucket.tokens, 10.0)
        self.assertTrue(bucket.full(100.0))
        self.assertEqual(bucket.take(10, 100.0), 0.0)
        self.assertEqual(bucket.tokens, 0.0)
        self.assertFalse(bucket.full(100.0))

    def test_take_what_is_there(self) -> None:
        bucket = TokenBucket(2.0, 10.0, 0.0)
        self.assertEqual(bucket.take(4, 0.0), 0.0)
        self.assertEqual(bucket.take(6, 0.0), 0.0)
        self.assertEqual(bucket.tokens, 0.0)

    def test_too_many_says_how_long_to_wait_and_takes_nothing(self) -> None:
        bucket = TokenBucket(2.0, 10.0, 0.0)
        bucket.take(7, 0.0)
        self.assertEqual(bucket.take(5, 0.0), 1.0)  # 2 missing at 2 per second
        self.assertEqual(bucket.tokens, 3.0)
        self.assertEqual(bucket.take(3, 0.0), 0.0)

    def test_refills_at_the_rate(self) -> None:
        bucket = TokenBucket(2.0, 10.0, 0.0)
        bucket.take(10, 0.0)
        self.assertEqual(bucket.take(3, 1.0), 0.5)
        self.assertEqual(bucket.tokens, 2.0)
        self.assertEqual(bucket.take(3, 1.5), 0.0)
        self.assertEqual(bucket.tokens, 0.0)

    def test_the_wait_it_names_is_enough(self) -> None:
        bucket = TokenBucket(2.0, 10.0, 0.0)
        bucket.take(9.5, 0.0)
        wait = bucket.take(7, 0.0)
        self.assertEqual(wait, 3.25)
        self.assertGreater(bucket.take(7, wait - 0.01), 0)
        self.assertEqual(bucket.take(7, wait), 0.0)

    def test_never_more_than_the_burst(self) -> None:
        bucket = TokenBucket(2.0, 10.0, 0.0)
        bucket.take(10, 0.0)
        self.assertTrue(bucket.full(10**6))
        self.assertEqual(bucket.tokens, 10.0)
        self.assertEqual(bucket.take(10, 10**6), 0.0)
        self.assertEqual(bucket.take(0.5, 10**6), 0.25)

    def test_more_than_the_burst_never_fits(self) -> None:
        bucket = TokenBucket(2.0, 10.0, 0.0)
        self.assertEqual(bucket.take(10.5, 0.0), math.inf)
        self.assertEqual(bucket.tokens, 10.0)
        bucket.take(10, 0.0)
        self.assertEqual(bucket.take(11, 0.0), math.inf)

    def test_a_clock_that_goes_back_adds_nothing(self) -> None:
        bucket = TokenBucket(2.0, 10.0, 100.0)
        bucket.take(10, 100.0)
        self.assertEqual(bucket.take(1, 50.0), 0.5)
        self.assertEqual(bucket.tokens, 0.0)
        self.assertEqual(bucket.updated, 100.0)
        # Refilling starts from the latest time seen, not the earlier one.
        self.assertEqual(bucket.take(2, 101.0), 0.0)

    def test_fractions(self) -> None:
        bucket = TokenBucket(0.5, 1.0, 0.0)
        self.assertEqual(bucket.take(0.25, 0.0), 0.0)
        self.assertEqual(bucket.take(1, 0.0), 0.5)
        self.assertEqual(bucket.take(1, 0.5), 0.0)

    def test_rate_and_burst_must_be_positive(self) -> None:
        for rate, burst in ((0, 1), (-1, 1), (1, 0), (1, -5)):
            self.assertRaises(ValueError, TokenBucket, rate, burst, 0.0)


class KeyedLimiterTests(SynchronousTestCase):
    def test_one_bucket_per_key(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(rate=1.0, burst=5.0)
        self.assertEqual(limiter.take("a", 5, 0.0), 0.0)
        self.assertEqual(limiter.take("a", 1, 0.0), 1.0)
        self.assertEqual(limiter.take("b", 5, 0.0), 0.0)
        self.assertEqual(len(limiter), 2)

    def test_a_refused_take_costs_nothing(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(1.0, 5.0)
        self.assertEqual(limiter.take("a", 6, 0.0), math.inf)
        self.assertEqual(limiter.take("a", 5, 0.0), 0.0)

    def test_buckets_refill(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(2.0, 4.0)
        limiter.take("a", 4, 0.0)
        self.assertEqual(limiter.take("a", 4, 1.0), 1.0)
        self.assertEqual(limiter.take("a", 4, 2.0), 0.0)

    def test_any_hashable_key(self) -> None:
        limiter: KeyedLimiter[tuple[str, int]] = KeyedLimiter(1.0, 1.0)
        self.assertEqual(limiter.take(("h", 1), 1, 0.0), 0.0)
        self.assertEqual(limiter.take(("h", 2), 1, 0.0), 0.0)
        self.assertEqual(limiter.take(("h", 1), 1, 0.0), 1.0)

    def test_at_most_max_keys(self) -> None:
        limiter: KeyedLimiter[int] = KeyedLimiter(1.0, 10.0, max_keys=3)
        for key in range(100):
            limiter.take(key, 10, float(key) / 1000)
            self.assertLessEqual(len(limiter), 3)
        self.assertEqual(len(limiter), 3)

    def test_full_buckets_are_forgotten_first(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(1.0, 10.0, max_keys=2)
        limiter.take("a", 10, 0.0)  # least recently used, and still drained at 6
        limiter.take("b", 1, 5.0)  # full again at 6
        limiter.take("c", 1, 6.0)
        self.assertEqual(len(limiter), 2)
        # "a" was kept: it still has only 6 tokens.
        self.assertEqual(limiter.take("a", 7, 6.0), 1.0)
        # "b" was forgotten, and starts full again: nothing lost.
        self.assertEqual(limiter.take("b", 10, 6.0), 0.0)

    def test_every_full_bucket_is_forgotten(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(1.0, 10.0, max_keys=3)
        for key in "abc":
            limiter.take(key, 1, 0.0)
        limiter.take("d", 1, 100.0)
        self.assertEqual(len(limiter), 1)

    def test_then_the_least_recently_used(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(1.0, 10.0, max_keys=2)
        limiter.take("a", 10, 0.0)
        limiter.take("b", 10, 0.0)
        limiter.take("a", 0, 0.0)  # "a" is now the most recently used
        limiter.take("c", 10, 0.0)
        self.assertEqual(len(limiter), 2)
        self.assertEqual(limiter.take("a", 1, 0.0), 1.0)  # kept, still drained
        # "b" was evicted drained: a new bucket for it starts full.
        self.assertEqual(limiter.take("b", 10, 0.0), 0.0)

    def test_a_known_key_never_shrinks(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(1.0, 10.0, max_keys=2)
        limiter.take("a", 10, 0.0)
        limiter.take("b", 10, 0.0)
        for _ in range(5):
            limiter.take("a", 1, 100.0)
            limiter.take("b", 1, 100.0)
        self.assertEqual(len(limiter), 2)
        self.assertEqual(limiter.take("a", 6, 100.0), 1.0)  # 5 left in "a"

    def test_one_key(self) -> None:
        limiter: KeyedLimiter[str] = KeyedLimiter(1.0, 10.0, max_keys=1)
        limiter.take("a", 10, 0.0)
        limiter.take("b", 10, 0.0)
        self.assertEqual(len(limiter), 1)
        self.assertEqual(limiter.take("b", 1, 0.0), 1.0)


class LimiterArgumentTests(SynchronousTestCase):
    def test_bad_arguments_are_refused_at_once(self) -> None:
        for args in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (-1, 1, 1)):
            self.assertRaises(ValueError, KeyedLimiter, *args)
