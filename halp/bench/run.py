"""
The benchmark run: start the servers, drive them, print and save the figures.

``python -m halp.bench [--quick] [--json PATH] [--png PATH]`` starts, one
after the other, the baseline (:mod:`halp.bench.baseline`) and ``twistd -n
halp`` on the memory store, on SQLite and (when ``redis-server`` is on the
``PATH``) on Redis, each as its own process, and measures each with
:mod:`halp.bench.load` in another process.  Every scenario runs for a fixed
number of requests or a fixed short time.  The figures are printed as a
table with HALP/baseline ratios and the issue's targets, written as JSON,
and drawn as a PNG when matplotlib is importable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, Sequence

import halp
from halp.bench import label

__all__ = ["Profile", "Row", "main"]

#: The checkout (or site-packages directory) this package runs from: every
#: subprocess imports ``halp`` from there too.
_ROOT = str(Path(halp.__file__).resolve().parent.parent)

#: Seconds a server may take to start or to stop.
_START_TIMEOUT = 60.0
#: Seconds one load-generator process may run.
_LOAD_TIMEOUT = 600.0

_HALP_LISTENING = re.compile(r"HALP/1 listening on 127\.0\.0\.1:(\d+)")
_BASELINE_LISTENING = re.compile(r"baseline listening on 127\.0\.0\.1:(\d+)")

#: The options of every HALP server: a test bed without federation,
#: request logs, admission limits or per-host connection caps, with room for
#: the largest label.
_HALP_OPTIONS = (
    "--no-federation", "--no-request-log", "--allow-private", "--verify", "none",
    "--insert-rate", "0", "--group-share", "0", "--max-connections-per-host", "0",
    "--max-entries", "1000000",
)


@dataclass(frozen=True)
class Profile:
    """The sizes of one run."""

    #: Label sizes for the get-versus-size scenario (the first and last are
    #: compared); every profile has a label of 1,000 entries.
    sizes: tuple[int, ...]
    #: Seconds of pipelined ``get`` (after a warm-up).
    duration: float
    warmup: float
    #: Seconds of pipelined ``get`` per label size.
    size_duration: float
    #: Requests with one outstanding.
    latency_count: int
    #: Requests on a connection each.
    per_connection_count: int
    #: Single-entry inserts, one outstanding.
    single_inserts: int
    #: Entries inserted in blocks of 100.
    batched_entries: int


FULL = Profile(
    sizes=(10, 1000, 100_000, 1_000_000), duration=4.0, warmup=0.5, size_duration=2.0,
    latency_count=3000, per_connection_count=1000, single_inserts=500, batched_entries=50_000,
)
QUICK = Profile(
    sizes=(10, 1000, 5000), duration=0.3, warmup=0.1, size_duration=0.2,
    latency_count=100, per_connection_count=40, single_inserts=20, batched_entries=1000,
)

#: Connections and requests in flight on each, for pipelined ``get``.
GET_CONNECTIONS, GET_DEPTH = 4, 64
#: The same for batched inserts (and for loading the labels).
INSERT_CONNECTIONS, INSERT_DEPTH, INSERT_BATCH = 4, 4, 100


@dataclass
class Row:
    """One line of the table: a figure of one store, next to the baseline's."""

    scenario: str
    title: str
    store: str
    unit: str
    value: float
    #: The baseline's figure in the same run; ``None`` where there is none.
    baseline: float | None
    ratio: float | None
    #: The issue's target, as text, and whether it is met (``None``: no target).
    target: str | None = None
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class BenchError(Exception):
    """A server or the load generator failed."""


def _fail(message: str) -> NoReturn:
    print(f"halp.bench: error: {message}", file=sys.stderr)
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see --help)")


def _environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(
        os.environ,
        PYTHONPATH=_ROOT if not path else f"{_ROOT}{os.pathsep}{path}",
        PYTHONUNBUFFERED="1",
    )


