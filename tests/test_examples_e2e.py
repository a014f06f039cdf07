"""
The examples in ``docs/examples/`` run as documented, against a real server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.halpserver import HALPServer

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def test_bootstrap_example_is_short() -> None:
    """The docs promise a bootstrap in under 20 lines."""
    lines = (EXAMPLES / "bootstrap.py").read_text().splitlines()
    assert len(lines) < 20


def bootstrap(seed: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "bootstrap.py"), seed],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bootstrap_example_finds_its_peers(halp_server: HALPServer, tmp_path: Path) -> None:
    seed = f"127.0.0.1:{halp_server.port}"
    run = bootstrap(seed, tmp_path)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == "127.0.0.1 4000\n"
    # The server holds the announced entry, and the client cached it.
    assert halp_server.request(b"get myapp/v2\n")[-1] == "ok 1"
    assert (tmp_path / "halp-cache" / "cache.sqlite3").exists()

    # Without the server, the example still finds the peer: from its cache.
    halp_server.stop()
    run = bootstrap(seed, tmp_path)
    assert (run.returncode, run.stdout) == (0, "127.0.0.1 4000\n")
