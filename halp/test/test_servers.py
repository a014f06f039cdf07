"""
Tests for :mod:`halp.client.servers`: parsing server addresses, and the
client's table of known servers (order, quality, backoff, learning,
forgetting, persistence, dialects).

Everything here is pure logic; time is an ``int`` passed in.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Union

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from halp.client.servers import (
    Listed,
    BACKOFF_BASE,
    BACKOFF_CAP,
    BAN_TIME,
    MAX_BANNED,
    DIALECT_RECHECK,
    FORGET_AFTER,
    FORGET_FAILURES,
    INITIAL_QUALITY,
    MAX_LEARNED,
    PINNED_BAN_TIME,
    QUALITY_ANSWER,
    QUALITY_FAILURE,
    QUALITY_MISBEHAVED,
    Dialect,
    ServerAddress,
    ServerRecord,
    ServerTable,
    parse_server,
)
from halp.model import Entry

NOW = 1_700_000_000
DAY = 86_400


def addr(i: int) -> ServerAddress:
    """The ``i``-th test server."""
    return ServerAddress(f"192.0.2.{i}", 7100)


def entry(address: ServerAddress, timestamp: int) -> Entry:
    """The ``halp`` entry naming ``address``."""
    return Entry(timestamp, address.host, address.port)


def table_of(
    *learned: tuple[ServerAddress, int],
    pinned: tuple[ServerAddress, ...] = (),
    max_learned: int = MAX_LEARNED,
) -> ServerTable:
    """A loaded table with ``pinned`` seeds and learned ``(address, confirmed)``."""
    table = ServerTable([(a, None) for a in pinned], max_learned)
    table.load(None, [], NOW)
    keep, evicted = table.learn([entry(a, t) for a, t in learned], NOW)
    assert len(keep) == len(learned) and not evicted, (keep, evicted)
    return table


def record(table: ServerTable, address: ServerAddress) -> ServerRecord:
    found = table.get(address)
    assert found is not None, f"{address} is not in the table"
    return found


def order(records: list[ServerRecord]) -> list[ServerAddress]:
    return [r.address for r in records]


def learned_count(table: ServerTable) -> int:
    return sum(not r.pinned for r in table.records())


# -- parse_server --------------------------------------------------------------


class ParseServerTests(SynchronousTestCase):
    def test_host_and_port(self) -> None:
        self.assertEqual(
            parse_server("192.0.2.1:7100"), (ServerAddress("192.0.2.1", 7100), None)
        )
        self.assertEqual(
            parse_server("  halp.example:1 \n"), (ServerAddress("halp.example", 1), None)
        )
        self.assertEqual(
            parse_server("h.example:65535"), (ServerAddress("h.example", 65535), None)
        )

    def test_dns_names_are_canonical(self) -> None:
        """Names come back as :func:`halp.model.check_host` writes them."""
        self.assertEqual(
            parse_server("HALP.Example.COM.:80"), (ServerAddress("halp.example.com", 80), None)
        )

    def test_bracketed_ipv6(self) -> None:
        self.assertEqual(
            parse_server("[2001:DB8:0::1]:7100"), (ServerAddress("2001:db8::1", 7100), None)
        )
        self.assertEqual(parse_server("[::1]:80"), (ServerAddress("::1", 80), None))
        self.assertEqual(
            parse_server("[::FFFF:192.0.2.1]:80"), (ServerAddress("::ffff:192.0.2.1", 80), None)
        )

    def test_prefixes_set_the_dialect(self) -> None:
        self.assertEqual(
            parse_server("halp://h.example:80"), (ServerAddress("h.example", 80), "halp1")
        )
        self.assertEqual(
            parse_server("halp://h.example:80/"), (ServerAddress("h.example", 80), "halp1")
        )
        self.assertEqual(
            parse_server("libhalp://192.0.2.1:80"), (ServerAddress("192.0.2.1", 80), "libhalp")
        )
        self.assertEqual(
            parse_server("libhalp://[2001:db8::1]:80/"),
            (ServerAddress("2001:db8::1", 80), "libhalp"),
        )

    def assertRefused(self, text: str, why: str) -> None:
        e = self.assertRaises(ValueError, parse_server, text)
        message = str(e)
        self.assertTrue(message.startswith(f"bad server {text!r}: "), message)
        self.assertIn(why, message)
        self.assertNotIn("\n", message)
        self.assertNotIn("\r", message)

    def test_bare_ipv6_is_refused_with_a_hint(self) -> None:
        for text in ["2001:db8::1:80", "::1:80", "2001:db8::1", "[2001:db8::1]", "libhalp://::1:80"]:
            self.assertRefused(text, "write an IPv6 address as [ADDRESS]:PORT")

    def test_missing_parts(self) -> None:
        for text in ["h.example", "", "   ", ":80", "halp://", "halp://:80"]:
            self.assertRefused(text, "expected HOST:PORT")

    def test_bad_ports(self) -> None:
        for text in [
            "h.example:0",
            "h.example:65536",
            "h.example:123456",
            "h.example:",
            "h.example:x",
            "h.example:-1",
            "h.example:+80",
            "h.example: 80",
            "h.example:80/",
            "h.example:\u0668\u0660",  # Arabic-Indic digits are not ASCII digits
            "[::1]:0",
            "[::1]:",
            "[::1]:x",
            "[::1]:8\n0",
            "[::1]:80]",
        ]:
            self.assertRefused(text, "bad port")

    def test_bad_hosts(self) -> None:
        for text in [
            "bad_host:80",
            "-h.example:80",
            "h..example:80",
            "999.1.1.1:80",
            "192.0.2.1.:80",
            "h.123:80",
            "caf\u00e9.example:80",
            "[fe80::1%eth0]:80",
            "[not-ipv6:x]:80",
            "[]:80",
            "h.example\n:80",
        ]:
            self.assertRefused(text, "bad host")

    def test_unknown_schemes(self) -> None:
        for text in [
            "ftp://h.example:80",
            "HALP://h.example:80",
            "halp://libhalp://h.example:80",
            "libhalp://halp://h.example:80",
            "libhalp://http://h.example:80",
        ]:
            self.assertRefused(
                text,
                "expected HOST:PORT, halp://HOST:PORT, libhalp://HOST:PORT or http(s)://HOST:PORT/",
            )

    def test_messages_are_one_line(self) -> None:
        self.assertRefused("a\nb", "expected HOST:PORT")
        self.assertRefused("x\r\n:80", "bad host")

    @given(
        st.sampled_from(["192.0.2.1", "2001:db8::1", "::", "h.example", "a", "x-1.y"]),
        st.integers(1, 65535),
        st.sampled_from(["", "halp://", "libhalp://"]),
    )
    def test_str_parses_back(self, host: str, port: int, prefix: str) -> None:
        address = ServerAddress(host, port)
        dialect = {"": None, "halp://": "halp1", "libhalp://": "libhalp"}[prefix]
        self.assertEqual(parse_server(prefix + str(address)), (address, dialect))


class ServerAddressTests(SynchronousTestCase):
    def test_str(self) -> None:
        self.assertEqual(str(ServerAddress("192.0.2.1", 7100)), "192.0.2.1:7100")
        self.assertEqual(str(ServerAddress("h.example", 1)), "h.example:1")
        self.assertEqual(str(ServerAddress("2001:db8::1", 80)), "[2001:db8::1]:80")
        self.assertEqual(str(ServerAddress("::ffff:192.0.2.1", 80)), "[::ffff:192.0.2.1]:80")

    def test_of_entry(self) -> None:
        self.assertEqual(
            ServerAddress.of(Entry(5, "2001:db8::1", 80)), ServerAddress("2001:db8::1", 80)
        )

    def test_record_address(self) -> None:
        self.assertEqual(ServerRecord("h.example", 80).address, ServerAddress("h.example", 80))


# -- choose --------------------------------------------------------------------


class ChooseTests(SynchronousTestCase):
    def test_order(self) -> None:
        """
        Answered last time (newest confirmed first), then untested or out of
        backoff, then in backoff.
        """
        table = table_of(*((addr(i), NOW - 100) for i in range(1, 8)))
        table.succeeded(addr(1), NOW, 0, "halp1")
        table.succeeded(addr(2), NOW + 10, 0, "halp1")
        table.learn([entry(addr(4), NOW - 50)], NOW)  # untested, newer
        table.failed(addr(5), NOW)  # backoff until NOW + 60
        table.failed(addr(6), NOW + 30)  # backoff until NOW + 90
        table.succeeded(addr(7), NOW + 20, 0, "halp1")
        table.failed(addr(7), NOW + 21)  # answered once, not last time
        self.assertEqual(
            order(table.choose(NOW + 59, 1)),
            [addr(2), addr(1), addr(4), addr(3), addr(7), addr(5), addr(6)],
        )
        # 5's backoff is over; 7's (until NOW + 81) is too, and it is the
        # most recently confirmed of them.
        self.assertEqual(
            order(table.choose(NOW + 81, 1)),
            [addr(2), addr(1), addr(7), addr(4), addr(3), addr(5), addr(6)],
        )
        self.assertEqual(
            order(table.choose(NOW + 90, 1)),
            [addr(2), addr(1), addr(7), addr(4), addr(3), addr(5), addr(6)],
        )

    def test_ties_go_to_quality_then_address(self) -> None:
        table = table_of((addr(3), NOW), (addr(2), NOW), (addr(1), NOW))
        table.succeeded(addr(3), NOW, 50, "halp1")
        table.succeeded(addr(2), NOW, 1, "halp1")
        table.succeeded(addr(1), NOW, 1, "halp1")
        self.assertEqual(order(table.choose(NOW, 1)), [addr(3), addr(1), addr(2)])

    def test_backoff_boundary(self) -> None:
        table = table_of((addr(1), NOW), (addr(2), NOW - 1000))
        table.failed(addr(1), NOW)
        self.assertEqual(order(table.choose(NOW + BACKOFF_BASE - 1, 1)), [addr(2), addr(1)])
        self.assertEqual(order(table.choose(NOW + BACKOFF_BASE, 1)), [addr(1), addr(2)])

    def test_in_backoff_servers_are_still_listed(self) -> None:
        table = table_of((addr(1), NOW), (addr(2), NOW))
        table.failed(addr(1), NOW)
        table.failed(addr(2), NOW)
        self.assertEqual(order(table.choose(NOW + 1, 3)), [addr(1), addr(2)])

    def answered_and_untested(self, untested: int = 1) -> ServerTable:
        """Answered servers 1, 2, 3 (3 the newest), untested 4, 5, ..."""
        table = table_of(*((addr(i), NOW - 1000 + i) for i in range(1, 4 + untested)))
        for i in (1, 2, 3):
            table.succeeded(addr(i), NOW + i, 0, "halp1")
        return table

    def test_one_untested_server_is_tried_alongside(self) -> None:
        table = self.answered_and_untested()
        self.assertEqual(order(table.choose(NOW, 2)), [addr(3), addr(4), addr(2), addr(1)])
        self.assertEqual(order(table.choose(NOW, 3)), [addr(3), addr(2), addr(4), addr(1)])

    def test_not_with_width_one(self) -> None:
        table = self.answered_and_untested()
        self.assertEqual(order(table.choose(NOW, 1)), [addr(3), addr(2), addr(1), addr(4)])

    def test_not_when_every_server_is_asked_at_once(self) -> None:
        table = self.answered_and_untested()
        self.assertEqual(order(table.choose(NOW, 4)), [addr(3), addr(2), addr(1), addr(4)])
        self.assertEqual(order(table.choose(NOW, 10)), [addr(3), addr(2), addr(1), addr(4)])

    def test_only_one_is_promoted(self) -> None:
        table = self.answered_and_untested(untested=2)
        promoted = order(table.choose(NOW, 2))
        self.assertIn(
            promoted,
            [
                [addr(3), addr(5), addr(2), addr(1), addr(4)],
                [addr(3), addr(4), addr(2), addr(1), addr(5)],
            ],
        )

    def test_the_promoted_one_is_drawn_at_random(self) -> None:
        """
        Not the most recently confirmed: a hostile server lists its
        accomplices as confirmed just now.  Each untested server is tried
        first about as often; the table's generator decides.
        """
        seen: dict[ServerAddress, int] = {}
        for seed in range(200):
            table = self.answered_and_untested(untested=2)
            table._rng = random.Random(seed)
            promoted = table.choose(NOW, 2)[1].address
            seen[promoted] = seen.get(promoted, 0) + 1
        self.assertEqual(set(seen), {addr(4), addr(5)})
        self.assertGreater(min(seen.values()), 70)
        again = [self.answered_and_untested(untested=2) for _ in range(2)]
        for table in again:
            table._rng = random.Random(7)
        self.assertEqual(*(order(t.choose(NOW, 2)) for t in again))

    def test_not_when_an_untested_server_is_among_the_first(self) -> None:
        table = table_of((addr(1), NOW), (addr(2), NOW - 1), (addr(3), NOW - 2))
        table.succeeded(addr(1), NOW, 0, "halp1")
        self.assertEqual(order(table.choose(NOW, 2)), [addr(1), addr(2), addr(3)])

    def test_tested_servers_out_of_backoff_are_not_promoted(self) -> None:
        table = table_of(*((addr(i), NOW - 1000 + i) for i in range(1, 5)))
        for i in (1, 2, 3):
            table.succeeded(addr(i), NOW + i, 0, "halp1")
        table.failed(addr(4), NOW)
        self.assertEqual(
            order(table.choose(NOW + DAY, 2)), [addr(3), addr(2), addr(1), addr(4)]
        )

    def test_records_lists_every_server(self) -> None:
        table = table_of((addr(1), NOW), (addr(2), NOW - 5), pinned=(addr(9),))
        table.succeeded(addr(2), NOW + 1, 0, "halp1")
        self.assertEqual(order(table.records()), [addr(2), addr(1), addr(9)])
        self.assertEqual(len(table), 3)
        self.assertIn(addr(9), table)
        self.assertNotIn(addr(8), table)
        self.assertIsNone(table.get(addr(8)))


# -- succeeded and failed ------------------------------------------------------


class OutcomeTests(SynchronousTestCase):
    def test_a_new_server(self) -> None:
        table = table_of((addr(1), NOW - 10))
        self.assertEqual(
            record(table, addr(1)),
            ServerRecord(addr(1).host, addr(1).port, confirmed=NOW - 10, first_seen=NOW),
        )
        r = record(table, addr(1))
        self.assertEqual(r.quality, INITIAL_QUALITY)
        self.assertEqual(r.quality, 10_000)
        self.assertFalse(r.tested)
        self.assertFalse(r.pinned)

    def test_success(self) -> None:
        """+100 per answer, +1 per entry delivered."""
        table = table_of((addr(1), NOW - 10))
        table.succeeded(addr(1), NOW + 5, 7, "halp1")
        r = record(table, addr(1))
        self.assertEqual(
            (r.quality, r.successes, r.entries, r.last_success, r.confirmed),
            (10_107, 1, 7, NOW + 5, NOW + 5),
        )
        table.succeeded(addr(1), NOW + 6, 0, "halp1")
        self.assertEqual((r.quality, r.successes, r.entries), (10_207, 2, 7))
        self.assertTrue(r.tested)

    def test_success_never_moves_confirmed_back(self) -> None:
        table = table_of((addr(1), NOW))
        table.learn([entry(addr(1), NOW + 100)], NOW + 100)
        table.succeeded(addr(1), NOW + 50, 0, "halp1")
        self.assertEqual(record(table, addr(1)).confirmed, NOW + 100)

    def test_failure(self) -> None:
        """-100 per failure, never below 0."""
        table = table_of(pinned=(addr(1),))
        table.failed(addr(1), NOW)
        r = record(table, addr(1))
        self.assertEqual((r.quality, r.failures, r.failures_in_row, r.last_failure), (9_900, 1, 1, NOW))
        self.assertTrue(r.tested)
        for i in range(120):
            table.failed(addr(1), NOW + i)
        self.assertEqual((r.quality, r.failures), (0, 121))
        table.succeeded(addr(1), NOW + 200, 3, "halp1")
        self.assertEqual(r.quality, 103)

    def test_floor_is_exact(self) -> None:
        table = table_of(pinned=(addr(1),))
        r = record(table, addr(1))
        r.quality = 150
        table.failed(addr(1), NOW)
        self.assertEqual(r.quality, 50)
        table.failed(addr(1), NOW)
        self.assertEqual(r.quality, 0)

    def test_backoff_doubles_up_to_a_day(self) -> None:
        self.assertEqual((BACKOFF_BASE, BACKOFF_CAP), (60, 86_400))
        table = table_of(pinned=(addr(1),))
        r = record(table, addr(1))
        delays = []
        for n in range(1, 41):
            now = NOW + n * 1000
            table.failed(addr(1), now)
            self.assertEqual(r.failures_in_row, n)
            self.assertEqual(r.retry_at - now, min(60 * 2 ** (n - 1), 86_400))
            self.assertTrue(r.in_backoff(now))
            self.assertTrue(r.in_backoff(r.retry_at - 1))
            self.assertFalse(r.in_backoff(r.retry_at))
            delays.append(r.retry_at - now)
        self.assertEqual(delays[:4], [60, 120, 240, 480])
        self.assertEqual(delays[10:13], [61_440, 86_400, 86_400])

    def test_success_resets_the_backoff(self) -> None:
        table = table_of(pinned=(addr(1),))
        r = record(table, addr(1))
        for _ in range(5):
            table.failed(addr(1), NOW)
        table.succeeded(addr(1), NOW + 1, 0, "halp1")
        self.assertEqual((r.failures_in_row, r.retry_at, r.failures), (0, 0, 5))
        self.assertFalse(r.in_backoff(NOW + 1))
        self.assertEqual(r.rank(NOW + 1), 0)
        table.failed(addr(1), NOW + 2)
        self.assertEqual(r.retry_at, NOW + 2 + 60)

    def test_unknown_servers_are_ignored(self) -> None:
        table = table_of((addr(1), NOW))
        table.succeeded(addr(2), NOW, 5, "halp1")
        self.assertEqual(table.failed(addr(2), NOW), [])
        self.assertNotIn(addr(2), table)
        self.assertEqual(len(table), 1)


class ForgetTests(SynchronousTestCase):
    def test_constants(self) -> None:
        self.assertEqual((FORGET_FAILURES, FORGET_AFTER), (10, 7 * DAY))

    def test_many_failures_over_a_week(self) -> None:
        table = table_of((addr(1), NOW))
        for n in range(1, 10):
            self.assertEqual(table.failed(addr(1), NOW + 8 * DAY + n), [])
        self.assertEqual(table.failed(addr(1), NOW + 8 * DAY + 10), [addr(1)])
        self.assertNotIn(addr(1), table)

    def test_not_within_a_week(self) -> None:
        """Ten failures in a row within a week of the last news are not enough."""
        table = table_of((addr(1), NOW))
        for n in range(30):
            self.assertEqual(table.failed(addr(1), NOW + 7 * DAY - 30 + n), [])
        self.assertEqual(table.failed(addr(1), NOW + 7 * DAY), [addr(1)])

    def test_the_week_counts_from_the_last_success(self) -> None:
        table = table_of((addr(1), NOW))
        table.succeeded(addr(1), NOW + 5 * DAY, 0, "halp1")
        for n in range(20):
            self.assertEqual(table.failed(addr(1), NOW + 12 * DAY - 20 + n), [])
        self.assertEqual(table.failed(addr(1), NOW + 12 * DAY), [addr(1)])

    def test_a_success_breaks_the_run(self) -> None:
        table = table_of((addr(1), NOW))
        first, then = NOW + 8 * DAY, NOW + 16 * DAY
        for _ in range(9):
            self.assertEqual(table.failed(addr(1), first), [])
        table.succeeded(addr(1), first, 0, "halp1")
        for _ in range(9):
            self.assertEqual(table.failed(addr(1), then), [])
        self.assertEqual(table.failed(addr(1), then), [addr(1)])

    def test_pinned_servers_are_never_forgotten(self) -> None:
        table = table_of(pinned=(addr(1),))
        for n in range(1000):
            self.assertEqual(table.failed(addr(1), NOW + n * DAY), [])
        self.assertTrue(record(table, addr(1)).pinned)
        self.assertEqual(record(table, addr(1)).quality, 0)


# -- learn ---------------------------------------------------------------------


class LearnTests(SynchronousTestCase):
    def test_new_servers(self) -> None:
        table = table_of()
        entries = [entry(addr(1), NOW - 5), entry(addr(2), NOW - 9)]
        self.assertEqual(table.learn(entries, NOW), (entries, []))
        self.assertEqual(
            record(table, addr(2)),
            ServerRecord(addr(2).host, addr(2).port, confirmed=NOW - 9, first_seen=NOW),
        )
        self.assertFalse(record(table, addr(2)).pinned)

    def test_known_servers_only_move_forward(self) -> None:
        table = table_of((addr(1), NOW - 100), pinned=(addr(9),))
        older, newer = entry(addr(1), NOW - 200), entry(addr(1), NOW - 50)
        self.assertEqual(table.learn([older], NOW), ([older], []))
        self.assertEqual(record(table, addr(1)).confirmed, NOW - 100)
        self.assertEqual(table.learn([newer], NOW), ([newer], []))
        self.assertEqual(record(table, addr(1)).confirmed, NOW - 50)
        seed = entry(addr(9), NOW - 1)
        self.assertEqual(table.learn([seed], NOW), ([seed], []))
        self.assertEqual(record(table, addr(9)).confirmed, NOW - 1)
        self.assertTrue(record(table, addr(9)).pinned)

    def test_confirmed_times_in_the_future_count_as_now(self) -> None:
        """As the label store does, so that the table agrees with the label."""
        table = table_of((addr(1), NOW - 100))
        table.learn([entry(addr(1), NOW + DAY), entry(addr(2), NOW + 10 * DAY)], NOW)
        self.assertEqual(record(table, addr(1)).confirmed, NOW)
        self.assertEqual(record(table, addr(2)).confirmed, NOW)

    def full(self) -> ServerTable:
        """Three learned servers, the most: 1 the oldest confirmed, 3 the newest."""
        return table_of(
            (addr(1), NOW - 300), (addr(2), NOW - 200), (addr(3), NOW - 100), max_learned=3
        )

    def test_a_newer_newcomer_replaces_the_oldest_untested(self) -> None:
        table = self.full()
        newcomer = entry(addr(4), NOW - 299)
        self.assertEqual(table.learn([newcomer], NOW), ([newcomer], [addr(1)]))
        self.assertEqual(set(order(table.records())), {addr(2), addr(3), addr(4)})

    def test_not_an_older_or_equal_one(self) -> None:
        table = self.full()
        for t in (NOW - 300, NOW - 301, 0):
            self.assertEqual(table.learn([entry(addr(4), t)], NOW), ([], []))
        self.assertNotIn(addr(4), table)
        self.assertEqual(len(table), 3)

    def test_the_worst_goes_first(self) -> None:
        """Lowest quality first, then oldest confirmed."""
        table = self.full()
        table.succeeded(addr(1), NOW, 0, "halp1")
        table.failed(addr(1), NOW + 1)  # back at 10000, confirmed NOW
        table.failed(addr(3), NOW + 1)  # 9900
        # 3 goes although it was confirmed the most recently, and the
        # newcomer the least.
        newcomer = entry(addr(4), 0)
        self.assertEqual(table.learn([newcomer], NOW + 2), ([newcomer], [addr(3)]))
        # Now all are at 10000: the oldest confirmed goes.
        newcomer = entry(addr(5), 1)
        self.assertEqual(table.learn([newcomer], NOW + 2), ([newcomer], [addr(4)]))
        newcomer = entry(addr(6), NOW - 199)
        self.assertEqual(table.learn([newcomer], NOW + 2), ([newcomer], [addr(5)]))
        newcomer = entry(addr(7), NOW - 199)
        self.assertEqual(table.learn([newcomer], NOW + 2), ([newcomer], [addr(2)]))
        self.assertEqual(set(order(table.records())), {addr(1), addr(6), addr(7)})

    def test_a_failing_server_is_replaced_by_anyone(self) -> None:
        table = self.full()
        table.succeeded(addr(1), NOW, 0, "halp1")
        table.succeeded(addr(2), NOW, 0, "halp1")
        table.failed(addr(3), NOW)
        newcomer = entry(addr(4), 0)
        self.assertEqual(table.learn([newcomer], NOW), ([newcomer], [addr(3)]))

    def test_servers_that_answered_are_never_pushed_out(self) -> None:
        table = self.full()
        for i in (1, 2, 3):
            table.succeeded(addr(i), NOW - 1000, 0, "halp1")
        later = NOW + 10 * DAY
        self.assertEqual(table.learn([entry(addr(4), later)], later), ([], []))
        self.assertEqual(set(order(table.records())), {addr(1), addr(2), addr(3)})

    def test_insist_always_admits(self) -> None:
        table = self.full()
        for i in (1, 2, 3):
            table.succeeded(addr(i), NOW + i, i, "halp1")
        newcomer = entry(addr(4), 0)
        self.assertEqual(table.learn([newcomer], NOW, insist=True), ([newcomer], [addr(1)]))
        self.assertEqual(learned_count(table), 3)

    def test_a_batch(self) -> None:
        """
        Newcomers of one batch may push each other out: what is returned to
        keep is in the table, what is returned evicted is not.
        """
        table = self.full()
        batch = [entry(addr(i), NOW - 250 + i) for i in range(4, 8)]
        keep, evicted = table.learn(batch, NOW)
        self.assertEqual(set(order(table.records())), {addr(2), addr(3), addr(7)})
        self.assertEqual(keep, [batch[-1]])
        self.assertEqual(evicted[0], addr(1))
        for address in evicted:
            self.assertNotIn(address, table)

    def test_a_batch_evicting_a_known_server(self) -> None:
        table = self.full()
        batch = [entry(addr(1), NOW - 400), entry(addr(4), NOW)]
        self.assertEqual(table.learn(batch, NOW), ([batch[1]], [addr(1)]))

    def test_a_batch_bringing_back_an_evicted_server(self) -> None:
        table = self.full()
        batch = [entry(addr(4), NOW), entry(addr(1), NOW)]
        # 4 evicts 1, then 1 comes back and evicts 2.
        self.assertEqual(table.learn(batch, NOW), (batch, [addr(2)]))
        self.assertEqual(set(order(table.records())), {addr(1), addr(3), addr(4)})

    def test_pinned_servers_do_not_count_and_stay(self) -> None:
        pinned = (addr(7), addr(8), addr(9))
        table = table_of((addr(1), NOW - 10), pinned=pinned, max_learned=1)
        self.assertEqual(table.learn([entry(addr(2), NOW)], NOW), ([entry(addr(2), NOW)], [addr(1)]))
        for i in range(3, 6):
            table.learn([entry(addr(i), NOW)], NOW, insist=True)
        self.assertEqual(set(order(table.records())), {addr(5), *pinned})

    def test_no_learned_servers_at_all(self) -> None:
        """With ``max_learned=0`` only the seeds are kept, and nothing breaks."""
        table = table_of(pinned=(addr(9),), max_learned=0)
        newcomer = entry(addr(1), NOW)
        self.assertEqual(table.learn([newcomer], NOW), ([], []))
        self.assertEqual(table.learn([newcomer], NOW, insist=True), ([], []))
        seed = entry(addr(9), NOW)
        self.assertEqual(table.learn([seed], NOW), ([seed], []))
        self.assertEqual(order(table.records()), [addr(9)])


# -- dump and load -------------------------------------------------------------


def busy_table(**kwargs: Any) -> ServerTable:
    """A table with pinned seeds and learned servers that have a history."""
    table = ServerTable(
        [(addr(9), None), (ServerAddress("2001:db8::9", 7100), "libhalp")], **kwargs
    )
    table.load(None, [entry(addr(1), NOW - 50), entry(addr(2), NOW - 40)], NOW)
    table.learn([entry(addr(3), NOW - 30), entry(addr(9), NOW - 5)], NOW)
    table.succeeded(addr(1), NOW + 1, 12, "halp1")
    table.succeeded(addr(2), NOW + 2, 0, "libhalp")
    table.failed(addr(2), NOW + 3)
    table.failed(addr(3), NOW + 4)
    table.failed(addr(3), NOW + 5)
    table.succeeded(addr(9), NOW + 6, 3, "libhalp")
    return table


def snapshot(table: ServerTable) -> list[tuple[ServerRecord, bool]]:
    return [(ServerRecord(**vars_of(r)), r.pinned) for r in table.records()]


def vars_of(r: ServerRecord) -> dict[str, Any]:
    return {name: getattr(r, name) for name in ServerRecord.__dataclass_fields__}


def label_of(table: ServerTable) -> list[Entry]:
    """The ``halp`` label a client would keep alongside ``table``."""
    return [entry(r.address, r.confirmed) for r in table.records() if r.confirmed]


class PersistenceTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        table = busy_table()
        document = table.dump()
        again = ServerTable(
            [(addr(9), None), (ServerAddress("2001:db8::9", 7100), "libhalp")]
        )
        self.assertEqual(again.load(document, label_of(table), NOW + 100), [])
        self.assertEqual(snapshot(again), snapshot(table))
        self.assertEqual(again.dump(), document)
        self.assertEqual(order(again.choose(NOW + 100, 2)), order(table.choose(NOW + 100, 2)))

    def test_document(self) -> None:
        table = busy_table()
        document = json.loads(table.dump())
        self.assertEqual(document["version"], 1)
        rows = document["servers"]
        self.assertEqual(
            [(row["host"], row["port"]) for row in rows],
            sorted((r.host, r.port) for r in table.records()),
        )
        self.assertNotIn("pinned", rows[0])
        one = next(row for row in rows if row["host"] == addr(1).host)
        self.assertEqual(
            (one["quality"], one["successes"], one["entries"], one["dialect"]),
            (10_112, 1, 12, "halp1"),
        )

    def test_servers_of_the_label_are_added(self) -> None:
        table = ServerTable()
        self.assertEqual(table.load(None, [entry(addr(1), NOW - 7)], NOW), [])
        self.assertEqual(
            record(table, addr(1)),
            ServerRecord(addr(1).host, addr(1).port, confirmed=NOW - 7, first_seen=NOW),
        )

    def test_saved_servers_gone_from_the_label_are_dropped(self) -> None:
        document = busy_table().dump()
        table = ServerTable([(addr(9), None)])
        table.load(document, [entry(addr(1), NOW)], NOW + 100)
        self.assertEqual(set(order(table.records())), {addr(1), addr(9)})
        # The seed keeps its statistics although it is not in the label.
        self.assertEqual(record(table, addr(9)).successes, 1)
        self.assertEqual(record(table, addr(1)).entries, 12)

    def test_no_longer_pinned(self) -> None:
        """A former seed that is not in the label is dropped like any server."""
        document = busy_table().dump()
        table = ServerTable()
        table.load(document, [entry(addr(1), NOW)], NOW + 100)
        self.assertEqual(order(table.records()), [addr(1)])

    def test_label_times_move_confirmed_forward_only(self) -> None:
        document = busy_table().dump()  # 1 confirmed at NOW + 1
        table = ServerTable()
        table.load(document, [entry(addr(1), NOW - 500), entry(addr(2), NOW + 50)], NOW + 100)
        self.assertEqual(record(table, addr(1)).confirmed, NOW + 1)
        self.assertEqual(record(table, addr(2)).confirmed, NOW + 50)

    def test_first_seen(self) -> None:
        table = ServerTable([(addr(9), None)])
        self.assertEqual(record(table, addr(9)).first_seen, 0)
        table.load(None, [entry(addr(1), NOW - 9)], NOW)
        self.assertEqual(record(table, addr(9)).first_seen, NOW)
        self.assertEqual(record(table, addr(1)).first_seen, NOW)
        again = ServerTable([(addr(9), None)])
        again.load(table.dump(), [entry(addr(1), NOW - 9)], NOW + DAY)
        self.assertEqual(record(again, addr(9)).first_seen, NOW)
        self.assertEqual(record(again, addr(1)).first_seen, NOW)

    def test_trimmed_to_max_learned(self) -> None:
        document = busy_table().dump()
        table = ServerTable([(addr(9), None)], max_learned=2)
        label = [entry(addr(i), NOW) for i in (1, 2, 3, 4, 5)]
        dropped = table.load(document, label, NOW + 100)
        # 3 failed twice (9800), 2 once after an answer (10000, confirmed
        # NOW + 2); 4 and 5 are new (10000, confirmed NOW): of the worst,
        # 3 goes first, then 4 and 5 (older confirmed than 2).
        self.assertEqual(dropped, [addr(3), addr(4), addr(5)])
        self.assertEqual(set(order(table.records())), {addr(1), addr(2), addr(9)})

    def test_loading_nothing(self) -> None:
        for document in (None, ""):
            table = ServerTable([(addr(9), "halp1")])
            self.assertEqual(table.load(document, [], NOW), [])
            self.assertEqual(order(table.records()), [addr(9)])
            self.assertEqual(table.dialect(addr(9), NOW), "halp1")


class DamagedDocumentTests(SynchronousTestCase):
    """A damaged document costs statistics, never the start of the client."""

    def good_row(self) -> dict[str, Any]:
        table = table_of((addr(1), NOW - 5))
        table.succeeded(addr(1), NOW, 4, "halp1")
        (row,) = json.loads(table.dump())["servers"]
        assert isinstance(row, dict)
        return row

    def load(self, document: str) -> ServerTable:
        table = ServerTable([(addr(9), "libhalp")])
        label = [entry(addr(1), NOW - 5), entry(addr(2), NOW - 5)]
        self.assertEqual(table.load(document, label, NOW + 10), [])
        self.assertEqual(set(order(table.records())), {addr(1), addr(2), addr(9)})
        # The table works whatever it loaded.
        for r in table.records():
            self.assertIsInstance(r.rank(NOW + 10), int)
        table.choose(NOW + 10, 2)
        table.succeeded(addr(1), NOW + 11, 1, "halp1")
        table.failed(addr(2), NOW + 12)
        table.learn([entry(addr(3), NOW)], NOW + 13)
        table.dialect(addr(1), NOW + 14)
        json.loads(table.dump())
        return table

    def assertFresh(self, table: ServerTable, address: ServerAddress) -> None:
        self.assertEqual(
            record(table, address),
            ServerRecord(address.host, address.port, confirmed=NOW - 5, first_seen=NOW + 10),
        )

    def test_garbage(self) -> None:
        for document in [
            "garbage",
            "{",
            "[]",
            "null",
            "5",
            '"servers"',
            "{}",
            '{"servers": null}',
            '{"servers": 5}',
            '{"servers": "host"}',
            '{"servers": {"host": 1}}',
            '{"servers": [1, "x", null, [], {}, {"host": null}]}',
            "[" * 100_000 + "]" * 100_000,
            '{"servers": [{"port": ' + "9" * 10_000 + "}]}",
            "\x00\udcff",
        ]:
            table = ServerTable()
            self.assertEqual(table.load(document, [entry(addr(1), NOW - 5)], NOW + 10), [], document[:40])
            self.assertFresh(table, addr(1))

    def test_rows_of_the_wrong_shape_are_skipped(self) -> None:
        """Each bad row is left out; the good ones are kept."""
        good = self.good_row()
        cases: list[tuple[str, object]] = [
            ("host", None),
            ("host", 5),
            ("host", ["192.0.2.1"]),
            ("host", "192.0.2.001"),
            ("host", "HALP.example"),
            ("port", "x"),
            ("port", "7100"),
            ("port", 7100.0),
            ("port", True),
            ("port", 0),
            ("port", 65536),
            ("quality", None),
            ("quality", "10000"),
            ("quality", 1.5),
            ("quality", False),
            ("quality", -1),
            ("confirmed", "yesterday"),
            ("confirmed", None),
            ("successes", [1]),
            ("failures", {}),
            ("failures_in_row", None),
            ("entries", -3),
            ("first_seen", "0"),
            ("retry_at", None),
            ("last_success", "x"),
            ("last_failure", 1.0),
            ("dialect", "gopher"),
            ("dialect", 1),
            ("dialect_detected_at", "now"),
        ]
        for field, value in cases:
            bad = dict(good, **{field: value})
            # The bad row names server 1 only if its address is intact.
            if field not in ("host", "port"):
                self.assertEqual((bad["host"], bad["port"]), (addr(1).host, addr(1).port))
            other = dict(good, host=addr(2).host)
            document = json.dumps({"version": 1, "servers": [bad, other]})
            table = self.load(document)
            # Server 2's row was good: its statistics are back.
            self.assertEqual(record(table, addr(2)).successes, 1, (field, value))
            self.assertEqual(record(table, addr(2)).entries, 4, (field, value))

    def test_a_bad_row_leaves_a_fresh_record(self) -> None:
        good = self.good_row()
        document = json.dumps({"servers": [dict(good, quality=None)]})
        table = ServerTable()
        table.load(document, [entry(addr(1), NOW - 5)], NOW + 10)
        self.assertFresh(table, addr(1))

    def test_missing_fields_take_their_defaults(self) -> None:
        document = json.dumps(
            {"servers": [{"host": addr(1).host, "port": addr(1).port, "successes": 2, "future": "x"}]}
        )
        table = ServerTable()
        table.load(document, [entry(addr(1), NOW - 5)], NOW + 10)
        self.assertEqual(
            record(table, addr(1)),
            ServerRecord(
                addr(1).host, addr(1).port, confirmed=NOW - 5, successes=2, first_seen=NOW + 10
            ),
        )

    def test_a_bad_row_for_a_seed(self) -> None:
        good = dict(self.good_row(), host=addr(9).host)
        for bad in (dict(good, quality=None), dict(good, dialect="x"), dict(good, pinned="yes")):
            table = ServerTable([(addr(9), None)])
            table.load(json.dumps({"servers": [bad]}), [], NOW)
            r = record(table, addr(9))
            self.assertTrue(r.pinned)
            self.assertIsInstance(r.quality, int)
            self.assertIn(r.dialect, (None, "halp1"))
            table.choose(NOW, 1)
            table.failed(addr(9), NOW)


# -- dialects ------------------------------------------------------------------


class DialectTests(SynchronousTestCase):
    def test_unknown_at_first(self) -> None:
        table = table_of((addr(1), NOW), pinned=(addr(9),))
        self.assertIsNone(table.dialect(addr(1), NOW))
        self.assertIsNone(table.dialect(addr(9), NOW))

    def test_halp1_is_detected_for_good(self) -> None:
        table = table_of((addr(1), NOW))
        table.succeeded(addr(1), NOW, 0, "halp1")
        self.assertEqual(table.dialect(addr(1), NOW + 365 * DAY), "halp1")
        self.assertIsNone(record(table, addr(1)).dialect_detected_at)

    def test_a_failure_forgets_a_detected_dialect(self) -> None:
        """After a failure, whatever answers next is found out afresh."""
        table = table_of((addr(1), NOW), (addr(2), NOW))
        table.succeeded(addr(1), NOW, 0, "halp1")
        table.succeeded(addr(2), NOW, 0, "libhalp")
        table.failed(addr(1), NOW + 1)
        table.failed(addr(2), NOW + 1)
        for a in (addr(1), addr(2)):
            self.assertIsNone(table.dialect(a, NOW + 1))
            self.assertIsNone(record(table, a).dialect_detected_at)

    def test_a_failure_keeps_a_told_dialect(self) -> None:
        table = ServerTable([(addr(1), "libhalp")])
        table.load(None, [], NOW)
        table.failed(addr(1), NOW)
        self.assertEqual(table.dialect(addr(1), NOW), "libhalp")

    def test_detected_libhalp_is_checked_again(self) -> None:
        self.assertEqual(DIALECT_RECHECK, DAY)
        table = table_of((addr(1), NOW))
        table.succeeded(addr(1), NOW, 0, "libhalp")
        self.assertEqual(table.dialect(addr(1), NOW + DAY - 1), "libhalp")
        # Answers in the same dialect do not put the check off.
        table.succeeded(addr(1), NOW + DAY - 1, 0, "libhalp")
        self.assertEqual(record(table, addr(1)).dialect_detected_at, NOW)
        self.assertIsNone(table.dialect(addr(1), NOW + DAY))
        # Checked: still libhalp, for another day.
        table.succeeded(addr(1), NOW + DAY + 5, 0, "libhalp")
        self.assertEqual(table.dialect(addr(1), NOW + 2 * DAY + 4), "libhalp")
        self.assertIsNone(table.dialect(addr(1), NOW + 2 * DAY + 5))
        # Checked: it speaks HALP/1 now.
        table.succeeded(addr(1), NOW + 3 * DAY, 0, "halp1")
        self.assertEqual(table.dialect(addr(1), NOW + 30 * DAY), "halp1")

    def test_set_dialect(self) -> None:
        table = table_of((addr(1), NOW))
        table.set_dialect(addr(1), "libhalp", NOW)
        self.assertEqual(table.dialect(addr(1), NOW), "libhalp")
        table.set_dialect(addr(1), "halp1", NOW + 1)
        self.assertEqual(table.dialect(addr(1), NOW + 1), "halp1")
        table.set_dialect(addr(1), "libhalp", NOW + 2)
        self.assertEqual(record(table, addr(1)).dialect_detected_at, NOW + 2)

    def test_told_dialects_are_kept(self) -> None:
        (seed, dialect) = parse_server("libhalp://192.0.2.9:7100")
        table = ServerTable([(seed, dialect)])
        table.load(None, [], NOW)
        self.assertEqual(table.dialect(seed, NOW), "libhalp")
        table.succeeded(seed, NOW, 0, "halp1")
        table.set_dialect(seed, "halp1", NOW)
        table.succeeded(seed, NOW + 1, 0, "libhalp")
        for later in (NOW + DAY, NOW + 365 * DAY):
            self.assertEqual(table.dialect(seed, later), "libhalp")
        self.assertIsNone(record(table, seed).dialect_detected_at)

    def test_told_halp1(self) -> None:
        table = ServerTable([(addr(9), "halp1")])
        table.succeeded(addr(9), NOW, 0, "libhalp")
        self.assertEqual(table.dialect(addr(9), NOW + 2 * DAY), "halp1")

    def test_told_dialects_win_over_saved_ones(self) -> None:
        """Told ``libhalp://`` after it was detected once: never re-checked."""
        before = ServerTable([(addr(9), None), (addr(8), None)])
        before.load(None, [], NOW)
        before.succeeded(addr(9), NOW, 0, "libhalp")
        before.succeeded(addr(8), NOW, 0, "libhalp")
        document = before.dump()
        after = ServerTable([(addr(9), "libhalp"), (addr(8), "halp1")])
        after.load(document, [], NOW + 1)
        self.assertEqual(record(after, addr(9)).successes, 1)
        for later in (NOW + 1, NOW + DAY, NOW + 100 * DAY):
            self.assertEqual(after.dialect(addr(9), later), "libhalp")
            self.assertEqual(after.dialect(addr(8), later), "halp1")
        after.succeeded(addr(8), NOW + 2, 0, "libhalp")
        self.assertEqual(after.dialect(addr(8), NOW + 2), "halp1")

    def test_detection_survives_a_restart(self) -> None:
        before = table_of((addr(1), NOW), (addr(2), NOW))
        before.succeeded(addr(1), NOW, 0, "libhalp")
        before.succeeded(addr(2), NOW, 0, "halp1")
        after = ServerTable()
        after.load(before.dump(), [entry(addr(1), NOW), entry(addr(2), NOW)], NOW + 5)
        self.assertEqual(after.dialect(addr(1), NOW + DAY - 1), "libhalp")
        self.assertIsNone(after.dialect(addr(1), NOW + DAY))
        self.assertEqual(after.dialect(addr(2), NOW + 100 * DAY), "halp1")


