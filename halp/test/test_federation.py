"""
Tests for :mod:`halp.federation`: HALP servers that list themselves in the
``halp`` label, learn and test each other, push changes and pull the change
feed.

Every server here is a real one (a :class:`~halp.core.HALPCore` over a
:class:`~halp.store.memory.MemoryStore`, answered by a
:class:`~halp.server.HALPServerFactory`) on a
:class:`~halp.testing.FakeNetwork`; a few misbehaving peers are scripted.
Time only moves with the network's clock.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from halp.client.servers import (
    BACKOFF_BASE,
    BAN_TIME,
    FORGET_AFTER,
    FORGET_FAILURES,
    INITIAL_QUALITY,
    PINNED_BAN_TIME,
    QUALITY_ANSWER,
    QUALITY_FAILURE,
    QUALITY_MISBEHAVED,
    ServerAddress,
    ServerRecord,
)
from halp.core import REPLICATION_SKEW, HALPCore, PeerStatus, Stored
from halp.federation import (
    BUSY_DELAY,
    START_RETRY,
    CURSORS_KEY,
    SUMMARY_INTERVAL,
    MAX_OUTBOX_MESSAGES,
    MAX_PULL_PAGES,
    PEERS_KEY,
    SERVERS_LABEL,
    Federation,
)
from halp.error import StoreError
from halp.model import Change, ChangePage, Entry, Limits, Merged
from halp.server import HALPServerFactory
from halp.store.memory import MemoryStore
from halp.testing import FakeNetwork

#: A realistic time to start at: entries are stamped by the clock.
START = 1_800_000_000
#: A label clients insert into.
LABEL = "myapp"
#: The address of the client that inserts.
CLIENT = "198.51.100.1"
#: An interval that never comes up in a test, for timers a test keeps still.
QUIET = 10**7


def address(n: int, port: int = 7100) -> ServerAddress:
    """The ``n``-th test server."""
    return ServerAddress(f"192.0.2.{n}", port)


def peer_entry(n: int, timestamp: int) -> Entry:
    """A peer (not a server) that clients register under :data:`LABEL`."""
    return Entry(timestamp, f"198.51.100.{n}", 6881)


class RecordingStore(MemoryStore):
    """A memory store that records every page of its change feed it serves."""

    def __init__(self) -> None:
        super().__init__()
        #: ``(cursor asked for, limit, page served)`` for every ``changes``.
        self.feeds: list[tuple[str, int, ChangePage]] = []

    def changes(self, cursor: str, limit: int, since: int) -> Deferred[ChangePage]:
        def record(page: ChangePage) -> ChangePage:
            self.feeds.append((cursor, limit, page))
            return page

        return super().changes(cursor, limit, since).addCallback(record)


@dataclass
class Node:
    """One HALP server of a test network, and its federation if it has one."""

    address: ServerAddress
    store: RecordingStore
    core: HALPCore
    factory: HALPServerFactory
    federation: Federation | None = field(default=None)

    @property
    def fed(self) -> Federation:
        assert self.federation is not None, f"{self.address} does not federate"
        return self.federation

    def stat(self, name: str) -> int:
        return self.core.stats[name]


# -- scripted peers ------------------------------------------------------------

#: A ``hello`` answer of a HALP/1 server that federates.
GOOD_HELLO = b"protocol HALP/1\nnode scripted\nfeatures changes push stats peers\nok\n"


class ScriptedPeer(Protocol):
    """
    A peer that answers each request with what its factory holds for the
    request's command word (a ``push`` once its block ends).
    """

    def __init__(self, factory: ScriptedPeerFactory) -> None:
        self.factory = factory
        self._buffer = b""
        self._in_block = False

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line(line)

    def _line(self, line: bytes) -> None:
        if self._in_block:
            if not line:
                self._in_block = False
                self._answer("push")
            return
        command = line.split(b" ", 1)[0].decode("ascii", "replace")
        self.factory.requests.append(command)
        if command == "push":
            self._in_block = True
            return
        self._answer(command)

    def _answer(self, command: str) -> None:
        if command in self.factory.hold:
            self.factory.held.append((self, command))
            return
        self.answer(command)

    def answer(self, command: str) -> None:
        assert self.transport is not None
        self.transport.write(
            self.factory.answers.get(command, b"error unknown-command unknown command\n")
        )


class ScriptedPeerFactory(Factory):
    """
    :ivar answers: command word -> the bytes answered to it.
    :ivar hold: command words whose answers wait for :meth:`release`.
    :ivar requests: the command word of every request received.
    """

    def __init__(self, answers: dict[str, bytes], hold: Sequence[str] = ()) -> None:
        self.answers = answers
        self.hold = set(hold)
        self.held: list[tuple[ScriptedPeer, str]] = []
        self.requests: list[str] = []

    def release(self) -> None:
        """Answer what waits, and from now on answer at once."""
        self.hold.clear()
        held, self.held = self.held, []
        for proto, command in held:
            proto.answer(command)

    def buildProtocol(self, addr: Any) -> Protocol:
        return ScriptedPeer(self)


# -- the harness -----------------------------------------------------------------


class FederationTestCase(SynchronousTestCase):
    """HALP servers on one fake network, started at :data:`START`."""

    def setUp(self) -> None:
        self.network = FakeNetwork()
        self.clock = self.network.clock
        self.clock.advance(START)
        #: ``(from, to)`` for every connection a federation attempted.
        self.dialled: list[tuple[ServerAddress, ServerAddress]] = []

    def now(self) -> int:
        return int(self.clock.seconds())

    def server(self, n: int, limits: Limits = Limits(), *, listen: bool = True) -> Node:
        """A HALP server at :func:`address` ``(n)``, without federation yet."""
        store = RecordingStore()
        core = HALPCore(store, self.clock, limits, node_id=f"node-{n}")
        factory = HALPServerFactory(core, self.clock, log_requests=False)
        node = Node(address(n), store, core, factory)
        if listen:
            self.network.listen(node.address, factory)
        return node

    def federate(
        self,
        node: Node,
        *peers: ServerAddress,
        public: bool = True,
        start: bool = True,
        **options: Any,
    ) -> Federation:
        """
        Give ``node`` a federation pinning ``peers``, announcing its own
        address unless ``public`` is false.  Timers not named in
        ``options`` are kept still.
        """
        options.setdefault("sync_interval", QUIET)
        options.setdefault("test_interval", QUIET)
        options.setdefault("rng", random.Random(str(node.address)))
        connect = self.network.endpoint_from(node.address)

        def endpoint(target: ServerAddress) -> IStreamClientEndpoint:
            self.dialled.append((node.address, target))
            return connect(target)

        fed = Federation(
            node.core,
            self.clock,
            peers=peers,
            public=node.address if public else None,
            endpoint=endpoint,
            **options,
        )
        node.federation = fed
        if start:
            self.start(fed)
        return fed

    def start(self, fed: Federation) -> None:
        fed.startService()
        self.addCleanup(self.stop, fed)

    def stop(self, fed: Federation) -> None:
        if fed.running:
            self.successResultOf(fed.stopService())

    def insert(self, node: Node, *entries: Entry, label: str = LABEL) -> None:
        """A client inserts ``entries`` at ``node``; each must be stored."""
        outcomes = self.successResultOf(node.core.insert([label], list(entries), CLIENT))
        self.assertEqual([type(o) for o in outcomes], [Stored] * len(entries), outcomes)

    def announce(self, node: Node, *servers: ServerAddress, timestamp: int | None = None) -> None:
        """A client lists ``servers`` in the ``halp`` label of ``node``."""
        when = self.now() if timestamp is None else timestamp
        self.insert(
            node, *(Entry(when, s.host, s.port) for s in servers), label=SERVERS_LABEL
        )

    def has(self, node: Node, entry: Entry) -> bool:
        return entry in self.entries(node)

    def entries(self, node: Node, label: str = LABEL) -> list[Entry]:
        return self.successResultOf(node.store.get(label, 0, 10_000, 0))

    def stats(self, nodes: Sequence[Node], name: str) -> list[int]:
        return [n.stat(name) for n in nodes]

    def states(self, node: Node) -> dict[str, str]:
        return {p.address: p.state for p in node.fed.peers()}

    def record(self, node: Node, peer: ServerAddress) -> ServerRecord:
        found = node.fed.table.get(peer)
        assert found is not None, f"{peer} is not in the table of {node.address}"
        return found

    def contacts(self, peer: ServerAddress) -> int:
        """Connections attempted to ``peer`` so far."""
        return self.network.attempts.count(peer)

    def sync_until(self, node: Node, done: Callable[[], bool], rounds: int = 30) -> None:
        """Let ``node`` pull, one peer at a time, until ``done()`` holds."""
        for _ in range(rounds):
            if done():
                return
            self.successResultOf(self.sync(node))
        self.assertTrue(done(), f"not done after {rounds} pulls")

    def sync(self, node: Node) -> Deferred[None]:
        d = node.fed.sync()
        self.network.flush()
        return d


# -- push ----------------------------------------------------------------------


class PushTests(FederationTestCase):
    def chain(self, length: int, **options: Any) -> list[Node]:
        """Servers 1..length, each pinning its neighbours, all started."""
        nodes = [self.server(i) for i in range(1, length + 1)]
        for i, node in enumerate(nodes):
            neighbours = [nodes[j].address for j in (i - 1, i + 1) if 0 <= j < length]
            self.federate(node, *neighbours, **options)
        self.network.flush()
        return nodes

    def deltas(self, nodes: Sequence[Node], name: str, before: list[int]) -> list[int]:
        return [now - then for now, then in zip(self.stats(nodes, name), before)]

    def test_chain(self) -> None:
        """
        Along a chain, one insert is pushed once by every server but the
        last, each time away from the server it came from; every server
        ends up with the entry, with its source and the server it came
        through.
        """
        nodes = self.chain(5)
        sent = self.stats(nodes, "push-sent")
        received = self.stats(nodes, "push-received")
        replicated = self.stats(nodes, "entries-replicated")
        entry = peer_entry(7, self.now())
        self.insert(nodes[0], entry)
        self.network.flush()
        self.assertEqual(self.deltas(nodes, "push-sent", sent), [1, 1, 1, 1, 0])
        self.assertEqual(self.deltas(nodes, "push-received", received), [0, 1, 1, 1, 1])
        for node in nodes:
            self.assertEqual(self.entries(node), [entry])
        for i, node in enumerate(nodes[1:], 1):
            page = self.successResultOf(node.store.changes("0", 1000, 0))
            (change,) = [c for c in page.changes if c.label == LABEL]
            self.assertEqual((change.source, change.via), (CLIENT, str(nodes[i - 1].address)))
        self.assertEqual(self.deltas(nodes, "entries-replicated", replicated), [0, 1, 1, 1, 1])
        self.assertEqual(self.stats(nodes, "push-failed"), [0] * 5)

    def test_same_entry_again_is_not_pushed(self) -> None:
        """
        Inserting what a server has already (the same time) changes
        nothing and pushes nothing; a newer time is pushed all the way
        again.
        """
        nodes = self.chain(4)
        entry = peer_entry(7, self.now())
        self.insert(nodes[1], entry)
        self.network.flush()
        sent = self.stats(nodes, "push-sent")
        received = self.stats(nodes, "push-received")
        for node in nodes:
            self.insert(node, entry)
        self.network.flush()
        self.assertEqual(self.stats(nodes, "push-sent"), sent)
        self.assertEqual(self.stats(nodes, "push-received"), received)

        self.network.advance(10)
        newer = peer_entry(7, self.now())
        self.insert(nodes[3], newer)
        self.network.flush()
        self.assertEqual(self.deltas(nodes, "push-sent", sent), [0, 1, 1, 1])
        for node in nodes:
            self.assertEqual(self.entries(node), [newer])

    def test_ring(self) -> None:
        """
        Around a ring with fanout 2, the origin pushes twice and every
        other server once, whichever way the entry reached it first.
        """
        size = 6
        nodes = [self.server(i) for i in range(1, size + 1)]
        for i, node in enumerate(nodes):
            left, right = nodes[i - 1], nodes[(i + 1) % size]
            self.federate(node, left.address, right.address, fanout=2)
        self.network.flush()
        sent = self.stats(nodes, "push-sent")
        received = self.stats(nodes, "push-received")
        entry = peer_entry(7, self.now())
        self.insert(nodes[0], entry)
        self.network.flush()
        self.assertEqual(self.deltas(nodes, "push-sent", sent), [2, 1, 1, 1, 1, 1])
        pushes = self.deltas(nodes, "push-received", received)
        self.assertEqual(sum(pushes), size + 1)
        self.assertEqual(pushes[0], 0)
        for node in nodes:
            self.assertEqual(self.entries(node), [entry])

    def test_full_mesh(self) -> None:
        """
        In a full mesh with fanout 2 no server pushes more than twice and
        every push is answered; what the pushes missed, pulls bring, and
        pulled entries are not pushed again.
        """
        size = 6
        fanout = 2
        nodes = [self.server(i) for i in range(1, size + 1)]
        for node in nodes:
            others = [n.address for n in nodes if n is not node]
            self.federate(node, *others, fanout=fanout)
        self.network.flush()
        sent = self.stats(nodes, "push-sent")
        received = self.stats(nodes, "push-received")
        entry = peer_entry(7, self.now())
        self.insert(nodes[2], entry)
        self.network.flush()
        pushed = self.deltas(nodes, "push-sent", sent)
        self.assertEqual(pushed[2], fanout)
        for count in pushed:
            self.assertLessEqual(count, fanout)
        self.assertEqual(sum(self.deltas(nodes, "push-received", received)), sum(pushed))
        # Only servers that the entry changed pushed it on.
        for node, count in zip(nodes, pushed):
            if count:
                self.assertEqual(self.entries(node), [entry])

        after_push = self.stats(nodes, "push-sent")
        for node in nodes:
            self.sync_until(node, partial(self.has, node, entry))
        self.assertEqual(self.stats(nodes, "push-sent"), after_push)

        # Again, with nothing new: nobody pushes.
        for node in nodes:
            self.insert(node, entry)
        self.network.flush()
        self.assertEqual(self.stats(nodes, "push-sent"), after_push)

    def test_not_pushed_back(self) -> None:
        """
        A pushed change is not pushed back to the server that pushed it,
        whether that server named itself (public) or is known by its host.
        """
        for public in (True, False):
            self.network = FakeNetwork(self.clock)
            a, b = self.server(1), self.server(2)
            self.federate(a, b.address, public=public)
            self.federate(b, a.address, public=public)
            self.network.flush()
            sent = self.stats([a, b], "push-sent")
            entry = peer_entry(7, self.now())
            self.insert(a, entry)
            self.network.flush()
            self.assertEqual(self.deltas([a, b], "push-sent", sent), [1, 0], public)
            self.assertEqual(self.entries(b), [entry], public)

    def test_a_peer_whose_backoff_ended_is_still_listed_as_failing(self) -> None:
        a = self.server(1)
        self.federate(a, address(2), public=False)
        self.insert(a, peer_entry(7, self.now()))
        self.network.flush()
        self.assertEqual(self.states(a), {str(address(2)): "backoff"})
        self.network.advance(61)
        self.assertEqual(self.states(a), {str(address(2)): "backoff"})

    def test_pull_from_a_peer_with_a_larger_page_asks_for_its_own_size(self) -> None:
        a, b = self.server(1, Limits(max_gossip_entries=3)), self.server(
            2, Limits(max_gossip_entries=5)
        )
        self.federate(a, b.address, public=False)
        self.insert(b, *(peer_entry(10 + i, self.now()) for i in range(5)))
        self.successResultOf(self.sync(a))
        self.assertEqual(len(self.entries(a)), 5)
        self.assertEqual(self.states(a), {str(b.address): "trusted"})

    def test_push_counters(self) -> None:
        """push-sent, entries-pushed, push-received and entries-replicated."""
        a, b = self.server(1), self.server(2)
        self.federate(a, b.address, public=False)
        self.network.flush()
        self.assertEqual(a.stat("push-sent"), 0)
        self.insert(a, peer_entry(1, self.now()), peer_entry(2, self.now()))
        self.network.flush()
        self.assertEqual((a.stat("push-sent"), a.stat("entries-pushed")), (1, 2))
        self.assertEqual((b.stat("push-received"), b.stat("entries-replicated")), (1, 2))
        self.assertEqual(len(self.entries(b)), 2)

    def test_changes_wait_for_the_push_on_its_way(self) -> None:
        """
        While a push to a peer waits for its answer, further changes for
        that peer wait, and go together in the next push.
        """
        a = self.server(1)
        slow = ScriptedPeerFactory({"push": b"ok 1 changed 0 unchanged 0 refused\n"}, hold=["push"])
        self.network.listen(address(2), slow)
        self.federate(a, address(2), public=False)
        self.insert(a, peer_entry(1, self.now()))
        self.network.flush()
        for i in range(2, 5):
            self.insert(a, peer_entry(i, self.now()))
            self.network.flush()
        self.assertEqual((slow.requests, a.stat("push-sent")), (["push"], 1))
        slow.release()
        self.network.flush()
        self.assertEqual(slow.requests, ["push", "push"])
        self.assertEqual((a.stat("push-sent"), a.stat("entries-pushed")), (2, 4))
        self.assertEqual(self.contacts(address(2)), 2)

    def test_waiting_changes_are_bounded(self) -> None:
        """
        At most MAX_OUTBOX_MESSAGES pushes' worth of changes wait for one
        peer; the oldest are dropped (a pull brings them).
        """
        limits = Limits(max_gossip_entries=2)
        a = self.server(1, limits)
        slow = ScriptedPeerFactory({"push": b"ok 0 changed 0 unchanged 0 refused\n"}, hold=["push"])
        self.network.listen(address(2), slow)
        self.federate(a, address(2), public=False)
        self.insert(a, peer_entry(1, self.now()))
        self.network.flush()
        waiting = MAX_OUTBOX_MESSAGES * limits.max_gossip_entries
        for i in range(2, waiting + 7):
            self.insert(a, peer_entry(i, self.now()))
        slow.release()
        self.network.flush()
        self.assertEqual(a.stat("push-sent"), 1 + MAX_OUTBOX_MESSAGES)
        self.assertEqual(a.stat("entries-pushed"), 1 + waiting)

    def test_throttled_push(self) -> None:
        """
        A peer that answers ``error busy`` is neither failed nor banned:
        the push goes again later, with what waited meanwhile.
        """
        limits = Limits(max_gossip_entries=2)
        a = self.server(1, limits)
        b = self.server(2, limits)
        b.core = HALPCore(b.store, self.clock, limits, push_rate=0.1, push_burst=1)
        self.network.listen(b.address, HALPServerFactory(b.core, self.clock, log_requests=False))
        self.federate(a, b.address, public=False)
        self.insert(a, peer_entry(1, self.now()), peer_entry(2, self.now()))
        self.network.flush()
        self.insert(a, peer_entry(3, self.now()))
        self.network.flush()
        self.assertEqual(b.stat("push-throttled"), 1)
        self.assertEqual(len(self.entries(b)), 2)
        self.assertEqual((a.stat("push-sent"), a.stat("push-failed")), (2, 1))
        self.assertEqual(
            a.fed.peers(),
            [PeerStatus(str(b.address), "trusted", INITIAL_QUALITY + QUALITY_ANSWER, True)],
        )
        self.insert(a, peer_entry(4, self.now()))  # waits for the retry
        self.network.flush()
        self.assertEqual(a.stat("push-sent"), 2)
        self.network.advance(BUSY_DELAY)
        self.assertEqual(a.stat("push-sent"), 3)
        self.assertEqual(len(self.entries(b)), 4)
        self.assertEqual(a.stat("peers-banned"), 0)

    def test_large_insert_is_pushed_in_batches(self) -> None:
        """A push carries at most ``max_gossip_entries`` changes."""
        limits = Limits(max_gossip_entries=3)
        a, b = self.server(1, limits), self.server(2, limits)
        self.federate(a, b.address, public=False)
        self.insert(a, *(peer_entry(i, self.now()) for i in range(1, 8)))
        self.network.flush()
        self.assertEqual(a.stat("push-sent"), 3)
        self.assertEqual(a.stat("entries-pushed"), 7)
        self.assertEqual(b.stat("push-received"), 3)
        self.assertEqual(len(self.entries(b)), 7)

    def test_push_delay_gathers_changes(self) -> None:
        """
        With ``push_delay``, the first change for a peer waits that long,
        counted from that change, and what comes meanwhile goes in the same
        push; the next change waits again.  (Without it a change is pushed
        at once: :meth:`test_push_counters`.)
        """
        a, b = self.server(1), self.server(2)
        self.federate(a, b.address, public=False, push_delay=1)
        self.network.flush()
        self.insert(a, peer_entry(1, self.now()))
        self.network.advance(0.5)
        self.insert(a, peer_entry(2, self.now()))
        self.network.advance(0.25)
        self.assertEqual((a.stat("push-sent"), self.contacts(b.address)), (0, 0))
        self.network.advance(0.25)
        self.assertEqual((a.stat("push-sent"), a.stat("entries-pushed")), (1, 2))
        self.assertEqual((b.stat("push-received"), b.stat("entries-replicated")), (1, 2))
        self.assertEqual(len(self.entries(b)), 2)

        self.insert(a, peer_entry(3, self.now()))
        self.network.advance(0.75)
        self.assertEqual(a.stat("push-sent"), 1)
        self.network.advance(0.25)
        self.assertEqual((a.stat("push-sent"), a.stat("entries-pushed")), (2, 3))
        self.assertEqual(b.stat("push-received"), 2)
        self.assertEqual(self.contacts(b.address), 2)

    def test_stop_during_the_push_delay(self) -> None:
        """A push still waiting when the federation stops is not sent, and no call is left."""
        a, b = self.server(1), self.server(2)
        fed = self.federate(a, b.address, public=False, push_delay=1)
        self.network.flush()
        self.insert(a, peer_entry(1, self.now()))
        self.network.advance(0.5)
        self.assertTrue(self.clock.getDelayedCalls())
        self.successResultOf(fed.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.network.advance(10)
        self.assertEqual(
            (a.stat("push-sent"), self.contacts(b.address), b.stat("push-received")), (0, 0, 0)
        )

    def test_restarted_after_a_stop_during_the_push_delay(self) -> None:
        """
        A peer whose push was waiting when the federation stopped is pushed
        to again once it restarts: it was left marked as being pushed to,
        and no change reached it any more.
        """
        a, b = self.server(1), self.server(2)
        fed = self.federate(a, b.address, public=False, push_delay=1)
        self.network.flush()
        self.insert(a, peer_entry(1, self.now()))
        self.network.advance(0.5)
        self.successResultOf(fed.stopService())
        fed.startService()
        self.network.flush()
        self.insert(a, peer_entry(2, self.now()))
        self.network.advance(1)
        self.network.flush()
        self.assertEqual((a.stat("push-sent"), b.stat("push-received")), (1, 1))


# -- pull ----------------------------------------------------------------------


class SlowStore(RecordingStore):
    """Merges take ``delay`` seconds of the test clock; the first get_state may fail."""

    def __init__(self, clock: Clock, delay: float = 0, fail_state: int = 0) -> None:
        super().__init__()
        self.clock = clock
        self.delay = delay
        self.fail_state = fail_state

    def merge(
        self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        result = super().merge(changes, max_entries, max_per_group)
        if not self.delay:
            return result
        later: Deferred[list[Merged]] = Deferred()
        self.clock.callLater(self.delay, result.chainDeferred, later)
        return later

    def get_state(self, key: str) -> Deferred[str | None]:
        if self.fail_state:
            self.fail_state -= 1
            return fail(StoreError("database is locked"))
        return super().get_state(key)


class OwnStoreTests(FederationTestCase):
    """This server's store being slow or failing is not its peers' fault."""

    def node_on(self, store: SlowStore) -> Node:
        core = HALPCore(store, self.clock, Limits(), node_id="node-1")
        factory = HALPServerFactory(core, self.clock, log_requests=False)
        node = Node(address(1), store, core, factory)
        self.network.listen(node.address, factory)
        return node

    def test_a_slow_merge_does_not_time_out_the_peer(self) -> None:
        a = self.node_on(SlowStore(self.clock, delay=30))
        b = self.server(2)
        self.insert(b, peer_entry(1, self.now()), label=SERVERS_LABEL)
        self.federate(a, b.address, public=False, timeout=10)
        d = self.sync(a)
        self.network.advance(30)
        self.successResultOf(d)
        self.assertEqual(self.states(a)[str(b.address)], "trusted")
        self.assertEqual((a.stat("pull-failed"), a.stat("entries-pulled")), (0, 1))
        # The halp entry that came in was learned.
        self.assertIn(ServerAddress("198.51.100.1", 6881), a.fed.table)

    def test_a_failed_start_is_tried_again(self) -> None:
        a = self.node_on(SlowStore(self.clock, fail_state=1))
        b = self.server(2)
        fed = self.federate(a, b.address, public=True)
        self.flushLoggedErrors(StoreError)
        self.assertEqual(self.successResultOf(a.store.get(SERVERS_LABEL, 0, 10, 0)), [])
        self.network.advance(START_RETRY)
        self.assertEqual(
            [e.port for e in self.successResultOf(a.store.get(SERVERS_LABEL, 0, 10, 0))], [7100]
        )
        self.assertTrue(fed.running)


class PullTests(FederationTestCase):
    def test_pulled_changes_are_not_pushed_on(self) -> None:
        """
        What a pull brings is stored but not pushed to other peers; the
        servers it lists are learned all the same.
        """
        a, b, c = self.server(1), self.server(2), self.server(3)
        self.federate(a, b.address, c.address, public=False)
        self.network.flush()
        entries = [peer_entry(i, self.now()) for i in range(1, 4)]
        self.insert(b, *entries)
        self.announce(b, address(9))
        self.sync_until(a, lambda: b.stat("changes-served") > 0)
        self.assertEqual(set(self.entries(a)), set(entries))
        self.assertEqual(a.stat("entries-pulled"), 4)
        self.assertEqual(a.stat("push-sent"), 0)
        self.assertEqual(c.stat("push-received"), 0)
        self.assertEqual(self.states(a)[str(address(9))], "untested")

    def test_pages(self) -> None:
        """
        A feed longer than a page is pulled page after page on one
        connection, in one sync; the cursor is kept, and the next sync asks
        only for what came after it.
        """
        limits = Limits(max_gossip_entries=3)
        a, b = self.server(1, limits), self.server(2, limits)
        self.federate(a, b.address, public=False, sync_interval=250)
        for i in range(1, 9):
            self.insert(b, peer_entry(i, self.now()))
        self.network.advance(300)  # one sync: each wait is 200 to 300 s
        self.assertEqual(self.contacts(b.address), 1)
        self.assertEqual([(c, n) for c, n, _ in b.store.feeds][0], ("0", 3))
        self.assertEqual([len(p.changes) for _, _, p in b.store.feeds], [3, 3, 2])
        self.assertEqual([p.more for _, _, p in b.store.feeds], [True, True, False])
        # Each page asks from where the previous one ended.
        cursors = [c for c, _, _ in b.store.feeds]
        self.assertEqual(cursors[1:], [p.cursor for _, _, p in b.store.feeds[:-1]])
        self.assertEqual((a.stat("pull-sent"), b.stat("changes-served")), (3, 3))
        self.assertEqual(a.stat("entries-pulled"), 8)
        self.assertEqual(len(self.entries(a)), 8)
        last = b.store.feeds[-1][2].cursor
        saved = self.successResultOf(a.store.get_state(CURSORS_KEY))
        self.assertEqual(json.loads(saved or "{}"), {str(b.address): last})

        self.insert(b, peer_entry(20, self.now()), peer_entry(21, self.now()))
        del b.store.feeds[:]
        self.network.advance(300)
        self.assertEqual([(c, len(p.changes)) for c, _, p in b.store.feeds], [(last, 2)])
        self.assertEqual(a.stat("entries-pulled"), 10)
        self.assertEqual(a.stat("pull-failed"), 0)

    def test_at_most_max_pull_pages(self) -> None:
        """One sync pulls MAX_PULL_PAGES pages at most; the next one goes on."""
        limits = Limits(max_gossip_entries=2)
        a, b = self.server(1, limits), self.server(2, limits)
        self.federate(a, b.address, public=False)
        total = 2 * MAX_PULL_PAGES + 5
        for i in range(1, total + 1):
            self.insert(b, peer_entry(i, self.now()))
        self.successResultOf(self.sync(a))
        self.assertEqual(len(b.store.feeds), MAX_PULL_PAGES)
        self.assertEqual(len(self.entries(a)), 2 * MAX_PULL_PAGES)
        self.assertTrue(b.store.feeds[-1][2].more)
        last = b.store.feeds[-1][2].cursor
        self.successResultOf(self.sync(a))
        self.assertEqual(b.store.feeds[MAX_PULL_PAGES][0], last)
        self.assertEqual(len(b.store.feeds), MAX_PULL_PAGES + 3)
        self.assertEqual(len(self.entries(a)), total)
        self.assertEqual(self.contacts(b.address), 2)

    def test_cursor_survives_a_restart(self) -> None:
        """
        The peer table and the cursors are saved in the store; a new
        federation over the same store goes on from the saved cursor.
        """
        a, b = self.server(1), self.server(2)
        self.federate(a, b.address, public=False)
        for i in range(1, 4):
            self.insert(b, peer_entry(i, self.now()))
        self.successResultOf(self.sync(a))
        last = b.store.feeds[-1][2].cursor
        quality = self.record(a, b.address).quality
        self.assertEqual(quality, INITIAL_QUALITY + QUALITY_ANSWER + 3)
        self.stop(a.fed)
        peers = json.loads(self.successResultOf(a.store.get_state(PEERS_KEY)) or "{}")
        self.assertEqual([r["port"] for r in peers["servers"]], [b.address.port])
        self.assertEqual(peers["servers"][0]["quality"], quality)

        # The server restarts: a new core and federation over the same store.
        self.insert(b, peer_entry(4, self.now()))
        core = HALPCore(a.store, self.clock, node_id="node-1-again")
        again = Node(a.address, a.store, core, HALPServerFactory(core, self.clock))
        self.federate(again, b.address, public=False)
        self.assertEqual(self.record(again, b.address).quality, quality)
        self.successResultOf(self.sync(again))
        self.assertEqual(b.store.feeds[-1][0], last)
        self.assertEqual(len(b.store.feeds[-1][2].changes), 1)
        self.assertEqual(again.stat("entries-pulled"), 1)

    def test_same_federation_restarted(self) -> None:
        """Stopping and starting the same federation keeps its cursors too."""
        a, b = self.server(1), self.server(2)
        fed = self.federate(a, b.address, public=False)
        self.insert(b, peer_entry(1, self.now()))
        self.successResultOf(self.sync(a))
        last = b.store.feeds[-1][2].cursor
        self.stop(fed)
        fed.startService()
        self.successResultOf(self.sync(a))
        self.assertEqual(b.store.feeds[-1][0], last)
        self.assertEqual(a.stat("pull-sent"), 2)

    def test_pulled_entries_are_clamped(self) -> None:
        """
        Pulled entries are merged like inserts: an expired one is refused
        (``entries-rejected``), one from the future is stored as now; the
        peer is not blamed.
        """
        a = self.server(1)
        now = self.now()
        lines = (
            b"myapp %d 198.51.100.1 1 -\n" % (now - 2 * 86_400)
            + b"myapp %d 198.51.100.2 1 203.0.113.7\n" % (now + 1000)
            + b"ok 2 next x:2 end\n"
        )
        self.network.listen(address(2), ScriptedPeerFactory({"changes": lines}))
        self.federate(a, address(2), public=False)
        self.successResultOf(self.sync(a))
        self.assertEqual(self.entries(a), [Entry(now + REPLICATION_SKEW, "198.51.100.2", 1)])
        self.assertEqual((a.stat("entries-pulled"), a.stat("entries-rejected")), (1, 1))
        self.assertEqual(a.stat("pull-failed"), 0)
        self.assertEqual(self.states(a), {str(address(2)): "trusted"})
        page = self.successResultOf(a.store.changes("0", 10, 0))
        self.assertEqual(
            [(c.source, c.via) for c in page.changes], [("203.0.113.7", str(address(2)))]
        )
        saved = json.loads(self.successResultOf(a.store.get_state(CURSORS_KEY)) or "{}")
        self.assertEqual(saved, {str(address(2)): "x:2"})

    def test_nothing_to_pull_from(self) -> None:
        """Without a trusted peer a sync does nothing."""
        a = self.server(1)
        self.federate(a, public=False)
        self.announce(a, address(2))
        self.successResultOf(self.sync(a))
        self.assertEqual(self.network.attempts, [])
        self.assertEqual(a.stat("pull-sent"), 0)


# -- learning and testing servers -------------------------------------------------


class LearningTests(FederationTestCase):
    def test_learned_server_is_tested_before_use(self) -> None:
        """
        A server named by a new ``halp`` entry is untested: nothing is
        pushed to it or pulled from it until it answers ``hello``.
        """
        a, b = self.server(1), self.server(2)
        self.federate(a, test_interval=5)
        self.network.flush()
        self.announce(a, b.address)
        self.assertEqual(a.fed.peers(), [PeerStatus(str(b.address), "untested", INITIAL_QUALITY, False)])
        self.assertEqual(a.stat("peers-learned"), 1)
        self.insert(a, peer_entry(1, self.now()))
        self.successResultOf(self.sync(a))
        self.assertEqual(self.network.attempts, [])

        self.network.advance(5)
        self.assertEqual(self.network.attempts, [b.address])
        self.assertEqual(self.states(a), {str(b.address): "trusted"})
        self.assertEqual((a.stat("peer-tests"), a.stat("peer-tests-failed")), (1, 0))
        self.assertEqual(self.record(a, b.address).quality, INITIAL_QUALITY + QUALITY_ANSWER)

        entry = peer_entry(2, self.now())
        self.insert(a, entry)
        self.network.flush()
        self.assertIn(entry, self.entries(b))
        self.successResultOf(self.sync(a))
        self.assertEqual(b.stat("changes-served"), 1)

    def test_one_test_per_interval(self) -> None:
        """Servers learned together are tested one at a time, newest first."""
        a = self.server(1)
        others = [self.server(i) for i in (2, 3, 4)]
        self.federate(a, test_interval=5)
        now = self.now()
        for i, other in enumerate(others):
            self.announce(a, other.address, timestamp=now - 10 * i)
        self.assertEqual(set(self.states(a).values()), {"untested"})
        for tested in range(1, 4):
            self.network.advance(5)
            self.assertEqual(self.network.attempts, [o.address for o in others[:tested]])
            self.assertEqual(a.stat("peer-tests"), tested)
        self.network.advance(5)
        self.assertEqual(a.stat("peer-tests"), 3)
        self.assertEqual(set(self.states(a).values()), {"trusted"})

    def test_one_test_at_a_time_even_while_a_server_hangs(self) -> None:
        a, c = self.server(1), self.server(3)
        self.federate(a, test_interval=5, timeout=8)
        self.network.blackhole(address(2))
        self.announce(a, address(2))
        self.announce(a, c.address, timestamp=self.now() - 10)
        self.network.advance(5)
        self.assertEqual(self.network.attempts, [address(2)])
        self.network.advance(5)  # the hello to 2 still hangs: no second test
        self.assertEqual(self.network.attempts, [address(2)])
        self.assertEqual(self.states(a)[str(c.address)], "untested")
        self.network.advance(5)  # the hello to 2 timed out at 13 s; 3 is tested at 15 s
        self.assertEqual(self.states(a)[str(address(2))], "backoff")
        self.assertEqual(a.stat("peer-tests-failed"), 1)
        self.assertEqual(self.network.attempts, [address(2), c.address])
        self.assertEqual(self.states(a)[str(c.address)], "trusted")
        self.assertEqual(self.contacts(address(2)), 1)

    def scripted(self, n: int, hello: bytes) -> ScriptedPeerFactory:
        factory = ScriptedPeerFactory({"hello": hello})
        self.network.listen(address(n), factory)
        return factory

    def assert_banned_by_test(self, hello: bytes) -> None:
        a = self.server(1)
        self.federate(a, test_interval=5)
        self.scripted(2, hello)
        self.announce(a, address(2))
        self.network.advance(5)
        self.assertEqual(self.contacts(address(2)), 1)
        self.assertEqual(a.fed.peers(), [PeerStatus(str(address(2)), "banned", 0, False)])
        self.assertEqual(
            (a.stat("peer-tests"), a.stat("peer-tests-failed"), a.stat("peers-banned")),
            (1, 1, 1),
        )
        self.assertNotIn(address(2), a.fed.table)
        self.assertEqual(
            a.fed.table.banned(self.now()), {address(2): self.now() + BAN_TIME}
        )

        # Named again while banned: not learned, not contacted.
        self.network.advance(60)
        self.announce(a, address(2))
        self.network.advance(5)
        self.assertEqual(self.states(a), {str(address(2)): "banned"})
        self.assertEqual(a.stat("peers-learned"), 1)
        self.assertEqual(self.contacts(address(2)), 1)

        # Once the ban is over, it is learned (and tested) again.
        self.network.advance(BAN_TIME)
        self.announce(a, address(2))
        self.assertEqual(self.states(a), {str(address(2)): "untested"})
        self.assertEqual(a.stat("peers-learned"), 2)

    def test_another_protocol_is_banned(self) -> None:
        self.assert_banned_by_test(GOOD_HELLO.replace(b"HALP/1", b"HALP/2"))

    def test_no_protocol_is_banned(self) -> None:
        self.assert_banned_by_test(b"server something\nok\n")

    def test_no_federation_features_is_banned(self) -> None:
        self.assert_banned_by_test(
            GOOD_HELLO.replace(b"features changes push stats peers", b"features stats peers")
        )

    def test_only_push_is_banned(self) -> None:
        self.assert_banned_by_test(
            GOOD_HELLO.replace(b"features changes push stats peers", b"features push")
        )

    def test_garbage_hello_is_banned(self) -> None:
        self.assert_banned_by_test(b"x" * 9000 + b"\n")

    def test_an_error_is_not_a_ban(self) -> None:
        """A server that answers ``hello`` with an error is backed off, not banned."""
        a = self.server(1)
        self.federate(a, test_interval=5)
        self.scripted(2, b"error unavailable busy\n")
        self.announce(a, address(2))
        self.network.advance(5)
        self.assertEqual(self.states(a), {str(address(2)): "backoff"})
        self.assertEqual(a.stat("peers-banned"), 0)
        self.assertEqual(a.stat("peer-tests-failed"), 1)

    def test_itself_under_another_address(self) -> None:
        """A server whose ``hello`` gives this server's node is ignored for good."""
        a = self.server(1)
        other = ServerAddress("192.0.2.101", 7100)
        self.network.listen(other, a.factory)
        self.federate(a, test_interval=5)
        self.announce(a, other)
        self.assertEqual(self.states(a), {str(other): "untested"})
        self.network.advance(5)
        self.assertEqual(self.contacts(other), 1)
        self.assertEqual(a.fed.peers(), [])
        self.assertEqual((a.stat("peers-banned"), a.stat("peer-tests-failed")), (0, 0))
        self.network.advance(60)
        self.announce(a, other)
        self.network.advance(5)
        self.assertEqual(a.fed.peers(), [])
        self.assertEqual(a.stat("peers-learned"), 1)
        self.assertEqual(self.contacts(other), 1)

    def test_own_address_is_never_learned(self) -> None:
        """The server's public address is neither pinned nor learned, nor loaded."""
        a, b = self.server(1), self.server(2)
        self.federate(a, a.address, b.address, test_interval=5)
        self.federate(b, a.address)
        self.network.flush()
        self.assertEqual(self.states(a), {str(b.address): "trusted"})
        # b knows a (pinned) and pushes a's own entry back later on.
        self.network.advance(60)
        self.announce(b, a.address, b.address)
        self.network.flush()
        self.announce(a, a.address)
        self.network.advance(5)
        self.assertEqual(self.states(a), {str(b.address): "trusted"})
        self.assertNotIn((a.address, a.address), self.dialled)
        self.assertIn((b.address, a.address), self.dialled)
        self.assertEqual(a.stat("peer-tests"), 0)
        self.assertIn(Entry(self.now() - 5, a.address.host, a.address.port), self.entries(a, SERVERS_LABEL))

        # Nor after a restart, with its own entry in the label.
        self.stop(a.fed)
        core = HALPCore(a.store, self.clock, node_id="node-1-again")
        again = Node(a.address, a.store, core, HALPServerFactory(core, self.clock))
        self.federate(again, b.address)
        self.assertEqual(self.states(again), {str(b.address): "trusted"})

    def test_saved_bans_last_over_a_restart(self) -> None:
        a = self.server(1)
        self.federate(a, test_interval=5)
        self.scripted(2, b"protocol HALP/2\nok\n")
        self.announce(a, address(2))
        self.network.advance(5)
        self.assertEqual(self.states(a), {str(address(2)): "banned"})
        self.stop(a.fed)
        core = HALPCore(a.store, self.clock, node_id="node-1-again")
        again = Node(a.address, a.store, core, HALPServerFactory(core, self.clock))
        self.federate(again, test_interval=5)
        self.assertEqual(self.states(again), {str(address(2)): "banned"})
        self.network.advance(5)
        self.assertEqual(self.contacts(address(2)), 1)


