"""
End to end: several real ``twistd halp --store redis://...`` processes on one
real ``redis-server`` (started by the test in a temporary directory).

They share one data set: an insert through one is served by the others;
four processes inserting at once into one label never exceed its cap and
never move a confirmed time backwards; and while Redis is gone they answer
``error unavailable``, stay up, and serve again within seconds of its return.
"""

from __future__ import annotations

import random
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from halp.test.redis_server import RedisServer
from tests.halpserver import HALPServer, StartServer, eventually

pytestmark = pytest.mark.e2e

#: How long the servers may take to serve again once Redis is back.
RECOVERY = 5.0


def insert_block(labels: str, *entries: str) -> bytes:
    return ("insert %s\n%s\n" % (labels, "".join(e + "\n" for e in entries))).encode("ascii")


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer(persistence="aof").start()
    yield server
    server.close()


def start_on(start_server: StartServer, redis: RedisServer, *args: str, prefix: str = "e2e:") -> HALPServer:
    return start_server(
        "--no-federation", *args, store=f"{redis.url}?prefix={prefix}&timeout=2"
    )


def served(server: HALPServer, label: str) -> dict[tuple[str, int], int]:
    with server.connect() as c:
        reply = c.reply(f"get {label}[0:100]\n".encode())
    assert reply.status.startswith("ok "), reply
    found = {}
    for line in reply.lines:
        ts, host, port = line.split()
        found[(host, int(port))] = int(ts)
    return found


def test_an_insert_through_one_process_is_served_by_another(
    start_server: StartServer, redis: RedisServer
) -> None:
    a = start_on(start_server, redis)
    b = start_on(start_server, redis)
    now = int(time.time())
    with a.connect() as c:
        assert c.reply(insert_block("myapp/v2", f"{now - 10} 198.51.100.7 6881")).status == (
            "ok 1 stored 0 failed"
        )
    with b.connect() as c:
        assert c.reply(b"get myapp/v2\n").lines == [f"{now - 10} 198.51.100.7 6881"]
        assert c.reply(b"get labels\n").lines == [f"{now - 10} myapp"]
    # Two processes on one data set are one server: one node name.
    nodes = []
    for server in (a, b):
        with server.connect() as c:
            fields = dict(line.split(" ", 1) for line in c.reply(b"hello\n").lines)
        nodes.append(fields["node"])
    assert nodes[0] == nodes[1]
    # The servers say where they keep their data, without any password.
    assert "serving from the redis://127.0.0.1" in a.output()
    assert "Using Redis 7" in a.output() or "Using Redis" in a.output()
    # appendonly yes + appendfsync always: nothing to warn about.
    assert "on disk" not in a.output()
    # A restarted process finds everything again.
    a.restart()
    assert served(a, "myapp/v2") == {("198.51.100.7", 6881): now - 10}


def test_other_processes_serve_an_insert_within_the_answer_cache_age(
    start_server: StartServer, redis: RedisServer
) -> None:
    """
    With the answer cache, the process that took an insert serves it at
    once; another process that kept an answer to the same ``get`` line
    serves it when that answer is ``--answer-cache`` seconds old, not later,
    and its answers never go back in time meanwhile.
    """
    age = 3.0
    a = start_on(start_server, redis, "--answer-cache", str(age))
    b = start_on(start_server, redis, "--answer-cache", str(age))
    now = int(time.time())
    old, new = f"{now - 10} 198.51.100.7 6881", f"{now - 5} 198.51.100.8 6881"
    with a.connect() as ca, b.connect() as cb:
        assert ca.reply(insert_block("app", old)).status == "ok 1 stored 0 failed"
        assert cb.reply(b"get app\n").lines == [old]  # b keeps this answer
        kept_at = time.monotonic()
        assert ca.reply(insert_block("app", new)).status == "ok 1 stored 0 failed"
        assert ca.reply(b"get app\n").lines == [new, old]
        seen: list[tuple[float, list[str]]] = []

        def fresh() -> bool | None:
            lines = cb.reply(b"get app\n").lines
            seen.append((time.monotonic() - kept_at, lines))
            return True if lines == [new, old] else None

        # Between tries, wait up to 0.05 s for a (quiet meanwhile) to log.
        eventually(fresh, a, timeout=age + 10, step=0.05)
    fresh_after = seen[-1][0]
    assert fresh_after <= age + 2, f"served only after {fresh_after:.2f} s"
    # Before that, b served its kept answer, whole, and nothing older.
    assert all(lines == [old] for _, lines in seen[:-1]), seen
    # Seen stale for most of the age: it was the cache, not a slow store.
    assert fresh_after >= age - 1 or len(seen) == 1 and fresh_after > age, seen