# -- properties ----------------------------------------------------------------

SERVERS = [addr(i) for i in range(1, 9)] + [ServerAddress("2001:db8::1", 1)]
SEEDS: list[tuple[ServerAddress, Dialect | None]] = [(addr(1), "libhalp"), (addr(2), None)]


@dataclass(frozen=True)
class Learn:
    entries: tuple[tuple[ServerAddress, int], ...]
    insist: bool


@dataclass(frozen=True)
class Succeed:
    address: ServerAddress
    entries: int
    dialect: Dialect


@dataclass(frozen=True)
class Fail:
    address: ServerAddress


@dataclass(frozen=True)
class Wait:
    seconds: int


Step = Union[Learn, Succeed, Fail, Wait]

servers = st.sampled_from(SERVERS)
steps = st.one_of(
    st.builds(
        Learn,
        st.lists(st.tuples(servers, st.integers(-30 * DAY, DAY)), max_size=4).map(tuple),
        st.booleans(),
    ),
    st.builds(Succeed, servers, st.integers(0, 200), st.sampled_from(["halp1", "libhalp"])),
    st.builds(Fail, servers),
    st.builds(Fail, servers),
    st.builds(Wait, st.integers(0, 3 * DAY)),
)


class PropertyTests(SynchronousTestCase):
    def check(self, table: ServerTable, now: int, max_learned: int) -> None:
        records = table.records()
        self.assertLessEqual(learned_count(table), max_learned)
        for seed, told in SEEDS:
            self.assertTrue(record(table, seed).pinned)
            if told is not None:
                self.assertEqual(table.dialect(seed, now), told)
        for r in records:
            self.assertGreaterEqual(r.quality, 0)
            self.assertLessEqual(r.confirmed, now)
            self.assertEqual(r.failures_in_row == 0, r.retry_at == 0)
        for width in (1, 2, 3):
            chosen = table.choose(now, width)
            self.assertEqual(sorted(order(chosen)), sorted(order(records)))

    @settings(max_examples=300)
    @given(st.lists(steps, max_size=60), st.integers(0, 4))
    def test_bounds_hold(self, plan: list[Step], max_learned: int) -> None:
        """
        However servers come and go, at most ``max_learned`` learned servers
        are kept, the seeds stay, and what is reported gone is gone.
        """
        table = ServerTable(SEEDS, max_learned)
        now = NOW
        table.load(None, [], now)
        for step in plan:
            gone: list[ServerAddress] = []
            if isinstance(step, Learn):
                entries = [entry(a, now + t) for a, t in step.entries]
                keep, gone = table.learn(entries, now, insist=step.insist)
                for e in keep:
                    self.assertIn(ServerAddress.of(e), table)
                    self.assertIn(e, entries)
            elif isinstance(step, Succeed):
                table.succeeded(step.address, now, step.entries, step.dialect)
            elif isinstance(step, Fail):
                gone = table.failed(step.address, now)
            else:
                now += step.seconds
            for address in gone:
                self.assertNotIn(address, table)
                self.assertNotIn(address, [seed for seed, _ in SEEDS])
            self.check(table, now, max_learned)
        # What is saved comes back.
        again = ServerTable(SEEDS, max_learned)
        self.assertEqual(again.load(table.dump(), label_of(table), now), [])
        self.assertEqual(snapshot(again), snapshot(table))
        self.check(again, now, max_learned)

    @given(st.lists(st.tuples(servers, st.integers(0, NOW)), max_size=12), st.integers(0, 4))
    def test_load_trims(self, label: list[tuple[ServerAddress, int]], max_learned: int) -> None:
        table = ServerTable(SEEDS, max_learned)
        dropped = table.load(None, [entry(a, t) for a, t in label], NOW)
        self.assertLessEqual(learned_count(table), max_learned)
        self.assertEqual(
            len(table) + len(dropped), len({a for a, _ in label} | {s for s, _ in SEEDS})
        )
        for address in dropped:
            self.assertNotIn(address, table)

    @given(st.text(max_size=200) | st.from_regex(r'\{"servers": \[.*\]\}', fullmatch=True))
    def test_load_never_raises(self, document: str) -> None:
        table = ServerTable(SEEDS)
        table.load(document, [entry(addr(3), NOW)], NOW)
        self.check(table, NOW, MAX_LEARNED)


