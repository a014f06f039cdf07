"""
What the SQLite store does beyond the store contract: schema versions,
refusing foreign files, group commit, failure isolation, query plans, and
agreement with the memory store under random operations.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from importlib import resources
from typing import Any, Callable, TypeVar

from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from halp.error import StoreError, StoreSchemaError
from halp.model import Change, Entry, LabelInfo, Merged
from halp.store import check_store, insert_entries, parse_store_spec
from halp.store.memory import MemoryStore
from halp.store.sqlite import (
    SCHEMA_VERSION,
    InlineRunner,
    SQLiteStore,
    _open_error,
    open_database,
)

T = TypeVar("T")


class RecordingRunner(InlineRunner):
    """Runs work inline, or holds it until :meth:`release` when asked to."""

    def __init__(self) -> None:
        self.batches = 0
        self.hold = False
        self.held: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def run(self, work: Callable[[], T]) -> Deferred[T]:
        self.batches += 1
        if self.hold:
            d: Deferred[T] = Deferred()
            self.held.append((work, d))
            return d
        return maybeDeferred(work)

    def release(self) -> None:
        held, self.held = self.held, []
        for work, d in held:
            maybeDeferred(work).chainDeferred(d)


def _tables(path: str) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }


def _version(path: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        (version,) = conn.execute("SELECT version FROM halp_version").fetchone()
    assert isinstance(version, int)
    return version


class SchemaTests(SynchronousTestCase):
    def test_current_version_is_4(self) -> None:
        self.assertEqual(SCHEMA_VERSION, 4)

    def test_every_upgrade_script_is_shipped(self) -> None:
        schema = resources.files("halp.store").joinpath("schema")
        self.assertTrue(schema.joinpath("v1.sql").is_file())
        for version in range(2, SCHEMA_VERSION + 1):
            self.assertTrue(schema.joinpath(f"upgrade-to-v{version}.sql").is_file())

    def test_new_database_has_every_table(self) -> None:
        path = self.mktemp()
        open_database(path).close()
        self.assertEqual(_version(path), SCHEMA_VERSION)
        self.assertEqual(
            _tables(path), {"halp_version", "entries", "labels", "state", "feed_state"}
        )

    def test_upgrades_version_1_in_place(self) -> None:
        path = self.mktemp()
        v1 = resources.files("halp.store").joinpath("schema/v1.sql").read_text("utf-8")
        with sqlite3.connect(path) as conn:
            conn.executescript(v1)
            conn.execute(
                "INSERT INTO entries (label, host, port, ts) VALUES ('a', 'h.example', 1, 5)"
            )
            conn.execute(
                "INSERT INTO labels (name, parent, ts, entries) VALUES ('a', '', 5, 1)"
            )
        conn.close()
        self.assertEqual(_version(path), 1)
        self.assertNotIn("state", _tables(path))

        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        self.assertEqual(
            self.successResultOf(store.get("a", 0, 10, 0)), [Entry(5, "h.example", 1)]
        )
        self.assertEqual(
            self.successResultOf(store.list_labels("", 0, 10, 0)), [LabelInfo(5, "a")]
        )
        self.assertIsNone(self.successResultOf(store.get_state("k")))
        self.successResultOf(store.put_state("k", "v"))
        # The entry count came through the upgrade: the cap still holds.
        self.assertEqual(
            self.successResultOf(insert_entries(store, ["a"], [Entry(6, "h.example", 2)], 1)),
            [[6]],
        )
        self.assertEqual(
            self.successResultOf(store.get("a", 0, 10, 0)), [Entry(6, "h.example", 2)]
        )
        self.successResultOf(store.close())
        self.assertEqual(_version(path), SCHEMA_VERSION)
        self.assertIn("state", _tables(path))

    def test_upgrades_version_2_entries_into_the_change_feed(self) -> None:
        path = self.mktemp()
        schema = resources.files("halp.store").joinpath("schema")
        with sqlite3.connect(path) as conn:
            conn.executescript(schema.joinpath("v1.sql").read_text("utf-8"))
            conn.executescript(schema.joinpath("upgrade-to-v2.sql").read_text("utf-8"))
            conn.execute("UPDATE halp_version SET version = 2")
            conn.executemany(
                "INSERT INTO entries (label, host, port, ts) VALUES (?, 'h.example', ?, ?)",
                [("a", 1, 30), ("b", 2, 10), ("a", 3, 20)],
            )
            conn.execute("INSERT INTO labels (name, parent, ts, entries) VALUES ('a', '', 30, 2)")
            conn.execute("INSERT INTO labels (name, parent, ts, entries) VALUES ('b', '', 10, 1)")
        conn.close()

        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        page = self.successResultOf(store.changes("", 10, 0))
        # Old entries join the feed oldest-confirmed first, with no provenance.
        self.assertEqual(
            page.changes,
            [
                Change("b", Entry(10, "h.example", 2)),
                Change("a", Entry(20, "h.example", 3)),
                Change("a", Entry(30, "h.example", 1)),
            ],
        )
        self.assertFalse(page.more)
        # New changes are numbered after them.
        self.successResultOf(store.merge([Change("b", Entry(40, "h.example", 2), "192.0.2.9")], 10))
        later = self.successResultOf(store.changes(page.cursor, 10, 0))
        self.assertEqual(later.changes, [Change("b", Entry(40, "h.example", 2), "192.0.2.9")])
        self.assertEqual(
            self.successResultOf(store.get("a", 0, 10, 0)),
            [Entry(30, "h.example", 1), Entry(20, "h.example", 3)],
        )
        self.successResultOf(store.close())
        self.assertEqual(_version(path), SCHEMA_VERSION)

    def test_upgrades_version_3_entries_into_their_network_groups(self) -> None:
        path = self.mktemp()
        schema = resources.files("halp.store").joinpath("schema")
        sources = {
            1: "1.2.3.4",
            2: "1.2.200.9",
            3: "8.8.8.8",
            4: "",
            5: "10.0.0.1",
            6: "2a00:1450::1",
            7: "h.example",
        }
        with sqlite3.connect(path) as conn:
            for name in ("v1.sql", "upgrade-to-v2.sql", "upgrade-to-v3.sql"):
                conn.executescript(schema.joinpath(name).read_text("utf-8"))
            conn.execute("UPDATE halp_version SET version = 3")
            conn.executemany(
                "INSERT INTO entries (label, host, port, ts, seq, source, via)"
                " VALUES ('a', 'h.example', ?, ?, ?, ?, '')",
                [(port, 10 * port, port, source) for port, source in sources.items()],
            )
            conn.execute("UPDATE feed_state SET seq = 7")
            conn.execute("INSERT INTO labels (name, parent, ts, entries) VALUES ('a', '', 70, 7)")
        conn.close()

        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        # Entries 1 and 2 are in v4:1.2 already: a third one evicts entry 1.
        merged = self.successResultOf(
            store.merge([Change("a", Entry(80, "h.example", 8), "1.2.0.1")], 100, 2)
        )
        self.assertEqual(merged, [Merged(80, True)])
        got = self.successResultOf(store.get("a", 0, 10, 0))
        self.assertEqual([e.port for e in got], [8, 7, 6, 5, 4, 3, 2])
        self.successResultOf(store.close())
        self.assertEqual(_version(path), 4)
        with closing(sqlite3.connect(path)) as conn:
            groups = dict(conn.execute("SELECT port, grp FROM entries"))
            indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        self.assertEqual(
            groups,
            {
                2: "v4:1.2",
                3: "v4:8.8",
                4: "",
                5: "host:10.0.0.1",
                6: "v6:2a00:1450",
                7: "name:h.example",
                8: "v4:1.2",
            },
        )
        self.assertIn("entries_group", indexes)

    def test_reopen_keeps_the_change_feed_numbering(self) -> None:
        path = self.mktemp()
        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        self.successResultOf(insert_entries(store, ["a"], [Entry(5, "h.example", 1)], 10))
        cursor = self.successResultOf(store.changes("", 10, 0)).cursor
        self.successResultOf(store.close())
        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        self.assertEqual(self.successResultOf(store.changes(cursor, 10, 0)).changes, [])
        self.successResultOf(insert_entries(store, ["a"], [Entry(6, "h.example", 2)], 10))
        self.assertEqual(
            self.successResultOf(store.changes(cursor, 10, 0)).changes,
            [Change("a", Entry(6, "h.example", 2))],
        )
        self.successResultOf(store.close())

    def test_a_wiped_database_does_not_honour_old_cursors(self) -> None:
        first, second = self.mktemp(), self.mktemp()
        cursors = []
        for path in (first, second):
            store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
            self.successResultOf(insert_entries(store, ["a"], [Entry(5, "h.example", 1)], 10))
            cursors.append(self.successResultOf(store.changes("", 10, 0)).cursor)
            self.successResultOf(store.close())
        # Same numbers, different epochs.
        self.assertEqual(cursors[0].split(":")[1], cursors[1].split(":")[1])
        self.assertNotEqual(cursors[0], cursors[1])
        store = SQLiteStore(reactor, second, runner=InlineRunner())  # type: ignore[arg-type]
        page = self.successResultOf(store.changes(cursors[0], 10, 0))
        self.assertEqual(page.changes, [Change("a", Entry(5, "h.example", 1))])
        self.successResultOf(store.close())

    def test_reopen_keeps_state(self) -> None:
        path = self.mktemp()
        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        self.successResultOf(store.put_state("client/servers", '{"a": 1}'))
        self.successResultOf(store.put_state("gone", "x"))
        self.successResultOf(store.put_state("gone", None))
        self.successResultOf(store.close())
        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        self.assertEqual(
            self.successResultOf(store.get_state("client/servers")), '{"a": 1}'
        )
        self.assertIsNone(self.successResultOf(store.get_state("gone")))
        self.successResultOf(store.close())

    def test_reopen_keeps_removals_and_counts(self) -> None:
        path = self.mktemp()
        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        entries = [Entry(i, "h.example", i) for i in (1, 2, 3)]
        self.successResultOf(insert_entries(store, ["a"], entries, 10))
        self.assertEqual(self.successResultOf(store.remove("a", [("h.example", 2)])), 1)
        self.successResultOf(store.close())
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT entries FROM labels WHERE name = 'a'").fetchone()
            (rows,) = conn.execute("SELECT COUNT(*) FROM entries WHERE label = 'a'").fetchone()
        conn.close()
        self.assertEqual((count, rows), (2, 2))

    def test_new_database_gets_current_version(self) -> None:
        path = self.mktemp()
        open_database(path).close()
        with sqlite3.connect(path) as conn:
            (version,) = conn.execute("SELECT version FROM halp_version").fetchone()
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        self.assertEqual(version, SCHEMA_VERSION)
        self.assertEqual(mode, "wal")

    def test_reopen_keeps_data(self) -> None:
        path = self.mktemp()
        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        self.successResultOf(insert_entries(store, ["a"], [Entry(5, "h.example", 1)], 10))
        self.successResultOf(store.close())
        store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
        self.assertEqual(
            self.successResultOf(store.get("a", 0, 10, 0)), [Entry(5, "h.example", 1)]
        )
        self.successResultOf(store.close())

    def test_refuses_foreign_sqlite_file(self) -> None:
        path = self.mktemp()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
        e = self.assertRaises(StoreSchemaError, open_database, path)
        self.assertIn("not a HALP one", str(e))
        with sqlite3.connect(path) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        self.assertEqual(tables, ["t"])

    def test_refuses_newer_schema(self) -> None:
        path = self.mktemp()
        open_database(path).close()
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE halp_version SET version = ?", (SCHEMA_VERSION + 1,))
        e = self.assertRaises(StoreSchemaError, open_database, path)
        self.assertIn("newer than this HALP supports", str(e))

    def test_refuses_damaged_version_table(self) -> None:
        path = self.mktemp()
        open_database(path).close()
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM halp_version")
        e = self.assertRaises(StoreSchemaError, open_database, path)
        self.assertIn("damaged halp_version table", str(e))

    def test_refuses_file_that_is_not_a_database(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"this is not sqlite" * 100)
        e = self.assertRaises(StoreSchemaError, open_database, path)
        self.assertIn("not a usable HALP database", str(e))

    def test_unopenable_path(self) -> None:
        self.assertRaises(StoreError, open_database, self.mktemp() + "/missing/dir/db")

    def test_bad_synchronous_mode(self) -> None:
        self.assertRaises(StoreError, open_database, ":memory:", "off")

    def test_get_uses_the_order_index(self) -> None:
        """No scan and no sort per get, whatever the size of the label."""
        conn = open_database(":memory:")
        plan = " ".join(
            row[-1]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT ts, host, port FROM entries"
                " INDEXED BY entries_order WHERE label = ? AND ts >= ?"
                " ORDER BY ts DESC, host, port LIMIT ? OFFSET ?",
                ("a", 0, 10, 0),
            )
        )
        self.assertIn("USING COVERING INDEX entries_order", plan)
        self.assertNotIn("TEMP B-TREE", plan)
        conn.close()

    def test_group_quota_uses_the_group_index(self) -> None:
        """A group's entries beyond the quota: one range scan, no sort."""
        conn = open_database(":memory:")
        plan = " ".join(
            row[-1]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT host, port FROM entries INDEXED BY entries_group"
                " WHERE label = ? AND grp = ? ORDER BY ts DESC, host, port"
                " LIMIT -1 OFFSET ?",
                ("a", "v4:1.2", 15),
            )
        )
        self.assertIn("USING COVERING INDEX entries_group (label=? AND grp=?)", plan)
        self.assertNotIn("TEMP B-TREE", plan)
        conn.close()


class BatchingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runner = RecordingRunner()
        self.store = SQLiteStore(reactor, ":memory:", runner=self.runner)  # type: ignore[arg-type]

    def test_operations_queued_during_a_batch_share_the_next_one(self) -> None:
        self.runner.hold = True
        first = insert_entries(self.store, ["a"], [Entry(1, "h.example", 1)], 100)
        later = [insert_entries(self.store, ["a"], [Entry(i, "h.example", i)], 100) for i in range(2, 12)]
        reads = self.store.get("a", 0, 100, 0)
        self.assertEqual(self.runner.batches, 1)
        self.assertNoResult(first)
        self.runner.release()
        self.assertEqual(self.successResultOf(first), [[1]])
        self.assertEqual(self.runner.batches, 2)
        for d in later:
            self.assertNoResult(d)
        self.runner.release()
        self.assertEqual([self.successResultOf(d) for d in later], [[[i]] for i in range(2, 12)])
        self.assertEqual(len(self.successResultOf(reads)), 11)
        self.assertEqual(self.runner.batches, 2)

    def test_a_failing_operation_does_not_undo_the_others(self) -> None:
        self.runner.hold = True
        blocker = self.store.get("a", 0, 1, 0)
        good = insert_entries(self.store, ["a"], [Entry(1, "h.example", 1)], 10)

        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO entries (label, host, port, ts, seq) VALUES ('b', 'x', 1, 1, 999)")
            raise ZeroDivisionError("bug")

        bad: Deferred[None] = self.store._submit(broken, True)
        self.runner.release()
        self.runner.release()
        self.successResultOf(blocker)
        self.assertEqual(self.successResultOf(good), [[1]])
        self.failureResultOf(bad, ZeroDivisionError)
        self.runner.hold = False
        self.assertEqual(self.successResultOf(self.store.get("b", 0, 10, 0)), [])

    def test_sqlite_errors_become_store_errors(self) -> None:
        def broken(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT * FROM no_such_table")

        failure = self.failureResultOf(self.store._submit(broken, False), StoreError)
        self.assertIn("no_such_table", str(failure.value))
        # The store keeps working.
        self.successResultOf(insert_entries(self.store, ["a"], [Entry(1, "h.example", 1)], 10))

    def test_failed_commit_fails_every_operation_of_the_batch(self) -> None:
        self.successResultOf(self.store.get("a", 0, 1, 0))  # opens the database
        conn = self.store._conn
        assert conn is not None
        # A commit fails when a deferred constraint breaks at COMMIT time.
        conn.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (p INTEGER REFERENCES parent(id)"
            " DEFERRABLE INITIALLY DEFERRED);"
            "PRAGMA foreign_keys = ON;"
        )

        def orphan(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO child (p) VALUES (42)")

        self.runner.hold = True
        blocker = self.store.get("a", 0, 1, 0)
        insert = insert_entries(self.store, ["a"], [Entry(1, "h.example", 1)], 10)
        bad: Deferred[None] = self.store._submit(orphan, True)
        self.runner.release()
        self.runner.release()
        self.successResultOf(blocker)
        self.failureResultOf(insert, StoreError)
        self.failureResultOf(bad, StoreError)

    def test_closed_store_refuses_work(self) -> None:
        self.successResultOf(self.store.close())
        self.failureResultOf(self.store.get("a", 0, 1, 0), StoreError)

    def test_transaction_rolled_back_by_sqlite_fails_the_whole_batch(self) -> None:
        """
        On I/O errors, a full disk or no memory, SQLite rolls the whole
        transaction back; writes after that must not be committed one by
        one and then reported as failed.
        """

        def rolled_back(conn: sqlite3.Connection) -> None:
            conn.execute("ROLLBACK")  # what SQLite does on SQLITE_IOERR
            raise sqlite3.OperationalError("disk I/O error")

        # On a file, so that what was committed outlives the reconnection.
        store = SQLiteStore(reactor, self.mktemp(), runner=self.runner)  # type: ignore[arg-type]
        self.runner.hold = True
        blocker = store.get("a", 0, 1, 0)
        before = insert_entries(store, ["a"], [Entry(1, "h.example", 1)], 10)
        broken: Deferred[None] = store._submit(rolled_back, False)
        after = insert_entries(store, ["b"], [Entry(2, "h.example", 2)], 10)
        self.runner.release()
        self.runner.release()
        self.successResultOf(blocker)
        for d in (before, broken, after):
            self.failureResultOf(d, StoreError)
        self.runner.hold = False
        self.assertEqual(self.successResultOf(store.get("a", 0, 10, 0)), [])
        self.assertEqual(self.successResultOf(store.get("b", 0, 10, 0)), [])
        self.successResultOf(store.close())

    def test_unopenable_database_fails_operations(self) -> None:
        store = SQLiteStore(
            reactor, self.mktemp() + "/missing/db", runner=InlineRunner()  # type: ignore[arg-type]
        )
        self.failureResultOf(store.get("a", 0, 10, 0), StoreError)


class ThreadTests(TestCase):
    """The real database thread: results arrive on the reactor thread."""

    def test_many_concurrent_inserts_all_commit(self) -> Deferred[None]:
        path = self.mktemp()
        store = SQLiteStore(reactor, path)  # type: ignore[arg-type]
        ds = [insert_entries(store, ["a"], [Entry(i, "h.example", i)], 1000) for i in range(1, 301)]

        def check(_: object) -> Deferred[None]:
            with sqlite3.connect(path) as conn:
                (n,) = conn.execute("SELECT COUNT(*) FROM entries").fetchone()
                (count,) = conn.execute("SELECT entries FROM labels WHERE name = 'a'").fetchone()
            self.assertEqual((n, count), (300, 300))
            return store.close()

        from twisted.internet.defer import gatherResults

        return gatherResults(ds).addCallback(check)


# -- the memory store is the model of every other store ----------------------

hosts = st.sampled_from(["192.0.2.1", "192.0.2.2", "h.example", "2001:db8::1"])
ports = st.sampled_from([1, 2, 7100])
times = st.integers(min_value=0, max_value=50)
labels = st.sampled_from(["a", "b", "a/x", "a/y", "a/x/deep", "c/z"])
entries = st.builds(Entry, times, hosts, ports)
state_keys = ["client/servers", "server/peers"]
# Sources of a few network groups: two in v4:1.2, and the exempt "".
sources = st.sampled_from(["", "1.2.3.4", "1.2.9.9", "8.8.8.8", "10.0.0.1"])


class StoresAgree(RuleBasedStateMachine):
    """Random operations give the same answers from SQLite as from memory."""

    def __init__(self) -> None:
        super().__init__()
        self.model = MemoryStore()
        self.sqlite = SQLiteStore(reactor, ":memory:", runner=InlineRunner())  # type: ignore[arg-type]
        self.tc = SynchronousTestCase()

    def both(self, call: Callable[[Any], Deferred[Any]]) -> Any:
        expected = self.tc.successResultOf(call(self.model))
        actual = self.tc.successResultOf(call(self.sqlite))
        assert expected == actual, (expected, actual)
        return expected

    @rule(
        ls=st.lists(labels, min_size=1, max_size=3, unique=True),
        es=st.lists(entries, max_size=6),
        cap=st.integers(min_value=1, max_value=6),
    )
    def insert(self, ls: list[str], es: list[Entry], cap: int) -> None:
        self.both(lambda s: insert_entries(s, ls, es, cap))

    @rule(
        changes=st.lists(st.tuples(labels, entries, sources), max_size=8),
        cap=st.integers(min_value=1, max_value=6),
        quota=st.integers(min_value=0, max_value=3),
    )
    def merge_with_quota(
        self, changes: list[tuple[str, Entry, str]], cap: int, quota: int
    ) -> None:
        merged = [Change(label, entry, source) for label, entry, source in changes]
        self.both(lambda s: s.merge(merged, cap, quota))

    @rule(label=labels, start=st.integers(0, 8), width=st.integers(0, 8), since=times)
    def get(self, label: str, start: int, width: int, since: int) -> None:
        self.both(lambda s: s.get(label, start, start + width, since))

    @rule(parent=st.sampled_from(["", "a", "a/x", "c", "b"]), start=st.integers(0, 3), since=times)
    def list_labels(self, parent: str, start: int, since: int) -> None:
        self.both(lambda s: s.list_labels(parent, start, start + 5, since))

    @rule(
        label=labels,
        addresses=st.lists(st.tuples(hosts, ports), max_size=4),
    )
    def remove(self, label: str, addresses: list[tuple[str, int]]) -> None:
        self.both(lambda s: s.remove(label, addresses))

    @rule(key=st.sampled_from(state_keys), value=st.none() | st.sampled_from(["", "{}", "x"]))
    def put_state(self, key: str, value: str | None) -> None:
        self.both(lambda s: s.put_state(key, value))

    @precondition(lambda self: True)
    @rule(before=times)
    def purge(self, before: int) -> None:
        self.both(lambda s: s.purge(before))

    @invariant()
    def everything_agrees(self) -> None:
        for label in ["a", "b", "a/x", "a/y", "a/x/deep", "c/z"]:
            self.both(lambda s: s.get(label, 0, 1000, 0))
        self.both(lambda s: s.changes("", 1000, 0).addCallback(lambda page: page.changes))
        for parent in ["", "a", "a/x", "c"]:
            result: list[LabelInfo] = self.both(lambda s: s.list_labels(parent, 0, 1000, 0))
            assert all(info.name.startswith(parent) for info in result)
        for key in state_keys:
            self.both(lambda s: s.get_state(key))


class StoresAgreeTests(SynchronousTestCase):
    def test_sqlite_agrees_with_memory(self) -> None:
        run_state_machine_as_test(
            StoresAgree,
            settings=settings(max_examples=150, stateful_step_count=30, deadline=None),
        )


# -- damaged and unusable files ------------------------------------------------


def _digest(path: str) -> bytes:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def _filled_database(path: str, entries: int = 2000) -> None:
    """A closed HALP database of ``entries`` entries: a few dozen pages."""
    store = SQLiteStore(reactor, path, runner=InlineRunner())  # type: ignore[arg-type]
    rows = [Entry(i, f"host-{i}.example", 1) for i in range(1, entries + 1)]
    stored: list[object] = []
    insert_entries(store, ["a"], rows, entries).addCallback(stored.append)
    store.close()
    assert stored, "the insert failed"


class DamagedFileTests(SynchronousTestCase):
    """
    A file that is not a usable HALP database is refused with
    :class:`StoreSchemaError` (the file is bad: the client cache moves it
    aside) and left exactly as it was; a file that cannot be used where it
    is (a missing or read-only directory, a read-only file, a lock) is
    refused with a plain :class:`StoreError` (nothing wrong with the file:
    never moved aside).  Every message is one line naming the file and
    what to do.
    """

    def assertRefused(
        self,
        path: str,
        *expected: str,
        error: type[StoreError] = StoreSchemaError,
        wal: bool = False,
    ) -> StoreError:
        before = _digest(path) if os.path.isfile(path) else None
        e: StoreError = self.assertRaises(StoreError, open_database, path, check=True)
        self.assertIs(type(e), error)
        message = str(e)
        self.assertNotIn("\n", message)
        self.assertIn(repr(path), message)
        for text in expected:
            self.assertIn(text, message)
        if before is not None:
            self.assertEqual(_digest(path), before, "a refused file was changed")
        self.assertEqual(os.path.exists(path + "-wal"), wal, "a -wal appeared or vanished")
        return e

    def test_truncated_file(self) -> None:
        path = self.mktemp()
        _filled_database(path)
        size = os.path.getsize(path)
        self.assertGreater(size, 16 * 4096)
        for keep in (size // 2, size - 4096, 4096, 100, 50):
            with open(path, "r+b") as f:
                f.truncate(keep)
            self.assertRefused(path, "malformed", "move it", "restore a backup")

    def test_bad_magic(self) -> None:
        path = self.mktemp()
        _filled_database(path)
        with open(path, "r+b") as f:
            f.write(b"Not SQLite fmt 3\x00")
        self.assertRefused(path, "file is not a database", "move it")

    def test_garbage_file(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(bytes(range(256)) * 64)
        self.assertRefused(path, "not a usable HALP database")

    def test_damage_inside_is_found_by_the_check(self) -> None:
        """
        A page overwritten in the middle of the file leaves the header
        valid; ``check=True`` (what the server and the client cache use)
        reads every page and finds it.
        """
        path = self.mktemp()
        _filled_database(path)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek((size // 4096 // 2) * 4096)
            f.write(b"\xa5" * 4096)
        self.assertRefused(path, "malformed", "move it")

    def test_empty_file_becomes_a_database(self) -> None:
        """An empty file holds nothing to lose: it becomes a new database."""
        path = self.mktemp()
        open(path, "wb").close()
        open_database(path, check=True).close()
        self.assertEqual(_version(path), SCHEMA_VERSION)

    def test_foreign_database(self) -> None:
        path = self.mktemp()
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.commit()
        self.assertRefused(path, "not a HALP one", "refusing to touch it")

    def test_future_schema_version(self) -> None:
        path = self.mktemp()
        _filled_database(path, 10)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("UPDATE halp_version SET version = ?", (SCHEMA_VERSION + 1,))
            conn.commit()
        self.assertRefused(path, f"schema version {SCHEMA_VERSION + 1}", "upgrade HALP")
        self.assertEqual(_version(path), SCHEMA_VERSION + 1)

    def test_refused_database_keeps_its_wal(self) -> None:
        """
        A newer HALP killed with its last commits in the ``-wal`` file: an
        older HALP refuses the database without folding the log into it or
        deleting it (which closing the last connection would do).
        """
        import shutil

        path, crashed = self.mktemp(), self.mktemp()
        _filled_database(path, 10)
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("UPDATE halp_version SET version = ?", (SCHEMA_VERSION + 1,))
            for suffix in ("", "-wal", "-shm"):
                shutil.copy(path + suffix, crashed + suffix)
        before = {suffix: _digest(crashed + suffix) for suffix in ("", "-wal")}
        self.assertRefused(crashed, "upgrade HALP", wal=True)
        self.assertEqual({suffix: _digest(crashed + suffix) for suffix in before}, before)

    def test_missing_directory(self) -> None:
        directory = self.mktemp()
        path = os.path.join(directory, "halp.sqlite3")
        e = self.assertRefused(path, "does not exist", "create it", error=StoreError)
        self.assertIn(repr(directory), str(e))
        self.assertFalse(os.path.exists(directory))

    def test_directory_is_a_file(self) -> None:
        parent = self.mktemp()
        open(parent, "w").close()
        self.assertRefused(
            os.path.join(parent, "halp.sqlite3"), "is not a directory", error=StoreError
        )

    def test_path_is_a_directory(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        self.assertRefused(path, "is a directory", error=StoreError)

    def _skip_if_root(self) -> None:
        if os.geteuid() == 0:
            raise SkipTest(
                "root writes to read-only files; tests/test_crash_e2e.py opens a "
                "database on a read-only file system instead"
            )

    def test_read_only_file(self) -> None:
        self._skip_if_root()
        path = self.mktemp()
        _filled_database(path, 10)
        os.chmod(path, 0o444)
        self.assertRefused(path, "not readable and writable", "write access", error=StoreError)

    def test_read_only_directory(self) -> None:
        self._skip_if_root()
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "halp.sqlite3")
        _filled_database(path, 10)
        os.chmod(directory, 0o555)
        self.addCleanup(os.chmod, directory, 0o755)
        self.assertRefused(path, "directory", "not writable", error=StoreError)

    def test_a_lock_is_not_damage(self) -> None:
        """
        What SQLite reports for a locked database is a plain
        :class:`StoreError`: the file is fine, and a client cache that is
        merely busy must never be moved aside.
        """
        path = self.mktemp()
        _filled_database(path, 10)
        with closing(sqlite3.connect(path, isolation_level=None)) as holder, closing(
            sqlite3.connect(path, timeout=0, isolation_level=None)
        ) as other:
            holder.execute("BEGIN EXCLUSIVE")
            busy = self.assertRaises(sqlite3.OperationalError, other.execute, "BEGIN EXCLUSIVE")
            holder.execute("ROLLBACK")
        e = _open_error(busy, path)
        self.assertIs(type(e), StoreError)
        self.assertIn("locked", str(e))

    def test_check_store_checks(self) -> None:
        """``twistd halp`` checks its SQLite store with ``check=True``."""
        path = self.mktemp()
        _filled_database(path)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek((size // 4096 // 2) * 4096)
            f.write(b"\xa5" * 4096)
        open_database(path).close()  # the header alone looks fine
        e = self.assertRaises(
            StoreSchemaError, check_store, parse_store_spec(f"sqlite:{path}")
        )
        self.assertIn("malformed", str(e))


# -- a full disk -----------------------------------------------------------------


class DiskFullTests(SynchronousTestCase):
    """
    A full disk (``SQLITE_FULL``, forced with ``PRAGMA max_page_count``)
    fails writes with :class:`StoreError` (answered ``error unavailable``)
    while reads are answered, and writes work again as soon as there is
    room, on the same connection, with no restart.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.runner = RecordingRunner()
        self.store = SQLiteStore(reactor, self.path, runner=self.runner)  # type: ignore[arg-type]
        self.first = [Entry(1, "192.0.2.1", 1)]
        self.successResultOf(insert_entries(self.store, ["a"], self.first, 100_000))
        conn = self.store._conn
        assert conn is not None
        self.conn = conn
        (self.pages,) = conn.execute("PRAGMA page_count").fetchone()
        # The disk is full: the database may not grow by a single page.
        conn.execute(f"PRAGMA max_page_count = {self.pages}")

    def tearDown(self) -> None:
        self.successResultOf(self.store.close())

    def big_insert(self, label: str = "big") -> Deferred[list[list[int | None]]]:
        rows = [Entry(2, f"host-{i}-{'x' * 100}.example", 1) for i in range(500)]
        return insert_entries(self.store, [label], rows, 100_000)

    def test_writes_fail_reads_work(self) -> None:
        failure = self.failureResultOf(self.big_insert(), StoreError)
        self.assertIn("full", str(failure.value))
        self.assertEqual(self.successResultOf(self.store.get("a", 0, 10, 0)), self.first)
        self.assertEqual(self.successResultOf(self.store.get("big", 0, 10, 0)), [])
        self.assertIs(self.store._conn, self.conn, "the connection was dropped")

    def test_reads_batched_with_the_failed_write_are_answered(self) -> None:
        """
        Reads that shared a batch (a transaction) with the write that hit
        the full disk are run again on their own, and see nothing of it.
        """
        self.runner.hold = True
        blocker = self.store.get("a", 0, 1, 0)
        before = self.store.get("a", 0, 10, 0)
        write = self.big_insert()
        after = self.store.get("big", 0, 10, 0)
        labels = self.store.list_labels("", 0, 10, 0)
        self.runner.release()
        self.runner.release()
        self.successResultOf(blocker)
        self.failureResultOf(write, StoreError)
        self.assertEqual(self.successResultOf(before), self.first)
        self.assertEqual(self.successResultOf(after), [])
        self.assertEqual([i.name for i in self.successResultOf(labels)], ["a"])

    def test_writes_resume_when_there_is_room(self) -> None:
        for _ in range(3):
            self.failureResultOf(self.big_insert(), StoreError)
        self.conn.execute("PRAGMA max_page_count = 1000000")
        stored = self.successResultOf(self.big_insert())
        self.assertEqual(len(stored[0]), 500)
        self.assertEqual(len(self.successResultOf(self.store.get("big", 0, 1000, 0))), 500)
        self.assertIs(self.store._conn, self.conn, "the store reconnected")
        self.assertEqual(self.conn.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