# -- quality and eviction ----------------------------------------------------------


class QualityTests(FederationTestCase):
    def test_ranking(self) -> None:
        """
        ``peers`` lists the best first; answered pushes and pulls raise a
        peer's quality (a pull by one per new entry too), failures lower it.
        """
        a, b = self.server(1), self.server(2)
        down = address(4)
        self.federate(a, down, b.address, public=False)
        for i in range(1, 6):
            self.insert(b, peer_entry(i, self.now()))
        self.assertEqual(
            a.fed.peers(),
            [
                PeerStatus(str(b.address), "trusted", INITIAL_QUALITY, True),
                PeerStatus(str(down), "trusted", INITIAL_QUALITY, True),
            ],
        )
        self.insert(a, peer_entry(9, self.now()))
        self.network.flush()
        self.assertEqual(
            a.fed.peers(),
            [
                PeerStatus(str(b.address), "trusted", INITIAL_QUALITY + QUALITY_ANSWER, True),
                PeerStatus(str(down), "backoff", INITIAL_QUALITY - QUALITY_FAILURE, True),
            ],
        )
        self.assertEqual((a.stat("push-sent"), a.stat("push-failed")), (2, 1))
        self.successResultOf(self.sync(a))
        self.assertEqual(
            a.fed.peers()[0],
            PeerStatus(str(b.address), "trusted", INITIAL_QUALITY + 2 * QUALITY_ANSWER + 5, True),
        )

        self.network.refuse(b.address)
        self.successResultOf(self.sync(a))
        self.assertEqual(a.stat("pull-failed"), 1)
        self.assertEqual(
            a.fed.peers()[0],
            PeerStatus(
                str(b.address),
                "backoff",
                INITIAL_QUALITY + 2 * QUALITY_ANSWER + 5 - QUALITY_FAILURE,
                True,
            ),
        )

    def test_order_follows_quality(self) -> None:
        a = self.server(1)
        others = [self.server(i) for i in (2, 3, 4)]
        self.federate(a, *(o.address for o in others), public=False)
        # 4 answers two pushes; 3 one; 2 fails one.
        self.network.refuse(others[0].address)
        self.insert(a, peer_entry(1, self.now()))
        self.network.flush()
        self.network.refuse(others[1].address)
        self.successResultOf(self.sync(a))  # only 4 is left to pull from
        self.assertEqual(
            [p.address for p in a.fed.peers()],
            [str(others[2].address), str(others[1].address), str(others[0].address)],
        )
        qualities = [p.quality for p in a.fed.peers()]
        self.assertEqual(qualities, sorted(qualities, reverse=True))


