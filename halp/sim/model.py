# -*- test-case-name: halp.test.test_simmodel -*-
"""
The simulated world: HALP servers assembled as ``twistd halp`` assembles
them (:func:`halp.tap.assemble`), peers that come and go, hostile servers
and sybil peers, cold clients that bootstrap with the real
:class:`~halp.client.client.HALPClient`, and what is measured.

What is scaled down, and why (see ``docs/simulation.md``):

- Servers start warm, from stores and server tables in a steady state:
  every store holds every server's ``halp`` entry and the newest
  ``label_size`` entries of the application label, and every table
  holds ``server_seeds`` pinned and 30 tested servers drawn at random.
- Servers do not re-announce themselves within the window (their
  ``announce_interval`` is set beyond it): a re-announcement costs what a
  tracked insert costs, which is measured, and the cost table adds it.
- Of the peers' own re-announcements (``peers * online / refresh`` per
  second), only ``inserts`` tracked ones travel through the real client
  and federation; the others are handed to every honest server as a pull
  would (``HALPCore.apply_pulled``), the newest ``BACKGROUND_TOP`` of every
  ``background`` seconds, without simulating their transport.  Their
  cost is estimated from the tracked inserts'.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from halp.client.client import HALPClient
from halp.client.servers import ServerAddress, ServerTable
from halp.core import HALPCore
from halp.federation import CURSORS_KEY, PEERS_KEY, SERVERS_LABEL
from halp.interfaces import IProber
from halp.model import Change, ChangePage, Entry
from halp.sim.clock import SimClock
from halp.sim.hostile import DroppingCore, LyingCore
from halp.sim.net import SimNetwork
from halp.store.memory import MemoryStore
from halp.tap import Assembly, Options, assemble
from halp.verify import ProbeFailed

__all__ = ["BEHAVIOURS", "Config", "World", "START"]

#: When a run begins (simulated seconds since the epoch).
START = 1_800_000_000
#: The application's label.
APP = "app"
PORT = 7100
PEER_PORT = 6881
BEHAVIOURS = ("stale", "attacker", "drop", "flood")
#: Entries of each background delivery (the newest of its interval).
BACKGROUND_TOP = 20
#: Seconds after a tracked insert when its pushes are counted: a push
#: flood is over within seconds, and the next insert is a minute away.
SETTLE = 50.0
#: The servers a warm table has tested.
WARM_TABLE = 30


@dataclass(frozen=True)
class Config:
    """The model's knobs (``python -m halp.sim --help`` lists them)."""

    servers: int = 1000
    peers: int = 100_000
    #: Fraction of peers online at any time.
    online: float = 0.5
    #: Fraction of the online peers that leave within an hour.
    churn: float = 0.3
    hostile: float = 0.2
    behaviours: tuple[str, ...] = BEHAVIOURS
    #: Fraction of the peers' announcements that come from sybils.
    hostile_peers: float = 0.0
    sybil_groups: int = 4
    latency: float = 0.02
    jitter: float = 0.08
    loss: float = 0.0
    fanout: int = 5
    push_delay: float = 0.0
    sync_interval: float = 250.0
    test_interval: float = 3.0
    #: Seconds between a peer's announcements while online.
    refresh: float = 3600.0
    #: Seconds between background deliveries.
    background: float = 300.0
    window: float = 3600.0
    inserts: int = 50
    bootstraps: int = 2000
    client_seeds: int = 3
    #: The clients' ``queries``: servers asked at once.
    queries: int = 4
    server_seeds: int = 3
    limit: int = 20
    want: int = 8
    max_lookups: int = 5
    flood_interval: float = 3600.0
    flood_size: int = 50
    stale_age: float = 7200.0
    label_size: int = 300
    seed: int = 1

    def check(self) -> None:
        """Raise ValueError naming the first knob out of range."""
        checks = [
            ("servers", self.servers >= 2),
            ("peers", self.peers >= 1),
            ("online", 0 < self.online <= 1),
            ("churn", 0 <= self.churn < 1),
            ("hostile", 0 <= self.hostile <= 0.9),
            ("hostile-peers", 0 <= self.hostile_peers < 1),
            ("sybil-groups", 1 <= self.sybil_groups <= 4096),
            ("latency", self.latency > 0),
            ("jitter", self.jitter >= 0),
            ("loss", 0 <= self.loss < 0.5),
            ("fanout", 1 <= self.fanout <= 64),
            ("push-delay", 0 <= self.push_delay <= 60),
            ("sync-interval", self.sync_interval > 0),
            ("test-interval", self.test_interval > 0),
            ("refresh", self.refresh > 0),
            ("background", self.background > 0),
            ("window", self.window >= 300),
            ("inserts", self.inserts >= 0),
            ("bootstraps", self.bootstraps >= 0),
            ("client-seeds", 1 <= self.client_seeds <= self.servers),
            ("queries", 1 <= self.queries <= 16),
            ("server-seeds", 1 <= self.server_seeds < self.servers),
            ("limit", 1 <= self.limit <= 100),
            ("want", 1 <= self.want <= self.limit),
            ("max-lookups", self.max_lookups >= 1),
            ("flood-interval", self.flood_interval > 0),
            ("flood-size", 1 <= self.flood_size <= 100),
            ("stale-age", self.stale_age >= 0),
            ("label-size", 10 <= self.label_size <= 1000),
            ("peers", self.peers <= 2_000_000),
            # Server addresses reach the sybils' networks (60.0/16) after 12,250.
            ("servers", self.servers <= 12_000),
        ]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{f.name.replace('_', '-')} is out of range")
        for name, ok in checks:
            if not ok:
                raise ValueError(f"--{name} is out of range")
        unknown = set(self.behaviours) - set(BEHAVIOURS)
        if unknown or not self.behaviours:
            raise ValueError(
                f"--behaviours must name some of {', '.join(BEHAVIOURS)}"
            )


