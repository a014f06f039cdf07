"""
Tests for :mod:`halp.sim.model` and the command of :mod:`halp.sim.run`:
the simulated addresses, the knobs' ranges, the peers' churn and
announcements, the simulated prober, small worlds run end to end, and
the command line and report.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import math
import random
import sys
from io import StringIO
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from halp.core import HALPCore
from halp.federation import SERVERS_LABEL
from halp.model import Entry, address_group, check_routable
from halp.sim import run
from halp.sim.hostile import DroppingCore, LyingCore
from halp.sim.model import (
    APP,
    BEHAVIOURS,
    PEER_PORT,
    PORT,
    START,
    Config,
    Peers,
    SimProber,
    World,
    client_host,
    is_sybil,
    peer_host,
    server_host,
    simulate,
    sybil_host,
)
from halp.verify import ProbeFailed

#: A small world that runs in well under a second.
SMALL = Config(servers=12, peers=1000, window=600, inserts=3, bootstraps=30, hostile=0.0, seed=3)
#: ... and one whose hostile servers are all attackers.
ATTACKED = dataclasses.replace(
    SMALL, inserts=0, bootstraps=20, hostile=0.5, behaviours=("attacker",)
)
#: ``--quick``'s sizes.
QUICK: dict[str, Any] = dict(run.QUICK)


@functools.cache
def small_results() -> dict[str, Any]:
    """The results of :data:`SMALL`, run once for the tests that read them."""
    return simulate(SMALL)


@functools.cache
def attacked_world() -> World:
    """:data:`ATTACKED`, built and run once for the tests that read it."""
    world = World(ATTACKED)
    world.build()
    world.run()
    return world


class AddressTests(SynchronousTestCase):
    """The addresses of the ranges a full run uses: 1,000 servers,
    100,000 peers, 20,000 clients, and sybils of the 4,096 groups."""

    def setUp(self) -> None:
        self.servers = [server_host(i) for i in range(1000)]
        self.peers = [peer_host(p) for p in range(100_000)]
        self.clients = [client_host(c) for c in range(20_000)]
        self.sybils = [
            sybil_host(g, k) for g in (0, 1, 255, 256, 4095) for k in range(0, 64_000, 97)
        ]
        self.every = self.servers + self.peers + self.clients + self.sybils

    def test_distinct(self) -> None:
        self.assertEqual(len(set(self.every)), len(self.every))

    def test_globally_routable(self) -> None:
        for host in self.every:
            check_routable(host)
        # The standard library agrees, network by network (a /16 lies
        # wholly in or out of the special blocks these ranges come near).
        networks = {".".join(h.split(".")[:2]) for h in self.every}
        for network in networks:
            for last in ("0.0", "255.255"):
                self.assertTrue(ipaddress.IPv4Address(f"{network}.{last}").is_global, network)

    def test_each_server_in_its_own_network(self) -> None:
        self.assertEqual(len({address_group(h) for h in self.servers}), len(self.servers))

    def test_peers_spread_over_many_networks(self) -> None:
        groups: dict[str, int] = {}
        for host in self.peers:
            groups[address_group(host)] = groups.get(address_group(host), 0) + 1
        self.assertEqual(len(groups), 9984)
        self.assertLessEqual(max(groups.values()), 11)
        # The first peers are already spread: no two in one network.
        self.assertEqual(len({address_group(h) for h in self.peers[:9984]}), 9984)

    def test_sybils_live_apart(self) -> None:
        """``group`` picks a sybil's /16; is_sybil tells exactly the sybils."""
        self.assertEqual(
            {address_group(sybil_host(g, k)) for g in range(4096) for k in (0, 300, 63_999)},
            {address_group(sybil_host(g, 0)) for g in range(4096)},
        )
        self.assertEqual(len({address_group(sybil_host(g, 0)) for g in range(4096)}), 4096)
        self.assertEqual([h for h in self.sybils if not is_sybil(h)], [])
        self.assertEqual([h for h in self.servers + self.peers + self.clients if is_sybil(h)], [])
        self.assertEqual([is_sybil(h) for h in ("59.255.255.254", "76.0.0.1")], [False, False])


