"""
Tests for :mod:`halp.cli`, the ``halp`` command: parsed command lines run
against real HALP servers in memory (:class:`~halp.testing.FakeNetwork`)
with a :class:`~halp.store.memory.MemoryStore` for the cache.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any
from unittest import mock

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from halp import __version__
from halp.cli import (
    UsageError,
    default_cache_dir,
    main,
    make_parser,
    open_cache,
    run,
)
from halp.client.client import CACHE_FILE
from halp.client.servers import ServerAddress
from halp.core import HALPCore
from halp.model import Entry
from halp.stats import COUNTERS
from halp.store import insert_entries
from halp.server import HALPServerFactory
from halp.store.memory import MemoryStore
from halp.store.sqlite import SQLiteStore
from halp.testing import FakeNetwork

#: The time the tests run at: 2023-11-14T22:13:20Z.
NOW = 1_700_000_000

SERVER = ServerAddress("192.0.2.1", 7100)
OTHER = ServerAddress("192.0.2.2", 7100)
#: A server's HTTP face.
WEB = ServerAddress("192.0.2.3", 8080, "http")

#: The keys of a server row in ``--json`` output; ``error``, ``dialect``,
#: ``stored`` and ``reason`` only when they apply.
RESULT_KEYS = {"server", "ok"}

#: The keys of ``halp servers --json`` rows.
RECORD_KEYS = {
    "server",
    "scheme",
    "host",
    "port",
    "pinned",
    "quality",
    "successes",
    "failures",
    "failures_in_row",
    "entries",
    "confirmed",
    "last_success",
    "last_failure",
    "retry_at",
    "dialect",
}


class Outcome:
    """What one ``halp`` run did."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def json(self) -> Any:
        return json.loads(self.stdout)


class CLITestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.network = FakeNetwork(Clock())
        self.network.clock.advance(NOW)
        self.cache = MemoryStore()

    def serve(self, address: ServerAddress = SERVER) -> MemoryStore:
        """Start a HALP server at ``address``; return its store."""
        store = MemoryStore()
        self.network.halp_server(address, store)
        return store

    def serve_skewed(self, address: ServerAddress = SERVER) -> MemoryStore:
        """
        Start a HALP server whose clock is two days ahead: it answers, but
        refuses entries confirmed now as expired.
        """
        store = MemoryStore()
        skewed = Clock()
        skewed.advance(NOW + 2 * 86_400)
        factory = HALPServerFactory(HALPCore(store, skewed), skewed, log_requests=False)
        self.network.listen(address, factory)
        return store

    def start(self, *argv: str) -> Deferred[int]:
        """Start ``halp ARGV``; the caller moves the network along."""
        args = make_parser().parse_args(list(argv))
        self.out = io.StringIO()
        self.err = io.StringIO()
        return Deferred.fromCoroutine(
            run(
                self.network.clock,
                args,
                self.out,
                self.err,
                cache=self.cache,
                endpoint=self.network.endpoint,
                http=self.network.http_client(),
            )
        )

    def finish(self, d: Deferred[int]) -> Outcome:
        return Outcome(self.successResultOf(d), self.out.getvalue(), self.err.getvalue())

    def halp(self, *argv: str) -> Outcome:
        """Run ``halp ARGV`` to the end."""
        d = self.start(*argv)
        self.network.flush()
        return self.finish(d)

    def cached(self, label: str) -> list[Entry]:
        return self.successResultOf(self.cache.get(label, 0, 100, 0))

    def assertOneWarning(self, outcome: Outcome, *parts: str) -> None:
        lines = outcome.stderr.splitlines()
        self.assertEqual(len(lines), 1, outcome.stderr)
        self.assertTrue(lines[0].startswith("halp: "), lines[0])
        for part in parts:
            self.assertIn(part, lines[0])


def put(store: MemoryStore, label: str, *entries: Entry) -> None:
    insert_entries(store, [label], list(entries), 1000)


# -- get -----------------------------------------------------------------------