# -- addresses -----------------------------------------------------------------


def server_host(i: int) -> str:
    """Server ``i``: one per /16, all globally routable (11.0/16 up)."""
    return f"{11 + i // 250}.{i % 250}.0.1"


def peer_host(p: int) -> str:
    """Peer ``p``: 9,984 /16 networks from 130.0/16, about 10 peers each."""
    return f"{130 + p % 39}.{(p // 39) % 256}.{p // 9984 % 256}.{7 + p // (9984 * 256)}"


def client_host(c: int) -> str:
    return f"{180 + c // 65536 % 10}.{c // 256 % 256}.{c % 256}.9"


def sybil_host(group: int, k: int) -> str:
    """A sybil's address: ``group`` picks its /16 (from 60.0/16)."""
    return f"{60 + group // 256}.{group % 256}.{k // 250 % 256}.{1 + k % 250}"


def is_sybil(host: str) -> bool:
    return 60 <= int(host.split(".", 1)[0]) < 76


# -- peers ---------------------------------------------------------------------


class Peers:
    """
    The application's peers: each alternates online and offline sessions
    of exponential length (the mean online session makes ``churn`` of the
    online peers leave within an hour; offline sessions keep ``online`` of
    them online), and announces itself when it comes online and every
    ``refresh`` seconds while it stays.
    """

    def __init__(self, config: Config, rng: random.Random, begin: float, end: float) -> None:
        self.count = config.peers
        leave = -math.log(1 - config.churn) / 3600 if config.churn else 1e-12
        mean_on = 1 / leave
        mean_off = mean_on * (1 - config.online) / config.online
        self.initial: list[bool] = []
        self.toggles: list[list[float]] = []
        announcements: list[tuple[float, int]] = []
        for p in range(self.count):
            online = rng.random() < config.online
            self.initial.append(online)
            flips: list[float] = []
            t = begin
            state = online
            # The first announcement of a session already under way.
            phase = begin - rng.uniform(0, config.refresh) if online else 0.0
            while t < end:
                length = rng.expovariate(1 / (mean_on if state else mean_off))
                if state:
                    first = phase if t == begin else t
                    a = first
                    while a < min(t + length, end):
                        if a >= begin:
                            announcements.append((a, p))
                        a += config.refresh
                t += length
                flips.append(t)
                state = not state
            self.toggles.append(flips)
        announcements.sort()
        self.announcements = announcements
        self._times = [a for a, _ in announcements]
        self.by_host = {peer_host(p): p for p in range(self.count)}

    def live(self, p: int, when: float) -> bool:
        """Whether peer ``p`` is online at ``when``."""
        flipped = bisect.bisect_right(self.toggles[p], when)
        return self.initial[p] != (flipped % 2 == 1)

    def leaves(self, p: int, after: float) -> float | None:
        """Seconds after ``after`` until online peer ``p`` goes offline, if it does."""
        flips = self.toggles[p]
        i = bisect.bisect_right(flips, after)
        return round(flips[i] - after, 1) if i < len(flips) else None

    def announced(self, after: float, until: float) -> list[tuple[float, int]]:
        """The announcements in ``(after, until]``, oldest first."""
        lo = bisect.bisect_right(self._times, after)
        hi = bisect.bisect_right(self._times, until)
        return self.announcements[lo:hi]

    def newest(self, until: float, count: int) -> list[Entry]:
        """The ``count`` newest entries as of ``until``: one per peer."""
        hi = bisect.bisect_right(self._times, until)
        seen: set[int] = set()
        out: list[Entry] = []
        for i in range(hi - 1, -1, -1):
            t, p = self.announcements[i]
            if p not in seen:
                seen.add(p)
                out.append(Entry(int(t), peer_host(p), PEER_PORT))
                if len(out) == count:
                    break
        return out