#: A value out of range for every knob but the seed.
BAD: dict[str, list[float]] = {
    "servers": [1, 12_001],
    "peers": [0, 2_000_001],
    "online": [0.0, 1.01],
    "churn": [-0.1, 1.0],
    "hostile": [-0.1, 0.95],
    "hostile_peers": [-0.1, 1.0],
    "sybil_groups": [0, 4097],
    "latency": [0.0],
    "jitter": [-0.01],
    "loss": [-0.1, 0.5],
    "fanout": [0, 65],
    "push_delay": [-1.0, 61.0],
    "sync_interval": [0.0],
    "test_interval": [0.0],
    "refresh": [0.0],
    "background": [0.0],
    "window": [299.0],
    "inserts": [-1],
    "bootstraps": [-1],
    "client_seeds": [0, 1001],
    "server_seeds": [0, 1000],
    "queries": [0, 17],
    "limit": [0, 101],
    "want": [0, 21],
    "max_lookups": [0],
    "flood_interval": [0.0],
    "flood_size": [0, 101],
    "stale_age": [-1.0],
    "label_size": [9, 1001],
}


class ConfigTests(SynchronousTestCase):
    def test_defaults_pass(self) -> None:
        Config().check()
        Config(**QUICK).check()

    def test_edges_pass(self) -> None:
        Config(servers=2, server_seeds=1, client_seeds=2, hostile=0.9, window=300, online=1.0,
               churn=0.0, want=20, limit=20, label_size=10, fanout=64, push_delay=60).check()
        Config(
            servers=12_000, peers=2_000_000, sybil_groups=4096, label_size=1000, limit=100
        ).check()

    def test_infinite_times_are_refused(self) -> None:
        """An endless window would never end the peers' schedule."""
        for name in ("window", "stale_age", "refresh", "latency", "flood_interval"):
            knob: dict[str, Any] = {name: float("inf")}
            with self.assertRaises(ValueError) as caught:
                Config(**knob).check()
            self.assertEqual(str(caught.exception), f"--{name.replace('_', '-')} is out of range")

    def test_servers_stay_out_of_the_sybils_networks(self) -> None:
        limit = 12_000
        Config(servers=limit).check()
        self.assertFalse(any(is_sybil(server_host(i)) for i in range(limit)))

    def test_every_knob_is_checked(self) -> None:
        names = {f.name for f in dataclasses.fields(Config)} - {"seed", "behaviours"}
        self.assertEqual(set(BAD), names)

    def test_out_of_range_names_the_option(self) -> None:
        for name, values in BAD.items():
            for value in values:
                knob: dict[str, Any] = {name: value}
                config = Config(**knob)
                with self.assertRaises(ValueError) as caught:
                    config.check()
                self.assertEqual(
                    str(caught.exception), f"--{name.replace('_', '-')} is out of range",
                    (name, value),
                )

    def test_behaviours(self) -> None:
        for behaviours in [("drop", "nope"), ("nope",), ()]:
            with self.assertRaises(ValueError) as caught:
                Config(behaviours=behaviours).check()
            self.assertIn("--behaviours must name some of stale, attacker", str(caught.exception))
        Config(behaviours=("flood",)).check()