# -- what federation uses: trust, tests, bans ----------------------------------------


class FederationTableTests(SynchronousTestCase):
    """
    :meth:`ServerTable.usable`, :meth:`~ServerTable.trusted`,
    :meth:`~ServerTable.vouched_for`, :meth:`~ServerTable.next_to_test`,
    :meth:`~ServerTable.misbehaved`, :meth:`~ServerTable.banned`,
    :meth:`~ServerTable.ignore`, and bans in :meth:`~ServerTable.dump` and
    :meth:`~ServerTable.load`.
    """

    def test_usable(self) -> None:
        """Pinned or tested, and not failing."""
        table = table_of((addr(2), NOW), pinned=(addr(1),))
        pinned, learned = record(table, addr(1)), record(table, addr(2))
        self.assertTrue(table.usable(pinned))
        self.assertFalse(table.usable(learned))
        table.succeeded(addr(2), NOW, 0, "halp1")
        self.assertTrue(table.usable(learned))
        table.failed(addr(1), NOW)
        table.failed(addr(2), NOW)
        self.assertFalse(table.usable(pinned))
        self.assertFalse(table.usable(learned))
        table.succeeded(addr(1), NOW + 60, 0, "halp1")
        table.succeeded(addr(2), NOW + 60, 0, "halp1")
        self.assertTrue(table.usable(pinned))
        self.assertTrue(table.usable(learned))

    def test_trusted(self) -> None:
        """The usable servers, highest quality first, then by address."""
        table = table_of((addr(3), NOW), (addr(4), NOW), (addr(5), NOW), pinned=(addr(1), addr(2)))
        self.assertEqual(order(table.trusted()), [addr(1), addr(2)])
        table.succeeded(addr(4), NOW, 5, "halp1")
        table.succeeded(addr(5), NOW, 0, "halp1")
        table.succeeded(addr(3), NOW, 0, "halp1")
        table.failed(addr(3), NOW)
        table.failed(addr(2), NOW)
        self.assertEqual(order(table.trusted()), [addr(4), addr(5), addr(1)])
        self.assertEqual(
            [r.quality for r in table.trusted()],
            [
                INITIAL_QUALITY + QUALITY_ANSWER + 5,
                INITIAL_QUALITY + QUALITY_ANSWER,
                INITIAL_QUALITY,
            ],
        )
        self.assertEqual(ServerTable().trusted(), [])

    def test_vouched_for(self) -> None:
        """A host is vouched for if a server there is pinned or has answered, on any port."""
        other_port = ServerAddress(addr(4).host, 7101)
        table = table_of(
            (addr(2), NOW), (addr(3), NOW), (addr(4), NOW), (other_port, NOW), pinned=(addr(1),)
        )
        self.assertEqual(
            [table.vouched_for(addr(i).host) for i in (1, 2, 3, 4, 9)],
            [True, False, False, False, False],
        )
        table.succeeded(addr(3), NOW, 0, "halp1")
        table.succeeded(other_port, NOW, 0, "halp1")
        table.failed(addr(2), NOW)
        self.assertEqual(
            [table.vouched_for(addr(i).host) for i in (1, 2, 3, 4, 9)],
            [True, False, True, True, False],
        )
        # As for Federation.is_peer before: one that answered once stays vouched for.
        table.failed(addr(3), NOW + 1)
        self.assertTrue(table.vouched_for(addr(3).host))
        self.assertFalse(ServerTable().vouched_for(addr(1).host))

    def test_next_to_test(self) -> None:
        """
        Never tested servers first, newest confirmed first; then those
        whose backoff ended, the earliest ended first; never one in backoff,
        a usable one, or a busy one.
        """
        table = table_of((addr(2), NOW - 10), (addr(3), NOW), (addr(4), NOW - 5), pinned=(addr(1),))

        def next_one(now: int, busy: tuple[ServerAddress, ...] = ()) -> ServerAddress | None:
            found = table.next_to_test(now, busy)
            return None if found is None else found.address

        self.assertEqual(next_one(NOW), addr(3))
        self.assertEqual(next_one(NOW, (addr(3),)), addr(4))
        self.assertEqual(next_one(NOW, (addr(3), addr(4), addr(2))), None)
        table.succeeded(addr(3), NOW, 0, "halp1")
        self.assertEqual(next_one(NOW), addr(4))
        table.failed(addr(4), NOW)  # in backoff until NOW + 60
        self.assertEqual(next_one(NOW), addr(2))
        table.failed(addr(2), NOW + 10)  # until NOW + 70
        self.assertEqual(next_one(NOW + 59), None)
        self.assertEqual(next_one(NOW + 60), addr(4))
        self.assertEqual(next_one(NOW + 100), addr(4))
        self.assertEqual(next_one(NOW + 100, (addr(4),)), addr(2))
        # A newcomer goes before servers that failed.
        table.learn([entry(addr(5), NOW - 1000)], NOW + 100)
        self.assertEqual(next_one(NOW + 100), addr(5))
        # A pinned server is tested once it failed and its backoff ended.
        table.succeeded(addr(5), NOW + 100, 0, "halp1")
        table.succeeded(addr(4), NOW + 100, 0, "halp1")
        table.succeeded(addr(2), NOW + 100, 0, "halp1")
        self.assertEqual(next_one(NOW + 100), None)
        table.failed(addr(1), NOW + 100)
        self.assertEqual(next_one(NOW + 159), None)
        self.assertEqual(next_one(NOW + 160), addr(1))

    def test_misbehaving_learned_server_is_banned(self) -> None:
        table = table_of((addr(2), NOW), (addr(3), NOW), pinned=(addr(1),))
        self.assertEqual(table.misbehaved(addr(2), NOW), [addr(2)])
        self.assertNotIn(addr(2), table)
        self.assertEqual(table.banned(NOW), {addr(2): NOW + BAN_TIME})
        # Not learned again while banned, even from a newer entry.
        later = NOW + BAN_TIME - 1
        self.assertEqual(table.learn([entry(addr(2), later)], later), ([], []))
        self.assertNotIn(addr(2), table)
        self.assertEqual(table.banned(later), {addr(2): NOW + BAN_TIME})
        # Nor from a saved halp label.
        again = ServerTable([(addr(1), None)])
        again.load(table.dump(), [entry(addr(2), later)], later)
        self.assertNotIn(addr(2), again)
        # Learned again once the ban is over.
        over = NOW + BAN_TIME
        self.assertEqual(table.banned(over), {})
        self.assertEqual(table.learn([entry(addr(2), over)], over), ([entry(addr(2), over)], []))
        self.assertEqual(record(table, addr(2)).quality, INITIAL_QUALITY)
        self.assertFalse(record(table, addr(2)).tested)
        self.assertEqual(table.banned(over), {})

    def test_insisting_lifts_a_ban(self) -> None:
        """A server the user adds by hand is taken, banned or not."""
        table = table_of((addr(2), NOW))
        table.misbehaved(addr(2), NOW)
        keep, _ = table.learn([entry(addr(2), NOW + 1)], NOW + 1, insist=True)
        self.assertEqual(keep, [entry(addr(2), NOW + 1)])
        self.assertEqual(table.banned(NOW + 1), {})

    def test_misbehaving_pinned_server_is_kept_but_left_alone(self) -> None:
        table = table_of(pinned=(addr(1),))
        self.assertEqual(table.misbehaved(addr(1), NOW), [])
        pinned = record(table, addr(1))
        self.assertTrue(pinned.pinned)
        self.assertEqual(pinned.quality, INITIAL_QUALITY - QUALITY_MISBEHAVED)
        self.assertEqual(pinned.failures_in_row, 1)
        self.assertEqual(pinned.retry_at, NOW + PINNED_BAN_TIME)
        self.assertTrue(pinned.in_backoff(NOW + PINNED_BAN_TIME - 1))
        self.assertFalse(pinned.in_backoff(NOW + PINNED_BAN_TIME))
        self.assertEqual(table.banned(NOW), {})
        self.assertIsNone(table.next_to_test(NOW + PINNED_BAN_TIME - 1))
        self.assertIs(table.next_to_test(NOW + PINNED_BAN_TIME), pinned)
        # A longer backoff is kept.
        for _ in range(7):
            table.failed(addr(1), NOW)
        table.misbehaved(addr(1), NOW)
        self.assertEqual(pinned.retry_at, NOW + BACKOFF_BASE * 2**8)
        self.assertGreater(BACKOFF_BASE * 2**8, PINNED_BAN_TIME)
        # Quality never goes below 0.
        for _ in range(20):
            table.misbehaved(addr(1), NOW)
        self.assertEqual(pinned.quality, 0)

    def test_misbehaving_quality_cost(self) -> None:
        """Misbehaving costs QUALITY_MISBEHAVED in all, of which a failure is part."""
        self.assertGreater(QUALITY_MISBEHAVED, QUALITY_FAILURE)
        table = table_of(pinned=(addr(1), addr(2)))
        table.failed(addr(1), NOW)
        table.misbehaved(addr(2), NOW)
        self.assertEqual(
            record(table, addr(1)).quality - record(table, addr(2)).quality,
            QUALITY_MISBEHAVED - QUALITY_FAILURE,
        )

    def test_misbehaving_unknown_server(self) -> None:
        table = table_of((addr(2), NOW))
        self.assertEqual(table.misbehaved(addr(9), NOW), [])
        self.assertEqual(table.banned(NOW), {})
        self.assertEqual(order(table.records()), [addr(2)])

    def test_banned_leaves_out_ended_bans(self) -> None:
        table = table_of((addr(2), NOW), (addr(3), NOW))
        table.misbehaved(addr(2), NOW)
        table.misbehaved(addr(3), NOW + 100)
        self.assertEqual(
            table.banned(NOW + 100), {addr(2): NOW + BAN_TIME, addr(3): NOW + 100 + BAN_TIME}
        )
        self.assertEqual(table.banned(NOW + BAN_TIME), {addr(3): NOW + 100 + BAN_TIME})
        self.assertEqual(table.banned(NOW + 100 + BAN_TIME), {})

    def test_ignore(self) -> None:
        """An ignored address is forgotten, and neither learned nor loaded again."""
        table = table_of((addr(2), NOW), (addr(3), NOW), pinned=(addr(1),))
        table.ignore(addr(2))
        table.ignore(addr(1))
        table.ignore(addr(9))
        self.assertEqual(order(table.records()), [addr(3)])
        keep, evicted = table.learn([entry(addr(2), NOW + 1), entry(addr(9), NOW + 1)], NOW + 1)
        self.assertEqual((keep, evicted), ([], []))
        self.assertEqual(order(table.records()), [addr(3)])
        table.load(None, [entry(addr(2), NOW), entry(addr(4), NOW)], NOW)
        self.assertEqual(order(table.records()), [addr(3), addr(4)])
        # Ignoring is not a ban.
        self.assertEqual(table.banned(NOW), {})
        self.assertEqual(json.loads(table.dump())["banned"], [])

    def test_bans_are_saved(self) -> None:
        table = table_of((addr(2), NOW), (addr(3), NOW), (addr(4), NOW))
        table.misbehaved(addr(2), NOW)
        table.misbehaved(addr(3), NOW - BAN_TIME + 10)
        document = json.loads(table.dump())
        self.assertEqual(
            document["banned"],
            [
                {"host": "192.0.2.2", "port": 7100, "scheme": "halp", "until": NOW + BAN_TIME},
                {"host": "192.0.2.3", "port": 7100, "scheme": "halp", "until": NOW + 10},
            ],
        )
        self.assertEqual([row["host"] for row in document["servers"]], ["192.0.2.4"])

        again = ServerTable()
        again.load(table.dump(), [entry(addr(4), NOW)], NOW)
        self.assertEqual(again.banned(NOW), table.banned(NOW))
        # Bans that have ended are not loaded.
        later = ServerTable()
        later.load(table.dump(), [], NOW + 10)
        self.assertEqual(later.banned(NOW + 10), {addr(2): NOW + BAN_TIME})
        self.assertEqual(
            json.loads(later.dump())["banned"],
            [{"host": "192.0.2.2", "port": 7100, "scheme": "halp", "until": NOW + BAN_TIME}],
        )
        # A loaded ban keeps the server out.
        self.assertEqual(later.learn([entry(addr(2), NOW + 20)], NOW + 20), ([], []))

    def test_damaged_schemes_are_skipped(self) -> None:
        good = {"host": "192.0.2.4", "port": 7100, "scheme": "http"}
        document = json.dumps(
            {
                "servers": [
                    {"host": "192.0.2.2", "port": 7100, "scheme": ["x"]},
                    {"host": "192.0.2.3", "port": 7100, "scheme": "gopher"},
                    good,
                ],
                "banned": [
                    {"host": "192.0.2.5", "port": 7100, "scheme": {}, "until": NOW + 10},
                ],
            }
        )
        table = ServerTable()
        listed = [Listed(ServerAddress(f"192.0.2.{n}", 7100, "http"), NOW) for n in (2, 3, 4)]
        table.load(document, listed, NOW)
        self.assertEqual(table.banned(NOW), {})
        record = table.get(ServerAddress("192.0.2.4", 7100, "http"))
        assert record is not None
        self.assertEqual(record.scheme, "http")

    def test_damaged_bans(self) -> None:
        """Rows that are not bans are skipped; the rest of the document is kept."""
        until = NOW + 100
        rows: list[Any] = [
            "192.0.2.1",
            None,
            {"host": "192.0.2.1", "port": 7100},
            {"host": "192.0.2.1", "port": "7100", "until": until},
            {"host": "192.0.2.1", "port": True, "until": until},
            {"host": "192.0.2.1", "port": 0, "until": until},
            {"host": "192.0.2.1", "port": 70000, "until": until},
            {"host": "192.0.2.1", "port": 7100, "until": "soon"},
            {"host": "192.0.2.1", "port": 7100, "until": float(until)},
            {"host": "not a host", "port": 7100, "until": until},
            {"host": 7, "port": 7100, "until": until},
            {"host": "192.0.2.5", "port": 7100, "until": until},
            {"host": "HALP.Example", "port": 7100, "until": until},
        ]
        document = json.dumps(
            {"version": 1, "servers": [{"host": "192.0.2.4", "port": 7100}], "banned": rows}
        )
        table = ServerTable()
        table.load(document, [entry(addr(4), NOW)], NOW)
        self.assertEqual(
            table.banned(NOW),
            {addr(5): until, ServerAddress("halp.example", 7100): until},
        )
        self.assertEqual(order(table.records()), [addr(4)])
        for banned in ("nothing", {"a": 1}, 5):
            table = ServerTable()
            table.load(json.dumps({"servers": [], "banned": banned}), [], NOW)
            self.assertEqual(table.banned(NOW), {})