class Server:
    """A server process that prints the port it listens on."""

    def __init__(self, name: str, command: Sequence[str], listening: re.Pattern[str], cwd: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.process = subprocess.Popen(
            list(command), cwd=cwd, env=_environment(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        self.port = self._wait_for(listening)

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip())
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _wait_for(self, pattern: re.Pattern[str]) -> int:
        deadline = time.monotonic() + _START_TIMEOUT
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if (match := pattern.search(line)) is not None:
                        return int(match.group(1))
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    self.stop()
                    tail = "\n".join(self.lines[-20:])
                    raise BenchError(f"{self.name} did not start:\n{tail}")
                self._cond.wait(remaining)

    def rss(self) -> int:
        """The process's resident set, in bytes (``VmRSS``)."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise BenchError(f"no VmRSS for {self.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=_START_TIMEOUT)


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator in its own process; its JSON result."""
    done = subprocess.run(
        [sys.executable, "-m", "halp.bench.load", json.dumps(spec)],
        env=_environment(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=_LOAD_TIMEOUT,
    )
    if done.returncode != 0:
        raise BenchError(f"load generator failed ({spec['mode']}): {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["errors"]:
        raise BenchError(f"{result['errors']} error answers in {spec}")
    return result


def measure(server: Server, profile: Profile, timestamp: int, fill: bool) -> dict[str, Any]:
    """
    Every scenario against one running server; with ``fill``, the labels
    are loaded first (and the server's memory measured around that).
    """
    port = server.port
    figures: dict[str, Any] = {}
    if fill:
        before = server.rss()
        began = time.perf_counter()
        for size in profile.sizes:
            load({
                "port": port, "mode": "pipeline", "insert": True, "label": label(size),
                "first": 0, "count": size, "batch": INSERT_BATCH, "timestamp": timestamp,
                "connections": INSERT_CONNECTIONS, "depth": 2 * INSERT_DEPTH,
            })
        loaded = sum(profile.sizes)
        figures["load_entries_per_s"] = loaded / (time.perf_counter() - began)
        after = server.rss()
        figures["rss_before"], figures["rss_after_load"] = before, after
        figures["bytes_per_entry"] = (after - before) / loaded
    get = {"port": port, "mode": "pipeline", "label": label(1000)}
    figures["get_pipelined"] = load({
        **get, "connections": GET_CONNECTIONS, "depth": GET_DEPTH,
        "duration": profile.duration, "warmup": profile.warmup,
    })
    figures["get_latency"] = load({**get, "connections": 1, "depth": 1, "count": profile.latency_count})
    figures["get_per_connection"] = load({
        "port": port, "mode": "per-connection", "label": label(1000),
        "count": profile.per_connection_count,
    })
    figures["get_by_size"] = {
        str(size): load({
            **get, "label": label(size), "connections": GET_CONNECTIONS, "depth": GET_DEPTH,
            "duration": profile.size_duration, "warmup": profile.warmup,
        })
        for size in profile.sizes
    }
    insert = {"port": port, "mode": "pipeline", "insert": True, "first": 0, "timestamp": timestamp}
    figures["insert_single"] = load({
        **insert, "label": "bench/single", "count": profile.single_inserts, "batch": 1,
        "connections": 1, "depth": 1,
    })
    figures["insert_batched"] = load({
        **insert, "label": "bench/batched", "count": profile.batched_entries,
        "batch": INSERT_BATCH, "connections": INSERT_CONNECTIONS, "depth": INSERT_DEPTH,
    })
    figures["rss_end"] = server.rss()
    return figures


def _ratio(value: float, baseline: float | None) -> float | None:
    return None if baseline is None or baseline == 0 else value / baseline


def rows(store: str, f: dict[str, Any], base: dict[str, Any], profile: Profile) -> list[Row]:
    """The table rows of one store's figures ``f``, next to the baseline's."""
    out: list[Row] = []

    def add(
        scenario: str, title: str, unit: str, value: float, baseline: float | None,
        target: str | None = None, met: bool | None = None,
    ) -> Row:
        row = Row(scenario, title, store, unit, value, baseline, _ratio(value, baseline), target, met)
        out.append(row)
        return row

    warm = store in ("memory", "sqlite")
    r = add("get_pipelined", f"get, {GET_CONNECTIONS} conns x {GET_DEPTH} in flight", "req/s",
            f["get_pipelined"]["rate"], base["get_pipelined"]["rate"])
    if warm and r.ratio is not None:
        r.target, r.met = ">= 0.6 x baseline", r.ratio >= 0.6
    r = add("get_reqresp", "get, one outstanding", "req/s",
            f["get_latency"]["rate"], base["get_latency"]["rate"])
    if r.ratio is not None:
        r.target, r.met = ">= 0.9 x baseline", r.ratio >= 0.9
    add("get_p50", "get latency p50, one outstanding", "ms",
        f["get_latency"]["p50_ms"], base["get_latency"]["p50_ms"])
    add("get_p99", "get latency p99, one outstanding", "ms",
        f["get_latency"]["p99_ms"], base["get_latency"]["p99_ms"])
    add("get_per_connection", "get, one connection per request", "req/s",
        f["get_per_connection"]["rate"], base["get_per_connection"]["rate"])
    for size in profile.sizes:
        add(f"get_size_{size}", f"get on a label of {size:,}", "req/s",
            f["get_by_size"][str(size)]["rate"], base["get_by_size"][str(size)]["rate"])
    small, big = str(profile.sizes[0]), str(profile.sizes[-1])

    def slowdown(figures: dict[str, Any]) -> float:
        rates = figures["get_by_size"]
        return float(rates[small]["rate"] / rates[big]["rate"])

    r = add("get_size_cost", f"get cost, {int(big):,} / {int(small):,} entries", "x",
            slowdown(f), slowdown(base), "<= 1.2", None)
    r.met = r.value <= 1.2
    add("insert_single", "insert, 1 entry, one outstanding", "entries/s",
        f["insert_single"]["entries_rate"], base["insert_single"]["entries_rate"])
    r = add("insert_single_p50", "insert latency p50, 1 entry", "ms",
            f["insert_single"]["p50_ms"], base["insert_single"]["p50_ms"], "<= 5 ms")
    r.met = r.value <= 5.0
    r = add("insert_batched",
            f"insert, {INSERT_BATCH} entries x {INSERT_CONNECTIONS} conns x {INSERT_DEPTH} in flight",
            "entries/s", f["insert_batched"]["entries_rate"], base["insert_batched"]["entries_rate"])
    if store == "sqlite":
        r.target, r.met = ">= 20,000/s", r.value >= 20_000
    if "bytes_per_entry" in f and store != "redis":
        r = add("memory_per_entry", f"server RSS growth per entry ({sum(profile.sizes):,} loaded)",
                "bytes", f["bytes_per_entry"], None)
        if store == "memory":
            r.target, r.met = "<= 300", r.value <= 300
        add("rss_end", "server RSS at the end", "MB", f["rss_end"] / 2**20, None)
    return out


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "x" or abs(value) < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def table(all_rows: list[Row]) -> str:
    """The rows as a plain-text table."""
    header = ("scenario", "store", "HALP", "unit", "baseline", "HALP/base", "target", "met")
    lines = [
        (
            r.title, r.store, _number(r.value, r.unit), r.unit, _number(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}", r.target or "",
            "" if r.met is None else ("met" if r.met else "NOT MET"),
        )
        for r in all_rows
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    text = [
        "  ".join(str(c).ljust(w) if i in (0, 1, 3, 6, 7) else str(c).rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        for cells in (header, *lines)
    ]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def chart(all_rows: list[Row], path: str) -> str | None:
    """Draw the HALP/baseline ratios; a note instead when matplotlib is missing."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return "no PNG: matplotlib is not installed (pip install 'halp[bench]')"
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    ratios = [r for r in all_rows if r.ratio is not None and r.unit in ("req/s", "entries/s")]
    stores = sorted({r.store for r in ratios})
    scenarios = list(dict.fromkeys(r.title for r in ratios))
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(scenarios) * len(stores) + 1.5))
    height = 0.8 / max(1, len(stores))
    for i, store in enumerate(stores):
        values = {r.title: r.ratio for r in ratios if r.store == store}
        ys = [n + i * height for n in range(len(scenarios))]
        ax.barh(ys, [values.get(s, 0) for s in scenarios], height=height, label=store)
    ax.set_yticks([n + 0.4 - height / 2 for n in range(len(scenarios))], scenarios)
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("throughput, HALP / baseline (same run)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _twistd() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    found = beside if os.path.exists(beside) else shutil.which("twistd")
    if found is None:
        raise BenchError("twistd not found beside the Python interpreter or on PATH")
    return found


def run(profile: Profile, workdir: str) -> tuple[list[Row], dict[str, Any], list[str]]:
    """Measure the baseline and every store; the rows, raw figures and notes."""
    timestamp = int(time.time()) - 600
    notes: list[str] = []
    raw: dict[str, Any] = {}
    baseline = Server(
        "baseline", [sys.executable, "-m", "halp.bench.baseline", str(timestamp)],
        _BASELINE_LISTENING, workdir,
    )
    try:
        raw["baseline"] = measure(baseline, profile, timestamp, fill=False)
    finally:
        baseline.stop()
    stores: list[tuple[str, str]] = [
        ("memory", "memory"), ("sqlite", f"sqlite:{os.path.join(workdir, 'bench.sqlite3')}"),
    ]
    redis = None
    if shutil.which("redis-server") is None:
        notes.append("Redis skipped: no redis-server on PATH")
    else:
        from halp.test.redis_server import RedisServer

        redis = RedisServer(persistence="aof").start()
        stores.append(("redis", redis.url))
    all_rows: list[Row] = []
    try:
        for name, spec in stores:
            print(f"halp.bench: measuring the {name} store...", file=sys.stderr, flush=True)
            server = Server(
                f"twistd halp ({name})",
                [_twistd(), "--nodaemon", "--pidfile=", "halp", "--port",
                 "tcp:0:interface=127.0.0.1", "--store", spec, *_HALP_OPTIONS],
                _HALP_LISTENING, workdir,
            )
            try:
                raw[name] = measure(server, profile, timestamp, fill=True)
            finally:
                server.stop()
            all_rows.extend(rows(name, raw[name], raw["baseline"], profile))
    finally:
        if redis is not None:
            redis.close()
    return all_rows, raw, notes


def main(argv: list[str] | None = None) -> None:
    """The ``python -m halp.bench`` command."""
    parser = _Parser(
        prog="python -m halp.bench",
        description="Benchmark HALP servers (memory, SQLite, Redis) against a minimal Twisted line server.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    parser.add_argument("--json", default="bench-results.json", metavar="PATH",
                        help="where to write the results (default: bench-results.json)")
    parser.add_argument("--png", default=None, metavar="PATH",
                        help="draw the HALP/baseline ratios here (needs matplotlib)")
    args = parser.parse_args(argv)
    for option, path in (("--json", args.json), ("--png", args.png)):
        if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            _fail(f"{option}: no such directory for {path!r}")
    profile = QUICK if args.quick else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="halp-bench-") as workdir:
        try:
            all_rows, raw, notes = run(profile, workdir)
        except BenchError as e:
            print(f"halp.bench: {e}", file=sys.stderr)
            sys.exit(1)
    print(table(all_rows))
    if args.png is not None:
        note = chart(all_rows, args.png)
        if note is not None:
            notes.append(note)
    results = {
        "quick": args.quick,
        "profile": asdict(profile),
        "seconds": time.monotonic() - started,
        "notes": notes,
        "rows": [asdict(r) for r in all_rows],
        "raw": raw,
    }
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    for note in notes:
        print(note)
    print(f"results written to {args.json} ({results['seconds']:.0f} s)")
