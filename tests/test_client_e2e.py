"""
End-to-end tests of the ``halp`` command: each test runs ``python -m halp``
as a process against real servers on 127.0.0.1 (``twistd halp``, the
libhalp-only ``tests/libhalp_server.py``, and plain sockets that refuse or
never answer), and checks its output and exit status.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from halp.client.servers import (
    INITIAL_QUALITY,
    QUALITY_ANSWER,
    QUALITY_ENTRY,
    QUALITY_FAILURE,
)
from tests.halpserver import IO_TIMEOUT, HALPServer, StartLibhalpServer, StartServer

pytestmark = pytest.mark.e2e

#: Seconds a ``halp`` command may run before the test fails as hung.  A
#: guard against hangs only; no test asserts how long a command took.
HANG_GUARD = 20.0

#: The exit statuses of ``halp``.
OK, UNREACHABLE, USAGE = 0, 1, 2

#: An entry as the tests write it: timestamp, host, port.
Triple = tuple[int, str, int]


@dataclass(frozen=True, repr=False)
class Run:
    """One finished ``halp`` command."""

    args: tuple[str, ...]
    status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def errors(self) -> list[str]:
        return self.stderr.splitlines()

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        # What an assertion message shows.
        return (
            f"halp {' '.join(self.args)} -> exit {self.status}"
            f"\n--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


class Halp:
    """
    Runs ``python -m halp`` as a process, with ``--cache`` in the test's
    directory (unless told otherwise) and ``HOME`` there too, so that the
    user's own ``~/.halp`` is never touched.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.cache = tmp_path / "cache"

    def __call__(
        self, *args: str, cache: bool = True, env: Mapping[str, str] | None = None
    ) -> Run:
        argv = [*args, "--cache", str(self.cache)] if cache else list(args)
        environ = {k: v for k, v in os.environ.items() if k != "HALP_CACHE"}
        environ.update(HOME=str(self.home), PYTHONUNBUFFERED="1")
        environ.update(env or {})
        try:
            done = subprocess.run(
                [sys.executable, "-m", "halp", *argv],
                env=environ,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=HANG_GUARD,
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"halp {' '.join(argv)} still running after {HANG_GUARD} s; "
                f"stdout {e.stdout!r}, stderr {e.stderr!r}"
            ) from None
        run = Run(tuple(argv), done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in run.stderr, run
        return run


@pytest.fixture
def halp(tmp_path: Path) -> Halp:
    return Halp(tmp_path)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port of 127.0.0.1 that refuses connections: bound, not listening,
    so that nothing else can take it during the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def blackhole() -> Iterator[socket.socket]:
    """A listening socket that is never accepted from: the kernel completes
    connections into its backlog, and nothing ever answers them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def address(server: HALPServer | int) -> str:
    port = server if isinstance(server, int) else server.port
    assert port is not None, "server not running"
    return f"127.0.0.1:{port}"


def lines(*entries: Triple) -> list[str]:
    """How ``halp get`` prints ``entries``: newest first."""
    return [f"{t} {h} {p}" for t, h, p in sorted(entries, key=lambda e: (-e[0], e[1], e[2]))]


def without_time(printed: list[str]) -> list[str]:
    """The ``HOST PORT`` parts of ``TIMESTAMP HOST PORT`` lines (or the
    names of ``TIMESTAMP NAME`` lines): what is left without the time."""
    return [line.split(" ", 1)[1] for line in printed]


def insert(server: HALPServer, label: str, *entries: Triple) -> None:
    """Put ``entries`` into ``label`` at ``server`` with a raw HALP/1 insert."""
    block = f"insert {label}\n" + "".join(f"{t} {h} {p}\n" for t, h, p in entries) + "\n"
    reply = server.reply(block.encode("ascii"))
    assert reply.status == f"ok {len(entries)} stored 0 failed", reply


def held(server: HALPServer, label: str) -> list[str]:
    """What ``server`` answers to a raw ``get LABEL``."""
    reply = server.reply(f"get {label}\n".encode("ascii"))
    assert reply.status == f"ok {len(reply.lines)}", reply
    return reply.lines


def assert_usage_error(run: Run) -> None:
    """Exit status 2 with exactly one line on stderr and nothing on stdout."""
    assert run.status == USAGE, run
    assert run.stdout == "", run
    assert len(run.errors) == 1 and run.errors[0].startswith("halp"), run


def record(run: Run, server: str) -> dict[str, Any]:
    """The row of ``server`` in the output of ``halp servers --json``."""
    rows = {row["server"]: row for row in run.json()["servers"]}
    assert server in rows, run
    row: dict[str, Any] = rows[server]
    return row


# -- 1. libhalp's README walkthrough over TCP ---------------------------------


def test_readme_walkthrough(halp_server: HALPServer, halp: Halp) -> None:
    """
    ``halp insert halp 127.0.0.1 PORT`` points the client at a server;
    ``halp get LABEL`` prints its entries, newest first, and caches them;
    with the server stopped, ``--offline`` prints them from the cache, and
    a plain ``get`` prints them too, with exit status 1 and a warning.
    The server logs each connection with the client's address.
    """
    now = int(time.time())
    entries = [(now - 300, "198.51.100.7", 6881), (now - 100, "198.51.100.8", 6882)]
    insert(halp_server, "myapp/v2", *entries)
    server = address(halp_server)

    run = halp("insert", "halp", "127.0.0.1", str(halp_server.port))
    assert (run.status, run.stdout, run.stderr) == (OK, "", ""), run

    run = halp("get", "myapp/v2")
    assert (run.status, run.lines, run.stderr) == (OK, lines(*entries), ""), run
    (match,) = halp_server.wait_for_lines(r"^.* (127\.0\.0\.1:\d+) get myapp/v2 -> ok 2$")
    peer = match.group(1)
    assert peer != server
    halp_server.wait_for_lines(rf"^.* {re.escape(peer)} connected$")
    halp_server.wait_for_lines(rf"^.* {re.escape(peer)} disconnected$")

    run = halp("get", "myapp/v2", "--offline")
    assert (run.status, run.lines, run.stderr) == (OK, lines(*entries), ""), run
    # The offline lookup connected nowhere: a marker request is the third
    # connection the server saw (after the raw insert and the lookup).
    assert held(halp_server, "marker") == []
    halp_server.wait_for_lines(r" get marker -> ok 0$")
    connected = halp_server.wait_for_lines(r"^.* (127\.0\.0\.1:\d+) connected$")
    assert len(connected) == 3, halp_server.run_output()

    halp_server.stop_gracefully()
    run = halp("get", "myapp/v2", "--offline")
    assert (run.status, run.lines, run.stderr) == (OK, lines(*entries), ""), run

    run = halp("get", "myapp/v2")
    assert (run.status, run.lines) == (UNREACHABLE, lines(*entries)), run
    (warning,) = run.errors
    assert warning.startswith("halp: no HALP server could be reached: "), run
    assert f"{server} unreachable" in warning and "showing cached entries" in warning, run


# -- 2. failover --------------------------------------------------------------


def test_failover_first_server_stopped(start_server: StartServer, halp: Halp) -> None:
    """With two servers given and the first one stopped, ``halp get``
    prints what the second holds, with exit status 0."""
    now = int(time.time())
    first = start_server(store="memory")
    second = start_server(store="memory")
    insert(first, "app", (now - 10, "192.0.2.1", 1))
    insert(second, "app", (now - 20, "192.0.2.2", 2), (now - 30, "192.0.2.3", 3))
    servers = ["--server", address(first), "--server", address(second)]
    first.stop_gracefully()

    run = halp("get", "app", *servers)
    assert run.status == OK, run
    assert run.lines == lines((now - 20, "192.0.2.2", 2), (now - 30, "192.0.2.3", 3)), run
    assert run.stderr == "", run
    second.wait_for_lines(r" get app -> ok 2$")


def test_failover_to_next_known_server(
    start_server: StartServer, halp: Halp, refused_port: int
) -> None:
    """
    Five servers known through ``halp insert halp`` (the most recently
    confirmed is asked first): the first four, three stopped servers and a
    port that refuses, are asked at once (a lookup asks 4); when they fail,
    the client fails over to the fifth, whose entries it prints, with exit
    status 0.
    """
    now = int(time.time())
    down = start_server(store="memory")
    down_too = start_server(store="memory")
    down_three = start_server(store="memory")
    up = start_server(store="memory")
    insert(up, "app", (now - 20, "192.0.2.2", 2))
    stopped = address(down)
    stopped_too = address(down_too)
    stopped_three = address(down_three)
    assert halp("insert", "halp", "127.0.0.1", str(down.port)).status == OK
    assert halp("insert", "halp", "127.0.0.1", str(refused_port), "-s", "100").status == OK
    assert halp("insert", "halp", "127.0.0.1", str(down_too.port), "-s", "150").status == OK
    assert halp("insert", "halp", "127.0.0.1", str(down_three.port), "-s", "175").status == OK
    assert halp("insert", "halp", "127.0.0.1", str(up.port), "-s", "200").status == OK
    down.stop_gracefully()
    down_too.stop_gracefully()
    down_three.stop_gracefully()

    run = halp("get", "app", "--json")
    assert run.status == OK, run
    document = run.json()
    assert document["entries"] == [{"timestamp": now - 20, "host": "192.0.2.2", "port": 2}]
    assert document["from_cache"] is False
    results = {row["server"]: row["ok"] for row in document["servers"]}
    assert results == {
        stopped: False,
        stopped_too: False,
        stopped_three: False,
        address(refused_port): False,
        address(up): True,
    }, run
    # The working server was asked only once one of the first four had
    # failed (the others may still be failing while it answers).
    order = [row["server"] for row in document["servers"]]
    assert order.index(address(up)) >= 1, run

    servers = halp("servers", "--json")
    assert record(servers, stopped)["failures"] == 1, servers
    assert record(servers, address(refused_port))["failures"] == 1, servers
    assert record(servers, address(up))["successes"] == 1, servers


# -- 3. merging servers that disagree -----------------------------------------


def test_merge_servers_that_disagree(start_server: StartServer, halp: Halp) -> None:
    """
    Two servers with different times for the same host and port, and
    entries the other lacks: the output is the union, each entry with its
    newest time, newest first; the cache keeps the same view.
    """
    now = int(time.time())
    one = start_server(store="memory")
    two = start_server(store="memory")
    insert(one, "app", (now - 100, "192.0.2.1", 1000), (now - 300, "192.0.2.2", 2000))
    insert(two, "app", (now - 50, "192.0.2.1", 1000), (now - 200, "192.0.2.3", 3000))
    union = lines(
        (now - 50, "192.0.2.1", 1000),
        (now - 200, "192.0.2.3", 3000),
        (now - 300, "192.0.2.2", 2000),
    )

    run = halp("get", "app", "--server", address(one), "--server", address(two))
    assert (run.status, run.lines, run.stderr) == (OK, union, ""), run
    one.wait_for_lines(r" get app -> ok 2$")
    two.wait_for_lines(r" get app -> ok 2$")

    run = halp("get", "app", "--offline")
    assert (run.status, run.lines) == (OK, union), run


# -- 4. every server down -----------------------------------------------------


def test_every_server_down_prints_cache(
    halp: Halp, blackhole: socket.socket, refused_port: int
) -> None:
    """
    A server that accepts but never answers and one that refuses: with
    ``--timeout 1`` the command ends with exit status 1, prints the cached
    entries and warns about both servers.
    """
    now = int(time.time())
    assert halp("insert", "app", "192.0.2.7", "7000", "-s", "60").status == OK
    assert halp("insert", "app", "192.0.2.8", "8000").status == OK
    silent = address(blackhole.getsockname()[1])
    servers = ["--server", silent, "--server", address(refused_port)]

    run = halp("get", "app", *servers, "--timeout", "1")
    assert run.status == UNREACHABLE, run
    assert without_time(run.lines) == ["192.0.2.8 8000", "192.0.2.7 7000"]
    times = [int(line.split(" ", 1)[0]) for line in run.lines]
    assert now - 5 <= times[0] and times[1] <= times[0] - 60, run
    (warning,) = run.errors
    assert re.search(rf"{silent} unreachable: no answer within [0-9.]+ s", warning), run
    assert f"{address(refused_port)} unreachable: cannot connect" in warning, run
    assert warning.endswith("showing cached entries"), run
    # The client did connect to the silent server.
    blackhole.settimeout(IO_TIMEOUT)
    connection, _ = blackhole.accept()
    connection.close()

    run = halp("get", "other", *servers, "--timeout", "1")
    assert (run.status, run.stdout) == (UNREACHABLE, ""), run
    assert len(run.errors) == 1 and "showing cached entries" in run.stderr, run


# -- 5. announce fanout -------------------------------------------------------


def test_announce_reaches_fanout_servers(start_server: StartServer, halp: Halp) -> None:
    """``--fanout 2`` with three servers known stores the entry at exactly
    two of them, one output line each; ``--fanout 5`` reaches all three."""
    servers = [start_server(store="memory") for _ in range(3)]
    known = [arg for server in servers for arg in ("--server", address(server))]

    run = halp("announce", "app", "192.0.2.50", "5000", "--fanout", "2", *known)
    assert run.status == OK and run.stderr == "", run
    holding = [s for s in servers if without_time(held(s, "app")) == ["192.0.2.50 5000"]]
    assert [held(s, "app") for s in servers if s not in holding] == [[]], run
    assert sorted(run.lines) == sorted(f"{address(s)} stored" for s in holding), run
    assert len(holding) == 2

    run = halp("announce", "app", "192.0.2.51", "5001", "--fanout", "5", *known, "--json")
    assert run.status == OK and run.stderr == "", run
    document = run.json()
    assert (document["reached"], document["stored"]) == (3, 3), run
    assert sorted(row["server"] for row in document["servers"]) == sorted(map(address, servers))
    assert all(row["ok"] and row["stored"] for row in document["servers"]), run
    for server in servers:
        assert "192.0.2.51 5001" in without_time(held(server, "app"))

    run = halp("announce", "app", "192.0.2.52", "5002", *known)
    assert run.status == OK, run
    assert sorted(run.lines) == sorted(f"{address(s)} stored" for s in servers), run


# -- 6. libhalp-only servers --------------------------------------------------


def test_libhalp_server_detected(start_libhalp_server: StartLibhalpServer, halp: Halp) -> None:
    """
    A server that speaks only the 2011 libhalp form is recognised on first
    contact; afterwards the client talks to it the libhalp way, for lookups
    and announcements, without ever crashing it.
    """
    now = int(time.time())
    entries = [
        (now - 30, "10.1.1.1", 1001),
        (now - 10, "10.1.1.2", 1002),
        (now - 20, "10.1.1.3", 1003),
    ]
    lib = start_libhalp_server({"app": entries, "other": [(now, "10.9.9.9", 9)]})
    server = address(lib)

    run = halp("get", "app", "--server", server)
    assert (run.status, run.lines, run.stderr) == (OK, lines(*entries), ""), run
    assert lib.queries(1) == ["get app\n"]

    run = halp("servers", "--json")
    row = record(run, server)
    assert (row["dialect"], row["pinned"], row["successes"]) == ("libhalp", False, 1), run
    run = halp("servers")
    assert run.status == OK and run.lines[1].startswith(server) and "libhalp" in run.lines[1], run

    # Known from the cache now, and asked in the libhalp form.
    run = halp("get", "app")
    assert (run.status, run.lines, run.stderr) == (OK, lines(*entries), ""), run
    assert lib.queries(2)[1] == "get app"

    run = halp("announce", "app", "10.1.1.9", "1009")
    assert (run.status, run.lines, run.stderr) == (OK, [f"{server} stored"], ""), run
    query = lib.queries(3)[2]
    assert re.fullmatch(r"insert app\n(\d+) 10\.1\.1\.9 1009", query), query

    run = halp("get", "app", "--limit", "2")
    assert run.status == OK and len(run.lines) == 2, run
    assert run.lines[0].endswith(" 10.1.1.9 1009") and run.lines[1] == f"{now - 10} 10.1.1.2 1002"
    assert lib.queries(4)[3] == "get app"
    assert lib.crashes() == 0, lib.run_output()


def test_libhalp_server_announce_first_contact(
    start_libhalp_server: StartLibhalpServer, halp: Halp
) -> None:
    """
    An announcement as the first contact with a libhalp server: it gets a
    HALP/1 insert block, answers it the 2011 way (its outcomes run together
    on one line, with a ``failure:`` for the block's empty line), and the
    command still reports the entry stored.
    """
    lib = start_libhalp_server({})
    server = address(lib)

    run = halp("announce", "app", "10.2.2.2", "2002", "--server", server)
    assert (run.status, run.lines, run.stderr) == (OK, [f"{server} stored"], ""), run
    (query,) = lib.queries(1)
    assert re.fullmatch(r"insert app\n(\d+) 10\.2\.2\.2 2002\n\n", query), query
    assert record(halp("servers", "--json"), server)["dialect"] == "libhalp"

    run = halp("get", "app")
    assert run.status == OK and without_time(run.lines) == ["10.2.2.2 2002"]


def test_libhalp_scheme_from_first_contact(
    start_libhalp_server: StartLibhalpServer, halp: Halp
) -> None:
    """``--server libhalp://HOST:PORT`` talks the libhalp form from the
    first request on."""
    now = int(time.time())
    entries = [(now - 5, "10.3.3.3", 3003), (now - 6, "10.3.3.4", 3004)]
    lib = start_libhalp_server({"app": entries})
    told = f"libhalp://{address(lib)}"

    run = halp("get", "app", "--server", told)
    assert (run.status, run.lines, run.stderr) == (OK, lines(*entries), ""), run
    assert lib.queries(1) == ["get app"]

    run = halp("announce", "app", "10.3.3.5", "3005", "--server", told)
    assert (run.status, run.lines) == (OK, [f"{address(lib)} stored"]), run
    assert re.fullmatch(r"insert app\n\d+ 10\.3\.3\.5 3005", lib.queries(2)[1])

    row = record(halp("servers", "--json", "--server", told), address(lib))
    assert (row["dialect"], row["pinned"]) == ("libhalp", True)
    assert lib.crashes() == 0, lib.run_output()


def test_halp1_server_answers_libhalp_form(halp_server: HALPServer, halp: Halp) -> None:
    """A HALP/1 server told to be a libhalp one (``libhalp://``) answers the
    libhalp form: lookups and announcements work."""
    now = int(time.time())
    entries = [(now - 40, "10.4.4.4", 4004), (now - 41, "10.4.4.5", 4005)]
    insert(halp_server, "app", *entries)
    told = f"libhalp://{address(halp_server)}"

    run = halp("get", "app", "--server", told)
    assert (run.status, run.lines, run.stderr) == (OK, lines(*entries), ""), run

    run = halp("announce", "app", "10.4.4.6", "4006", "--server", told)
    assert (run.status, run.lines, run.stderr) == (OK, [f"{address(halp_server)} stored"], ""), run
    assert without_time(held(halp_server, "app")) == [
        "10.4.4.6 4006",
        "10.4.4.4 4004",
        "10.4.4.5 4005",
    ]
    row = record(halp("servers", "--json", "--server", told), address(halp_server))
    assert (row["dialect"], row["successes"]) == ("libhalp", 2)


# -- 7. command-line basics ---------------------------------------------------


def test_help(halp: Halp) -> None:
    run = halp("--help", cache=False)
    assert run.status == OK and run.stderr == "", run
    assert run.lines[0].startswith("usage: halp"), run
    for command in ("get", "insert", "announce", "labels", "servers"):
        assert re.search(rf"^\s+{command}\s", run.stdout, re.MULTILINE), run
    run = halp("get", "--help", cache=False)
    assert run.status == OK and "--offline" in run.stdout and "--cache" in run.stdout, run


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["get", "bad$label"], id="bad-label"),
        pytest.param(["get", "a//b"], id="empty-label-segment"),
        pytest.param(["get", "app", "--limit", "0"], id="limit-0"),
        pytest.param(["get", "app", "--limit", "101"], id="limit-101"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param([], id="no-command"),
        pytest.param(["get"], id="missing-label"),
        pytest.param(["get", "app", "--server", "nope"], id="server-without-port"),
        pytest.param(["get", "app", "--server", "127.0.0.1:99999"], id="server-bad-port"),
        pytest.param(["get", "app", "--server", "::1:7100"], id="server-bare-ipv6"),
        pytest.param(["insert", "app", "192.0.2.1", "0"], id="port-0"),
        pytest.param(["insert", "app", "192.0.2.1", "http"], id="port-not-a-number"),
        pytest.param(["announce", "app", "bad..host", "80"], id="bad-host"),
        pytest.param(["announce", "app", "192.0.2.1", "80", "--fanout", "0"], id="fanout-0"),
        pytest.param(["get", "app", "--timeout", "0"], id="timeout-0"),
        pytest.param(["get", "app", "--frobnicate"], id="unknown-option"),
    ],
)
def test_usage_errors(halp: Halp, args: list[str]) -> None:
    """Exit status 2, one line on stderr, no traceback."""
    assert_usage_error(halp(*args))


def test_cache_that_is_a_file(halp: Halp, tmp_path: Path) -> None:
    """A cache path that is a regular file is a usage error, given with
    ``--cache`` or ``$HALP_CACHE``."""
    plain = tmp_path / "not-a-directory"
    plain.write_text("x")
    run = halp("get", "app", "--offline", "--cache", str(plain), cache=False)
    assert_usage_error(run)
    assert str(plain) in run.stderr, run
    run = halp("insert", "app", "192.0.2.1", "80", cache=False, env={"HALP_CACHE": str(plain)})
    assert_usage_error(run)
    assert plain.read_text() == "x"


def test_cache_location(halp: Halp, tmp_path: Path) -> None:
    """``$HALP_CACHE`` is honoured, ``--cache`` overrides it, and without
    either the cache is ``~/.halp``."""
    env_cache = tmp_path / "env-cache"
    env = {"HALP_CACHE": str(env_cache)}
    assert halp("insert", "app", "192.0.2.1", "80", cache=False, env=env).status == OK
    assert (env_cache / "cache.sqlite3").is_file()

    run = halp("get", "app", "--offline", cache=False, env=env)
    assert run.status == OK and without_time(run.lines) == ["192.0.2.1 80"]
    run = halp("get", "app", "--offline", env=env)  # --cache wins
    assert (run.status, run.stdout) == (OK, ""), run

    assert halp("insert", "app", "192.0.2.2", "81", cache=False).status == OK
    assert (halp.home / ".halp" / "cache.sqlite3").is_file()
    run = halp("get", "app", "--offline", cache=False)
    assert without_time(run.lines) == ["192.0.2.2 81"], run


def test_labels(halp_server: HALPServer, halp: Halp) -> None:
    """``halp labels`` prints what the server lists, and ``halp labels
    PREFIX`` the sublabels; both come from the cache when no server
    answers."""
    now = int(time.time())
    insert(halp_server, "app/v1", (now - 100, "192.0.2.1", 1))
    insert(halp_server, "app/v2", (now - 50, "192.0.2.2", 2))
    insert(halp_server, "other", (now - 70, "192.0.2.3", 3))
    server = ["--server", address(halp_server)]

    run = halp("labels", *server)
    assert run.status == OK and run.stderr == "", run
    assert without_time(run.lines) == ["app", "other"], run
    assert run.lines == held(halp_server, "labels")

    run = halp("labels", "app", *server)
    assert run.status == OK, run
    assert run.lines == [f"{now - 50} app/v2", f"{now - 100} app/v1"], run
    assert halp("labels", "app/", *server).lines == run.lines

    # Listings are not cached; the cache lists the labels of the entries a
    # lookup brought in, and its own list of servers, ``halp``.
    assert halp("get", "app/v2", *server).status == OK
    halp_server.stop_gracefully()
    run = halp("labels", *server)
    assert run.status == UNREACHABLE, run
    assert without_time(run.lines) == ["halp", "app"], run
    assert run.lines[1] == f"{now - 50} app", run
    assert len(run.errors) == 1 and "showing cached labels" in run.stderr, run


def test_servers_lists_quality(halp_server: HALPServer, halp: Halp, refused_port: int) -> None:
    """``halp servers`` lists every known server, best first, with its
    quality, answers, failures and backoff."""
    now = int(time.time())
    insert(halp_server, "app", (now - 1, "192.0.2.1", 1), (now - 2, "192.0.2.2", 2))
    good, bad = address(halp_server), address(refused_port)
    servers = ["--server", good, "--server", bad]
    assert halp("get", "app", *servers).status == OK

    run = halp("servers", *servers)
    assert run.status == OK and run.stderr == "", run
    header, first, second = run.lines
    assert header.split() == ["SERVER", "QUALITY", "OK", "FAILED", "LAST", "SUCCESS", "NOTES"]
    answered = INITIAL_QUALITY + QUALITY_ANSWER + 2 * QUALITY_ENTRY
    assert first.split()[:4] == [good, str(answered), "1", "0"], run
    assert second.split()[:5] == [bad, str(INITIAL_QUALITY - QUALITY_FAILURE), "0", "1", "never"]
    assert "pinned" in second and "backoff until" in second, run

    row = record(halp("servers", "--json", *servers), bad)
    assert (row["quality"], row["failures_in_row"], row["pinned"]) == (
        INITIAL_QUALITY - QUALITY_FAILURE,
        1,
        True,
    )
    assert row["retry_at"] > row["last_failure"] >= now


def test_json_outputs(halp_server: HALPServer, halp: Halp) -> None:
    """Every command's ``--json`` output is one JSON document."""
    server = ["--server", address(halp_server)]
    run = halp("announce", "app", "192.0.2.9", "9", *server, "--json")
    assert run.status == OK, run
    document = run.json()
    assert (document["label"], document["entry"]["host"]) == ("app", "192.0.2.9"), run
    assert (document["reached"], document["stored"]) == (1, 1), run
    stamp = document["entry"]["timestamp"]

    run = halp("get", "app", *server, "--json")
    assert run.status == OK, run
    assert run.json() == {
        "label": "app",
        "entries": [{"timestamp": stamp, "host": "192.0.2.9", "port": 9}],
        "from_cache": False,
        "servers": [{"server": address(halp_server), "ok": True, "dialect": "halp1"}],
    }

    run = halp("get", "app", "--offline", "--json")
    assert run.json()["from_cache"] is True and len(run.json()["entries"]) == 1, run

    run = halp("labels", *server, "--json")
    assert run.json()["labels"] == [{"timestamp": stamp, "name": "app"}], run

    run = halp("insert", "app", "192.0.2.10", "10", "-s", "5", "--json")
    assert run.status == OK, run
    assert run.json()["entry"]["host"] == "192.0.2.10"

    run = halp("servers", "--json")
    assert [row["server"] for row in run.json()["servers"]] == [address(halp_server)], run
