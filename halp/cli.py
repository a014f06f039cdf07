# -*- test-case-name: halp.test.test_cli -*-
"""
The ``halp`` command: look up, announce and cache HALP entries from a
shell.

Exit status: 0 on success; 1 when no server could be reached (cached
entries are still printed, with a warning on stderr) or none stored an
announcement; 2 for usage errors, including a cache that cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from typing import IO, Any, Callable, NoReturn, Sequence

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint

from twisted.logger import Logger

from halp import __version__
from halp.client.client import HALPClient, PeerList, ServerResult, unreached
from halp.client.client import open_cache as client_cache
from halp.client.servers import ServerAddress, ServerRecord, parse_server
from halp.error import HALPError, NoServerAvailable, ProtocolError, StoreError
from halp.interfaces import IHostStore
from halp.model import Entry, LabelInfo, Limits, check_label

__all__ = ["main", "make_parser", "run", "default_cache_dir"]

#: Exit statuses.
OK, UNREACHABLE, USAGE = 0, 1, 2

_log = Logger()


def default_cache_dir() -> str:
    """``$HALP_CACHE``, or ``~/.halp`` as libhalp used."""
    return os.environ.get("HALP_CACHE") or os.path.join(os.path.expanduser("~"), ".halp")


class UsageError(Exception):
    """A mistake in the command line; exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block.
        self.exit(USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _label(text: str) -> str:
    try:
        return check_label(text)
    except ProtocolError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _prefix(text: str) -> str:
    return _label(text.rstrip("/")) if text.strip("/") else ""


def _number(
    convert: Callable[[str], Any], what: str, allowed: Callable[[Any], bool], rule: str
) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert`` the text, then check it is ``allowed``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not allowed(value):
            raise argparse.ArgumentTypeError(f"must {rule}")
        return value

    return parse


_WIDEST = Limits().max_slice
_limit = _number(int, "a number", lambda v: 1 <= v <= _WIDEST, f"be between 1 and {_WIDEST}")
_count = _number(int, "a number", lambda v: v >= 1, "be at least 1")
_seconds = _number(
    float, "a number of seconds", lambda v: 0 < v < 86_400, "be more than 0 and less than a day"
)
_age = _number(int, "a whole number of seconds", lambda v: v >= 0, "not be negative")
_port = _number(int, "a port number", lambda v: 1 <= v <= 65535, "be between 1 and 65535")


def _server(text: str) -> str:
    try:
        parse_server(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def make_parser() -> argparse.ArgumentParser:
    """The ``halp`` command line."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="the cache directory (default: $HALP_CACHE, else ~/.halp)",
    )
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        action="append",
        type=_server,
        default=[],
        help="a HALP server to ask in addition to the cached 'halp' list "
        "(repeatable; libhalp://HOST:PORT for a libhalp-only server, "
        "http://HOST:PORT/ or https://... for a server's HTTP face)",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=5.0,
        help="how long to wait for servers in all (default: 5)",
    )
    group.add_argument("--json", action="store_true", help="machine-readable output")
    group.add_argument(
        "-v", "--verbose", action="store_true", help="log what the client does to stderr"
    )

    parser = _Parser(
        prog="halp",
        description="Look up and announce peers through HALP servers.",
        epilog="Exit status: 0 success, 1 no server reached, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"halp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    get = commands.add_parser(
        "get", parents=[common], help="print the newest entries of a label"
    )
    get.add_argument("label", metavar="LABEL", type=_label)
    get.add_argument(
        "--limit", metavar="N", type=_limit, default=10, help="entries to print (1-100, default 10)"
    )
    get.add_argument(
        "--offline", action="store_true", help="print the cache only, asking no server"
    )

    insert = commands.add_parser(
        "insert",
        parents=[common],
        help="put an entry into the local cache only ('insert halp HOST PORT' adds a server)",
    )
    insert.add_argument("label", metavar="LABEL", type=_label)
    insert.add_argument("host", metavar="HOST")
    insert.add_argument("port", metavar="PORT", type=_port)
    insert.add_argument(
        "-s",
        "--seconds",
        metavar="SECONDS",
        type=_age,
        default=0,
        help="confirmed this many seconds ago (default 0: now)",
    )

    announce = commands.add_parser(
        "announce", parents=[common], help="insert an entry at several servers"
    )
    announce.add_argument("label", metavar="LABEL", type=_label)
    announce.add_argument("host", metavar="HOST")
    announce.add_argument("port", metavar="PORT", type=_port)
    announce.add_argument(
        "--fanout", metavar="N", type=_count, default=5, help="servers to send it to (default 5)"
    )

    labels = commands.add_parser("labels", parents=[common], help="list labels or sublabels")
    labels.add_argument("prefix", metavar="PREFIX", nargs="?", type=_prefix, default="")

    commands.add_parser(
        "servers", parents=[common], help="list known servers with their quality"
    )
    commands.add_parser(
        "stats",
        parents=[common],
        help="print a server's counters (the first --server, else the best known server)",
    )
    return parser


# -- output ------------------------------------------------------------------


def _iso(when: int | None) -> str:
    if when is None:
        return "never"
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {"timestamp": entry.timestamp, "host": entry.host, "port": entry.port}


def _result_json(result: ServerResult) -> dict[str, Any]:
    row: dict[str, Any] = {"server": str(result.server), "ok": result.ok}
    if result.error is not None:
        row["error"] = str(result.error)
    if result.dialect is not None:
        row["dialect"] = result.dialect
    if result.outcomes:
        row["stored"] = result.stored
        reasons = [o.reason for o in result.outcomes if not o.stored]
        if reasons:
            row["reason"] = reasons[0]
    return row


def _record_json(record: ServerRecord) -> dict[str, Any]:
    return {
        "server": str(record.address),
        "scheme": record.scheme,
        "host": record.host,
        "port": record.port,
        "pinned": record.pinned,
        "quality": record.quality,
        "successes": record.successes,
        "failures": record.failures,
        "failures_in_row": record.failures_in_row,
        "entries": record.entries,
        "confirmed": record.confirmed,
        "last_success": record.last_success,
        "last_failure": record.last_failure,
        "retry_at": record.retry_at,
        "dialect": record.dialect,
    }


class _Output:
    def __init__(self, stdout: IO[str], stderr: IO[str], as_json: bool) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.json = as_json

    def line(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def document(self, value: object) -> None:
        self.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")

    def warn(self, text: str) -> None:
        self.stderr.write(f"halp: {text}\n")


def _unreached(results: Sequence[ServerResult], known: int) -> str:
    if not known:
        return (
            "no HALP server known; add one with 'halp insert halp HOST PORT' or --server HOST:PORT"
        )
    if not results:
        return "no HALP server could be asked in time"
    return unreached(results)


# -- the commands ------------------------------------------------------------


async def _get(client: HALPClient, args: argparse.Namespace, out: _Output) -> int:
    if args.offline:
        peers = await client.cached(args.label, args.limit)
    else:
        peers = await client.lookup(args.label, args.limit)
    code = OK
    if not args.offline and peers.from_cache:
        out.warn(_unreached(peers.results, len(await client.servers())) + "; showing cached entries")
        code = UNREACHABLE
    _print_peers(peers, args, out)
    return code


def _print_peers(peers: PeerList, args: argparse.Namespace, out: _Output) -> None:
    if out.json:
        out.document(
            {
                "label": peers.label,
                "entries": [_entry_json(e) for e in peers],
                "from_cache": peers.from_cache or args.offline,
                "servers": [_result_json(r) for r in peers.results],
            }
        )
        return
    for entry in peers:
        out.line(f"{entry.timestamp} {entry.host} {entry.port}")


async def _insert(client: HALPClient, args: argparse.Namespace, out: _Output) -> int:
    timestamp = client.core.now() - args.seconds
    entry = await client.insert(args.label, args.host, args.port, timestamp)
    if out.json:
        out.document({"label": args.label, "entry": _entry_json(entry)})
    return OK


async def _announce(client: HALPClient, args: argparse.Namespace, out: _Output) -> int:
    client.fanout = args.fanout
    result = await client.announce(args.label, args.host, args.port)
    if out.json:
        out.document(
            {
                "label": args.label,
                "entry": _entry_json(result.entry),
                "reached": result.reached,
                "stored": result.stored,
                "servers": [_result_json(r) for r in result],
            }
        )
    else:
        for server in result:
            out.line(server.describe())
    if result.stored:
        return OK
    if not result.reached:
        out.warn(_unreached(result, len(await client.servers())))
    else:
        out.warn("no server stored the entry")
    return UNREACHABLE


async def _labels(client: HALPClient, args: argparse.Namespace, out: _Output) -> int:
    rows = await client.labels(args.prefix)
    code = OK
    if rows.from_cache:
        out.warn(_unreached(rows.results, len(await client.servers())) + "; showing cached labels")
        code = UNREACHABLE
    if out.json:
        out.document(
            {
                "prefix": args.prefix,
                "labels": [{"timestamp": r.timestamp, "name": r.name} for r in rows],
                "from_cache": rows.from_cache,
                "servers": [_result_json(r) for r in rows.results],
            }
        )
    else:
        for row in rows:
            out.line(f"{row.timestamp} {row.name}")
    return code


async def _servers(client: HALPClient, args: argparse.Namespace, out: _Output) -> int:
    records = await client.servers()
    if out.json:
        out.document({"servers": [_record_json(r) for r in records]})
        return OK
    if not records:
        out.warn("no HALP server known; add one with 'halp insert halp HOST PORT'")
        return OK
    rows = [("SERVER", "QUALITY", "OK", "FAILED", "LAST SUCCESS", "NOTES")]
    for r in records:
        notes = []
        if r.pinned:
            notes.append("pinned")
        if r.dialect == "libhalp":
            notes.append("libhalp")
        if r.in_backoff(client.core.now()):
            notes.append(f"backoff until {_iso(r.retry_at)}")
        rows.append(
            (
                str(r.address),
                str(r.quality),
                str(r.successes),
                str(r.failures),
                _iso(r.last_success),
                ", ".join(notes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return OK


async def _stats(client: HALPClient, args: argparse.Namespace, out: _Output) -> int:
    server = args.server[0] if args.server else None
    try:
        stats = await client.stats(server)
    except NoServerAvailable as e:
        known = len(await client.servers())
        out.warn(str(e) if known else _unreached((), 0))
        return UNREACHABLE
    if out.json:
        counters = {k: int(v) if v.isdigit() else v for k, v in stats.fields}
        out.document({"server": str(stats.server), "counters": counters})
        return OK
    out.line(f"# {stats.server}")
    width = max((len(k) for k, _ in stats.fields), default=0)
    for name, value in stats.fields:
        out.line(f"{name.ljust(width)}  {value}")
    return OK


_COMMANDS: dict[str, Callable[[HALPClient, argparse.Namespace, _Output], Any]] = {
    "get": _get,
    "insert": _insert,
    "announce": _announce,
    "labels": _labels,
    "servers": _servers,
    "stats": _stats,
}


def open_cache(
    reactor: Any, directory: str, warn: Callable[[str], object] | None = None
) -> IHostStore:
    """
    The SQLite cache in ``directory``, created if missing; a damaged one
    is moved aside and replaced, which is told to ``warn`` in one line
    (see :func:`halp.client.open_cache`).

    :raises UsageError: if it cannot be used.
    """
    try:
        return client_cache(reactor, directory, warn=warn)
    except StoreError as e:
        raise UsageError(str(e)) from None


async def run(
    reactor: IReactorTime,
    args: argparse.Namespace,
    stdout: IO[str],
    stderr: IO[str],
    *,
    cache: IHostStore | None = None,
    endpoint: Callable[[ServerAddress], IStreamClientEndpoint] | None = None,
    http: HTTPClient | None = None,
) -> int:
    """
    Run one parsed ``halp`` command and return its exit status.  Tests
    pass an in-memory ``cache``, ``endpoint`` and ``http`` client.
    """
    out = _Output(stdout, stderr, args.json)
    try:
        owned = cache is None
        if cache is None:
            cache = open_cache(reactor, args.cache or default_cache_dir(), out.warn)
    except UsageError as e:
        out.warn(str(e))
        return USAGE
    client = HALPClient(
        reactor,
        cache,
        args.server,
        timeout=args.timeout,
        endpoint=endpoint,
        close_cache=owned,
        http=http,
    )
    try:
        code: int = await _COMMANDS[args.command](client, args, out)
    except ProtocolError as e:
        out.warn(e.message)
        code = USAGE
    except ValueError as e:
        out.warn(str(e))
        code = USAGE
    except StoreError as e:
        out.warn(f"the cache failed: {e}")
        code = UNREACHABLE
    except HALPError as e:
        out.warn(str(e))
        code = UNREACHABLE
    except Exception as e:
        _log.failure("halp {command} failed", command=args.command)
        out.warn(f"unexpected error: {e!r} (run with --verbose for details)")
        code = UNREACHABLE
    finally:
        await client.close()
    return code


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``halp`` console script."""
    args = make_parser().parse_args(argv)
    from twisted.internet.task import react

    if args.verbose:
        from twisted.logger import globalLogBeginner, textFileLogObserver

        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])

    async def command(reactor: Any) -> None:
        code = await run(reactor, args, sys.stdout, sys.stderr)
        sys.stdout.flush()
        if code:
            raise SystemExit(code)

    def start(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(command(reactor))

    react(start)
