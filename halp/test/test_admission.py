"""
Tests for what a public server lets in (:class:`halp.core.Admission`):
address rules, insert rates, verification before serving (no
reflection), network quotas and spread answers.  The figures in the names
come from the list of tests at the end of the reliability anchors
(``docs/security.md`` cites them).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from halp.core import OPEN, Admission, HALPCore, Pending, Refused, Stored
from halp.error import ErrorCode, ProtocolError
from halp.interfaces import IHostStore
from halp.model import Change, Entry, Limits, address_group, check_routable, special_block
from halp.store.memory import MemoryStore
from halp.store.sqlite import SQLiteStore
from halp.testing import FakeProber, StaticPeers
from halp.verify import Claim, Verifier

NOW = 1_800_000_000

#: One address in each special-purpose block (IANA's IPv4 and IPv6
#: registries, and the IPv4-mapped, NAT64 and 6to4 forms of private ones).
SPECIAL = [
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254",
    "127.0.0.1", "127.255.255.254", "169.254.1.1", "172.16.0.1", "172.31.255.255",
    "192.0.0.1", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1", "198.19.255.255",
    "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.254", "255.255.255.255",
    "::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:192.168.0.1",
    "64:ff9b::a00:1", "64:ff9b:1::1", "100::1", "100:0:0:1::1", "2001::1", "2001:2::1",
    "2001:10::1", "2001:20::1", "2001:db8::1", "2002:a00:1::1", "3fff::1", "5f00::1",
    "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1", "::102:304", "4000::1",
]

#: Never a host, even on a LAN.
NEVER = {"0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "::", "ff02::1"}

#: Globally routable addresses, many just outside a special block.
GLOBAL = [
    "1.1.1.1", "8.8.8.8", "9.9.9.9", "11.2.3.45", "100.63.255.255", "100.128.0.1",
    "172.15.255.255", "172.32.0.1", "192.0.0.9", "192.0.0.10", "192.0.3.1",
    "192.167.255.255", "192.169.0.1", "198.17.255.255", "198.20.0.1", "198.51.99.255",
    "198.51.101.0", "203.0.112.255", "203.0.114.0", "223.255.255.255", "126.255.255.255",
    "128.0.0.1", "169.253.255.255", "169.255.0.1", "9.255.255.255", "11.0.0.1",
    "1.0.0.1", "239.0.0.0".replace("239", "213"), "185.199.108.153", "151.101.1.69",
    "2001:4860:4860::8888", "2606:4700:4700::1111", "2a00:1450:4001::1", "2001:1::1",
    "2001:3::1", "2001:4:112::1", "2001:30::1", "2001:db7:ffff::1", "2001:db9::1",
    "2002:808:808::1", "64:ff9b::808:808", "::ffff:8.8.8.8", "2400:cb00::1", "2c0f:fb50::1",
    "3ffe::1", "3fff:1000::1", "2000::1", "2620:fe::fe", "2a03:2880::1", "2001:200::1",
]


def make_core(
    store: IHostStore | None = None,
    prober: FakeProber | None = None,
    clock: Clock | None = None,
    limits: Limits = Limits(),
    **admission: Any,
) -> tuple[HALPCore, Clock, FakeProber]:
    """A public server's core, on a fake clock and prober."""
    if clock is None:
        clock = Clock()
        clock.advance(NOW)
    if prober is None:
        prober = FakeProber(clock=clock)
    core = HALPCore(
        store if store is not None else MemoryStore(),
        clock,
        limits,
        admission=Admission(**admission),
        prober=prober,
    )
    return core, clock, prober


