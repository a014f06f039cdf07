"""
The benchmark's load generator, run as its own process::

    python -m halp.bench.load SPEC_JSON

It drives a server on 127.0.0.1 with plain non-blocking sockets and a
selector (no Twisted, no asyncio), the same code for HALP and the
baseline, and prints one JSON object with what it measured.  ``SPEC_JSON``
names the port and one of these modes:

``pipeline``
    ``connections`` connections, each with up to ``depth`` requests in
    flight.  The requests are ``get LABEL`` for ``warmup + duration``
    seconds (and on until one answer counts), or ``count`` of them, or,
    with ``insert``, insert blocks of ``batch`` entries numbered from
    ``first`` until ``count`` entries were sent.  Answers in the first
    ``warmup`` seconds, and the first ``skip`` answers, count in neither
    the rate nor the latencies.  One outstanding request on one
    connection (``connections=1, depth=1``) measures request/response
    latency.
    With ``resp``, the requests are Redis's ``ZREVRANGE LABEL 0 9`` (the
    port is a ``redis-server``'s): HALP's peer, measured by the same client.
``per-connection``
    ``count`` requests ``get LABEL``, each on a new connection that the
    client half-closes after its request, read until the server closes.

Answers are counted by their status lines (``ok ...`` and ``error ...``);
``error``, ``failure:`` and ``pending:`` lines count as errors.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from collections import deque
from typing import Any, Callable, Iterator

from halp.bench import GET_SLICE, get_request, insert_block

__all__ = ["ReplyCounter", "RespCounter", "main", "percentile", "resp_command"]


class ReplyCounter:
    """Counts the HALP/1 answers and error lines in a byte stream, chunk by chunk."""

    def __init__(self) -> None:
        self._tail = b""
        self.errors = 0

    def feed(self, data: bytes) -> int:
        """How many answers ``data`` completed."""
        cut = data.rfind(b"\n")
        if cut < 0:
            self._tail += data
            return 0
        # Whole lines, each after a LF, so that a count of LF + a start
        # counts the lines that start so.
        done = b"\n" + self._tail + data[: cut + 1]
        self._tail = data[cut + 1 :]
        answers, errors = self._count(done)
        self.errors += errors
        return answers

    def _count(self, lines: bytes) -> tuple[int, int]:
        """The answers and the error lines in ``lines``."""
        errors = lines.count(b"\nerror") + lines.count(b"\nfailure:") + lines.count(b"\npending:")
        return lines.count(b"\nok") + lines.count(b"\nerror"), errors


class RespCounter(ReplyCounter):
    """
    Counts Redis replies to commands that answer with an array (``*N``) or
    an error (``-ERR ...``), as long as no element of an array starts a
    line with ``*`` or ``-`` (the benchmark's members start with digits).
    """

    def _count(self, lines: bytes) -> tuple[int, int]:
        errors = lines.count(b"\n-")
        return lines.count(b"\n*") + errors, errors


def resp_command(*args: str) -> bytes:
    """One Redis command in the Redis protocol (RESP)."""
    parts = [f"*{len(args)}\r\n".encode("ascii")]
    for arg in args:
        data = arg.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


class _Connection:
    def __init__(self, port: int, counter: ReplyCounter) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.out = bytearray()
        self.sent_at: deque[float] = deque()
        self.counter = counter


def pipeline(
    port: int,
    connections: int,
    depth: int,
    next_request: Callable[[float, int], bytes | None],
    warmup: float,
    skip: int = 0,
    counter: Callable[[], ReplyCounter] = ReplyCounter,
) -> dict[str, Any]:
    """
    Keep ``depth`` requests in flight on each of ``connections``
    connections until ``next_request(now, counted)`` (``counted``: the
    answers counted so far) returns ``None`` and every
    answer arrived.  Answers in the first ``warmup`` seconds, and the first
    ``skip`` answers, are not counted.
    """
    selector = selectors.DefaultSelector()
    conns = [_Connection(port, counter()) for _ in range(connections)]
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    start = time.perf_counter()
    counted_from = start + warmup
    mark: tuple[float, int] | None = None if warmup > 0 or skip > 0 else (start, 0)
    answers = 0
    latencies: list[float] = []
    exhausted = False
    while True:
        now = time.perf_counter()
        if mark is None and now >= counted_from and answers >= skip:
            mark = (now, answers)
        for conn in conns:
            while not exhausted and len(conn.sent_at) < depth:
                request = next_request(now, answers - mark[1] if mark is not None else 0)
                if request is None:
                    exhausted = True
                    break
                conn.out += request
                conn.sent_at.append(now)
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
            selector.modify(conn.sock, events, conn)
        if exhausted and not any(conn.sent_at for conn in conns):
            break
        ready = selector.select(timeout=30.0)
        if not ready:
            raise SystemExit("load: no answer for 30 s: the server hangs")
        for key, events in ready:
            conn = key.data
            if events & selectors.EVENT_WRITE:
                sent = conn.sock.send(conn.out)
                del conn.out[:sent]
            if events & selectors.EVENT_READ:
                data = conn.sock.recv(262144)
                if not data:
                    raise SystemExit("load: the server closed a connection")
                done = conn.counter.feed(data)
                if done:
                    got = time.perf_counter()
                    for _ in range(done):
                        sent = conn.sent_at.popleft()
                        if mark is not None:  # the warm-up's are not counted
                            latencies.append(got - sent)
                    answers += done
    end = time.perf_counter()
    for conn in conns:
        conn.sock.close()
    first_time, first_count = mark if mark is not None else (start, 0)
    counted = answers - first_count
    seconds = end - first_time
    if counted <= 0:
        raise SystemExit(
            f"load: no answer counted in {seconds:.2f} s after the warm-up "
            f"({answers} during it): the server stalled"
        )
    return {
        "answers": answers,
        "counted": counted,
        "seconds": seconds,
        "rate": counted / seconds if seconds > 0 else 0.0,
        "errors": sum(conn.counter.errors for conn in conns),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def per_connection(port: int, request: bytes, count: int) -> dict[str, Any]:
    """``count`` requests, each on its own connection."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        counter = ReplyCounter()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            answers = 0
            while data := sock.recv(65536):
                answers += counter.feed(data)
        if answers != 1:
            errors += 1
        errors += counter.errors
        latencies.append(time.perf_counter() - began)
    seconds = time.perf_counter() - start
    return {
        "answers": count,
        "counted": count,
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else 0.0,
        "errors": errors,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def _gets(
    request: bytes, duration: float, warmup: float, count: int
) -> Callable[[float, int], bytes | None]:
    """
    ``count`` requests, or requests for ``warmup + duration`` seconds from
    the first, and on until one answer is counted (a stall of the machine
    must not leave a measurement empty).
    """
    deadline: list[float] = []
    left = [count]

    def next_request(now: float, counted: int) -> bytes | None:
        if duration > 0:
            if not deadline:
                deadline.append(now + warmup + duration)
            return request if now < deadline[0] or not counted else None
        if left[0] <= 0:
            return None
        left[0] -= 1
        return request

    return next_request


def _inserts(
    name: str, first: int, count: int, batch: int, timestamp: int
) -> Callable[[float, int], bytes | None]:
    def blocks() -> Iterator[bytes]:
        for start in range(first, first + count, batch):
            yield insert_block(name, start, min(batch, first + count - start), timestamp)

    pending = blocks()
    return lambda now, counted: next(pending, None)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure what ``spec`` asks for (see the module docstring)."""
    port = int(spec["port"])
    mode = spec["mode"]
    if mode == "per-connection":
        return per_connection(port, get_request(spec["label"]), int(spec["count"]))
    if mode != "pipeline":
        raise SystemExit(f"load: unknown mode {mode!r}")
    if spec.get("insert"):
        batch = int(spec["batch"])
        source = _inserts(
            spec["label"], int(spec["first"]), int(spec["count"]), batch, int(spec["timestamp"])
        )
    else:
        batch = 1
        request = (
            resp_command("ZREVRANGE", spec["label"], "0", str(GET_SLICE - 1))
            if spec.get("resp") else get_request(spec["label"])
        )
        source = _gets(
            request, float(spec.get("duration", 0)), float(spec.get("warmup", 0)),
            int(spec.get("count", 0)),
        )
    result = pipeline(
        port, int(spec["connections"]), int(spec["depth"]), source,
        float(spec.get("warmup", 0)), int(spec.get("skip", 0)),
        RespCounter if spec.get("resp") else ReplyCounter,
    )
    result["entries_rate"] = result["rate"] * batch
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the spec given as the one argument and print the result as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m halp.bench.load SPEC_JSON")
    print(json.dumps(run(json.loads(args[0]))))


if __name__ == "__main__":
    main()