class PeersTests(SynchronousTestCase):
    config = Config(peers=20_000, churn=0.3, online=0.5, refresh=900.0)
    begin, end = 0.0, 4 * 3600.0

    def peers(self, seed: int = 5, **knobs: Any) -> Peers:
        config = dataclasses.replace(self.config, **knobs)
        return Peers(config, random.Random(seed), self.begin, self.end)

    def assertNear(self, value: float, expected: float, tolerance: float) -> None:
        self.assertLessEqual(abs(value - expected), tolerance, f"{value} is not {expected}")

    def sessions(self, peers: Peers, p: int) -> list[tuple[float, float]]:
        """Peer ``p``'s online sessions, cut to the run."""
        edges = [self.begin] + [t for t in peers.toggles[p] if t < self.end] + [self.end]
        online = peers.initial[p]
        out = []
        for a, b in zip(edges, edges[1:]):
            if online:
                out.append((a, b))
            online = not online
        return out

    def test_online_fraction(self) -> None:
        peers = self.peers()
        for when in (self.begin, 3600.0, 7777.0, self.end - 1):
            online = sum(peers.live(p, when) for p in range(peers.count)) / peers.count
            self.assertNear(online, 0.5, 0.02)

    def test_fewer_online(self) -> None:
        peers = self.peers(peers=5000, online=0.2)
        for when in (self.begin, 7777.0):
            online = sum(peers.live(p, when) for p in range(peers.count)) / peers.count
            self.assertNear(online, 0.2, 0.025)

    def test_churn(self) -> None:
        """``churn`` of the online peers leave within the hour (some of
        them come back: fewer are offline an hour later)."""
        peers = self.peers()
        t = 3600.0
        online = [p for p in range(peers.count) if peers.live(p, t)]
        left = [p for p in online if any(t < x <= t + 3600 for x in peers.toggles[p])]
        self.assertNear(len(left) / len(online), 0.3, 0.02)
        offline = [p for p in online if not peers.live(p, t + 3600)]
        # Two states, leaving at rate a = -ln(0.7)/h and returning at a:
        # P(off an hour later | on) = (1 - exp(-2a h)) / 2.
        a = -math.log(0.7)
        self.assertNear(len(offline) / len(online), (1 - math.exp(-2 * a)) / 2, 0.02)

    def test_no_churn(self) -> None:
        peers = self.peers(churn=0.0, peers=2000)
        self.assertEqual([p for p in range(peers.count) if peers.toggles[p][:-1]], [])
        moved = [p for p in range(peers.count) if peers.live(p, 5000) != peers.initial[p]]
        self.assertEqual(moved, [])

    def test_leaves_is_when_an_online_peer_goes_offline(self) -> None:
        peers = self.peers()
        checked = 0
        for p in range(2000):
            if not peers.live(p, 3600.0):
                continue
            left = peers.leaves(p, 3600.0)
            if left is None:
                self.assertTrue(peers.live(p, self.end - 1))
                continue
            # To a tenth of a second, as reported.
            self.assertTrue(peers.live(p, 3600.0 + left - 0.1))
            self.assertFalse(peers.live(p, 3600.0 + left + 0.1))
            checked += 1
        self.assertGreater(checked, 200)

    def test_live_follows_the_toggles(self) -> None:
        peers = self.peers(peers=500)
        for p in range(peers.count):
            state = peers.initial[p]
            self.assertEqual(peers.live(p, self.begin), state)
            for t in peers.toggles[p]:
                self.assertEqual(peers.live(p, t - 1e-6), state)
                state = not state
                self.assertEqual(peers.live(p, t), state)

    def test_announced_window(self) -> None:
        peers = self.peers()
        after, until = 1000.0, 5000.0
        got = peers.announced(after, until)
        self.assertEqual(got, [a for a in peers.announcements if after < a[0] <= until])
        self.assertEqual(got, sorted(got))
        self.assertGreater(len(got), 5000)
        for t, p in got:
            self.assertTrue(peers.live(p, t), (t, p))
        # The ends: exclusive, then inclusive.
        t0 = got[0][0]
        self.assertEqual(peers.announced(t0, t0), [])
        self.assertEqual(peers.announced(t0 - 1e-9, t0), [got[0]])
        self.assertNotIn(got[0], peers.announced(t0, until))

    def test_announcements_come_every_refresh_of_each_session(self) -> None:
        """A peer announces itself as it comes online and every ``refresh``
        seconds while it stays, and only then."""
        refresh = self.config.refresh
        peers = self.peers(peers=3000)
        by_peer: dict[int, list[float]] = {}
        for t, p in peers.announcements:
            by_peer.setdefault(p, []).append(t)
        for p in range(peers.count):
            times = by_peer.get(p, [])
            expected = 0
            for start, stop in self.sessions(peers, p):
                mine = [t for t in times if start <= t < stop]
                expected += len(mine)
                if start > self.begin:
                    self.assertEqual(mine[:1], [start], p)  # it came online
                elif stop - start > refresh:
                    self.assertLessEqual(mine[0] - start, refresh, p)
                for a, b in zip(mine, mine[1:]):
                    self.assertAlmostEqual(b - a, refresh, places=6)
                if mine:
                    self.assertLessEqual(stop - mine[-1], refresh + 1e-6, p)
            self.assertEqual(expected, len(times), p)  # none while offline

    def test_sessions_under_way_announce_at_random_phases(self) -> None:
        """The peers online as the run begins do not all announce at once:
        their first announcements spread over the first ``refresh``."""
        refresh = self.config.refresh
        peers = self.peers()
        first: dict[int, float] = {}
        for t, p in peers.announcements:
            first.setdefault(p, t)
        staying = [
            p for p in range(peers.count)
            if peers.initial[p] and peers.toggles[p][0] > self.begin + refresh
        ]
        self.assertGreater(len(staying), 5000)
        times = [first[p] - self.begin for p in staying]
        self.assertEqual([t for t in times if not 0 <= t <= refresh], [])
        for quarter in range(4):
            share = sum(quarter * refresh / 4 <= t < (quarter + 1) * refresh / 4 for t in times)
            self.assertNear(share / len(times), 0.25, 0.03)

    def test_newest(self) -> None:
        peers = self.peers(peers=3000)
        until = 9000.0
        last: dict[int, float] = {}
        for t, p in peers.announcements:
            if t <= until:
                last[p] = t
        newest = sorted(((t, p) for p, t in last.items()), reverse=True)
        got = peers.newest(until, 300)
        self.assertEqual(got, [Entry(int(t), peer_host(p), PEER_PORT) for t, p in newest[:300]])
        self.assertEqual(len({e.host for e in got}), 300)
        self.assertEqual(got, sorted(got, key=lambda e: -e.timestamp))
        self.assertLessEqual(got[0].timestamp, until)
        self.assertEqual(len(peers.newest(until, 10**6)), len(last))

    def test_seeded(self) -> None:
        def state(peers: Peers) -> tuple[object, ...]:
            return (peers.initial, peers.toggles, peers.announcements)

        self.assertEqual(state(self.peers(7, peers=300)), state(self.peers(7, peers=300)))
        self.assertNotEqual(state(self.peers(7, peers=300)), state(self.peers(8, peers=300)))


class SimProberTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.world = World(
            Config(servers=4, peers=200, window=600, inserts=0, bootstraps=0, hostile=0)
        )
        self.world.build()
        self.clock = self.world.clock
        self.source = self.world.nodes[0].address.host
        self.prober = SimProber(self.world, self.source)

    def rtt(self, host: str) -> float:
        return 2 * self.world.net.latency(self.source, host)

    def test_a_listening_server_answers_after_a_round_trip(self) -> None:
        target = self.world.nodes[2].address
        d = self.prober.probe(target.host, target.port, True)
        self.clock.advance(self.rtt(target.host) - 1e-3)
        self.assertNoResult(d)
        self.clock.advance(2e-3)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.world.probes, 1)

    def test_unknown_addresses_fail(self) -> None:
        probes = [
            self.prober.probe(server_host(4), PORT, True),  # nobody listens there
            self.prober.probe(server_host(1), PORT + 1, True),
            self.prober.probe(peer_host(0), PEER_PORT, True),  # a peer is no server
            self.prober.probe("131.200.0.9", PEER_PORT, False),
        ]
        self.clock.advance(1)
        for d in probes:
            self.failureResultOf(d, ProbeFailed)
        self.assertEqual(self.world.probes, 4)

    def test_a_sybil_always_answers(self) -> None:
        d = self.prober.probe(sybil_host(3, 77), PEER_PORT, False)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(d))

    def test_a_peer_answers_when_online_at_the_answer(self) -> None:
        """Probed just before it comes online, a peer answers; probed just
        before it leaves, it does not."""
        peers = self.world.peers
        flips = sorted(
            (t, p) for p in range(peers.count) for t in peers.toggles[p]
            if START + 1 < t < START + 590
        )
        coming = next((t, p) for t, p in flips if peers.live(p, t))
        going = next((t, p) for t, p in flips if not peers.live(p, t))
        outcomes = []
        for t, p in sorted([coming, going]):
            host = peer_host(p)
            self.clock.run_until(t - self.rtt(host) / 2)
            before = peers.live(p, self.clock.seconds())
            d = self.prober.probe(host, PEER_PORT, False)
            self.clock.advance(self.rtt(host))
            self.assertNotEqual(peers.live(p, self.clock.seconds()), before)
            outcomes.append((peers.live(p, t), d))
        for online, d in outcomes:
            if online:
                self.assertIsNone(self.successResultOf(d))
            else:
                self.failureResultOf(d, ProbeFailed)