class EvictionTests(FederationTestCase):
    def test_the_worst_learned_server_makes_room(self) -> None:
        a, pinned = self.server(1), self.server(2)
        self.federate(a, pinned.address, max_learned=2, test_interval=5)
        now = self.now()
        self.announce(a, address(11), timestamp=now - 100)
        self.announce(a, address(12), timestamp=now - 50)
        self.assertEqual(a.stat("peers-evicted"), 0)
        # A newcomer confirmed later pushes out the oldest untested one.
        self.announce(a, address(13), timestamp=now)
        self.assertEqual(a.stat("peers-evicted"), 1)
        self.assertEqual(
            set(self.states(a)), {str(pinned.address), str(address(12)), str(address(13))}
        )
        # 13 answers its test (the newest is tested first) ...
        self.server(13)
        self.network.advance(5)
        self.assertEqual(self.states(a)[str(address(13))], "trusted")
        # ... so newcomers push out 12, then each other, never 13.
        self.announce(a, address(14))
        self.assertEqual(set(self.states(a)), {str(pinned.address), str(address(13)), str(address(14))})
        self.network.advance(1)
        self.announce(a, address(15))
        self.assertEqual(set(self.states(a)), {str(pinned.address), str(address(13)), str(address(15))})
        self.assertEqual(a.stat("peers-evicted"), 3)
        self.assertEqual(a.stat("peers-learned"), 5)
        # Once every learned server has answered, a newcomer is not taken.
        self.server(15)
        self.network.advance(5)
        self.network.advance(1)
        self.announce(a, address(16))
        self.assertEqual(set(self.states(a)), {str(pinned.address), str(address(13)), str(address(15))})
        self.assertEqual((a.stat("peers-evicted"), a.stat("peers-learned")), (3, 5))
        self.assertEqual(self.states(a)[str(pinned.address)], "trusted")

    def test_not_learned_when_only_seeds_are_kept(self) -> None:
        a, pinned = self.server(1), self.server(2)
        self.federate(a, pinned.address, max_learned=0)
        self.announce(a, address(3))
        self.assertEqual(self.states(a), {str(pinned.address): "trusted"})
        self.assertEqual(a.stat("peers-learned"), 0)


