# -*- test-case-name: halp.test.test_tap -*-
"""
``twistd halp``: options and service construction for the HALP server.

Nothing here imports the reactor at module level; :func:`makeService`
imports it when twistd has already installed the one it chose.
"""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from halp import __version__
from halp.client.servers import ServerAddress, parse_server
from halp.connlimit import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_HOST,
    ConnectionLimiter,
)
from halp.core import VERIFY_POLICIES, Admission, HALPCore
from halp.error import ProtocolError, StoreError
from halp.federation import PUSH_DELAY, SYNC_INTERVAL, TEST_INTERVAL, Federation
from halp.interfaces import IConnectedStore, IHostStore, IProber
from halp.model import Limits, check_routable
from halp.server import HALPServerFactory, describe_address
from halp.verify import TCPProber
from halp.store import (
    DEFAULT_STORE,
    StoreSpec,
    check_store,
    make_store,
    parse_store_spec,
)

__all__ = ["Assembly", "Options", "assemble", "makeService", "DEFAULT_PORT", "parse_duration"]

#: The HALP/1 port.
DEFAULT_PORT = 7100

_DEFAULTS = Limits()
_ADMISSION = Admission()

_DURATION = re.compile(r"([0-9]+)([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """
    Whole seconds from ``90``, ``90s``, ``15m``, ``6h`` or ``7d``.

    :raises ValueError: for anything else, or zero.
    """
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 3600, 90m, 24h or 7d, not {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _ttl(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise ValueError(f"--ttl: {e}") from None


def _seconds(option: str, zero: bool = False) -> Callable[[str], float]:
    low = "0 <=" if zero else "0 <"

    def coerce(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (0 <= value if zero else 0 < value) or not value <= 86400:
            raise ValueError(f"--{option}: expected seconds ({low} s <= 86400), not {text!r}")
        return value

    return coerce


def _count(option: str, low: int, high: int) -> Callable[[str], int]:
    def coerce(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(
                f"--{option}: expected an integer from {low} to {high}, not {text!r}"
            )
        return value

    coerce.coerceDoc = f"An integer from {low} to {high}."  # type: ignore[attr-defined]
    return coerce


def _rate(option: str) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1e9:
            raise ValueError(f"--{option}: expected a number from 0, not {text!r}")
        return value

    coerce.coerceDoc = "A number from 0."  # type: ignore[attr-defined]
    return coerce


def _verify(text: str) -> str:
    if text not in VERIFY_POLICIES:
        raise ValueError(f"--verify: expected one of {', '.join(VERIFY_POLICIES)}, not {text!r}")
    return text


_verify.coerceDoc = "One of all, inserts, none."  # type: ignore[attr-defined]


class _OnStop(Service):
    """Calls ``stop`` when the server stops."""

    def __init__(self, stop: Callable[[], object]) -> None:
        self._stop = stop

    def stopService(self) -> None:
        super().stopService()
        self._stop()


def _public_address(text: str) -> ServerAddress:
    try:
        address, dialect = parse_server(text)
    except ValueError as e:
        raise ValueError(f"--public-address: {e}") from None
    if dialect is not None:
        raise ValueError(f"--public-address: expected HOST:PORT, not {text!r}")
    return address


def _public_http(text: str) -> str:
    try:
        address, _ = parse_server(text)
    except ValueError as e:
        raise ValueError(f"--public-http: {e}") from None
    if address.scheme == "halp":
        raise ValueError(f"--public-http: expected http://HOST:PORT/ or https://..., not {text!r}")
    return address.url


def normalize_endpoint(description: str) -> str:
    """
    A bare port number means ``tcp:PORT``; any other value must be a server
    endpoint string that Twisted can parse.

    :raises ValueError: naming the problem.
    """
    description = description.strip()
    if description.isdigit():
        port = int(description)
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        return f"tcp:{port}"
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except Exception as e:  # the parsers raise many kinds
        raise ValueError(f"not a valid endpoint {description!r}: {e}") from None
    return description


class Options(usage.Options):
    """Command-line options of ``twistd halp``."""

    synopsis = "[options]"
    longdesc = (
        "Serve HALP/1, the Host Address List Protocol, on TCP port "
        f"{DEFAULT_PORT} (or the given endpoints), keeping entries in "
        "SQLite (or the given store)."
    )

    optFlags: list[list[Any]] = [
        [
            "no-federation",
            None,
            "Do not federate: no peers, no replication, no learning of "
            "servers from the halp label.",
        ],
        [
            "allow-private",
            None,
            "Accept entries for hosts that are not globally routable (private, "
            "loopback, link-local, CGNAT, documentation and reserved "
            "addresses): for a server on a LAN or a test bed, not on the "
            "internet.",
        ],
        [
            "no-request-log",
            None,
            "Do not log each request and its result (connections, errors "
            "and failures are still logged); for busy servers.",
        ],
    ]

    optParameters: list[list[Any]] = [
        [
            "store",
            None,
            DEFAULT_STORE,
            "Where entries live: 'memory', 'sqlite:PATH' "
            "(optionally '?synchronous=normal'), or "
            "'redis://[:PASSWORD@]HOST:PORT/DB[?prefix=halp:]' (rediss:// for TLS), "
            "shared by every HALP process that names it.",
        ],
        [
            "max-entries",
            None,
            _DEFAULTS.max_entries,
            "Entries kept per label; the oldest-confirmed are evicted.",
            _count("max-entries", 1, 10_000_000),
        ],
        [
            "ttl",
            None,
            _DEFAULTS.ttl,
            "How long an entry is served after its last confirmation: "
            "seconds, or 90m, 24h, 7d.",
            _ttl,
        ],
        [
            "idle-timeout",
            None,
            60.0,
            "Seconds of silence after which a connection is closed.",
            _seconds("idle-timeout"),
        ],
        [
            "request-timeout",
            None,
            30.0,
            "Seconds a request may take to arrive, from its first byte to its "
            "end (an insert or push block counts as one request; for HTTP, "
            "headers and body); a slower one is refused and the connection "
            "closed.",
            _seconds("request-timeout"),
        ],
        [
            "abort-timeout",
            None,
            15.0,
            "Seconds a closing connection may take to take its last answer "
            "before it is cut off.",
            _seconds("abort-timeout"),
        ],
        [
            "answer-cache",
            None,
            1.0,
            "Seconds the encoded answer to a HALP/1 get line may be written "
            "again without asking the store (it is also dropped as soon as "
            "this server changes the label or an entry of it expires); "
            "bounds how stale answers are when other processes write to the "
            "same store. 0 asks the store every time.",
            _seconds("answer-cache", zero=True),
        ],
        [
            "max-connections",
            None,
            DEFAULT_MAX_CONNECTIONS,
            "Open client connections in all (HALP/1 and HTTP together); more "
            "are answered 'error busy' (HTTP 503) and closed.",
            _count("max-connections", 1, 1_000_000),
        ],
        [
            "max-connections-per-host",
            None,
            DEFAULT_MAX_CONNECTIONS_PER_HOST,
            "Open client connections from one IPv4 address or IPv6 /56 "
            "(HALP/1 and HTTP together); 0 for no such cap (behind a "
            "reverse proxy).",
            _count("max-connections-per-host", 0, 1_000_000),
        ],
        [
            "purge-interval",
            None,
            60.0,
            "Seconds between purges of expired entries.",
            _seconds("purge-interval"),
        ],
        [
            "public-address",
            None,
            None,
            "HOST:PORT where clients and other servers reach this server; "
            "it is announced in the halp label.  Without it the server "
            "federates but stays unlisted.",
            _public_address,
        ],
        [
            "public-http",
            None,
            None,
            "The URL (http://HOST:PORT/ or https://HOST:PORT/) where clients "
            "reach the HTTP face; it is announced in the halp/http (or "
            "halp/https) label.  Default: the --public-address host with the "
            "port of the first --http endpoint.",
            _public_http,
        ],
        [
            "fanout",
            None,
            5,
            "Peers each new or newer entry is pushed to.",
            _count("fanout", 1, 64),
        ],
        [
            "sync-interval",
            None,
            SYNC_INTERVAL,
            "Mean seconds between pulls of changes from a peer (each wait "
            "is drawn from 80% to 120% of it).",
            _seconds("sync-interval"),
        ],
        [
            "peer-test-interval",
            None,
            TEST_INTERVAL,
            "Seconds between tests of learned servers (one at a time).",
            _seconds("peer-test-interval"),
        ],
        [
            "push-delay",
            None,
            PUSH_DELAY,
            "Seconds a new or newer entry waits before it is pushed, so that "
            "entries arriving meanwhile go to a peer in one push; 0 pushes at "
            "once.",
            _seconds("push-delay", zero=True),
        ],
        [
            "verify",
            None,
            "all",
            "Which entries naming a host other than the connection that "
            "sent them wait until this server has reached that host itself: "
            "'all' (also those from peer servers), 'inserts' (clients' "
            "inserts only; peer servers are trusted), or 'none'.",
            _verify,
        ],
        [
            "insert-rate",
            None,
            _ADMISSION.insert_rate,
            "Entries (times labels) per second one client address may "
            "insert, on average; 0 for no limit.",
            _rate("insert-rate"),
        ],
        [
            "insert-burst",
            None,
            _ADMISSION.insert_burst,
            "Entries (times labels) one client address may insert at once.",
            _rate("insert-burst"),
        ],
        [
            "group-share",
            None,
            _ADMISSION.group_share,
            "One source network (IPv4 /16, IPv6 /32) may fill at most "
            "1/N of a label; 0 for no limit.",
            _count("group-share", 0, 1_000_000),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["http"] = []
        self["peers"] = []
        self._failed = False

    def opt_peer(self, description: str) -> None:
        """A HALP server to federate with, as HOST:PORT: a pinned seed, never forgotten (repeatable)."""  # noqa: E501
        try:
            address, dialect = parse_server(description)
        except ValueError as e:
            raise usage.UsageError(f"--peer: {e}") from None
        if dialect == "libhalp":
            raise usage.UsageError("--peer: a libhalp server cannot federate")
        if address.scheme != "halp":
            raise usage.UsageError("--peer: servers federate over HALP/1: give HOST:PORT")
        if address not in self["peers"]:
            self["peers"].append(address)

    def opt_port(self, description: str) -> None:
        """Listen on this endpoint: a port number or a Twisted endpoint string such as tcp:7100:interface=127.0.0.1 or tcp6:7100 (repeatable; default tcp:7100)."""  # noqa: E501
        try:
            self["ports"].append(normalize_endpoint(description))
        except ValueError as e:
            raise usage.UsageError(f"--port: {e}") from None

    def opt_http(self, description: str) -> None:
        """Also serve the HTTP face (JSON API, host list, metrics, status page) on this endpoint: a port number or an endpoint string such as tcp:8080:interface=127.0.0.1 (repeatable; off by default)."""  # noqa: E501
        try:
            self["http"].append(normalize_endpoint(description))
        except ValueError as e:
            raise usage.UsageError(f"--http: {e}") from None

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError:
            self._failed = True
            raise

    def getUsage(self, width: int | None = None) -> str:
        # twistd prints the usage before an error message; after a bad value
        # a pointer to --help is enough, so that the error stays in view.
        if self._failed:
            return "Run 'twistd halp --help' for the options."
        return super().getUsage(width)

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = [f"tcp:{DEFAULT_PORT}"]
        if self["no-federation"] and (
            self["peers"] or self["public-address"] or self["public-http"]
        ):
            raise usage.UsageError(
                "--no-federation: cannot be combined with --peer, --public-address "
                "or --public-http"
            )
        public = self["public-address"]
        if public is not None and not self["allow-private"]:
            try:
                check_routable(public.host)
            except ProtocolError as e:
                raise usage.UsageError(
                    f"--public-address: {e.message.removeprefix('bad host: ')}; "
                    "add --allow-private for a server on a LAN"
                ) from None
        if self["public-http"] and not self["http"]:
            raise usage.UsageError("--public-http: needs --http")
        if self["public-http"] and not self["public-address"]:
            raise usage.UsageError("--public-http: needs --public-address")
        try:
            self["store-spec"] = parse_store_spec(self["store"])
        except ValueError as e:
            raise usage.UsageError(f"--store: {e}") from None

    def limits(self) -> Limits:
        """The :class:`~halp.model.Limits` these options ask for."""
        return Limits(max_entries=self["max-entries"], ttl=self["ttl"])

    def admission(self) -> Admission:
        """The :class:`~halp.core.Admission` rules these options ask for."""
        return Admission(
            allow_private=bool(self["allow-private"]),
            verify=self["verify"],
            insert_rate=self["insert-rate"],
            insert_burst=max(1.0, self["insert-burst"]),
            group_share=self["group-share"],
        )


class StoreService(Service):
    """
    Opens the store when the server starts and closes it when it stops.

    The store is checked in :meth:`startService`, which ``twistd`` calls
    after it changed to ``--rundir`` (or ``--chroot``) and dropped
    privileges, so that a relative path means the same file as when the
    store is used, and a new database belongs to the server's user.  A store
    that cannot be opened stops ``twistd`` with a one-line message.  On
    stop, operations already queued finish; later ones fail (and are
    answered ``error unavailable``).
    """

    def __init__(self, store: IHostStore, spec: StoreSpec) -> None:
        self.store = store
        self.spec = spec

    def startService(self) -> None:
        try:
            check_store(self.spec)
        except StoreError as e:
            raise SystemExit(f"twistd halp: --store: {e}") from None
        super().startService()
        if IConnectedStore.providedBy(self.store):
            self.store.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.close()


class ListenerService(Service):
    """
    Listens on one endpoint and logs the address it got (useful with port
    0).  If listening fails at start-up, it raises :class:`SystemExit` with
    a one-line message, so that ``twistd`` stops instead of serving nothing;
    if an endpoint that listens asynchronously fails later, the failure is
    logged and the reactor stopped.

    :param reactor: stopped when listening fails after start-up.
    :param what: what is served, for the log.
    :param on_listening: called with the listening port once it listens.
    """

    _log = Logger()

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        reactor: IReactorCore,
        *,
        what: str = "HALP/1",
        on_listening: Callable[[IListeningPort], object] | None = None,
    ) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.reactor = reactor
        self.what = what
        self.on_listening = on_listening
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self._listening is not None:
            return
        self._listening = self.endpoint.listen(self.factory)
        self._listening.addCallback(self._listened)
        if self._listening.called:
            failed: list[Failure] = []
            self._listening.addErrback(failed.append)
            if failed:
                raise SystemExit(
                    f"twistd halp: cannot listen on {self.description}: "
                    f"{failed[0].getErrorMessage()}"
                )
        else:
            self._listening.addErrback(self._failed_later)

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self._log.info(
            "{what} listening on {address} ({endpoint})",
            what=self.what,
            address=describe_address(port.getHost()),
            endpoint=self.description,
        )
        if self.on_listening is not None:
            self.on_listening(port)
        return port

    def _failed_later(self, failure: Failure) -> None:
        self._log.failure(
            "Cannot listen on {endpoint}; stopping", failure, endpoint=self.description
        )
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


#: File descriptors the server needs besides its client connections: the
#: listening sockets, the store's files, the log, the reactor's own, and
#: connections to peers.
FD_RESERVE = 64


def fit_fd_limit(
    wanted: int,
    getrlimit: Callable[[int], tuple[int, int]] | None = None,
    setrlimit: Callable[[int, tuple[int, int]], None] | None = None,
) -> int | None:
    """
    Raise the soft limit on open files (``RLIMIT_NOFILE``) to ``wanted``
    if it is lower, as far as the hard limit allows.  (systemd leaves the
    soft limit at 1024 and the hard one high, so that a program that needs
    more raises its own soft limit.)

    :param getrlimit: and ``setrlimit``: the :mod:`resource` functions, by
        default.
    :return: the soft limit in effect, or ``None`` where there is none to
        read (not a POSIX system).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover (not POSIX)
        return None
    get = getrlimit if getrlimit is not None else resource.getrlimit
    put = setrlimit if setrlimit is not None else resource.setrlimit
    soft, hard = get(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            put(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def _check_fd_limit(max_connections: int) -> None:
    """Make room for ``max_connections`` connections, or warn that there is none."""
    wanted = max_connections + FD_RESERVE
    files = fit_fd_limit(wanted)
    if files is not None and files < wanted:
        Logger().warn(
            "This process may open {files} files (RLIMIT_NOFILE), fewer than "
            "--max-connections {connections} needs ({wanted}); past the limit, "
            "connections are accepted and closed at once without an answer.  "
            "Raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections",
            files=files,
            connections=max_connections,
            wanted=wanted,
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _advertiser(
    core: HALPCore, federation: Federation | None, public: ServerAddress, description: str
) -> Callable[[IListeningPort], None]:
    """
    Once the HTTP face listens, announce its URL: the public host, the port
    it got, and ``https`` for a TLS endpoint.
    """

    def listening(port: IListeningPort) -> None:
        host = port.getHost()
        if not isinstance(host, (IPv4Address, IPv6Address)):
            Logger().warn(
                "The HTTP face on {endpoint} has no TCP port to announce; "
                "give --public-http to list it",
                endpoint=description,
            )
            return
        if _is_loopback(host.host) and not _is_loopback(public.host):
            Logger().warn(
                "The HTTP face on {endpoint} listens on loopback only, so it is not "
                "announced at {public}; give --public-http to list the URL that "
                "reaches it",
                endpoint=description,
                public=public.host,
            )
            return
        scheme = "https" if description.split(":", 1)[0] in ("ssl", "tls") else "http"
        address = ServerAddress(public.host, host.port, scheme)
        core.http_urls = [address.url]
        if federation is not None:
            federation.relist()

    return listening


@dataclass
class Assembly:
    """One HALP server's parts, wired as ``twistd halp`` wires them."""

    core: HALPCore
    factory: HALPServerFactory
    federation: Federation | None
    limiter: ConnectionLimiter
    #: The store, the purge timer and the federation, in starting order.
    service: MultiService


def assemble(
    options: Options,
    clock: IReactorTime,
    store: IHostStore,
    *,
    prober: IProber | None,
    core_type: Callable[..., HALPCore] = HALPCore,
    node_id: str | None = None,
    endpoint: Callable[[ServerAddress], IStreamClientEndpoint] | None = None,
    rng: random.Random | None = None,
    announce_interval: float | None = None,
) -> Assembly:
    """
    Wire a server from parsed options: its core, its protocol factory and
    its services, without listening anywhere.  :func:`makeService` runs it
    on the reactor; the simulator (:mod:`halp.sim`) runs thousands on one
    simulated clock and network, with ``endpoint``, ``rng`` and ``node_id``
    from its seed and ``core_type`` for the hostile servers it models.
    """
    admission = options.admission()
    kwargs: dict[str, Any] = {} if node_id is None else {"node_id": node_id}
    core = core_type(
        store, clock, options.limits(), admission=admission, prober=prober, **kwargs
    )
    # One count for every listener: the caps bound the process's descriptors.
    limiter = ConnectionLimiter(options["max-connections"], options["max-connections-per-host"])
    factory = HALPServerFactory(
        core,
        clock,
        idle_timeout=options["idle-timeout"],
        request_timeout=options["request-timeout"],
        abort_timeout=options["abort-timeout"],
        limiter=limiter,
        log_requests=not options["no-request-log"],
        answer_cache=options["answer-cache"],
    )
    top = MultiService()
    StoreService(store, options["store-spec"]).setServiceParent(top)
    purge = TimerService(options["purge-interval"], core.purge)
    purge.clock = clock
    purge.setServiceParent(top)
    federation: Federation | None = None
    if not options["no-federation"]:
        # Added after the store: services stop in reverse order, so the
        # federation saves its state before the store closes.
        federation = Federation(
            core,
            clock,
            peers=options["peers"],
            public=options["public-address"],
            fanout=options["fanout"],
            sync_interval=options["sync-interval"],
            test_interval=options["peer-test-interval"],
            push_delay=options["push-delay"],
            announce_interval=announce_interval,
            endpoint=endpoint,
            rng=rng,
        )
        federation.setServiceParent(top)
    return Assembly(core, factory, federation, limiter, top)


def makeService(options: Options) -> IService:
    """Build the HALP server's service tree from parsed options."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    spec: StoreSpec = options["store-spec"]
    store = make_store(spec, reactor)  # type: ignore[arg-type]
    _check_fd_limit(options["max-connections"])
    admission = options.admission()
    parts = assemble(
        options,
        reactor,
        store,
        prober=TCPProber(reactor, allow_private=admission.allow_private),
    )
    core, factory, federation, limiter, top = (
        parts.core, parts.factory, parts.federation, parts.limiter, parts.service
    )
    for description in options["ports"]:
        endpoint = serverFromString(reactor, description)
        ListenerService(description, endpoint, factory, reactor).setServiceParent(top)
    if options["public-http"]:
        core.http_urls = [options["public-http"]]
    if options["http"]:
        from halp.web import make_site

        site = make_site(
            core,
            reactor,
            timeout=options["idle-timeout"],
            request_timeout=options["request-timeout"],
            abort_timeout=options["abort-timeout"],
            limiter=limiter,
            log_requests=not options["no-request-log"],
        )
        for i, description in enumerate(options["http"]):
            advertise = None
            if i == 0 and options["public-address"] and not options["public-http"]:
                advertise = _advertiser(
                    core, federation, options["public-address"], description
                )
            ListenerService(
                description,
                serverFromString(reactor, description),
                site,
                reactor,
                what="HTTP",
                on_listening=advertise,
            ).setServiceParent(top)
    if core.verifier is not None:
        # Last, so stopped first: no probe starts while the server stops.
        _OnStop(core.verifier.stop).setServiceParent(top)
    Logger().info(
        "HALP {version} serving from the {store} store",
        version=__version__,
        store=spec.describe(),
    )
    return top