def test_four_processes_racing_on_one_label_keep_its_rules(
    start_server: StartServer, redis: RedisServer
) -> None:
    """
    Four processes insert into label ``capped`` (200 addresses, cap 50) and
    label ``mono`` (40 addresses, never evicted) at once, from four clients,
    while a fifth thread samples both labels through every process and
    straight from Redis: ``capped`` never holds more than 50 entries, and no
    confirmed time in ``mono`` ever goes backwards.  At the end, each entry
    of ``mono`` holds the newest time any client had acknowledged for it.
    """
    cap = 50
    # Without the answer cache: the sampler reads one label through every
    # process in turn, and a kept answer may be up to --answer-cache
    # seconds older than another process's (see the next test).
    servers = [
        start_on(start_server, redis, "--max-entries", str(cap), "--answer-cache", "0")
        for _ in range(4)
    ]
    now = int(time.time())
    mono_hosts = [f"198.51.100.{i}" for i in range(1, 41)]
    capped_hosts = [f"203.0.113.{i}" for i in range(1, 201)]
    acknowledged: dict[tuple[str, int], int] = {}
    lock = threading.Lock()
    done = threading.Event()
    errors: list[str] = []
    samples = {"count": 0, "max_capped": 0}

    def insert(index: int) -> None:
        rng = random.Random(index)
        try:
            with servers[index].connect() as c:
                for _ in range(150):
                    mono = [
                        (h, 7000, now - rng.randrange(3000)) for h in rng.sample(mono_hosts, 8)
                    ]
                    reply = c.reply(insert_block("mono", *(f"{ts} {h} {p}" for h, p, ts in mono)))
                    if reply.status != "ok 8 stored 0 failed":
                        errors.append(f"mono insert: {reply}")
                        return
                    for (h, p, ts), line in zip(mono, reply.lines):
                        stored = int(line.split()[2])
                        if stored < ts:
                            errors.append(f"stored {stored} < sent {ts} for {h}")
                        with lock:
                            acknowledged[(h, p)] = max(acknowledged.get((h, p), 0), ts)
                    capped = [f"{now - rng.randrange(3000)} {h} 7000" for h in rng.sample(capped_hosts, 10)]
                    reply = c.reply(insert_block("capped", *capped))
                    if not reply.status.startswith("ok "):
                        errors.append(f"capped insert: {reply}")
                        return
        except AssertionError as e:
            errors.append(f"inserter {index}: {e}")

    def sample() -> None:
        seen: dict[tuple[str, int], int] = {}
        key = "e2e:{e2e}:e:capped"
        try:
            while not done.is_set():
                for server in servers:
                    for address, ts in served(server, "mono").items():
                        if ts < seen.get(address, 0):
                            errors.append(f"{address} went back from {seen[address]} to {ts}")
                        seen[address] = ts
                    count = len(served(server, "capped"))
                    raw = redis.call("ZCARD", key)
                    assert raw.startswith(b":"), raw
                    samples["max_capped"] = max(samples["max_capped"], count, int(raw[1:]))
                    samples["count"] += 1
        except AssertionError as e:
            errors.append(f"sampler: {e}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    inserters = [threading.Thread(target=insert, args=(i,), daemon=True) for i in range(4)]
    for t in inserters:
        t.start()
    for t in inserters:
        t.join(timeout=300)
    done.set()
    sampler.join(timeout=60)
    assert not errors, errors[:10]
    assert samples["count"] >= 4, samples
    assert samples["max_capped"] <= cap
    # The label did fill up: the cap was really tested.
    assert len(served(servers[0], "capped")) == cap
    final = served(servers[3], "mono")
    assert final == acknowledged
    for server in servers:
        assert "Traceback" not in server.output()


def test_redis_dying_and_coming_back(start_server: StartServer, redis: RedisServer) -> None:
    """
    Redis is killed while two processes take inserts: they answer ``error
    unavailable`` (and HTTP 503) promptly (every read has a 15 s socket
    timeout), do not
    crash, and serve again within 5 seconds of Redis answering again; every
    insert acknowledged before the kill is still there (appendfsync always).
    """
    servers = [
        start_on(start_server, redis, "--http", "tcp:0:interface=127.0.0.1"),
        start_on(start_server, redis),
    ]
    now = int(time.time())
    acked: list[str] = []
    with servers[0].connect() as c:
        for i in range(50):
            entry = f"{now - 100} 198.51.100.{i + 1} 6881"
            assert c.reply(insert_block("live", entry)).status == "ok 1 stored 0 failed"
            acked.append(entry)
    redis.kill()
    for server in servers:
        with server.connect() as c:
            for i in range(5):
                reply = c.reply(insert_block("live", f"{now} 203.0.113.{i + 1} 1"))
                assert reply.status.startswith("error unavailable"), reply
                reply = c.reply(b"get live\n")
                assert reply.status.startswith("error unavailable"), reply
        assert server.process_status() is None, server.output()
        assert "Lost the connection to Redis" in server.output()
    # The HTTP face says 503, and when to come back.
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(servers[0].http_url("/v1/labels/live"), timeout=15)
    assert raised.value.code == 503
    assert raised.value.headers["Retry-After"]
    assert b"unavailable" in raised.value.read()
    redis.start()
    back = time.monotonic()
    for server in servers:
        with server.connect() as c:
            while True:
                reply = c.reply(b"get live[0:100]\n")
                if reply.status.startswith("ok "):
                    break
                assert reply.status.startswith("error unavailable"), reply
                assert time.monotonic() - back < RECOVERY, (
                    f"still unavailable {RECOVERY} s after Redis came back"
                )
                server.wait_for_more_output(0.1)
            # Every acknowledged insert (and, for the second server, the
            # first one's insert after the return).
            assert set(acked) <= set(reply.lines)
            assert set(reply.lines) - set(acked) <= {f"{now} 203.0.113.9 1"}
            assert c.reply(insert_block("live", f"{now} 203.0.113.9 1")).status == (
                "ok 1 stored 0 failed"
            )
        assert "is reachable again" in server.output()
        assert "Traceback" not in server.output()


def test_warns_at_start_up_when_redis_keeps_nothing_on_disk(start_server: StartServer) -> None:
    redis = RedisServer(persistence="none").start()
    try:
        server = start_on(start_server, redis)
        server.wait_for_lines(re.compile(r"keeps nothing on disk"))
        assert "[halp.store.redis.RedisStore#warn]" in server.output()
    finally:
        redis.close()
