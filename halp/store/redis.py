# -*- test-case-name: halp.test.test_redis,halp.test.test_store -*-
"""
The Redis :class:`~halp.interfaces.IHostStore`: several HALP server
processes, on one machine or many, share one data set.

All Redis commands of HALP live in this module and in ``lua/*.lua``.

Key layout
----------
Every key starts with the deployment's prefix (``halp:`` unless the
``--store`` URL says ``?prefix=``) followed by the hash tag ``{TAG}``, where
``TAG`` is the prefix without its trailing colons (``halp:{halp}:...``).  All
keys of one deployment therefore live in one Redis Cluster hash slot, which
is what lets every update run as one atomic script: the change feed and the
label index are ordered across labels, so an insert touches more than one
label's keys.  Several deployments (prefixes) spread over a Cluster's slots.

``P:meta`` (hash)
    ``version`` of this layout, ``epoch`` of the change numbering and
    ``node``, the name the processes announce in ``hello`` (both chosen at
    random by whichever process creates the data set), ``seq``, the
    last change number given, and ``regroup`` while the upgrade from
    layout 1 is unfinished (see below).
``P:e:LABEL`` (sorted set)
    The entries of ``LABEL``: member ``HOST PORT`` (port zero-padded to five
    digits), score minus the confirmed time, so that the natural order is
    newest first with ties by host, then port.
``P:d:LABEL`` (hash)
    Provenance of each entry: ``SOURCE<tab>VIA<tab>GROUP``, where ``GROUP``
    is :func:`~halp.model.address_group` of ``SOURCE`` (``""`` for none).
``P:g:LABEL GROUP`` (sorted set)
    The entries of ``LABEL`` whose group is ``GROUP`` (never ``""``: that
    group has no quota), as in ``P:e:LABEL``, for the per-group quota of
    :meth:`~halp.interfaces.IHostStore.merge`: the count is a ``ZCARD`` and
    the oldest are at the end.  Labels hold no space, so the key is
    unambiguous.
``P:feed`` (sorted set)
    The change feed: member ``LABEL<newline>HOST PORT``, score its change
    number.
``P:i:PARENT`` (sorted set), ``P:ix`` (sorted set)
    The label index: the labels under ``PARENT`` (``P:i:`` for top-level
    ones), and every indexed label; score minus the label's time.
``P:low`` (sorted set)
    Each label holding entries, scored by its oldest entry's time, for
    purges and the census.
``P:state`` (hash)
    :meth:`RedisStore.get_state` documents.

Layout 1 had no ``P:g:`` keys and no group in ``P:d:``.  The first process
of layout 2 to connect marks such a data set as version 2 with
``regroup`` (``init.lua``), and every process that finds ``regroup`` set
computes the groups of the entries without one in the background, while
serving (``regroup.lua``); until then such an entry counts
towards no quota.  Stop every process of layout 1 before starting one of
layout 2: one still running would write entries without a group, and
evict or remove entries without leaving their ``P:g:`` set.

Connection
----------
One connection, opened on first use (or by :meth:`RedisStore.start`) and
reopened at once after a loss, then with a backoff from 0.1 to 1 second.
While there is no connection, operations fail at once with
:class:`~halp.error.StoreError` (answered ``error unavailable``); only the
first attempt after start-up or after a loss is waited for (within the
timeout).  An operation that Redis does not answer within the timeout fails
the same way, and the connection is dropped and reopened, since its replies
can no longer be matched to requests.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.internet.defer import CancelledError, Deferred, fail, inlineCallbacks, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from halp.error import StoreError, StoreSchemaError
from halp.interfaces import IConnectedStore, IHostStore
from halp.model import (
    Census,
    Change,
    ChangePage,
    Entry,
    LabelCount,
    LabelInfo,
    Merged,
    address_group,
)
from halp.store.cursor import make_cursor, split_cursor

__all__ = [
    "DEFAULT_PREFIX",
    "LAYOUT_VERSION",
    "RedisStore",
    "RedisURL",
    "config_warnings",
    "parse_redis_url",
]

#: The version of the key layout this code reads and writes: 2 keeps each
#: entry's network group (``P:g:``), for the per-group quota.
LAYOUT_VERSION = 2
#: Key prefix without ``?prefix=``.
DEFAULT_PREFIX = "halp:"
#: Seconds Redis has to answer an operation (``?timeout=``).
DEFAULT_TIMEOUT = 3.0
#: Reconnection delays, in seconds: the first retry, and the longest.
RETRY_FIRST = 0.1
RETRY_MAX = 1.0
#: Entries one purge script removes at most, so that Redis (which runs one
#: script at a time) is never blocked for long.
PURGE_CHUNK = 5000

_PREFIX = re.compile(r"[A-Za-z0-9_.:/\-]{0,64}\Z")
_OPTIONS = {"prefix", "password", "timeout", "ca"}

T = TypeVar("T")


@dataclass(frozen=True)
class RedisURL:
    """A parsed ``redis://`` or ``rediss://`` store URL."""

    host: str
    port: int = 6379
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT
    #: A PEM file of the CA (or certificate) to trust instead of the
    #: system's, for ``rediss://``.
    ca: str | None = None

    @property
    def key_prefix(self) -> str:
        """What every key of this deployment starts with, hash tag included."""
        tag = self.prefix.rstrip(":") or "halp"
        return f"{self.prefix}{{{tag}}}:"

    def describe(self) -> str:
        """The URL without its password, for logs."""
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}:***@" if self.username else ("***@" if self.password else "")
        return f"{scheme}://{user}{host}:{self.port}/{self.db}?prefix={self.prefix}"