class AddressTableTests(SynchronousTestCase):
    """Our own table of special-purpose blocks, one case per block."""

    def test_48_special_blocks_rejected(self) -> None:
        self.assertEqual(len(SPECIAL), 48)
        for host in SPECIAL:
            with self.assertRaises(ProtocolError, msg=host) as caught:
                check_routable(host)
            self.assertEqual(caught.exception.code, ErrorCode.BAD_ENTRY)
            self.assertIn(host, caught.exception.message)

    def test_50_global_addresses_accepted(self) -> None:
        self.assertEqual(len(set(GLOBAL)), 50)
        for host in GLOBAL:
            self.assertIsNone(special_block(host), host)
            check_routable(host)

    def test_allow_private_still_refuses_non_hosts(self) -> None:
        for host in SPECIAL:
            if host in NEVER:
                with self.assertRaises(ProtocolError, msg=host) as caught:
                    check_routable(host, allow_private=True)
                self.assertIn("never a host", caught.exception.message)
            else:
                check_routable(host, allow_private=True)

    def test_names_each_block(self) -> None:
        self.assertEqual(special_block("100.64.0.1"), ("shared address space, carrier-grade NAT (RFC 6598)", True))
        self.assertEqual(special_block("::ffff:127.0.0.1"), ("IPv4-mapped loopback (RFC 1122)", True))
        self.assertEqual(special_block("2002:a00:1::1"), ("6to4 private-use (RFC 1918)", True))
        self.assertEqual(special_block("64:ff9b::a00:1"), ("NAT64 private-use (RFC 1918)", True))
        self.assertIsNone(special_block("example.org"))

    def test_groups(self) -> None:
        self.assertEqual(address_group("1.2.3.4"), "v4:1.2")
        self.assertEqual(address_group("1.2.250.9"), "v4:1.2")
        self.assertNotEqual(address_group("1.3.0.1"), "v4:1.2")
        self.assertEqual(address_group("::ffff:1.2.3.4"), "v4:1.2")
        self.assertEqual(address_group("2002:102:304::1"), "v4:1.2")
        self.assertEqual(address_group("64:ff9b::102:304"), "v4:1.2")
        self.assertEqual(address_group("2a00:1450:4001::1"), "v6:2a00:1450")
        self.assertEqual(address_group("2a00:1450:ffff::1"), "v6:2a00:1450")
        self.assertEqual(address_group("10.0.0.1"), "host:10.0.0.1")
        self.assertEqual(address_group("10.0.0.2"), "host:10.0.0.2")
        self.assertEqual(address_group("example.org"), "name:example.org")
        self.assertEqual(address_group(""), "")


class AddressAdmissionTests(SynchronousTestCase):
    """The table, applied to inserts and pushes."""

    def insert(self, core: HALPCore, host: str, source: str) -> Stored | Refused | Pending:
        (outcome,) = self.successResultOf(core.insert(["app"], [Entry(NOW, host, 4000)], source))
        return outcome

    def test_every_special_block_refused(self) -> None:
        core, _, _ = make_core()
        for host in SPECIAL:
            outcome = self.insert(core, host, host if host not in NEVER else "5.5.5.5")
            assert isinstance(outcome, Refused), (host, outcome)
            self.assertIn("bad host:", outcome.reason)
        self.assertEqual(self.successResultOf(core.get("app")).items, [])

    def test_every_global_address_stored(self) -> None:
        core, _, _ = make_core()
        for host in GLOBAL:
            self.assertIsInstance(self.insert(core, host, host), Stored, host)

    def test_allow_private(self) -> None:
        core, _, _ = make_core(allow_private=True)
        self.assertIsInstance(self.insert(core, "192.168.1.9", "192.168.1.9"), Stored)
        self.assertIsInstance(self.insert(core, "224.0.0.1", "192.168.1.9"), Refused)

    def test_pushed_entries_too(self) -> None:
        core, _, _ = make_core(verify="inserts")
        core.peer_source = StaticPeers([], trusted=["5.5.5.5"])
        result = self.successResultOf(
            core.push([Change("app", Entry(NOW, "10.1.2.3", 4000), "10.1.2.3")], "5.5.5.5:7100", "5.5.5.5")
        )
        self.assertEqual((result.changed, len(result.refused)), (0, 1))
        self.assertIn("not globally routable", result.refused[0].reason)


