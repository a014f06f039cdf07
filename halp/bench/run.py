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

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, NoReturn, Sequence

import halp
from halp.bench import entry_line, label
from halp.command import CommandParser, check_output, fail, pyplot, save

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
    #: Rounds of every scenario: each round measures the baseline, then
    #: HALP, and the ratio of the run is the median of the rounds' ratios.
    rounds: int
    #: Seconds of pipelined ``get`` (after a warm-up).
    duration: float
    warmup: float
    #: Seconds of pipelined ``get`` per label size, in each of
    #: ``size_rounds`` rounds (after half the warm-up).
    size_duration: float
    size_rounds: int
    #: Requests with one outstanding, in each of ``latency_rounds`` rounds
    #: (more and shorter rounds: a round trip on loopback varies more from
    #: moment to moment than a throughput does).
    latency_count: int
    latency_rounds: int
    #: Requests on a connection each.
    per_connection_count: int
    #: Single-entry inserts, one outstanding.
    single_inserts: int
    #: Entries inserted in blocks of 100.
    batched_entries: int


FULL = Profile(
    sizes=(10, 1000, 100_000, 1_000_000), rounds=3, duration=2.0, warmup=0.5,
    size_duration=1.0, size_rounds=5, latency_count=2000, latency_rounds=9, per_connection_count=600, single_inserts=300,
    batched_entries=30_000,
)
QUICK = Profile(
    sizes=(10, 1000, 5000), rounds=1, duration=0.3, warmup=0.1, size_duration=0.2, size_rounds=1,
    latency_count=100, latency_rounds=1, per_connection_count=40, single_inserts=20, batched_entries=1000,
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
    #: The store, and ``(--answer-cache 0)`` for a server without its
    #: answer cache.
    store: str
    unit: str
    value: float
    #: The baseline's figure in the same run; ``None`` where there is none.
    baseline: float | None
    #: HALP / baseline: for rates, the median of the rounds' ratios.
    ratio: float | None
    #: The issue's target, as text, and whether it is met (``None``: no target).
    target: str | None = None
    met: bool | None = None


class BenchError(Exception):
    """A server or the load generator failed."""


def _fail(message: str) -> NoReturn:
    fail("halp.bench", message)


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
    try:
        done = subprocess.run(
            [sys.executable, "-m", "halp.bench.load", json.dumps(spec)],
            env=_environment(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=_LOAD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"load generator ({spec['mode']}) still running after {_LOAD_TIMEOUT:g} s")
    if done.returncode != 0:
        raise BenchError(f"load generator failed ({spec['mode']}): {done.stderr.strip()}")
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise BenchError(f"load generator printed no result ({spec['mode']}): {done.stdout[:200]!r}")
    if result["errors"]:
        raise BenchError(f"{result['errors']} error answers in {spec}")
    return result


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def paired(
    halp: int, baseline: int, rounds: int, spec: dict[str, Any], base_spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """
    ``rounds`` rounds of the load ``spec`` against the baseline's port and
    HALP's, back to back (the baseline first in even rounds, HALP first in
    odd ones), so that both meet the machine in the same state.  Insert
    loads number their entries afresh in each round.  The baseline is
    given ``base_spec`` when there is one (for a peer that speaks another
    protocol).  The medians of each side's figures, and the median of the
    rounds' rate ratios.
    """
    runs: list[dict[str, Any]] = []
    for i in range(rounds):
        first = int(spec.get("first", 0)) + i * int(spec.get("count", 0))
        order = [
            ("baseline", dict(base_spec or spec, first=first, port=baseline)),
            ("halp", dict(spec, first=first, port=halp)),
        ]
        if i % 2:
            order.reverse()
        runs.append({side: load(one) for side, one in order})
    figures: dict[str, Any] = {"rounds": runs}
    for side in ("baseline", "halp"):
        figures[side] = {
            key: _median([run[side][key] for run in runs])
            for key in ("rate", "entries_rate", "p50_ms", "p99_ms")
            if key in runs[0][side]
        }
    figures["ratio"] = _median([
        run["halp"]["rate"] / run["baseline"]["rate"] for run in runs if run["baseline"]["rate"]
    ])
    return figures


def fill(server: Server, profile: Profile, timestamp: int) -> dict[str, Any]:
    """Load the labels of every size into ``server``; its memory around that."""
    before = server.rss()
    began = time.perf_counter()
    #: The resident size after each label, in the order of the sizes.
    steps = []
    for size in profile.sizes:
        load({
            "port": server.port, "mode": "pipeline", "insert": True, "label": label(size),
            "first": 0, "count": size, "batch": INSERT_BATCH, "timestamp": timestamp,
            "connections": INSERT_CONNECTIONS, "depth": 2 * INSERT_DEPTH,
        })
        steps.append(server.rss())
    loaded = sum(profile.sizes)
    after = steps[-1]
    return {
        "load_entries_per_s": loaded / (time.perf_counter() - began),
        "rss_before": before,
        "rss_after_each_label": steps,
        "rss_after_load": after,
        "bytes_per_entry": (after - before) / loaded,
        # The growth while the largest label was loaded, after the others.
        "last_label_growth": after - (steps[-2] if len(steps) > 1 else before),
    }


def measure_gets(server: Server, baseline: Server, profile: Profile) -> dict[str, Any]:
    """Every ``get`` scenario, each paired with the baseline."""
    get = {"mode": "pipeline", "label": label(1000)}
    pair = lambda spec: paired(server.port, baseline.port, profile.rounds, spec)  # noqa: E731
    return {
        "get_pipelined": pair({
            **get, "connections": GET_CONNECTIONS, "depth": GET_DEPTH,
            "duration": profile.duration, "warmup": profile.warmup,
        }),
        "get_latency": paired(server.port, baseline.port, profile.latency_rounds, {
            **get, "connections": 1, "depth": 1, "count": profile.latency_count,
            "skip": profile.latency_count // 10,
        }),
        "get_per_connection": pair({
            "mode": "per-connection", "label": label(1000), "count": profile.per_connection_count,
        }),
        "get_by_size": {
            str(size): paired(server.port, baseline.port, profile.size_rounds, {
                **get, "label": label(size), "connections": GET_CONNECTIONS, "depth": GET_DEPTH,
                "duration": profile.size_duration, "warmup": profile.warmup / 2,
            })
            for size in profile.sizes
        },
    }


def measure_inserts(server: Server, baseline: Server, profile: Profile, timestamp: int) -> dict[str, Any]:
    """The insert scenarios, each paired with the baseline."""
    insert = {"mode": "pipeline", "insert": True, "first": 0, "timestamp": timestamp}
    pair = lambda spec: paired(server.port, baseline.port, profile.rounds, spec)  # noqa: E731
    return {
        "insert_single": pair({
            **insert, "label": "bench/single", "count": profile.single_inserts, "batch": 1,
            "connections": 1, "depth": 1,
        }),
        "insert_batched": pair({
            **insert, "label": "bench/batched", "count": profile.batched_entries,
            "batch": INSERT_BATCH, "connections": INSERT_CONNECTIONS, "depth": INSERT_DEPTH,
        }),
    }


def rows(store: str, cached: bool, f: dict[str, Any], profile: Profile) -> list[Row]:
    """
    The table rows of one server's figures ``f``: the store ``store``, with
    its answer cache (``cached``) or without.  The issue's targets are
    checked on the servers as they run by default, with the cache.
    """
    out: list[Row] = []
    name = store if cached else f"{store} (--answer-cache 0)"

    def add(
        scenario: str, title: str, unit: str, value: float, baseline: float | None,
        ratio: float | None = None,
    ) -> Row:
        if ratio is None and baseline:
            ratio = value / baseline
        row = Row(scenario, title, name, unit, value, baseline, ratio)
        out.append(row)
        return row

    def rate(scenario: str, title: str, figures: dict[str, Any], key: str = "rate") -> Row:
        return add(scenario, title, "req/s" if key == "rate" else "entries/s",
                   figures["halp"][key], figures["baseline"][key], figures["ratio"])

    r = rate("get_pipelined", f"get, {GET_CONNECTIONS} conns x {GET_DEPTH} in flight",
             f["get_pipelined"])
    if cached and store in ("memory", "sqlite") and r.ratio is not None:
        r.target, r.met = ">= 0.6 x baseline", r.ratio >= 0.6
    r = rate("get_reqresp", "get, one outstanding", f["get_latency"])
    if cached and r.ratio is not None:
        r.target, r.met = ">= 0.9 x baseline", r.ratio >= 0.9
    latency = f["get_latency"]
    add("get_p50", "get latency p50, one outstanding", "ms",
        latency["halp"]["p50_ms"], latency["baseline"]["p50_ms"])
    add("get_p99", "get latency p99, one outstanding", "ms",
        latency["halp"]["p99_ms"], latency["baseline"]["p99_ms"])
    rate("get_per_connection", "get, one connection per request", f["get_per_connection"])
    by_size = f["get_by_size"]
    for size in profile.sizes:
        rate(f"get_size_{size}", f"get on a label of {size:,}", by_size[str(size)])
    small, big = by_size[str(profile.sizes[0])], by_size[str(profile.sizes[-1])]
    # The cost of a get grows as its rate against the baseline falls; the
    # baseline answers every label alike, so what its own rates differ by
    # is the machine's drift, which the ratios leave out.
    r = add(
        "get_size_cost", f"get cost, {profile.sizes[-1]:,} / {profile.sizes[0]:,} entries", "x",
        small["ratio"] / big["ratio"], None,
    )
    if cached:
        r.target, r.met = "<= 1.2", r.value <= 1.2
    if "insert_single" in f:
        rate("insert_single", "insert, 1 entry, one outstanding", f["insert_single"], "entries_rate")
        single = f["insert_single"]
        r = add("insert_single_p50", "insert latency p50, 1 entry", "ms",
                single["halp"]["p50_ms"], single["baseline"]["p50_ms"])
        r.target, r.met = "<= 5 ms", r.value <= 5.0
        r = rate(
            "insert_batched",
            f"insert, {INSERT_BATCH} entries x {INSERT_CONNECTIONS} conns x {INSERT_DEPTH} in flight",
            f["insert_batched"], "entries_rate",
        )
        if store == "sqlite":
            r.target, r.met = ">= 20,000/s", r.value >= 20_000
    if "bytes_per_entry" in f and store != "redis":
        r = add("memory_per_entry", f"server RSS growth per entry ({sum(profile.sizes):,} loaded)",
                "bytes", f["bytes_per_entry"], None)
        if store == "memory":
            r.target, r.met = "<= 300", r.value <= 300
        r = add("memory_last_label",
                f"server RSS growth while the label of {profile.sizes[-1]:,} was loaded",
                "MB", f["last_label_growth"] / 2**20, None)
        if store == "sqlite":
            # Bounded: SQLite's page cache (2 MB) and the address cache
            # (65,536 hosts, full after the label of 100,000) are.
            r.target, r.met = "<= 16 MB", r.value <= 16
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
    header = ("scenario", "server", "figure", "unit", "baseline", "ratio", "target", "met")
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
    """
    Draw the HALP/baseline throughput ratios, one panel for the servers
    as they run by default and one for ``--answer-cache 0``; a note
    instead when matplotlib is missing.
    """
    plt = pyplot()
    if plt is None:
        return "no PNG: matplotlib is not installed (pip install 'halp[bench]')"
    ratios = [r for r in all_rows if r.ratio is not None and r.unit in ("req/s", "entries/s")]
    scenarios = list(dict.fromkeys(r.title for r in ratios))
    stores = list(dict.fromkeys(r.store.split(" ")[0] for r in ratios))
    fig, axes = plt.subplots(
        1, 2, sharey=True, figsize=(13, 0.32 * len(scenarios) * len(stores) + 1.8)
    )
    height = 0.8 / max(1, len(stores))
    for ax, uncached, title in (
        (axes[0], False, "as served (answer cache on)"),
        (axes[1], True, "--answer-cache 0 (every get asks the store)"),
    ):
        for i, store in enumerate(stores):
            values = {
                r.title: r.ratio for r in ratios
                if r.store.split(" ")[0] == store and r.store.endswith("0)") == uncached
            }
            ys = [n + i * height for n in range(len(scenarios))]
            ax.barh(ys, [values.get(s) or 0 for s in scenarios], height=height, label=store)
        ax.set_xscale("log")
        ax.set_xlim(0.005, 3)
        ax.axvline(1.0, color="grey", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("throughput / the baseline's (same run, log scale)")
        ax.grid(axis="x", which="both", linewidth=0.3)
    axes[0].set_yticks([n + 0.4 - height / 2 for n in range(len(scenarios))], scenarios)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right")
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


def measure_redis(redis: Any, baseline: Server, profile: Profile, timestamp: int) -> dict[str, Any]:
    """
    HALP's peer: ``redis-server`` answering pipelined ``ZREVRANGE`` of the
    newest 10 members of a sorted set of 1,000 (``host port`` members
    scored by time), driven by the same load generator as HALP.
    """
    name = label(1000)
    pairs: list[str] = []
    for k in range(1000):
        when, host, port = entry_line(k, timestamp).decode("ascii").split()
        pairs += [when, f"{host} {port}"]
    reply = redis.call("ZADD", name, *pairs)
    if not reply.startswith(b":"):
        raise BenchError(f"redis-server refused ZADD: {reply[:200]!r}")
    get = {
        "mode": "pipeline", "label": name, "connections": GET_CONNECTIONS,
        "depth": GET_DEPTH, "duration": profile.duration, "warmup": profile.warmup,
    }
    # Next to the baseline's answers to HALP's get, of about the same size.
    return {"zrevrange_pipelined": paired(
        redis.port, baseline.port, profile.rounds, {**get, "resp": True}, get
    )}


def _halp(name: str, spec: str, workdir: str, *options: str) -> Server:
    return Server(
        f"twistd halp ({name})",
        [_twistd(), "--nodaemon", "--pidfile=", "halp", "--port", "tcp:0:interface=127.0.0.1",
         "--store", spec, *_HALP_OPTIONS, *options],
        _HALP_LISTENING, workdir,
    )


def measure(
    name: str, spec: str, baseline: Server, profile: Profile, timestamp: int, workdir: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    One store: a server that loads the labels and runs every scenario, then
    one with ``--answer-cache 0`` on the same data (the memory store's
    loads them again) that runs the ``get`` scenarios.
    """
    print(f"halp.bench: measuring the {name} store...", file=sys.stderr, flush=True)
    server = _halp(name, spec, workdir)
    try:
        cached = fill(server, profile, timestamp)
        cached.update(measure_gets(server, baseline, profile))
        cached.update(measure_inserts(server, baseline, profile, timestamp))
        cached["rss_end"] = server.rss()
    finally:
        server.stop()
    print(f"halp.bench: measuring the {name} store with --answer-cache 0...",
          file=sys.stderr, flush=True)
    server = _halp(name, spec, workdir, "--answer-cache", "0")
    try:
        if name == "memory":
            fill(server, profile, timestamp)
        uncached = measure_gets(server, baseline, profile)
    finally:
        server.stop()
    return cached, uncached


def run(profile: Profile, workdir: str) -> tuple[list[Row], dict[str, Any], list[str]]:
    """Measure every store next to the baseline; the rows, raw figures and notes."""
    timestamp = int(time.time()) - 600
    notes: list[str] = []
    raw: dict[str, Any] = {}
    stores: list[tuple[str, str]] = [
        ("memory", "memory"), ("sqlite", f"sqlite:{os.path.join(workdir, 'bench.sqlite3')}"),
    ]
    redis = None
    all_rows: list[Row] = []
    baseline = Server(
        "baseline", [sys.executable, "-m", "halp.bench.baseline", str(timestamp)],
        _BASELINE_LISTENING, workdir,
    )
    try:
        if shutil.which("redis-server") is None:
            notes.append("Redis skipped: no redis-server on PATH")
        else:
            from halp.test.redis_server import RedisServer

            try:
                redis = RedisServer(persistence="aof").start()
            except RuntimeError as e:
                raise BenchError(f"redis-server did not start: {e}")
            stores.append(("redis", redis.url))
            print("halp.bench: measuring redis-server itself...", file=sys.stderr, flush=True)
            raw["redis-server"] = peer = measure_redis(redis, baseline, profile, timestamp)
            pipelined = peer["zrevrange_pipelined"]
            all_rows.append(Row(
                "peer_zrevrange", f"ZREVRANGE 0 9, {GET_CONNECTIONS} conns x {GET_DEPTH} in flight",
                "redis-server (peer)", "req/s", pipelined["halp"]["rate"],
                pipelined["baseline"]["rate"], pipelined["ratio"],
            ))
            # A fresh data set for the HALP servers.
            redis.call("FLUSHALL")
        for name, spec in stores:
            cached, uncached = measure(name, spec, baseline, profile, timestamp, workdir)
            raw[name], raw[f"{name} (--answer-cache 0)"] = cached, uncached
            all_rows.extend(rows(name, True, cached, profile))
            all_rows.extend(rows(name, False, uncached, profile))
    finally:
        baseline.stop()
        if redis is not None:
            redis.close()
    return all_rows, raw, notes


def main(argv: list[str] | None = None) -> None:
    """The ``python -m halp.bench`` command."""
    parser = CommandParser(
        "halp.bench",
        description="Benchmark HALP servers (memory, SQLite, Redis) against a minimal Twisted line server.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    parser.add_argument("--json", default="bench-results.json", metavar="PATH",
                        help="where to write the results (default: bench-results.json)")
    parser.add_argument("--png", default=None, metavar="PATH",
                        help="draw the HALP/baseline ratios here (needs matplotlib)")
    args = parser.parse_args(argv)
    check_output("halp.bench", "--json", args.json)
    check_output("halp.bench", "--png", args.png, ".png")
    profile = QUICK if args.quick else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="halp-bench-") as workdir:
        try:
            all_rows, raw, notes = run(profile, workdir)
        except BenchError as e:
            print(f"halp.bench: {e}", file=sys.stderr)
            sys.exit(1)
    print(table(all_rows))
    results = {
        "quick": args.quick,
        "profile": asdict(profile),
        "seconds": time.monotonic() - started,
        "notes": notes,
        "rows": [asdict(r) for r in all_rows],
        "raw": raw,
    }
    save(results, args.json, results["seconds"], png=args.png,
         draw=lambda png: chart(all_rows, png), indent=2)
