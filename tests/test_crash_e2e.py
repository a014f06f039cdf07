"""
End-to-end crash safety of the SQLite store, with real ``twistd halp``
processes: killed with SIGKILL in the middle of pipelined inserts, started
on damaged or unusable database files, and run on a file system that fills
up (a 10 MiB tmpfs in a mount namespace of the server's own, made with
``unshare``; those tests are skipped where ``unshare`` cannot do that).

Nothing here sleeps: every wait is a blocking read with a timeout, a
``select`` with a deadline, or a request whose answer is the thing waited
for.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import selectors
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from halp.store import parse_store_spec
from halp.store.sqlite import SCHEMA_VERSION
from tests.halpserver import (
    IO_TIMEOUT,
    TWISTD,
    HALPServer,
    Reply,
    StartServer,
    is_status,
    run_twistd,
)

pytestmark = pytest.mark.e2e

#: Reproduce a run of the kill test with ``HALP_CRASH_SEED=N``.
SEED = int(os.environ.get("HALP_CRASH_SEED", "20240611"))

#: Kill runs, and the acknowledged entries each kill point is drawn below.
RUNS = 20
KILL_POINTS = 10_000

#: Entry lines per ``insert``, connections, and requests in flight on each.
PER_INSERT = 50
CONNECTIONS = 4
IN_FLIGHT = 4

def insert_block(label: str, entries: list[str]) -> bytes:
    """An ``insert`` request: header, entry lines, empty line."""
    return ("insert %s\n%s\n" % (label, "".join(e + "\n" for e in entries))).encode("ascii")


def integrity(path: Path | str) -> list[str]:
    """
    ``PRAGMA integrity_check`` of the database at ``path``, read through a
    read-only connection, which leaves any ``-wal`` file as it found it
    (the last read-write connection to close would fold it into the
    database and delete it, and the server's recovery would go untested).
    """
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        return [str(row[0]) for row in db.execute("PRAGMA integrity_check")]


# -- 1. kill -9 -------------------------------------------------------------------


@dataclass
class KillRun:
    """What one run of the kill test saw."""

    kill_point: int
    acknowledged: dict[tuple[str, int], int]
    sent: int
    wal_bytes: int = 0
    restart_seconds: float = 0.0
    stored: int = 0
    lost: int = 0


def _host(n: int) -> str:
    """The ``n``-th address of 1.0.0.0/8: globally routable, so admitted
    whatever the admission rules."""
    return f"1.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def insert_and_kill(server: HALPServer, label: str, kill_point: int, now: int) -> KillRun:
    """
    Pipeline inserts of :data:`PER_INSERT` entries on :data:`CONNECTIONS`
    connections with :data:`IN_FLIGHT` requests in flight on each, reading
    the answers as they come, and SIGKILL the server the moment the
    ``kill_point``-th ``success:`` line has been read (at once for 0).

    :return: every acknowledged entry with its acknowledged time.
    """
    assert server.port is not None and server.process is not None
    run = KillRun(kill_point, {}, 0)
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytearray] = {}

    def send_insert(sock: socket.socket) -> None:
        entries = []
        for _ in range(PER_INSERT):
            n = run.sent
            entries.append(f"{now - n % 3600} {_host(n)} {1 + n % 65535}")
            run.sent += 1
        sock.sendall(insert_block(label, entries))

    try:
        for _ in range(CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT)
            buffers[sock] = bytearray()
            selector.register(sock, selectors.EVENT_READ)
            for _ in range(IN_FLIGHT):
                send_insert(sock)
        if kill_point == 0:
            assert server.kill() == -signal.SIGKILL
            return run
        while True:
            ready = selector.select(IO_TIMEOUT)
            assert ready, f"no answer for {IO_TIMEOUT} s:\n{server.output_tail()}"
            for key, _ in ready:
                ready_sock = key.fileobj
                assert isinstance(ready_sock, socket.socket)
                sock = ready_sock
                chunk = sock.recv(65536)
                assert chunk, f"the server closed a connection:\n{server.output_tail()}"
                buffer = buffers[sock]
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = buffer[:end].decode("ascii")
                    del buffer[: end + 1]
                    if line.startswith("success: "):
                        _, got_label, ts, host, port = line.split(" ")
                        assert got_label == label, line
                        run.acknowledged[(host, int(port))] = int(ts)
                        if len(run.acknowledged) == kill_point:
                            assert server.kill() == -signal.SIGKILL
                            return run
                    elif is_status(line):
                        assert line == f"ok {PER_INSERT} stored 0 failed", line
                        send_insert(sock)
                    else:
                        raise AssertionError(f"unexpected line {line!r}")
    finally:
        selector.close()
        for sock in buffers:
            sock.close()


def read_label(server: HALPServer, label: str, at_most: int) -> dict[tuple[str, int], int]:
    """Every entry of ``label`` (it has at most ``at_most``), by address."""
    windows = range(0, at_most + 100, 100)
    request = b"".join(f"get {label}[{i}:{i + 100}]\n".encode() for i in windows)
    stored: dict[tuple[str, int], int] = {}
    with server.connect() as client:
        for reply in client.replies(request, len(windows)):
            assert reply.status == f"ok {len(reply.lines)}", reply.status
            for line in reply.lines:
                ts, host, port = line.split(" ")
                stored[(host, int(port))] = int(ts)
    return stored


def test_kill_9_at_20_random_points_of_up_to_10000_acknowledged_inserts_loses_none(
    start_server: StartServer, tmp_path: Path
) -> None:
    """
    20 runs; in each, the server is killed with SIGKILL right after the
    K-th acknowledged entry, K drawn uniformly from [0, 10000) (seeded:
    ``HALP_CRASH_SEED``), while inserts of 50 entries are pipelined on 4
    connections, 4 requests in flight on each.  After each kill:
    ``PRAGMA integrity_check`` of the file (before any restart) is ``ok``;
    the server restarts on the same file; every acknowledged entry is
    there with at least its acknowledged time.  The next run continues on
    the same, growing, file.

    The store runs with its default ``synchronous=full``.  ``normal``
    would be as safe here: SQLite's transactions survive a crash of the
    application whatever that setting, which only decides what an
    operating system crash or a power loss may undo.
    """
    store = f"sqlite:{tmp_path / 'halp.sqlite3'}"
    assert parse_store_spec(store).options["synchronous"] == "full"
    path = tmp_path / "halp.sqlite3"
    rng = random.Random(SEED)
    server = start_server(
        "--max-entries", "100000", "--no-request-log", "--no-federation", store=store
    )
    now = int(time.time())
    runs: list[KillRun] = []
    for i in range(RUNS):
        label = f"crash/r{i}"
        run = insert_and_kill(server, label, rng.randrange(KILL_POINTS), now)
        runs.append(run)
        wal = Path(f"{path}-wal")
        run.wal_bytes = wal.stat().st_size if wal.exists() else 0
        assert integrity(path) == ["ok"], f"run {i}: kill point {run.kill_point}"
        if run.wal_bytes:
            assert wal.stat().st_size == run.wal_bytes, "the check changed the -wal"
        started = time.monotonic()
        server.start()
        run.restart_seconds = time.monotonic() - started
        stored = read_label(server, label, run.sent)
        run.stored = len(stored)
        lost = {a: t for a, t in run.acknowledged.items() if stored.get(a, -1) < t}
        run.lost = len(lost)
        # Printed as it happens: pytest shows it with -s, or for a failure.
        print(
            f"run {i}: kill after {run.kill_point} acknowledged, {run.sent} sent, "
            f"{run.stored} stored, {run.lost} lost, -wal {run.wal_bytes} bytes at the "
            f"kill, restart {run.restart_seconds:.2f} s"
        )
        assert not lost, f"run {i} lost acknowledged entries: {sorted(lost.items())[:10]}"
        assert len(run.acknowledged) == run.kill_point
    server.stop_gracefully()
    assert integrity(path) == ["ok"]
    restarts = [r.restart_seconds for r in runs]
    print(
        f"\nkill -9: {RUNS} runs (seed {SEED}), "
        f"{sum(len(r.acknowledged) for r in runs)} acknowledged entries in all, 0 lost, "
        f"integrity ok {RUNS}/{RUNS}; restart {min(restarts):.2f}-{max(restarts):.2f} s"
    )
    assert max(restarts) < 5.0


# -- 2. damaged and unusable database files ----------------------------------------


def _good_database(path: Path, entries: int = 2000) -> None:
    """A HALP database of ``entries`` entries (a few hundred KiB)."""
    from halp.store.sqlite import open_database

    with closing(open_database(str(path))) as db:
        db.executemany(
            "INSERT INTO entries (label, host, port, ts, seq, source, via)"
            " VALUES ('a', ?, 1, ?, ?, '', '')",
            [(f"host-{i}.example", i, i) for i in range(entries)],
        )


def _truncated(tmp: Path) -> Path:
    path = tmp / "halp.sqlite3"
    _good_database(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


def _bad_magic(tmp: Path) -> Path:
    path = tmp / "halp.sqlite3"
    _good_database(path)
    with open(path, "r+b") as f:
        f.write(b"Not SQLite fmt 3\x00")
    return path


def _overwritten_page(tmp: Path) -> Path:
    path = tmp / "halp.sqlite3"
    _good_database(path)
    with open(path, "r+b") as f:
        f.seek((os.path.getsize(path) // 4096 // 2) * 4096)
        f.write(b"\xa5" * 4096)
    return path


def _foreign(tmp: Path) -> Path:
    path = tmp / "notes.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (text)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
        db.commit()
    return path


def _future(tmp: Path) -> Path:
    path = tmp / "halp.sqlite3"
    _good_database(path, 10)
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE halp_version SET version = ?", (SCHEMA_VERSION + 1,))
        db.commit()
    return path


def _missing_directory(tmp: Path) -> Path:
    return tmp / "no-such-dir" / "halp.sqlite3"


def _directory(tmp: Path) -> Path:
    path = tmp / "halp.sqlite3"
    path.mkdir()
    return path


def _snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file() else "dir"
        for p in sorted(directory.rglob("*"))
    }


def _assert_refused(output: str, status: int, path: Path, *expected: str) -> str:
    """The run failed with one line naming ``path`` last, and no traceback."""
    assert status != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    # With --nodaemon the message is logged: "TIME [stderr#error] MESSAGE".
    last = re.sub(r"^\S+ \[stderr#error\] ", "", lines[-1] if lines else "")
    assert last.startswith("twistd halp: --store: "), output
    assert repr(str(path)) in last, output
    for text in expected:
        assert text in last, output
    assert sum(1 for line in lines if "--store:" in line) == 1, output
    return last


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(_truncated, ["malformed", "move it", "restore a backup"], id="truncated"),
        pytest.param(_bad_magic, ["file is not a database", "move it"], id="bad-magic"),
        pytest.param(_overwritten_page, ["malformed", "move it"], id="overwritten-page"),
        pytest.param(_foreign, ["not a HALP one", "refusing to touch it"], id="foreign"),
        pytest.param(_future, [f"version {SCHEMA_VERSION + 1}", "upgrade HALP"], id="future"),
        pytest.param(_missing_directory, ["does not exist", "create it"], id="missing-dir"),
        pytest.param(_directory, ["is a directory"], id="directory"),
    ],
)
def test_server_refuses_a_bad_database_with_one_line(
    tmp_path: Path, make: object, expected: list[str]
) -> None:
    """
    ``twistd halp --store sqlite:BAD`` exits non-zero with one line that
    names the file and what to do, no traceback, and leaves every file as
    it was: nothing is repaired, replaced or created.  So a supervisor
    that starts it again and again gets the same refusal each time, and
    the file stays as the operator will find it.
    """
    assert callable(make)
    path = make(tmp_path)
    before = _snapshot(tmp_path)
    result = run_twistd(["--store", f"sqlite:{path}"], tmp_path)
    _assert_refused(result.stdout, result.returncode, path, *expected)
    assert _snapshot(tmp_path) == before, "a refused start changed files"


# -- file systems of the server's own -----------------------------------------------


def _namespaced(script: str) -> list[str]:
    """``sh -c script`` as root of a new user and mount namespace."""
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script]


@pytest.fixture(scope="module")
def mount_namespaces(tmp_path_factory: pytest.TempPathFactory) -> None:
    """
    Skip unless ``unshare`` can mount a tmpfs in a namespace of its own
    (and ``nsenter`` can enter it).
    """
    import shutil

    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs unshare and nsenter (util-linux)")
    target = tmp_path_factory.mktemp("unshare-probe")
    try:
        probe = subprocess.run(
            _namespaced(f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(target))}"),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"unshare cannot run here: {e}")
    if probe.returncode != 0:
        pytest.skip(
            "unshare --user --map-root-user --mount cannot mount a tmpfs here "
            f"(user namespaces disabled?): {probe.stderr.strip()}"
        )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("halp.sqlite3", ["not readable and writable", "read-only"], id="existing"),
        pytest.param("new.sqlite3", ["directory", "not writable"], id="new"),
    ],
)
def test_server_refuses_a_read_only_file_system(
    tmp_path: Path, mount_namespaces: None, name: str, expected: list[str]
) -> None:
    """
    On a read-only file system (which binds root too, unlike file modes)
    the server refuses to start, rather than start and fail every insert.
    """
    source = tmp_path / "source.sqlite3"
    _good_database(source, 10)
    mountpoint = tmp_path / "ro"
    mountpoint.mkdir()
    m = shlex.quote(str(mountpoint))
    twistd = shlex.join([
        TWISTD, "--nodaemon", "--pidfile=", "halp", "--port", "tcp:0:interface=127.0.0.1",
        "--store", f"sqlite:{mountpoint / name}",
    ])
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {m} && cp {shlex.quote(str(source))} {m}/halp.sqlite3"
        f" && mount -o remount,ro {m} && exec {twistd}"
    )
    result = subprocess.run(
        _namespaced(script), cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
    )
    _assert_refused(result.stdout, result.returncode, mountpoint / name, *expected)


class Tmpfs:
    """
    A tmpfs of ``size`` mounted at ``mountpoint`` in a user and mount
    namespace that a holder process (``cat``, until its input closes)
    keeps alive, so that servers can be started in it, stopped and
    started again on the same files.
    """

    def __init__(self, mountpoint: Path, size: str) -> None:
        self.mountpoint = mountpoint
        self.holder = subprocess.Popen(
            _namespaced(
                f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mountpoint))}"
                " && echo mounted && exec cat"
            ),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        assert self.holder.stdout is not None
        said = self.holder.stdout.readline()
        assert said == b"mounted\n", said + self.holder.stdout.read()

    def enter(self, command: list[str]) -> list[str]:
        """``command``, run inside the namespaces (nsenter execs it: same pid)."""
        return ["nsenter", "--target", str(self.holder.pid), "--user", "--mount",
                "--preserve-credentials", *command]

    def outside(self, name: str) -> Path:
        """The path of ``name`` on the tmpfs, as seen from outside."""
        return Path(f"/proc/{self.holder.pid}/root") / self.mountpoint.relative_to("/") / name

    def integrity(self, name: str = "halp.sqlite3") -> list[str]:
        """
        :func:`integrity` of a database on the tmpfs, checked inside the
        namespaces (SQLite resolves ``/proc/PID/root`` as a symbolic link
        to ``/``, so it cannot open the file from outside).
        """
        script = (
            "import sqlite3, sys\n"
            "db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
            "for row in db.execute('PRAGMA integrity_check'): print(row[0])\n"
        )
        result = subprocess.run(
            self.enter([sys.executable, "-c", script, str(self.mountpoint / name)]),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def close(self) -> None:
        assert self.holder.stdin is not None
        self.holder.stdin.close()
        self.holder.wait(timeout=30)
        assert self.holder.stdout is not None
        self.holder.stdout.close()


class TmpfsServer(HALPServer):
    """A ``twistd halp`` whose database is on a :class:`Tmpfs`."""

    def __init__(self, workdir: Path, tmpfs: Tmpfs, args: list[str]) -> None:
        super().__init__(workdir, f"sqlite:{tmpfs.mountpoint / 'halp.sqlite3'}", args)
        self.tmpfs = tmpfs

    @property
    def command(self) -> list[str]:
        return self.tmpfs.enter(super().command)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += f.write(block) or 0
                except OSError as e:
                    assert e.errno == 28, e  # ENOSPC
                    break
    return written


@pytest.fixture
def tmpfs(tmp_path: Path, mount_namespaces: None) -> Iterator[Tmpfs]:
    """A 10 MiB tmpfs at ``TMP/fs``, in namespaces of its own."""
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    fs = Tmpfs(mountpoint, "10m")
    yield fs
    fs.close()


def test_full_disk_fails_inserts_keeps_reads_and_recovers_by_itself(
    tmp_path: Path, tmpfs: Tmpfs, server_processes: list[HALPServer]
) -> None:
    """
    On a full 10 MiB file system: inserts are answered ``error
    unavailable``, gets are answered in full, the server keeps running,
    and it also stops cleanly and starts again (reading its database
    needs no space); once the filler file is deleted, inserts succeed
    again within a second, with no restart; ``PRAGMA integrity_check`` is
    ``ok`` throughout.
    """
    server = TmpfsServer(tmp_path, tmpfs, ["--no-federation"])
    server_processes.append(server)
    server.start()
    now = int(time.time())
    before = [f"{now - i} {_host(i)} 7100" for i in range(100)]
    expected = Reply(sorted(before, key=lambda line: (-int(line.split()[0]), line)), "ok 100")
    with server.connect() as client:
        assert client.reply(insert_block("full/a", before)).status == "ok 100 stored 0 failed"
        assert (filled := fill(tmpfs.outside("filler"))) > 0
        assert os.statvfs(tmpfs.outside("")).f_bavail == 0

        # The -wal file may still have room for a few commits: insert until
        # the disk is the limit.
        accepted = 0
        for n in range(1000):
            entries = [f"{now} {_host(1000 + 50 * n + i)} 7100" for i in range(50)]
            reply = client.reply(insert_block("full/b", entries))
            if reply.status.startswith("error "):
                break
            assert reply.status == "ok 50 stored 0 failed", reply
            accepted += 1
        assert reply == Reply([], "error unavailable store unavailable, try again later"), reply
        for n in range(5):
            reply = client.reply(insert_block("full/c", [f"{now} {_host(n)} 7100"]))
            assert reply.status.startswith("error unavailable"), reply
        # Reads, on this connection and on a new one.
        assert client.reply(b"get full/a[0:100]\n") == expected
        assert server.reply(b"get full/a[0:100]\n") == expected
        assert server.reply(b"get full/c\n") == Reply([], "ok 0")
        assert tmpfs.integrity() == ["ok"]
        assert server.process_status() is None, "the server died"

    # A restart on the full disk.
    server.stop_gracefully()
    started = time.monotonic()
    server.start()
    restart = time.monotonic() - started
    assert tmpfs.integrity() == ["ok"]
    assert os.statvfs(tmpfs.outside("")).f_bavail == 0
    with server.connect() as client:
        assert client.reply(b"get full/a[0:100]\n") == expected
        reply = client.reply(insert_block("full/c", [f"{now} {_host(0)} 7100"]))
        assert reply.status.startswith("error unavailable"), reply

        tmpfs.outside("filler").unlink()
        freed = time.monotonic()
        tries = 0
        while True:
            tries += 1
            reply = client.reply(insert_block("full/d", [f"{now} {_host(tries)} 7100"]))
            if reply.status == "ok 1 stored 0 failed":
                break
            assert reply.status.startswith("error unavailable"), reply
            assert time.monotonic() - freed < 5.0, "writes did not resume within 5 s"
        resumed = time.monotonic() - freed
        entries = [f"{now} {_host(5000 + i)} 7100" for i in range(100)]
        assert client.reply(insert_block("full/e", entries)).status == "ok 100 stored 0 failed"
    assert tmpfs.integrity() == ["ok"]
    print(
        f"\ndisk full: filler {filled} bytes; {accepted} inserts of 50 still fit; "
        f"restart on the full disk {restart:.2f} s; writes resumed "
        f"{resumed * 1000:.1f} ms after the space returned ({tries} tries)"
    )
    assert resumed < 1.0
    output = server.output()
    server.stop_gracefully()
    assert "Traceback" not in output