# -- pinned peers ----------------------------------------------------------------


class PinnedTests(FederationTestCase):
    def test_used_at_once(self) -> None:
        """A pinned peer is trusted and used without a test."""
        a, b = self.server(1), self.server(2)
        self.federate(a, b.address, test_interval=5)
        self.assertEqual(a.fed.peers(), [PeerStatus(str(b.address), "trusted", INITIAL_QUALITY, True)])
        entry = peer_entry(1, self.now())
        self.insert(a, entry)
        self.network.advance(20)
        self.assertIn(entry, self.entries(b))
        self.assertEqual(a.stat("peer-tests"), 0)

    def test_never_forgotten(self) -> None:
        """
        A pinned peer that is down for good stays, retried at the backoff
        cap; a learned one with the same history is forgotten.
        """
        a, pinned, learned = self.server(1), self.server(2, listen=False), self.server(3)
        self.federate(a, pinned.address, public=False, test_interval=3600)
        self.announce(a, learned.address)
        self.network.advance(3600)
        self.assertEqual(self.states(a)[str(learned.address)], "trusted")
        # The halp entry was pushed to the pinned peer, and failed.
        self.assertEqual(self.record(a, pinned.address).failures_in_row, 1)
        self.network.refuse(learned.address)
        self.insert(a, peer_entry(1, self.now()))
        self.network.flush()
        self.assertEqual(self.states(a)[str(learned.address)], "backoff")
        self.assertEqual(a.stat("push-failed"), 2)
        for _ in range(9 * 24):
            self.network.advance(3600)
        self.assertGreaterEqual(self.record(a, pinned.address).failures_in_row, FORGET_FAILURES)
        self.assertGreaterEqual(self.now() - START, FORGET_AFTER)
        self.assertEqual(list(self.states(a)), [str(pinned.address)])
        self.assertEqual(a.stat("peers-forgotten"), 1)
        self.assertEqual(a.fed.peers()[0].state, "backoff")

        # When it comes back, the tester finds it.
        self.network.listen(pinned.address, pinned.factory)
        self.network.advance(86_400)
        self.assertEqual(a.fed.peers()[0].state, "trusted")

    def test_garbage_backs_off_without_a_ban(self) -> None:
        """
        A pinned peer answering garbage is not banned, but not asked again
        for PINNED_BAN_TIME at least.
        """
        a = self.server(1)
        g = address(2)
        self.network.listen(g, ScriptedPeerFactory({"hello": GOOD_HELLO, "changes": b"garbage\nok 1 next x:1 end\n"}))
        self.federate(a, g, public=False, test_interval=60)
        self.successResultOf(self.sync(a))
        self.assertEqual(
            a.fed.peers(),
            [PeerStatus(str(g), "backoff", INITIAL_QUALITY - QUALITY_MISBEHAVED, True)],
        )
        self.assertEqual((a.stat("pull-failed"), a.stat("peers-banned")), (1, 0))
        record = self.record(a, g)
        self.assertGreaterEqual(record.retry_at - self.now(), PINNED_BAN_TIME)
        self.assertEqual(a.fed.table.banned(self.now()), {})
        contacts = self.contacts(g)
        while self.now() + 60 < record.retry_at:
            self.network.advance(60)
            self.insert(a, peer_entry(self.now() % 200 + 1, self.now()))
            self.successResultOf(self.sync(a))
        self.assertEqual(self.contacts(g), contacts)
        self.network.advance(120)
        self.assertEqual(self.contacts(g), contacts + 1)  # tested again
        self.assertEqual(a.fed.peers()[0].state, "trusted")