class BuildTests(SynchronousTestCase):
    def test_hostile_servers_and_warm_stores(self) -> None:
        config = Config(servers=8, peers=1000, window=600, inserts=0, bootstraps=0, hostile=0.5,
                        behaviours=BEHAVIOURS, seed=2)
        world = World(config)
        world.build()
        self.assertEqual(sorted(str(n.behaviour) for n in world.nodes),
                         sorted(["None"] * 4 + list(BEHAVIOURS)))
        self.assertEqual(world.honest_count, 5)
        addresses = [n.address for n in world.nodes]
        self.assertEqual(world.listening, set(addresses))
        newest = world.peers.newest(START, config.label_size)
        stale = world.peers.newest(START - config.stale_age, config.label_size)
        for node in world.nodes:
            kind = {"stale": DroppingCore, "drop": DroppingCore, "attacker": LyingCore}
            self.assertIs(type(node.core), kind.get(str(node.behaviour), HALPCore))
            store = node.core.store
            servers = self.successResultOf(store.get(SERVERS_LABEL, 0, 100, 0))
            self.assertEqual(sorted((e.host, e.port) for e in servers),
                             sorted((a.host, a.port) for a in addresses))
            app = self.successResultOf(store.get(APP, 0, 1000, 0))
            self.assertEqual(set(app), set(stale if node.behaviour == "stale" else newest))
        self.assertEqual(len(newest), config.label_size)