class GetTests(CLITestCase):
    def test_prints_newest_first(self) -> None:
        """``get`` prints ``TIMESTAMP HOST PORT`` lines, newest first."""
        store = self.serve()
        put(
            store,
            "myapp",
            Entry(NOW - 30, "198.51.100.7", 4000),
            Entry(NOW - 5, "198.51.100.8", 4001),
            Entry(NOW - 10, "2001:db8::1", 4002),
        )
        outcome = self.halp("get", "myapp", "--server", str(SERVER))
        self.assertEqual(
            (outcome.code, outcome.lines, outcome.stderr),
            (
                0,
                [
                    f"{NOW - 5} 198.51.100.8 4001",
                    f"{NOW - 10} 2001:db8::1 4002",
                    f"{NOW - 30} 198.51.100.7 4000",
                ],
                "",
            ),
        )
        # What was found is cached.
        self.assertEqual(len(self.cached("myapp")), 3)

    def test_limit(self) -> None:
        store = self.serve()
        put(store, "myapp", *(Entry(NOW - i, "198.51.100.7", 4000 + i) for i in range(5)))
        outcome = self.halp("get", "myapp", "--limit", "2", "--server", str(SERVER))
        self.assertEqual(
            outcome.lines, [f"{NOW} 198.51.100.7 4000", f"{NOW - 1} 198.51.100.7 4001"]
        )

    def test_offline(self) -> None:
        """``--offline`` prints the cache and asks no server."""
        self.serve()
        put(self.cache, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        outcome = self.halp("get", "myapp", "--offline", "--server", str(SERVER))
        self.assertEqual(
            (outcome.code, outcome.lines, outcome.stderr),
            (0, [f"{NOW - 5} 198.51.100.8 4001"], ""),
        )
        self.assertEqual(self.network.attempts, [])

    def test_no_server_known(self) -> None:
        """
        With no server known, ``get`` prints the cache and exits 1 with one
        warning that says how to add a server.
        """
        put(self.cache, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        outcome = self.halp("get", "myapp")
        self.assertEqual((outcome.code, outcome.lines), (1, [f"{NOW - 5} 198.51.100.8 4001"]))
        self.assertOneWarning(outcome, "no HALP server known", "halp insert halp")

    def test_servers_down(self) -> None:
        """
        When no server can be reached, the cached entries are printed, with
        a warning naming the server, and the exit status is 1.
        """
        put(
            self.cache,
            "myapp",
            Entry(NOW - 50, "198.51.100.7", 4000),
            Entry(NOW - 5, "198.51.100.8", 4001),
        )
        outcome = self.halp("get", "myapp", "--server", str(SERVER))
        self.assertEqual(
            (outcome.code, outcome.lines),
            (1, [f"{NOW - 5} 198.51.100.8 4001", f"{NOW - 50} 198.51.100.7 4000"]),
        )
        self.assertOneWarning(
            outcome, "no HALP server could be reached", str(SERVER), "showing cached entries"
        )
        self.assertEqual(self.network.attempts, [SERVER])

    def test_timeout(self) -> None:
        """A server that never answers is given up after ``--timeout``."""
        self.network.blackhole(SERVER)
        d = self.start("get", "myapp", "--server", str(SERVER), "--timeout", "2")
        # A server may take half the time, leaving time to ask another.
        self.network.advance(0.9)
        self.assertNoResult(d)
        self.network.advance(0.1)
        outcome = self.finish(d)
        self.assertEqual(outcome.code, 1)
        self.assertOneWarning(outcome, str(SERVER), "no answer within 1.0 s")

    def test_json(self) -> None:
        store = self.serve()
        put(store, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        outcome = self.halp("get", "myapp", "--json", "--server", str(SERVER))
        self.assertEqual(outcome.code, 0)
        self.assertEqual(
            outcome.json(),
            {
                "label": "myapp",
                "entries": [{"timestamp": NOW - 5, "host": "198.51.100.8", "port": 4001}],
                "from_cache": False,
                "servers": [{"server": str(SERVER), "ok": True, "dialect": "halp1"}],
            },
        )

    def test_json_servers_down(self) -> None:
        """Unreachable servers are listed with their error."""
        put(self.cache, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        outcome = self.halp("get", "myapp", "--json", "--server", str(SERVER))
        self.assertEqual(outcome.code, 1)
        document = outcome.json()
        self.assertEqual(set(document), {"label", "entries", "from_cache", "servers"})
        self.assertTrue(document["from_cache"])
        self.assertEqual(len(document["entries"]), 1)
        (server,) = document["servers"]
        self.assertEqual(set(server), RESULT_KEYS | {"error"})
        self.assertEqual((server["server"], server["ok"]), (str(SERVER), False))
        self.assertIn("refused", server["error"])
        self.assertOneWarning(outcome, "showing cached entries")

    def test_json_offline(self) -> None:
        put(self.cache, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        outcome = self.halp("get", "myapp", "--json", "--offline")
        self.assertEqual(outcome.code, 0)
        self.assertEqual(
            outcome.json(),
            {
                "label": "myapp",
                "entries": [{"timestamp": NOW - 5, "host": "198.51.100.8", "port": 4001}],
                "from_cache": True,
                "servers": [],
            },
        )


# -- insert --------------------------------------------------------------------


class InsertTests(CLITestCase):
    def test_cache_only(self) -> None:
        """``insert`` writes the local cache only, confirmed now."""
        self.serve()
        outcome = self.halp("insert", "myapp", "198.51.100.7", "4000", "--server", str(SERVER))
        self.assertEqual((outcome.code, outcome.stdout, outcome.stderr), (0, "", ""))
        self.assertEqual(self.cached("myapp"), [Entry(NOW, "198.51.100.7", 4000)])
        self.assertEqual(self.network.attempts, [])

    def test_seconds_ago(self) -> None:
        """``-s SECONDS`` confirms the entry that many seconds ago."""
        self.halp("insert", "myapp", "198.51.100.7", "4000", "-s", "90")
        self.halp("insert", "myapp", "198.51.100.8", "4001", "--seconds", "30")
        outcome = self.halp("get", "myapp", "--offline")
        self.assertEqual(
            outcome.lines, [f"{NOW - 30} 198.51.100.8 4001", f"{NOW - 90} 198.51.100.7 4000"]
        )

    def test_too_old(self) -> None:
        """An entry older than the cache keeps is refused: exit 2, one line."""
        outcome = self.halp("insert", "myapp", "198.51.100.7", "4000", "-s", str(31 * 86_400))
        self.assertEqual(outcome.code, 2)
        self.assertOneWarning(outcome, "expired")
        self.assertEqual(self.cached("myapp"), [])

    def test_bad_host(self) -> None:
        outcome = self.halp("insert", "myapp", "not a host", "4000")
        self.assertEqual((outcome.code, outcome.stdout), (2, ""))
        self.assertOneWarning(outcome, "bad host")

    def test_insert_server(self) -> None:
        """``insert halp HOST PORT`` makes later commands use that server."""
        store = self.serve()
        put(store, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        self.assertEqual(self.halp("insert", "halp", "192.0.2.1", "7100").code, 0)
        self.assertEqual(self.network.attempts, [])
        outcome = self.halp("get", "myapp")
        self.assertEqual(
            (outcome.code, outcome.lines, outcome.stderr),
            (0, [f"{NOW - 5} 198.51.100.8 4001"], ""),
        )
        self.assertEqual(self.network.attempts, [SERVER])

    def test_json(self) -> None:
        outcome = self.halp("insert", "myapp", "198.51.100.7", "4000", "-s", "10", "--json")
        self.assertEqual(outcome.code, 0)
        self.assertEqual(
            outcome.json(),
            {
                "label": "myapp",
                "entry": {"timestamp": NOW - 10, "host": "198.51.100.7", "port": 4000},
            },
        )


# -- announce ------------------------------------------------------------------


class AnnounceTests(CLITestCase):
    def test_stored(self) -> None:
        """A server that stores the entry: one ``stored`` line, exit 0."""
        store = self.serve()
        outcome = self.halp("announce", "myapp", "198.51.100.7", "4000", "--server", str(SERVER))
        self.assertEqual(
            (outcome.code, outcome.lines, outcome.stderr), (0, [f"{SERVER} stored"], "")
        )
        self.assertEqual(
            self.successResultOf(store.get("myapp", 0, 10, 0)),
            [Entry(NOW, "198.51.100.7", 4000)],
        )

    def test_unreachable(self) -> None:
        outcome = self.halp("announce", "myapp", "198.51.100.7", "4000", "--server", str(SERVER))
        self.assertEqual(outcome.code, 1)
        (line,) = outcome.lines
        self.assertTrue(line.startswith(f"{SERVER} unreachable: "), line)
        self.assertOneWarning(outcome, "no HALP server could be reached")

    def test_no_server_known(self) -> None:
        outcome = self.halp("announce", "myapp", "198.51.100.7", "4000")
        self.assertEqual((outcome.code, outcome.stdout), (1, ""))
        self.assertOneWarning(outcome, "no HALP server known", "halp insert halp")

    def test_refused(self) -> None:
        """A server that answers but refuses the entry: exit 1."""
        self.serve_skewed()
        outcome = self.halp("announce", "myapp", "198.51.100.7", "4000", "--server", str(SERVER))
        self.assertEqual(outcome.code, 1)
        (line,) = outcome.lines
        self.assertTrue(line.startswith(f"{SERVER} refused: expired"), line)
        self.assertOneWarning(outcome, "no server stored the entry")

    def test_stored_by_one_of_two(self) -> None:
        """One server storing the entry is enough for exit 0."""
        self.serve(SERVER)
        outcome = self.halp(
            "announce", "myapp", "198.51.100.7", "4000",
            "--server", str(SERVER), "--server", str(OTHER),
        )
        self.assertEqual((outcome.code, outcome.stderr), (0, ""))
        self.assertEqual(len(outcome.lines), 2)
        self.assertIn(f"{SERVER} stored", outcome.lines)
        self.assertIn(f"{OTHER} unreachable", "\n".join(outcome.lines))

    def test_fanout(self) -> None:
        """``--fanout 1`` sends the entry to one server only."""
        self.serve(SERVER)
        self.serve(OTHER)
        outcome = self.halp(
            "announce", "myapp", "198.51.100.7", "4000", "--fanout", "1",
            "--server", str(SERVER), "--server", str(OTHER),
        )
        self.assertEqual(outcome.code, 0)
        self.assertEqual(len(outcome.lines), 1)
        self.assertEqual(len(self.network.attempts), 1)

    def test_json(self) -> None:
        self.serve(SERVER)
        self.serve_skewed(OTHER)
        outcome = self.halp(
            "announce", "myapp", "198.51.100.7", "4000", "--json",
            "--server", str(SERVER), "--server", str(OTHER),
        )
        self.assertEqual(outcome.code, 0)
        document = outcome.json()
        self.assertEqual(set(document), {"label", "entry", "reached", "stored", "servers"})
        self.assertEqual(document["label"], "myapp")
        self.assertEqual(
            document["entry"], {"timestamp": NOW, "host": "198.51.100.7", "port": 4000}
        )
        self.assertEqual((document["reached"], document["stored"]), (2, 1))
        rows = {row["server"]: row for row in document["servers"]}
        self.assertEqual(
            rows[str(SERVER)],
            {"server": str(SERVER), "ok": True, "dialect": "halp1", "stored": True},
        )
        refused = rows[str(OTHER)]
        self.assertEqual(set(refused), RESULT_KEYS | {"dialect", "stored", "reason"})
        self.assertFalse(refused["stored"])
        self.assertIn("expired", refused["reason"])

    def test_json_unreachable(self) -> None:
        outcome = self.halp(
            "announce", "myapp", "198.51.100.7", "4000", "--json", "--server", str(SERVER)
        )
        self.assertEqual(outcome.code, 1)
        document = outcome.json()
        self.assertEqual((document["reached"], document["stored"]), (0, 0))
        (row,) = document["servers"]
        self.assertEqual(set(row), RESULT_KEYS | {"error"})
        self.assertOneWarning(outcome, "no HALP server could be reached")


# -- labels --------------------------------------------------------------------


class LabelsTests(CLITestCase):
    def setUp(self) -> None:
        super().setUp()
        self.store = self.serve()
        put(self.store, "myapp", Entry(NOW - 10, "198.51.100.7", 4000))
        put(self.store, "other/v2", Entry(NOW - 5, "198.51.100.8", 4001))
        put(self.store, "other/v1", Entry(NOW - 20, "198.51.100.9", 4002))

    def test_labels(self) -> None:
        """``labels`` prints ``TIMESTAMP LABEL`` lines, newest first."""
        outcome = self.halp("labels", "--server", str(SERVER))
        self.assertEqual(
            (outcome.code, outcome.lines, outcome.stderr),
            (0, [f"{NOW - 5} other", f"{NOW - 10} myapp"], ""),
        )

    def test_sublabels(self) -> None:
        outcome = self.halp("labels", "other/", "--server", str(SERVER))
        self.assertEqual(
            (outcome.code, outcome.lines), (0, [f"{NOW - 5} other/v2", f"{NOW - 20} other/v1"])
        )

    def test_servers_down(self) -> None:
        """With no server reachable, the cached labels are printed; exit 1."""
        put(self.cache, "cachedapp", Entry(NOW - 7, "198.51.100.7", 4000))
        outcome = self.halp("labels", "--server", str(OTHER))
        self.assertEqual((outcome.code, outcome.lines), (1, [f"{NOW - 7} cachedapp"]))
        self.assertOneWarning(outcome, "no HALP server could be reached", "showing cached labels")

    def test_json(self) -> None:
        outcome = self.halp("labels", "other", "--json", "--server", str(SERVER))
        self.assertEqual(outcome.code, 0)
        self.assertEqual(
            outcome.json(),
            {
                "prefix": "other",
                "labels": [
                    {"timestamp": NOW - 5, "name": "other/v2"},
                    {"timestamp": NOW - 20, "name": "other/v1"},
                ],
                "from_cache": False,
                "servers": [{"server": str(SERVER), "ok": True, "dialect": "halp1"}],
            },
        )


# -- servers -------------------------------------------------------------------


class ServersTests(CLITestCase):
    def test_none_known(self) -> None:
        outcome = self.halp("servers")
        self.assertEqual((outcome.code, outcome.stdout), (0, ""))
        self.assertOneWarning(outcome, "no HALP server known", "halp insert halp")

    def test_table(self) -> None:
        """
        ``servers`` prints an aligned table of known servers with their
        statistics and notes, asking no server.
        """
        self.serve(SERVER)
        self.halp("insert", "halp", "192.0.2.1", "7100")
        self.halp("insert", "halp", "192.0.2.2", "7100")
        self.halp("get", "myapp")
        self.network.attempts.clear()
        outcome = self.halp("servers", "--server", "libhalp://192.0.2.3:7100")
        self.assertEqual((outcome.code, outcome.stderr), (0, ""))
        self.assertEqual(self.network.attempts, [])
        header, *rows = outcome.lines
        self.assertEqual(
            header.split(), ["SERVER", "QUALITY", "OK", "FAILED", "LAST", "SUCCESS", "NOTES"]
        )
        self.assertEqual(len(rows), 3)
        self.assertEqual(
            rows[0].split(), ["192.0.2.1:7100", "10100", "1", "0", "2023-11-14T22:13:20Z"]
        )
        # The other two have not answered: their LAST SUCCESS is "never".
        by_server = {row.split()[0]: row for row in rows}
        self.assertEqual(
            by_server["192.0.2.2:7100"].split(),
            ["192.0.2.2:7100", "9900", "0", "1", "never"]
            + ["backoff", "until", "2023-11-14T22:14:20Z"],
        )
        self.assertEqual(
            by_server["192.0.2.3:7100"].split(),
            ["192.0.2.3:7100", "10000", "0", "0", "never", "pinned,", "libhalp"],
        )
        # The columns line up.
        column = header.index("QUALITY")
        for row in rows:
            self.assertEqual(row[column - 2 : column], "  ")
            self.assertNotEqual(row[column], " ")

    def test_json(self) -> None:
        self.serve(SERVER)
        self.halp("get", "myapp", "--server", str(SERVER))
        outcome = self.halp("servers", "--json", "--server", str(SERVER))
        self.assertEqual(outcome.code, 0)
        document = outcome.json()
        self.assertEqual(set(document), {"servers"})
        (row,) = document["servers"]
        self.assertEqual(set(row), RECORD_KEYS)
        wanted = ("server", "host", "port", "pinned", "successes", "last_success", "dialect")
        self.assertEqual(
            {k: row[k] for k in wanted},
            {
                "server": str(SERVER),
                "host": "192.0.2.1",
                "port": 7100,
                "pinned": True,
                "successes": 1,
                "last_success": NOW,
                "dialect": "halp1",
            },
        )

    def test_json_none_known(self) -> None:
        outcome = self.halp("servers", "--json")
        self.assertEqual((outcome.code, outcome.json()), (0, {"servers": []}))


# -- HTTP faces ------------------------------------------------------------------


class HTTPFaceTests(CLITestCase):
    def test_get_and_servers(self) -> None:
        """
        ``get --server http://...`` asks the HTTP face; ``servers`` then
        lists it by its URL, with its scheme.
        """
        store = MemoryStore()
        self.network.http_server(WEB, store)
        put(store, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        outcome = self.halp("get", "myapp", "--server", WEB.url)
        self.assertEqual(
            (outcome.code, outcome.lines, outcome.stderr),
            (0, [f"{NOW - 5} 198.51.100.8 4001"], ""),
        )
        outcome = self.halp("servers", "--json")
        (row,) = outcome.json()["servers"]
        self.assertEqual(
            {k: row[k] for k in ("server", "scheme", "host", "port", "successes")},
            {
                "server": "http://192.0.2.3:8080/",
                "scheme": "http",
                "host": "192.0.2.3",
                "port": 8080,
                "successes": 1,
            },
        )
        outcome = self.halp("servers")
        self.assertEqual(outcome.lines[1].split()[0], "http://192.0.2.3:8080/")

    def test_insert_http_server(self) -> None:
        """``insert halp/http HOST PORT`` adds an HTTP face by hand."""
        store = MemoryStore()
        self.network.http_server(WEB, store)
        put(store, "myapp", Entry(NOW - 5, "198.51.100.8", 4001))
        self.assertEqual(self.halp("insert", "halp/http", "192.0.2.3", "8080").code, 0)
        outcome = self.halp("get", "myapp")
        self.assertEqual((outcome.code, outcome.lines), (0, [f"{NOW - 5} 198.51.100.8 4001"]))
        self.assertEqual(set(self.network.attempts), {WEB})


# -- stats ---------------------------------------------------------------------


class StatsTests(CLITestCase):
    def assertTable(self, outcome: Outcome, server: str, uptime: int) -> dict[str, str]:
        """
        ``stats`` printed ``# SERVER`` and then one ``NAME  VALUE`` line per
        field, uptime first then every counter, the values in one column.
        """
        self.assertEqual((outcome.code, outcome.stderr), (0, ""))
        header, *rows = outcome.lines
        self.assertEqual(header, f"# {server}")
        names = ["uptime", *COUNTERS]
        self.assertEqual([row.split()[0] for row in rows], names)
        column = max(map(len, names)) + 2
        values = {}
        for name, row in zip(names, rows):
            self.assertEqual(row[:column], name.ljust(column), row)
            self.assertNotEqual(row[column], " ", row)
            values[name] = row[column:]
        self.assertEqual(values["uptime"], str(uptime))
        for value in values.values():
            self.assertTrue(value.isdigit(), values)
        return values

    def test_prints_counters(self) -> None:
        self.serve(SERVER)
        self.network.advance(42)
        outcome = self.halp("stats", "--server", str(SERVER))
        values = self.assertTable(outcome, str(SERVER), 42)
        self.assertEqual(values["entries-inserted"], "0")

    def test_best_known_server(self) -> None:
        """Without ``--server``, the best known server answers."""
        self.serve(SERVER)
        self.halp("insert", "halp", "192.0.2.2", "7100")
        self.halp("insert", "halp", "192.0.2.1", "7100")
        self.halp("get", "myapp")  # 192.0.2.2 fails: 192.0.2.1 is the better one
        self.network.attempts.clear()
        outcome = self.halp("stats")
        self.assertTable(outcome, str(SERVER), 0)
        self.assertEqual(self.network.attempts, [SERVER])

    def test_json(self) -> None:
        store = self.serve(SERVER)
        self.network.advance(7)
        self.halp("announce", "myapp", "198.51.100.7", "4000", "--server", str(SERVER))
        self.assertEqual(len(self.successResultOf(store.get("myapp", 0, 10, 0))), 1)
        outcome = self.halp("stats", "--json", "--server", str(SERVER))
        self.assertEqual((outcome.code, outcome.stderr), (0, ""))
        document = outcome.json()
        self.assertEqual(set(document), {"server", "counters"})
        self.assertEqual(document["server"], str(SERVER))
        counters = document["counters"]
        self.assertEqual(list(counters), sorted(["uptime", *COUNTERS]))
        for name, value in counters.items():
            self.assertIs(type(value), int, name)
        self.assertEqual((counters["uptime"], counters["entries-inserted"]), (7, 1))

    def test_over_http(self) -> None:
        """``--server http://...`` asks the server's HTTP face."""
        site = self.network.http_server(WEB)
        self.network.advance(5)
        self.halp("announce", "myapp", "198.51.100.7", "4000", "--server", WEB.url)
        self.assertEqual(
            self.successResultOf(site.core.store.get("myapp", 0, 10, 0)),
            [Entry(NOW + 5, "198.51.100.7", 4000)],
        )
        outcome = self.halp("stats", "--server", "http://192.0.2.3:8080/")
        values = self.assertTable(outcome, "http://192.0.2.3:8080/", 5)
        self.assertEqual(values["entries-inserted"], "1")
        outcome = self.halp("stats", "--json", "--server", "http://192.0.2.3:8080")
        self.assertEqual(outcome.json()["server"], "http://192.0.2.3:8080/")
        self.assertEqual(outcome.json()["counters"]["uptime"], 5)

    def test_unreachable(self) -> None:
        outcome = self.halp("stats", "--server", str(SERVER))
        self.assertEqual((outcome.code, outcome.stdout), (1, ""))
        self.assertOneWarning(
            outcome, "no HALP server could be reached", f"{SERVER} unreachable", "refused"
        )

    def test_unreachable_http(self) -> None:
        outcome = self.halp("stats", "--json", "--server", WEB.url)
        self.assertEqual((outcome.code, outcome.stdout), (1, ""))
        self.assertOneWarning(outcome, "no HALP server could be reached", f"{WEB.url} unreachable")

    def test_not_http(self) -> None:
        """A web server without the HALP API: exit 1, one line."""
        self.network.listen(WEB, Site(Resource()))
        outcome = self.halp("stats", "--server", WEB.url)
        self.assertEqual((outcome.code, outcome.stdout), (1, ""))
        self.assertOneWarning(outcome, f"{WEB.url} unreachable", "404")

    def test_first_server_only(self) -> None:
        """The first ``--server`` is the one asked, even when another is up."""
        self.serve(OTHER)
        outcome = self.halp("stats", "--server", str(SERVER), "--server", str(OTHER))
        self.assertEqual(outcome.code, 1)
        self.assertOneWarning(outcome, str(SERVER))
        self.assertEqual(self.network.attempts, [SERVER])

    def test_no_server_known(self) -> None:
        outcome = self.halp("stats")
        self.assertEqual((outcome.code, outcome.stdout), (1, ""))
        self.assertOneWarning(outcome, "no HALP server known", "halp insert halp")
        self.assertEqual(self.network.attempts, [])

    def test_no_server_known_json(self) -> None:
        outcome = self.halp("stats", "--json")
        self.assertEqual((outcome.code, outcome.stdout), (1, ""))
        self.assertOneWarning(outcome, "no HALP server known")


# -- the parser ----------------------------------------------------------------


class ParserTests(SynchronousTestCase):
    def assertUsageError(self, argv: list[str], prog: str, *parts: str) -> None:
        """
        Parsing ``argv`` exits with status 2 and one line on stderr,
        ``PROG: MESSAGE (see 'PROG --help')``, containing ``parts``.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        e = self.assertRaises(SystemExit, make_parser().parse_args, argv)
        self.assertEqual(e.code, 2)
        text = err.getvalue()
        self.assertEqual(text.count("\n"), 1, text)
        self.assertTrue(text.startswith(f"{prog}: "), text)
        self.assertTrue(text.endswith(f" (see '{prog} --help')\n"), text)
        for part in parts:
            self.assertIn(part, text)

    def test_defaults(self) -> None:
        args = make_parser().parse_args(["get", "myapp"])
        self.assertEqual(
            vars(args),
            {
                "command": "get",
                "label": "myapp",
                "limit": 10,
                "offline": False,
                "cache": None,
                "server": [],
                "timeout": 5.0,
                "json": False,
                "verbose": False,
            },
        )

    def test_options(self) -> None:
        args = make_parser().parse_args(
            [
                "announce", "myapp/v2", "198.51.100.7", "4000",
                "--fanout", "3",
                "--server", "192.0.2.1:7100",
                "--server", "libhalp://[2001:db8::1]:7100",
                "--timeout", "1.5",
                "--cache", "/srv/cache",
                "--json",
                "-v",
            ]
        )
        self.assertEqual(
            vars(args),
            {
                "command": "announce",
                "label": "myapp/v2",
                "host": "198.51.100.7",
                "port": 4000,
                "fanout": 3,
                "server": ["192.0.2.1:7100", "libhalp://[2001:db8::1]:7100"],
                "timeout": 1.5,
                "cache": "/srv/cache",
                "json": True,
                "verbose": True,
            },
        )

    def test_insert_seconds(self) -> None:
        args = make_parser().parse_args(["insert", "halp", "192.0.2.1", "7100", "-s", "60"])
        self.assertEqual(
            (args.label, args.host, args.port, args.seconds), ("halp", "192.0.2.1", 7100, 60)
        )
        self.assertEqual(make_parser().parse_args(["insert", "x", "h", "1"]).seconds, 0)

    def test_labels_prefix(self) -> None:
        parser = make_parser()
        self.assertEqual(parser.parse_args(["labels"]).prefix, "")
        self.assertEqual(parser.parse_args(["labels", "/"]).prefix, "")
        self.assertEqual(parser.parse_args(["labels", "myapp/"]).prefix, "myapp")

    def test_no_command(self) -> None:
        self.assertUsageError([], "halp", "required")

    def test_unknown_command(self) -> None:
        self.assertUsageError(["frobnicate"], "halp", "frobnicate")

    def test_missing_label(self) -> None:
        self.assertUsageError(["get"], "halp get", "LABEL")

    def test_bad_label(self) -> None:
        self.assertUsageError(["get", "my app"], "halp get", "LABEL")
        self.assertUsageError(["labels", "labels"], "halp labels", "PREFIX")

    def test_bad_limit(self) -> None:
        self.assertUsageError(["get", "x", "--limit", "0"], "halp get", "between 1 and 100")
        self.assertUsageError(["get", "x", "--limit", "101"], "halp get", "between 1 and 100")
        self.assertUsageError(["get", "x", "--limit", "ten"], "halp get", "not a number")

    def test_bad_port(self) -> None:
        self.assertUsageError(["insert", "x", "192.0.2.1", "0"], "halp insert", "1 and 65535")
        self.assertUsageError(["announce", "x", "192.0.2.1", "ip"], "halp announce", "not a port")

    def test_bad_seconds(self) -> None:
        insert = ["insert", "x", "192.0.2.1", "1", "-s"]
        self.assertUsageError([*insert, "-5"], "halp insert", "negative")
        self.assertUsageError([*insert, "1.5"], "halp insert", "whole")

    def test_bad_fanout(self) -> None:
        self.assertUsageError(
            ["announce", "x", "192.0.2.1", "1", "--fanout", "0"], "halp announce", "at least 1"
        )

    def test_bad_server(self) -> None:
        get = ["get", "x", "--server"]
        self.assertUsageError([*get, "192.0.2.1"], "halp get", "expected HOST:PORT")
        self.assertUsageError([*get, "2001:db8::1:7100"], "halp get", "[ADDRESS]:PORT")

    def test_stats(self) -> None:
        args = make_parser().parse_args(["stats"])
        self.assertEqual((args.command, args.server, args.json), ("stats", [], False))
        args = make_parser().parse_args(["stats", "--json", "--server", "http://192.0.2.3:8080/"])
        self.assertEqual((args.server, args.json), (["http://192.0.2.3:8080/"], True))

    def test_http_servers(self) -> None:
        """The URLs of servers' HTTP faces are servers too."""
        servers = [
            "http://192.0.2.3:8080/",
            "http://192.0.2.3:8080",
            "https://halp.example/",
            "HTTP://[2001:db8::1]:8443/",
        ]
        argv = ["get", "x"]
        for server in servers:
            argv += ["--server", server]
        self.assertEqual(make_parser().parse_args(argv).server, servers)

    def test_bad_scheme(self) -> None:
        self.assertUsageError(
            ["stats", "--server", "ftp://192.0.2.3:21/"], "halp stats", "bad server", "ftp://"
        )
        self.assertUsageError(
            ["get", "x", "--server", "gopher://192.0.2.3"], "halp get", "expected HOST:PORT"
        )

    def test_bad_url(self) -> None:
        self.assertUsageError(
            ["stats", "--server", "http://192.0.2.3:8080/halp"], "halp stats", "no path"
        )
        self.assertUsageError(
            ["stats", "--server", "http://192.0.2.3:99999/"], "halp stats", "bad server"
        )
        self.assertUsageError(["stats", "--server", "http:///"], "halp stats", "no host")

    def test_bad_timeout(self) -> None:
        self.assertUsageError(["servers", "--timeout", "0"], "halp servers", "more than 0")
        self.assertUsageError(["servers", "--timeout", "soon"], "halp servers", "not a number")

    def test_unknown_option(self) -> None:
        self.assertUsageError(["get", "x", "--frobnicate"], "halp", "--frobnicate")

    def test_version(self) -> None:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        e = self.assertRaises(SystemExit, make_parser().parse_args, ["--version"])
        self.assertEqual((e.code, out.getvalue()), (0, f"halp {__version__}\n"))

    def test_main_usage_error(self) -> None:
        """``main`` exits 2 on a bad command line before starting a reactor."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        e = self.assertRaises(SystemExit, main, ["get"])
        self.assertEqual(e.code, 2)
        self.assertEqual(err.getvalue().count("\n"), 1)


# -- the cache -----------------------------------------------------------------


class CacheTests(SynchronousTestCase):
    def test_default_from_environment(self) -> None:
        with mock.patch.dict(os.environ, {"HALP_CACHE": "/srv/halp-cache"}):
            self.assertEqual(default_cache_dir(), "/srv/halp-cache")

    def test_default_in_home(self) -> None:
        """Without ``HALP_CACHE`` (or with it empty) the cache is ``~/.halp``."""
        with mock.patch.dict(os.environ, {"HOME": "/home/someone", "HALP_CACHE": ""}):
            self.assertEqual(default_cache_dir(), "/home/someone/.halp")
            del os.environ["HALP_CACHE"]
            self.assertEqual(default_cache_dir(), "/home/someone/.halp")

    def test_open_cache_creates(self) -> None:
        directory = os.path.join(self.mktemp(), "cache")
        store = open_cache(Clock(), directory)
        self.assertIsInstance(store, SQLiteStore)
        assert isinstance(store, SQLiteStore)
        self.assertEqual(store.path, os.path.join(directory, CACHE_FILE))
        self.assertTrue(os.path.isfile(store.path))
        self.assertEqual(os.stat(directory).st_mode & 0o777, 0o700)
        self.successResultOf(store.close())

    def test_open_cache_on_file(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a directory\n")
        e = self.assertRaises(UsageError, open_cache, Clock(), path)
        self.assertIn("not a directory", str(e))

    def test_open_cache_under_file(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a directory\n")
        e = self.assertRaises(UsageError, open_cache, Clock(), os.path.join(path, "cache"))
        self.assertIn("cannot create cache directory", str(e))

    def test_open_cache_not_a_database(self) -> None:
        """A cache file that is not a database is moved aside and replaced."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, CACHE_FILE)
        with open(path, "wb") as f:
            f.write(b"this is not an SQLite database, not at all" * 100)
        warnings: list[str] = []
        store = open_cache(Clock(), directory, warnings.append)
        self.successResultOf(store.close())
        self.assertEqual(len(warnings), 1)
        self.assertIn(f"moved it to {path + '.bak'!r}", warnings[0])
        with open(path + ".bak", "rb") as f:
            self.assertTrue(f.read().startswith(b"this is not an SQLite database"))

    def test_open_cache_unusable_where_it_is(self) -> None:
        """A cache that cannot be used where it is stays, and is an error."""
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, CACHE_FILE))
        e = self.assertRaises(UsageError, open_cache, Clock(), directory)
        self.assertIn("cannot use cache", str(e))
        self.assertIn("is a directory", str(e))
        self.assertFalse(os.path.exists(os.path.join(directory, CACHE_FILE + ".bak")))

    def test_run_with_unusable_cache(self) -> None:
        """``run`` reports an unusable ``--cache`` on one line, exit 2."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a directory\n")
        args = make_parser().parse_args(["get", "myapp", "--cache", path])
        out, err = io.StringIO(), io.StringIO()
        d = Deferred.fromCoroutine(run(Clock(), args, out, err))
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(err.getvalue(), f"halp: cache {path!r} is not a directory\n")

    def test_run_uses_environment(self) -> None:
        """Without ``--cache``, ``run`` opens the cache ``HALP_CACHE`` names."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a directory\n")
        args = make_parser().parse_args(["servers"])
        out, err = io.StringIO(), io.StringIO()
        # HOME is unusable too, so that a cache opened in the wrong place
        # fails rather than touching the real home directory.
        with mock.patch.dict(os.environ, {"HALP_CACHE": path, "HOME": path}):
            d = Deferred.fromCoroutine(run(Clock(), args, out, err))
        self.assertEqual(self.successResultOf(d), 2)
        self.assertIn(repr(path), err.getvalue())


class DamagedCacheTests(TestCase):
    """
    ``halp`` on a damaged cache file, with the real SQLite cache (and so
    the real reactor, whose thread runs it): one line on stderr, the file
    kept as ``cache.sqlite3.bak``, and the command works on a new cache.
    """

    def run_halp(self, *argv: str) -> Deferred[tuple[int, str, str]]:
        from twisted.internet import reactor

        args = make_parser().parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        d = Deferred.fromCoroutine(run(reactor, args, out, err))
        return d.addCallback(lambda code: (code, out.getvalue(), err.getvalue()))

    async def test_damaged_cache_is_replaced(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, CACHE_FILE)
        garbage = b"SQLite format 3\x00" + b"\xa5" * 8192
        with open(path, "wb") as f:
            f.write(garbage)
        code, out, err = await self.run_halp(
            "insert", "myapp", "198.51.100.7", "6881", "--cache", directory
        )
        self.assertEqual(err.splitlines(), [
            f"halp: cache {path!r} is not a usable HALP database: file is not a "
            f"database; moved it to {path + '.bak'!r} and started an empty cache"
        ])
        self.assertEqual(code, 0, err)
        with open(path + ".bak", "rb") as f:
            self.assertEqual(f.read(), garbage)
        code, out, err = await self.run_halp("get", "myapp", "--offline", "--cache", directory)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual([line.split()[1:] for line in out.splitlines()],
                         [["198.51.100.7", "6881"]])