# -- the prober ----------------------------------------------------------------


@implementer(IProber)
class SimProber:
    """
    Reaches a host one round trip after asked: a server that is
    listening, a peer that is online, or a sybil (the attacker keeps them
    up).
    """

    def __init__(self, world: World, source: str) -> None:
        self.world = world
        self.source = source

    def probe(self, host: str, port: int, halp: bool) -> Deferred[None]:
        world = self.world
        world.probes += 1
        rtt = 2 * world.net.latency(self.source, host)
        d: Deferred[None] = Deferred()
        world.clock.callLater(rtt, self._answer, d, host, port, halp)
        return d

    def _answer(self, d: Deferred[None], host: str, port: int, halp: bool) -> None:
        world = self.world
        if halp:
            ok = ServerAddress(host, port) in world.listening
        elif is_sybil(host):
            ok = True
        else:
            p = world.peers.by_host.get(host)
            ok = p is not None and world.peers.live(p, world.clock.seconds())
        if ok:
            d.callback(None)
        else:
            d.errback(Failure(ProbeFailed("connection refused")))


# -- servers -------------------------------------------------------------------


@dataclass
class Node:
    index: int
    address: ServerAddress
    behaviour: str | None
    parts: Assembly
    #: The servers its warm table knows.
    known: list[ServerAddress] = field(default_factory=list)

    @property
    def core(self) -> HALPCore:
        return self.parts.core

    @property
    def honest(self) -> bool:
        return self.behaviour in (None, "flood")


@dataclass
class Tracked:
    """One tracked insert: where and when it arrived."""

    host: str
    at: float
    #: Push and insert messages on the network when it was made.
    messages: int
    #: The push and insert messages it caused, counted a minute later.
    cost: int | None = None
    arrivals: list[float] = field(default_factory=list)
    #: The honest servers it reached (each counts once).
    servers: set[int] = field(default_factory=set)
    #: ``{fraction: (seconds, messages)}`` once that fraction was reached.
    reached: dict[float, tuple[float, int]] = field(default_factory=dict)
    #: The announcing client's seeds, as in :class:`Bootstrap`.
    seeds: tuple[str, ...] = ()


@dataclass
class Bootstrap:
    """One cold client's bootstrap."""

    at: float
    lookups: int = 0
    live_honest: int = 0
    ok: bool = False
    eclipsed: bool = False
    empty: bool = False
    hostile_seeds: int = 0
    #: The seeds' behaviours, ``honest`` or hostile, sorted.
    seeds: tuple[str, ...] = ()


FRACTIONS = (0.5, 0.9, 0.99)