class WorldTests(SynchronousTestCase):
    def test_inserts_reach_every_honest_server(self) -> None:
        r = small_results()
        self.assertEqual(r["honest_servers"], 12)
        self.assertEqual(r["tracked_inserts"], 3)
        # None is left short of 99% when the run ends.
        self.assertEqual(r["short"], [])
        for fraction in ("50%", "90%", "99%"):
            self.assertEqual(r["propagation"][fraction]["reached"], 3, fraction)
        medians = [r["propagation"][f]["median_s"] for f in ("50%", "90%", "99%")]
        self.assertEqual(medians, sorted(medians))
        self.assertGreater(medians[0], 0)
        for arrivals in r["arrivals"]:
            # Once at each honest server: a confirmation is not restamped
            # and sent round again.
            self.assertEqual(len(arrivals), 12)
            self.assertEqual(arrivals, sorted(arrivals))
            self.assertGreaterEqual(arrivals[0], 0)
        self.assertGreater(r["insert_messages"], 0)
        # A fraction is reached with the arrival that makes it up: the 6th
        # of 12 honest servers for half, the 11th for 90%, the 12th for 99%.
        for fraction, nth in (("50%", 6), ("90%", 11), ("99%", 12)):
            nth_arrival = max(a[nth - 1] for a in r["arrivals"])
            self.assertAlmostEqual(r["propagation"][fraction]["max_s"], nth_arrival, places=3)

    def test_each_server_counts_once_per_insert(self) -> None:
        """
        A tracked peer's later announcements are not handed out in the
        background (that would count as its insert arriving everywhere at
        once), and a server that stores it twice counts once.
        """
        r = simulate(Config(servers=20, peers=1000, window=3600, inserts=50, bootstraps=0,
                            hostile=0, seed=1))
        for arrivals in r["arrivals"]:
            self.assertLessEqual(len(arrivals), r["honest_servers"])

    def test_bootstraps(self) -> None:
        b = small_results()["bootstrap"]
        self.assertEqual((b["clients"], b["finished"], b["ok"]), (30, 30, 30))
        self.assertEqual(b["ok_fraction"], 1.0)
        self.assertEqual(b["eclipsed_fraction"], 0.0)
        self.assertEqual(b["empty_fraction"], 0.0)
        self.assertEqual(b["all_seeds_hostile"], 0)
        self.assertGreaterEqual(b["live_honest_median"], SMALL.want)

    def test_deterministic_and_serialisable(self) -> None:
        r = small_results()
        self.assertEqual(simulate(SMALL), r)
        self.assertEqual(json.loads(json.dumps(r)), r)
        self.assertNotEqual(simulate(dataclasses.replace(SMALL, seed=4))["arrivals"], r["arrivals"])

    def test_attackers_eclipse_clients_whose_seeds_are_all_theirs(self) -> None:
        world = attacked_world()
        self.assertEqual(world.honest_count, 6)
        boots = world.bootstraps
        self.assertEqual(len(boots), ATTACKED.bootstraps)
        self.assertEqual([b for b in boots if not b.lookups], [])
        cornered = [b for b in boots if b.hostile_seeds == ATTACKED.client_seeds]
        self.assertTrue(cornered)
        for b in boots:
            if b in cornered:
                self.assertTrue(b.eclipsed and not b.ok and b.live_honest == 0, b)
            if b.eclipsed:
                self.assertGreater(b.hostile_seeds, 0, b)
        results = world.results()
        self.assertEqual(results["bootstrap"]["all_seeds_hostile"], len(cornered))
        self.assertEqual(results["propagation"]["99%"]["reached"], 0)