# -- backoff -------------------------------------------------------------------


class BackoffTests(FederationTestCase):
    def test_exponential(self) -> None:
        a, b = self.server(1), self.server(2, listen=False)
        self.federate(a, b.address, public=False, test_interval=5)
        self.insert(a, peer_entry(1, self.now()))
        self.network.flush()
        self.assertEqual(self.contacts(b.address), 1)
        self.assertEqual(self.states(a), {str(b.address): "backoff"})
        delays = []
        for failures in range(1, 5):
            record = self.record(a, b.address)
            self.assertEqual(record.failures_in_row, failures)
            assert record.last_failure is not None
            retry_at = record.retry_at
            delays.append(retry_at - record.last_failure)
            # Not used while in backoff: no push, no pull, no test.
            while self.now() + 5 < retry_at:
                self.insert(a, peer_entry(failures + 1, self.now()))
                self.successResultOf(self.sync(a))
                self.network.advance(5)
                self.assertEqual(self.contacts(b.address), failures)
            # Tested again as soon as its backoff is over.
            self.network.advance(5)
            self.network.advance(5)
            self.assertEqual(self.contacts(b.address), failures + 1)
            self.assertGreaterEqual(self.now(), retry_at)
        self.assertEqual(delays, [BACKOFF_BASE * 2**i for i in range(4)])
        self.assertEqual(a.stat("peer-tests-failed"), 4)
        self.assertEqual(a.stat("push-failed"), 1)

        # Back up: trusted again, and used.
        self.network.listen(b.address, b.factory)
        record = self.record(a, b.address)
        self.network.advance(record.retry_at - self.now() + 5)
        self.assertEqual(self.states(a), {str(b.address): "trusted"})
        self.assertEqual(self.record(a, b.address).failures_in_row, 0)
        entry = peer_entry(99, self.now())
        self.insert(a, entry)
        self.network.flush()
        self.assertIn(entry, self.entries(b))

    def test_learned_peer_backs_off_and_comes_back(self) -> None:
        a, b = self.server(1), self.server(2)
        self.federate(a, test_interval=5)
        self.announce(a, b.address)
        self.network.advance(5)
        self.assertEqual(self.states(a)[str(b.address)], "trusted")
        self.network.refuse(b.address)
        self.successResultOf(self.sync(a))
        self.assertEqual(self.states(a)[str(b.address)], "backoff")
        self.assertEqual(a.stat("pull-failed"), 1)
        self.network.listen(b.address, b.factory)
        self.network.advance(BACKOFF_BASE + 5)
        self.assertEqual(self.states(a)[str(b.address)], "trusted")


