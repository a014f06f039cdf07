"""
End-to-end tests of federation: five real ``twistd --nodaemon halp``
processes on loopback, each knowing only the previous one (a chain), with
short intervals.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.halpserver import GarbageServer, HALPServer, Reply, StartServer, eventually, free_port

pytestmark = pytest.mark.e2e

#: Seconds between pulls, and between tests of learned servers.
SYNC = 0.5
TEST = 0.2
#: How long the federation may take to settle anything, at most.
SETTLE = 60.0


def fields(reply: Reply) -> dict[str, str]:
    return {key: value for key, _, value in (line.partition(" ") for line in reply.lines)}


def stats(server: HALPServer) -> dict[str, int]:
    reply = server.reply(b"stats\n")
    assert reply.status == "ok", reply
    return {k: int(v) for k, v in fields(reply).items()}


def peers(server: HALPServer) -> dict[str, str]:
    """``peers`` as address -> state."""
    reply = server.reply(b"peers\n")
    assert reply.status.startswith("ok"), reply
    return {line.split()[0]: line.split()[1] for line in reply.lines}


def listed(server: HALPServer, label: str) -> set[str]:
    """The ``HOST:PORT`` of every entry ``server`` serves under ``label``."""
    reply = server.reply(f"get {label}[0:100]\n".encode())
    assert reply.status.startswith("ok"), reply
    return {"%s:%s" % tuple(line.split()[1:3]) for line in reply.lines}


def insert(server: HALPServer, label: str, host: str, port: int) -> None:
    reply = server.reply(f"insert {label}\n{int(time.time())} {host} {port}\n\n".encode())
    assert reply.status == "ok 1 stored 0 failed", reply


@pytest.fixture
def chain(start_server: StartServer, tmp_path: Path) -> Iterator[list[HALPServer]]:
    """Five servers, each with only the previous one as ``--peer``."""
    ports = [free_port() for _ in range(5)]
    servers = []
    for i, port in enumerate(ports):
        args = [
            "--public-address", f"127.0.0.1:{port}",
            "--sync-interval", str(SYNC),
            "--peer-test-interval", str(TEST),
            "--no-request-log",
        ]
        if i:
            args += ["--peer", f"127.0.0.1:{ports[i - 1]}"]
        store = f"sqlite:{tmp_path / f'server{i + 1}.sqlite3'}"
        servers.append(start_server(*args, store=store, port=port))
    yield servers


def addresses(servers: list[HALPServer]) -> set[str]:
    return {f"127.0.0.1:{s.port}" for s in servers}


def test_a_chain_of_five_servers_becomes_one_service(
    chain: list[HALPServer], start_garbage_server: Callable[[], GarbageServer]
) -> None:
    s1, s2, s3, s4, s5 = chain
    everyone = addresses(chain)

    # 1. Every server lists every server under halp, and trusts the others.
    for server in chain:
        eventually(lambda: listed(server, "halp") == everyone or None, server)
    for server in chain:
        others = everyone - {f"127.0.0.1:{server.port}"}
        eventually(
            lambda: all(peers(server).get(a) == "trusted" for a in others) or None, server
        )

    # 2. An entry inserted at server 1 is served by server 5 (and all).
    before = [stats(s) for s in chain]
    started = time.monotonic()
    insert(s1, "myapp", "192.0.2.7", 4000)
    reached: dict[int, float] = {}
    while len(reached) < len(chain):
        for i, server in enumerate(chain):
            if i not in reached and "192.0.2.7:4000" in listed(server, "myapp"):
                reached[i] = time.monotonic() - started
        assert time.monotonic() - started < SETTLE, f"reached only {reached}"
    after = [stats(s) for s in chain]
    pushes = sum(a["push-sent"] - b["push-sent"] for a, b in zip(after, before))
    print(
        f"\nAn insert at server 1 reached all 5 servers in {max(reached.values()):.3f} s "
        f"(server 5: {reached[4]:.3f} s) with {pushes} push messages"
    )
    assert "192.0.2.7:4000" in listed(s5, "myapp")
    # No loop, no amplification: each server forwards a change at most to
    # its fanout (5), and only once.
    assert pushes <= 5 * len(chain)

    # 3. Server 3, killed, misses an insert and catches up through anti-entropy.
    s3.kill()
    insert(s1, "myapp", "192.0.2.8", 4000)
    for server in (s1, s2, s4, s5):
        eventually(lambda: "192.0.2.8:4000" in listed(server, "myapp") or None, server)
    s3.start()
    eventually(lambda: "192.0.2.8:4000" in listed(s3, "myapp") or None, s3)
    assert stats(s3)["entries-pulled"] >= 1
    s3.wait_for_lines(r"Synced with 127\.0\.0\.1:\d+: [1-9]\d* new")

    # 4. A server that answers garbage is demoted and not used.
    garbage = start_garbage_server()
    bad = f"127.0.0.1:{garbage.port}"
    insert(s1, "halp", "127.0.0.1", garbage.port)  # type: ignore[arg-type]
    for server in chain:
        eventually(lambda: peers(server).get(bad) == "banned" or None, server)
    contacts = garbage.connections()
    # Every server tested it once, then used it once or twice before the
    # garbage it answered got it banned.
    assert contacts <= 3 * len(chain), garbage.run_output()
    # Banned: not contacted again, though halp still lists it and the
    # servers keep syncing with each other.
    for server in chain:
        server.wait_for_lines(r"banned", 1)
    insert(s5, "myapp", "192.0.2.9", 4000)
    for server in chain:
        eventually(lambda: "192.0.2.9:4000" in listed(server, "myapp") or None, server)
    pulls = stats(s1)["pull-sent"]
    eventually(lambda: stats(s1)["pull-sent"] >= pulls + 4 or None, s1)
    assert garbage.connections() == contacts, garbage.run_output()
    assert bad in listed(s1, "halp")

    for server in chain:
        assert "Traceback" not in server.output(), server.output()
