"""
A server that speaks only the 2011 libhalp form, over real TCP, for the
end-to-end tests of the ``halp`` command::

    python tests/libhalp_server.py PORT_FILE [ENTRIES_JSON]

It serves :class:`halp.testing.LibhalpServerFactory` (one request per
connection, answered without a status line, then closed) on a free port of
127.0.0.1, writes the port to ``PORT_FILE`` and prints
``libhalp listening on 127.0.0.1:PORT``.  ``ENTRIES_JSON`` pre-loads it:
``{"LABEL": [[TIMESTAMP, "HOST", PORT], ...], ...}``.  Every request is
printed as ``query: ...`` with its answer (``answer: ...``) or ``crash``
where the 2011 server would have crashed.  It runs until SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString

from halp.testing import LibhalpServerFactory


class PrintingLibhalpServerFactory(LibhalpServerFactory):
    """A :class:`LibhalpServerFactory` that prints what it is asked."""

    def answer(self, query: str) -> str | None:
        result = super().answer(query)
        print(f"query: {query!r}", flush=True)
        print("crash" if result is None else f"answer: {result!r}", flush=True)
        return result


def load(factory: LibhalpServerFactory, path: str) -> None:
    with open(path, encoding="utf-8") as f:
        labels = json.load(f)
    for label, entries in labels.items():
        table = factory.labels.setdefault(label, {})
        for timestamp, host, port in entries:
            table[(host, int(port))] = int(timestamp)


async def serve(reactor: Any, port_file: str, factory: LibhalpServerFactory) -> None:
    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    listening = await endpoint.listen(factory)
    port = listening.getHost().port
    # Written whole, then renamed: a reader never sees half a number.
    with open(port_file + ".tmp", "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(port_file + ".tmp", port_file)
    print(f"libhalp listening on 127.0.0.1:{port}", flush=True)
    await Deferred()  # until SIGTERM stops the reactor


def main(argv: list[str]) -> NoReturn:
    if len(argv) not in (2, 3):
        sys.exit(f"usage: {argv[0]} PORT_FILE [ENTRIES_JSON]")
    factory = PrintingLibhalpServerFactory()
    if len(argv) == 3:
        load(factory, argv[2])
    from twisted.internet.task import react

    react(lambda reactor: Deferred.fromCoroutine(serve(reactor, argv[1], factory)))


if __name__ == "__main__":
    main(sys.argv)
