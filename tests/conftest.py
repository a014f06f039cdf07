"""
Fixtures of the end-to-end tests: real ``twistd halp`` processes.

``start_server`` starts one (more options, or another store, as arguments);
``halp_server`` is one started with the defaults on an SQLite file in the
test's temporary directory; ``start_libhalp_server`` starts a server that
speaks only the 2011 libhalp form (``tests/libhalp_server.py``).  Every
server is stopped at the end of its test, and the output of all of a failed
test's servers is attached to its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Generator, Iterator, Mapping, Sequence

import pytest

from tests.halpserver import (
    GarbageServer,
    HALPServer,
    LibhalpServer,
    StartLibhalpServer,
    StartServer,
)

_SERVERS = pytest.StashKey[list[HALPServer]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _SERVERS in item.stash:
        servers: list[HALPServer] = item.stash[_SERVERS]
        for i, server in enumerate(servers, 1):
            report.sections.append((f"{server.name} {i} output", server.output()))
    return report


@pytest.fixture
def server_processes(request: pytest.FixtureRequest) -> Iterator[list[HALPServer]]:
    """
    The server processes a test started (by any of the fixtures below):
    their output goes into the report of a failed test, and they are
    stopped at its end.
    """
    servers: list[HALPServer] = []
    request.node.stash[_SERVERS] = servers
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def start_server(tmp_path: Path, server_processes: list[HALPServer]) -> StartServer:
    """
    ``start_server(*args, store=None, port=0, public=False)`` starts
    ``twistd halp`` with extra options ``args`` on ``store`` (default:
    ``sqlite:TMP/halp.sqlite3``), listening on ``port`` of 127.0.0.1
    (default: any free one), as a test bed unless ``public`` (see
    :class:`~tests.halpserver.HALPServer`).  With
    ``--http`` among ``args``, it also waits for the HTTP face, whose port
    is then the server's ``http_port``.
    """

    def start(
        *args: str, store: str | None = None, port: int = 0, public: bool = False
    ) -> HALPServer:
        if store is None:
            store = f"sqlite:{tmp_path / 'halp.sqlite3'}"
        server = HALPServer(tmp_path, store, args, port, public)
        server_processes.append(server)
        return server.start()

    return start


@pytest.fixture
def start_libhalp_server(
    tmp_path: Path, server_processes: list[HALPServer]
) -> StartLibhalpServer:
    """
    ``start_libhalp_server(entries)`` starts ``tests/libhalp_server.py``, a
    server that speaks only the 2011 libhalp form, holding ``entries``
    (label -> ``(timestamp, host, port)`` triples).
    """

    def start(entries: Mapping[str, Sequence[tuple[int, str, int]]]) -> LibhalpServer:
        server = LibhalpServer(tmp_path, entries)
        server_processes.append(server)
        return server.start()

    return start


@pytest.fixture
def start_garbage_server(
    tmp_path: Path, server_processes: list[HALPServer]
) -> Callable[[], GarbageServer]:
    """``start_garbage_server()`` starts ``tests/garbage_server.py``."""

    def start() -> GarbageServer:
        server = GarbageServer(tmp_path)
        server_processes.append(server)
        server.start()
        return server

    return start


@pytest.fixture
def halp_server(start_server: StartServer) -> HALPServer:
    """A server with the default options on a fresh SQLite file."""
    return start_server()
