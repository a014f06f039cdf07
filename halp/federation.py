# -*- test-case-name: halp.test.test_federation -*-
"""
Federation: HALP servers find each other through the ``halp`` label and
keep each other in sync.

A :class:`Federation` runs beside a server's :class:`~halp.core.HALPCore`:

* it lists the server in the ``halp`` label (``--public-address``) and
  confirms that entry again before it could expire;
* it keeps a table of peer servers, the client's
  :class:`~halp.client.servers.ServerTable`: pinned seeds (``--peer``),
  and servers learned from ``halp`` entries, tested one at a time before
  they are trusted, ranked by quality, bounded, backed off when they fail,
  banned when they answer with something that is not HALP/1;
* it pushes every change that a client insert or a peer's push made to up
  to ``fanout`` trusted peers (a change that changes nothing is not
  forwarded, so gossip cannot loop);
* every sync interval it pulls what changed at one peer since the cursor
  that peer gave last time (anti-entropy), so that a server that was down
  catches up.

``docs/federation.rst`` explains the design; the ``changes`` and ``push``
requests are in ``docs/protocol.rst``.
"""

from __future__ import annotations

import json
import random
from functools import partial
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from halp.client.protocol import HALPClientProtocol
from halp.client.servers import (
    MAX_LEARNED,
    ServerAddress,
    ServerRecord,
    ServerTable,
    parse_server,
)
from halp.core import PROTOCOL_VERSION, HALPCore, PeerStatus
from halp.error import (
    BadResponse,
    ClientError,
    ConnectionClosed,
    ErrorCode,
    ProtocolError,
    ServerRefused,
    StoreError,
)
from halp.model import Change, Entry
from halp.wire import (
    Changes,
    Hello,
    Push,
    Request,
    Response,
    parse_change_line,
    parse_changes_status,
    parse_field_line,
)

__all__ = ["Federation", "SERVERS_LABEL"]

T = TypeVar("T")

#: Sends a request over a peer connection and fires with its ``ok`` answer;
#: the text says what the request is, for errors.
Ask = Callable[[Request, str], Deferred[Response]]

#: The label that lists HALP servers.
SERVERS_LABEL = "halp"

#: The mean seconds between two pulls; each wait is drawn from 80% to 120%
#: of it (libhalp's updater waited 200 to 300 s).
SYNC_INTERVAL = 250.0
#: Seconds between two tests of learned servers (GNUnet tests one
#: hostlist URL at a time, 3 s apart).
TEST_INTERVAL = 3.0
#: Seconds one exchange with a peer may take, connecting included.
PEER_TIMEOUT = 10.0
#: Pages of the change feed pulled from one peer in one sync, at most.
MAX_PULL_PAGES = 10
#: Changes waiting to be pushed to one peer, at most, in units of
#: ``max_gossip_entries``; older ones are dropped (anti-entropy brings them).
MAX_OUTBOX_MESSAGES = 10
#: Seconds between two summary lines in the log.
SUMMARY_INTERVAL = 3600.0
#: Seconds before pushing again to a peer that answered ``error busy``.
BUSY_DELAY = 60.0

#: Seconds a peer's first queued change waits before the push goes, so that
#: changes arriving meanwhile (verified one by one, say) travel together.
PUSH_DELAY = 0.0
#: Seconds before starting again when loading the federation's state failed.
START_RETRY = 30.0
#: Where the peer table and the cursors are saved in the store.
PEERS_KEY = "server/peers"
CURSORS_KEY = "server/cursors"


class _QuietFactory(Factory):
    protocol = HALPClientProtocol
    noisy = False


_QUIET_FACTORY = _QuietFactory()


class NotHALP(ClientError):
    """A peer answered, but not as a HALP/1 server that federates does."""


def _misbehaving(failure: Failure) -> bool:
    return failure.check(BadResponse, NotHALP, ProtocolError) is not None