# -- peers that answer garbage --------------------------------------------------------


class GarbageTests(FederationTestCase):
    def assert_banned_for(self, changes: bytes, limits: Limits = Limits()) -> None:
        """
        A learned peer that passes its test but answers ``changes`` with
        ``changes`` is banned, and not contacted while banned.
        """
        a = self.server(1, limits)
        g = address(2)
        peer = ScriptedPeerFactory({"hello": GOOD_HELLO, "changes": changes})
        self.network.listen(g, peer)
        self.federate(a, test_interval=5, sync_interval=100)
        self.announce(a, g)
        self.network.advance(5)
        self.assertEqual(self.states(a), {str(g): "trusted"})
        self.network.advance(120)  # one sync
        self.assertEqual(peer.requests, ["hello", "changes"])
        self.assertEqual(a.fed.peers(), [PeerStatus(str(g), "banned", 0, False)])
        self.assertEqual((a.stat("pull-failed"), a.stat("peers-banned")), (1, 1))
        self.assertEqual(self.entries(a), [])
        contacts = self.contacts(g)
        for _ in range(20):
            self.network.advance(100)
            self.insert(a, peer_entry(self.now() % 200 + 1, self.now()))
            self.announce(a, g)
            self.successResultOf(self.sync(a))
        self.assertEqual(self.contacts(g), contacts)
        self.assertEqual(len(peer.requests), 2)

    def test_malformed_line(self) -> None:
        self.assert_banned_for(b"myapp 1800000000 198.51.100.1\nok 1 next x:1 end\n")

    def test_bad_label(self) -> None:
        self.assert_banned_for(b"labels 1800000000 198.51.100.1 1 -\nok 1 next x:1 end\n")

    def test_count_too_high(self) -> None:
        self.assert_banned_for(b"myapp 1800000000 198.51.100.1 1 -\nok 2 next x:1 end\n")

    def test_count_too_low(self) -> None:
        self.assert_banned_for(b"myapp 1800000000 198.51.100.1 1 -\nok 0 next x:1 end\n")

    def test_bad_status(self) -> None:
        self.assert_banned_for(b"ok 0 whatever\n")

    def test_page_over_the_limit(self) -> None:
        lines = b"".join(b"myapp 1800000000 198.51.100.%d 1 -\n" % i for i in range(1, 5))
        self.assert_banned_for(lines + b"ok 4 next x:1 end\n", Limits(max_gossip_entries=3))

    def test_line_too_long(self) -> None:
        self.assert_banned_for(b"y" * 9000 + b"\n")

    def test_an_error_is_a_backoff(self) -> None:
        a = self.server(1)
        g = address(2)
        self.network.listen(g, ScriptedPeerFactory({"hello": GOOD_HELLO, "changes": b"error unavailable later\n"}))
        self.federate(a, g, public=False)
        self.successResultOf(self.sync(a))
        self.assertEqual(
            a.fed.peers(), [PeerStatus(str(g), "backoff", INITIAL_QUALITY - QUALITY_FAILURE, True)]
        )
        self.assertEqual(a.stat("peers-banned"), 0)

    def test_garbage_to_a_push(self) -> None:
        """A learned peer that answers a push with garbage is banned too."""
        a = self.server(1)
        g = address(2)
        peer = ScriptedPeerFactory({"hello": GOOD_HELLO, "push": b"z" * 9000 + b"\n"})
        self.network.listen(g, peer)
        self.federate(a, test_interval=5)
        self.announce(a, g)
        self.network.advance(5)
        self.insert(a, peer_entry(1, self.now()))
        self.network.flush()
        self.assertEqual(peer.requests, ["hello", "push"])
        self.assertEqual(self.states(a), {str(g): "banned"})
        self.assertEqual((a.stat("push-failed"), a.stat("peers-banned")), (1, 1))


