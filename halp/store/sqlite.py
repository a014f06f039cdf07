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

import os
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
    address_group,
    label_ancestors,
    label_parent,
)
from halp.store.cursor import make_cursor, parse_cursor

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "open_database"]

#: The schema version this code reads and writes.
SCHEMA_VERSION = 4

#: ``PRAGMA synchronous`` values an operator may choose.
SYNCHRONOUS_MODES = ("full", "normal")

#: Operations run in one batch at most; the rest wait for the next one.
MAX_BATCH = 512

T = TypeVar("T")


def _schema(name: str) -> str:
    return resources.files("halp.store").joinpath("schema").joinpath(name).read_text("utf-8")


# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
_SQLITE_READONLY = 8

#: How SQLite words the two errors that mean the file itself is bad, for
#: Pythons before 3.11, whose exceptions carry no result code.
_DAMAGED_MESSAGES = ("database disk image is malformed", "file is not a database")


def _primary_code(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_damaged(e: BaseException) -> bool:
    """
    Whether ``e`` says that a database file is damaged or is not a
    database at all (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``), as opposed to
    a problem around it: permissions, locks, a full disk, an I/O error.
    """
    code = _primary_code(e)
    if code is not None:
        return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return any(m in str(e) for m in _DAMAGED_MESSAGES)


def _is_full(e: BaseException) -> bool:
    code = _primary_code(e)
    return code == _SQLITE_FULL if code is not None else "disk is full" in str(e)


def _check_access(path: str) -> None:
    """
    Refuse, before SQLite touches anything, a database that HALP could not
    write to: a missing directory, a directory where SQLite cannot create
    the ``-wal`` and ``-shm`` files of WAL mode, a file that is not
    readable and writable.  (SQLite would open a read-only file and fail
    on every write.)

    :raises StoreError: with a one-line explanation and what to do.
    """
    directory = os.path.dirname(path) or "."
    # As the effective user, the one SQLite's open() will run as.
    effective = os.access in os.supports_effective_ids
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise StoreError(
            f"cannot use {path!r}: its directory {directory!r} {what}; "
            "create it or choose another path"
        )
    if os.path.isdir(path):
        raise StoreError(f"{path!r} is a directory; give the path of a database file")
    if os.path.exists(path) and not os.access(
        path, os.R_OK | os.W_OK, effective_ids=effective
    ):
        raise StoreError(
            f"{path!r} is not readable and writable (read-only file or file "
            "system); give the user HALP runs as read and write access to it"
        )
    if not os.access(directory, os.W_OK | os.X_OK, effective_ids=effective):
        raise StoreError(
            f"cannot use {path!r}: its directory {directory!r} is not writable "
            "(SQLite creates the -wal and -shm files beside the database); "
            "give the user HALP runs as write access to it"
        )


def _quick_check(conn: sqlite3.Connection) -> None:
    """
    ``PRAGMA quick_check``: read every page once (about 0.3 s per million
    entries) and refuse a damaged database before it is used.
    """
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        found = " ".join(problems[0].replace("*** in database main ***", "").split())
        raise sqlite3.DatabaseError(f"database disk image is malformed ({found})")


def _open_error(e: sqlite3.Error, path: str) -> StoreError:
    """The one-line :class:`StoreError` for an error while opening ``path``."""
    why = " ".join(str(e).split())
    if _is_damaged(e):
        return StoreSchemaError(
            f"{path!r} is not a usable HALP database: {why}; move it (and any -wal "
            "and -shm file beside it) away to start an empty one, or restore a backup"
        )
    if _primary_code(e) == _SQLITE_READONLY or "readonly database" in str(e):
        return StoreError(
            f"cannot write to {path!r}: {why}; give the user HALP runs as write "
            "access to it and to its directory"
        )
    if _is_full(e):
        return StoreError(f"cannot open {path!r}: {why}; free some space")
    return StoreError(f"cannot open SQLite database {path!r}: {why}")


def open_database(
    path: str, synchronous: str = "full", *, check: bool = False
) -> sqlite3.Connection:
    """
    Open (creating if needed) a HALP database and bring its schema to
    :data:`SCHEMA_VERSION`.

    :param check: first read the whole database once (``PRAGMA
        quick_check``), so that damage anywhere in it is found now rather
        than by some later request.
    :raises StoreSchemaError: if the file is not a HALP database, was
        written by a newer HALP, or is damaged (truncated, overwritten):
        something about the file itself, which no retry will mend.
    :raises StoreError: if the file cannot be used where it is (missing or
        read-only directory, read-only file, locked, disk full, I/O error).
    """
    if synchronous not in SYNCHRONOUS_MODES:
        raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
    if path == ":memory:":
        return _open(path, synchronous, check)
    _check_access(path)
    guard = _guard(path)
    try:
        return _open(path, synchronous, check)
    finally:
        if guard is not None:
            guard.close()


def _guard(path: str) -> sqlite3.Connection | None:
    """
    A read-only connection to a database that has a ``-wal`` file, held
    while the database is checked: the last connection to a WAL database
    to close copies the ``-wal`` file into the database and deletes it,
    which a refused file (say, one of a newer HALP that was killed) should
    not undergo.  A read-only connection never does that.
    """
    from urllib.parse import quote

    if not os.path.isfile(path) or not os.path.exists(path + "-wal"):
        return None
    try:
        guard = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        guard.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error:
        pass
    return guard


def _open(path: str, synchronous: str, check: bool) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise _open_error(e, path) from None
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        if check:
            _quick_check(conn)
        # Check (and create or upgrade) the schema before anything that
        # writes to the file: a foreign database is refused untouched.
        _migrate(conn, path)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.Error as e:
        conn.close()
        raise _open_error(e, path) from None
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
    # upgrade-to-v4.sql computes each entry's network group from its source.
    conn.create_function("halp_address_group", 1, address_group, deterministic=True)
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
    conn: sqlite3.Connection,
    changes: Sequence[Change],
    max_entries: int,
    max_per_group: int = 0,
) -> list[Merged]:
    (seq,) = conn.execute("SELECT seq FROM feed_state").fetchone()
    results: list[Merged] = []
    touched: dict[str, list[int]] = {}
    # Entries added to each label, less those the group quota evicted.
    grown: dict[str, int] = {}
    # Where each (label, host, port) was merged so far, to report the
    # entries that the group quota evicts.
    where: dict[tuple[str, str, int], list[int]] = {}
    for i, change in enumerate(changes):
        label, entry = change.label, change.entry
        touched.setdefault(label, []).append(i)
        key = (label, entry.host, entry.port)
        if max_per_group > 0:
            where.setdefault(key, []).append(i)
        old = conn.execute(
            "SELECT ts FROM entries WHERE label = ? AND host = ? AND port = ?", key
        ).fetchone()
        if old is not None and old[0] >= entry.timestamp:
            results.append(Merged(old[0], False))
            continue
        seq += 1
        group = address_group(change.source)
        conn.execute(
            "INSERT INTO entries (label, host, port, ts, seq, source, via, grp)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (label, host, port) DO UPDATE"
            " SET ts = excluded.ts, seq = excluded.seq, source = excluded.source,"
            " via = excluded.via, grp = excluded.grp",
            (*key, entry.timestamp, seq, change.source, change.via, group),
        )
        if old is None:
            grown[label] = grown.get(label, 0) + 1
        results.append(Merged(entry.timestamp, True))
        if max_per_group > 0 and group:
            # The group's entries in the label beyond the quota, which are
            # its oldest (the same order and ties as the cap).
            victims = conn.execute(
                "SELECT host, port FROM entries INDEXED BY entries_group"
                " WHERE label = ? AND grp = ? ORDER BY ts DESC, host, port"
                " LIMIT -1 OFFSET ?",
                (label, group, max_per_group),
            ).fetchall()
            if victims:
                conn.executemany(
                    "DELETE FROM entries WHERE label = ? AND host = ? AND port = ?",
                    [(label, host, port) for host, port in victims],
                )
                grown[label] = grown.get(label, 0) - len(victims)
                for host, port in victims:
                    for j in where.get((label, host, port), ()):
                        results[j] = Merged(None, False)
    conn.execute("UPDATE feed_state SET seq = ?", (seq,))
    conn.executemany(
        "INSERT INTO labels (name, parent, ts, entries) VALUES (?, ?, 0, ?)"
        " ON CONFLICT (name) DO UPDATE SET entries = entries + excluded.entries",
        [(label, label_parent(label), n) for label, n in grown.items() if n],
    )
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

    def merge(
        self, changes: Sequence[Change], max_entries: int, max_per_group: int = 0
    ) -> Deferred[list[Merged]]:
        changes = tuple(changes)
        return self._submit(lambda c: _merge(c, changes, max_entries, max_per_group), True)

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
            results = [failure] * len(batch)
            if writes and not all(op.write for op in batch):
                results = self._reread(conn, batch, results)
            if not _is_full(e):
                # The connection may be unusable (I/O error): start afresh.
                # On a full disk it is fine, and keeping it keeps the -wal
                # and -shm files open: reopening would have to create them.
                conn.close()
                self._conn = None
            return results
        return results

    def _reread(
        self, conn: sqlite3.Connection, batch: list[_Op[Any]], results: list[object]
    ) -> list[object]:
        """
        After a write transaction failed (a full disk, most often), run the
        reads of its batch again on their own, so that they are answered:
        reading needs no space.  They could not keep what they read in the
        failed transaction, which included writes that did not commit.
        """
        reread = list(results)
        try:
            conn.execute("BEGIN")
            for i, op in enumerate(batch):
                if not op.write:
                    reread[i] = self._run_one(conn, op)
            conn.execute("COMMIT")
        except sqlite3.Error:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return results
        return reread

    @staticmethod
    def _run_one(conn: sqlite3.Connection, op: _Op[Any]) -> object:
        conn.execute("SAVEPOINT op")
        try:
            result = op.work(conn)
        except Exception as e:
            if isinstance(e, sqlite3.Error) and not conn.in_transaction:
                # SQLite rolled the whole transaction back (I/O error, full
                # disk, no memory): the batch fails, with this error.
                raise
            failure = _store_failure(e, "operation") if isinstance(e, sqlite3.Error) else Failure()
            failure.cleanFailure()
            if conn.in_transaction:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            return failure
        conn.execute("RELEASE op")
        return result
