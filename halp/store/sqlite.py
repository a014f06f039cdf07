# -*- test-case-name: halp.test.test_store,halp.test.test_sqlite -*-
"""
The SQLite :class:`~halp.interfaces.IHostStore`, HALP's embedded default.

All SQL of HALP lives in this module and in ``schema/*.sql``.

One dedicated thread owns the database connection.  Operations queue up on
the reactor thread; whenever the thread is idle, everything queued so far
runs there as one batch in one transaction (group commit), each operation
in its own savepoint so that one failing operation does not undo the others.
A write's Deferred fires only after its batch committed, so an acknowledged
insert survives a ``kill -9``; with the default ``synchronous=full`` it also
survives a power loss.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from halp.error import StoreError, StoreSchemaError
from halp.interfaces import IHostStore
from halp.model import (
    Census,
    Change,
    ChangePage,
    Entry,
    LabelCount,
    LabelInfo,
    Merged,
    label_ancestors,
    label_parent,
)
from halp.store.cursor import make_cursor, parse_cursor

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "open_database"]

#: The schema version this code reads and writes.
SCHEMA_VERSION = 3

#: ``PRAGMA synchronous`` values an operator may choose.
SYNCHRONOUS_MODES = ("full", "normal")

#: Operations run in one batch at most; the rest wait for the next one.
MAX_BATCH = 512

T = TypeVar("T")


def _schema(name: str) -> str:
    return resources.files("halp.store").joinpath("schema").joinpath(name).read_text("utf-8")


def open_database(path: str, synchronous: str = "full") -> sqlite3.Connection:
    """
    Open (creating if needed) a HALP database and bring its schema to
    :data:`SCHEMA_VERSION`.

    :raises StoreSchemaError: if the file is not a HALP database or was
        written by a newer HALP.
    :raises StoreError: if SQLite cannot open it.
    """
    if synchronous not in SYNCHRONOUS_MODES:
        raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open SQLite database {path!r}: {e}") from None
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        # Check (and create or upgrade) the schema before anything that
        # writes to the file: a foreign database is refused untouched.
        _migrate(conn, path)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreSchemaError(f"{path!r} is not a usable HALP database: {e}") from None
    except StoreError:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    tables = {
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if not tables:
        conn.executescript("BEGIN IMMEDIATE;\n" + _schema("v1.sql") + "\nCOMMIT;")
        tables = {"halp_version"}
    if "halp_version" not in tables:
        raise StoreSchemaError(
            f"{path!r} is an SQLite database but not a HALP one "
            "(no halp_version table); refusing to touch it"
        )
    row = conn.execute("SELECT version FROM halp_version").fetchone()
    if row is None or not isinstance(row[0], int) or row[0] < 1:
        raise StoreSchemaError(
            f"{path!r} has a damaged halp_version table; refusing to touch it"
        )
    version = row[0]
    if version > SCHEMA_VERSION:
        raise StoreSchemaError(
            f"{path!r} has schema version {version}, newer than this HALP "
            f"supports ({SCHEMA_VERSION}); upgrade HALP"
        )
    while version < SCHEMA_VERSION:
        version += 1
        conn.executescript(
            "BEGIN IMMEDIATE;\n"
            + _schema(f"upgrade-to-v{version}.sql")
            + f"\nUPDATE halp_version SET version = {version};\nCOMMIT;"
        )


# -- running operations off the reactor thread -------------------------------


class _Runner(Protocol):
    def run(self, work: Callable[[], T]) -> Deferred[T]:
        ...

    def stop(self) -> None:
        ...


class _ThreadRunner:
    """
    Runs work on one dedicated thread, started on first use (after any fork
    that ``twistd`` does to daemonize) and stopped by :meth:`stop` or, at
    the latest, when the reactor shuts down, so that a program that never
    closes its store still exits.
    """

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self._reactor = reactor
        self._pool: ThreadPool | None = None

    def run(self, work: Callable[[], T]) -> Deferred[T]:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="halp-sqlite")
            self._pool.start()
            if IReactorCore.providedBy(self._reactor):
                self._reactor.addSystemEventTrigger("after", "shutdown", self.stop)
        return deferToThreadPool(self._reactor, self._pool, work)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None


class InlineRunner:
    """Runs work at once on the calling thread.  For tests only."""

    def run(self, work: Callable[[], T]) -> Deferred[T]:
        return maybeDeferred(work)

    def stop(self) -> None:
        pass


@dataclass
class _Op(Generic[T]):
    work: Callable[[sqlite3.Connection], T]
    write: bool
    done: Deferred[T]


def _store_failure(e: sqlite3.Error, doing: str) -> Failure:
    return Failure(StoreError(f"SQLite {doing} failed: {e}"))


# -- the operations themselves (run on the database thread) ------------------


def _merge(
    conn: sqlite3.Connection, changes: Sequence[Change], max_entries: int
) -> list[Merged]:
    (seq,) = conn.execute("SELECT seq FROM feed_state").fetchone()
    results: list[Merged] = []
    touched: dict[str, list[int]] = {}
    for i, change in enumerate(changes):
        label, entry = change.label, change.entry
        touched.setdefault(label, []).append(i)
        key = (label, entry.host, entry.port)
        old = conn.execute(
            "SELECT ts FROM entries WHERE label = ? AND host = ? AND port = ?", key
        ).fetchone()
        if old is not None and old[0] >= entry.timestamp:
            results.append(Merged(old[0], False))
            continue
        seq += 1
        conn.execute(
            "INSERT INTO entries (label, host, port, ts, seq, source, via)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (label, host, port) DO UPDATE"
            " SET ts = excluded.ts, seq = excluded.seq, source = excluded.source,"
            " via = excluded.via",
            (*key, entry.timestamp, seq, change.source, change.via),
        )
        if old is None:
            conn.execute(
                "INSERT INTO labels (name, parent, ts, entries) VALUES (?, ?, 0, 1)"
                " ON CONFLICT (name) DO UPDATE SET entries = entries + 1",
                (label, label_parent(label)),
            )
        results.append(Merged(entry.timestamp, True))
    conn.execute("UPDATE feed_state SET seq = ?", (seq,))
    for label, positions in touched.items():
        row = conn.execute("SELECT entries FROM labels WHERE name = ?", (label,)).fetchone()
        count = row[0] if row is not None else 0
        if count > max_entries:
            victims = conn.execute(
                "SELECT host, port FROM entries WHERE label = ?"
                " ORDER BY ts ASC, host DESC, port DESC LIMIT ?",
                (label, count - max_entries),
            ).fetchall()
            conn.executemany(
                "DELETE FROM entries WHERE label = ? AND host = ? AND port = ?",
                [(label, host, port) for host, port in victims],
            )
            conn.execute(
                "UPDATE labels SET entries = entries - ? WHERE name = ?",
                (len(victims), label),
            )
            evicted = {(host, port) for host, port in victims}
            for i in positions:
                if changes[i].entry.address in evicted:
                    results[i] = Merged(None, False)
        kept = [t for i in positions if (t := results[i].stored) is not None]
        if kept:
            newest = max(kept)
            for name in label_ancestors(label):
                conn.execute(
                    "INSERT INTO labels (name, parent, ts, entries) VALUES (?, ?, ?, 0)"
                    " ON CONFLICT (name) DO UPDATE SET ts = max(ts, excluded.ts)",
                    (name, label_parent(name), newest),
                )
    return results


def _changes(conn: sqlite3.Connection, cursor: str, limit: int, since: int) -> ChangePage:
    (epoch,) = conn.execute("SELECT epoch FROM feed_state").fetchone()
    after = parse_cursor(cursor, epoch)
    rows = conn.execute(
        "SELECT seq, label, host, port, ts, source, via FROM entries INDEXED BY entries_feed"
        " WHERE seq > ? AND ts >= ? ORDER BY seq LIMIT ?",
        (after, since, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1][0] if rows else after
    found = [
        Change(label, Entry(ts, host, port), source, via)
        for _, label, host, port, ts, source, via in rows
    ]
    return ChangePage(found, make_cursor(epoch, last), more)


def _get(
    conn: sqlite3.Connection, label: str, start: int, stop: int, since: int
) -> list[Entry]:
    rows = conn.execute(
        "SELECT ts, host, port FROM entries INDEXED BY entries_order"
        " WHERE label = ? AND ts >= ? ORDER BY ts DESC, host, port LIMIT ? OFFSET ?",
        (label, since, max(0, stop - start), start),
    )
    return [Entry(ts, host, port) for ts, host, port in rows]


def _list_labels(
    conn: sqlite3.Connection, parent: str, start: int, stop: int, since: int
) -> list[LabelInfo]:
    rows = conn.execute(
        "SELECT ts, name FROM labels INDEXED BY labels_order"
        " WHERE parent = ? AND ts >= ? ORDER BY ts DESC, name LIMIT ? OFFSET ?",
        (parent, since, max(0, stop - start), start),
    )
    return [LabelInfo(ts, name) for ts, name in rows]


def _census(conn: sqlite3.Connection, since: int, limit: int) -> Census:
    labels, entries = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(entries), 0) FROM labels"
        " WHERE entries > 0 AND ts >= ?",
        (since,),
    ).fetchone()
    rows = conn.execute(
        "SELECT name, entries, ts FROM labels WHERE entries > 0 AND ts >= ?"
        " ORDER BY ts DESC, name LIMIT ?",
        (since, max(0, limit)),
    )
    return Census(labels, entries, [LabelCount(*row) for row in rows])


def _remove(
    conn: sqlite3.Connection, label: str, addresses: Sequence[tuple[str, int]]
) -> int:
    cursor = conn.executemany(
        "DELETE FROM entries WHERE label = ? AND host = ? AND port = ?",
        [(label, host, port) for host, port in addresses],
    )
    # rowcount sums what each DELETE deleted: an address given twice is
    # deleted, and counted, once.
    removed = max(0, cursor.rowcount)
    if removed:
        conn.execute(
            "UPDATE labels SET entries = entries - ? WHERE name = ?", (removed, label)
        )
    return removed


def _get_state(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _put_state(conn: sqlite3.Connection, key: str, value: str | None) -> None:
    if value is None:
        conn.execute("DELETE FROM state WHERE key = ?", (key,))
    else:
        conn.execute(
            "INSERT INTO state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _purge(conn: sqlite3.Connection, before: int) -> int:
    counts = conn.execute(
        "SELECT label, COUNT(*) FROM entries WHERE ts < ? GROUP BY label", (before,)
    ).fetchall()
    conn.execute("DELETE FROM entries WHERE ts < ?", (before,))
    conn.executemany(
        "UPDATE labels SET entries = entries - ? WHERE name = ?",
        [(n, label) for label, n in counts],
    )
    conn.execute("DELETE FROM labels WHERE ts < ?", (before,))
    return sum(n for _, n in counts)


@implementer(IHostStore)
class SQLiteStore:
    """
    :class:`~halp.interfaces.IHostStore` on an SQLite file.

    :param reactor: delivers results from the database thread.
    :param path: the database file (created if missing), or ``:memory:``.
    :param synchronous: ``full`` (default: an acknowledged insert survives a
        power loss) or ``normal`` (it survives a crash of HALP, and the
        database stays consistent after a power loss, but the last commits
        may be lost).
    """

    name = "sqlite"
    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFromThreads,
        path: str,
        synchronous: str = "full",
        *,
        runner: _Runner | None = None,
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = path
        self._synchronous = synchronous
        self._runner: _Runner = runner if runner is not None else _ThreadRunner(reactor)
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Op[Any]] = []
        self._busy = False
        self._closed = False
        self._drained: list[Deferred[None]] = []

    # The IHostStore methods: each queues one operation.

    def merge(self, changes: Sequence[Change], max_entries: int) -> Deferred[list[Merged]]:
        changes = tuple(changes)
        return self._submit(lambda c: _merge(c, changes, max_entries), True)

    def changes(self, cursor: str, limit: int, since: int) -> Deferred[ChangePage]:
        return self._submit(lambda c: _changes(c, cursor, limit, since), False)

    def get(self, label: str, start: int, stop: int, since: int) -> Deferred[list[Entry]]:
        return self._submit(lambda c: _get(c, label, start, stop, since), False)

    def list_labels(
        self, parent: str, start: int, stop: int, since: int
    ) -> Deferred[list[LabelInfo]]:
        return self._submit(lambda c: _list_labels(c, parent, start, stop, since), False)

    def census(self, since: int, limit: int) -> Deferred[Census]:
        return self._submit(lambda c: _census(c, since, limit), False)

    def remove(self, label: str, addresses: Sequence[tuple[str, int]]) -> Deferred[int]:
        addresses = tuple(addresses)
        return self._submit(lambda c: _remove(c, label, addresses), True)

    def get_state(self, key: str) -> Deferred[str | None]:
        return self._submit(lambda c: _get_state(c, key), False)

    def put_state(self, key: str, value: str | None) -> Deferred[None]:
        return self._submit(lambda c: _put_state(c, key, value), True)

    def purge(self, before: int) -> Deferred[int]:
        return self._submit(lambda c: _purge(c, before), True)

    def close(self) -> Deferred[None]:
        self._closed = True
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        if not self._busy:
            self._finish()
        return drained

    # Batching.

    def _submit(self, work: Callable[[sqlite3.Connection], T], write: bool) -> Deferred[T]:
        if self._closed:
            return fail(StoreError("the SQLite store is closed"))
        op: _Op[T] = _Op(work, write, Deferred())
        self._queue.append(op)
        if not self._busy:
            self._next_batch()
        return op.done

    def _next_batch(self) -> None:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        self._busy = True
        self._runner.run(lambda: self._run_batch(batch)).addBoth(self._batch_done, batch)

    def _batch_done(self, outcome: list[object] | Failure, batch: list[_Op[Any]]) -> None:
        for i, op in enumerate(batch):
            result = outcome if isinstance(outcome, Failure) else outcome[i]
            if isinstance(result, Failure):
                op.done.errback(result)
            else:
                op.done.callback(result)
        self._busy = False
        if self._queue:
            self._next_batch()
        elif self._closed:
            self._finish()

    def _finish(self) -> None:
        self._runner.stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        drained, self._drained = self._drained, []
        for d in drained:
            d.callback(None)

    def _run_batch(self, batch: list[_Op[Any]]) -> list[object]:
        """Run on the database thread: one transaction for the whole batch."""
        try:
            if self._conn is None:
                self._conn = open_database(self.path, self._synchronous)
            conn = self._conn
        except StoreError as e:
            failure = Failure(e)
            return [failure] * len(batch)
        writes = any(op.write for op in batch)
        results: list[object] = []
        try:
            conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            for op in batch:
                results.append(self._run_one(conn, op))
                if not conn.in_transaction:
                    # SQLite rolls the whole transaction back on some errors
                    # (I/O, full disk, no memory): nothing of it stands.
                    raise sqlite3.OperationalError("transaction rolled back by SQLite")
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            failure = _store_failure(e, "commit")
            failure.cleanFailure()
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            # The connection may be unusable (I/O error): start afresh.
            conn.close()
            self._conn = None
            return [failure] * len(batch)
        return results

    @staticmethod
    def _run_one(conn: sqlite3.Connection, op: _Op[Any]) -> object:
        conn.execute("SAVEPOINT op")
        try:
            result = op.work(conn)
        except Exception as e:
            failure = _store_failure(e, "operation") if isinstance(e, sqlite3.Error) else Failure()
            failure.cleanFailure()
            if conn.in_transaction:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            return failure
        conn.execute("RELEASE op")
        return result