class ReflectionTests(SynchronousTestCase):
    """
    Entries naming someone else are neither stored nor served until this
    server has reached the host itself, and no insert pattern makes it probe
    one host more than once per interval.
    """

    def test_1000_inserts_naming_others_serve_nothing_until_verified(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        # Probes take 5 s and never connect.
        core, clock, prober = make_core(
            clock=clock, prober=FakeProber(clock=clock, delay=5), insert_rate=0
        )
        rng = random.Random(7)
        targets = ["11.2.3.45"]
        while len(targets) < 200:
            host = f"{rng.randrange(1, 99)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            if special_block(host) is None:
                targets.append(host)
        outcomes: list[Stored | Refused | Pending] = []
        for i in range(1000):
            # From 1.2.3.4: 11.2.3.45 contains "1.2.3.4" as text, which a
            # substring check (Cachechu's) would take for the sender.
            host = targets[i % len(targets)]
            inserted = core.insert(["app"], [Entry(NOW, host, 4000 + i % 7)], "1.2.3.4")
            got = self.successResultOf(inserted)
            outcomes.extend(got)
        kinds = Counter(
            type(o).__name__ + (":" + o.reason.split(":")[0] if isinstance(o, Refused) else "")
            for o in outcomes
        )
        # Nothing stored: each waits, or is refused as unreachable (once a
        # probe of its host failed) or busy (one /16 may hold 156 of the
        # 10,000 places in the queue).
        self.assertLessEqual(set(kinds), {"Pending", "Refused:unreachable", "Refused:busy"})
        self.assertGreaterEqual(kinds["Pending"], 156)
        self.assertEqual(self.successResultOf(core.get("app")).items, [])
        self.assertEqual(self.successResultOf(core.get("app", None)).items, [])
        # No probe answered (all unreachable) over 20 minutes: still nothing
        # served, and at most one probe per host per interval.
        for _ in range(1200):
            clock.advance(1)
        self.assertEqual(self.successResultOf(core.store.get("app", 0, 1000, 0)), [])
        self.assert_probe_rate(prober, core.verifier)
        per_host = Counter(host for _, host, _, _ in prober.probes)
        self.assertLessEqual(max(per_host.values()), 1200 // 60 + 1)
        self.assertLessEqual(len(prober.probes), 200 * (1200 // 60 + 1))

    def assert_probe_rate(self, prober: FakeProber, verifier: Verifier | None) -> None:
        assert verifier is not None
        last: dict[str, float] = {}
        for when, host, _, _ in prober.probes:
            if host in last:
                self.assertGreaterEqual(when - last[host], verifier.host_interval, host)
            last[host] = when

    def test_served_once_reached_with_the_probe_time(self) -> None:
        core, clock, prober = make_core()
        prober.reachable.add("11.2.3.45")
        clock.advance(0)
        self.successResultOf(core.insert(["app"], [Entry(NOW - 50, "11.2.3.45", 4000)], "1.2.3.4"))
        self.successResultOf(core.insert(["app"], [Entry(NOW - 50, "11.2.3.46", 4000)], "1.2.3.4"))
        self.assertEqual(
            self.successResultOf(core.get("app")).items, [Entry(NOW, "11.2.3.45", 4000)]
        )
        self.assertEqual([p[1:] for p in prober.probes], [("11.2.3.45", 4000, False), ("11.2.3.46", 4000, False)])
        # The unreachable one is refused at once for a while, without a probe.
        (outcome,) = self.successResultOf(
            core.insert(["app"], [Entry(NOW, "11.2.3.46", 4000)], "1.2.3.4")
        )
        assert isinstance(outcome, Refused)
        self.assertIn("unreachable", outcome.reason)
        self.assertEqual(len(prober.probes), 2)
        # A confirmed host is let in again at once, with the time claimed.
        clock.advance(10)
        (outcome,) = self.successResultOf(
            core.insert(["app"], [Entry(NOW + 10, "11.2.3.45", 4000)], "7.7.7.7")
        )
        self.assertEqual(outcome, Stored("app", Entry(NOW + 10, "11.2.3.45", 4000)))
        self.assertEqual(len(prober.probes), 2)

    def test_own_address_trusted_at_once(self) -> None:
        core, _, prober = make_core()
        (outcome,) = self.successResultOf(
            core.insert(["app"], [Entry(NOW, "1.2.3.4", 4000)], "1.2.3.4")
        )
        self.assertIsInstance(outcome, Stored)
        self.assertEqual(prober.probes, [])
        # The server's own entries (source "") too.
        (outcome,) = self.successResultOf(core.insert(["halp"], [Entry(NOW, "9.9.9.9", 7100)]))
        self.assertIsInstance(outcome, Stored)

    def test_one_host_1000_ports_one_probe_per_interval(self) -> None:
        core, clock, prober = make_core(insert_rate=0)
        outcomes: list[Stored | Refused | Pending] = []
        for port in range(1, 1001):
            # From 1,000 networks, so that no network's share of the queue
            # is what limits the probes; and under another spelling of the
            # same host now and then.
            source = f"{port % 90 + 1}.{port // 90}.3.4"
            host = "::ffff:11.2.3.45" if port % 10 == 0 else "11.2.3.45"
            inserted = core.insert(["app"], [Entry(NOW, host, port)], source)
            got = self.successResultOf(inserted)
            outcomes.extend(got)
        for _ in range(1800):
            clock.advance(1)
        assert core.verifier is not None
        # Four ports of a host wait at once (the others are refused busy),
        # and the host gets one probe a minute whatever its spelling.
        busy = [o for o in outcomes if isinstance(o, Refused) and o.reason.startswith("busy:")]
        # (The first probe fails at once, freeing its place: 5 waited.)
        self.assertGreaterEqual(len(busy), 1000 - 5)
        self.assertLessEqual(len(prober.probes), 5)
        whens = sorted(when for when, _, _, _ in prober.probes)
        self.assertTrue(all(b - a >= 60 for a, b in zip(whens, whens[1:])), whens)
        self.assertEqual(core.verifier.pending, 0)

    def test_names_are_refused(self) -> None:
        core, _, prober = make_core()
        (outcome,) = self.successResultOf(
            core.insert(["app"], [Entry(NOW, "x1.victim.example", 80)], "1.2.3.4")
        )
        assert isinstance(outcome, Refused)
        self.assertIn("addresses, not names", outcome.reason)
        self.assertEqual(prober.probes, [])

    def test_a_connection_does_not_confirm_a_halp_server(self) -> None:
        core, clock, prober = make_core()
        prober.reachable.add("11.2.3.45")
        self.successResultOf(core.insert(["app"], [Entry(NOW, "11.2.3.45", 7100)], "1.2.3.4"))
        (outcome,) = self.successResultOf(
            core.insert(["halp"], [Entry(NOW, "11.2.3.45", 7100)], "1.2.3.4")
        )
        # Confirmed by a connection, the host still waits for a hello, in
        # the host's next probe slot.
        self.assertIsInstance(outcome, Pending)
        clock.advance(60)
        self.assertEqual([p[3] for p in prober.probes], [False, True])
        self.assertEqual(len(self.successResultOf(core.get("halp")).items), 1)
        # halp/http faces are confirmed by a connection, not a hello.
        self.successResultOf(core.insert(["halp/http"], [Entry(NOW, "11.2.3.46", 80)], "1.2.3.4"))
        self.assertEqual(prober.probes[-1][1:], ("11.2.3.46", 80, False))

    def test_a_relayed_claim_stays_relayed(self) -> None:
        core, clock, prober = make_core()
        prober.delay = 1
        prober.reachable.add("11.2.3.45")
        core.peer_source = StaticPeers([], trusted=["5.5.5.5"])
        seen: list[bool] = []
        core.watch(lambda changes, relay: seen.append(relay))
        change = Change("app", Entry(NOW, "11.2.3.45", 4000), "1.2.3.4")
        core.push([change], "5.5.5.5:7100", "5.5.5.5")
        core.apply_pulled([change], "5.5.5.5:7100")
        clock.advance(1)
        self.assertEqual(seen, [True])

    def test_a_failed_insert_leaves_no_claim(self) -> None:
        from twisted.internet.defer import fail as failed

        from halp.error import StoreError

        class Broken(MemoryStore):
            def merge(self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0) -> Deferred[Any]:
                return failed(StoreError("disk full"))

        core, _, prober = make_core(store=Broken())
        d = core.insert(
            ["app"], [Entry(NOW, "1.2.3.4", 1), Entry(NOW, "11.2.3.45", 1)], "1.2.3.4"
        )
        self.failureResultOf(d, StoreError)
        self.assertEqual(prober.probes, [])

    def test_immediate_answers_do_not_recurse(self) -> None:
        core, clock, prober = make_core(insert_rate=0)
        prober.reachable.update(f"11.{i // 250}.{i % 250}.1" for i in range(2000))
        for i in range(2000):
            core.insert(["app"], [Entry(NOW, f"11.{i // 250}.{i % 250}.1", 1)], f"{i % 200 + 1}.9.9.9")
        assert core.verifier is not None
        self.assertEqual(core.verifier.pending, 0)
        self.assertEqual(core.verifier.stats["verify-probes-ok"], 2000)

    def test_unverified_newcomers_evict_nothing(self) -> None:
        """
        Test before evict: a full label of confirmed entries, then 10,000
        unverified entries (inserted and pushed by peers) whose hosts never
        answer: not one confirmed entry is evicted.
        """
        core, clock, prober = make_core(limits=Limits(max_entries=50), insert_rate=0)
        core.peer_source = StaticPeers([], trusted=["5.5.5.5"])
        confirmed = [Entry(NOW, f"{20 + i}.1.1.1", 4000) for i in range(50)]
        for entry in confirmed:
            self.successResultOf(core.insert(["app"], [entry], entry.host))
        for i in range(10_000):
            entry = Entry(NOW + 1, f"{100 + i % 100}.{i // 100}.2.2", 4000)
            if i % 2:
                core.insert(["app"], [entry], f"{i % 200 + 1}.7.7.7")
            else:
                core.push([Change("app", entry, "9.9.9.9")], "5.5.5.5:7100", "5.5.5.5")
            if i % 100 == 0:
                clock.advance(1)
        clock.advance(3600)
        kept = self.successResultOf(core.store.get("app", 0, 100, 0))
        self.assertEqual(sorted(kept, key=lambda e: e.host), sorted(confirmed, key=lambda e: e.host))
        self.assertGreater(len(prober.probes), 0)

    def test_halp_label_probed_as_halp(self) -> None:
        core, _, prober = make_core()
        self.successResultOf(core.insert(["halp"], [Entry(NOW, "11.2.3.45", 7100)], "1.2.3.4"))
        self.assertEqual([p[1:] for p in prober.probes], [("11.2.3.45", 7100, True)])

    def test_queue_is_bounded_per_network(self) -> None:
        core, _, prober = make_core(insert_rate=0)
        assert core.verifier is not None
        core.verifier.stop()  # nothing leaves the queue
        core.verifier._stopped = False
        core.verifier.concurrency = 0
        outcomes: list[Stored | Refused | Pending] = []
        for i in range(1000):
            inserted = core.insert(
                ["app"], [Entry(NOW, f"11.2.{i // 250}.{i % 250 + 1}", 4000)], f"1.2.3.{i % 200}"
            )
            got = self.successResultOf(inserted)
            outcomes.extend(got)
        kinds = Counter(type(o).__name__ for o in outcomes)
        # One /16 (1.2) may hold 1/64 of the 10,000 places.
        self.assertEqual(kinds, {"Pending": 156, "Refused": 844})
        refused = [o for o in outcomes if isinstance(o, Refused)]
        self.assertIn("from your network already wait", refused[0].reason)
        # Another network still gets in.
        (outcome,) = self.successResultOf(core.insert(["app"], [Entry(NOW, "11.9.9.9", 4000)], "5.6.7.8"))
        self.assertIsInstance(outcome, Pending)

    def test_push_from_peer_verified_under_all(self) -> None:
        core, _, prober = make_core()
        core.peer_source = StaticPeers([], trusted=["5.5.5.5"])
        result = self.successResultOf(
            core.push(
                [
                    Change("app", Entry(NOW, "11.2.3.45", 4000), "1.2.3.4"),
                    Change("halp", Entry(NOW, "5.5.5.5", 7100), ""),
                ],
                "5.5.5.5:7100",
                "5.5.5.5",
            )
        )
        # The peer's own address is trusted; the other waits.
        self.assertEqual((result.changed, result.pending), (1, 1))
        self.assertEqual([p[1] for p in prober.probes], ["11.2.3.45"])

    def test_push_from_peer_trusted_under_inserts(self) -> None:
        core, _, prober = make_core(verify="inserts")
        core.peer_source = StaticPeers([], trusted=["5.5.5.5"])
        result = self.successResultOf(
            core.push([Change("app", Entry(NOW, "11.2.3.45", 4000), "1.2.3.4")], "5.5.5.5:7100", "5.5.5.5")
        )
        self.assertEqual((result.changed, result.pending), (1, 0))
        self.assertEqual(prober.probes, [])

    def test_push_from_stranger_is_an_insert(self) -> None:
        core, _, prober = make_core(verify="inserts")
        core.peer_source = StaticPeers([], trusted=[])
        result = self.successResultOf(
            core.push([Change("app", Entry(NOW, "11.2.3.45", 4000), "1.2.3.4")], "6.6.6.6:7100", "6.6.6.6")
        )
        self.assertEqual((result.changed, result.pending), (0, 1))

    def test_pulled_changes_verified_under_all(self) -> None:
        core, _, prober = make_core()
        prober.reachable.add("11.2.3.45")
        result = self.successResultOf(
            core.apply_pulled(
                [
                    Change("app", Entry(NOW, "11.2.3.45", 4000), "1.2.3.4"),
                    Change("halp", Entry(NOW, "5.5.5.5", 7100), ""),
                ],
                "5.5.5.5:7100",
            )
        )
        self.assertEqual((result.changed, result.pending), (1, 1))
        # Verified, and stored, at once by the fake prober; not relayed.
        self.assertEqual(len(self.successResultOf(core.get("app")).items), 1)

    def test_verified_entries_are_relayed(self) -> None:
        core, clock, prober = make_core()
        prober.delay = 1
        prober.reachable.add("11.2.3.45")
        seen: list[tuple[list[Change], bool]] = []
        core.watch(lambda changes, relay: seen.append((changes, relay)))
        self.successResultOf(core.insert(["app"], [Entry(NOW, "11.2.3.45", 4000)], "1.2.3.4"))
        self.assertEqual(seen, [])
        clock.advance(1)
        self.assertEqual(seen, [([Change("app", Entry(NOW + 1, "11.2.3.45", 4000), "1.2.3.4")], True)])

    def test_replicated_entries_keep_their_time_when_verified(self) -> None:
        """
        Every server verifies a pushed entry at its own time: were that
        time stored, each would be a newer confirmation, pushed on again.
        """
        core, clock, prober = make_core()
        core.peer_source = StaticPeers([], trusted=["5.5.5.5"])
        prober.delay = 1
        prober.reachable.add("11.2.3.45")
        seen: list[tuple[list[Change], bool]] = []
        core.watch(lambda changes, relay: seen.append((changes, relay)))
        entry = Entry(NOW, "11.2.3.45", 4000)
        self.successResultOf(core.push([Change("app", entry, "1.2.3.4")], "5.5.5.5:7100", "5.5.5.5"))
        clock.advance(1)
        self.assertEqual(seen, [([Change("app", entry, "1.2.3.4", "5.5.5.5:7100")], True)])
        # The same version from another peer changes nothing: not relayed.
        core.peer_source = StaticPeers([], trusted=["5.5.5.5", "6.6.6.6"])
        result = self.successResultOf(
            core.push([Change("app", entry, "1.2.3.4")], "6.6.6.6:7100", "6.6.6.6")
        )
        self.assertEqual((result.changed, result.unchanged), (0, 1))
        self.assertEqual(len(seen), 1)

    def test_no_prober_needed_without_verification(self) -> None:
        with self.assertRaises(ValueError):
            HALPCore(MemoryStore(), Clock(), admission=Admission())
        HALPCore(MemoryStore(), Clock(), admission=OPEN)

    def test_stats(self) -> None:
        core, _, prober = make_core()
        self.successResultOf(core.insert(["app"], [Entry(NOW, "11.2.3.45", 4000)], "1.2.3.4"))
        fields = dict(core.stats_fields())
        self.assertEqual(fields["verify-probes-sent"], 1)
        self.assertEqual(fields["verify-probes-failed"], 1)
        self.assertEqual(fields["verify-pending"], 0)
        self.assertEqual(dict(core.hello())["verify"], "all")


class InsertRateTests(SynchronousTestCase):
    """A per-source token bucket: 0.1 entries a second, 1000 at once."""

    def test_1000_inserts_in_60_s_from_one_address(self) -> None:
        core, clock, _ = make_core(insert_burst=100)
        accepted = busy = 0
        for i in range(1000):
            clock.advance(0.06)
            try:
                self.successResultOf(core.insert(["app"], [Entry(NOW, "1.2.3.4", 4000 + i)], "1.2.3.4"))
                accepted += 1
            except ProtocolError as e:
                self.assertEqual(e.code, ErrorCode.BUSY)
                self.assertRegex(e.message, r"too many entries inserted from 1\.2\.3\.4; try again in [0-9]+ s")
                busy += 1
        # The burst, then 0.1 a second for 60 s.
        self.assertLessEqual(accepted, 100 + 6)
        self.assertGreaterEqual(accepted, 100)
        self.assertEqual(accepted + busy, 1000)
        # Another address is not affected.
        self.successResultOf(core.insert(["app"], [Entry(NOW, "5.6.7.8", 4000)], "5.6.7.8"))

    def test_labels_count(self) -> None:
        core, _, _ = make_core(insert_burst=30)
        entries = [Entry(NOW, "1.2.3.4", p) for p in range(1, 11)]
        self.successResultOf(core.insert(["a", "b"], entries, "1.2.3.4"))
        with self.assertRaises(ProtocolError):
            core.insert(["a", "b"], entries, "1.2.3.4")

    def test_an_ipv6_64_is_one_source(self) -> None:
        core, _, _ = make_core(insert_burst=2)
        core.insert(["a"], [Entry(NOW, "2a00:1450::1", 1)], "2a00:1450::1")
        core.insert(["a"], [Entry(NOW, "2a00:1450::2", 1)], "2a00:1450::2")
        with self.assertRaises(ProtocolError):
            core.insert(["a"], [Entry(NOW, "2a00:1450::3", 1)], "2a00:1450::3")
        core.insert(["a"], [Entry(NOW, "2a00:1450:0:1::3", 1)], "2a00:1450:0:1::3")

    def test_larger_than_the_burst(self) -> None:
        core, _, _ = make_core(insert_burst=5)
        with self.assertRaises(ProtocolError) as caught:
            core.insert(["a"], [Entry(NOW, "1.2.3.4", p) for p in range(1, 7)], "1.2.3.4")
        self.assertIn("too many entries in one insert", caught.exception.message)

    def test_server_itself_unlimited(self) -> None:
        core, _, _ = make_core(insert_burst=1)
        for port in range(1, 10):
            self.successResultOf(core.insert(["a"], [Entry(NOW, "1.2.3.4", port)]))


class SybilTestsMixin:
    """
    10,000 inserts from one /16 fill at most its share of a label, and the
    honest entries of 32 other /16s all remain.
    """

    def make_store(self) -> IHostStore:
        raise NotImplementedError

    def test_10000_inserts_from_one_16_fill_at_most_1_64(self) -> None:
        test: SynchronousTestCase = self  # type: ignore[assignment]
        store = self.make_store()
        core, clock, _ = make_core(store=store, insert_rate=0)
        rng = random.Random(16)
        honest = set()
        for g in range(32):
            for k in range(15):
                host = f"{20 + g}.{g}.{k}.{rng.randrange(1, 255)}"
                honest.add((host, 4000))
                test.successResultOf(core.insert(["app"], [Entry(NOW - 60, host, 4000)], host))
        for i in range(10_000):
            host = f"5.6.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            # Each sybil inserts its own address, with a newer time.
            test.successResultOf(core.insert(["app"], [Entry(NOW, host, 4000 + i % 50)], host))
        entries = test.successResultOf(store.get("app", 0, 2000, 0))
        groups = Counter(address_group(e.host) for e in entries)
        test.assertEqual(core.group_cap, 1000 // 64)
        test.assertLessEqual(groups["v4:5.6"], 15)
        kept = {e.address for e in entries} & honest
        test.assertEqual(len(kept), len(honest))  # >= 90 % asked; all 480 remain
        test.successResultOf(store.close())


class MemorySybilTests(SybilTestsMixin, SynchronousTestCase):
    def make_store(self) -> IHostStore:
        return MemoryStore()


class SQLiteSybilTests(SybilTestsMixin, SynchronousTestCase):
    def make_store(self) -> IHostStore:
        from halp.store.sqlite import InlineRunner

        return SQLiteStore(Clock(), self.mktemp(), "normal", runner=InlineRunner())  # type: ignore[arg-type]


class SpreadTests(SynchronousTestCase):
    """A get without a window spreads its answer over networks."""

    def test_at_most_a_quarter_from_one_16(self) -> None:
        core, _, _ = make_core(insert_rate=0, group_share=0)
        # 30 newest entries from one /16, then 30 from 30 others.
        for i in range(30):
            host = f"5.6.0.{i + 1}"
            core.insert(["app"], [Entry(NOW - i, host, 4000)], host)
        for i in range(30):
            host = f"{30 + i}.1.1.1"
            core.insert(["app"], [Entry(NOW - 100 - i, host, 4000)], host)
        answer = self.successResultOf(core.get("app")).items
        self.assertEqual(len(answer), 10)
        groups = Counter(address_group(e.host) for e in answer)
        self.assertLessEqual(max(groups.values()), 2)
        self.assertEqual(answer, sorted(answer, key=lambda e: (-e.timestamp, e.host, e.port)))
        # A window asks for the exact order.
        from halp.model import Window

        window = self.successResultOf(core.get("app", Window(0, 10))).items
        self.assertEqual({address_group(e.host) for e in window}, {"v4:5.6"})

    def test_one_network_still_fills_the_answer(self) -> None:
        core, _, _ = make_core(insert_rate=0, group_share=0)
        for i in range(30):
            host = f"5.6.0.{i + 1}"
            core.insert(["app"], [Entry(NOW - i, host, 4000)], host)
        self.assertEqual(len(self.successResultOf(core.get("app")).items), 10)


class VerifierTests(SynchronousTestCase):
    """The queue itself."""

    def test_a_second_claim_joins_the_first(self) -> None:
        clock = Clock()
        prober = FakeProber(["11.2.3.45"], clock=clock, delay=1)
        stored: list[tuple[list[Claim], float]] = []
        verifier = Verifier(prober, clock, lambda c, t: stored.append((c, t)))
        a = Claim("a", Entry(0, "11.2.3.45", 1), "1.2.3.4")
        b = Claim("b", Entry(0, "11.2.3.45", 1), "1.2.3.5")
        self.assertIsNone(verifier.submit(a, "1.2.3.4"))
        self.assertIsNone(verifier.submit(b, "1.2.3.5"))
        clock.advance(1)
        self.assertEqual(stored, [([a, b], 1.0)])
        self.assertEqual(len(prober.probes), 1)
        self.assertEqual(verifier.confirmed_at("11.2.3.45", 1), 1.0)
        clock.advance(verifier.confirm_ttl + 1)
        self.assertIsNone(verifier.confirmed_at("11.2.3.45", 1))

    def test_concurrency(self) -> None:
        clock = Clock()
        prober = FakeProber([], clock=clock, delay=5)
        verifier = Verifier(prober, clock, lambda c, t: None, concurrency=4)
        for i in range(10):
            verifier.submit(Claim("a", Entry(0, f"11.2.3.{i + 1}", 1)), "1.2.3.4")
        self.assertEqual(len(prober.probes), 4)
        clock.advance(5)
        self.assertEqual(len(prober.probes), 8)
        clock.advance(5)
        self.assertEqual(len(prober.probes), 10)

    def test_stop_cancels(self) -> None:
        clock = Clock()
        prober = FakeProber([], clock=clock, delay=5)
        verifier = Verifier(prober, clock, lambda c, t: None)
        verifier.submit(Claim("a", Entry(0, "11.2.3.4", 1)), "1.2.3.4")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        verifier.stop()
        self.assertEqual(verifier.pending, 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(len(prober.probes), 1)
