"""
``python -m halp.bench``: how fast a HALP server is, next to a baseline.

One run starts real server processes (``twistd -n halp`` on each store, and
:mod:`halp.bench.baseline`, a minimal Twisted line server that answers with
bytes of the same size and framing), drives each with the same load
generator in a separate process (:mod:`halp.bench.load`), and prints
absolute figures and HALP/baseline ratios (:mod:`halp.bench.run`).

This module holds what every part agrees on: the entries the benchmark
inserts, and the shape of the requests and answers.  Every entry line has
the same length (``TIMESTAMP 10.1xx.1xx.1xx 1xxxx``), so that the
baseline's fixed ``get`` answer has exactly the size of HALP's.
"""

from __future__ import annotations

__all__ = ["GET_SLICE", "entry_line", "get_answer", "get_request", "insert_block", "label"]

#: Entries in the answer to ``get LABEL`` (the protocol's default slice).
GET_SLICE = 10

#: Distinct hosts :func:`entry_line` makes before it moves to the next port.
_HOSTS = 1_000_000


def label(size: int) -> str:
    """The label holding ``size`` entries."""
    return f"bench/s{size}"


def entry_line(key: int, timestamp: int) -> bytes:
    """
    ``TIMESTAMP HOST PORT`` for entry number ``key``, without line ending:
    always 10 + 1 + 14 + 1 + 5 bytes for a 10-digit timestamp.
    """
    i = key % _HOSTS
    host = f"10.{100 + i // 10000 % 100}.{100 + i // 100 % 100}.{100 + i % 100}"
    return f"{timestamp} {host} {10000 + key // _HOSTS}".encode("ascii")


def get_request(name: str) -> bytes:
    """``get NAME``: the newest :data:`GET_SLICE` entries."""
    return f"get {name}\n".encode("ascii")


def insert_block(name: str, first: int, count: int, timestamp: int) -> bytes:
    """An ``insert`` block of entries ``first`` to ``first + count - 1``."""
    lines = [f"insert {name}\n".encode("ascii")]
    lines.extend(entry_line(k, timestamp) + b"\n" for k in range(first, first + count))
    lines.append(b"\n")
    return b"".join(lines)


def get_answer(timestamp: int) -> bytes:
    """A ``get`` answer of :data:`GET_SLICE` entries and its status line,
    byte for byte as long as HALP's answer on a benchmark label."""
    lines = [entry_line(k, timestamp) + b"\n" for k in range(GET_SLICE)]
    lines.append(f"ok {GET_SLICE}\n".encode("ascii"))
    return b"".join(lines)