class Federation(Service):
    """
    The federation of one HALP server with its peers.

    :param core: the server's core; the federation watches its changes and
        feeds it what peers push and what it pulls.
    :param clock: for timers and connections (the reactor).
    :param peers: pinned seed servers, never evicted.
    :param public: the address this server announces in the ``halp``
        label, or ``None`` to stay unlisted.
    :param fanout: peers each change is pushed to.
    :param sync_interval: mean seconds between pulls.
    :param test_interval: seconds between tests of learned servers.
    :param announce_interval: seconds between confirmations of this
        server's ``halp`` entry; default a quarter of the TTL, at most an
        hour.
    :param timeout: seconds one exchange with a peer may take.
    :param push_delay: seconds a change waits for others to push with it.
    :param endpoint: makes the client endpoint for a peer (default: a
        :class:`~twisted.internet.endpoints.HostnameEndpoint`).
    :param rng: chooses peers and draws jitter.
    """

    _log = Logger()

    def __init__(
        self,
        core: HALPCore,
        clock: IReactorTime,
        *,
        peers: Sequence[ServerAddress] = (),
        public: ServerAddress | None = None,
        fanout: int = 5,
        sync_interval: float = SYNC_INTERVAL,
        test_interval: float = TEST_INTERVAL,
        announce_interval: float | None = None,
        timeout: float = PEER_TIMEOUT,
        push_delay: float = PUSH_DELAY,
        max_learned: int = MAX_LEARNED,
        endpoint: Callable[[ServerAddress], IStreamClientEndpoint] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if fanout < 1:
            raise ValueError("fanout must be at least 1")
        if push_delay < 0:
            raise ValueError("push_delay cannot be negative")
        self.core = core
        self.clock = clock
        self.public = public
        self.fanout = fanout
        self.sync_interval = sync_interval
        self.test_interval = test_interval
        if announce_interval is None:
            announce_interval = min(3600.0, core.limits.ttl / 4)
        self.announce_interval = announce_interval
        self.timeout = timeout
        self.push_delay = push_delay
        self.table = ServerTable([(p, "halp1") for p in peers if p != public], max_learned)
        if public is not None:
            self.table.ignore(public)
        self._endpoint = endpoint or self._tcp_endpoint
        self._rng = rng if rng is not None else random.Random()
        self._cursors: dict[ServerAddress, str] = {}
        self._outbox: dict[ServerAddress, list[Change]] = {}
        self._pushing: set[ServerAddress] = set()
        self._testing: set[ServerAddress] = set()
        self._pulling = False
        self._running_ops: set[Deferred[Any]] = set()
        self._calls: dict[str, IDelayedCall] = {}
        self._ready = False
        core.watch(self._changed)
        core.peer_source = self

    def _tcp_endpoint(self, address: ServerAddress) -> IStreamClientEndpoint:
        return HostnameEndpoint(self.clock, address.host, address.port, timeout=self.timeout)

    def now(self) -> int:
        return self.core.now()

    # -- lifecycle -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._begin()

    def _begin(self) -> None:
        self._calls.pop("start", None)
        d = Deferred.fromCoroutine(self._start())

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError) or not self.running:
                return
            self._log.failure(
                "Loading the federation state failed; trying again in {delay} s",
                failure,
                delay=START_RETRY,
            )
            self._schedule("start", START_RETRY, self._begin)

        self._track(d.addErrback(failed))

    async def _start(self) -> None:
        store = self.core.store
        document = await store.get_state(PEERS_KEY)
        cursors = await store.get_state(CURSORS_KEY)
        known = await self.core.store.get(SERVERS_LABEL, 0, 1000, self.core.oldest_served())
        self.table.load(document, [e for e in known if not self._is_self(e)], self.now())
        self._cursors = self._load_cursors(cursors)
        self._ready = True
        self._log.info(
            "Federation: {count} known servers ({pinned} pinned), fanout {fanout}",
            count=len(self.table),
            pinned=sum(r.pinned for r in self.table.records()),
            fanout=self.fanout,
        )
        if not self.running:
            return
        if self.public is not None:
            self._announce()
        self._schedule("sync", self._jitter(self.sync_interval), self._sync_tick)
        self._schedule("test", self.test_interval, self._test_tick)
        self._schedule("summary", SUMMARY_INTERVAL, self._summary_tick)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()
        # A push waiting out its delay (or a busy peer's) was just cancelled:
        # after a restart, the next change pushes to that peer again.
        self._pushing.clear()
        for d in list(self._running_ops):
            d.cancel()
        # Saved at once: the store is closed right after this returns, and
        # takes what was queued before.
        return self._save()

    def _schedule(self, name: str, delay: float, what: Callable[[], None]) -> None:
        if self.running:
            self._calls[name] = self.clock.callLater(delay, what)

    def _jitter(self, mean: float) -> float:
        return mean * self._rng.uniform(0.8, 1.2)

    def _track(self, d: Deferred[T]) -> Deferred[T]:
        """Keep ``d`` until it ends, cancel it on stop, log what it fails with."""
        self._running_ops.add(d)

        def done(result: object) -> None:
            self._running_ops.discard(d)
            if isinstance(result, Failure) and not result.check(CancelledError):
                self._log.failure("Federation task failed", result)

        d.addBoth(done)
        return d

    # -- persistence ---------------------------------------------------------

    def _load_cursors(self, document: str | None) -> dict[ServerAddress, str]:
        cursors: dict[ServerAddress, str] = {}
        try:
            saved = json.loads(document) if document else {}
        except ValueError:
            saved = {}
        if not isinstance(saved, dict):
            return cursors
        for text, cursor in saved.items():
            if not isinstance(text, str) or not isinstance(cursor, str):
                continue
            try:
                address, dialect = parse_server(text)
            except ValueError:
                continue
            if dialect is None:
                cursors[address] = cursor
        return cursors

    def _save(self) -> Deferred[None]:
        if not self._ready:
            return succeed(None)
        cursors = {
            str(a): c for a, c in sorted(self._cursors.items()) if a in self.table
        }
        store = self.core.store
        d1 = store.put_state(PEERS_KEY, self.table.dump())
        d2 = store.put_state(CURSORS_KEY, json.dumps(cursors, sort_keys=True))
        d = gatherResults([d1, d2], consumeErrors=True)

        def failed(failure: Failure) -> None:
            self._log.failure("Saving the federation state failed", failure)

        return d.addCallbacks(lambda _: None, failed)

    # -- the peer list -------------------------------------------------------

    def peers(self) -> list[PeerStatus]:
        """Every known server and every banned one, as ``peers`` lists them."""
        now = self.now()
        listed = []
        for record in sorted(self.table.records(), key=lambda r: (-r.quality, r.address)):
            if self.table.usable(record):
                state = "trusted"
            elif record.in_backoff(now) or record.failures_in_row:
                state = "backoff"
            else:
                state = "untested"
            listed.append(PeerStatus(str(record.address), state, record.quality, record.pinned))
        for address in sorted(self.table.banned(now)):
            listed.append(PeerStatus(str(address), "banned", 0, False))
        return listed

    def is_peer(self, host: str) -> bool:
        """
        Whether ``host`` is the host of a pinned peer or of one that passed
        its test: its pushes are believed about the entries' sources.
        """
        return self.table.vouched_for(host)

    def _is_self(self, entry: Entry) -> bool:
        return self.public is not None and ServerAddress.of(entry) == self.public

    def _learn(self, entries: list[Entry]) -> None:
        now = self.now()
        before = {ServerAddress.of(e) for e in entries if ServerAddress.of(e) in self.table}
        keep, evicted = self.table.learn([e for e in entries if not self._is_self(e)], now)
        learned = [ServerAddress.of(e) for e in keep if ServerAddress.of(e) not in before]
        if learned:
            self.core.stats.increment("peers-learned", len(learned))
            self._log.info(
                "Learned HALP servers {servers}", servers=", ".join(map(str, learned))
            )
        if evicted:
            self.core.stats.increment("peers-evicted", len(evicted))
            self._log.info(
                "Evicted HALP servers {servers}", servers=", ".join(map(str, evicted))
            )
            for address in evicted:
                self._drop(address)

    def _drop(self, address: ServerAddress) -> None:
        self._outbox.pop(address, None)
        self._cursors.pop(address, None)

    def _failed(self, address: ServerAddress, failure: Failure, doing: str) -> None:
        now = self.now()
        if _misbehaving(failure):
            forgotten = self.table.misbehaved(address, now)
            self.core.stats.increment("peers-banned", len(forgotten))
            self._log.warn(
                "{peer} answered {doing} with something that is not HALP/1: {why}; "
                "{action}",
                peer=str(address),
                doing=doing,
                why=failure.getErrorMessage(),
                action="banned" if forgotten else "backing off",
            )
        else:
            forgotten = self.table.failed(address, now)
            self.core.stats.increment("peers-forgotten", len(forgotten))
            record = self.table.get(address)
            self._log.info(
                "{peer} failed {doing}: {why}{retry}",
                peer=str(address),
                doing=doing,
                why=failure.getErrorMessage(),
                retry=(
                    f"; next try in {record.retry_at - now} s" if record is not None else
                    "; forgotten"
                ),
            )
        self._outbox.pop(address, None)
        for gone in forgotten:
            self._drop(gone)

    def _targets(self, via: str, width: int) -> list[ServerAddress]:
        """Up to ``width`` trusted peers, at random among the best, not ``via``."""
        # A pusher that named itself is "HOST:PORT"; one that did not, its host.
        trusted = [
            r.address
            for r in self.table.trusted()
            if via not in (str(r.address), r.address.host)
        ]
        best = trusted[: max(2 * width, 8)]
        return self._rng.sample(best, min(width, len(best)))

    # -- talking to a peer ---------------------------------------------------

    def _exchange(
        self, peer: ServerAddress, work: Callable[[Ask], Awaitable[T]]
    ) -> Deferred[T]:
        """
        Connect to ``peer``, run ``work`` over the connection, close it.

        ``work`` sends requests with the ``ask`` it is given: connecting and
        each answer may take :attr:`timeout` seconds, but what ``work`` does
        between answers (merging into this server's store) is not the
        peer's time and does not count against it.
        """

        async def session() -> T:
            connecting = self._endpoint(peer).connect(_QUIET_FACTORY)
            proto = await connecting.addTimeout(self.timeout, self.clock)
            assert isinstance(proto, HALPClientProtocol)

            def ask(request: Request, what: str) -> Deferred[Response]:
                answer = proto.request(request).addTimeout(self.timeout, self.clock)
                return answer.addCallback(self._ok, what)

            try:
                return await work(ask)
            finally:
                proto.close()

        return Deferred.fromCoroutine(session())

    @staticmethod
    def _ok(response: Response, what: str) -> Response:
        if response.status is None:
            # A HALP/1 server that closes without a status line is going
            # away; only garbage would be misbehaving.
            raise ConnectionClosed(f"the connection closed before {what} was answered")
        if not response.status.ok:
            raise ServerRefused(response.status.code or "", response.status.text)
        return response

    # -- push ----------------------------------------------------------------

    def _changed(self, changes: list[Change], relay: bool) -> None:
        if not self.running or not self._ready:
            return
        halp = [c.entry for c in changes if c.label == SERVERS_LABEL]
        if halp:
            self._learn(halp)
        if not relay:
            return
        via = changes[0].via
        limit = MAX_OUTBOX_MESSAGES * self.core.limits.max_gossip_entries
        for peer in self._targets(via, self.fanout):
            box = self._outbox.setdefault(peer, [])
            box.extend(changes)
            if len(box) > limit:
                dropped = len(box) - limit
                del box[:dropped]
                self._log.warn(
                    "Push queue of {peer} full; dropped {count} changes",
                    peer=str(peer),
                    count=dropped,
                )
            if peer not in self._pushing:
                if self.push_delay:
                    self._pushing.add(peer)
                    self._schedule(f"push {peer}", self.push_delay, partial(self._push, peer))
                else:
                    self._push(peer)

    def _push(self, peer: ServerAddress) -> None:
        self._calls.pop(f"push {peer}", None)
        box = self._outbox.get(peer)
        if not box or not self.running:
            self._outbox.pop(peer, None)
            self._pushing.discard(peer)
            return
        size = self.core.limits.max_gossip_entries
        batch, self._outbox[peer] = box[:size], box[size:]
        self._pushing.add(peer)
        server = str(self.public) if self.public is not None else None
        request = Push(server, tuple(batch))
        self.core.stats.increment("push-sent")

        async def work(ask: Ask) -> None:
            await ask(request, "push")

        def pushed(result: None | Failure) -> None:
            if isinstance(result, Failure):
                if result.check(CancelledError) and not self.running:
                    self._pushing.discard(peer)
                    return
                self.core.stats.increment("push-failed")
                refused = result.value
                if isinstance(refused, ServerRefused) and refused.code == ErrorCode.BUSY.value:
                    # The peer throttles this server: not a failure of the
                    # peer.  The batch goes again, with what waits, later.
                    self._outbox[peer] = batch + self._outbox.get(peer, [])
                    self._log.info(
                        "{peer} is busy ({why}); pushing again in {delay} s",
                        peer=str(peer),
                        why=refused.message,
                        delay=BUSY_DELAY,
                    )
                    self._schedule(f"push {peer}", BUSY_DELAY, lambda: self._push(peer))
                    return
                self._pushing.discard(peer)
                self._failed(peer, result, "a push")
                return
            self._pushing.discard(peer)
            self.core.stats.increment("entries-pushed", len(batch))
            self.table.succeeded(peer, self.now(), 0, "halp1")
            self._push(peer)

        self._track(self._exchange(peer, work).addBoth(pushed))

    # -- pull (anti-entropy) -------------------------------------------------

    def _sync_tick(self) -> None:
        self._schedule("sync", self._jitter(self.sync_interval), self._sync_tick)
        self.sync()

    def sync(self) -> Deferred[None]:
        """Pull from one trusted peer now (unless a pull is running)."""
        if self._pulling or not self._ready:
            return succeed(None)
        targets = self._targets("", 1)
        if not targets:
            return succeed(None)
        self._pulling = True
        d = self._track(Deferred.fromCoroutine(self._pull(targets[0])))

        def finished(result: object) -> None:
            self._pulling = False

        d.addBoth(finished)
        return d

    async def _pull(self, peer: ServerAddress) -> None:
        limits = self.core.limits
        pulled = {"pages": 0, "received": 0, "new": 0}

        async def work(ask: Ask) -> None:
            cursor = self._cursors.get(peer, "0")
            for _ in range(MAX_PULL_PAGES):
                self.core.stats.increment("pull-sent")
                response = await ask(Changes(cursor, limits.max_gossip_entries), "changes")
                assert response.status is not None
                status = parse_changes_status(response.status)
                if status.count != len(response.lines) or status.count > limits.max_gossip_entries:
                    raise NotHALP(
                        f"changes answer of {len(response.lines)} lines says {status.count}"
                    )
                changes = [parse_change_line(line) for line in response.lines]
                result = await self.core.apply_pulled(changes, str(peer))
                pulled["pages"] += 1
                pulled["received"] += len(changes)
                pulled["new"] += result.changed
                cursor = self._cursors[peer] = status.cursor
                if not status.more:
                    return

        try:
            await self._exchange(peer, work)
        except StoreError as e:
            # This server's own store failed: not the peer's fault.
            self._log.warn("Pull from {peer} stopped: {error}", peer=str(peer), error=str(e))
            return
        except CancelledError:
            if not self.running:
                return
            self._pull_failed(peer, Failure())
            return
        except Exception:
            self._pull_failed(peer, Failure())
            return
        self.table.succeeded(peer, self.now(), pulled["new"], "halp1")
        if pulled["new"]:
            self._log.info(
                "Synced with {peer}: {new} new of {received} changes in {pages} pages",
                peer=str(peer),
                **pulled,
            )
        await self._save()

    def _pull_failed(self, peer: ServerAddress, failure: Failure) -> None:
        self.core.stats.increment("pull-failed")
        self._failed(peer, failure, "a pull")

    # -- announcing this server ----------------------------------------------

    def _announce(self) -> None:
        old = self._calls.get("announce")
        if old is not None and old.active():
            old.cancel()
        self._schedule(
            "announce", self.announce_interval * self._rng.uniform(0.9, 1.0), self._announce
        )
        assert self.public is not None
        now = self.now()
        listed = [self.public]
        for url in self.core.http_urls:
            address, _ = parse_server(url)
            listed.append(address)
        for address in listed:
            entry = Entry(now, address.host, address.port)
            self._track(self.core.insert([address.label], [entry]))

    def relist(self) -> None:
        """
        List this server again now, for example because its HTTP face just
        got its port (:attr:`HALPCore.http_urls <halp.core.HALPCore.http_urls>`
        changed).
        """
        if self.running and self._ready and self.public is not None:
            self._announce()

    # -- the log -------------------------------------------------------------

    def _summary_tick(self) -> None:
        self._schedule("summary", SUMMARY_INTERVAL, self._summary_tick)
        self._log.info("{summary}", summary=self.summary())

    def summary(self) -> str:
        """One line on the peers and the counters, as the log prints it hourly."""
        stats = self.core.stats
        records = self.table.records()
        trusted = sum(self.table.usable(r) for r in records)
        return (
            f"Federation: {len(records)} peers ({trusted} trusted, "
            f"{len(self.table.banned(self.now()))} banned); "
            f"pushed {stats['entries-pushed']} entries in {stats['push-sent']} pushes "
            f"({stats['push-failed']} failed); received {stats['entries-replicated']} "
            f"by push and {stats['entries-pulled']} by {stats['pull-sent']} pulls; "
            f"rejected {stats['entries-rejected']}"
        )

    # -- testing learned servers ---------------------------------------------

    def _test_tick(self) -> None:
        self._schedule("test", self.test_interval, self._test_tick)
        if self._testing:
            return  # one test at a time, as GNUnet does
        record = self.table.next_to_test(self.now(), self._testing)
        if record is not None:
            self.test(record)

    def test(self, record: ServerRecord) -> Deferred[None]:
        """Ask a server ``hello``; trust it if it answers as a HALP/1 server that federates."""
        peer = record.address
        self._testing.add(peer)
        self.core.stats.increment("peer-tests")

        async def work(ask: Ask) -> dict[str, str]:
            response = await ask(Hello(), "hello")
            return dict(parse_field_line(line) for line in response.lines)

        def answered(fields: dict[str, str]) -> None:
            if fields.get("protocol") != PROTOCOL_VERSION:
                raise NotHALP(f"protocol {fields.get('protocol')!r}")
            features = fields.get("features", "").split()
            if "changes" not in features or "push" not in features:
                raise NotHALP("it does not federate (no changes and push)")
            if fields.get("node") == self.core.node_id:
                self._log.info("{peer} is this server; not a peer", peer=str(peer))
                self.table.ignore(peer)
                self._drop(peer)
                return
            self.table.succeeded(peer, self.now(), 0, "halp1")
            self._log.info("{peer} passed its test; trusted", peer=str(peer))

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError) and not self.running:
                return
            self.core.stats.increment("peer-tests-failed")
            self._failed(peer, failure, "its test")

        def finished(result: object) -> None:
            self._testing.discard(peer)

        d = self._exchange(peer, work).addCallback(answered).addErrback(failed)
        d.addBoth(finished)
        return self._track(d)