class FloodTests(SynchronousTestCase):
    """What a flood of ``halp`` entries and of misbehaving servers costs."""

    def test_a_server_that_answered_is_not_pushed_out_after_one_failure(self) -> None:
        table = table_of((addr(1), NOW), (addr(2), NOW), max_learned=2)
        table.succeeded(addr(1), NOW, 0, "halp1")
        table.failed(addr(1), NOW + 1)  # quality back to the start value
        self.assertEqual(record(table, addr(1)).quality, INITIAL_QUALITY)
        keep, evicted = table.learn([entry(addr(i), NOW + 5) for i in (7, 8, 9)], NOW + 5)
        # The untested one makes room; the one that answered stays.
        self.assertIn(addr(1), table)
        self.assertEqual(evicted, [addr(2)])
        self.assertEqual(len([r for r in table.records() if not r.pinned]), 2)

    def test_bans_that_ended_are_dropped_and_bans_are_bounded(self) -> None:
        table = ServerTable()
        for i in range(1, 4):
            table.learn([entry(addr(i), NOW)], NOW)
            table.misbehaved(addr(i), NOW)
        later = NOW + BAN_TIME + 1
        table.learn([entry(addr(9), later)], later)
        table.misbehaved(addr(9), later)
        self.assertEqual(table.banned(later), {addr(9): later + BAN_TIME})
        self.assertEqual(len(json.loads(table.dump())["banned"]), 1)

    def test_at_most_max_banned_bans(self) -> None:
        table = ServerTable()
        for i in range(MAX_BANNED + 5):
            address = ServerAddress(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 7100)
            table.learn([Entry(NOW, address.host, address.port)], NOW + i)
            table.misbehaved(address, NOW + i)
        banned = table.banned(NOW + MAX_BANNED + 5)
        self.assertEqual(len(banned), MAX_BANNED)
        # The bans that end first went first.
        self.assertNotIn(ServerAddress("10.0.0.0", 7100), banned)