class CommandTests(SynchronousTestCase):
    def config(self, *argv: str) -> tuple[Config, dict[str, Any], tuple[float, ...]]:
        return run._config(run._parse(list(argv)))

    def fails(self, *argv: str) -> str:
        """What ``argv`` makes the command say before it exits with status 2."""
        stderr = StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            self.config(*argv)
        self.assertEqual(caught.exception.code, 2)
        said = stderr.getvalue()
        self.assertTrue(said.startswith("halp.sim: error: "), said)
        self.assertEqual(said.count("\n"), 1, said)
        self.assertTrue(said.endswith("\n"), said)
        return said

    def test_defaults(self) -> None:
        config, sweep_run, sweep = self.config()
        self.assertEqual(config, Config(behaviours=run.TARGET_BEHAVIOURS))
        self.assertEqual((sweep_run, sweep), (run.SWEEP_RUN, run.SWEEP))

    def test_quick(self) -> None:
        config, sweep_run, sweep = self.config("--quick")
        self.assertEqual(config, Config(behaviours=run.TARGET_BEHAVIOURS, **QUICK))
        self.assertEqual((sweep_run, sweep), (run.QUICK_SWEEP_RUN, run.QUICK_SWEEP))
        config, _, _ = self.config("--quick", "--servers", "10", "--online", "0.25")
        self.assertEqual(
            (config.servers, config.peers, config.online), (10, run.QUICK["peers"], 0.25)
        )

    def test_behaviours_and_sweep(self) -> None:
        config, _, sweep = self.config("--behaviours", "flood,drop", "--sweep", "0.1,0.3")
        self.assertEqual(config.behaviours, ("flood", "drop"))
        self.assertEqual(sweep, (0.1, 0.3))
        config, _, sweep = self.config("--behaviours", " stale, ,attacker,", "--sweep", "none")
        self.assertEqual((config.behaviours, sweep), (("stale", "attacker"), ()))

    def test_errors(self) -> None:
        cases = [
            (["--sweep", "0.1,x"], "--sweep: not a list of fractions: '0.1,x'"),
            (["--sweep", "0.1,0.95"], "--sweep: fractions go from 0 to 0.9"),
            (["--servers", "1"], "--servers is out of range"),
            (["--hostile", "0.95"], "--hostile is out of range"),
            (["--quick", "--client-seeds", "41"], "--client-seeds is out of range"),
            (["--behaviours", "drop,nope"], "--behaviours must name some of"),
            (["--behaviours", ","], "--behaviours must name some of"),
            (["--servers", "many"], "--servers: invalid int value: 'many' (see --help)"),
            (["--no-such-knob"], "unrecognized arguments: --no-such-knob (see --help)"),
        ]
        for argv, message in cases:
            self.assertIn(message, self.fails(*argv), argv)


class TableTests(SynchronousTestCase):
    def test_names_the_figures(self) -> None:
        main = small_results()
        text = run.table({"runs": {"main": main, "hostile 0.5": attacked_world().results()}})
        lines = text.splitlines()
        self.assertEqual(
            lines[0],
            "12 servers (12 honest; hostile 0%: stale,attacker,drop,flood), 1,000 peers "
            "(50% online, 30% of them leave per hour), 10 simulated minutes, seed 3",
        )
        for fraction in ("50%", "90%", "99%"):
            self.assertIn(f"   {fraction} of honest servers: 3/3 inserts; median ", text)
        self.assertIn(
            "Cold bootstraps: 30/30 obtained >= 8 live honest peers (100.00%; target 99.9%)", text
        )
        self.assertIn(
            "whole first answer attacker-controlled: 0.00%; empty: 0.00%; all seeds hostile: 0",
            text,
        )
        self.assertIn("Eclipse sweep (hostile fraction: bootstraps ok, eclipsed, empty):", text)
        self.assertRegex(
            text, r"\n   50%: ok [0-9.]+%, eclipsed [0-9.]+%, empty 0.00% \(20 clients\)"
        )
        self.assertRegex(text, r"\nCost per server per hour: [0-9,]+ messages, [0-9,]+ KiB, "
                               r"[0-9,]+ connections, [0-9,]+ probes")
        for kind in main["cost"]["by_kind"]:
            self.assertRegex(text, rf"\n +{kind or '[(]none[)]'}: [0-9,]+ messages, [0-9,.]+ KiB")
        self.assertIn("push", main["cost"]["by_kind"])
        self.assertRegex(text, r"with every peer's and server's announcement sent through the "
                               r"federation \([0-9,]+ \+ 12 per hour at [0-9,]+ messages each\): about "
                               r"[0-9,]+ messages per server per hour")

    def test_missing_figures_are_dashes(self) -> None:
        """A run without inserts has no propagation figures to print."""
        text = run.table({"runs": {"main": attacked_world().results()}})
        self.assertIn(
            " 99% of honest servers: 0/0 inserts; median - s, worst - s (- sync rounds", text
        )
        self.assertIn("at - messages each): about - messages per server per hour", text)
        self.assertNotIn("Eclipse sweep", text)