# -- listing this server ---------------------------------------------------------


class AnnounceTests(FederationTestCase):
    def test_listed_at_start_and_again(self) -> None:
        a, b = self.server(1), self.server(2)
        self.federate(b)
        self.federate(a, b.address, announce_interval=1000)
        self.network.flush()
        mine = Entry(START, a.address.host, a.address.port)
        self.assertIn(mine, self.entries(a, SERVERS_LABEL))
        self.assertIn(mine, self.entries(b, SERVERS_LABEL))
        # b learned a from the push, and tests it before it pushes to it.
        self.assertEqual(self.states(b), {str(a.address): "untested"})
        self.network.advance(1000)
        (again,) = [e for e in self.entries(a, SERVERS_LABEL) if e.host == a.address.host]
        self.assertGreaterEqual(again.timestamp, START + 900)
        self.assertIn(again, self.entries(b, SERVERS_LABEL))
        self.network.advance(1000)
        (third,) = [e for e in self.entries(b, SERVERS_LABEL) if e.host == a.address.host]
        self.assertGreater(third.timestamp, again.timestamp)

    def test_http_face_is_listed_with_the_server(self) -> None:
        a, b = self.server(1), self.server(2)
        a.core.http_urls = ["http://192.0.2.1:8080/", "https://halp.example:443/"]
        self.federate(b)
        self.federate(a, b.address, announce_interval=1000)
        self.network.flush()
        for node in (a, b):
            self.assertEqual(
                self.entries(node, "halp/http"), [Entry(START, "192.0.2.1", 8080)]
            )
            self.assertEqual(
                self.entries(node, "halp/https"), [Entry(START, "halp.example", 443)]
            )
        self.network.advance(1000)
        (again,) = self.entries(a, "halp/http")
        self.assertGreaterEqual(again.timestamp, START + 900)

    def test_relist_lists_a_new_http_face_at_once(self) -> None:
        a = self.server(1)
        fed = self.federate(a, announce_interval=1000)
        self.assertEqual(self.entries(a, "halp/http"), [])
        self.clock.advance(10)
        a.core.http_urls = ["http://192.0.2.1:8123/"]
        fed.relist()
        self.assertEqual(self.entries(a, "halp/http"), [Entry(START + 10, "192.0.2.1", 8123)])
        # The next listing is a whole interval later, not twice as soon.
        self.clock.advance(850)
        self.assertEqual(self.entries(a, "halp/http")[0].timestamp, START + 10)
        self.clock.advance(200)
        self.assertGreater(self.entries(a, "halp/http")[0].timestamp, START + 10)

    def test_relist_does_nothing_for_an_unlisted_server(self) -> None:
        a = self.server(1)
        fed = self.federate(a, public=False)
        a.core.http_urls = ["http://192.0.2.1:8123/"]
        fed.relist()
        self.assertEqual(self.entries(a, "halp/http"), [])

    def test_announce_interval(self) -> None:
        a = self.server(1)
        self.assertEqual(self.federate(a, start=False).announce_interval, 3600)
        short = self.server(2, Limits(ttl=2000))
        self.assertEqual(self.federate(short, start=False).announce_interval, 500)

    def test_unlisted(self) -> None:
        a, b = self.server(1), self.server(2)
        self.federate(a, b.address, public=False)
        self.network.advance(10_000)
        self.assertEqual(self.entries(a, SERVERS_LABEL), [])
        self.assertEqual(self.entries(b, SERVERS_LABEL), [])
        self.assertEqual(a.stat("push-sent"), 0)

    def test_names_itself_in_pushes(self) -> None:
        """A listed server names itself in a push; an unlisted one does not."""
        b = self.server(2)
        listed, unlisted = self.server(1), self.server(3)
        self.federate(b, listed.address, unlisted.address, public=False)
        self.federate(listed, b.address)
        self.federate(unlisted, b.address, public=False)
        self.insert(listed, peer_entry(1, self.now()))
        self.insert(unlisted, peer_entry(3, self.now()))
        self.network.flush()
        page = self.successResultOf(b.store.changes("0", 1000, 0))
        vias = {c.entry.host: c.via for c in page.changes if c.label == LABEL}
        self.assertEqual(vias, {"198.51.100.1": str(listed.address), "198.51.100.3": unlisted.address.host})


