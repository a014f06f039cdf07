"""
Tests for :mod:`halp.sim.hostile`: the simulator's hostile servers answer
as a server would and keep nothing they are sent; a lying server answers
every ``get`` with the attacker's addresses, through the real protocol too.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from halp.core import OPEN, Admission, HALPCore, Page, Refused, Replicated, Stored
from halp.federation import SERVERS_LABEL
from halp.model import Change, Entry, Window
from halp.server import HALPServerFactory, HALPServerProtocol
from halp.sim.clock import SimClock
from halp.sim.hostile import DroppingCore, LyingCore
from halp.store.memory import MemoryStore
from halp.testing import StaticPeers

NOW = 1_800_000_000
LABEL = "app"
#: A peer server the cores know (see StaticPeers).
PEER = "198.51.100.5"
#: What the store holds before the tests send anything.
OLD = Entry(NOW - 600, "203.0.113.1", 6881)


class DroppingCoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = SimClock(NOW)
        self.store = MemoryStore()
        self.successResultOf(self.store.merge([Change(LABEL, OLD)], 1000))
        self.changes: list[tuple[list[Change], bool]] = []
        self.merges: list[set[str]] = []

    def core(self, admission: Admission = OPEN) -> DroppingCore:
        core = DroppingCore(self.store, self.clock, admission=admission)
        core.peer_source = StaticPeers([], trusted=[PEER])
        core.watch(lambda changes, relay: self.changes.append((changes, relay)))
        core.watch_merges(self.merges.append)
        return core

    def assertUnchanged(self, core: HALPCore) -> None:
        self.assertEqual(self.successResultOf(core.get(LABEL)).items, [OLD])
        self.assertEqual(self.successResultOf(core.get("other")).items, [])
        self.assertEqual(self.changes, [])
        self.assertEqual(self.merges, [])

    def test_insert_answers_stored_and_keeps_nothing(self) -> None:
        core = self.core()
        new = Entry(NOW - 5, "203.0.113.9", 6881)
        outcomes = self.successResultOf(core.insert([LABEL, "other"], [new, OLD], "192.0.2.8"))
        self.assertEqual(
            outcomes,
            [Stored(LABEL, new), Stored(LABEL, OLD), Stored("other", new), Stored("other", OLD)],
        )
        self.assertUnchanged(core)

    def test_insert_still_refuses_what_a_server_refuses(self) -> None:
        """Only the merge is dropped: the rules before it answer as usual."""
        core = self.core(Admission(verify="none"))
        outcomes = self.successResultOf(
            core.insert(
                [LABEL], [Entry(NOW, "10.0.0.1", 6881), Entry(NOW - 10**6, "130.1.0.7", 1)]
            )
        )
        reasons = [o.reason.split(":")[0] for o in outcomes if isinstance(o, Refused)]
        self.assertEqual(reasons, ["bad host", "expired"])
        self.assertUnchanged(core)

    def test_push_answers_replicated_and_keeps_nothing(self) -> None:
        # A public server's admission, trusting its peers' probes.
        core = self.core(Admission(verify="none"))
        pushed = [
            Change(LABEL, Entry(NOW - 5, "130.1.0.7", 6881), "131.1.0.7"),
            Change(SERVERS_LABEL, Entry(NOW - 5, "12.1.0.1", 7100), "131.1.0.7"),
        ]
        result = self.successResultOf(core.push(pushed, f"{PEER}:7100", PEER))
        self.assertEqual(result, Replicated(changed=0, unchanged=2, refused=[], pending=0))
        self.assertUnchanged(core)
        self.assertEqual(self.successResultOf(core.get(SERVERS_LABEL)).items, [])

    def test_pulled_changes_are_answered_and_dropped(self) -> None:
        core = self.core()
        pulled = [
            Change(LABEL, Entry(NOW - 5, f"203.0.113.{n}", 6881), "192.0.2.8") for n in range(2, 9)
        ]
        result = self.successResultOf(core.apply_pulled(pulled, f"{PEER}:7100"))
        self.assertEqual(result, Replicated(changed=0, unchanged=7, refused=[], pending=0))
        self.assertUnchanged(core)


def sybils(count: int, now: int) -> list[Entry]:
    return [Entry(now, f"60.0.0.{1 + k}", 6881) for k in range(count)]


def accomplices(now: int) -> list[Entry]:
    return [Entry(now, f"11.{k}.0.1", 7100) for k in range(5)]


class LyingCoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = SimClock(NOW + 0.75)
        self.asked: list[tuple[int, int]] = []
        self.store = MemoryStore()
        held = [Change(LABEL, OLD), Change(SERVERS_LABEL, Entry(NOW, "192.0.2.1", 7100))]
        self.successResultOf(self.store.merge(held, 1000))

        def counted(count: int, now: int) -> list[Entry]:
            self.asked.append((count, now))
            return sybils(count, now)

        self.core = LyingCore(self.store, self.clock, sybils=counted, accomplices=accomplices)

    def test_servers_label_answers_the_accomplices(self) -> None:
        page = self.successResultOf(self.core.get(SERVERS_LABEL))
        self.assertEqual(page, Page(accomplices(NOW), False))
        page = self.successResultOf(self.core.get(SERVERS_LABEL, Window(1, 3)))
        self.assertEqual(page.items, accomplices(NOW)[1:3])
        self.assertEqual(self.asked, [])

    def test_any_other_label_answers_sybils_confirmed_now(self) -> None:
        page = self.successResultOf(self.core.get(LABEL))
        self.assertEqual(page, Page(sybils(10, NOW), False))  # the default slice
        self.assertEqual(self.asked, [(10, NOW)])
        self.clock.advance(30)
        page = self.successResultOf(self.core.get("never/inserted", Window(3, 7)))
        self.assertEqual(page, Page(sybils(7, NOW + 30)[3:7], False))
        self.assertEqual(self.asked[-1], (7, NOW + 30))

    def test_open_and_capped_windows(self) -> None:
        page = self.successResultOf(self.core.get(LABEL, Window(95, None)))
        self.assertEqual(page, Page(sybils(195, NOW)[95:195], False))
        page = self.successResultOf(self.core.get(LABEL, Window(0, 500)))
        self.assertEqual(page, Page(sybils(100, NOW), True))
        self.assertEqual(self.successResultOf(self.core.get(LABEL, Window(4, 4))).items, [])

    def test_merges_nothing(self) -> None:
        merges: list[set[str]] = []
        self.core.watch_merges(merges.append)
        new = Entry(NOW, "203.0.113.9", 6881)
        outcomes = self.successResultOf(self.core.insert([LABEL], [new], "192.0.2.8"))
        self.assertEqual(outcomes, [Stored(LABEL, new)])
        self.successResultOf(self.core.apply_pulled([Change(LABEL, new)], "198.51.100.5:7100"))
        self.assertEqual(merges, [])
        self.assertEqual(
            self.successResultOf(self.store.get(LABEL, 0, 10, 0)), [OLD]
        )


class LyingServerTests(SynchronousTestCase):
    """A real server factory over a :class:`LyingCore`."""

    def setUp(self) -> None:
        self.clock = SimClock(NOW)
        core = LyingCore(MemoryStore(), self.clock, sybils=sybils, accomplices=accomplices)
        self.factory = HALPServerFactory(core, self.clock, log_requests=False)
        self.transport = StringTransport()
        self.proto = cast(HALPServerProtocol, self.factory.buildProtocol(self.transport.getPeer()))
        self.proto.makeConnection(self.transport)

    def lines(self) -> list[bytes]:
        value: bytes = self.transport.value()
        self.transport.clear()
        return value.splitlines()

    def test_get_is_answered_with_sybils(self) -> None:
        self.proto.dataReceived(b"get app\n")
        self.assertEqual(
            self.lines(),
            [b"%d 60.0.0.%d 6881" % (NOW, 1 + k) for k in range(10)] + [b"ok 10"],
        )
        self.proto.dataReceived(b"get app[2:4]\nget halp\n")
        self.assertEqual(
            self.lines(),
            [b"%d 60.0.0.3 6881" % NOW, b"%d 60.0.0.4 6881" % NOW, b"ok 2"]
            + [b"%d 11.%d.0.1 7100" % (NOW, k) for k in range(5)]
            + [b"ok 5"],
        )

    def test_insert_is_acknowledged_and_lost(self) -> None:
        self.proto.dataReceived(b"insert app\n%d 203.0.113.9 6881\n\n" % (NOW - 1))
        self.assertEqual(
            self.lines(), [b"success: app %d 203.0.113.9 6881" % (NOW - 1), b"ok 1 stored 0 failed"]
        )
        self.clock.advance(5)  # past the answer cache
        self.proto.dataReceived(b"get app[0:1]\n")
        self.assertEqual(self.lines(), [b"%d 60.0.0.1 6881" % (NOW + 5), b"ok 1"])