class World:
    """One run of the model: build with :meth:`build`, then :meth:`run`."""

    def __init__(self, config: Config, progress: Callable[[str], None] | None = None) -> None:
        config.check()
        self.config = config
        self.progress = progress
        self.rng = random.Random(config.seed)
        self.clock = SimClock(START)
        self.net = SimNetwork(
            self.clock, seed=config.seed, base=config.latency, jitter=config.jitter,
            loss=config.loss,
        )
        self.nodes: list[Node] = []
        self.listening: set[ServerAddress] = set()
        #: The lying servers (the first 100), whom they list as servers.
        self.attackers: list[ServerAddress] = []
        self.tracked: dict[str, Tracked] = {}
        self.bootstraps: list[Bootstrap] = []
        self.probes = 0
        self.floods = 0
        self.clients = 0
        self.sybils_made = 0
        history = max(self.config.stale_age, 0) + 2 * self.config.refresh
        self.peers = Peers(
            config, random.Random(config.seed * 7919 + 1), START - history,
            START + config.window + 60,
        )

    # -- building ------------------------------------------------------------

    def _sybils(self, count: int, now: int) -> list[Entry]:
        """New sybil addresses, confirmed ``now`` (for floods and sybil peers)."""
        out = []
        for _ in range(count):
            k = self.sybils_made
            self.sybils_made += 1
            out.append(Entry(now, sybil_host(k % self.config.sybil_groups, k // self.config.sybil_groups), PEER_PORT))
        return out

    def _lies(self, count: int, now: int) -> list[Entry]:
        """What lying servers answer: the same sybils from every one of them,
        so that a client hears them from several servers."""
        groups = self.config.sybil_groups
        return [Entry(now, sybil_host(k % groups, 10_000 + k // groups), PEER_PORT) for k in range(count)]

    def _accomplices(self, now: int) -> list[Entry]:
        """What lying servers answer for ``halp``: each other, confirmed ``now``."""
        return [Entry(now, a.host, a.port) for a in self.attackers]

    def build(self) -> None:
        c = self.config
        rng = self.rng
        hostile_count = round(c.servers * c.hostile)
        hostile = set(rng.sample(range(c.servers), hostile_count))
        addresses = [ServerAddress(server_host(i), PORT) for i in range(c.servers)]
        behaviours = iter(c.behaviours * (hostile_count // len(c.behaviours) + 1))
        for i, address in enumerate(addresses):
            behaviour = next(behaviours) if i in hostile else None
            seeds = rng.sample([j for j in rng.sample(range(c.servers), c.server_seeds + 1) if j != i], c.server_seeds)
            argv = [
                "--store", "memory", "--no-request-log",
                "--public-address", str(address),
                "--fanout", str(c.fanout),
                "--push-delay", str(c.push_delay),
                "--sync-interval", str(c.sync_interval),
                "--peer-test-interval", str(c.test_interval),
            ]
            for j in seeds:
                argv += ["--peer", str(addresses[j])]
            options = Options()
            options.parseOptions(argv)
            core_type: Callable[..., HALPCore] = HALPCore
            if behaviour in ("stale", "drop"):
                core_type = DroppingCore
            elif behaviour == "attacker":
                core_type = functools.partial(
                    LyingCore, sybils=self._lies, accomplices=self._accomplices
                )
            store = MemoryStore(epoch=f"{c.seed % 2**32:08x}{i:08x}")
            parts = assemble(
                options, self.clock, store,
                prober=SimProber(self, address.host),
                core_type=core_type,
                node_id=f"sim-{c.seed}-{i}",
                endpoint=self.net.endpoint_from(address),
                rng=random.Random(c.seed * 1_000_003 + i),
                announce_interval=4 * c.window + 3600,
            )
            node = Node(i, address, behaviour, parts)
            self.nodes.append(node)
            self.net.listen(address, parts.factory)
            self.listening.add(address)
            self._warm(node, addresses, seeds)
            if node.honest:
                parts.core.watch(functools.partial(self._arrived, node))
        self._warm_cursors()
        self.attackers = [n.address for n in self.nodes if n.behaviour == "attacker"][:100]

    def _warm(self, node: Node, addresses: list[ServerAddress], seeds: list[int]) -> None:
        """Fill a store and a server table as a long-running server's."""
        c = self.config
        core = node.core
        listed = [
            Change(SERVERS_LABEL, Entry(START, a.host, a.port)) for a in addresses
        ]
        age = c.stale_age if node.behaviour == "stale" else 0.0
        app = [Change(APP, e) for e in self.peers.newest(START - age, c.label_size)]
        core.store.merge(listed + app, core.limits.max_entries)
        table = ServerTable([(addresses[j], None) for j in seeds])
        others = [a for a in self.rng.sample(addresses, min(len(addresses), WARM_TABLE + 1)) if a != node.address]
        table.learn([Entry(START, a.host, a.port) for a in others[:WARM_TABLE]], START)
        # Servers that answered more often rank higher: each table its own.
        for a in [addresses[j] for j in seeds] + others[:WARM_TABLE]:
            for _ in range(self.rng.randint(1, 20)):
                table.succeeded(a, START, 0, "halp1")
        core.store.put_state(PEERS_KEY, table.dump())
        node.known = [addresses[j] for j in seeds] + others[:WARM_TABLE]

    def _warm_cursors(self) -> None:
        """Every server has pulled its peers up to now, as a long-running one has."""
        ends: dict[ServerAddress, str] = {}

        def end(page: ChangePage, address: ServerAddress) -> None:
            ends[address] = page.cursor

        for node in self.nodes:
            node.core.store.changes("", 10**7, 0).addCallback(end, node.address)
        for node in self.nodes:
            cursors = {str(a): ends[a] for a in node.known}
            node.core.store.put_state(CURSORS_KEY, json.dumps(cursors, sort_keys=True))

    # -- what happens --------------------------------------------------------

    def _arrived(self, node: Node, changes: list[Change], relay: bool) -> None:
        if not self.tracked:
            return
        for change in changes:
            track = self.tracked.get(change.entry.host)
            if track is None or change.label != APP or node.index in track.servers:
                continue
            track.servers.add(node.index)
            track.arrivals.append(self.clock.seconds())
            honest = self.honest_count
            for fraction in FRACTIONS:
                if fraction not in track.reached and len(track.arrivals) >= math.ceil(fraction * honest):
                    track.reached[fraction] = (
                        self.clock.seconds() - track.at, self._pushed() - track.messages,
                    )

    @functools.cached_property
    def honest_count(self) -> int:
        return sum(n.honest for n in self.nodes)

    def _client(self, host: str | None = None) -> tuple[HALPClient, str, tuple[str, ...]]:
        """A new client at ``host`` (default: a new client address)."""
        c = self.config
        if host is None:
            host = client_host(self.clients)
        self.clients += 1
        seeds = self.rng.sample(self.nodes, c.client_seeds)
        client = HALPClient(
            self.clock,
            MemoryStore(epoch=f"c{self.clients:015x}"),
            [n.address for n in seeds],
            endpoint=self.net.endpoint_from(host),
            queries=c.queries,
            rng=random.Random(self.config.seed * 1_000_003 + 500_000 + self.clients),
        )
        return client, host, tuple(sorted(n.behaviour or "honest" for n in seeds))

    def _insert(self) -> None:
        """A peer that just came online announces itself through a real client."""
        now = self.clock.seconds()
        for _ in range(1000):
            p = self.rng.randrange(self.peers.count)
            host = peer_host(p)
            if self.peers.live(p, now) and host not in self.tracked:
                break
        else:
            return
        client, _, seeds = self._client(host)
        track = self.tracked[host] = Tracked(host, now, self._pushed(), seeds=seeds)
        self.clock.callLater(SETTLE, self._settled, track)
        d = client.announce(APP, host, PEER_PORT)
        d.addBoth(lambda _: client.close())

    def _pushed(self) -> int:
        """Messages of the connections that push or insert."""
        kind = self.net.counters.kind
        return kind("push")[0] + kind("insert")[0]

    def _settled(self, track: Tracked) -> None:
        track.cost = self._pushed() - track.messages

    def _bootstrap(self) -> None:
        client, host, seeds = self._client()
        hostile = sum(b != "honest" for b in seeds)
        record = Bootstrap(self.clock.seconds(), hostile_seeds=hostile, seeds=seeds)
        self.bootstraps.append(record)
        d = Deferred.fromCoroutine(self._cold(client, record))
        d.addBoth(lambda _: client.close())

    async def _cold(self, client: HALPClient, record: Bootstrap) -> None:
        c = self.config
        await client.lookup(SERVERS_LABEL, limit=10)
        record.lookups = 1
        found: set[str] = set()
        for attempt in range(c.max_lookups):
            peers = await client.lookup(APP, limit=c.limit)
            record.lookups += 1
            now = self.clock.seconds()
            if attempt == 0:
                record.empty = not peers
                record.eclipsed = bool(peers) and all(is_sybil(e.host) for e in peers)
            for entry in peers:
                p = self.peers.by_host.get(entry.host)
                if p is not None and self.peers.live(p, now):
                    found.add(entry.host)
            record.live_honest = len(found)
            if len(found) >= c.want:
                record.ok = True
                return

    def _background(self, after: float, until: float) -> None:
        """Hand every honest server what the peers announced meanwhile."""
        c = self.config
        fresh = self.peers.announced(after, until)[-BACKGROUND_TOP:]
        changes = []
        for t, p in fresh:
            host = peer_host(p)
            if host in self.tracked:
                continue  # its announcements are the tracked insert's
            if c.hostile_peers and self.rng.random() < c.hostile_peers:
                (sybil,) = self._sybils(1, int(t))
                changes.append(Change(APP, sybil, sybil.host))
            else:
                changes.append(Change(APP, Entry(int(t), host, PEER_PORT), host))
        if not changes:
            return
        honest = [n for n in self.nodes if n.honest]
        for node in honest:
            via = self.rng.choice(honest)
            node.core.apply_pulled(changes, str(via.address))

    def _flood(self, node: Node) -> None:
        self.floods += 1
        batch = self._sybils(self.config.flood_size, node.core.now())
        node.core.insert([APP], batch)

    # -- running -------------------------------------------------------------

    def schedule(self) -> None:
        c = self.config
        clock, rng = self.clock, self.rng
        end = START + c.window
        if c.inserts:
            # Spread out, so that one insert's messages are its own, and
            # over by two sync rounds before the end, so that pulls can
            # bring it to the servers pushes missed.
            span = max(SETTLE + 10, c.window - 120 - 2 * c.sync_interval) / c.inserts
            for k in range(c.inserts):
                clock.callLater(60 + k * span + rng.uniform(0, span / 4), self._insert)
        for _ in range(c.bootstraps):
            clock.callLater(rng.uniform(60, c.window - 30), self._bootstrap)
        t = START + c.background
        while t < end:
            clock.callLater(t - START, self._background, t - c.background, t)
            t += c.background
        for node in self.nodes:
            if node.behaviour == "flood":
                t = rng.uniform(0, c.flood_interval)
                while t < c.window:
                    clock.callLater(t, self._flood, node)
                    t += c.flood_interval

    def run(self) -> None:
        """Start every server and run the window (plus a minute for stragglers)."""
        for node in self.nodes:
            node.parts.service.startService()
        self.schedule()
        end = START + self.config.window + 60
        began = last = time.monotonic()
        step = 10.0
        while self.clock.seconds() < end:
            self.clock.run_until(min(end, self.clock.seconds() + step))
            now = time.monotonic()
            if self.progress is not None and now - last >= 5:
                last = now
                done = (self.clock.seconds() - START) / (end - START)
                spent = now - began
                self.progress(
                    f"{done:6.1%} of {self.config.window / 60:.0f} simulated minutes, "
                    f"{self.clock.calls_run:,} events, {spent:.0f} s spent, "
                    f"about {spent / max(done, 1e-9) - spent:.0f} s to go"
                )
        for node in self.nodes:
            node.parts.service.stopService()

    # -- results -------------------------------------------------------------

    def results(self) -> dict[str, Any]:
        c = self.config
        hours = (c.window + 60) / 3600
        n = c.servers
        propagation: dict[str, Any] = {}
        tracked = list(self.tracked.values())
        for fraction in FRACTIONS:
            times = sorted(t.reached[fraction][0] for t in tracked if fraction in t.reached)
            msgs = sorted(t.reached[fraction][1] for t in tracked if fraction in t.reached)
            propagation[f"{fraction:.0%}"] = {
                "reached": len(times),
                "median_s": _median(times),
                "max_s": times[-1] if times else None,
                "median_messages": _median(msgs),
                "max_messages": msgs[-1] if msgs else None,
                "median_rounds": None if not times else _median(times) / c.sync_interval,  # type: ignore[operator]
                "max_rounds": None if not times else times[-1] / c.sync_interval,
            }
        boots = self.bootstraps
        done = [b for b in boots if b.lookups]
        ok = [b for b in done if b.ok]
        counters = self.net.counters
        kinds = {
            k: {
                "messages_per_server_hour": v[0] / n / hours,
                "bytes_per_server_hour": v[1] / n / hours,
            }
            for k, v in sorted(counters.kinds.items())
        }
        # What one insert costs: the push and insert messages it caused.
        insert_messages = _median([t.cost for t in tracked if t.cost is not None])
        # The peers' announcements per hour in the window, those on coming
        # online included.
        peer_rate = len(self.peers.announced(START, START + c.window)) / (c.window / 3600)
        return {
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.__dict__.items()},
            "honest_servers": self.honest_count,
            "target_rounds": math.log2(n) + 5,
            "propagation": propagation,
            "tracked_inserts": len(tracked),
            "insert_messages": insert_messages,
            "arrivals": [[round(a - t.at, 3) for a in t.arrivals] for t in tracked],
            # The inserts that did not reach 99% of honest servers in the run.
            "short": [
                {
                    "at": round(t.at - START, 1),
                    "left": round(START + c.window + 60 - t.at, 1),
                    "reached": len(t.servers),
                    "seeds": "+".join(t.seeds),
                    # Servers verify what they are sent: a peer gone offline
                    # is not stored any more.
                    "peer_left_after": self.peers.leaves(self.peers.by_host[t.host], t.at),
                }
                for t in tracked
                if 0.99 not in t.reached
            ],
            "bootstrap": {
                "clients": len(boots),
                "finished": len(done),
                "ok": len(ok),
                # Of every client started: one that never finished counts as failed.
                "ok_fraction": len(ok) / len(boots) if boots else None,
                "eclipsed_fraction": sum(b.eclipsed for b in done) / len(boots) if boots else None,
                "empty_fraction": sum(b.empty for b in done) / len(boots) if boots else None,
                "all_seeds_hostile": sum(b.hostile_seeds == c.client_seeds for b in done),
                "mean_lookups_ok": _mean([b.lookups for b in ok]),
                "lookups_ok": _histogram(b.lookups for b in ok),
                "live_honest_median": _median([b.live_honest for b in done]),
                "failed_by_seeds": _histogram(
                    "+".join(b.seeds) for b in done if not b.ok
                ),
            },
            "cost": {
                "messages_per_server_hour": counters.messages / n / hours,
                "bytes_per_server_hour": counters.bytes / n / hours,
                "connections_per_server_hour": counters.connections / n / hours,
                "by_kind": kinds,
                "probes_per_server_hour": self.probes / n / hours,
                "estimated_peer_announcements_per_hour": peer_rate,
                "estimated_messages_per_server_hour_with_all_announcements": (
                    None if insert_messages is None else
                    counters.messages / n / hours + (peer_rate + n) * insert_messages / n
                ),
            },
            "events": self.clock.calls_run,
            "floods": self.floods,
        }


def _median(values: list[float] | list[int]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _histogram(values: Iterable[int | str]) -> dict[str, int]:
    """How many times each value occurs, in the values' order."""
    counts: dict[int | str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return {str(k): n for k, n in sorted(counts.items(), key=lambda kv: (str(type(kv[0])), kv[0]))}


def simulate(config: Config, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build and run one world; its results."""
    world = World(config, progress)
    world.build()
    world.run()
    return world.results()
