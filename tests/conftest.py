"""
Fixtures of the end-to-end tests: real ``twistd halp`` processes.

``start_server`` starts one (more options, or another store, as arguments);
``halp_server`` is one started with the defaults on an SQLite file in the
test's temporary directory.  Every server is stopped at the end of its test,
and the output of all of a failed test's servers is attached to its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generator, Iterator

import pytest

from tests.halpserver import HALPServer, StartServer

_SERVERS = pytest.StashKey[list[HALPServer]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _SERVERS in item.stash:
        servers: list[HALPServer] = item.stash[_SERVERS]
        for i, server in enumerate(servers, 1):
            report.sections.append((f"halp server {i} output", server.output()))
    return report


@pytest.fixture
def start_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """
    ``start_server(*args, store=None)`` starts ``twistd halp`` with extra
    options ``args`` on ``store`` (default: ``sqlite:TMP/halp.sqlite3``).
    """
    servers: list[HALPServer] = []
    request.node.stash[_SERVERS] = servers

    def start(*args: str, store: str | None = None) -> HALPServer:
        if store is None:
            store = f"sqlite:{tmp_path / 'halp.sqlite3'}"
        server = HALPServer(tmp_path, store, args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def halp_server(start_server: StartServer) -> HALPServer:
    """A server with the default options on a fresh SQLite file."""
    return start_server()
