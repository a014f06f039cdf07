"""
Tests for :mod:`halp.answers`, the kept answers to ``get`` lines, through
the real protocol, factory, core and memory store, in memory with a
``Clock``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from halp.answers import AnswerCache
from halp.core import Admission, HALPCore, Pending, Refused, Stored
from halp.model import Change, Entry, Limits
from halp.server import HALPServerFactory, HALPServerProtocol
from halp.store.memory import MemoryStore
from halp.testing import connect
from halp.tap import ListenerService, Options, makeService
from halp.wire import Get, Reply

NOW = 1_800_000_000
TOO_LONG = b"error line-too-long request lines are at most 100 bytes"


class CountingStore(MemoryStore):
    """A memory store that counts its ``get`` calls and, while
    :attr:`hold` is set, delays their answers until :meth:`release`."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.hold = False
        self.held: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def get(self, label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        self.gets += 1
        d = super().get(label, start, stop, since)  # read now, answered later
        if not self.hold:
            return d
        later: Deferred[list[Entry]] = Deferred()
        self.held.append((d, later))
        return later

    def release(self) -> None:
        d, later = self.held.pop(0)
        d.chainDeferred(later)


class AnswerTestCase(SynchronousTestCase):
    answer_cache = 1.0
    ttl = 86400

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = CountingStore()
        self.core = HALPCore(self.store, self.clock, Limits(max_line=100, ttl=self.ttl))
        self.factory = HALPServerFactory(self.core, self.clock, answer_cache=self.answer_cache)
        self.proto, self.transport = self.connect()

    def connect(self) -> tuple[HALPServerProtocol, StringTransport]:
        return connect(self.factory)

    def insert(self, label: str, *entries: Entry) -> None:
        self.successResultOf(self.core.insert([label], list(entries)))

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def output(self) -> bytes:
        value: bytes = self.transport.value()
        self.transport.clear()
        return value

    def ask(self, data: bytes = b"get a\n") -> bytes:
        self.send(data)
        return self.output()


class KeptAnswerTests(AnswerTestCase):
    def test_second_get_is_the_same_bytes_without_the_store(self) -> None:
        self.insert("a", Entry(NOW, "198.51.100.7", 6881), Entry(NOW - 5, "192.0.2.1", 80))
        first = self.ask()
        self.assertEqual(first, b"%d 198.51.100.7 6881\n%d 192.0.2.1 80\nok 2\n" % (NOW, NOW - 5))
        self.assertEqual(self.store.gets, 1)
        self.assertEqual(self.ask(), first)
        # Kept by the factory: another connection gets it too.
        self.proto, self.transport = self.connect()
        self.assertEqual(self.ask(), first)
        self.assertEqual(self.store.gets, 1)

    def test_insert_into_the_label_shows_at_once(self) -> None:
        self.assertEqual(self.ask(), b"ok 0\n")
        self.assertEqual(
            self.ask(b"insert a\n%d h 1\n\n" % NOW),
            b"success: a %d h 1\nok 1 stored 0 failed\n" % NOW,
        )
        self.assertEqual(self.ask(), b"%d h 1\nok 1\n" % NOW)
        self.insert("a", Entry(NOW, "h", 2))  # through the core, not a connection
        self.assertEqual(self.ask(), b"%d h 1\n%d h 2\nok 2\n" % (NOW, NOW))
        self.assertEqual(self.store.gets, 3)

    def test_insert_into_another_label_keeps_the_answer(self) -> None:
        self.insert("a", Entry(NOW, "h", 1))
        first = self.ask()
        self.insert("b", Entry(NOW, "h", 2))
        self.ask(b"insert a/b c\n%d h 3\n\n" % NOW)
        self.assertEqual(self.ask(), first)
        self.assertEqual(self.store.gets, 1)

    def test_a_change_made_elsewhere_shows_after_max_age_not_before(self) -> None:
        """Another process writing to a shared store is not seen by the core."""
        self.assertEqual(self.ask(), b"ok 0\n")
        self.successResultOf(self.store.merge([Change("a", Entry(NOW, "h", 1), "")], 1000))
        self.clock.advance(0.5)
        self.assertEqual(self.ask(), b"ok 0\n")
        self.clock.advance(0.25)
        self.assertEqual(self.ask(), b"ok 0\n")
        self.assertEqual(self.store.gets, 1)
        self.clock.advance(0.25)  # max_age after the answer was made
        self.assertEqual(self.ask(), b"%d h 1\nok 1\n" % NOW)
        self.assertEqual(self.store.gets, 2)


class QuotaTests(SynchronousTestCase):
    def test_an_entry_the_quota_evicts_on_its_way_in_drops_the_answer(self) -> None:
        """
        An entry confirmed again by a network whose share is full replaces
        its old row and is evicted at once: nothing is reported changed,
        but the label lost the entry, and the kept answer goes.
        """
        clock = Clock()
        clock.advance(NOW)
        admission = Admission(allow_private=True, verify="none", insert_rate=0, group_share=4)
        core = HALPCore(MemoryStore(), clock, Limits(max_entries=4), admission=admission)
        self.assertEqual(core.group_cap, 1)
        factory = HALPServerFactory(core, clock)
        transport = StringTransport()
        proto = factory.buildProtocol(transport.getPeer())
        assert proto is not None
        proto.makeConnection(transport)

        def insert(source: str, entry: Entry) -> list[Stored | Refused | Pending]:
            return self.successResultOf(core.insert(["app"], [entry], source))

        insert("198.51.100.1", Entry(NOW - 100, "192.0.2.5", 80))
        insert("203.0.113.1", Entry(NOW - 10, "192.0.2.9", 80))
        proto.dataReceived(b"get app\n")
        self.assertEqual(
            transport.value(), b"%d 192.0.2.9 80\n%d 192.0.2.5 80\nok 2\n" % (NOW - 10, NOW - 100)
        )
        transport.clear()
        # 203.0.113/16 holds its one place with a newer entry.
        (outcome,) = insert("203.0.113.1", Entry(NOW - 50, "192.0.2.5", 80))
        self.assertIsInstance(outcome, Refused)
        proto.dataReceived(b"get app\n")
        self.assertEqual(transport.value(), b"%d 192.0.2.9 80\nok 1\n" % (NOW - 10))


class ExpiryTests(AnswerTestCase):
    answer_cache = 1000.0  # longer than the ttl: only expiry drops answers
    ttl = 100

    def test_answer_expires_with_its_oldest_entry(self) -> None:
        self.insert("a", Entry(NOW - 50, "old", 1), Entry(NOW, "new", 2))
        both = b"%d new 2\n%d old 1\nok 2\n" % (NOW, NOW - 50)
        self.assertEqual(self.ask(), both)
        # "old" is served while the whole second is at most its time + ttl.
        self.clock.advance(50.5)
        self.assertEqual(self.ask(), both)
        self.assertEqual(self.store.gets, 1)
        self.clock.advance(0.5)
        self.assertEqual(self.ask(), b"%d new 2\nok 1\n" % NOW)
        self.assertEqual(self.store.gets, 2)


class NoCacheTests(AnswerTestCase):
    answer_cache = 0.0

    def test_store_is_asked_every_time(self) -> None:
        self.insert("a", Entry(NOW, "h", 1))
        for _ in range(3):
            self.assertEqual(self.ask(b"get a\nget a\n"), b"%d h 1\nok 1\n" % NOW * 2)
        self.assertEqual(self.store.gets, 6)
        self.assertEqual(len(self.factory.answers), 0)


class SizeTests(AnswerTestCase):
    def test_spellings_of_one_request_never_exceed_the_size(self) -> None:
        self.factory.answers.size = 3
        spellings = [
            b" " * i + b"get" + b" " * j + b"a" + b" " * k
            for i in range(2)
            for j in (1, 2)
            for k in range(3)
        ]
        for line in spellings:
            self.assertEqual(self.ask(line + b"\n"), b"ok 0\n")
            self.assertLessEqual(len(self.factory.answers), 3)
        self.assertEqual(self.store.gets, len(spellings))
        # The newest are kept, the oldest went first.
        now = self.clock.seconds()
        kept = [line for line in spellings if self.factory.answers.lookup(line, now)]
        self.assertEqual(kept, spellings[-3:])
        self.assertEqual(self.ask(spellings[-1] + b"\n" + spellings[0] + b"\n"), b"ok 0\n" * 2)
        self.assertEqual(self.store.gets, len(spellings) + 1)

    def test_unit_oldest_dropped_first(self) -> None:
        cache = AnswerCache(self.core, self.clock, max_age=5, size=2)
        reply = Reply((), b"ok 0\n")
        for line in (b"get a", b"get b", b"get a", b"get c"):
            cache.keep(line, Get(line[4:].decode(), None), reply, [], cache.generation)
            self.assertLessEqual(len(cache), 2)
        # Keeping "get a" again made it the newest: "get b" went first.
        self.assertIsNone(cache.lookup(b"get b", NOW))
        self.assertIsNotNone(cache.lookup(b"get a", NOW))
        self.assertIsNotNone(cache.lookup(b"get c", NOW))


class RaceTests(AnswerTestCase):
    def test_slow_answer_with_no_change_meanwhile_is_kept(self) -> None:
        self.store.hold = True
        self.send(b"get a\nget a\n")
        self.store.release()
        self.assertEqual(self.output(), b"ok 0\n" * 2)
        # The queued second line was answered from the answer just kept.
        self.assertEqual(self.store.gets, 1)

    def test_slow_answer_overtaken_by_an_insert_is_not_kept(self) -> None:
        self.store.hold = True
        self.send(b"get a\n")
        self.insert("a", Entry(NOW, "h", 1))
        self.store.release()
        self.assertEqual(self.output(), b"ok 0\n")  # read before the insert
        self.assertEqual(len(self.factory.answers), 0)
        self.store.hold = False
        self.assertEqual(self.ask(), b"%d h 1\nok 1\n" % NOW)

    def test_slow_answer_overtaken_by_another_label_is_not_kept_either(self) -> None:
        """The generation is global: safe, if not the most that could be kept."""
        self.store.hold = True
        self.send(b"get a\n")
        self.insert("b", Entry(NOW, "h", 1))
        self.store.release()
        self.assertEqual(self.output(), b"ok 0\n")
        self.assertEqual(len(self.factory.answers), 0)


class OrderTests(AnswerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.insert("a", Entry(NOW, "h", 1))
        self.insert("b", Entry(NOW, "h", 2))
        self.a = self.ask()
        self.b = b"%d h 2\nok 1\n" % NOW

    def test_pipelined_answers_in_request_order(self) -> None:
        self.store.hold = True
        self.send(b"get a\nget b\nget a\n")
        self.assertEqual(self.output(), self.a)  # b is waiting for the store
        self.store.release()
        self.assertEqual(self.output(), self.b + self.a)
        self.assertEqual(self.store.gets, 2)

    def test_kept_answers_then_line_too_long_then_nothing(self) -> None:
        self.send(b"get a\nget a\nget " + b"x" * 200 + b"\nget a\nget b\n")
        self.assertEqual(self.output(), self.a * 2 + TOO_LONG + b"\n")
        self.assertTrue(self.transport.disconnecting)
        self.send(b"get a\n")
        self.assertEqual(self.output(), b"")
        self.assertEqual(self.store.gets, 1)

    def test_kept_answers_then_unfinished_line_too_long(self) -> None:
        self.send(b"get a\n" + b"x" * 500)
        self.assertEqual(self.output(), self.a + TOO_LONG + b"\n")
        self.assertTrue(self.transport.disconnecting)

    def test_a_kept_line_inside_an_insert_block_is_an_entry_line(self) -> None:
        self.assertEqual(
            self.ask(b"insert c\nget a\n\n"),
            b"failure: c get a ; expected 3 fields: TIMESTAMP HOST PORT\nok 0 stored 1 failed\n",
        )

    def test_a_burst_longer_than_kept_burst(self) -> None:
        count = HALPServerProtocol.KEPT_BURST * 2 + 3
        self.assertEqual(self.ask(b"get a\n" * count), self.a * count)
        self.assertEqual(self.store.gets, 1)


class AccountingTests(AnswerTestCase):
    def events(self) -> EventLoggingObserver:
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        return events

    def test_kept_answers_are_counted(self) -> None:
        self.insert("a", Entry(NOW, "h", 1))
        key = ("halp1", "get", "ok")
        self.ask(b"get a\nget a\n")
        self.ask(b"get a\n")
        self.assertEqual(self.store.gets, 1)
        self.assertEqual(self.core.traffic.requests[key], 3)

    def test_kept_answer_is_logged_like_the_first(self) -> None:
        self.insert("a", Entry(NOW, "h", 1))
        events = self.events()
        self.ask(b"get a[0:5]\nget a[0:5]\n")
        self.assertEqual(self.store.gets, 1)
        logged = [
            (e["log_format"], e["peer"], e["request"], e["status"], e["lines"])
            for e in events
            if "request" in e
        ]
        first = ("{peer} {request} -> {status}", "192.168.1.1:54321", "get a[0:5]", "ok 1", 1)
        self.assertEqual(logged, [first] * 2)

    def test_no_log_but_still_counted_when_the_request_log_is_off(self) -> None:
        self.factory.log_requests = False
        events = self.events()
        self.ask(b"get a\nget a\n")
        self.assertEqual(self.store.gets, 1)
        self.assertEqual([e for e in events if "request" in e], [])
        self.assertEqual(self.core.traffic.requests[("halp1", "get", "ok")], 2)


class LibhalpTests(AnswerTestCase):
    """A libhalp client sends one unterminated request and reads until close."""

    def setUp(self) -> None:
        super().setUp()
        self.insert("bt", Entry(NOW, "198.51.100.7", 6881))
        self.assertEqual(self.ask(b"get bt\n"), b"%d 198.51.100.7 6881\nok 1\n" % NOW)
        self.proto, self.transport = self.connect()

    def test_half_close_gets_data_lines_only(self) -> None:
        self.send(b"get bt")
        self.proto.readConnectionLost()
        self.assertEqual(self.output(), b"%d 198.51.100.7 6881\n" % NOW)
        self.assertTrue(self.transport.disconnecting)

    def test_quiet_gets_data_lines_only(self) -> None:
        self.send(b"get bt")
        self.clock.advance(self.factory.compat_window)
        self.assertEqual(self.output(), b"%d 198.51.100.7 6881\n" % NOW)
        self.assertTrue(self.transport.disconnecting)


class OptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        # The default store is a file in the working directory: use a fresh one.
        path = self.mktemp()
        os.makedirs(path)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(path)

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_values(self) -> None:
        self.assertEqual(self.parse()["answer-cache"], 1.0)
        self.assertEqual(self.parse("--answer-cache", "0")["answer-cache"], 0.0)
        self.assertEqual(self.parse("--answer-cache", "2.5")["answer-cache"], 2.5)

    def test_bad_values(self) -> None:
        for value in ("-1", "x"):
            e = self.assertRaises(UsageError, Options().parseOptions, ["--answer-cache", value])
            self.assertIn(
                f"--answer-cache: expected seconds (0 <= s <= 86400), not {value!r}", str(e)
            )
            self.assertEqual(str(e).count("\n"), 0)

    def test_reaches_the_factory(self) -> None:
        options = self.parse("--store", "memory", "--no-federation", "--answer-cache", "2.5")
        top = IServiceCollection(makeService(options))
        listeners = [s for s in top if isinstance(s, ListenerService)]
        factory = listeners[0].factory
        assert isinstance(factory, HALPServerFactory)
        self.assertEqual(factory.answers.max_age, 2.5)
