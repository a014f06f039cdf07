# -*- test-case-name: halp.test.test_store -*-
"""
Store backends and the ``--store`` specification that selects one.

``memory``
    :class:`~halp.store.memory.MemoryStore`; nothing survives a restart.
``sqlite:PATH[?synchronous=full|normal]``
    :class:`~halp.store.sqlite.SQLiteStore` on ``PATH`` (created if missing).
    ``sqlite`` alone means ``sqlite:halp.sqlite3`` in the working directory.
``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P&password=W&timeout=S]``
    :class:`~halp.store.redis.RedisStore`, shared by every HALP process
    that names the same Redis and prefix; ``rediss://`` for TLS (with
    ``&ca=PEM`` to trust a private CA).  Needs ``txredisapi``
    (``pip install 'halp[redis]'``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads

from halp.error import StoreError
from halp.interfaces import IHostStore
from halp.model import Change, Entry, Merged

__all__ = [
    "DEFAULT_STORE",
    "StoreSpec",
    "check_store",
    "insert_entries",
    "make_store",
    "parse_store_spec",
]

#: The store ``twistd halp`` uses without ``--store``.
DEFAULT_STORE = "sqlite:halp.sqlite3"


@dataclass(frozen=True)
class StoreSpec:
    """A parsed ``--store`` value."""

    kind: str
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The spec as an operator would write it (without any password)."""
        if self.kind == "redis":
            return self.path
        return f"{self.kind}:{self.path}" if self.path else self.kind


def parse_store_spec(spec: str) -> StoreSpec:
    """
    Parse a ``--store`` value, without touching any file.

    :raises ValueError: with a one-line explanation.
    """
    kind, sep, rest = spec.partition(":")
    if kind in ("redis", "rediss"):
        from halp.store.redis import parse_redis_url

        url = parse_redis_url(spec)
        return StoreSpec("redis", url.describe(), {"url": spec})
    if kind == "memory" and not rest:
        return StoreSpec("memory")
    if kind == "sqlite":
        path, _, query = rest.partition("?")
        path = path or DEFAULT_STORE.partition(":")[2]
        try:
            options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        except ValueError:
            raise ValueError(f"bad options {query!r} in {spec!r}") from None
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise ValueError(f"unknown SQLite option {sorted(unknown)[0]!r}")
        synchronous = options.get("synchronous", "full")
        if synchronous not in ("full", "normal"):
            raise ValueError("synchronous must be 'full' or 'normal'")
        return StoreSpec("sqlite", path, {"synchronous": synchronous})
    raise ValueError(
        f"unknown store {spec!r}: use 'memory', 'sqlite:PATH' or 'redis://HOST:PORT/DB'"
    )


def check_store(spec: StoreSpec) -> None:
    """
    Make sure the store of ``spec`` can be opened: create a missing SQLite
    database, upgrade an old one, refuse a foreign, newer or damaged one
    (read through once with ``PRAGMA quick_check``) and one that HALP could
    not write to.  A refused file is left as it was.

    :raises halp.error.StoreError: with a one-line explanation.
    """
    if spec.kind == "sqlite":
        from halp.store.sqlite import open_database

        open_database(spec.path, spec.options["synchronous"], check=True).close()
    elif spec.kind == "redis":
        try:
            import txredisapi  # noqa: F401
        except ImportError:
            raise StoreError(
                "the Redis store needs txredisapi: pip install 'halp[redis]'"
            ) from None


def make_store(spec: StoreSpec, reactor: IReactorFromThreads) -> IHostStore:
    """Build the store ``spec`` describes."""
    if spec.kind == "memory":
        from halp.store.memory import MemoryStore

        return MemoryStore()
    if spec.kind == "redis":
        from halp.store.redis import RedisStore, parse_redis_url

        return RedisStore(reactor, parse_redis_url(spec.options["url"]))
    from halp.store.sqlite import SQLiteStore

    return SQLiteStore(reactor, spec.path, spec.options["synchronous"])


def insert_entries(
    store: IHostStore,
    labels: Sequence[str],
    entries: Sequence[Entry],
    max_entries: int,
    source: str = "",
) -> Deferred[list[list[int | None]]]:
    """
    Merge every entry into every label, in one :meth:`~halp.interfaces.IHostStore.merge`.

    :return: a Deferred firing, for each label in order, with the stored
        time of each entry in order (``None``: evicted at once).
    """
    changes = [Change(label, entry, source) for label in labels for entry in entries]

    def by_label(merged: list[Merged]) -> list[list[int | None]]:
        n = len(entries)
        return [[m.stored for m in merged[i * n : (i + 1) * n]] for i in range(len(labels))]

    return store.merge(changes, max_entries).addCallback(by_label)