# -- stopping ------------------------------------------------------------------


class StopTests(FederationTestCase):
    def test_stop_cancels_everything_and_saves(self) -> None:
        a, b = self.server(1), self.server(2)
        hang = address(3)
        self.network.blackhole(hang)
        fed = self.federate(a, b.address, hang, sync_interval=100, test_interval=5)
        self.announce(a, address(4))
        self.insert(a, peer_entry(1, self.now()))  # one push hangs
        self.network.advance(5)  # the test of 4 fails
        self.assertTrue(self.clock.getDelayedCalls())
        self.successResultOf(fed.stopService())
        self.network.flush()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # A cancelled push is not the peer's failure.
        self.assertEqual(self.record(a, hang).failures_in_row, 0)
        self.assertEqual(a.stat("push-failed"), 0)
        saved = json.loads(self.successResultOf(a.store.get_state(PEERS_KEY)) or "{}")
        self.assertEqual(
            {(r["host"], r["port"]) for r in saved["servers"]},
            {(s.host, s.port) for s in (b.address, hang, address(4))},
        )
        (four,) = [r for r in saved["servers"] if r["host"] == address(4).host]
        self.assertEqual(four["failures_in_row"], 1)
        # Nothing happens any more.
        attempts = list(self.network.attempts)
        self.network.advance(10_000)
        self.assertEqual(self.network.attempts, attempts)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_during_a_pull(self) -> None:
        a = self.server(1)
        hang = address(3)
        self.network.blackhole(hang)
        fed = self.federate(a, hang, public=False)
        d = fed.sync()
        self.assertNoResult(d)
        self.successResultOf(fed.stopService())
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((a.stat("pull-failed"), self.record(a, hang).failures_in_row), (0, 0))

    def test_stop_before_start(self) -> None:
        """A federation that never loaded the saved state does not overwrite it."""
        a = self.server(1)
        self.successResultOf(a.store.put_state(PEERS_KEY, "saved"))
        fed = self.federate(a, start=False)
        self.successResultOf(fed.stopService())
        self.assertEqual(self.successResultOf(a.store.get_state(PEERS_KEY)), "saved")

    def test_a_push_timeout(self) -> None:
        """A push that is not answered in time fails, and the peer backs off."""
        a = self.server(1)
        hang = address(3)
        self.network.blackhole(hang)
        self.federate(a, hang, public=False, timeout=10)
        self.insert(a, peer_entry(1, self.now()))
        self.network.advance(10)
        self.assertEqual(a.stat("push-failed"), 1)
        self.assertEqual(self.states(a), {str(hang): "backoff"})


# -- the log -------------------------------------------------------------------


class SummaryTests(FederationTestCase):
    def test_summary(self) -> None:
        a, b = self.server(1), self.server(2)
        self.network.listen(address(4), ScriptedPeerFactory({"hello": b"protocol HALP/2\nok\n"}))
        self.federate(a, b.address, address(3), public=False, test_interval=5)
        self.insert(a, peer_entry(1, self.now()), peer_entry(2, self.now()))
        self.network.flush()
        self.successResultOf(self.sync(a))
        self.announce(a, address(4))
        self.network.advance(5)
        self.assertEqual(self.states(a)[str(address(4))], "banned")
        self.assertEqual(
            a.fed.summary(),
            # The halp entry of 4 was pushed to 2 too.
            "Federation: 2 peers (1 trusted, 1 banned); pushed 3 entries in 3 pushes "
            "(1 failed); received 0 by push and 0 by 1 pulls; rejected 0",
        )

    def test_logged_every_hour(self) -> None:
        events = EventLoggingObserver()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        a = self.server(1)
        fed = self.federate(a, public=False)

        def summaries() -> list[str]:
            return [e["summary"] for e in events if e.get("log_format") == "{summary}"]

        self.network.advance(SUMMARY_INTERVAL - 1)
        self.assertEqual(summaries(), [])
        self.network.advance(1)
        self.assertEqual(summaries(), [fed.summary()])
        self.assertTrue(fed.summary().startswith("Federation: 0 peers (0 trusted, 0 banned);"))
        self.network.advance(SUMMARY_INTERVAL)
        self.assertEqual(len(summaries()), 2)
        self.stop(fed)
        self.network.advance(SUMMARY_INTERVAL)
        self.assertEqual(len(summaries()), 2)