def parse_redis_url(url: str) -> RedisURL:
    """
    Parse ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTIONS]`` (or
    ``rediss://`` for TLS).  Options: ``prefix``, ``password``, ``timeout``
    (seconds) and ``ca`` (a PEM file).

    :raises ValueError: with a one-line explanation.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad Redis URL {_redact(url)!r}: {e}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a Redis URL starts with redis:// or rediss://, not {parts.scheme}://")
    if not parts.hostname:
        raise ValueError("the Redis URL names no host")
    if parts.fragment:
        raise ValueError("a Redis URL has no #fragment")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and len(path) <= 5):
        raise ValueError(f"the Redis database must be a number, not {path!r}")
    try:
        options = dict(
            parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        )
    except ValueError:
        raise ValueError("bad options in the Redis URL") from None
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"unknown Redis URL option {sorted(unknown)[0]!r}")
    prefix = options.get("prefix", DEFAULT_PREFIX)
    if not _PREFIX.match(prefix):
        raise ValueError(
            "prefix: up to 64 letters, digits and _ . : / - (no braces: HALP adds its hash tag)"
        )
    try:
        timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        raise ValueError("timeout must be a number of seconds") from None
    if not 0.05 <= timeout <= 300:
        raise ValueError("timeout must be between 0.05 and 300 seconds")
    if "ca" in options and parts.scheme != "rediss":
        raise ValueError("ca only applies to rediss:// URLs")
    password = options.get("password")
    if parts.password is not None:
        password = unquote(parts.password)
    username = unquote(parts.username) if parts.username else None
    if username and password is None:
        raise ValueError("a Redis user name needs a password")
    return RedisURL(
        host=parts.hostname,
        port=port if port is not None else 6379,
        db=int(path or 0),
        tls=parts.scheme == "rediss",
        username=username,
        password=password,
        prefix=prefix,
        timeout=timeout,
        ca=options.get("ca"),
    )


def _redact(url: str) -> str:
    return re.sub(r"(//[^/@]*:)[^/@]*@", r"\1***@", re.sub(r"password=[^&]*", "password=***", url))


# -- scripts and replies -----------------------------------------------------


def _script(name: str) -> bytes:
    lua = resources.files("halp.store").joinpath("lua")
    return (lua.joinpath("lib.lua").read_text("utf-8") + lua.joinpath(name).read_text("utf-8")).encode()


_SCRIPTS: dict[str, bytes] = {}


def _source(name: str) -> bytes:
    source = _SCRIPTS.get(name)
    if source is None:
        source = _SCRIPTS[name] = _script(f"{name}.lua")
    return source


def _new_epoch() -> str:
    """
    An epoch for the data set, should this call create it: a fresh one each
    time, so that a data set wiped and made again (FLUSHALL, a Redis that
    keeps nothing on disk restarting) never reuses the numbering that
    other servers' cursors point into.
    """
    return secrets.token_hex(8)


def _member(host: str, port: int) -> str:
    return f"{host} {port:05d}"


def _address(member: str) -> tuple[str, int]:
    host, _, port = member.rpartition(" ")
    return host, int(port)


def _number(value: object) -> int:
    """A Redis integer reply, or a score (``"-1000"``, ``"1e+17"``) as an int."""
    if isinstance(value, int):
        return value
    text = str(value)
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def _provenance(value: object) -> tuple[str, str]:
    """``SOURCE<tab>VIA<tab>GROUP`` (or, of layout 1, without the group)
    as ``(source, via)``."""
    source, _, rest = str(value).partition("\t")
    return source, rest.partition("\t")[0]


def _pairs(reply: Sequence[str]) -> list[tuple[str, int]]:
    """``WITHSCORES`` replies: members with their times (minus the score)."""
    return [(reply[i], -_number(reply[i + 1])) for i in range(0, len(reply), 2)]


# -- the connection ----------------------------------------------------------


def _protocol_class() -> type:
    # txredisapi imports the global reactor when loaded: only load it once a
    # Redis store is actually made.
    import txredisapi

    class _Protocol(txredisapi.RedisProtocol):  # type: ignore[misc]
        """txredisapi's protocol, without its number conversion (a state
        document "12" stays text), telling the store when it is gone."""

        on_lost: Callable[[Any, Failure], None] | None = None
        #: Why the connection ended (a TLS handshake failure, say).
        lost_reason: Failure | None = None

        def __init__(self) -> None:
            super().__init__(charset="utf-8", errors="strict", convertNumbers=False)

        def connectionLost(self, why: Failure) -> None:
            # The store hears first, so that the requests failed below find
            # it already knowing that this connection is gone.
            self.lost_reason = why
            if self.on_lost is not None:
                self.on_lost(self, why)
            super().connectionLost(why)

    return _Protocol


def _endpoint(reactor: IReactorTCP, url: RedisURL) -> Any:
    from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
    from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust

    endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=url.timeout)
    if not url.tls:
        return endpoint
    if url.ca:
        try:
            with open(url.ca, "rb") as f:
                trust: Any = Certificate.loadPEM(f.read())
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read the Redis CA file {url.ca!r}: {e}") from None
    else:
        trust = platformTrust()
    return wrapClientTLS(optionsForClientTLS(url.host, trustRoot=trust), endpoint)


def _is_redis_error(failure: Failure) -> bool:
    import txredisapi

    return bool(failure.check(txredisapi.RedisError))


@implementer(IHostStore, IConnectedStore)
class RedisStore:
    """
    :class:`~halp.interfaces.IHostStore` on a Redis (or Valkey) server.

    :param reactor: connects (and, without ``clock``, keeps time).
    :param url: where Redis is, and the key prefix.
    :param clock: times operations out and paces reconnection attempts.
    :param endpoint: connect here instead of where ``url`` says.
    """

    name = "redis"
    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: RedisURL,
        *,
        clock: IReactorTime | None = None,
        endpoint: Any = None,
    ) -> None:
        self.url = url
        self._clock: IReactorTime = clock if clock is not None else reactor
        self._reactor = reactor
        self._endpoint = endpoint
        self._prefix = url.key_prefix
        self._keys = [self._prefix + k for k in ("meta", "feed", "ix", "low")]
        #: The node name every process on this data set shares, once known.
        self.shared_node: str | None = None
        self._protocol: Any = None
        self._attempt: Deferred[Any] | None = None
        self._waiting: list[Deferred[None]] = []
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._last_error = "not connected yet"
        self._down_since: float | None = None
        self._started = False
        self._checked = False
        self._closed = False
        self._pending: set[Deferred[Any]] = set()
        self._drained: list[Deferred[None]] = []
        # The upgrade from layout 1: whether the data set says it is
        # unfinished, whether this process is finishing it, and who waits.
        self._regroup_wanted = False
        self._regrouping = False
        self._regroup_waiters: list[Deferred[None]] = []

    # -- IHostStore ----------------------------------------------------------

    def merge(
        self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        if not changes:
            return self._guard(succeed([]))
        args: list[object] = [max_entries, _new_epoch(), LAYOUT_VERSION, max_per_group]
        for c in changes:
            args += [
                c.label,
                _member(c.entry.host, c.entry.port),
                c.entry.timestamp,
                c.source,
                c.via,
                address_group(c.source),
            ]

        def merged(reply: list[int]) -> list[Merged]:
            return [
                Merged(None if reply[i] < 0 else _number(reply[i]), bool(reply[i + 1]))
                for i in range(0, len(reply), 2)
            ]

        return self._eval("merge", args).addCallback(merged)

    def get(self, label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        if stop <= start or start < 0:
            return self._guard(succeed([]))

        def entries(reply: list[str]) -> list[Entry]:
            return [Entry(ts, *_address(member)) for member, ts in _pairs(reply)]

        return self._command(
            "get",
            "ZRANGEBYSCORE", self._prefix + "e:" + label, "-inf", -since,
            "WITHSCORES", "LIMIT", start, stop - start,
        ).addCallback(entries)

    def list_labels(
        self, parent: str, start: int, stop: int, since: int
    ) -> Deferred[list[LabelInfo]]:
        if stop <= start or start < 0:
            return self._guard(succeed([]))

        def labels(reply: list[str]) -> list[LabelInfo]:
            return [LabelInfo(ts, name) for name, ts in _pairs(reply)]

        return self._command(
            "list labels",
            "ZRANGEBYSCORE", self._prefix + "i:" + parent, "-inf", -since,
            "WITHSCORES", "LIMIT", start, stop - start,
        ).addCallback(labels)

    def changes(self, cursor: str, limit: int, since: int) -> Deferred[ChangePage]:
        epoch, after = split_cursor(cursor)

        def page(reply: list[Any]) -> ChangePage:
            found = []
            for i in range(3, len(reply), 4):
                label, member, ts, provenance = reply[i : i + 4]
                source, via = _provenance(provenance)
                found.append(Change(label, Entry(_number(ts), *_address(member)), source, via))
            return ChangePage(found, make_cursor(reply[0], _number(reply[1])), bool(reply[2]))

        return self._eval("changes", [_new_epoch(), epoch, after, limit, since]).addCallback(page)

    def census(self, since: int, limit: int) -> Deferred[Census]:
        def counted(reply: list[Any]) -> Census:
            rows = [
                LabelCount(reply[i], _number(reply[i + 1]), _number(reply[i + 2]))
                for i in range(2, len(reply), 3)
            ]
            rows.sort(key=lambda c: (-c.active, c.name))
            return Census(_number(reply[0]), _number(reply[1]), rows[: max(0, limit)])

        return self._eval("census", [since, max(0, limit)]).addCallback(counted)

    def remove(self, label: str, addresses: Sequence[tuple[str, int]]) -> Deferred[int]:
        if not addresses:
            return self._guard(succeed(0))
        members = [_member(host, port) for host, port in addresses]
        return self._eval("remove", [label, *members]).addCallback(_number)

    def get_state(self, key: str) -> Deferred[str | None]:
        return self._command("read state", "HGET", self._prefix + "state", key)

    def put_state(self, key: str, value: str | None) -> Deferred[None]:
        if value is None:
            d = self._command("write state", "HDEL", self._prefix + "state", key)
        else:
            d = self._command("write state", "HSET", self._prefix + "state", key, value)
        return d.addCallback(lambda _: None)

    @inlineCallbacks
    def _purge(self, before: int) -> Any:
        removed = 0
        while True:
            count, more = yield self._eval("purge", [before, PURGE_CHUNK])
            removed += _number(count)
            if not more:
                return removed

    def purge(self, before: int) -> Deferred[int]:
        return self._guard(self._purge(before))

    def close(self) -> Deferred[None]:
        self._closed = True
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        if not self._pending:
            self._finish()
        return drained

    # -- IConnectedStore -----------------------------------------------------

    def start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._connect()

    # -- running commands ----------------------------------------------------

    def _eval(self, script: str, args: Sequence[object]) -> Deferred[Any]:
        source = _source(script)
        return self._run(
            script, lambda p: p.eval(source, self._keys, [self._prefix, *args])
        )

    def _command(self, doing: str, *args: object) -> Deferred[Any]:
        return self._run(doing, lambda p: p.execute_command(*args))

    def _guard(self, d: Deferred[T]) -> Deferred[T]:
        """Fail at once when closed; otherwise count ``d`` as pending."""
        if self._closed:
            d.addErrback(lambda _: None)
            return fail(StoreError("the Redis store is closed"))
        self._track(d)
        return d

    def _track(self, d: Deferred[Any]) -> None:
        self._pending.add(d)

        def settled(result: object) -> object:
            self._pending.discard(d)
            if self._closed and not self._pending:
                self._finish()
            return result

        d.addBoth(settled)

    def _run(self, doing: str, send: Callable[[Any], Deferred[Any]]) -> Deferred[Any]:
        if self._closed:
            return fail(StoreError("the Redis store is closed"))
        self.start()
        result: Deferred[Any] = Deferred()
        used: list[Any] = []

        def go(_: object = None) -> Deferred[Any] | None:
            protocol = self._protocol
            if result.called:
                return None
            if protocol is None:
                result.errback(self._unavailable())
                return None
            used.append(protocol)
            try:
                sent: Deferred[Any] = send(protocol)
            except Exception:
                # txredisapi refuses to write on a connection it knows is
                # gone (a RedisError, answered below like any other).
                answered(Failure())
                return None
            sent.addBoth(answered)
            return None

        def answered(outcome: object) -> None:
            if result.called:
                return
            if isinstance(outcome, Failure):
                if _is_redis_error(outcome):
                    self._redis_failed(outcome, used)
                    outcome = Failure(StoreError(f"Redis {doing} failed: {outcome.getErrorMessage()}"))
                result.errback(outcome)
            else:
                result.callback(outcome)

        def timed_out() -> None:
            if result.called:
                return
            if not used:
                result.errback(self._unavailable())
                return
            for protocol in used:
                # Its replies can no longer be matched to requests.
                self._drop(protocol, f"no answer to {doing} within {self.url.timeout} s")
            result.errback(
                StoreError(f"Redis at {self.url.describe()} did not answer within {self.url.timeout} s")
            )

        timer = self._clock.callLater(self.url.timeout, timed_out)

        def stop_timer(outcome: object) -> object:
            if timer.active():
                timer.cancel()
            return outcome

        result.addBoth(stop_timer)
        if self._protocol is not None:
            go()
        elif self._attempt is not None and self._failures == 0:
            # The first attempt since start-up, or since the connection
            # was lost: worth waiting for (within the timeout).  Later
            # attempts, while Redis stays away, are not.
            waiter: Deferred[None] = Deferred()
            self._waiting.append(waiter)
            waiter.addCallback(go)
        else:
            result.errback(self._unavailable())
            return result
        self._track(result)
        return result

    def _redis_failed(self, failure: Failure, used: list[Any]) -> None:
        message = failure.getErrorMessage()
        if message.startswith("READONLY") or message.startswith("LOADING"):
            # A failover turned our server into a replica, or it is still
            # loading its data: reconnect (DNS may now name the new primary).
            for protocol in used:
                self._drop(protocol, message)

    def _unavailable(self) -> StoreError:
        return StoreError(f"Redis at {self.url.describe()} is unreachable: {self._last_error}")

    # -- connecting ----------------------------------------------------------

    def _connect(self) -> None:
        self._retry = None
        if self._closed:
            return
        endpoint = self._endpoint
        try:
            if endpoint is None:
                endpoint = self._endpoint = _endpoint(self._reactor, self.url)
        except StoreError as e:
            self._attempt_failed(Failure(e))
            return
        factory = Factory.forProtocol(_protocol_class())
        factory.noisy = False
        attempt: Deferred[Any] = endpoint.connect(factory)
        self._attempt = attempt
        timer = self._clock.callLater(self.url.timeout, attempt.cancel)

        made: list[Any] = []

        def connected(protocol: Any) -> Deferred[Any]:
            made.append(protocol)
            return self._prepare(protocol).addCallback(lambda _: protocol)

        def ended(outcome: object) -> None:
            if timer.active():
                timer.cancel()
            self._attempt = None
            if isinstance(outcome, Failure):
                reason: Failure | None = made[0].lost_reason if made else None
                if reason is None or not _is_redis_error(outcome):
                    reason = outcome
                if reason.check(CancelledError):
                    reason = Failure(
                        StoreError(f"no connection within {self.url.timeout} s")
                    )
                # else "Lost connection" says less than why it was lost.
                self._attempt_failed(reason)
            else:
                self._connected(outcome)
            waiting, self._waiting = self._waiting, []
            for waiter in waiting:
                waiter.callback(None)
            if self._closed and not self._pending:
                # Closed while connecting, with nothing left to serve.
                self._finish()

        attempt.addCallback(connected).addBoth(ended)

    @inlineCallbacks
    def _prepare(self, protocol: Any) -> Any:
        """Log in, choose the database, check the layout (and, once, what
        Redis keeps on disk) before the connection serves operations."""
        try:
            if self.url.password is not None:
                login = [self.url.username] if self.url.username else []
                yield protocol.execute_command("AUTH", *login, self.url.password)
            if self.url.db:
                yield protocol.execute_command("SELECT", self.url.db)
            version, node, regroup = yield protocol.eval(
                _source("init"),
                self._keys,
                [self._prefix, _new_epoch(), secrets.token_hex(8), LAYOUT_VERSION],
            )
            if _number(version) > LAYOUT_VERSION:
                raise StoreSchemaError(
                    f"the data under prefix {self.url.prefix!r} has layout version {version},"
                    f" newer than this HALP supports ({LAYOUT_VERSION}); upgrade HALP"
                )
            self.shared_node = str(node)
            self._regroup_wanted = bool(_number(regroup))
            if not self._checked:
                yield self._check_server(protocol)
                self._checked = True
        except BaseException:
            protocol.on_lost = None
            protocol.transport.abortConnection()
            raise

    @inlineCallbacks
    def _check_server(self, protocol: Any) -> Any:
        import txredisapi

        try:
            info = yield protocol.execute_command("INFO", "server")
        except txredisapi.ResponseError:
            # A user without @dangerous commands: not knowing the version
            # is no reason to refuse the server.
            info = ""
        version = dict(
            line.split(":", 1) for line in str(info).splitlines() if ":" in line
        ).get("redis_version", "unknown")
        self._log.info(
            "Using Redis {version} at {url} (keys {prefix}*)",
            version=version,
            url=self.url.describe(),
            prefix=self._prefix,
        )
        try:
            config = {}
            for name in ("appendonly", "appendfsync", "save", "maxmemory-policy"):
                reply = yield protocol.execute_command("CONFIG", "GET", name)
                config[name] = reply[1] if len(reply) > 1 else ""
        except txredisapi.ResponseError as e:
            self._log.warn(
                "Cannot read Redis's settings ({error}): make sure Redis at {url} keeps its"
                " data on disk (appendonly yes), or acknowledged inserts die with it, and"
                " never evicts keys (maxmemory-policy noeviction)",
                error=str(e),
                url=self.url.describe(),
            )
            return
        for message in config_warnings(config):
            self._log.warn("Redis at {url}: {problem}", url=self.url.describe(), problem=message)

    def _connected(self, protocol: Any) -> None:
        protocol.on_lost = self._lost
        self._protocol = protocol
        self._failures = 0
        if self._down_since is not None:
            self._log.info(
                "Redis at {url} is reachable again after {seconds:.1f} s",
                url=self.url.describe(),
                seconds=self._clock.seconds() - self._down_since,
            )
            self._down_since = None
        if self._regroup_wanted and not self._regrouping:
            self._start_regroup()

    # -- the upgrade from layout 1 -------------------------------------------

    def _start_regroup(self) -> None:
        self._regrouping = True

        def ended(outcome: object) -> None:
            self._regrouping = False
            if isinstance(outcome, Failure):
                if self._closed:
                    pass
                elif outcome.check(StoreError):
                    self._log.warn(
                        "Upgrading the data under prefix {prefix} to layout {layout}"
                        " stopped ({error}); it goes on once Redis is back",
                        prefix=self.url.prefix,
                        layout=LAYOUT_VERSION,
                        error=outcome.getErrorMessage(),
                    )
                else:
                    self._log.failure(
                        "Upgrading the data under prefix {prefix} to layout {layout} failed",
                        outcome,
                        prefix=self.url.prefix,
                        layout=LAYOUT_VERSION,
                    )
            else:
                self._regroup_wanted = False
                self._log.info(
                    "Upgraded the data under prefix {prefix} to layout {layout}:"
                    " {count} entries got their network group",
                    prefix=self.url.prefix,
                    layout=LAYOUT_VERSION,
                    count=outcome,
                )
            waiters, self._regroup_waiters = self._regroup_waiters, []
            for waiter in waiters:
                waiter.callback(None)

        self._regroup().addBoth(ended)

    def _regrouped(self) -> Deferred[None]:
        """A Deferred firing once this process is not finishing the upgrade
        from layout 1 (done, or stopped by a lost connection)."""
        if not self._regrouping:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._regroup_waiters.append(waiter)
        return waiter

    @inlineCallbacks
    def _regroup(self) -> Any:
        """
        Finish the upgrade from layout 1: give every entry of layout 1 its
        network group, computed by :func:`~halp.model.address_group` (which
        Lua cannot do), one label and one page of its entries per script.

        The process serves meanwhile: an entry without a group counts
        towards no quota until it has one (or a merge moves it forward).
        Every process that finds the upgrade unfinished takes part (or
        starts over, after a lost connection); ``regroup.lua`` leaves alone
        what a merge changed since it was read, so that is harmless.  It
        fires with the number of entries that got a group here.
        """
        regrouped = 0
        labels_cursor = "0"
        while True:
            labels_cursor, labels = yield self._command(
                "upgrade", "ZSCAN", self._prefix + "low", labels_cursor, "COUNT", 100
            )
            for label in labels[::2]:
                cursor = "0"
                while True:
                    cursor, fields = yield self._command(
                        "upgrade", "HSCAN", self._prefix + "d:" + label, cursor, "COUNT", 500
                    )
                    args: list[object] = [label]
                    for k in range(0, len(fields), 2):
                        member, value = fields[k], str(fields[k + 1])
                        if value.count("\t") == 1:
                            group = address_group(value.partition("\t")[0])
                            args += [member, value, group]
                    if len(args) > 1:
                        regrouped += _number((yield self._eval("regroup", args)))
                    if str(cursor) == "0":
                        break
            if str(labels_cursor) == "0":
                break
        yield self._command("upgrade", "HDEL", self._prefix + "meta", "regroup")
        return regrouped

    def _lost(self, protocol: Any, why: Failure) -> None:
        self._forget(protocol, f"connection lost ({why.getErrorMessage()})")

    def _drop(self, protocol: Any, reason: str) -> None:
        """Stop using ``protocol`` now, and close it."""
        self._forget(protocol, reason)
        protocol.on_lost = None
        protocol.transport.abortConnection()

    def _forget(self, protocol: Any, reason: str) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._last_error = reason
        if self._closed:
            return
        self._down_since = self._clock.seconds()
        self._log.warn(
            "Lost the connection to Redis at {url}: {error}; answering 'unavailable'"
            " until it is back",
            url=self.url.describe(),
            error=reason,
        )
        self._connect()

    def _attempt_failed(self, failure: Failure) -> None:
        if self._closed:
            return
        error = failure.getErrorMessage()
        if failure.check(StoreSchemaError):
            error = str(failure.value)
        if error != self._last_error or self._failures == 0:
            self._log.warn(
                "Cannot use Redis at {url}: {error}; retrying",
                url=self.url.describe(),
                error=error,
            )
        self._last_error = error
        if self._down_since is None:
            self._down_since = self._clock.seconds()
        self._failures += 1
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** min(10, self._failures - 1))
        self._retry = self._clock.callLater(delay, self._connect)

    def _finish(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        gone: Deferred[Any] = succeed(None)
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.on_lost = None
            if protocol.connected:
                gone = protocol.whenDisconnected()
                # Nothing is pending: abort rather than wait for a TLS
                # close that a stuck Redis would never answer.
                protocol.transport.abortConnection()

        def closed(_: object) -> None:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

        gone.addBoth(closed)


def config_warnings(config: dict[str, str]) -> list[str]:
    """
    What an operator should be told about Redis's ``appendonly``,
    ``appendfsync``, ``save`` and ``maxmemory-policy`` settings.
    """
    policy = config.get("maxmemory-policy", "noeviction")
    warnings = []
    if policy.startswith("allkeys"):
        warnings.append(
            f"maxmemory-policy {policy}: when Redis fills up it deletes keys, HALP's"
            " bookkeeping among them (the change feed, the label index); set"
            " maxmemory-policy noeviction, so that a full Redis refuses inserts instead"
        )
    return warnings + _persistence_warnings(config)


def _persistence_warnings(config: dict[str, str]) -> list[str]:
    aof = config.get("appendonly", "no") == "yes"
    rdb = bool(config.get("save", "").strip())
    if not aof and not rdb:
        return [
            "it keeps nothing on disk (appendonly no, save \"\"): every acknowledged"
            " insert is lost when Redis restarts; set appendonly yes"
        ]
    if not aof:
        return [
            f"it only takes RDB snapshots (save \"{config.get('save', '')}\"): inserts"
            " acknowledged since the last snapshot are lost if Redis stops abruptly;"
            " set appendonly yes"
        ]
    fsync = config.get("appendfsync", "everysec")
    if fsync != "always":
        return [
            f"appendfsync {fsync}: about the last second of acknowledged inserts is lost"
            " if Redis's machine fails; appendfsync always makes every acknowledged insert"
            " durable"
        ]
    return []
